//! What the admin port and the metrics see of the sessions: every live session with what it
//! is doing (ProxySQL's `stats_mysql_processlist`), a way to kill one, and the proxy-wide
//! counters. Sessions write their own entry (an uncontended lock per statement); readers
//! take copies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::rules::{Command, Kind};
use crate::runtime::ServerTarget;

/// What one session is doing now.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    pub schema: Option<String>,
    /// "Sleep" between statements, else the command ("Query", "Execute", …).
    pub command: &'static str,
    pub hostgroup: Option<u32>,
    pub server: Option<Arc<ServerTarget>>,
    /// When the current statement started.
    pub since: Option<Instant>,
    /// Whether the session was inside a transaction after its last statement.
    pub in_transaction: bool,
    /// The current statement's digest text, empty between statements (values never leave
    /// the session). The buffer is reused from one statement to the next.
    pub info: String,
}

/// One live session.
#[derive(Debug)]
pub struct SessionEntry {
    pub id: u32,
    pub user: String,
    pub client: SocketAddr,
    pub started: Instant,
    activity: Mutex<Activity>,
    /// Why the session must end (an [`Interrupt`] as a number; 0 while none).
    interrupt: AtomicU8,
    /// Wakes the session when `interrupt` is set. Each session waits on its own: a
    /// channel shared by all sessions would be a lock every statement of every session
    /// takes.
    interrupted: Notify,
}

/// Why a session is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// `KILL` from the admin port.
    Killed = 1,
    /// The proxy is shutting down.
    Shutdown = 2,
}

impl SessionEntry {
    pub fn activity(&self) -> Activity {
        self.activity.lock().expect("activity lock").clone()
    }

    /// Records what the session does now.
    pub fn set(&self, update: impl FnOnce(&mut Activity)) {
        update(&mut self.activity.lock().expect("activity lock"));
    }

    /// Completes when the session is told to end, with the reason.
    pub async fn interrupted(&self) -> Interrupt {
        self.interrupted.notified().await;
        match self.interrupt.load(Ordering::Acquire) {
            1 => Interrupt::Killed,
            _ => Interrupt::Shutdown,
        }
    }

    fn interrupt(&self, why: Interrupt) {
        self.interrupt.store(why as u8, Ordering::Release);
        self.interrupted.notify_one();
    }
}

/// The live sessions, by id.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u32, Arc<SessionEntry>>>,
}

/// Keeps a session listed while it lives.
pub struct Listed {
    registry: Arc<Registry>,
    pub entry: Arc<SessionEntry>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .expect("registry lock")
            .remove(&self.entry.id);
    }
}

impl Registry {
    /// Adds one to a counter.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Lists a session until the returned guard is dropped.
    pub fn list(
        self: &Arc<Self>,
        id: u32,
        user: &str,
        client: SocketAddr,
        schema: Option<String>,
    ) -> Listed {
        let entry = Arc::new(SessionEntry {
            id,
            user: user.to_owned(),
            client,
            started: Instant::now(),
            activity: Mutex::new(Activity {
                schema,
                command: "Sleep",
                ..Activity::default()
            }),
            interrupt: AtomicU8::new(0),
            interrupted: Notify::new(),
        });
        self.sessions
            .lock()
            .expect("registry lock")
            .insert(id, entry.clone());
        Listed {
            registry: self.clone(),
            entry,
        }
    }

    /// Copies of every live session's entry.
    pub fn sessions(&self) -> Vec<Arc<SessionEntry>> {
        let mut all: Vec<_> = self
            .sessions
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// Tells session `id` to end; false when there is none.
    pub fn kill(&self, id: u32) -> bool {
        match self.sessions.lock().expect("registry lock").get(&id) {
            Some(entry) => {
                entry.interrupt(Interrupt::Killed);
                true
            }
            None => false,
        }
    }

    /// Tells every listed session that the proxy is shutting down. A session listed
    /// after this call sees the shutdown signal itself when its command loop starts.
    pub fn shut_down_all(&self) {
        for entry in self.sessions.lock().expect("registry lock").values() {
            entry.interrupt(Interrupt::Shutdown);
        }
    }
}

/// Latency buckets of `stats_mysql_commands_counters`, in microseconds (the last is
/// everything slower).
pub const LATENCY_BUCKETS_US: [u64; 11] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
];

/// Counts and latency buckets of one statement kind.
#[derive(Debug, Default)]
pub struct KindCounter {
    pub count: AtomicU64,
    pub total_us: AtomicU64,
    pub buckets: [AtomicU64; 12],
}

impl KindCounter {
    fn observe(&self, us: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|limit| us <= *limit)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// The same counts by ProxySQL's command names, indexed by `Command as usize`.
#[derive(Debug)]
pub struct CommandCounters(pub [KindCounter; Command::ALL.len()]);

impl Default for CommandCounters {
    fn default() -> Self {
        CommandCounters(std::array::from_fn(|_| KindCounter::default()))
    }
}

impl CommandCounters {
    pub fn of(&self, command: Command) -> &KindCounter {
        &self.0[command as usize]
    }
}

/// Every statement kind, in [`Kind`] order.
pub const KINDS: [Kind; 13] = [
    Kind::Select,
    Kind::LockingSelect,
    Kind::Insert,
    Kind::Update,
    Kind::Delete,
    Kind::Replace,
    Kind::Ddl,
    Kind::Transaction,
    Kind::Set,
    Kind::Use,
    Kind::Show,
    Kind::Call,
    Kind::Other,
];

/// Proxy-wide counters, read by the admin port and the metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub logins: AtomicU64,
    pub logins_failed: AtomicU64,
    /// Of those, refused for a wrong password or an unknown user.
    pub denied_password: AtomicU64,
    pub connections_refused: AtomicU64,
    pub questions: AtomicU64,
    pub rule_refusals: AtomicU64,
    pub firewall_blocked: AtomicU64,
    pub firewall_learned: AtomicU64,
    pub injection_flagged: AtomicU64,
    pub backends_lost: AtomicU64,
    /// Autocommit reads sent again after their reader failed before answering.
    pub reads_retried: AtomicU64,
    /// Transactions replayed on a new writer connection after theirs was lost.
    pub transactions_replayed: AtomicU64,
    /// Transactions whose replay was refused (see `session::replay`).
    pub transaction_replays_failed: AtomicU64,
    /// Statements run again after a deadlock rolled their transaction back.
    pub deadlocks_retried: AtomicU64,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    /// Time spent analysing statements and evaluating rules and the firewall.
    pub query_processor_ns: AtomicU64,
    /// Time from a statement's arrival to its answer, for statements that ran on a
    /// backend.
    pub backend_query_ns: AtomicU64,
    /// Statements slower than `proxy.long_query_time_ms`.
    pub slow_queries: AtomicU64,
    /// Reads sent to a replica only once it had the session's last write (or waited for it).
    pub gtid_consistent_queries: AtomicU64,
    /// Write positions (GTIDs) learned from backends for read-your-writes.
    pub gtids_collected: AtomicU64,
    /// `SET NAMES` from clients (their `COM_INIT_DB` and `USE` are counted by command).
    pub set_names: AtomicU64,
    /// `SET autocommit = …` from clients.
    pub set_autocommit: AtomicU64,
    pub tls_handshakes: AtomicU64,
    pub tls_failures: AtomicU64,
    pub kinds: [KindCounter; 13],
    /// Statements by ProxySQL's command names (`stats_mysql_commands_counters`).
    pub by_command: CommandCounters,
    /// Commands forwarded, by command byte (all forwarded commands are below 0x20).
    pub commands: [AtomicU64; 32],
    /// Connections refused before login, by reason (rare: a lock is fine).
    refused: Mutex<HashMap<&'static str, u64>>,
    /// Errors the proxy sent to clients, by code.
    errors: Mutex<HashMap<u16, u64>>,
}

impl Counters {
    /// Counts a connection refused for `reason`.
    pub fn refuse(&self, reason: &'static str) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        *self
            .refused
            .lock()
            .expect("counters lock")
            .entry(reason)
            .or_default() += 1;
    }

    /// Counts an error sent to a client.
    pub fn error(&self, code: u16) {
        *self
            .errors
            .lock()
            .expect("counters lock")
            .entry(code)
            .or_default() += 1;
    }

    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<_> = self
            .refused
            .lock()
            .expect("counters lock")
            .iter()
            .map(|(r, n)| (*r, *n))
            .collect();
        all.sort();
        all
    }

    pub fn errors(&self) -> Vec<(u16, u64)> {
        let mut all: Vec<_> = self
            .errors
            .lock()
            .expect("counters lock")
            .iter()
            .map(|(c, n)| (*c, *n))
            .collect();
        all.sort();
        all
    }

    /// Counts one statement of `kind` (ProxySQL's `command`) that took `took`.
    pub fn statement(&self, kind: Kind, command: Command, took: Duration) {
        let i = KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("every kind listed");
        let us = took.as_micros().min(u128::from(u64::MAX)) as u64;
        self.kinds[i].observe(us);
        self.by_command.of(command).observe(us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_listed_while_they_live_and_can_be_killed() {
        let registry = Arc::new(Registry::default());
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let listed = registry.list(7, "app", client, Some("shop".into()));
        listed.entry.set(|a| a.command = "Query");
        assert_eq!(registry.sessions()[0].activity().command, "Query");
        assert!(registry.kill(7) && !registry.kill(8));
        drop(listed);
        assert!(registry.sessions().is_empty());
    }

    #[test]
    fn statements_land_in_their_latency_bucket() {
        let counters = Counters::default();
        for took in [
            Duration::from_micros(80),
            Duration::from_millis(3),
            Duration::from_secs(60),
        ] {
            counters.statement(Kind::Select, Command::Select, took);
        }
        let by_command = counters.by_command.of(Command::Select);
        assert_eq!(by_command.count.load(Ordering::Relaxed), 3);
        let select = &counters.kinds[0];
        assert_eq!(select.count.load(Ordering::Relaxed), 3);
        let buckets: Vec<u64> = select
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(buckets, [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
}
