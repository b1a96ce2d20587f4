//! What every task shares: the configuration snapshot in force, the monitor's placement
//! of the servers, and its check log. The snapshot is swapped whole on a reload; the
//! placement is published whole by the monitor; readers never wait for either.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::Config;
use crate::monitor::agreement::PeerWriters;
use crate::monitor::membership::Membership;
use crate::monitor::observation::Observation;
use crate::runtime::{Members, Runtime, ServerTarget};
use crate::tls::TlsError;

/// The current snapshot and the monitor's current hostgroup membership, shared by every
/// task.
pub struct Shared {
    current: ArcSwap<Runtime>,
    /// `None` until (and unless) a monitor publishes membership; then it replaces the
    /// configured hostgroups.
    membership: ArcSwapOption<Membership>,
    /// The writers the proxies of this cluster name reported in their heartbeats, as last
    /// read (`None` without `[cluster] sync`, or before the first read).
    peer_writers: ArcSwapOption<PeerWriters>,
    /// The monitor's latest checks, newest last (the admin port's monitor logs).
    checks: Mutex<VecDeque<CheckRecord>>,
    /// Per server address, since start.
    check_totals: Mutex<HashMap<String, ServerChecks>>,
    /// Times a Galera writer hostgroup got a different writer.
    writer_changes: AtomicU64,
    /// The monitor's checks by what they found, since start.
    pub check_counts: CheckCounts,
    /// Times the servers in force changed (a reload, or the monitor placing them anew):
    /// ProxySQL's `Servers_table_version`.
    servers_version: AtomicU64,
}

/// The monitor's checks counted the way ProxySQL's `MySQL_Monitor_*_check_OK/ERR` are.
/// One check of Sluice's is a ping, a read of `read_only` (and the Galera or replica
/// state) and, on a replica, of its lag: each part counts where it was made.
#[derive(Debug, Default)]
pub struct CheckCounts {
    /// Connections the monitor opened (a check reuses the previous one when it can).
    pub connect_ok: AtomicU64,
    pub connect_err: AtomicU64,
    pub ping_ok: AtomicU64,
    pub ping_err: AtomicU64,
    pub read_only_ok: AtomicU64,
    pub read_only_err: AtomicU64,
    /// Lag reads of servers that answered as replicas; errors are failed checks of
    /// servers last seen as replicas.
    pub lag_ok: AtomicU64,
    pub lag_err: AtomicU64,
}

/// What the monitor's checks of one server came to, since start.
#[derive(Debug, Default)]
struct ServerChecks {
    checks: u64,
    failed: u64,
    /// Its last successful check found a replica (a failed check of it is a failed lag
    /// check too).
    replica: bool,
}

/// Checks kept for the admin port's monitor logs.
const CHECKS_KEPT: usize = 2000;

impl CheckCounts {
    fn count(&self, check: &CheckRecord, was_replica: bool) {
        let add = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        match check.connected {
            Some(true) => add(&self.connect_ok),
            Some(false) => add(&self.connect_err),
            None => {}
        }
        if check.failed() {
            add(&self.ping_err);
            add(&self.read_only_err);
            if was_replica {
                add(&self.lag_err);
            }
        } else {
            add(&self.ping_ok);
            add(&self.read_only_ok);
            if matches!(check.seen, Observation::Replica(_)) {
                add(&self.lag_ok);
            }
        }
    }
}

/// One health check as the monitor saw it.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub host: String,
    pub port: u16,
    /// Unix time the check started, in microseconds.
    pub started_us: u64,
    pub took_us: u64,
    pub seen: Observation,
    /// Whether the check opened a connection, and whether that worked (`None`: it used
    /// the one kept from the previous check).
    pub connected: Option<bool>,
}

impl CheckRecord {
    pub fn failed(&self) -> bool {
        matches!(self.seen, Observation::Unreachable(_))
    }
}

impl Shared {
    pub fn new(runtime: Runtime) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(runtime),
            membership: ArcSwapOption::empty(),
            peer_writers: ArcSwapOption::empty(),
            checks: Mutex::new(VecDeque::new()),
            check_totals: Mutex::new(HashMap::new()),
            check_counts: CheckCounts::default(),
            servers_version: AtomicU64::new(1),
            writer_changes: AtomicU64::new(0),
        }
    }

    pub fn load(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// A look at the current snapshot without taking a reference to it (no write to the
    /// snapshot's shared counter, which every session would otherwise touch on every
    /// statement); not to be held across an await.
    pub fn peek(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.current.load()
    }

    /// The servers to try, in order, for a new connection to `hostgroup`.
    pub fn candidates(&self, hostgroup: u32) -> Vec<Arc<ServerTarget>> {
        match &*self.membership.load() {
            Some(m) => m.hostgroups.get(&hostgroup).map(Members::candidates),
            None => self
                .peek()
                .hostgroups
                .get(&hostgroup)
                .map(Members::candidates),
        }
        .unwrap_or_default()
    }

    /// Whether `hostgroup` has a server for a new connection right now.
    pub fn has_candidates(&self, hostgroup: u32) -> bool {
        match &*self.membership.load() {
            Some(m) => m
                .hostgroups
                .get(&hostgroup)
                .is_some_and(Members::has_candidates),
            None => self
                .peek()
                .hostgroups
                .get(&hostgroup)
                .is_some_and(Members::has_candidates),
        }
    }

    /// Whether `address` is currently a member of `hostgroup`.
    pub fn is_member(&self, hostgroup: u32, address: &str) -> bool {
        match &*self.membership.load() {
            Some(m) => m
                .hostgroups
                .get(&hostgroup)
                .is_some_and(|g| g.contains(address)),
            None => self
                .peek()
                .hostgroups
                .get(&hostgroup)
                .is_some_and(|g| g.contains(address)),
        }
    }

    /// Whether the monitor found `address` unreachable (dead or hung) in its last verdict.
    pub fn is_unreachable(&self, address: &str) -> bool {
        self.membership
            .load()
            .as_ref()
            .is_some_and(|m| m.unreachable.contains(address))
    }

    /// What the cluster's heartbeats said about writers, as last read.
    pub fn peer_writers(&self) -> Option<Arc<PeerWriters>> {
        self.peer_writers.load_full()
    }

    pub fn set_peer_writers(&self, writers: PeerWriters) {
        self.peer_writers.store(Some(Arc::new(writers)));
    }

    /// The membership the monitor published last.
    pub fn membership(&self) -> Option<Arc<Membership>> {
        self.membership.load_full()
    }

    /// Publishes new membership (from the monitor), and wakes the statements waiting on a
    /// server it newly finds unreachable, so they end with an error instead of hanging.
    pub fn publish(&self, membership: Membership) {
        self.servers_version.fetch_add(1, Ordering::Relaxed);
        let membership = Arc::new(membership);
        let before = self.membership.swap(Some(membership.clone()));
        let newly_lost = |address: &str| {
            membership.unreachable.contains(address)
                && !before
                    .as_ref()
                    .is_some_and(|b| b.unreachable.contains(address))
        };
        for members in self.load().hostgroups.values() {
            for server in &members.servers {
                if newly_lost(server.address()) {
                    server.stats.evictions.wake_all();
                }
            }
        }
    }

    /// Keeps one check for the monitor logs (the oldest falls off).
    pub fn record_check(&self, record: CheckRecord) {
        let was_replica = {
            let mut totals = self.check_totals.lock().expect("checks lock");
            let entry = totals
                .entry(format!("{}:{}", record.host, record.port))
                .or_default();
            let was_replica = entry.replica;
            entry.checks += 1;
            entry.failed += u64::from(record.failed());
            if !record.failed() {
                entry.replica = matches!(record.seen, Observation::Replica(_));
            }
            was_replica
        };
        self.check_counts.count(&record, was_replica);
        let mut checks = self.checks.lock().expect("checks lock");
        if checks.len() == CHECKS_KEPT {
            checks.pop_front();
        }
        checks.push_back(record);
    }

    /// The checks kept, oldest first.
    pub fn checks(&self) -> Vec<CheckRecord> {
        self.checks
            .lock()
            .expect("checks lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Checks and failed checks per server address, since start.
    pub fn check_totals(&self) -> Vec<(String, (u64, u64))> {
        let mut all: Vec<_> = self
            .check_totals
            .lock()
            .expect("checks lock")
            .iter()
            .map(|(a, t)| (a.clone(), (t.checks, t.failed)))
            .collect();
        all.sort();
        all
    }

    /// Counts a change of writer.
    pub fn writer_changed(&self) {
        self.writer_changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Times the servers in force changed since start (one at start).
    pub fn servers_version(&self) -> u64 {
        self.servers_version.load(Ordering::Relaxed)
    }

    /// Times a Galera writer hostgroup got a different writer, since start.
    pub fn writer_changes(&self) -> u64 {
        self.writer_changes.load(Ordering::Relaxed)
    }

    /// Rebuilds the snapshot from a new configuration and swaps it in; on error the old
    /// snapshot stays.
    pub fn reload(&self, config: &Config) -> Result<(), TlsError> {
        // what was learned but not yet written must not be lost when the file is re-read
        if let Err(e) = self.current.load().firewall.flush() {
            tracing::warn!(error = %e, "cannot write the firewall allow list");
        }
        let next = Arc::new(Runtime::build(config, Some(&self.current.load()))?);
        self.current.store(next.clone());
        self.servers_version.fetch_add(1, Ordering::Relaxed);
        // The monitor's placement stays, but with the new snapshot's servers (weights,
        // status, limits) and without servers that left the configuration.
        if let Some(old) = self.membership() {
            self.publish(old.with_servers_of(&next));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn weighted_rotation_spreads_by_weight() {
        let config = Config::from_toml(
            r#"
            [[servers]]
            host = "a"
            hostgroup = 1
            weight = 3
            [[servers]]
            host = "b"
            hostgroup = 1
            weight = 1
            "#,
            Path::new("."),
        )
        .unwrap();
        let shared = Shared::new(Runtime::build(&config, None).unwrap());
        let mut firsts = HashMap::new();
        for _ in 0..400 {
            let c = shared.candidates(1);
            assert_eq!(c.len(), 2);
            *firsts.entry(c[0].host.clone()).or_insert(0) += 1;
        }
        assert_eq!(firsts["a"], 300);
        assert_eq!(firsts["b"], 100);
        assert!(shared.candidates(2).is_empty());
        assert!(shared.has_candidates(1) && !shared.has_candidates(2));
    }
}
