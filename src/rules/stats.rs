//! Per-digest statistics (ProxySQL's `stats_mysql_query_digest`): how often each statement
//! shape ran, for whom, where and how long it took. Sharded so sessions seldom meet on a
//! lock, and bounded so a client inventing endless shapes cannot grow it without limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::protocol::response::RowCounts;

const SHARDS: usize = 16;
/// Digest text kept per entry, at most.
const TEXT_KEPT: usize = 2048;

/// The hostgroup ProxySQL shows for statements answered from the query cache.
pub const CACHE_HOSTGROUP: i64 = -1;

/// One (digest, user, schema, hostgroup) row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEntry {
    pub digest: u64,
    pub text: String,
    pub user: String,
    pub schema: String,
    /// Where it ran ([`CACHE_HOSTGROUP`]: answered from the query cache).
    pub hostgroup: i64,
    pub count: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub max_us: u64,
    pub errors: u64,
    pub rows_affected: u64,
    pub rows_sent: u64,
}

/// Where a statement ran and how it went.
#[derive(Debug, Clone, Copy)]
pub struct Execution<'a> {
    pub user: &'a str,
    pub schema: &'a str,
    /// Where it ran ([`CACHE_HOSTGROUP`]: answered from the query cache).
    pub hostgroup: i64,
    pub duration: Duration,
    pub error: bool,
    /// Rows the answer carried, and rows its OK packets said changed.
    pub rows: RowCounts,
}

/// The statistics of every digest seen since start (or the last reset).
#[derive(Debug)]
pub struct DigestStats {
    shards: Vec<Mutex<HashMap<u64, Vec<DigestEntry>>>>,
    digests: AtomicU64,
    max_digests: u64,
    /// Executions not recorded because the table was full.
    pub dropped: AtomicU64,
}

impl DigestStats {
    pub fn new(max_digests: u64) -> DigestStats {
        DigestStats {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            digests: AtomicU64::new(0),
            max_digests,
            dropped: AtomicU64::new(0),
        }
    }

    fn shard(&self, digest: u64) -> &Mutex<HashMap<u64, Vec<DigestEntry>>> {
        &self.shards[(digest as usize) % SHARDS]
    }

    /// Whether this statement shape has run before.
    pub fn known(&self, digest: u64) -> bool {
        self.shard(digest)
            .lock()
            .expect("stats lock")
            .contains_key(&digest)
    }

    /// Counts one execution; `text` is asked for only when the row is new.
    pub fn record(&self, digest: u64, text: impl FnOnce() -> Vec<u8>, run: Execution<'_>) {
        let us = run.duration.as_micros().min(u64::MAX as u128) as u64;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut shard = self.shard(digest).lock().expect("stats lock");
        if !shard.contains_key(&digest) {
            if self.digests.load(Ordering::Relaxed) >= self.max_digests {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.digests.fetch_add(1, Ordering::Relaxed);
        }
        let rows = shard.entry(digest).or_default();
        let row = rows
            .iter_mut()
            .find(|r| r.hostgroup == run.hostgroup && r.user == run.user && r.schema == run.schema);
        match row {
            Some(r) => {
                r.count += 1;
                r.last_seen = now;
                r.sum_us += us;
                r.min_us = r.min_us.min(us);
                r.max_us = r.max_us.max(us);
                r.errors += u64::from(run.error);
                r.rows_affected += run.rows.affected;
                r.rows_sent += run.rows.sent;
            }
            None => {
                let mut text = text();
                text.truncate(TEXT_KEPT);
                rows.push(DigestEntry {
                    digest,
                    text: String::from_utf8_lossy(&text).into_owned(),
                    user: run.user.to_owned(),
                    schema: run.schema.to_owned(),
                    hostgroup: run.hostgroup,
                    count: 1,
                    first_seen: now,
                    last_seen: now,
                    sum_us: us,
                    min_us: us,
                    max_us: us,
                    errors: u64::from(run.error),
                    rows_affected: run.rows.affected,
                    rows_sent: run.rows.sent,
                });
            }
        }
    }

    /// How many digests are tracked.
    pub fn len(&self) -> u64 {
        self.digests.load(Ordering::Relaxed)
    }

    /// Whether no digest is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every row (`stats_mysql_query_digest_reset`).
    pub fn reset(&self) {
        for shard in &self.shards {
            shard.lock().expect("stats lock").clear();
        }
        self.digests.store(0, Ordering::Relaxed);
    }

    /// Memory the rows hold: their structures and strings (not the maps' spare room).
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .expect("stats lock")
                    .values()
                    .flatten()
                    .map(|e| {
                        std::mem::size_of::<DigestEntry>()
                            + e.text.capacity()
                            + e.user.capacity()
                            + e.schema.capacity()
                    })
                    .sum::<usize>()
            })
            .sum()
    }

    /// A copy of every row.
    pub fn rows(&self) -> Vec<DigestEntry> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .expect("stats lock")
                    .values()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(user: &str, us: u64) -> Execution<'_> {
        Execution {
            user,
            schema: "db",
            hostgroup: 10,
            duration: Duration::from_micros(us),
            error: false,
            rows: RowCounts {
                sent: 2,
                affected: 0,
            },
        }
    }

    #[test]
    fn rows_accumulate_per_user_and_the_table_is_bounded() {
        let stats = DigestStats::new(2);
        assert!(!stats.known(7));
        stats.record(7, || b"SELECT ?".to_vec(), run("a", 10));
        stats.record(7, || unreachable!("text is taken once"), run("a", 30));
        stats.record(7, || b"SELECT ?".to_vec(), run("b", 5));
        stats.record(8, || b"SELECT ? FROM t".to_vec(), run("a", 1));
        stats.record(9, || b"DELETE FROM t".to_vec(), run("a", 1));
        assert!(stats.known(7) && stats.known(8) && !stats.known(9));
        assert_eq!(stats.len(), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1);
        let mut rows = stats.rows();
        rows.sort_by_key(|r| (r.digest, r.user.clone()));
        let a = &rows[0];
        assert_eq!((a.count, a.sum_us, a.min_us, a.max_us), (2, 40, 10, 30));
        assert_eq!((rows[1].user.as_str(), rows[1].count), ("b", 1));
    }
}
