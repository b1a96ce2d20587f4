//! The session's side of the query cache (`crate::query_cache`): whether a statement may
//! be answered from it, answering it, and keeping a fresh result.
//!
//! What may come from the cache: a COM_QUERY read whose rules set `cache_ttl`, outside a
//! transaction, that leaves nothing on its connection (no `FOR UPDATE`, no user variable,
//! no `LAST_INSERT_ID()`…), from a session that holds no state on its connection (a
//! temporary table could shadow the table a cached result came from). What is kept: exactly one result set, without warnings, whose
//! final status shows no transaction and no session state change; without rows only if
//! empty results are cached; no larger than `[query_cache] max_entry_kb`. A hit needs no
//! backend connection: the stored bytes go out as they are (a COM_QUERY response always
//! starts at sequence id 1, so they need no renumbering).

use std::time::Duration;

use bytes::Bytes;

use crate::protocol::constants::{command, status};
use crate::protocol::response::summarize_result;
use crate::query_cache::Lookup;
use crate::router::Statement;
use crate::runtime::Runtime;

use super::inspect::Plan;
use super::prepared::Effects;
use super::relay::Capture;
use super::session::{Failure, Session};

/// A statement the cache may answer, and how long its result may be kept.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cacheable {
    ttl: Duration,
    keep_empty: bool,
}

impl Session {
    /// Whether the statement may be answered from the cache (see the module documentation).
    pub(super) fn cacheable(
        &self,
        runtime: &Runtime,
        cmd: u8,
        plan: &Plan,
        statement: Statement,
        effects: Effects,
    ) -> Option<Cacheable> {
        let ttl = plan.decision.cache_ttl?;
        let read = cmd == command::QUERY
            && statement == Statement::Read
            && !effects.binds
            && !effects.writes
            && !self.routing.in_transaction
            && !self.bound;
        read.then(|| Cacheable {
            ttl: Duration::from_millis(ttl),
            keep_empty: plan
                .decision
                .cache_empty_result
                .unwrap_or(runtime.config.query_cache.stores_empty_result),
        })
    }

    /// Answers `text` from the cache if a live result is there. True when it was.
    pub(super) async fn answer_from_cache(&mut self, text: &[u8]) -> Result<bool, Failure> {
        let context = self.cache_context();
        let lookup = self.cache_key(text, context);
        let Some(hit) = self.frontend.query_cache.get(&lookup) else {
            return Ok(false);
        };
        self.client
            .write_wire(&hit.0)
            .await
            .map_err(|_| Failure::Client)?;
        Ok(true)
    }

    /// A capture of the response to come, for [`Session::keep_in_cache`].
    pub(super) fn capture_for_cache(&self, runtime: &Runtime) -> Capture {
        let limit = runtime.config.query_cache.max_entry_kb.saturating_mul(1024);
        Capture::new(usize::try_from(limit).unwrap_or(usize::MAX))
    }

    /// Keeps the response just relayed for `text`, if it is one the cache may keep.
    pub(super) fn keep_in_cache(
        &self,
        runtime: &Runtime,
        cacheable: Cacheable,
        text: &[u8],
        response: Option<Bytes>,
    ) {
        let cache = &self.frontend.query_cache;
        let Some(response) = response else {
            cache.refuse_too_large();
            return;
        };
        let Some(summary) = summarize_result(&response) else {
            return;
        };
        let unsettled = status::IN_TRANS | status::SESSION_STATE_CHANGED;
        if summary.warnings > 0
            || summary.status & unsettled != 0
            || (summary.rows == 0 && !cacheable.keep_empty)
        {
            return;
        }
        let lookup = self.cache_key(text, self.cache_context());
        cache.put(
            &runtime.config.query_cache,
            &lookup,
            response,
            cacheable.ttl,
        );
    }

    fn cache_key<'a>(&'a self, text: &'a [u8], context: u64) -> Lookup<'a> {
        Lookup {
            user: &self.user.config.name,
            schema: self.login.database.as_deref(),
            context,
            text,
        }
    }

    /// What besides user, schema and text shapes a result: the character set of the
    /// login and of `SET NAMES`, the followed session variables (time_zone, sql_mode…),
    /// the client's capability flags.
    fn cache_context(&self) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[self.login.charset]);
        hasher.update(&self.capabilities.to_le_bytes());
        if let Some(names) = &self.names {
            hasher.update(names);
        }
        for (name, value) in &self.variables {
            hasher.update(name.as_bytes());
            hasher.update(b"=");
            hasher.update(value.as_bytes());
            hasher.update(b";");
        }
        hasher.digest()
    }
}
