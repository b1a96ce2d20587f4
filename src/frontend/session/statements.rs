//! The client's prepared statements: the session's ids for them, what their executes
//! mean for routing (the inspection of their text, made at the prepare), and where their
//! long data and open cursors are. The commands that need no backend are answered here.
//!
//! The client sees statement ids of the session's own; each maps to a shared
//! [`Prepared`] of the proxy's statement cache (see `prepare` for how a statement reaches
//! the connection an execute runs on). Long data and an open cursor live on one
//! connection, the statement's home: while a statement has either, its commands go there
//! and the session keeps that connection (see [`ClientStatements::holds`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::backend::statements::Prepared;
use crate::connection::RawPacket;
use crate::protocol::constants::{command, status};
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::protocol::statement::{statement_id, ExecuteLayout, LAST_PREPARED};
use crate::router::{Statement, Target};
use crate::rules::Analysis;

use super::inspect::StatementPlan;
use super::request::Effects;
use super::{Failure, Session};

/// SERVER_STATUS_METADATA_CHANGED: a statement's result columns changed since its prepare.
pub(super) const METADATA_CHANGED: u16 = 1 << 10;
/// MariaDB's ER_UNKNOWN_STMT_HANDLER.
pub(super) const UNKNOWN_STATEMENT: (u16, &str) = (1243, "HY000");
/// MariaDB's ER_STMT_HAS_NO_OPEN_CURSOR.
pub(super) const NO_OPEN_CURSOR: (u16, &str) = (1421, "HY000");
/// MariaDB's ER_MAX_PREPARED_STMT_COUNT_REACHED.
pub(super) const TOO_MANY_STATEMENTS: (u16, &str) = (1461, "42000");
/// MariaDB's ER_NEED_REPREPARE.
pub(super) const NEED_REPREPARE: (u16, &str) = (1615, "HY000");
/// MariaDB's ER_MALFORMED_PACKET.
pub(super) const MALFORMED_PACKET: (u16, &str) = (1835, "HY000");

/// How executes of a prepared statement route and what they do to the session: as the
/// same text sent as a query would, except that the SETs the proxy follows by their text
/// (NAMES, session variables) cannot be followed from an execute's parameters.
pub(super) fn executed(analysis: &Analysis) -> (Statement, Effects) {
    let statement = match Statement::of(analysis) {
        Statement::SetNames | Statement::SetVariables => Statement::SessionState,
        s => s,
    };
    (statement, Effects::of(analysis, statement))
}

/// One of the client's prepared statements.
#[derive(Debug)]
pub(super) struct ClientStatement {
    pub prepared: Arc<Prepared>,
    /// The inspection of its text, for its executes.
    pub plan: Arc<StatementPlan>,
    pub statement: Statement,
    pub effects: Effects,
    /// The fingerprint of the definitions the client last learned (from its prepare, or
    /// an execute flagged SERVER_STATUS_METADATA_CHANGED).
    pub definitions: u64,
    /// The parameter types the client bound last (it may leave them out later).
    pub types: Option<Vec<u8>>,
    /// COM_STMT_SEND_LONG_DATA since the last execute or reset: the data waits at home.
    pub long_data: bool,
    /// An execute opened a cursor at home that is not exhausted yet.
    pub cursor: bool,
    /// The connection (target and hostgroup) its long data or cursor is on.
    pub home: Option<(Target, u32)>,
}

impl ClientStatement {
    /// A statement just prepared, with its inspection.
    pub(super) fn new(prepared: Arc<Prepared>, plan: Arc<StatementPlan>, definitions: u64) -> Self {
        let (statement, effects) = executed(&plan.plan.analysis);
        ClientStatement {
            prepared,
            plan,
            statement,
            effects,
            definitions,
            types: None,
            long_data: false,
            cursor: false,
            home: None,
        }
    }
}

/// How a command naming a prepared statement routes.
pub(super) struct StatementRoute {
    pub plan: Arc<StatementPlan>,
    pub statement: Statement,
    pub effects: Effects,
    /// The connection it must use: its home, while it has one.
    pub home: Option<(Target, u32)>,
}

/// The client's prepared statements, by the ids the session gave them.
#[derive(Debug, Default)]
pub(super) struct ClientStatements {
    pub by_id: HashMap<u32, ClientStatement>,
    last_id: u32,
    /// Statements with long data or an open cursor: they hold their home connection.
    pending: HashSet<u32>,
}

impl ClientStatements {
    /// Whether a statement's long data or cursor keeps the session on its connection for
    /// `target`.
    pub(super) fn holds(&self, target: Target) -> bool {
        self.pending
            .iter()
            .any(|id| self.by_id.get(id).and_then(|s| s.home).map(|(t, _)| t) == Some(target))
    }

    /// Forgets them all: the client reset its session or changed user.
    pub(super) fn clear(&mut self) {
        self.by_id.clear();
        self.pending.clear();
    }

    /// Where the commands of statement `id` go and what its executes do.
    pub(super) fn route(&self, id: u32) -> StatementRoute {
        let s = &self.by_id[&id];
        StatementRoute {
            plan: s.plan.clone(),
            statement: s.statement,
            effects: s.effects,
            home: s.home.filter(|_| self.pending.contains(&id)),
        }
    }

    /// Gives statement `id` the inspection a reload's new rules made of its text.
    pub(super) fn replan(&mut self, id: u32, plan: Arc<StatementPlan>) {
        if let Some(s) = self.by_id.get_mut(&id) {
            s.plan = plan;
        }
    }

    /// Keeps the parameter types an execute of statement `id` binds, as the client sees
    /// them bound from now on — whether or not that execute reaches a server (a cache hit
    /// or a refusal does not), since the client's next execute may leave them out.
    pub(super) fn remember_types(&mut self, id: u32, execute: &[u8]) {
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        let Ok(layout) = ExecuteLayout::parse(execute, s.prepared.params) else {
            return;
        };
        if let Some(sent) = layout.types.and_then(|at| execute.get(at)) {
            if s.types.as_deref() != Some(sent) {
                s.types = Some(sent.to_vec());
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn add(&mut self, statement: ClientStatement) -> u32 {
        self.last_id = self.last_id.wrapping_add(1).max(1);
        while self.by_id.contains_key(&self.last_id) || self.last_id == LAST_PREPARED {
            self.last_id = self.last_id.wrapping_add(1).max(1);
        }
        self.by_id.insert(self.last_id, statement);
        self.last_id
    }

    /// Records where statement `id` now has long data or a cursor, if it has either.
    fn settle_home(&mut self, id: u32, at: (Target, u32)) {
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        if s.long_data || s.cursor {
            s.home = Some(at);
            self.pending.insert(id);
        } else {
            s.home = None;
            self.pending.remove(&id);
        }
    }

    /// The session's id for the id a command carries (`LAST_PREPARED` names the last).
    pub(super) fn resolve(&self, raw: u32) -> u32 {
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
    /// data or a cursor of this session is on it: then it is closed at its home too.
    fn close_statement(&mut self, id: u32) {
        let Some(closed) = self.statements.by_id.remove(&id) else {
            return;
        };
        if !self.statements.pending.remove(&id) {
            return;
        }
        let home = match closed.home.map(|(target, _)| target) {
            Some(Target::Reader) => self.reader.as_mut().map(|(b, _)| b),
            _ => self.primary.as_mut(),
        };
        if let Some(home) = home {
            if let Some(backend_id) = home.statements.remove(closed.prepared.id) {
                home.queue_close(backend_id);
            }
        }
    }

    /// After a statement command went through on the connection for `at` (or its backend
    /// was lost): what its long data and cursor are now, from how its response ended.
    pub(super) fn after_statement_command(&mut self, cmd: u8, id: u32, at: (Target, u32)) {
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
        self.statements.settle_home(id, at);
    }
}

/// MariaDB's error for a statement id it does not know, `raw` as the client sent it.
pub(super) fn unknown_statement(raw: u32, cmd: u8) -> ErrPacket {
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
