//! How a prepared statement reaches the connection a command runs on.
//!
//! A COM_STMT_PREPARE goes to a backend as the client sent it and its PREPARE_OK comes
//! back with the session's id in place of the server's. A COM_STMT_EXECUTE goes to the
//! connection the router placed it on — a reader's, for a read: where that connection has
//! not prepared the statement, the session prepares it there first (the client sees only
//! the execute's reply), then sends the execute with the connection's id and, when the
//! client relies on parameter types it bound earlier, with those types.
//!
//! Only the bytes that name a statement are touched: ids in the first frame, and the
//! parameter types an execute left out. Parameters and rows pass as they are.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::backend::statements::{fingerprint, Prepared, StatementStats};
use crate::backend::{read_response, BackendConn};
use crate::frontend::relay::Eviction;
use crate::protocol::constants::{command, header};
use crate::protocol::frame::{encode_packet, HEADER_LEN};
use crate::protocol::packets::{is_eof, ErrPacket};
use crate::protocol::statement::{
    set_statement_id, ExecuteLayout, PrepareOk, CURSOR_TYPE_READ_ONLY,
};
use crate::router::Target;

use super::connections::connection_for;
use super::inspect::Inspected;
use super::request::Request;
use super::statements::{ClientStatement, METADATA_CHANGED, NEED_REPREPARE, TOO_MANY_STATEMENTS};
use super::{Failure, Session};

impl Session {
    /// Makes the statement command of `request` fit the connection for `target`:
    /// prepares the statement there if it is not yet, and writes that connection's id
    /// (and, for an execute that relies on types bound earlier, those types) into the
    /// packet. False when the client was already answered (the prepare there failed).
    /// `Unanswered` when a `retryable` request's reader failed while preparing it.
    pub(super) async fn bind_statement(
        &mut self,
        target: Target,
        request: &mut Request,
        retryable: bool,
    ) -> Result<bool, Failure> {
        let (cmd, id) = (request.cmd, request.prepared.expect("a statement command"));
        let Some(backend_id) = self.prepared_on(target, id, retryable).await? else {
            return Ok(false);
        };
        let packet = &mut request.packet;
        if packet.span.frames != 1 {
            // whole requests are below connection::STREAM_ABOVE, a single frame
            return Ok(true);
        }
        let payload = &mut packet.wire[HEADER_LEN..];
        set_statement_id(payload, backend_id);
        if cmd != command::STMT_EXECUTE {
            return Ok(true);
        }
        self.frontend
            .pool
            .statements
            .stats
            .executes
            .fetch_add(1, Ordering::Relaxed);
        let statement = self.statements.by_id.get_mut(&id).expect("resolved");
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        let on = backend
            .statements
            .get(statement.prepared.id)
            .expect("prepared above");
        let Ok(layout) = ExecuteLayout::parse(payload, statement.prepared.params) else {
            // malformed: the server answers it as it would without the proxy
            return Ok(true);
        };
        statement.cursor = layout.flags & CURSOR_TYPE_READ_ONLY != 0;
        match (&layout.types, &statement.types) {
            (Some(sent), _) => {
                // the session's copy was kept when the request arrived
                let sent = &payload[sent.clone()];
                if on.types.as_deref() != Some(sent) {
                    on.types = Some(sent.to_vec());
                }
            }
            (None, Some(bound)) if on.types.as_ref() != Some(bound) => {
                if let Some(with_types) = layout.with_types(payload, bound) {
                    let mut wire = BytesMut::with_capacity(with_types.len() + HEADER_LEN);
                    encode_packet(&mut wire, 0, &with_types);
                    packet.wire = wire;
                    on.types = Some(bound.clone());
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// The id statement `id` has on the connection for `target`, preparing it there
    /// first if need be (the server's answer to that prepare is the proxy's to read).
    /// `None` when the prepare failed and the client was told why, as the answer to its
    /// command.
    /// A failure of the connection is the client's to hear, unless the request is
    /// `retryable`: then `Unanswered`, and the caller sends it elsewhere.
    pub(super) async fn prepared_on(
        &mut self,
        target: Target,
        id: u32,
        retryable: bool,
    ) -> Result<Option<u32>, Failure> {
        let prepared_id = self.statements.by_id[&id].prepared.id;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        if let Some(on) = backend.statements.get(prepared_id) {
            return Ok(Some(on.backend_id));
        }
        // not here yet: the slow path, which may wait on the server
        let prepared = self.statements.by_id[&id].prepared.clone();
        let frontend = self.frontend.clone();
        let runtime = frontend.shared.load();
        let stats = &frontend.pool.statements.stats;
        // the statement's names resolve in the schema it was prepared in
        let restore = match &prepared.schema {
            Some(schema) if backend.schema.as_ref() != Some(schema) => {
                if let Err(why) = backend.run(command::INIT_DB, schema.as_bytes()).await {
                    return self.prepare_failed(target, &why, retryable).await;
                }
                backend.schema.replace(schema.clone())
            }
            _ => None,
        };
        let replies = self.read_prepare_reply(target, &prepared.text).await;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        if let Some(schema) = restore {
            if let Err(why) = backend.run(command::INIT_DB, schema.as_bytes()).await {
                return self.prepare_failed(target, &why, retryable).await;
            }
            backend.schema = Some(schema);
        }
        let packets = match replies {
            Ok(packets) => packets,
            Err(why) => return self.prepare_failed(target, &why, retryable).await,
        };
        if packets[0].first() == Some(&header::ERR) {
            // the statement cannot be prepared any more (a table dropped, …): the execute
            // fails as it would on the server that lost it
            self.relay_server_error(&packets[0]).await?;
            return Ok(None);
        }
        let ok = match PrepareOk::decode(&packets[0]) {
            Ok(ok) => ok,
            Err(e) => return self.prepare_failed(target, &e.to_string(), retryable).await,
        };
        stats.reprepares.fetch_add(1, Ordering::Relaxed);
        if ok.params != prepared.params {
            backend.queue_close(ok.statement_id);
            let err = ErrPacket::new(
                NEED_REPREPARE,
                "Prepared statement needs to be re-prepared: its parameters changed",
            );
            self.send_packet_err(1, &err).await?;
            return Ok(None);
        }
        let definitions = fingerprint(&packets);
        if prepared.definitions_changed(definitions) {
            stats.definitions_changed.fetch_add(1, Ordering::Relaxed);
        }
        let client = self.statements.by_id.get_mut(&id).expect("resolved");
        if client.definitions != definitions {
            // as the server that re-prepares a statement itself says it: the execute's
            // reply carries the new columns, and its EOFs say they changed
            client.definitions = definitions;
            self.added_status = METADATA_CHANGED;
            tracing::info!(peer = %self.peer, server = %backend.server.address(),
                "a prepared statement's definitions changed since the client prepared it");
        }
        let cap = runtime.pool.max_prepared_per_connection;
        keep_prepared(backend, &prepared, ok.statement_id, cap, stats);
        Ok(Some(ok.statement_id))
    }

    /// Passes a server's ERR to a prepare on to the client as the answer to its command.
    async fn relay_server_error(&mut self, err: &[u8]) -> Result<(), Failure> {
        let code = ErrPacket::decode(err).map_or(0, |e| e.code);
        self.frontend.counters.error(code);
        self.client.queue_packet(1, err);
        self.client.flush().await.map_err(|_| Failure::Client)
    }

    async fn prepare_failed(
        &mut self,
        target: Target,
        why: &str,
        retryable: bool,
    ) -> Result<Option<u32>, Failure> {
        if retryable {
            if target == Target::Reader {
                self.reader_lost_unanswered(why);
            }
            return Err(Failure::Unanswered(why.to_owned()));
        }
        self.backend_lost(target, 1, why).await.map(|_| None)
    }

    /// Sends COM_STMT_PREPARE of `text` on the connection for `target` and reads the
    /// whole reply, abandoning it if the monitor finds the server unreachable meanwhile.
    async fn read_prepare_reply(
        &mut self,
        target: Target,
        text: &[u8],
    ) -> Result<Vec<Bytes>, String> {
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        backend
            .send_command(command::STMT_PREPARE, text)
            .await
            .map_err(|e| e.to_string())?;
        self.read_reply(target).await
    }

    /// Reads the reply to a COM_STMT_PREPARE already sent to `target`.
    async fn read_reply(&mut self, target: Target) -> Result<Vec<Bytes>, String> {
        let shared = &*self.frontend.shared;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        let address = backend.server.address();
        let eviction = Eviction::new(shared, address, &backend.eviction.notify);
        tokio::select! {
            read = read_response(&mut backend.conn, address, command::STMT_PREPARE) => {
                read.map_err(|e| e.to_string())
            }
            _ = eviction.wait() => Err("the monitor found the server unreachable".into()),
        }
    }

    /// Relays the reply to the client's COM_STMT_PREPARE of `text` (already sent to
    /// `target`) with the session's statement id in place of the server's, and records
    /// the statement. True when the prepare succeeded.
    pub(super) async fn relay_prepare(
        &mut self,
        target: Target,
        request: &Request,
    ) -> Result<bool, Failure> {
        let Inspected::Prepared(plan) = &request.inspected else {
            unreachable!("a prepare is inspected for its executes");
        };
        let text = plan
            .plan
            .decision
            .rewritten
            .as_deref()
            .unwrap_or(request.body());
        let packets = match self.read_reply(target).await {
            Ok(packets) => packets,
            // a prepare changes nothing: lost on the writer, it may go to the next one
            Err(why)
                if target == Target::Primary
                    && self.resendable_on_primary(command::STMT_PREPARE, request.statement) =>
            {
                return Err(Failure::Unanswered(why))
            }
            Err(why) => return self.backend_lost(target, 1, &why).await.map(|_| false),
        };
        if packets[0].first() == Some(&header::ERR) {
            self.relay_server_error(&packets[0]).await?;
            return Ok(false);
        }
        let ok = match PrepareOk::decode(&packets[0]) {
            Ok(ok) => ok,
            Err(e) => {
                return self
                    .backend_lost(target, 1, &e.to_string())
                    .await
                    .map(|_| false)
            }
        };
        let frontend = self.frontend.clone();
        let runtime = frontend.shared.load();
        let cache = &frontend.pool.statements;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        let limit = runtime.pool.max_prepared_per_session;
        if self.statements.len() >= limit {
            backend.queue_close(ok.statement_id);
            let err = ErrPacket::new(
                TOO_MANY_STATEMENTS,
                format!(
                    "Can't create more than max_prepared_stmt_count statements (current value: {limit})"
                ),
            );
            self.send_packet_err(1, &err).await?;
            return Ok(false);
        }
        let definitions = fingerprint(&packets);
        let prepared = cache.entry(
            &self.user.config.name,
            self.login.database.as_deref(),
            text,
            plan.plan.analysis.digest,
            &ok,
            definitions,
            runtime.pool.statement_cache_size,
        );
        let cap = runtime.pool.max_prepared_per_connection;
        keep_prepared(backend, &prepared, ok.statement_id, cap, &cache.stats);
        cache.stats.client_prepares.fetch_add(1, Ordering::Relaxed);
        let id = self
            .statements
            .add(ClientStatement::new(prepared, plan.clone(), definitions));
        let mut first = packets[0].to_vec();
        set_statement_id(&mut first, id);
        let mut seq = self.client.queue_packet(1, &first);
        let deprecates_eof = self.deprecates_eof();
        for p in &packets[1..] {
            // a DEPRECATE_EOF client gets the definitions without the EOFs closing them
            if deprecates_eof && is_eof(p.first().copied(), p.len()) {
                continue;
            }
            seq = self.client.queue_packet(seq, p);
        }
        self.client.flush().await.map_err(|_| Failure::Client)?;
        Ok(true)
    }
}

/// Records that `backend` prepared `prepared` as `backend_id`, closing there what that
/// replaces and, at `cap`, the statement used least recently.
fn keep_prepared(
    backend: &mut BackendConn,
    prepared: &Arc<Prepared>,
    backend_id: u32,
    cap: usize,
    stats: &StatementStats,
) {
    if backend.statements.get(prepared.id).is_none() {
        if let Some(evicted) = backend.statements.make_room(cap) {
            backend.queue_close(evicted);
            stats.backend_evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(replaced) = backend.statements.insert(prepared, backend_id) {
        backend.queue_close(replaced);
    }
}
