//! The monitor: checks every backend on its own connections, turns what it sees into
//! hostgroup membership (electing the Galera writer), and publishes that membership for the
//! pool to use. It never touches client traffic.
//!
//! One loop runs rounds: every server is checked concurrently, each check bounded by the
//! timeout, then membership is recomputed from the verdicts. Verdicts change only after
//! `fail_after` bad or `recover_after` good checks in a row.

mod check;
pub mod health;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::backend::{BackendConn, Login};
use crate::protocol::constants::DEFAULT_CHARSET;
use crate::runtime::{CheckRecord, Runtime, ServerTarget, Shared};

use health::{place, Health, Observation};

/// The monitor's state between rounds.
struct Monitor {
    shared: Arc<Shared>,
    health: HashMap<String, Health>,
    connections: HashMap<String, BackendConn>,
    writers: HashMap<u32, Vec<String>>,
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
    };
    monitor.round().await;
    tokio::spawn(async move {
        loop {
            let runtime = monitor.shared.load();
            let Some(settings) = &runtime.monitor else {
                return;
            };
            let interval = Duration::from_millis(settings.config.interval_ms);
            drop(runtime);
            let next = tokio::time::Instant::now() + interval;
            monitor.round().await;
            tokio::time::sleep_until(next).await;
        }
    });
}

impl Monitor {
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

        let mut checks = JoinSet::new();
        for server in servers.iter().cloned() {
            let mut conn = self.connections.remove(server.address());
            let login = login.clone();
            let tls = runtime.backend_tls.clone();
            let shared = self.shared.clone();
            checks.spawn(async move {
                let started_us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros() as u64;
                let clock = std::time::Instant::now();
                let checked = check::check(&mut conn, &server, &login, tls.as_ref(), timeout).await;
                let seen = checked.seen;
                shared.record_check(CheckRecord {
                    host: server.host.clone(),
                    port: server.port,
                    started_us,
                    took_us: clock.elapsed().as_micros() as u64,
                    connected: checked.connected,
                    seen: seen.clone(),
                });
                (server, conn, seen)
            });
        }
        let mut changed = false;
        while let Some(done) = checks.join_next().await {
            let Ok((server, conn, seen)) = done else {
                continue;
            };
            let address = server.address().to_string();
            if let Some(conn) = conn {
                self.connections.insert(address.clone(), conn);
            }
            changed |= self.record(&server, seen, &runtime);
        }
        // forget servers that left the configuration
        self.health
            .retain(|address, _| servers.iter().any(|s| s.address() == address));

        let membership = place(
            &runtime.servers().cloned().collect::<Vec<_>>(),
            &runtime.galera,
            &self.health,
            &self.writers,
        );
        if membership.writers != self.writers {
            for (hostgroup, writers) in &membership.writers {
                let before = self.writers.get(hostgroup).cloned().unwrap_or_default();
                if before.is_empty() {
                    tracing::info!(hostgroup, writers = ?writers, "Galera writer elected");
                } else if &before != writers {
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
    fn record(&mut self, server: &ServerTarget, seen: Observation, runtime: &Runtime) -> bool {
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
                let flipped = h.record(
                    seen,
                    max_lag,
                    settings.config.fail_after,
                    settings.config.recover_after,
                );
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
