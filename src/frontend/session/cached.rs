//! The session's side of the query cache (`crate::query_cache`): whether a statement may
//! be answered from it, answering it, and keeping a fresh result.
//!
//! What may come from the cache: a read whose rules set `cache_ttl` — a COM_QUERY, or a
//! COM_STMT_EXECUTE of a prepared read without a cursor, keyed by its statement's text
//! and its parameters' types and values — outside a
//! transaction, that leaves nothing on its connection (no `FOR UPDATE`, no user variable,
//! no `LAST_INSERT_ID()`…), from a session that holds no state on its connection (a
//! temporary table could shadow the table a cached result came from). What is kept: exactly one result set, without warnings, whose
//! final status shows no transaction and no session state change; without rows only if
//! empty results are cached; no larger than `[query_cache] max_entry_kb`. A hit needs no
//! backend connection: the stored bytes go out as they are, a text result for a query and
//! a binary one for an execute (both responses start at sequence id 1, so they need no
//! renumbering).

use std::time::Duration;

use bytes::Bytes;

use crate::frontend::relay::Capture;
use crate::protocol::constants::{command, status};
use crate::protocol::response::summarize_result;
use crate::protocol::statement::ExecuteLayout;
use crate::query_cache::Lookup;
use crate::router::Statement;
use crate::runtime::Runtime;

use super::request::Request;
use super::{Failure, Session};

/// A statement the cache may answer, and how long its result may be kept.
#[derive(Debug, Clone)]
pub(super) struct Cacheable {
    ttl: Duration,
    keep_empty: bool,
    /// An execute's key: its statement's text, its parameters' types and values.
    execute_key: Option<Vec<u8>>,
}

impl Session {
    /// Whether the statement may be answered from the cache (see the module documentation).
    pub(super) fn cacheable(&self, runtime: &Runtime, request: &Request) -> Option<Cacheable> {
        let plan = request.plan();
        let ttl = plan.decision.cache_ttl?;
        let command = match request.cmd {
            command::QUERY => true,
            command::STMT_EXECUTE => !request.cursor && request.home.is_none(),
            _ => false,
        };
        let read = command
            && request.statement == Statement::Read
            && !request.effects.binds
            && !request.effects.writes
            && !self.routing.in_any_transaction()
            && !self.bound;
        if !read {
            return None;
        }
        let execute_key = match request.cmd {
            command::STMT_EXECUTE => Some(self.execute_key(request)?),
            _ => None,
        };
        Some(Cacheable {
            ttl: Duration::from_millis(ttl),
            keep_empty: plan
                .decision
                .cache_empty_result
                .unwrap_or(runtime.config.query_cache.stores_empty_result),
            execute_key,
        })
    }

    /// What keys an execute's result: the text its statement was prepared from, the
    /// parameters' types (as sent now, or as bound earlier) and their NULL bitmap and
    /// values. `None` when the execute cannot be read (it goes to the server as it is).
    fn execute_key(&self, request: &Request) -> Option<Vec<u8>> {
        let statement = self.statements.by_id.get(&request.prepared?)?;
        let payload = request.packet.first_frame();
        let params = statement.prepared.params;
        let layout = ExecuteLayout::parse(payload, params).ok()?;
        let mut key = Vec::with_capacity(statement.prepared.text.len() + payload.len() + 16);
        key.extend_from_slice(&statement.prepared.text);
        key.push(0);
        let Some(bound_flag_at) = layout.bound_flag_at else {
            return Some(key); // no parameters
        };
        let types = match &layout.types {
            Some(sent) => &payload[sent.clone()],
            None => statement.types.as_deref()?,
        };
        key.extend_from_slice(types);
        // the NULL bitmap (between the iteration count and the bound flag), then values
        key.extend_from_slice(&payload[10..bound_flag_at]);
        let values = layout.types.map_or(bound_flag_at + 1, |t| t.end);
        key.extend_from_slice(&payload[values..]);
        Some(key)
    }

    /// What a request's result is kept under: a query's text (as the rules rewrote it),
    /// or an execute's key.
    fn cache_text<'a>(request: &'a Request, cacheable: &'a Cacheable) -> &'a [u8] {
        match &cacheable.execute_key {
            Some(key) => key,
            None => request
                .plan()
                .decision
                .rewritten
                .as_deref()
                .unwrap_or(request.body()),
        }
    }

    /// Answers the request from the cache if a live result is there. True when it was.
    pub(super) async fn answer_from_cache(
        &mut self,
        request: &Request,
        cacheable: &Cacheable,
    ) -> Result<bool, Failure> {
        let context = self.cache_context(request.cmd);
        let lookup = self.cache_key(Self::cache_text(request, cacheable), context);
        let Some(hit) = self.frontend.query_cache.get(&lookup) else {
            return Ok(false);
        };
        let answer = self.client_form(request.cmd, hit.0.clone());
        self.client
            .write_wire(&answer)
            .await
            .map_err(|_| Failure::Client)?;
        Ok(true)
    }

    /// A capture of the response to come, for [`Session::keep_in_cache`].
    pub(super) fn capture_for_cache(&self, runtime: &Runtime) -> Capture {
        let limit = runtime.config.query_cache.max_entry_kb.saturating_mul(1024);
        Capture::new(usize::try_from(limit).unwrap_or(usize::MAX))
    }

    /// Keeps the response just relayed for the request, if it is one the cache may keep.
    pub(super) fn keep_in_cache(
        &self,
        runtime: &Runtime,
        cacheable: Cacheable,
        request: &Request,
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
        let text = Self::cache_text(request, &cacheable);
        let lookup = self.cache_key(text, self.cache_context(request.cmd));
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
    /// the client's capability flags, and the protocol (a text or a binary result).
    fn cache_context(&self, cmd: u8) -> u64 {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(&[self.login.charset, cmd]);
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
