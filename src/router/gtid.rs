//! MariaDB GTID positions for read-your-writes: what a session (or the whole proxy) has
//! committed, and what a replica is known to have applied. A position holds the highest
//! sequence number per replication domain; replicas apply a domain's transactions in
//! order, so having applied `d-s-n` means having applied every earlier one of domain `d`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Mutex;

/// The highest known GTID per domain (`domain-server-sequence`, comma-separated, as
/// `@@last_gtid`, `@@gtid_slave_pos` and `MASTER_GTID_WAIT` write it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidPosition {
    domains: BTreeMap<u32, (u32, u64)>,
}

impl GtidPosition {
    /// Parses a position; `None` for anything that is not a list of `d-s-n`. An empty text
    /// is the empty position (nothing committed).
    pub fn parse(text: &str) -> Option<GtidPosition> {
        let mut position = GtidPosition::default();
        for gtid in text.split(',').map(str::trim).filter(|g| !g.is_empty()) {
            let mut parts = gtid.splitn(3, '-');
            let domain = parts.next()?.parse().ok()?;
            let server = parts.next()?.parse().ok()?;
            let sequence = parts.next()?.parse().ok()?;
            position.advance(domain, server, sequence);
        }
        Some(position)
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Raises this position to include `other` (the higher sequence per domain).
    pub fn merge(&mut self, other: &GtidPosition) {
        for (&domain, &(server, sequence)) in &other.domains {
            self.advance(domain, server, sequence);
        }
    }

    /// Whether a server that applied up to this position has applied all of `other`.
    pub fn covers(&self, other: &GtidPosition) -> bool {
        other.domains.iter().all(|(domain, (_, sequence))| {
            self.domains
                .get(domain)
                .is_some_and(|(_, mine)| mine >= sequence)
        })
    }

    fn advance(&mut self, domain: u32, server: u32, sequence: u64) {
        let entry = self.domains.entry(domain).or_insert((server, sequence));
        if sequence > entry.1 {
            *entry = (server, sequence);
        }
    }
}

impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (domain, (server, sequence))) in self.domains.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{domain}-{server}-{sequence}")?;
        }
        Ok(())
    }
}

/// What the proxy knows of commits and replicas, shared by its sessions: the highest
/// GTIDs its sessions have committed (what `consistency = "global"` reads must see) and,
/// per reader, the position it was last seen to have applied (so that a read there for an
/// older position need not ask again, whichever session learnt it).
#[derive(Debug, Default)]
pub struct GtidTracker {
    acknowledged: Mutex<GtidPosition>,
    applied: Mutex<HashMap<String, GtidPosition>>,
}

impl GtidTracker {
    /// A session's write committed at `position` and the client was told.
    pub fn acknowledge(&self, position: &GtidPosition) {
        lock(&self.acknowledged).merge(position);
    }

    /// Everything committed through this proxy so far.
    pub fn acknowledged(&self) -> GtidPosition {
        lock(&self.acknowledged).clone()
    }

    /// Whether `server` is known to have applied `wanted` already.
    pub fn has_applied(&self, server: &str, wanted: &GtidPosition) -> bool {
        wanted.is_empty()
            || lock(&self.applied)
                .get(server)
                .is_some_and(|applied| applied.covers(wanted))
    }

    /// `server` was seen to have applied `position`.
    pub fn applied(&self, server: &str, position: &GtidPosition) {
        let mut applied = lock(&self.applied);
        match applied.get_mut(server) {
            Some(known) => known.merge(position),
            None => {
                applied.insert(server.to_owned(), position.clone());
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> GtidPosition {
        GtidPosition::parse(text).unwrap()
    }

    #[test]
    fn parses_and_prints_lists_of_domains() {
        assert_eq!(p("0-1-42").to_string(), "0-1-42");
        assert_eq!(p(" 1-2-3, 0-1-42 ").to_string(), "0-1-42,1-2-3");
        assert!(p("").is_empty());
        for bad in ["0-1", "a-1-2", "0-1-2-3", "0-1-x", "-1-2-3"] {
            assert_eq!(GtidPosition::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_position_covers_lower_sequences_of_every_domain_it_is_asked_for() {
        let applied = p("0-1-100,11-5-7");
        assert!(applied.covers(&p("0-1-100")));
        assert!(
            applied.covers(&p("0-3-99")),
            "the server id does not matter"
        );
        assert!(!applied.covers(&p("0-1-101")));
        assert!(!applied.covers(&p("0-1-5,12-1-1")), "a domain it never saw");
        assert!(applied.covers(&GtidPosition::default()));
    }

    #[test]
    fn merge_keeps_the_highest_sequence_per_domain() {
        let mut acknowledged = p("0-1-10");
        acknowledged.merge(&p("0-2-9,3-1-1"));
        assert_eq!(acknowledged.to_string(), "0-1-10,3-1-1");
        acknowledged.merge(&p("0-2-11"));
        assert_eq!(acknowledged.to_string(), "0-2-11,3-1-1");
    }

    #[test]
    fn the_tracker_remembers_what_each_server_applied() {
        let tracker = GtidTracker::default();
        assert!(tracker.has_applied("a", &GtidPosition::default()));
        assert!(!tracker.has_applied("a", &p("0-1-5")));
        tracker.applied("a", &p("0-1-5"));
        assert!(tracker.has_applied("a", &p("0-1-4")));
        assert!(!tracker.has_applied("b", &p("0-1-4")));
        tracker.applied("a", &p("0-1-3"));
        assert!(tracker.has_applied("a", &p("0-1-5")), "never lowered");
        tracker.acknowledge(&p("0-1-9"));
        tracker.acknowledge(&p("0-1-7"));
        assert_eq!(tracker.acknowledged(), p("0-1-9"));
    }
}
