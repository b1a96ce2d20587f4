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
/// its own (ours count as just elected when the last heartbeat did not carry them yet).
/// Ties go to the writers that sort first, the same on every proxy.
pub fn incumbents(ours: &Writers, cluster: Option<&PeerWriters>) -> Writers {
    let Some(cluster) = cluster else {
        return ours.clone();
    };
    let own_held = cluster
        .own
        .as_ref()
        .filter(|own| own.writers == *ours)
        .map_or(0, |own| own.held_ms);
    let mut kept = ours.clone();
    for peer in &cluster.peers {
        for (hostgroup, theirs) in &peer.writers {
            let mine = ours.get(hostgroup);
            if mine == Some(theirs) {
                continue;
            }
            let current = kept.get(hostgroup);
            let current_held = match current == mine {
                true => own_held,
                false => held_by(cluster, *hostgroup, current),
            };
            let older = peer.held_ms > current_held
                || (peer.held_ms == current_held && Some(theirs) < current);
            if mine.is_none() || older {
                kept.insert(*hostgroup, theirs.clone());
            }
        }
    }
    kept
}

/// The longest any peer has held `writers` for `hostgroup`.
fn held_by(cluster: &PeerWriters, hostgroup: u32, writers: Option<&Vec<String>>) -> u64 {
    cluster
        .peers
        .iter()
        .filter(|p| p.writers.get(&hostgroup) == writers)
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

    fn reported(w: &Writers, held_ms: u64) -> Reported {
        Reported {
            writers: w.clone(),
            held_ms,
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
    fn a_restarted_proxy_takes_the_writer_its_peer_has_held_longer() {
        let (node1, node2) = (writers(10, &["node1"]), writers(10, &["node2"]));
        // the peer failed over to node2 a minute ago; this proxy just elected node1
        let cluster = PeerWriters {
            own: None,
            peers: vec![reported(&node2, 60_000)],
        };
        assert_eq!(incumbents(&node1, Some(&cluster)), node2);
        // before its first election too
        assert_eq!(incumbents(&Writers::new(), Some(&cluster)), node2);
        // its own, reported and held for longer, stay
        let cluster = PeerWriters {
            own: Some(reported(&node1, 90_000)),
            peers: vec![reported(&node2, 60_000)],
        };
        assert_eq!(incumbents(&node1, Some(&cluster)), node1);
        // a writer just changed here counts as new, whatever the row said before
        let cluster = PeerWriters {
            own: Some(reported(&node1, 90_000)),
            peers: vec![reported(&node2, 60_000)],
        };
        assert_eq!(incumbents(&writers(10, &["node3"]), Some(&cluster)), node2);
    }

    #[test]
    fn agreeing_proxies_and_proxies_without_a_cluster_keep_their_own() {
        let node1 = writers(10, &["node1"]);
        let cluster = PeerWriters {
            own: Some(reported(&node1, 10)),
            peers: vec![reported(&node1, 99_000)],
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
        // the oldest of two disagreeing peers wins, whichever order they are read in
        for peers in [
            vec![reported(&node2, 5_000), reported(&node3, 9_000)],
            vec![reported(&node3, 9_000), reported(&node2, 5_000)],
        ] {
            let cluster = PeerWriters { own: None, peers };
            assert_eq!(incumbents(&node1, Some(&cluster)), node3);
        }
        // an exact tie goes to the writers that sort first, on both sides
        let a = PeerWriters {
            own: Some(reported(&node2, 700)),
            peers: vec![reported(&node1, 700)],
        };
        let b = PeerWriters {
            own: Some(reported(&node1, 700)),
            peers: vec![reported(&node2, 700)],
        };
        assert_eq!(incumbents(&node2, Some(&a)), node1);
        assert_eq!(incumbents(&node1, Some(&b)), node1);
    }
}
