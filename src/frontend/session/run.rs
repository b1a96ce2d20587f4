//! Running a statement where it was placed: the statement bound to that connection (a
//! prepared one prepared there first), sent as the rules rewrote it, its answer relayed
//! under the rules' timeout; a read whose reader failed before answering is sent once
//! more to whichever server serves reads now.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use crate::backend::BackendConn;
use crate::frontend::error_stats::ErrorKey;
use crate::frontend::registry::Registry;
use crate::frontend::relay::{relay, Capture, Eviction, RelayError};
use crate::protocol::constants::{capability, command, error};
use crate::protocol::frame::encode_packet;
use crate::protocol::packets::ErrPacket;
use crate::protocol::response::ResponseTracker;
use crate::protocol::session_state::OkEdits;
use crate::router::{Statement, Target};
use crate::runtime::ServerTarget;

use super::causal::writes;
use super::connections::connection_for;
use super::request::Request;
use super::{Failure, Session};

/// How many times a request is sent to a server that fails before answering it, when it
/// may run again.
const TRIES: u32 = 3;

/// How a request ended, and where it ran last.
pub(super) struct Finished {
    /// True when the answer was not an error.
    pub result: Result<bool, Failure>,
    pub target: Target,
    pub hostgroup: u32,
    /// The server it ran on; `None` when it never reached one.
    pub server: Option<Arc<ServerTarget>>,
}

impl Session {
    /// Runs the request on the connection for `target` (of `hostgroup`); a request whose
    /// server failed before answering, and that may run again, runs wherever it is served
    /// then, up to [`TRIES`] times in all (a writer killed with its pooled connections may
    /// hand out one more that its dying process has not closed yet). So does one whose
    /// transaction a deadlock rolled back, on the same connection (see `deadlock`).
    pub(super) async fn run(
        &mut self,
        request: &mut Request,
        (target, hostgroup): (Target, u32),
        mut capture: Option<&mut crate::frontend::relay::Capture>,
    ) -> Finished {
        let (mut target, mut hostgroup) = (target, hostgroup);
        let mut tries = 0;
        loop {
            tries += 1;
            let server = connection_for(&mut self.primary, &mut self.reader, target)
                .server
                .clone();
            let result = self
                .attempt(target, hostgroup, request, capture.as_deref_mut())
                .await;
            let result = match result {
                Err(Failure::RolledBack(answer)) => {
                    match self.rerun_after_deadlock(answer, tries < TRIES).await {
                        Ok(()) => continue,
                        Err(result) => result,
                    }
                }
                other => other,
            };
            let mut finished = Finished {
                result,
                target,
                hostgroup,
                server: Some(server),
            };
            let Err(Failure::Unanswered(why)) = &finished.result else {
                return finished;
            };
            if tries == TRIES {
                let address = finished.server.as_ref().map_or("", |s| s.address());
                let message = format!("Lost connection to backend {address} (hostgroup {hostgroup}) during query, {TRIES} times: {why}");
                let err = ErrPacket::new(error::LOST_BACKEND, message);
                // a second writer lost under a replayed transaction: that is gone too
                let lost = match target {
                    Target::Primary => self.transaction_lost(),
                    Target::Reader => Failure::Backend,
                };
                finished.result = self.send_packet_err(1, &err).await.and(Err(lost));
                return finished;
            }
            if target == Target::Primary {
                let why = why.clone();
                if let Err(failure) = self.replay_transaction(&why).await {
                    finished.result = Err(failure);
                    return finished;
                }
                continue;
            }
            Registry::count(&self.frontend.counters.reads_retried);
            match self.decide(request).await {
                Ok(Some(chosen)) => (target, hostgroup) = chosen,
                Ok(None) => {
                    finished.result = Err(Failure::Backend);
                    return finished;
                }
                Err(failure) => {
                    finished.result = Err(failure);
                    return finished;
                }
            }
        }
    }

    /// Whether a request whose backend failed before answering may run again elsewhere:
    /// an autocommit read, in text or a prepared execute, on a reader, outside a read-only
    /// transaction there. It changed nothing (the router sends nothing else there), and
    /// the client has seen nothing of its answer; an execute's statement is prepared on
    /// the next reader first.
    fn retryable(&self, target: Target, cmd: u8, statement: Statement) -> bool {
        target == Target::Reader
            && matches!(cmd, command::QUERY | command::STMT_EXECUTE)
            && statement == Statement::Read
            && self.routing.held_reader.is_none()
    }

    /// One try: binds a prepared statement's command to the connection, shows it in the
    /// processlist, runs it.
    async fn attempt(
        &mut self,
        target: Target,
        hostgroup: u32,
        request: &mut Request,
        capture: Option<&mut Capture>,
    ) -> Result<bool, Failure> {
        if target == Target::Primary {
            if let Some(why) = self.lost_before_sending() {
                // nothing of the statement left: it runs after the transaction's replay
                return Err(Failure::Unanswered(why.to_owned()));
            }
        }
        if request.prepared.is_some() && request.cmd != command::STMT_PREPARE {
            let retry = match target {
                Target::Reader => self.retryable(target, request.cmd, request.statement),
                // the command itself was not sent yet
                Target::Primary => self.primary_movable(),
            };
            if !self.bind_statement(target, request, retry).await? {
                return Ok(false);
            }
        }
        let server = connection_for(&mut self.primary, &mut self.reader, target)
            .server
            .clone();
        self.list_running(request, hostgroup, &server);
        self.run_on(target, request, capture).await
    }

    /// Shows the statement as running on `server` in the processlist.
    fn list_running(&self, request: &Request, hostgroup: u32, server: &Arc<ServerTarget>) {
        let digest_text = request.inspected.digest_text(&self.analyzer);
        let (started, shown) = (request.started, request.accounted);
        self.listed.entry.set(|a| {
            a.command = command::name(request.cmd);
            a.hostgroup = Some(hostgroup);
            // the same server as last time, mostly: no new reference to count then
            if !a.server.as_ref().is_some_and(|s| Arc::ptr_eq(s, server)) {
                a.server = Some(server.clone());
            }
            a.since = Some(started);
            a.info.clear();
            if shown {
                a.info.push_str(&String::from_utf8_lossy(digest_text));
            }
        });
    }

    /// Sends the statement (as the rules rewrote it) to the connection of `target` and
    /// relays its answer, under the rules' timeout if they set one. True when the answer
    /// was not an error.
    async fn run_on(
        &mut self,
        target: Target,
        request: &Request,
        capture: Option<&mut Capture>,
    ) -> Result<bool, Failure> {
        let (cmd, statement, packet) = (request.cmd, request.statement, &request.packet);
        let plan = request.plan();
        // an execute's plan is its statement's: the rules rewrote the prepare's text
        let rewrite = match cmd {
            command::STMT_EXECUTE => None,
            _ => plan.decision.rewritten.as_deref(),
        };
        if target == Target::Primary {
            self.expect_on_primary(request, rewrite.unwrap_or(request.body()));
        }
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        let sent = match rewrite {
            Some(text) => backend.conn.write_wire(&rewritten(cmd, text)).await,
            None => backend.conn.write_wire(&packet.wire).await,
        };
        if let Err(e) = sent {
            let why = e.to_string();
            if self.retryable(target, cmd, statement) {
                self.reader_lost_unanswered(&why);
                return Err(Failure::Unanswered(why));
            }
            if target == Target::Primary && self.resendable_on_primary(cmd, statement) {
                return Err(Failure::Unanswered(why));
            }
            return self.backend_lost(target, 1, &why).await.map(|_| false);
        }
        let stats = &backend.server.stats;
        stats.queries.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_sent
            .fetch_add(packet.wire.len() as u64, Ordering::Relaxed);
        let watchdog = plan
            .decision
            .timeout_ms
            .map(|ms| self.kill_after(target, Duration::from_millis(ms)));
        let result = if cmd == command::STMT_PREPARE {
            self.relay_prepare(target, request).await
        } else {
            let (body, cursor) = (request.body(), request.cursor);
            self.relay_response(target, cmd, statement, body, cursor, capture)
                .await
        };
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        result
    }

    /// Starts a watchdog that kills the running statement (`KILL QUERY`, from a connection
    /// of the same user) once `limit` has passed; aborted when the statement ends first.
    fn kill_after(&self, target: Target, limit: Duration) -> tokio::task::JoinHandle<()> {
        let backend = match target {
            Target::Primary => self.primary.as_ref(),
            Target::Reader => self.reader.as_ref().map(|(b, _)| b),
        }
        .expect("ensured");
        let (server, thread_id, login) = (
            backend.server.clone(),
            backend.thread_id,
            self.login.clone(),
        );
        let runtime = self.frontend.shared.load();
        let tls = server.tls.then(|| runtime.backend_tls.clone()).flatten();
        let connect_timeout = Duration::from_millis(runtime.proxy.connect_timeout_ms);
        let peer = self.peer;
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            tracing::info!(%peer, server = %server.address(), thread_id, ?limit, "statement over its rule's timeout: killing it");
            let killed = async {
                let mut conn = BackendConn::connect(&server, &login, tls.as_ref(), connect_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.run(command::QUERY, format!("KILL QUERY {thread_id}").as_bytes())
                    .await
            };
            if let Err(e) = killed.await {
                tracing::warn!(%peer, server = %server.address(), error = %e, "cannot kill a statement over its timeout");
            }
        })
    }

    /// Relays the response to a request already sent to `target`, then learns from it.
    /// `body` is the request after its command byte (empty for streamed requests);
    /// `cursor`, whether an execute asked for a cursor. True when the response was not an
    /// error.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn relay_response(
        &mut self,
        target: Target,
        cmd: u8,
        statement: Statement,
        body: &[u8],
        cursor: bool,
        capture: Option<&mut Capture>,
    ) -> Result<bool, Failure> {
        self.last_outcome = None;
        self.last_counts = Default::default();
        let tracker = match cmd {
            command::STMT_EXECUTE => Some(ResponseTracker::for_execute(cursor)),
            _ => ResponseTracker::for_command(cmd),
        };
        let Some(mut tracker) = tracker else {
            return Ok(true);
        };
        tracker.add_status(std::mem::take(&mut self.added_status));
        if target == Target::Primary && self.transaction.recording() {
            tracker.fingerprint_results();
        }
        if self.deprecates_eof() {
            tracker.for_deprecate_eof_client();
        }
        let shared = &*self.frontend.shared;
        let max = shared.peek().proxy.max_allowed_packet;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        tracker.edit_oks(OkEdits {
            take_gtid: backend.tracks_gtid,
            plain: backend.session_track && self.capabilities & capability::SESSION_TRACK == 0,
            ..OkEdits::default()
        });
        let eviction = Eviction::new(shared, backend.server.address(), &backend.eviction.notify);
        let relayed = relay(
            &mut self.client,
            &mut backend.conn,
            &mut tracker,
            max,
            &eviction,
            &backend.server.stats.bytes_received,
            capture,
        )
        .await;
        backend.conn.shrink_buffers();
        self.last_counts = tracker.counts();
        if let Some(err) = tracker.error() {
            let key = ErrorKey {
                hostgroup: backend.server.hostgroup,
                host: backend.server.host.clone(),
                port: backend.server.port,
                user: self.user.config.name.clone(),
                client_address: self.peer.ip().to_string(),
                schema: self.login.database.clone().unwrap_or_default(),
                errno: err.code,
            };
            self.frontend.errors.record(key, &err.message);
        }
        match relayed {
            Ok(outcome) => {
                self.last_outcome = Some(outcome);
                if target == Target::Primary {
                    let max = shared.peek().proxy.transaction_replay_max_size;
                    self.transaction
                        .answered(&outcome, tracker.fingerprint(), max);
                }
                // a connection that reports each commit's GTID in its OK (any commit: a
                // DDL's, `SET autocommit = 1`'s) needs no read after the write; the
                // edits took it out before the client saw it
                let reports = target == Target::Primary
                    && self.primary.as_ref().is_some_and(|p| p.tracks_gtid);
                if let Some(gtid) = tracker.edits().and_then(|e| e.gtid.as_deref()) {
                    self.note_reported_gtid(gtid);
                }
                let tracked = target == Target::Primary
                    && self.reads_own_writes()
                    && writes(cmd, statement)
                    && !outcome.error
                    && !reports;
                // the answer's end waits for the write's GTID only when some user's reads
                // must see every acknowledged write
                let hold = tracked && self.frontend.shared.peek().global_reads;
                if !hold {
                    self.client.flush().await.map_err(|_| Failure::Client)?;
                }
                if let (Target::Reader, Some((_, reader))) = (target, &self.reader) {
                    let hostgroup = reader.hostgroup;
                    self.routing
                        .after_reader(statement, outcome.status, hostgroup);
                }
                if target == Target::Primary {
                    if let Some(flags) = outcome.status {
                        self.server_status = flags;
                    }
                    self.after_primary(cmd, statement, body, outcome).await;
                    if tracked {
                        self.note_write_gtid().await;
                    }
                }
                if hold {
                    self.client.flush().await.map_err(|_| Failure::Client)?;
                }
                Ok(!outcome.error)
            }
            Err(RelayError::Client) => Err(Failure::Client),
            Err(RelayError::NotServing(answer)) => {
                self.not_serving(target, cmd, statement, answer).await
            }
            Err(RelayError::Deadlock(answer)) => self.deadlocked(target, answer).await,
            Err(RelayError::Unanswered(why)) if self.retryable(target, cmd, statement) => {
                self.reader_lost_unanswered(&why);
                Err(Failure::Unanswered(why))
            }
            Err(RelayError::Unanswered(why))
                if target == Target::Primary && self.resendable_on_primary(cmd, statement) =>
            {
                Err(Failure::Unanswered(why))
            }
            Err(RelayError::Backend(why) | RelayError::Unanswered(why)) => self
                .backend_lost(target, tracker.next_seq(), &why)
                .await
                .map(|_| false),
        }
    }
}

impl Session {
    /// A Galera node refused the request unrun (it is out of the primary component), so
    /// it goes to whichever node serves now — a read as a reader's lost read does, a statement on
    /// the primary connection when the session holds nothing there (or after replaying
    /// its open transaction). A session with state on that connection gets the node's
    /// answer as it is.
    async fn not_serving(
        &mut self,
        target: Target,
        cmd: u8,
        statement: Statement,
        answer: BytesMut,
    ) -> Result<bool, Failure> {
        let why = "the node is out of the Galera primary component".to_owned();
        if self.retryable(target, cmd, statement) {
            self.reader_lost_unanswered(&why);
            return Err(Failure::Unanswered(why));
        }
        if target == Target::Primary && self.primary_movable() {
            self.not_serving = self.primary.as_ref().map(|p| p.server.address().to_owned());
            return Err(Failure::Unanswered(why));
        }
        self.client.queue_wire(&answer);
        self.client.flush().await.map_err(|_| Failure::Client)?;
        Ok(false)
    }
}

/// A command packet carrying `text` in place of what the client sent.
fn rewritten(cmd: u8, text: &[u8]) -> BytesMut {
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.push(cmd);
    payload.extend_from_slice(text);
    let mut wire = BytesMut::with_capacity(payload.len() + 8);
    encode_packet(&mut wire, 0, &payload);
    wire
}
