//! What a check saw, how that becomes a verdict over time (no flapping), and the pure
//! decision of which server belongs to which hostgroup — writer election included.
//! Nothing here performs I/O; `monitor::run` feeds it observations.

use std::collections::HashMap;
use std::sync::Arc;

pub use super::membership::Membership;
pub use super::observation::{GaleraStatus, Observation, ReplicaStatus, GALERA_SYNCED};
use crate::config::{GaleraHostgroups, ServerStatus};
use crate::runtime::{Members, ServerTarget};

/// A server's verdict over time: it changes only after `fail_after` bad checks in a row, or
/// `recover_after` good ones — and not at all while the Galera cluster vouches for a node
/// whose checks time out (see [`still_a_member`]).
#[derive(Debug, Clone)]
pub struct Health {
    pub healthy: bool,
    good_streak: u32,
    bad_streak: u32,
    /// The observation placement reads: the last check's, except while the cluster
    /// vouches for the node, when it stays the last one before its checks timed out.
    pub last: Observation,
    /// The last healthy Galera observation: the configuration the node was last seen on.
    pub last_good: Option<GaleraStatus>,
    /// Since when the cluster has vouched for the node's timed-out checks.
    pub vouched_since: Option<std::time::Instant>,
}

impl Health {
    /// Whether the cluster vouches for the node's timed-out checks now.
    pub fn vouched(&self) -> bool {
        self.vouched_since.is_some()
    }

    /// The first check decides at once: there is no earlier verdict to protect.
    pub fn new(first: Observation, max_lag: u64) -> Health {
        let healthy = first.is_healthy(max_lag);
        Health {
            healthy,
            good_streak: 0,
            bad_streak: 0,
            last_good: match &first {
                Observation::Galera(g) if healthy => Some(g.clone()),
                _ => None,
            },
            last: first,
            vouched_since: None,
        }
    }

    /// Records a check; returns whether the verdict changed. `vouched`: the check timed
    /// out, and the Galera cluster still counts the node in — it counts as bad, but the
    /// verdict and what placement reads stay as they were.
    pub fn record(
        &mut self,
        seen: Observation,
        max_lag: u64,
        fail_after: u32,
        recover_after: u32,
        vouched: bool,
    ) -> bool {
        let ok = seen.is_healthy(max_lag);
        if ok {
            self.good_streak += 1;
            self.bad_streak = 0;
            self.vouched_since = None;
            if let Observation::Galera(g) = &seen {
                self.last_good = Some(g.clone());
            }
        } else {
            self.bad_streak += 1;
            self.good_streak = 0;
        }
        if vouched && !ok {
            self.vouched_since
                .get_or_insert_with(std::time::Instant::now);
            return false;
        }
        self.vouched_since = None;
        self.last = seen;
        let flip = if self.healthy {
            self.bad_streak >= fail_after
        } else {
            self.good_streak >= recover_after
        };
        if flip {
            self.healthy = !self.healthy;
        }
        flip
    }
}

/// Whether the Galera cluster still counts in a node whose check timed out: a peer
/// checked in the same round is Synced in the Primary component and still on the
/// configuration the node was last seen healthy on (`wsrep_cluster_conf_id` has not
/// moved: nobody was evicted or joined since). An overloaded node that answers slowly is
/// thus kept in its role — moving the writer gains nothing while Galera itself still
/// waits for the node, and costs certification conflicts — while a node Galera evicts
/// (hung past its suspicion timeout) loses its role at the next round. Any other
/// membership change ends the vouching too: then the checks decide alone, as before.
pub fn still_a_member(last_good: Option<&GaleraStatus>, peers: &[GaleraStatus]) -> bool {
    let Some(last_good) = last_good else {
        return false;
    };
    last_good.conf_id != 0
        && peers
            .iter()
            .any(|p| p.primary && p.local_state == GALERA_SYNCED && p.conf_id == last_good.conf_id)
}

/// Computes hostgroup membership from the configured servers and their health.
///
/// Galera nodes are the servers configured in a writer or backup-writer hostgroup; the
/// monitor places them. Every other configured server stays in its configured hostgroup
/// while healthy. `previous_writers` keeps the current writer in place while it stays
/// eligible: no failback storm when an earlier writer returns.
pub fn place(
    servers: &[Arc<ServerTarget>],
    galera: &[GaleraHostgroups],
    health: &HashMap<String, Health>,
    previous_writers: &HashMap<u32, Vec<String>>,
) -> Membership {
    let mut groups: HashMap<u32, Vec<Arc<ServerTarget>>> = HashMap::new();
    let mut out = Membership {
        unreachable: health
            .iter()
            .filter(|(_, h)| !h.healthy && matches!(h.last, Observation::Unreachable(_)))
            .map(|(address, _)| address.clone())
            .collect(),
        lagging: health
            .iter()
            .filter(|(_, h)| !h.healthy && matches!(h.last, Observation::Replica(_)))
            .map(|(address, _)| address.clone())
            .collect(),
        ..Membership::default()
    };
    let is_galera_member = |s: &ServerTarget| {
        galera
            .iter()
            .any(|g| s.hostgroup == g.writer_hostgroup || s.hostgroup == g.backup_writer_hostgroup)
    };
    for s in servers.iter().filter(|s| !is_galera_member(s)) {
        match health.get(s.address()) {
            Some(h) if h.healthy => groups.entry(s.hostgroup).or_default().push(s.clone()),
            Some(h) => out
                .unavailable
                .entry(s.hostgroup)
                .or_default()
                .push(format!(
                    "{}: {}",
                    s.address(),
                    h.last.problem(s.max_replication_lag)
                )),
            None => {}
        }
    }
    for g in galera {
        place_galera(servers, g, health, previous_writers, &mut groups, &mut out);
    }
    out.hostgroups = groups
        .into_iter()
        .map(|(id, members)| (id, Members::new(members)))
        .collect();
    out
}

fn place_galera(
    servers: &[Arc<ServerTarget>],
    g: &GaleraHostgroups,
    health: &HashMap<String, Health>,
    previous_writers: &HashMap<u32, Vec<String>>,
    groups: &mut HashMap<u32, Vec<Arc<ServerTarget>>>,
    out: &mut Membership,
) {
    // the cluster's nodes, once each, in configuration order
    let mut nodes: Vec<&Arc<ServerTarget>> = Vec::new();
    for s in servers {
        let member = s.hostgroup == g.writer_hostgroup || s.hostgroup == g.backup_writer_hostgroup;
        if member && !nodes.iter().any(|n| n.address() == s.address()) {
            nodes.push(s);
        }
    }
    let status = |s: &ServerTarget| -> Option<GaleraStatus> {
        let h = health.get(s.address())?;
        match (&h.last, h.healthy) {
            (Observation::Galera(st), true) => Some(st.clone()),
            _ => None,
        }
    };
    let writable: Vec<&Arc<ServerTarget>> = nodes
        .iter()
        .copied()
        .filter(|s| s.status == ServerStatus::Online && status(s).is_some_and(|st| !st.read_only))
        .collect();

    // keep the writers that still qualify, then fill up by preference
    let mut writers: Vec<&Arc<ServerTarget>> = previous_writers
        .get(&g.writer_hostgroup)
        .into_iter()
        .flatten()
        .filter_map(|addr| writable.iter().copied().find(|s| s.address() == addr))
        .take(g.max_writers as usize)
        .collect();
    let mut ranked = writable.clone();
    ranked.sort_by_key(|s| (std::cmp::Reverse(s.priority), std::cmp::Reverse(s.weight)));
    for s in ranked {
        if writers.len() >= g.max_writers as usize {
            break;
        }
        if !writers.iter().any(|w| w.address() == s.address()) {
            writers.push(s);
        }
    }

    for s in &nodes {
        let usable = status(s).is_some_and(|st| !st.read_only);
        if let (false, Some(h)) = (usable, health.get(s.address())) {
            out.unavailable
                .entry(g.writer_hostgroup)
                .or_default()
                .push(format!("{}: {}", s.address(), h.last.problem(0)));
        }
    }
    let is_writer = |s: &ServerTarget| writers.iter().any(|w| w.address() == s.address());
    for s in &nodes {
        let hg_of = |hostgroup: u32| with_hostgroup(s, hostgroup);
        match status(s) {
            None => groups
                .entry(g.offline_hostgroup)
                .or_default()
                .push(hg_of(g.offline_hostgroup)),
            Some(st) => {
                let writer = is_writer(s);
                if writer {
                    groups
                        .entry(g.writer_hostgroup)
                        .or_default()
                        .push(hg_of(g.writer_hostgroup));
                } else if !st.read_only {
                    groups
                        .entry(g.backup_writer_hostgroup)
                        .or_default()
                        .push(hg_of(g.backup_writer_hostgroup));
                }
                let reads = match g.writer_is_also_reader {
                    0 => st.read_only,
                    1 => true,
                    _ => !writer,
                };
                if reads && st.recv_queue <= g.max_transactions_behind {
                    groups
                        .entry(g.reader_hostgroup)
                        .or_default()
                        .push(hg_of(g.reader_hostgroup));
                }
            }
        }
    }
    out.writers.insert(
        g.writer_hostgroup,
        writers.iter().map(|w| w.address().to_string()).collect(),
    );
}

/// The same server, as a member of another hostgroup (sharing its connection counter).
fn with_hostgroup(s: &Arc<ServerTarget>, hostgroup: u32) -> Arc<ServerTarget> {
    if s.hostgroup == hostgroup {
        return s.clone();
    }
    Arc::new(ServerTarget {
        hostgroup,
        ..ServerTarget::clone(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(conf_id: u64) -> GaleraStatus {
        GaleraStatus {
            local_state: GALERA_SYNCED,
            primary: true,
            ready: true,
            conf_id,
            ..GaleraStatus::default()
        }
    }

    #[test]
    fn the_cluster_vouches_only_while_its_membership_is_the_one_the_node_was_seen_in() {
        let seen_in = synced(5);
        assert!(still_a_member(Some(&seen_in), &[synced(5)]));
        // a peer that moved on (the node evicted, or anyone joined or left)
        assert!(!still_a_member(Some(&seen_in), &[synced(6)]));
        // a peer that cannot speak for the primary component
        let non_primary = GaleraStatus {
            primary: false,
            ..synced(5)
        };
        let donor = GaleraStatus {
            local_state: 2,
            ..synced(5)
        };
        assert!(!still_a_member(Some(&seen_in), &[non_primary, donor]));
        assert!(!still_a_member(Some(&seen_in), &[]));
        // never seen healthy, or a server that reports no configuration
        assert!(!still_a_member(None, &[synced(5)]));
        assert!(!still_a_member(Some(&synced(0)), &[synced(0)]));
    }

    /// Rounds of one writer's checks, as (what the check saw, whether the cluster vouched
    /// for it), and the verdict after each: timeouts the cluster vouches for keep the
    /// writer in service and its last Galera state for placement, however many; the
    /// first one it no longer vouches for takes the writer out at once (the timeouts
    /// before it counted).
    #[test]
    fn a_writer_the_cluster_vouches_for_keeps_its_verdict_until_the_cluster_lets_go() {
        let timeout = || Observation::Unreachable("no answer within 1s".into());
        let mut h = Health::new(Observation::Galera(synced(5)), 0);
        let rounds = [
            (timeout(), true, true),
            (timeout(), true, true),
            (timeout(), true, true),
            (Observation::Galera(synced(5)), false, true),
            (timeout(), true, true),
            (timeout(), false, false),
        ];
        for (i, (seen, vouched, healthy)) in rounds.into_iter().enumerate() {
            h.record(seen, 0, 2, 3, vouched);
            assert_eq!(h.healthy, healthy, "round {i}");
            if healthy {
                assert!(
                    matches!(h.last, Observation::Galera(_)),
                    "round {i}: {:?}",
                    h.last
                );
            }
        }
        // one vouched timeout, then the cluster lets go: out at the first unvouched one
        let mut h = Health::new(Observation::Galera(synced(5)), 0);
        h.record(timeout(), 0, 2, 3, true);
        assert!(h.vouched_since.is_some());
        assert!(h.record(timeout(), 0, 2, 3, false));
        assert!(!h.healthy && h.vouched_since.is_none());
    }
    use std::sync::atomic::AtomicU32;

    fn server(port: u16, hostgroup: u32, priority: i32) -> Arc<ServerTarget> {
        Arc::new(ServerTarget {
            host: "127.0.0.1".into(),
            port,
            hostgroup,
            weight: 1,
            max_connections: 100,
            tls: false,
            max_replication_lag: 0,
            priority,
            status: ServerStatus::Online,
            connections: Arc::new(AtomicU32::new(0)),
            stats: Arc::default(),
            address: format!("127.0.0.1:{port}"),
        })
    }

    fn galera(read_only: bool) -> Observation {
        Observation::Galera(GaleraStatus {
            local_state: GALERA_SYNCED,
            primary: true,
            ready: true,
            read_only,
            ..Default::default()
        })
    }

    fn groups(writer_is_also_reader: u8) -> Vec<GaleraHostgroups> {
        vec![GaleraHostgroups {
            writer_hostgroup: 10,
            backup_writer_hostgroup: 11,
            reader_hostgroup: 20,
            offline_hostgroup: 99,
            max_writers: 1,
            writer_is_also_reader,
            max_transactions_behind: 100,
            fallback_to_writer: true,
        }]
    }

    #[test]
    fn offline_nodes_are_not_elected() {
        let mut preferred = ServerTarget::clone(&server(1, 10, 9));
        preferred.status = ServerStatus::OfflineSoft;
        let servers = vec![Arc::new(preferred), server(2, 10, 0)];
        let h = health(&[(1, galera(false)), (2, galera(false))]);
        let m = place(&servers, &groups(0), &h, &HashMap::new());
        assert_eq!(ports(&m, 10), vec![2]);
    }

    fn ports(m: &Membership, hg: u32) -> Vec<u16> {
        let mut p: Vec<u16> = m
            .hostgroups
            .get(&hg)
            .into_iter()
            .flat_map(|g| g.servers.iter())
            .map(|s| s.port)
            .collect();
        p.sort();
        p
    }

    fn health(entries: &[(u16, Observation)]) -> HashMap<String, Health> {
        entries
            .iter()
            .map(|(port, o)| (format!("127.0.0.1:{port}"), Health::new(o.clone(), 0)))
            .collect()
    }

    #[test]
    fn one_writer_by_priority_others_back_up_and_replicas_read() {
        let servers = vec![
            server(1, 10, 0),
            server(2, 10, 5),
            server(3, 10, 0),
            server(9, 20, 0),
        ];
        let replica = Observation::Replica(ReplicaStatus {
            io_running: true,
            sql_running: true,
            lag: Some(0),
            read_only: true,
        });
        let h = health(&[
            (1, galera(false)),
            (2, galera(false)),
            (3, galera(false)),
            (9, replica),
        ]);
        let m = place(&servers, &groups(0), &h, &HashMap::new());
        assert_eq!(ports(&m, 10), vec![2], "highest priority writes");
        assert_eq!(ports(&m, 11), vec![1, 3]);
        assert_eq!(
            ports(&m, 20),
            vec![9],
            "writer_is_also_reader=0: writable nodes do not read"
        );
        let m = place(&servers, &groups(1), &h, &HashMap::new());
        assert_eq!(ports(&m, 20), vec![1, 2, 3, 9]);
        let m = place(&servers, &groups(2), &h, &HashMap::new());
        assert_eq!(ports(&m, 20), vec![1, 3, 9]);
    }

    #[test]
    fn the_current_writer_stays_while_eligible_and_is_replaced_when_not() {
        let servers = vec![server(1, 10, 0), server(2, 10, 9)];
        let h = health(&[(1, galera(false)), (2, galera(false))]);
        let previous = HashMap::from([(10, vec!["127.0.0.1:1".to_string()])]);
        let m = place(&servers, &groups(0), &h, &previous);
        assert_eq!(ports(&m, 10), vec![1], "no failback to the preferred node");

        let h = health(&[
            (1, Observation::Unreachable("refused".into())),
            (2, galera(false)),
        ]);
        let m = place(&servers, &groups(0), &h, &previous);
        assert_eq!(ports(&m, 10), vec![2]);
        assert_eq!(ports(&m, 99), vec![1], "the dead node is offline");
        assert_eq!(m.writers[&10], vec!["127.0.0.1:2"]);
    }

    #[test]
    fn desynced_rejecting_or_read_only_nodes_do_not_write() {
        let servers = vec![server(1, 10, 0), server(2, 10, 0), server(3, 10, 0)];
        let mut desync = galera(false);
        if let Observation::Galera(g) = &mut desync {
            g.desync = true;
        }
        let mut reject = galera(false);
        if let Observation::Galera(g) = &mut reject {
            g.reject_queries = true;
        }
        let h = health(&[(1, desync), (2, reject), (3, galera(true))]);
        let m = place(&servers, &groups(0), &h, &HashMap::new());
        assert_eq!(ports(&m, 10), Vec::<u16>::new(), "no eligible writer");
        assert_eq!(ports(&m, 99), vec![1, 2]);
        assert_eq!(ports(&m, 20), vec![3]);
    }

    #[test]
    fn verdicts_need_streaks_to_change() {
        let mut h = Health::new(galera(false), 0);
        let down = || Observation::Unreachable("timeout".into());
        assert!(!h.record(down(), 0, 2, 3, false));
        assert!(h.healthy);
        assert!(h.record(down(), 0, 2, 3, false));
        assert!(!h.healthy);
        assert!(!h.record(galera(false), 0, 2, 3, false));
        assert!(
            !h.record(down(), 0, 2, 3, false),
            "a failure resets the good streak"
        );
        for _ in 0..2 {
            assert!(!h.record(galera(false), 0, 2, 3, false));
        }
        assert!(h.record(galera(false), 0, 2, 3, false));
        assert!(h.healthy);
    }

    #[test]
    fn replicas_need_both_threads_and_bounded_lag() {
        let r = |io, sql, lag| {
            Observation::Replica(ReplicaStatus {
                io_running: io,
                sql_running: sql,
                lag,
                read_only: true,
            })
        };
        assert!(r(true, true, Some(3)).is_healthy(0));
        assert!(r(true, true, Some(3)).is_healthy(5));
        assert!(!r(true, true, Some(30)).is_healthy(5));
        assert!(!r(true, false, None).is_healthy(0));
        assert!(!r(false, true, Some(0)).is_healthy(0));
    }
}
