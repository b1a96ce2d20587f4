//! Prepared statements that outlive the connection they were prepared on.
//!
//! A client's prepared statement belongs to its session, not to one backend connection:
//! the proxy keeps one [`Prepared`] per (user, schema, statement text) in the proxy-wide
//! [`StatementCache`], and every backend connection keeps, in its [`ConnStatements`], the
//! id the server gave each statement prepared there. A statement executed on a
//! connection that has not prepared it yet is prepared there first (by the session); a
//! connection holding too many is made to close the least recently used.
//!
//! This module owns the bookkeeping only: it never performs I/O and never sees a client's
//! statement ids (the session maps those, see `frontend::prepared`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::protocol::statement::PrepareOk;

/// One statement text as prepared by one user in one schema.
#[derive(Debug)]
pub struct Prepared {
    /// The proxy's id for it: what connections remember it by.
    pub id: u64,
    pub user: String,
    /// The digest of its text, as the rule engine computed it at the first prepare.
    pub digest: u64,
    /// The schema its table names were resolved in.
    pub schema: Option<String>,
    /// The text prepared (after any rewrite rule).
    pub text: Bytes,
    pub params: u16,
    pub columns: u16,
    /// A fingerprint of the parameter and column definitions the server sent last time
    /// it prepared this text: a different one means the tables changed in between.
    definitions: AtomicU64,
    /// Backend connections that have it prepared now.
    on_connections: AtomicU32,
}

/// One line of the cache's statistics (ProxySQL's `stats_mysql_prepared_statements_info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementInfo {
    pub id: u64,
    pub schema: Option<String>,
    pub user: String,
    pub digest: u64,
    /// Client statements (of any session) that refer to it.
    pub client_refs: usize,
    /// Backend connections that have it prepared.
    pub server_refs: u32,
    pub columns: u16,
    pub params: u16,
    pub text: Bytes,
}

impl Prepared {
    /// Records the definitions a server sent for this text on another connection; true
    /// when they differ from the ones seen before (an ALTER TABLE in between, say).
    pub fn definitions_changed(&self, fingerprint: u64) -> bool {
        self.definitions.swap(fingerprint, Ordering::Relaxed) != fingerprint
    }
}

/// A fingerprint of a PREPARE_OK response's parameter and column definitions: every
/// packet after the first (whose statement id differs from connection to connection).
pub fn fingerprint(packets: &[Bytes]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for p in packets.iter().skip(1) {
        hasher.update(&(p.len() as u32).to_le_bytes());
        hasher.update(p);
    }
    hasher.digest()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    user: String,
    schema: Option<String>,
    text: Bytes,
}

/// The proxy's prepared statements, one per user, schema and text.
#[derive(Debug, Default)]
pub struct StatementCache {
    entries: Mutex<HashMap<Key, Arc<Prepared>>>,
    next_id: AtomicU64,
    pub stats: StatementStats,
}

/// How prepared statements fared, since start.
#[derive(Debug, Default)]
pub struct StatementStats {
    /// COM_STMT_PREPARE from clients that succeeded.
    pub client_prepares: AtomicU64,
    /// Statements prepared by the proxy on a connection that lacked them, before an execute.
    pub reprepares: AtomicU64,
    /// Of those, the ones whose definitions differed from the ones seen before.
    pub definitions_changed: AtomicU64,
    /// COM_STMT_CLOSE sent to a backend to keep it under `max_prepared_per_connection`.
    pub backend_evictions: AtomicU64,
    /// Entries dropped from the cache to keep it under `statement_cache_size`.
    pub cache_evictions: AtomicU64,
    /// COM_STMT_EXECUTE from clients.
    pub executes: AtomicU64,
}

impl StatementCache {
    pub fn new() -> StatementCache {
        StatementCache::default()
    }

    /// Entries held right now.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("statement cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry for a statement a server just prepared for `user` in `schema`: the one
    /// already known (its definitions refreshed), or a new one. At `capacity`, entries no
    /// session uses any more are dropped first; if all are in use the new statement is
    /// served without being shared.
    #[allow(clippy::too_many_arguments)]
    pub fn entry(
        &self,
        user: &str,
        schema: Option<&str>,
        text: &[u8],
        digest: u64,
        ok: &PrepareOk,
        definitions: u64,
        capacity: usize,
    ) -> Arc<Prepared> {
        let key = Key {
            user: user.to_owned(),
            schema: schema.map(str::to_owned),
            text: Bytes::copy_from_slice(text),
        };
        let mut entries = self.entries.lock().expect("statement cache lock");
        if let Some(found) = entries.get(&key) {
            // the same text with other counts cannot be the same statement any more
            if found.params == ok.params {
                found.definitions_changed(definitions);
                return found.clone();
            }
        }
        let prepared = Arc::new(Prepared {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user: key.user.clone(),
            digest,
            schema: key.schema.clone(),
            text: key.text.clone(),
            params: ok.params,
            columns: ok.columns,
            definitions: AtomicU64::new(definitions),
            on_connections: AtomicU32::new(0),
        });
        if entries.len() >= capacity && !entries.contains_key(&key) {
            let before = entries.len();
            // held by a session or a connection: still in use
            entries.retain(|_, p| Arc::strong_count(p) > 1);
            let dropped = (before - entries.len()) as u64;
            self.stats
                .cache_evictions
                .fetch_add(dropped, Ordering::Relaxed);
            if entries.len() >= capacity {
                return prepared;
            }
        }
        entries.insert(key, prepared.clone());
        prepared
    }

    /// What the cache holds, with who refers to each entry, ordered by id.
    pub fn info(&self) -> Vec<StatementInfo> {
        let entries = self.entries.lock().expect("statement cache lock");
        let mut rows: Vec<StatementInfo> = entries
            .values()
            .map(|p| {
                let server_refs = p.on_connections.load(Ordering::Relaxed);
                StatementInfo {
                    id: p.id,
                    schema: p.schema.clone(),
                    user: p.user.clone(),
                    digest: p.digest,
                    // one reference is the cache's own, one each connection's
                    client_refs: Arc::strong_count(p).saturating_sub(1 + server_refs as usize),
                    server_refs,
                    columns: p.columns,
                    params: p.params,
                    text: p.text.clone(),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.id);
        rows
    }
}

/// A statement prepared on one backend connection.
#[derive(Debug)]
pub struct OnConnection {
    /// Counted in its `on_connections` while this lives.
    prepared: Arc<Prepared>,
    /// The id the server gave it there.
    pub backend_id: u32,
    /// The parameter types last bound to it there (the server keeps them between
    /// executes), as sent in COM_STMT_EXECUTE.
    pub types: Option<Vec<u8>>,
    used: u64,
}

impl Drop for OnConnection {
    fn drop(&mut self) {
        self.prepared.on_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The statements prepared on one backend connection, by [`Prepared::id`].
#[derive(Debug, Default)]
pub struct ConnStatements {
    map: HashMap<u64, OnConnection>,
    clock: u64,
}

impl ConnStatements {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The statement on this connection, marked as just used.
    pub fn get(&mut self, id: u64) -> Option<&mut OnConnection> {
        self.clock += 1;
        let clock = self.clock;
        let found = self.map.get_mut(&id)?;
        found.used = clock;
        Some(found)
    }

    /// The parameter types the server last had bound to `id` here (not marking it used).
    pub fn types(&self, id: u64) -> Option<&[u8]> {
        self.map.get(&id)?.types.as_deref()
    }

    /// Records that the server prepared `id` as `backend_id`; returns the backend id it
    /// replaces, which the caller closes.
    pub fn insert(&mut self, prepared: &Arc<Prepared>, backend_id: u32) -> Option<u32> {
        self.clock += 1;
        prepared.on_connections.fetch_add(1, Ordering::Relaxed);
        let on = OnConnection {
            prepared: prepared.clone(),
            backend_id,
            types: None,
            used: self.clock,
        };
        self.map.insert(prepared.id, on).map(|old| old.backend_id)
    }

    /// Forgets `id` on this connection; returns its backend id to close.
    pub fn remove(&mut self, id: u64) -> Option<u32> {
        self.map.remove(&id).map(|s| s.backend_id)
    }

    /// Makes room for one more under `cap`: forgets the least recently used statement
    /// and returns its backend id to close, when the connection is full.
    pub fn make_room(&mut self, cap: usize) -> Option<u32> {
        if self.map.len() < cap.max(1) {
            return None;
        }
        let (&oldest, _) = self.map.iter().min_by_key(|(_, s)| s.used)?;
        self.remove(oldest)
    }

    /// Forgets everything: the server closed them all (a reset, a new login).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(params: u16) -> PrepareOk {
        PrepareOk {
            statement_id: 1,
            columns: 1,
            params,
            warnings: 0,
        }
    }

    #[test]
    fn one_entry_per_user_schema_and_text() {
        let cache = StatementCache::new();
        let a = cache.entry("app", Some("db"), b"SELECT ?", 0, &ok(1), 7, 10);
        let b = cache.entry("app", Some("db"), b"SELECT ?", 0, &ok(1), 7, 10);
        assert!(Arc::ptr_eq(&a, &b));
        let other_schema = cache.entry("app", Some("x"), b"SELECT ?", 0, &ok(1), 7, 10);
        let other_user = cache.entry("bob", Some("db"), b"SELECT ?", 0, &ok(1), 7, 10);
        assert_ne!(a.id, other_schema.id);
        assert_ne!(a.id, other_user.id);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn changed_definitions_are_noticed_once() {
        let cache = StatementCache::new();
        let a = cache.entry("app", None, b"SELECT * FROM t", 0, &ok(0), 1, 10);
        assert!(!a.definitions_changed(1));
        assert!(a.definitions_changed(2));
        assert!(!a.definitions_changed(2));
        // a client prepare refreshes them too
        cache.entry("app", None, b"SELECT * FROM t", 0, &ok(0), 3, 10);
        assert!(!a.definitions_changed(3));
    }

    #[test]
    fn a_full_cache_drops_what_no_session_holds() {
        let cache = StatementCache::new();
        let held = cache.entry("app", None, b"SELECT 1", 0, &ok(0), 0, 2);
        drop(cache.entry("app", None, b"SELECT 2", 0, &ok(0), 0, 2));
        let third = cache.entry("app", None, b"SELECT 3", 0, &ok(0), 0, 2);
        assert_eq!(cache.len(), 2, "SELECT 2 made room");
        assert_eq!(cache.stats.cache_evictions.load(Ordering::Relaxed), 1);
        // everything held: the next one is served but not kept
        let fourth = cache.entry("app", None, b"SELECT 4", 0, &ok(0), 0, 2);
        assert_eq!(cache.len(), 2);
        assert!(!Arc::ptr_eq(
            &fourth,
            &cache.entry("app", None, b"SELECT 4", 0, &ok(0), 0, 2)
        ));
        drop((held, third));
    }

    #[test]
    fn connections_forget_the_least_recently_used() {
        let cache = StatementCache::new();
        let [a, b, c] = [&b"SELECT 1"[..], b"SELECT 2", b"SELECT 3"]
            .map(|text| cache.entry("app", None, text, 0, &ok(0), 0, 10));
        let mut on = ConnStatements::default();
        assert_eq!(on.insert(&a, 101), None);
        assert_eq!(on.insert(&b, 102), None);
        assert_eq!(on.insert(&c, 103), None);
        on.get(a.id);
        assert_eq!(on.make_room(4), None, "room left");
        assert_eq!(on.make_room(3), Some(102), "b is the oldest use");
        assert_eq!(on.len(), 2);
        assert_eq!(
            on.insert(&a, 111),
            Some(101),
            "re-prepared: the old id is closed"
        );
        assert_eq!(on.remove(c.id), Some(103));
        on.clear();
        assert!(on.is_empty());
    }

    #[test]
    fn info_counts_sessions_and_connections_apart() {
        let cache = StatementCache::new();
        let held = cache.entry("app", Some("db"), b"SELECT ?", 42, &ok(1), 0, 10);
        let mut first = ConnStatements::default();
        let mut second = ConnStatements::default();
        first.insert(&held, 1);
        second.insert(&held, 7);
        let info = cache.info();
        assert_eq!(info.len(), 1);
        assert_eq!((info[0].client_refs, info[0].server_refs), (1, 2));
        assert_eq!((info[0].digest, info[0].params), (42, 1));
        drop(second);
        first.clear();
        drop(held);
        let info = cache.info();
        assert_eq!((info[0].client_refs, info[0].server_refs), (0, 0));
    }
}
