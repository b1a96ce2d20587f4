//! Two proxies of one cluster name agree on the Galera writer.
//!
//! Each proxy elects its writer alone, and keeps it while it qualifies (no failback). Left
//! at that, two proxies can disagree for good: after the preferred node returns from a
//! failure, a proxy restarted then elects it while its peer keeps the node it failed over
//! to — and two nodes take writes at once, which Galera answers with certification
//! conflicts. So each proxy publishes its writers in its heartbeat (`[cluster] sync`), with
//! how long it has held them by the database's clock, and a proxy whose peer has held
//! other writers for longer takes the peer's, where they qualify here too: the writer
//! elected first wins, and a restarted proxy joins the running one's writer.

use std::collections::HashMap;

/// The writers a proxy reported, by writer hostgroup.
pub type Writers = HashMap<u32, Vec<String>>;

/// What a proxy of the cluster reported in its last heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reported {
    pub writers: Writers,
    /// How long it has held them, by the database's clock.
    pub held_ms: u64,
    /// How long ago the heartbeat was written, by the database's clock.
    pub ago_ms: u64,
}

/// What the cluster's heartbeats say about writers, as last read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerWriters {
    /// This proxy's own row: the writers it last reported.
    pub own: Option<Reported>,
    /// The other proxies heard from lately.
    pub peers: Vec<Reported>,
}

/// The writers `ours` as a heartbeat carries them: `10=a:1,b:2;11=c:3`, sorted.
pub fn encode(ours: &Writers) -> String {
    let mut groups: Vec<_> = ours.iter().filter(|(_, w)| !w.is_empty()).collect();
    groups.sort();
    groups
        .iter()
        .map(|(hostgroup, writers)| format!("{hostgroup}={}", writers.join(",")))
        .collect::<Vec<_>>()
        .join(";")
}

/// The writers of a heartbeat (what [`encode`] wrote; anything else is skipped).
pub fn decode(text: &str) -> Writers {
    text.split(';')
        .filter_map(|group| {
            let (hostgroup, writers) = group.split_once('=')?;
            let writers: Vec<String> = writers
                .split(',')
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect();
            Some((hostgroup.parse().ok()?, writers))
        })
        .filter(|(_, writers)| !writers.is_empty())
        .collect()
}

/// The writers the election keeps in place this round (see the module documentation):
/// `ours`, except where a peer has held other writers for longer than this proxy has held
/// its own — on a report the peer wrote after this proxy's own row showed its current
/// writers, so that a stale row (a peer whose heartbeats stopped while the store failed
/// over with the writer) never undoes a failover. A hostgroup without a writer here yet
/// (the first election) takes the peers' oldest. Ties go to the writers that sort first,
/// the same on every proxy.
pub fn incumbents(ours: &Writers, cluster: Option<&PeerWriters>) -> Writers {
    let Some(cluster) = cluster else {
        return ours.clone();
    };
    // how long this proxy has held its writers, if its row says so already
    let own_held = cluster
        .own
        .as_ref()
        .filter(|own| own.writers == *ours)
        .map(|own| own.held_ms);
    let mut kept = ours.clone();
    for peer in &cluster.peers {
        for (hostgroup, theirs) in &peer.writers {
            let mine = ours.get(hostgroup).filter(|w| !w.is_empty());
            if mine == Some(theirs) {
                continue;
            }
            let current = kept.get(hostgroup).filter(|w| !w.is_empty());
            let adopt = match (mine, own_held) {
                // the first election: the oldest writers any peer holds
                (None, _) => match current {
                    None => true,
                    Some(current) => {
                        older(peer, theirs, held_by(cluster, *hostgroup, current), current)
                    }
                },
                (Some(_), Some(own_held)) if peer.ago_ms < own_held => {
                    let current_held = match current == mine {
                        true => own_held,
                        false => held_by(cluster, *hostgroup, current.expect("kept")),
                    };
                    older(peer, theirs, current_held, current.expect("kept"))
                }
                // the peer's report predates this proxy's election, or this proxy's
                // own row does not show it yet: nothing to go on
                _ => false,
            };
            if adopt {
                kept.insert(*hostgroup, theirs.clone());
            }
        }
    }
    kept
}

/// Whether `peer`'s `theirs` win over writers held for `current_held` ms (`current`).
fn older(peer: &Reported, theirs: &Vec<String>, current_held: u64, current: &Vec<String>) -> bool {
    peer.held_ms > current_held || (peer.held_ms == current_held && theirs < current)
}

/// The longest any peer has held `writers` for `hostgroup`.
fn held_by(cluster: &PeerWriters, hostgroup: u32, writers: &Vec<String>) -> u64 {
    cluster
        .peers
        .iter()
        .filter(|p| p.writers.get(&hostgroup) == Some(writers))
        .map(|p| p.held_ms)
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writers(hostgroup: u32, addresses: &[&str]) -> Writers {
        let list = addresses.iter().map(|a| a.to_string()).collect();
        HashMap::from([(hostgroup, list)])
    }

    /// A report written `ago_ms` ago of writers held for `held_ms`.
    fn reported(w: &Writers, held_ms: u64, ago_ms: u64) -> Reported {
        Reported {
            writers: w.clone(),
            held_ms,
            ago_ms,
        }
    }

    #[test]
    fn writers_travel_in_a_heartbeat_and_back() {
        let mut w = writers(10, &["127.0.0.1:13306", "127.0.0.1:13307"]);
        w.insert(11, vec!["127.0.0.1:13308".into()]);
        w.insert(12, vec![]);
        let text = encode(&w);
        assert_eq!(
            text,
            "10=127.0.0.1:13306,127.0.0.1:13307;11=127.0.0.1:13308"
        );
        w.remove(&12);
        assert_eq!(decode(&text), w);
        assert!(decode("").is_empty() && decode("x=1;10=").is_empty());
    }

    #[test]
    fn a_proxy_at_its_first_election_takes_the_writer_its_peers_hold() {
        let (node2, node3) = (writers(10, &["node2"]), writers(10, &["node3"]));
        let cluster = PeerWriters {
            own: None,
            peers: vec![reported(&node3, 5_000, 100), reported(&node2, 60_000, 100)],
        };
        assert_eq!(
            incumbents(&Writers::new(), Some(&cluster)),
            node2,
            "the oldest"
        );
    }

    #[test]
    fn a_proxy_whose_peer_has_held_other_writers_longer_takes_them() {
        let (node1, node2) = (writers(10, &["node1"]), writers(10, &["node2"]));
        // this proxy has held node1 for 2 s (its row says so); its peer, heard from
        // 100 ms ago, has held node2 for a minute
        let cluster = PeerWriters {
            own: Some(reported(&node1, 2_000, 50)),
            peers: vec![reported(&node2, 60_000, 100)],
        };
        assert_eq!(incumbents(&node1, Some(&cluster)), node2);
        // its own, held for longer, stay
        let cluster = PeerWriters {
            own: Some(reported(&node1, 90_000, 50)),
            peers: vec![reported(&node2, 60_000, 100)],
        };
        assert_eq!(incumbents(&node1, Some(&cluster)), node1);
    }

    #[test]
    fn a_stale_report_never_undoes_a_failover() {
        let (node1, node2) = (writers(10, &["node1"]), writers(10, &["node2"]));
        // this proxy just moved to node2; its row still says node1 (the store failed over
        // with the writer), and so does its peer's last report, from before the move
        let cluster = PeerWriters {
            own: Some(reported(&node1, 90_000, 1_500)),
            peers: vec![reported(&node1, 90_000, 1_500)],
        };
        assert_eq!(incumbents(&node2, Some(&cluster)), node2);
        // its row shows node2 now, held 300 ms; the peer's report is older than that
        let cluster = PeerWriters {
            own: Some(reported(&node2, 300, 10)),
            peers: vec![reported(&node1, 91_000, 1_200)],
        };
        assert_eq!(incumbents(&node2, Some(&cluster)), node2);
    }

    #[test]
    fn agreeing_proxies_and_proxies_without_a_cluster_keep_their_own() {
        let node1 = writers(10, &["node1"]);
        let cluster = PeerWriters {
            own: Some(reported(&node1, 10, 5)),
            peers: vec![reported(&node1, 99_000, 1)],
        };
        assert_eq!(incumbents(&node1, Some(&cluster)), node1);
        assert_eq!(incumbents(&node1, None), node1);
    }

    #[test]
    fn ties_and_several_peers_converge_on_one_choice() {
        let (node1, node2, node3) = (
            writers(10, &["node1"]),
            writers(10, &["node2"]),
            writers(10, &["node3"]),
        );
        let own = Some(reported(&node1, 1_000, 10));
        // the oldest of two disagreeing peers wins, whichever order they are read in
        for peers in [
            vec![reported(&node2, 5_000, 100), reported(&node3, 9_000, 100)],
            vec![reported(&node3, 9_000, 100), reported(&node2, 5_000, 100)],
        ] {
            let cluster = PeerWriters {
                own: own.clone(),
                peers,
            };
            assert_eq!(incumbents(&node1, Some(&cluster)), node3);
        }
        // an exact tie goes to the writers that sort first, on both sides
        let a = PeerWriters {
            own: Some(reported(&node2, 700, 10)),
            peers: vec![reported(&node1, 700, 10)],
        };
        let b = PeerWriters {
            own: Some(reported(&node1, 700, 10)),
            peers: vec![reported(&node2, 700, 10)],
        };
        assert_eq!(incumbents(&node2, Some(&a)), node1);
        assert_eq!(incumbents(&node1, Some(&b)), node1);
    }
}
