//! The session's prepared statements, which multiplex like any other statement.
//!
//! The client sees statement ids of the session's own; each maps to a shared
//! [`Prepared`] of the proxy's statement cache. A COM_STMT_PREPARE goes to a backend as
//! the client sent it and its PREPARE_OK comes back with the session's id in place of the
//! server's. A COM_STMT_EXECUTE goes to whatever connection the session has at the time:
//! where that connection has not prepared the statement, the session prepares it there
//! first (the client sees only the execute's reply), then sends the execute with the
//! connection's id and, when the client relies on parameter types it bound earlier, with
//! those types. Long data and open cursors live on one connection: while a statement has
//! either, the session keeps its connection (see `holds_connection`).
//!
//! Only the bytes that name a statement are touched: ids in the first frame, and the
//! parameter types an execute left out. Parameters and rows pass as they are.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::backend::statements::{fingerprint, Prepared, StatementStats};
use crate::backend::{read_response, BackendConn};
use crate::connection::RawPacket;
use crate::protocol::constants::{command, header, status};
use crate::protocol::frame::{encode_packet, HEADER_LEN};
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::protocol::statement::{
    set_statement_id, statement_id, ExecuteLayout, PrepareOk, CURSOR_TYPE_READ_ONLY, LAST_PREPARED,
};
use crate::router::{Statement, Target};
use crate::rules::{Analysis, Kind};

use super::backends::connection_for;
use super::relay::Eviction;
use super::session::{Failure, Session};

/// SERVER_STATUS_METADATA_CHANGED: a statement's result columns changed since its prepare.
const METADATA_CHANGED: u16 = 1 << 10;
/// MariaDB's ER_UNKNOWN_STMT_HANDLER.
const UNKNOWN_STATEMENT: (u16, &str) = (1243, "HY000");
/// MariaDB's ER_STMT_HAS_NO_OPEN_CURSOR.
const NO_OPEN_CURSOR: (u16, &str) = (1421, "HY000");
/// MariaDB's ER_MAX_PREPARED_STMT_COUNT_REACHED.
const TOO_MANY_STATEMENTS: (u16, &str) = (1461, "42000");
/// MariaDB's ER_NEED_REPREPARE.
const NEED_REPREPARE: (u16, &str) = (1615, "HY000");
/// MariaDB's ER_MALFORMED_PACKET.
const MALFORMED_PACKET: (u16, &str) = (1835, "HY000");

/// What running a statement does to the session's hold on its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Effects {
    /// It leaves state on the connection: the session keeps it from now on.
    pub binds: bool,
    /// It may have written: its connection serves the next statement too (for
    /// `LAST_INSERT_ID()`, `ROW_COUNT()`, the transaction `SET TRANSACTION` shapes).
    pub writes: bool,
}

impl Effects {
    /// The effects of a text statement of this analysis and routing meaning.
    pub(super) fn of_text(analysis: &Analysis, statement: Statement) -> Effects {
        Effects {
            binds: statement == Statement::SessionState
                || analysis.features.session_function
                || analysis.multi_statement,
            writes: analysis.features.next_transaction
                || matches!(
                    analysis.kind,
                    Kind::Insert | Kind::Update | Kind::Delete | Kind::Replace
                ),
        }
    }
}

/// How executes of a prepared statement route and what they do to the session: as the
/// same text sent as a query would, except that the SETs the proxy follows by their text
/// (NAMES, session variables) cannot be followed from an execute's parameters.
fn executed(analysis: &Analysis) -> (Statement, Effects) {
    let statement = match Statement::of(analysis) {
        Statement::SetNames | Statement::SetVariables => Statement::SessionState,
        s => s,
    };
    (statement, Effects::of_text(analysis, statement))
}

/// One of the client's prepared statements.
#[derive(Debug)]
pub(super) struct ClientStatement {
    prepared: Arc<Prepared>,
    statement: Statement,
    effects: Effects,
    /// The hostgroup a query rule sent its prepare to, for its executes.
    ruled: Option<u32>,
    /// The fingerprint of the definitions the client last learned (from its prepare, or
    /// an execute flagged SERVER_STATUS_METADATA_CHANGED).
    definitions: u64,
    /// The parameter types the client bound last (it may leave them out later).
    types: Option<Vec<u8>>,
    /// COM_STMT_SEND_LONG_DATA since the last execute or reset: the data waits on the
    /// primary connection.
    long_data: bool,
    /// An execute opened a cursor on the primary connection that is not exhausted yet.
    cursor: bool,
}

/// The client's prepared statements, by the ids the session gave them.
#[derive(Debug, Default)]
pub(super) struct ClientStatements {
    by_id: HashMap<u32, ClientStatement>,
    last_id: u32,
    /// Statements with long data or an open cursor: they hold the primary connection.
    pending: HashSet<u32>,
}

impl ClientStatements {
    /// Whether a statement's long data or cursor keeps the session on its connection.
    pub(super) fn holds_connection(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Forgets them all: the client reset its session or changed user.
    pub(super) fn clear(&mut self) {
        self.by_id.clear();
        self.pending.clear();
    }

    /// Where the executes of statement `id` go and what they do.
    pub(super) fn routing(&self, id: u32) -> (Statement, Effects, Option<u32>) {
        let s = &self.by_id[&id];
        // a statement with long data or a cursor stays where they are
        let ruled = if self.pending.contains(&id) {
            None
        } else {
            s.ruled
        };
        (s.statement, s.effects, ruled)
    }

    fn add(&mut self, statement: ClientStatement) -> u32 {
        self.last_id = self.last_id.wrapping_add(1).max(1);
        while self.by_id.contains_key(&self.last_id) || self.last_id == LAST_PREPARED {
            self.last_id = self.last_id.wrapping_add(1).max(1);
        }
        self.by_id.insert(self.last_id, statement);
        self.last_id
    }

    fn set_pending(&mut self, id: u32) {
        let Some(s) = self.by_id.get(&id) else {
            return;
        };
        if s.long_data || s.cursor {
            self.pending.insert(id);
        } else {
            self.pending.remove(&id);
        }
    }

    /// The session's id for the id a command carries (`LAST_PREPARED` names the last).
    fn resolve(&self, raw: u32) -> u32 {
        if raw == LAST_PREPARED {
            self.last_id
        } else {
            raw
        }
    }
}

impl Session {
    /// First look at a COM_STMT_* command other than PREPARE: finds the client's
    /// statement and answers here what needs no backend — an unknown id, CLOSE, a RESET
    /// or FETCH of a statement with nothing on a connection. `Some(id)` when the command
    /// goes on to a backend.
    pub(super) async fn statement_command(
        &mut self,
        cmd: u8,
        packet: &RawPacket,
    ) -> Result<Option<u32>, Failure> {
        let answers = !matches!(cmd, command::STMT_CLOSE | command::STMT_SEND_LONG_DATA);
        let Some(raw) = statement_id(packet.first_frame()) else {
            if answers {
                let err = ErrPacket::new(MALFORMED_PACKET, "Malformed communication packet");
                self.send_packet_err(1, &err).await?;
            }
            return Ok(None);
        };
        let id = self.statements.resolve(raw);
        let Some(statement) = self.statements.by_id.get(&id) else {
            if answers {
                self.send_packet_err(1, &unknown_statement(raw, cmd))
                    .await?;
            }
            return Ok(None);
        };
        match cmd {
            command::STMT_CLOSE => {
                self.close_statement(id);
                Ok(None)
            }
            command::STMT_RESET if !statement.long_data && !statement.cursor => {
                // nothing of it is on any connection: what a reset would clear is not there
                let ok = OkPacket {
                    affected_rows: 0,
                    last_insert_id: 0,
                    status: self.server_status & !(status::CURSOR_EXISTS | status::LAST_ROW_SENT),
                    warnings: 0,
                };
                ok.encode(self.client.write_buffer(), 1);
                self.client.flush().await.map_err(|_| Failure::Client)?;
                Ok(None)
            }
            command::STMT_FETCH if !statement.cursor => {
                let err = ErrPacket::new(
                    NO_OPEN_CURSOR,
                    format!("The statement ({raw}) has no open cursor."),
                );
                self.send_packet_err(1, &err).await?;
                Ok(None)
            }
            _ => Ok(Some(id)),
        }
    }

    /// COM_STMT_CLOSE: the statement is the session's to forget. It stays prepared on
    /// the connections that have it (other sessions may execute it there), unless long
    /// data or a cursor of this session is on it: then it is closed there too.
    fn close_statement(&mut self, id: u32) {
        let Some(closed) = self.statements.by_id.remove(&id) else {
            return;
        };
        if self.statements.pending.remove(&id) {
            if let Some(primary) = self.primary.as_mut() {
                if let Some(backend_id) = primary.statements.remove(closed.prepared.id) {
                    primary.queue_close(backend_id);
                }
            }
        }
    }

    /// Makes the statement command in `packet` fit the connection for `target`: prepares
    /// the statement there if it is not yet, and writes that connection's id (and, for
    /// an execute that relies on types bound earlier, those types) into the packet.
    /// False when the client was already answered (the prepare there failed).
    pub(super) async fn bind_statement(
        &mut self,
        target: Target,
        cmd: u8,
        id: u32,
        packet: &mut RawPacket,
    ) -> Result<bool, Failure> {
        let Some(backend_id) = self.prepared_on(target, id).await? else {
            return Ok(false);
        };
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
        if layout.flags & CURSOR_TYPE_READ_ONLY != 0 {
            statement.cursor = true;
        }
        match (&layout.types, &statement.types) {
            (Some(sent), _) => {
                let sent = &payload[sent.clone()];
                if statement.types.as_deref() != Some(sent) {
                    statement.types = Some(sent.to_vec());
                }
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
        self.statements.set_pending(id);
        Ok(true)
    }

    /// After a statement command went through (or its backend was lost): what its long
    /// data and cursor are now, from how its response ended.
    pub(super) fn after_statement_command(&mut self, cmd: u8, id: u32) {
        let status = self.last_outcome.and_then(|o| o.status);
        let Some(statement) = self.statements.by_id.get_mut(&id) else {
            return;
        };
        let flags = status.unwrap_or(0);
        match cmd {
            command::STMT_SEND_LONG_DATA => statement.long_data = true,
            command::STMT_EXECUTE => {
                statement.long_data = false;
                // the execute asked for a cursor; the server says whether it opened one
                statement.cursor &= flags & status::CURSOR_EXISTS != 0;
            }
            // the last row sent, or no status at all (an error, a lost backend): no cursor
            // to stay for
            command::STMT_FETCH if status.is_none() || flags & status::LAST_ROW_SENT != 0 => {
                statement.cursor = false
            }
            command::STMT_RESET => {
                statement.long_data = false;
                statement.cursor = false;
            }
            _ => {}
        }
        self.statements.set_pending(id);
    }

    /// The id statement `id` has on the connection for `target`, preparing it there
    /// first if need be (the server's answer to that prepare is the proxy's to read).
    /// `None` when the prepare failed and the client was told why, as the answer to its
    /// command.
    async fn prepared_on(&mut self, target: Target, id: u32) -> Result<Option<u32>, Failure> {
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
                    return self.prepare_failed(target, &why).await;
                }
                backend.schema.replace(schema.clone())
            }
            _ => None,
        };
        let replies = self.read_prepare_reply(target, &prepared.text).await;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        if let Some(schema) = restore {
            if let Err(why) = backend.run(command::INIT_DB, schema.as_bytes()).await {
                return self.prepare_failed(target, &why).await;
            }
            backend.schema = Some(schema);
        }
        let packets = match replies {
            Ok(packets) => packets,
            Err(why) => return self.prepare_failed(target, &why).await,
        };
        if packets[0].first() == Some(&header::ERR) {
            // the statement cannot be prepared any more (a table dropped, …): the execute
            // fails as it would on the server that lost it
            self.relay_server_error(&packets[0]).await?;
            return Ok(None);
        }
        let ok = match PrepareOk::decode(&packets[0]) {
            Ok(ok) => ok,
            Err(e) => return self.prepare_failed(target, &e.to_string()).await,
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

    async fn prepare_failed(&mut self, target: Target, why: &str) -> Result<Option<u32>, Failure> {
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
        text: &[u8],
        analysis: &Analysis,
        ruled: Option<u32>,
    ) -> Result<bool, Failure> {
        let packets = match self.read_reply(target).await {
            Ok(packets) => packets,
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
        if self.statements.by_id.len() >= limit {
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
            analysis.digest,
            &ok,
            definitions,
            runtime.pool.statement_cache_size,
        );
        let cap = runtime.pool.max_prepared_per_connection;
        keep_prepared(backend, &prepared, ok.statement_id, cap, &cache.stats);
        cache.stats.client_prepares.fetch_add(1, Ordering::Relaxed);
        let (statement, effects) = executed(analysis);
        let id = self.statements.add(ClientStatement {
            prepared,
            statement,
            effects,
            ruled,
            definitions,
            types: None,
            long_data: false,
            cursor: false,
        });
        let mut first = packets[0].to_vec();
        set_statement_id(&mut first, id);
        let mut seq = self.client.queue_packet(1, &first);
        for p in &packets[1..] {
            seq = self.client.queue_packet(seq, p);
        }
        self.client.flush().await.map_err(|_| Failure::Client)?;
        Ok(true)
    }

    /// For a COM_STMT_EXECUTE or SEND_LONG_DATA too large to hold (streamed to the
    /// primary): makes the buffered start of it fit the primary connection, as
    /// [`Session::bind_statement`] does for whole packets. An execute that would need
    /// parameter types inserted cannot be changed while it streams: it is refused and the
    /// session ends (its rest cannot be skipped). `Ok(None)`: answered, the session ends;
    /// else the session's id of the statement.
    pub(super) async fn bind_streamed_statement(
        &mut self,
        cmd: u8,
    ) -> Result<Option<u32>, Failure> {
        let body_at = HEADER_LEN;
        self.fill_client_to(body_at + 11).await?;
        let raw = statement_id(&self.client.buffered()[body_at..]).expect("buffered");
        let id = self.statements.resolve(raw);
        if !self.statements.by_id.contains_key(&id) {
            self.send_packet_err(1, &unknown_statement(raw, cmd))
                .await?;
            return Ok(None);
        }
        let Some(backend_id) = self.prepared_on(Target::Primary, id).await? else {
            return Ok(None);
        };
        set_statement_id(&mut self.client.buffered()[body_at..], backend_id);
        if cmd == command::STMT_SEND_LONG_DATA {
            return Ok(Some(id));
        }
        self.frontend
            .pool
            .statements
            .stats
            .executes
            .fetch_add(1, Ordering::Relaxed);
        let statement = &self.statements.by_id[&id];
        let params = statement.prepared.params;
        let (prepared_id, bound) = (statement.prepared.id, statement.types.clone());
        let layout = if params == 0 {
            None
        } else {
            let flag_at = body_at + 10 + usize::from(params).div_ceil(8);
            self.fill_client_to(flag_at + 1 + 2 * usize::from(params))
                .await?;
            let buffered = &self.client.buffered()[body_at..];
            ExecuteLayout::parse(buffered, params).ok()
        };
        let primary = self.primary.as_mut().expect("ensured");
        let on = primary.statements.get(prepared_id).expect("prepared above");
        match layout {
            Some(ExecuteLayout {
                types: Some(at), ..
            }) => {
                let sent = self.client.buffered()[body_at..][at].to_vec();
                on.types = Some(sent.clone());
                if let Some(s) = self.statements.by_id.get_mut(&id) {
                    s.types = Some(sent);
                }
            }
            Some(_) if bound.is_some() && on.types != bound => {
                let message = "A prepared statement's execute over 1 MiB that relies on parameter types bound earlier cannot move to another connection: bind the types again";
                let err = ErrPacket::new(NEED_REPREPARE, message);
                self.send_packet_err(1, &err).await?;
                return Ok(None);
            }
            _ => {}
        }
        Ok(Some(id))
    }

    async fn fill_client_to(&mut self, len: usize) -> Result<(), Failure> {
        while self.client.buffered().len() < len {
            match self.client.fill().await {
                Ok(0) | Err(_) => return Err(Failure::Client),
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// MariaDB's error for a statement id it does not know, `raw` as the client sent it.
fn unknown_statement(raw: u32, cmd: u8) -> ErrPacket {
    ErrPacket::new(
        UNKNOWN_STATEMENT,
        format!(
            "Unknown prepared statement handler ({raw}) given to {}",
            server_function(cmd)
        ),
    )
}

/// The server function MariaDB names in its unknown-statement error.
fn server_function(cmd: u8) -> &'static str {
    match cmd {
        command::STMT_EXECUTE => "mysqld_stmt_execute",
        command::STMT_FETCH => "mysqld_stmt_fetch",
        command::STMT_RESET => "mysqld_stmt_reset",
        command::STMT_SEND_LONG_DATA => "mysqld_stmt_send_long_data",
        _ => "mysqld_stmt_close",
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
