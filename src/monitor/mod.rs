//! The monitor: checks every backend on its own connections, turns what it sees into
//! hostgroup membership (electing the Galera writer), and publishes that membership for the
//! pool to use. It never touches client traffic.
//!
//! One loop runs rounds: every server is checked concurrently, each check bounded by the
//! timeout, then membership is recomputed from the verdicts. Verdicts change only after
//! `fail_after` bad or `recover_after` good checks in a row — and a Galera node whose
//! checks time out keeps its verdict while its peers show the cluster still counts it in
//! (`health::still_a_member`): then its own check runs in the background and rounds come
//! every 100 ms, so the round that sees Galera evict it takes it out. With `[cluster]
//! sync`, the election also weighs the writers the other proxies report (`agreement`).

pub mod agreement;
mod check;
pub mod health;
pub mod membership;
pub mod observation;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::backend::{BackendConn, Login};
use crate::protocol::constants::DEFAULT_CHARSET;
use crate::runtime::{Runtime, ServerTarget};
use crate::shared::{CheckRecord, Shared};

use health::{place, GaleraStatus, Health, Observation};

/// How often rounds run while the cluster vouches for a node: only its peers are checked
/// then (the node's own check runs in the background), so this costs little, and the
/// node loses its role within this of Galera evicting it.
const VOUCHING_INTERVAL: Duration = Duration::from_millis(100);

/// The monitor's state between rounds.
struct Monitor {
    shared: Arc<Shared>,
    health: HashMap<String, Health>,
    connections: HashMap<String, BackendConn>,
    writers: HashMap<u32, Vec<String>>,
    /// Background checks of nodes the cluster vouches for, by address.
    pending: HashMap<String, tokio::task::JoinHandle<Done>>,
}

/// Runs the first round (so the proxy never serves from a membership it has not checked),
/// then keeps checking in the background. Does nothing when no `[monitor]` is configured.
pub async fn start(shared: Arc<Shared>) {
    if shared.load().monitor.is_none() {
        return;
    }
    let mut monitor = Monitor {
        shared,
        health: HashMap::new(),
        connections: HashMap::new(),
        writers: HashMap::new(),
        pending: HashMap::new(),
    };
    monitor.round().await;
    tokio::spawn(async move {
        loop {
            let runtime = monitor.shared.load();
            let Some(settings) = &runtime.monitor else {
                return;
            };
            let mut interval = Duration::from_millis(settings.config.interval_ms);
            if monitor.vouching() {
                // the round that sees the cluster evict the node decides: look often
                interval = interval.min(VOUCHING_INTERVAL);
            }
            drop(runtime);
            let next = tokio::time::Instant::now() + interval;
            monitor.round().await;
            tokio::time::sleep_until(next).await;
        }
    });
}

impl Monitor {
    /// Whether the cluster vouches for any node now.
    fn vouching(&self) -> bool {
        self.health.values().any(Health::vouched)
    }

    /// Whether the cluster vouches for `address` now: its peers this round still count it
    /// in (see [`health::still_a_member`]), and it has not been vouched for longer than
    /// `limit`.
    fn vouches(&self, address: &str, peers: &[GaleraStatus], limit: Duration) -> bool {
        let Some(h) = self.health.get(address) else {
            return false;
        };
        let within = h.vouched_since.is_none_or(|since| since.elapsed() < limit);
        within && h.healthy && health::still_a_member(h.last_good.as_ref(), peers)
    }

    async fn round(&mut self) {
        let runtime = self.shared.load();
        let Some(settings) = &runtime.monitor else {
            return;
        };
        let login = Login {
            user: settings.config.user.clone(),
            key: Some(settings.key),
            database: None,
            charset: DEFAULT_CHARSET,
            client_capabilities: 0,
            connect_attrs: None,
            track_session_state: false,
            track_gtid: false,
        };
        let timeout = Duration::from_millis(settings.config.timeout_ms);
        let servers = unique_servers(&runtime);

        // A node the cluster vouches for (its checks time out) is checked in the
        // background: the round does not wait for it, so the round that sees the cluster
        // evict it comes within `interval_ms`, not after another timeout.
        let mut checks = JoinSet::new();
        let mut fresh: Vec<Done> = Vec::new();
        for server in servers.iter().cloned() {
            let address = server.address().to_string();
            if let Some(pending) = self.pending.remove(&address) {
                if pending.is_finished() {
                    if let Ok(done) = pending.await {
                        fresh.push(done);
                    }
                } else {
                    self.pending.insert(address, pending);
                }
                continue;
            }
            let conn = self.connections.remove(&address);
            let task = check_task(server, conn, login.clone(), &runtime, &self.shared, timeout);
            let vouched = self.health.get(&address).is_some_and(Health::vouched);
            if vouched {
                self.pending.insert(address, tokio::spawn(task));
            } else {
                checks.spawn(task);
            }
        }
        while let Some(done) = checks.join_next().await {
            if let Ok(done) = done {
                fresh.push(done);
            }
        }
        let peers: Vec<GaleraStatus> = fresh
            .iter()
            .filter_map(|d| match &d.seen {
                Observation::Galera(g) => Some(g.clone()),
                _ => None,
            })
            .collect();
        let limit = Duration::from_millis(settings.config.vouch_limit_ms);
        let mut changed = false;
        let mut answered = std::collections::HashSet::new();
        for done in fresh {
            let address = done.server.address().to_string();
            if let Some(conn) = done.conn {
                self.connections.insert(address.clone(), conn);
            }
            let vouched = done.timed_out && self.vouches(&address, &peers, limit);
            changed |= self.record(&done.server, done.seen, &runtime, vouched);
            answered.insert(address);
        }
        // nodes whose background check is still running: vouched for until the cluster
        // no longer counts them in
        for server in &servers {
            let address = server.address();
            let waiting = self.health.get(address).is_some_and(Health::vouched);
            if waiting && !answered.contains(address) && !self.vouches(address, &peers, limit) {
                let gone = Observation::Unreachable(format!(
                    "no answer within {timeout:?}, and the Galera cluster no longer counts it in"
                ));
                changed |= self.record(server, gone, &runtime, false);
            }
        }
        // forget servers that left the configuration
        self.health
            .retain(|address, _| servers.iter().any(|s| s.address() == address));
        self.pending
            .retain(|address, _| servers.iter().any(|s| s.address() == address));

        let incumbents =
            agreement::incumbents(&self.writers, self.shared.peer_writers().as_deref());
        let membership = place(
            &runtime.servers().cloned().collect::<Vec<_>>(),
            &runtime.galera,
            &self.health,
            &incumbents,
        );
        if membership.writers != self.writers {
            for (hostgroup, writers) in &membership.writers {
                let before = self.writers.get(hostgroup).cloned().unwrap_or_default();
                if before.is_empty() {
                    tracing::info!(hostgroup, writers = ?writers, "Galera writer elected");
                } else if &before != writers {
                    if incumbents.get(hostgroup) == Some(writers) {
                        tracing::info!(
                            hostgroup,
                            ?writers,
                            "a peer proxy has held other Galera writers for longer: taking them"
                        );
                    }
                    self.shared.writer_changed();
                    tracing::warn!(hostgroup, ?before, after = ?writers, "Galera writer changed");
                }
            }
            self.writers = membership.writers.clone();
            changed = true;
        }
        if changed || self.shared.membership().is_none() {
            self.shared.publish(membership);
        }
    }

    /// Records one observation; returns whether membership may have changed.
    fn record(
        &mut self,
        server: &ServerTarget,
        seen: Observation,
        runtime: &Runtime,
        vouched: bool,
    ) -> bool {
        let settings = runtime.monitor.as_ref().expect("monitor configured");
        let address = server.address().to_string();
        let max_lag = server.max_replication_lag;
        match self.health.get_mut(&address) {
            None => {
                tracing::info!(server = %address, ?seen, "first check");
                self.health.insert(address, Health::new(seen, max_lag));
                true
            }
            Some(h) => {
                let before = h.last.clone();
                let was_vouched = h.vouched();
                let flipped = h.record(
                    seen,
                    max_lag,
                    settings.config.fail_after,
                    settings.config.recover_after,
                    vouched,
                );
                if vouched && !was_vouched {
                    tracing::warn!(server = %address, "check timed out; the Galera cluster still counts the node in: it keeps its role");
                }
                if flipped {
                    let verdict = if h.healthy {
                        "back in service"
                    } else {
                        "taken out"
                    };
                    tracing::warn!(server = %address, seen = ?h.last, "{verdict}");
                }
                // a role-relevant change (read_only, queue) matters even without a flip
                flipped || role_changed(&before, &h.last)
            }
        }
    }
}

/// One finished check.
struct Done {
    server: Arc<ServerTarget>,
    conn: Option<BackendConn>,
    seen: Observation,
    timed_out: bool,
}

/// A check of `server` on `conn` (or a new connection), kept in the monitor logs.
fn check_task(
    server: Arc<ServerTarget>,
    mut conn: Option<BackendConn>,
    login: Login,
    runtime: &Runtime,
    shared: &Arc<Shared>,
    timeout: Duration,
) -> impl std::future::Future<Output = Done> + Send + 'static {
    let tls = runtime.backend_tls.clone();
    let shared = shared.clone();
    async move {
        let started_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let clock = std::time::Instant::now();
        let checked = check::check(&mut conn, &server, &login, tls.as_ref(), timeout).await;
        shared.record_check(CheckRecord {
            host: server.host.clone(),
            port: server.port,
            started_us,
            took_us: clock.elapsed().as_micros() as u64,
            connected: checked.connected,
            seen: checked.seen.clone(),
        });
        Done {
            server,
            conn,
            seen: checked.seen,
            timed_out: checked.timed_out,
        }
    }
}

/// Whether two healthy observations differ in something placement depends on.
fn role_changed(before: &Observation, after: &Observation) -> bool {
    match (before, after) {
        (Observation::Galera(a), Observation::Galera(b)) => {
            a.read_only != b.read_only || a.recv_queue != b.recv_queue
        }
        (Observation::Unreachable(_), Observation::Unreachable(_)) => false,
        (a, b) => std::mem::discriminant(a) != std::mem::discriminant(b),
    }
}

/// Each configured address once (a server may sit in several hostgroups).
fn unique_servers(runtime: &Runtime) -> Vec<Arc<ServerTarget>> {
    let mut out: Vec<Arc<ServerTarget>> = Vec::new();
    for s in runtime.servers() {
        if !out.iter().any(|o| o.address() == s.address()) {
            out.push(s.clone());
        }
    }
    out
}
