//! The query cache (ProxySQL's, filled by query rules with `cache_ttl`): whole responses
//! to autocommit reads, kept as the bytes the server sent, keyed by user, schema, the
//! session's character set and variables, and the statement text, each for its rule's
//! TTL. Bounded by memory (`[query_cache] max_memory_mb`): beyond it the entries used
//! least lately go first (quick_cache's CLOCK-Pro policy); expired entries are purged
//! by [`QueryCache::purge_expired`] every second.
//!
//! It owns the entries and their counters. It never touches a socket, and it never decides
//! what may be cached: the session does (see `frontend/backends.rs`: reads outside
//! transactions whose rule set a TTL, single result sets without warnings). Writes do not
//! invalidate it, as in ProxySQL: a TTL is how stale a result the application accepts.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Lifecycle, OptionsBuilder, Weighter};

use crate::config::QueryCacheSettings;

/// What an entry costs beyond its bytes: the key's and the value's own fields, the cache's
/// slot. An estimate, so that 100,000 tiny results still count for something.
const ENTRY_OVERHEAD: u64 = 128;
/// Shards at most; fewer when the memory is small, so a shard can still hold the largest
/// entry allowed.
const MAX_SHARDS: u64 = 16;

/// Who asked what, in which session context: results differ by any of these.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    user: Box<str>,
    schema: Option<Box<str>>,
    /// A hash of what else shapes a result: character set, SET NAMES, session variables.
    context: u64,
    text: Box<[u8]>,
}

/// A key to look up with, borrowed from the session. Hashes exactly as [`Key`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lookup<'a> {
    pub user: &'a str,
    pub schema: Option<&'a str>,
    pub context: u64,
    pub text: &'a [u8],
}

impl Equivalent<Key> for Lookup<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.user == &*key.user
            && self.schema == key.schema.as_deref()
            && self.context == key.context
            && self.text == &*key.text
    }
}

impl Lookup<'_> {
    fn to_key(self) -> Key {
        Key {
            user: self.user.into(),
            schema: self.schema.map(Into::into),
            context: self.context,
            text: self.text.into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The response as the client receives it, from sequence id 1.
    response: Bytes,
    expires: Instant,
}

#[derive(Clone)]
struct ByMemory;

impl Weighter<Key, Entry> for ByMemory {
    fn weight(&self, key: &Key, entry: &Entry) -> u64 {
        (entry.response.len() + key.text.len() + key.user.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// Counts what the cache pushes out to stay within its memory.
#[derive(Clone, Default)]
struct CountEvictions(std::sync::Arc<AtomicU64>);

impl Lifecycle<Key, Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut Self::RequestState, _: Key, _: Entry) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The counters ProxySQL shows as `Query_Cache_*` in stats_mysql_global.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups (`Query_Cache_count_GET`) and those answered (`…_GET_OK`).
    pub lookups: AtomicU64,
    pub hits: AtomicU64,
    /// Results stored (`Query_Cache_count_SET`).
    pub stores: AtomicU64,
    /// Bytes stored, and bytes sent to clients from the cache.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Entries removed because their TTL passed (`Query_Cache_Purged`).
    pub purged: AtomicU64,
    /// Results not stored: larger than `max_entry_kb`.
    pub too_large: AtomicU64,
}

/// A hit: the response to send as it is.
#[derive(Debug, Clone)]
pub struct Hit(pub Bytes);

/// The proxy-wide cache. See the module documentation.
pub struct QueryCache {
    entries: Cache<Key, Entry, ByMemory, quick_cache::DefaultHashBuilder, CountEvictions>,
    evictions: std::sync::Arc<AtomicU64>,
    /// The memory limit last applied (a reload may change it).
    capacity: AtomicU64,
    pub stats: CacheStats,
}

impl std::fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache")
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl QueryCache {
    /// A cache for `settings`. Its number of shards is fixed here: each shard can hold
    /// `max_memory / shards`, and no fewer than one largest entry.
    pub fn new(settings: &QueryCacheSettings) -> QueryCache {
        let capacity = capacity_of(settings);
        let max_entry = settings.max_entry_kb * 1024;
        let shards = (capacity / max_entry.max(1)).clamp(1, MAX_SHARDS);
        let shards = 1 << (63 - shards.leading_zeros()); // down to a power of two
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            // the policy sizes its bookkeeping from this; ~1 KiB results is a guess
            .estimated_items_capacity((capacity / 1024).clamp(1024, 1 << 20) as usize)
            .weight_capacity(capacity)
            .build()
            .expect("valid cache options");
        let evictions = CountEvictions::default();
        QueryCache {
            entries: Cache::with_options(options, ByMemory, Default::default(), evictions.clone()),
            evictions: evictions.0,
            capacity: AtomicU64::new(capacity),
            stats: CacheStats::default(),
        }
    }

    /// The cached response for `lookup`, if one is there and its TTL has not passed.
    pub fn get(&self, lookup: &Lookup<'_>) -> Option<Hit> {
        count(&self.stats.lookups);
        let entry = self.entries.get(lookup)?;
        if entry.expires <= Instant::now() {
            return None;
        }
        count(&self.stats.hits);
        self.stats
            .bytes_out
            .fetch_add(entry.response.len() as u64, Ordering::Relaxed);
        Some(Hit(entry.response))
    }

    /// Keeps `response` for `ttl`. Too large a response is counted and dropped.
    pub fn put(
        &self,
        settings: &QueryCacheSettings,
        lookup: &Lookup<'_>,
        response: Bytes,
        ttl: Duration,
    ) {
        self.apply(settings);
        let largest = (settings.max_entry_kb * 1024).min(self.entries.shard_capacity());
        if response.len() as u64 + ENTRY_OVERHEAD > largest {
            self.refuse_too_large();
            return;
        }
        count(&self.stats.stores);
        self.stats
            .bytes_in
            .fetch_add(response.len() as u64, Ordering::Relaxed);
        let entry = Entry {
            response,
            expires: Instant::now() + ttl,
        };
        self.entries.insert(lookup.to_key(), entry);
    }

    /// Counts a result not kept because it is larger than an entry may be.
    pub fn refuse_too_large(&self) {
        count(&self.stats.too_large);
    }

    /// Follows a reload's `max_memory_mb` (evicting at once if it shrank).
    fn apply(&self, settings: &QueryCacheSettings) {
        let wanted = capacity_of(settings);
        if self.capacity.swap(wanted, Ordering::Relaxed) != wanted {
            self.entries.set_capacity(wanted);
        }
    }

    /// Removes the entries whose TTL has passed.
    pub fn purge_expired(&self) {
        if self.entries.is_empty() {
            return;
        }
        let now = Instant::now();
        let purged = AtomicU64::new(0);
        self.entries.retain(|_, entry| {
            let live = entry.expires > now;
            if !live {
                purged.fetch_add(1, Ordering::Relaxed);
            }
            live
        });
        self.stats
            .purged
            .fetch_add(purged.into_inner(), Ordering::Relaxed);
    }

    /// `PROXYSQL FLUSH QUERY CACHE`: empties the cache; returns how many entries it held.
    pub fn flush(&self) -> usize {
        let held = self.entries.len();
        self.entries.clear();
        held
    }

    /// Entries held now (expired ones not yet purged included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Memory the entries take, as counted against `max_memory_mb`.
    pub fn memory_bytes(&self) -> u64 {
        self.entries.weight()
    }

    /// Entries pushed out to stay within `max_memory_mb`.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

fn capacity_of(settings: &QueryCacheSettings) -> u64 {
    settings.max_memory_mb.max(1) * 1024 * 1024
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_memory_mb: u64, max_entry_kb: u64) -> QueryCacheSettings {
        QueryCacheSettings {
            max_memory_mb,
            max_entry_kb,
            stores_empty_result: true,
        }
    }

    fn lookup(text: &str) -> Lookup<'_> {
        Lookup {
            user: "app",
            schema: Some("shop"),
            context: 7,
            text: text.as_bytes(),
        }
    }

    #[test]
    fn a_result_is_served_until_its_ttl_passes() {
        let s = settings(1, 64);
        let cache = QueryCache::new(&s);
        assert!(cache.get(&lookup("SELECT 1")).is_none());
        cache.put(
            &s,
            &lookup("SELECT 1"),
            Bytes::from_static(b"result"),
            Duration::from_millis(30),
        );
        assert_eq!(cache.get(&lookup("SELECT 1")).unwrap().0, &b"result"[..]);
        // every part of the key counts
        for other in [
            Lookup {
                user: "other",
                ..lookup("SELECT 1")
            },
            Lookup {
                schema: None,
                ..lookup("SELECT 1")
            },
            Lookup {
                context: 8,
                ..lookup("SELECT 1")
            },
            lookup("SELECT 2"),
        ] {
            assert!(cache.get(&other).is_none(), "{other:?}");
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&lookup("SELECT 1")).is_none(), "expired");
        assert_eq!(cache.len(), 1, "still held until purged");
        cache.purge_expired();
        assert_eq!(
            (cache.len(), cache.stats.purged.load(Ordering::Relaxed)),
            (0, 1)
        );
        let st = &cache.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!((n(&st.lookups), n(&st.hits), n(&st.stores)), (7, 1, 1));
        assert_eq!((n(&st.bytes_in), n(&st.bytes_out)), (6, 6));
    }

    #[test]
    fn memory_stays_within_the_limit_and_large_results_are_refused() {
        let s = settings(1, 16);
        let cache = QueryCache::new(&s);
        let result = Bytes::from(vec![b'x'; 1000]);
        for i in 0..5_000 {
            let text = format!("SELECT {i}");
            cache.put(&s, &lookup(&text), result.clone(), Duration::from_secs(60));
        }
        assert!(
            cache.memory_bytes() <= 1024 * 1024,
            "{}",
            cache.memory_bytes()
        );
        assert!(cache.len() < 5_000 && cache.len() > 500, "{}", cache.len());
        assert!(cache.evictions() > 0);
        cache.put(
            &s,
            &lookup("big"),
            Bytes::from(vec![0; 17 * 1024]),
            Duration::from_secs(60),
        );
        assert!(cache.get(&lookup("big")).is_none());
        assert_eq!(cache.stats.too_large.load(Ordering::Relaxed), 1);
        let held = cache.len();
        assert_eq!(cache.flush(), held);
        assert!(cache.is_empty());
    }

    #[test]
    fn a_reload_that_shrinks_the_memory_evicts_at_once() {
        let s = settings(2, 16);
        let cache = QueryCache::new(&s);
        for i in 0..5_000 {
            let text = format!("SELECT {i}");
            cache.put(
                &s,
                &lookup(&text),
                Bytes::from(vec![0; 1000]),
                Duration::from_secs(60),
            );
        }
        assert!(cache.memory_bytes() > 1024 * 1024);
        let smaller = settings(1, 16);
        cache.put(
            &smaller,
            &lookup("one more"),
            Bytes::from_static(b"r"),
            Duration::from_secs(60),
        );
        assert!(
            cache.memory_bytes() <= 1024 * 1024,
            "{}",
            cache.memory_bytes()
        );
    }
}
