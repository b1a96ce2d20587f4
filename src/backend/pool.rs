//! Choosing a server of a hostgroup and getting a logged-in connection to it: an idle one
//! from the pool when one fits, a new one otherwise.
//!
//! A connection goes back to the pool when its session is done with it, after
//! COM_RESET_CONNECTION has wiped whatever the session left on it (transaction, locks,
//! temporary tables, variables, prepared statements). Idle connections are keyed by
//! server, user, capabilities and character set; they expire after `pool.idle_timeout_ms`
//! or `pool.max_lifetime_ms`, and one idle longer than `pool.check_after_idle_ms` is pinged
//! before it is handed out. The idle table is behind a mutex: it is touched once per
//! session, not per statement.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::PoolSettings;
use crate::protocol::constants::{command, error};
use crate::protocol::packets::ErrPacket;
use crate::shared::Shared;

use super::conn::{BackendConn, BackendError, Login, PoolKey, Slot};
use super::count;

/// Why no backend connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("hostgroup {0} has no servers")]
    NoServers(u32),
    #[error("no server of hostgroup {hostgroup} is available; {}", reasons.join("; "))]
    Unavailable {
        hostgroup: u32,
        reasons: Vec<String>,
    },
    #[error("every server of hostgroup {0} is at its max_connections")]
    Full(u32),
    #[error("every server of hostgroup {0} stayed at its max_connections for {1:?}")]
    WaitedTooLong(u32, Duration),
    #[error("no server of hostgroup {hostgroup} could be reached; last error: {last}")]
    Unreachable { hostgroup: u32, last: BackendError },
    /// A server answered the login with an error, which the client should see as is.
    #[error("{0}")]
    Refused(ErrPacket),
}

impl AcquireError {
    /// The ERR packet a client gets for this failure.
    pub fn to_err_packet(&self) -> ErrPacket {
        match self {
            AcquireError::Refused(err) => err.clone(),
            AcquireError::Full(_) | AcquireError::WaitedTooLong(..) => {
                ErrPacket::new(error::TOO_MANY_CONNECTIONS, self.to_string())
            }
            _ => ErrPacket::new(error::NO_BACKEND, self.to_string()),
        }
    }
}

/// An idle connection and since when it has been idle.
struct Idle {
    conn: BackendConn,
    since: Instant,
}

/// How statements fared waiting for a connection at a full server, since start.
#[derive(Debug, Default)]
pub struct WaitStats {
    /// Statements waiting right now.
    pub waiting: AtomicU64,
    /// Statements that had to wait (and then got a connection or gave up).
    pub waits: AtomicU64,
    /// Of those, the ones that gave up after `pool.wait_timeout_ms`.
    pub timeouts: AtomicU64,
    /// Time spent waiting, in microseconds, all waits together.
    pub waited_us: AtomicU64,
}

/// What the pool did with connections since start (ProxySQL's `MyHGM_myconnpoll_*` and
/// `ConnPool_get_conn_*`).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests for a connection.
    pub gets: AtomicU64,
    /// Of those, served by an idle connection.
    pub gets_immediate: AtomicU64,
    /// Of those, served (idle, new, or handed over after a wait).
    pub gets_ok: AtomicU64,
    /// Of those, failed (no server, refused, unreachable, waited too long).
    pub gets_failed: AtomicU64,
    /// Connections given back and kept (or handed to a waiting statement).
    pub pushes: AtomicU64,
    /// Connections given back and closed instead (pool full, reset failed), or closed
    /// idle to make room.
    pub destroys: AtomicU64,
    /// Connections reset before being kept.
    pub resets: AtomicU64,
}

/// Counts one statement as waiting while it lives.
struct Waiting<'a> {
    stats: &'a WaitStats,
    since: Instant,
}

impl<'a> Waiting<'a> {
    fn start(stats: &'a WaitStats) -> Self {
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        stats.waits.fetch_add(1, Ordering::Relaxed);
        Waiting {
            stats,
            since: Instant::now(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let us = self.since.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.stats.waited_us.fetch_add(us, Ordering::Relaxed);
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One idle connection, as [`Pool::idle_connections`] reports it.
#[derive(Debug, Clone)]
pub struct IdleConnection {
    pub fd: i32,
    pub hostgroup: u32,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub schema: Option<String>,
    /// The followed session variables set on it (time_zone, sql_mode…).
    pub variables: crate::rules::variables::Values,
    pub idle: Duration,
    pub thread_id: u32,
    pub age: Duration,
}

/// See the module documentation.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// How statements fared waiting for a connection.
    pub waits: WaitStats,
    pub stats: PoolStats,
    /// For `min_idle_per_server`: how to log in as each user that logged in, per
    /// hostgroup its sessions use.
    warm: Mutex<HashMap<(u32, String), Login>>,
    /// Statements waiting for a connection at a full server, by key, oldest first: a
    /// connection that comes back goes to the first of them still waiting.
    waiters: Mutex<HashMap<PoolKey, VecDeque<tokio::sync::oneshot::Sender<BackendConn>>>>,
    /// The prepared statements sessions share across connections.
    pub statements: super::statements::StatementCache,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Memory the idle connections hold: their structures and buffers (not the kernel's
    /// socket buffers, nor TLS state).
    pub fn memory_bytes(&self) -> usize {
        self.idle
            .lock()
            .expect("pool lock")
            .values()
            .flatten()
            .map(|i| std::mem::size_of::<Idle>() + i.conn.conn.buffer_capacity())
            .sum()
    }

    /// Idle connections held right now, per server address.
    pub fn idle_by_server(&self) -> std::collections::HashMap<String, usize> {
        let mut out = std::collections::HashMap::new();
        for (key, conns) in self.idle.lock().expect("pool lock").iter() {
            *out.entry(key.address.clone()).or_default() += conns.len();
        }
        out
    }

    /// The idle connections held right now, as the admin port lists them
    /// (`stats_mysql_free_connections`).
    pub fn idle_connections(&self) -> Vec<IdleConnection> {
        let idle = self.idle.lock().expect("pool lock");
        let mut out: Vec<IdleConnection> = idle
            .iter()
            .flat_map(|(key, conns)| {
                conns.iter().map(move |i| IdleConnection {
                    fd: i.conn.conn.raw_fd(),
                    hostgroup: i.conn.server.hostgroup,
                    host: i.conn.server.host.clone(),
                    port: i.conn.server.port,
                    user: key.user.clone(),
                    schema: i.conn.schema.clone(),
                    variables: i.conn.variables.clone(),
                    idle: i.since.elapsed(),
                    thread_id: i.conn.thread_id,
                    age: i.conn.created.elapsed(),
                })
            })
            .collect();
        out.sort_by_key(|c| (c.hostgroup, c.port, c.fd));
        out
    }

    /// Takes an idle connection for `key` that is still fit to use, most recently used
    /// first; expired ones found on the way are closed.
    async fn take_idle(
        &self,
        key: &PoolKey,
        login: &Login,
        settings: &PoolSettings,
    ) -> Option<BackendConn> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().expect("pool lock");
                idle.get_mut(key)?.pop()
            }?;
            let idle_for = candidate.since.elapsed();
            let mut conn = candidate.conn;
            // its server closed it while it waited here (a killed server, an idle timeout):
            // a statement sent on it would fail, and a server that died cannot have run it
            if conn.conn.peer_closed() {
                continue;
            }
            if idle_for > Duration::from_millis(settings.idle_timeout_ms)
                || conn.created.elapsed() > Duration::from_millis(settings.max_lifetime_ms)
            {
                continue;
            }
            // a session without a schema must not inherit one: no command unsets it
            if login.database.is_none() && conn.schema.is_some() {
                continue;
            }
            if idle_for > Duration::from_millis(settings.check_after_idle_ms)
                && conn.run(command::PING, &[]).await.is_err()
            {
                continue;
            }
            if login.database.is_some() && conn.schema != login.database {
                let schema = login.database.clone().expect("checked");
                if conn.run(command::INIT_DB, schema.as_bytes()).await.is_err() {
                    continue;
                }
                count(&conn.server.stats.init_db);
                conn.schema = Some(schema);
            }
            return Some(conn);
        }
    }

    /// A backend connection to a server of `hostgroup`, logged in per `login`. Servers are
    /// tried in weighted order; one that cannot be reached is skipped, one that refuses the
    /// login ends the attempt (another server of the group would refuse it too).
    pub async fn acquire(
        &self,
        shared: &Shared,
        hostgroup: u32,
        login: &Login,
    ) -> Result<BackendConn, AcquireError> {
        count(&self.stats.gets);
        let got = self.acquire_or_wait(shared, hostgroup, login).await;
        count(match got {
            Ok(_) => &self.stats.gets_ok,
            Err(_) => &self.stats.gets_failed,
        });
        got
    }

    async fn acquire_or_wait(
        &self,
        shared: &Shared,
        hostgroup: u32,
        login: &Login,
    ) -> Result<BackendConn, AcquireError> {
        let first = self.try_acquire(shared, hostgroup, login).await;
        let wait = Duration::from_millis(shared.load().pool.wait_timeout_ms);
        match first {
            Err(AcquireError::Full(_)) if !wait.is_zero() => {}
            other => return other,
        }
        // Every server is at max_connections: queue for the next connection of this key
        // that comes back (handed over in order of arrival, so newcomers cannot overtake),
        // and look again now and then for room elsewhere (connections that close rather
        // than come back, other servers of the hostgroup).
        let Some(key) = shared
            .candidates(hostgroup)
            .first()
            .map(|server| PoolKey::new(server, login))
        else {
            return first;
        };
        let _waiting = Waiting::start(&self.waits);
        let mut handed = self.queue_for(&key);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                conn = &mut handed => {
                    match conn {
                        // a session without a schema must not inherit one (no command
                        // unsets it): such a connection is closed, making room for a new one
                        Ok(conn) if login.database.is_none() && conn.schema.is_some() => drop(conn),
                        Ok(conn) => return Ok(conn),
                        Err(_) => {}
                    }
                    // a finished receiver cannot be awaited again: queue anew
                    handed = self.queue_for(&key);
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            match self.try_acquire(shared, hostgroup, login).await {
                Ok(conn) => {
                    // one may have been handed over meanwhile: back it goes
                    handed.close();
                    if let Ok(extra) = handed.try_recv() {
                        let settings = shared.load().pool.clone();
                        self.put_back(extra, &settings);
                    }
                    return Ok(conn);
                }
                Err(AcquireError::Full(hg)) if tokio::time::Instant::now() >= deadline => {
                    self.waits.timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(AcquireError::WaitedTooLong(hg, wait));
                }
                Err(AcquireError::Full(_)) => {}
                Err(other) => return Err(other),
            }
        }
    }

    /// [`Pool::acquire`] for a session's default hostgroup: while the hostgroup has no
    /// server that can be reached (its writer died and the monitor has not placed the next
    /// one yet), looks again every 50 ms for up to `wait` instead of failing at once.
    pub async fn acquire_through_failover(
        &self,
        shared: &Shared,
        hostgroup: u32,
        login: &Login,
        wait: Duration,
    ) -> Result<BackendConn, AcquireError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.acquire(shared, hostgroup, login).await {
                Err(
                    AcquireError::NoServers(_)
                    | AcquireError::Unavailable { .. }
                    | AcquireError::Unreachable { .. },
                ) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_acquire(
        &self,
        shared: &Shared,
        hostgroup: u32,
        login: &Login,
    ) -> Result<BackendConn, AcquireError> {
        let runtime = shared.load();
        let candidates = shared.candidates(hostgroup);
        if candidates.is_empty() {
            let reasons = shared
                .membership()
                .and_then(|m| m.unavailable.get(&hostgroup).cloned())
                .unwrap_or_default();
            return Err(if reasons.is_empty() {
                AcquireError::NoServers(hostgroup)
            } else {
                AcquireError::Unavailable { hostgroup, reasons }
            });
        }
        let timeout = std::time::Duration::from_millis(runtime.proxy.connect_timeout_ms);
        // Servers in weighted order; each one's idle connections first, then a new one.
        // (Preferring any server with idle connections would undo the weights.)
        let mut last = None;
        for server in candidates {
            let key = PoolKey::new(&server, login);
            if let Some(mut conn) = self.take_idle(&key, login, &runtime.pool).await {
                count(&self.stats.gets_immediate);
                conn.server = server.clone();
                return Ok(conn);
            }
            let slot = match Slot::try_take(&server) {
                Some(slot) => slot,
                // an idle connection logged in for another user or character set makes room
                None if self.evict_idle(server.address()) => match Slot::try_take(&server) {
                    Some(slot) => slot,
                    None => continue,
                },
                None => continue,
            };
            match BackendConn::open(slot, login, runtime.backend_tls.as_ref(), timeout).await {
                Ok(conn) => return Ok(conn),
                Err(BackendError::Refused(_, err)) => return Err(AcquireError::Refused(err)),
                Err(e) => {
                    tracing::warn!(server = %server.address(), hostgroup, error = %e, "backend connection failed");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(last) => Err(AcquireError::Unreachable { hostgroup, last }),
            None => Err(AcquireError::Full(hostgroup)),
        }
    }

    /// Closes one idle connection to `address` (the oldest, of any key), so a server at its
    /// max_connections can take a connection for someone else. False when none is idle.
    fn evict_idle(&self, address: &str) -> bool {
        let mut idle = self.idle.lock().expect("pool lock");
        let oldest = idle
            .iter_mut()
            .filter(|(key, list)| key.address == address && !list.is_empty())
            .min_by_key(|(_, list)| list[0].since)
            .map(|(_, list)| list.remove(0));
        if oldest.is_some() {
            count(&self.stats.destroys);
        }
        oldest.is_some()
    }

    /// Gives a connection back: it is reset and kept for the next session of the same
    /// user, or closed when it cannot be reset or the pool for its server is full.
    pub async fn release(&self, mut conn: BackendConn, settings: &PoolSettings) {
        if settings.max_idle_per_server == 0 {
            count(&self.stats.destroys);
            return;
        }
        count(&self.stats.resets);
        if conn.reset().await.is_err() {
            count(&self.stats.destroys);
            return;
        }
        // the session may have changed schema in ways the proxy did not follow (USE in a
        // statement, a procedure): ask, so the next borrower's schema is set right
        match conn.query_text("SELECT DATABASE()").await {
            Ok(Ok(result)) => {
                conn.schema = result
                    .rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
            }
            _ => {
                count(&self.stats.destroys);
                return;
            }
        }
        self.keep(conn, settings);
    }

    /// Gives back a connection whose session left nothing on it but its schema and
    /// character set (multiplexing): kept as it is, without a reset; the next borrower
    /// sets what differs.
    pub fn put_back(&self, conn: BackendConn, settings: &PoolSettings) {
        self.keep(conn, settings);
    }

    fn keep(&self, mut conn: BackendConn, settings: &PoolSettings) {
        conn.conn.shrink_buffers();
        let Some(conn) = self.hand_over(conn) else {
            count(&self.stats.pushes);
            return;
        };
        if settings.max_idle_per_server == 0 {
            count(&self.stats.destroys);
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(conn.key.clone()).or_default();
        if list.len() < settings.max_idle_per_server {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
            count(&self.stats.pushes);
        } else {
            count(&self.stats.destroys);
        }
    }

    /// Joins the queue of statements waiting for a connection of `key`.
    fn queue_for(&self, key: &PoolKey) -> tokio::sync::oneshot::Receiver<BackendConn> {
        let (handover, handed) = tokio::sync::oneshot::channel();
        self.waiters
            .lock()
            .expect("pool lock")
            .entry(key.clone())
            .or_default()
            .push_back(handover);
        handed
    }

    /// Gives `conn` to the oldest statement still waiting for its key; returns it when
    /// none is.
    fn hand_over(&self, mut conn: BackendConn) -> Option<BackendConn> {
        let mut waiters = self.waiters.lock().expect("pool lock");
        let Some(queue) = waiters.get_mut(&conn.key) else {
            return Some(conn);
        };
        while let Some(waiter) = queue.pop_front() {
            match waiter.send(conn) {
                Ok(()) => return None,
                Err(back) => conn = back,
            }
        }
        waiters.remove(&conn.key);
        Some(conn)
    }

    /// Remembers how to log in as a user for `hostgroup`, so that `min_idle_per_server`
    /// connections can be kept ready for it; true the first time.
    pub fn remember(&self, hostgroup: u32, login: &Login) -> bool {
        let mut warm = self.warm.lock().expect("pool lock");
        let key = (hostgroup, login.user.clone());
        let first = !warm.contains_key(&key);
        warm.insert(key, login.clone());
        first
    }

    /// Opens connections until every remembered user has `min_idle_per_server` idle ones
    /// on each online server of its hostgroup, as far as the servers' max_connections
    /// allow. Users no longer configured, or whose login a server refuses, are forgotten.
    pub async fn top_up(&self, shared: &Shared) {
        let runtime = shared.load();
        let min = runtime
            .pool
            .min_idle_per_server
            .min(runtime.pool.max_idle_per_server);
        let logins: Vec<(u32, Login)> = {
            let mut warm = self.warm.lock().expect("pool lock");
            warm.retain(|(_, user), _| runtime.users.contains_key(user));
            if min == 0 {
                return;
            }
            warm.iter().map(|((hg, _), l)| (*hg, l.clone())).collect()
        };
        let timeout = Duration::from_millis(runtime.proxy.connect_timeout_ms);
        for (hostgroup, login) in logins {
            for server in shared.candidates(hostgroup) {
                let key = PoolKey::new(&server, &login);
                let idle = |pool: &Pool| {
                    pool.idle
                        .lock()
                        .expect("pool lock")
                        .get(&key)
                        .map_or(0, Vec::len)
                };
                while idle(self) < min {
                    let Some(slot) = Slot::try_take(&server) else {
                        break;
                    };
                    match BackendConn::open(slot, &login, runtime.backend_tls.as_ref(), timeout)
                        .await
                    {
                        Ok(conn) => self.keep(conn, &runtime.pool),
                        Err(BackendError::Refused(..)) => {
                            tracing::warn!(user = %login.user, server = %server.address(), "a server refused a pool login: the user is no longer kept warm");
                            self.warm
                                .lock()
                                .expect("pool lock")
                                .remove(&(hostgroup, login.user.clone()));
                            break;
                        }
                        Err(e) => {
                            tracing::debug!(server = %server.address(), error = %e, "cannot open an idle connection");
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Closes idle connections past their idle timeout or lifetime.
    pub fn sweep(&self, settings: &PoolSettings) {
        let idle_timeout = Duration::from_millis(settings.idle_timeout_ms);
        let lifetime = Duration::from_millis(settings.max_lifetime_ms);
        let mut idle = self.idle.lock().expect("pool lock");
        for list in idle.values_mut() {
            let before = list.len();
            list.retain(|i| {
                i.since.elapsed() <= idle_timeout && i.conn.created.elapsed() <= lifetime
            });
            let closed = (before - list.len()) as u64;
            self.stats.destroys.fetch_add(closed, Ordering::Relaxed);
        }
        idle.retain(|_, list| !list.is_empty());
    }
}
