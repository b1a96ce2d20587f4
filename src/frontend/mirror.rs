//! Mirroring (ProxySQL's `mirror_hostgroup`): a copy of a statement a rule marked, sent
//! once the client has its own answer to a server of the mirror hostgroup, on a pooled
//! connection of the same user; the copy's result is read and thrown away, its errors and
//! timings counted (and recorded in the digest statistics under the mirror's hostgroup).
//!
//! It owns the queue of copies and the tasks that run them. It never touches a client
//! connection and never makes a session wait: a copy that finds `[mirror] max_queue`
//! copies waiting is dropped and counted, one whose hostgroup has no server it can reach
//! is dropped and counted, and one that runs past `timeout_ms` is abandoned together with
//! its connection. At most `max_concurrency` copies run at once.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backend::{BackendConn, Login};
use crate::protocol::constants::{command, status};
use crate::rules::stats::Execution;
use crate::rules::variables::Values;

use super::Frontend;

/// One statement to run on a mirror, with the session context it ran in.
#[derive(Debug)]
pub struct MirrorCopy {
    pub hostgroup: u32,
    pub login: Login,
    pub names: Option<Vec<u8>>,
    pub variables: Values,
    /// The text to send (the client's, or what the mirror's rules rewrote it to).
    pub sql: Vec<u8>,
    /// For a prepared statement's execute: its payload after the statement id (flags,
    /// iteration count, parameters with their types). The copy prepares `sql` on the
    /// mirror, executes it with these and closes it.
    pub execute: Option<Vec<u8>>,
    /// For the digest statistics.
    pub digest: u64,
    pub digest_text: Vec<u8>,
    /// The statement leaves nothing on its connection: it may go back without a reset.
    pub clean: bool,
}

/// What happened to copies (ProxySQL shows the first two as `Mirror_concurrency` and
/// `Mirror_queue_length`).
#[derive(Debug, Default)]
pub struct MirrorStats {
    /// Copies running now, and waiting now.
    pub running: AtomicU64,
    pub queued: AtomicUsize,
    /// Copies the mirror answered, and those it answered with an error.
    pub sent: AtomicU64,
    pub errors: AtomicU64,
    /// Copies dropped: the queue was full; no server of the hostgroup could be reached
    /// (or the connection failed); no answer within `timeout_ms`.
    pub dropped_full: AtomicU64,
    pub dropped_unreachable: AtomicU64,
    pub timeouts: AtomicU64,
    /// Statements a rule marked but that ran inside a transaction (not mirrored).
    pub skipped_in_transaction: AtomicU64,
}

/// The proxy's mirror queue. See the module documentation.
pub struct Mirror {
    sender: mpsc::UnboundedSender<MirrorCopy>,
    /// Taken once by [`run`].
    receiver: Mutex<Option<mpsc::UnboundedReceiver<MirrorCopy>>>,
    pub stats: MirrorStats,
}

impl Default for Mirror {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Mirror {
            sender,
            receiver: Mutex::new(Some(receiver)),
            stats: MirrorStats::default(),
        }
    }
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("queued", &self.stats.queued.load(Ordering::Relaxed))
            .finish()
    }
}

impl Mirror {
    /// Queues a copy unless `max_queue` copies are already waiting (then it is dropped
    /// and counted). Never waits.
    pub fn enqueue(&self, copy: MirrorCopy, max_queue: usize) {
        let queued = self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= max_queue || self.sender.send(copy).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Runs the queued copies, `max_concurrency` at a time, for as long as the proxy runs.
pub async fn run(frontend: Arc<Frontend>) {
    let Some(mut receiver) = frontend.mirror.receiver.lock().expect("mirror lock").take() else {
        return;
    };
    let mut running = JoinSet::new();
    while let Some(copy) = receiver.recv().await {
        while running.try_join_next().is_some() {}
        loop {
            let limit = frontend.shared.peek().config.mirror.max_concurrency;
            if running.len() < limit {
                break;
            }
            running.join_next().await;
        }
        let stats = &frontend.mirror.stats;
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        stats.running.fetch_add(1, Ordering::Relaxed);
        let frontend = frontend.clone();
        running.spawn(async move {
            run_copy(&frontend, copy).await;
            frontend
                .mirror
                .stats
                .running
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// How one copy ended.
enum Ran {
    Answered {
        error: bool,
        /// The statement left a transaction open on the connection.
        open: bool,
        conn: Box<BackendConn>,
    },
    Unreachable(String),
}

async fn run_copy(frontend: &Frontend, copy: MirrorCopy) {
    let stats = &frontend.mirror.stats;
    let runtime = frontend.shared.load();
    let limit = Duration::from_millis(runtime.config.mirror.timeout_ms);
    let started = Instant::now();
    let ran = match tokio::time::timeout(limit, send(frontend, &copy)).await {
        Ok(ran) => ran,
        Err(_) => {
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                hostgroup = copy.hostgroup,
                ?limit,
                "mirrored statement abandoned: no answer in time"
            );
            return;
        }
    };
    match ran {
        Ran::Answered { error, open, conn } => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            if error {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            let execution = Execution {
                user: &copy.login.user,
                schema: copy.login.database.as_deref().unwrap_or_default(),
                hostgroup: i64::from(copy.hostgroup),
                duration: started.elapsed(),
                error,
                // a copy's answer is discarded unread: its rows are not counted
                rows: Default::default(),
            };
            let text = || copy.digest_text.clone();
            frontend.digests.record(copy.digest, text, execution);
            let settled = copy.clean && !error && !open;
            if settled {
                frontend.pool.put_back(*conn, &runtime.pool);
            } else {
                frontend.pool.release(*conn, &runtime.pool).await;
            }
        }
        Ran::Unreachable(why) => {
            stats.dropped_unreachable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(hostgroup = copy.hostgroup, error = %why, "mirrored statement dropped");
        }
    }
}

/// Takes a connection to the mirror hostgroup, brings it to the session's context, runs
/// the statement and reads its answer away.
async fn send(frontend: &Frontend, copy: &MirrorCopy) -> Ran {
    let acquired = frontend
        .pool
        .acquire(&frontend.shared, copy.hostgroup, &copy.login)
        .await;
    let mut conn = match acquired {
        Ok(conn) => conn,
        Err(e) => return Ran::Unreachable(e.to_string()),
    };
    let schema = copy.login.database.as_deref();
    if let Err(why) = conn
        .sync_session(schema, copy.names.as_deref(), &copy.variables)
        .await
    {
        return Ran::Unreachable(why);
    }
    let mut prepared = None;
    let cmd = match &copy.execute {
        None => conn
            .send_command(command::QUERY, &copy.sql)
            .await
            .map(|_| command::QUERY),
        Some(parameters) => {
            let id = match conn.prepare(&copy.sql).await {
                Ok(Ok(id)) => id,
                Ok(Err(_refused)) => {
                    return Ran::Answered {
                        error: true,
                        open: false,
                        conn: Box::new(conn),
                    }
                }
                Err(why) => return Ran::Unreachable(why),
            };
            prepared = Some(id);
            let mut body = id.to_le_bytes().to_vec();
            body.extend_from_slice(parameters);
            conn.send_command(command::STMT_EXECUTE, &body)
                .await
                .map(|_| command::STMT_EXECUTE)
        }
    };
    let cmd = match cmd {
        Ok(cmd) => cmd,
        Err(e) => return Ran::Unreachable(e.to_string()),
    };
    let answered = conn.discard_response(cmd).await;
    if let Some(id) = prepared {
        // sent ahead of the connection's next command
        conn.queue_close(id);
    }
    match answered {
        Ok(outcome) => Ran::Answered {
            error: outcome.error,
            open: outcome.status.is_some_and(|s| s & status::IN_TRANS != 0),
            conn: Box::new(conn),
        },
        Err(e) => Ran::Unreachable(e.to_string()),
    }
}
