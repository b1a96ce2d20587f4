//! One command on its way through the session's pipeline, whichever protocol carried it,
//! and what running a statement does to the session's hold on its connection.

use std::time::Instant;

use crate::connection::RawPacket;
use crate::protocol::constants::command;
use crate::router::{Statement, Target};
use crate::rules::{Analysis, Kind};

use super::inspect::{Inspected, Plan};

/// What running a statement does to the session's hold on its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(in crate::frontend) struct Effects {
    /// It leaves state on the connection: the session keeps it from now on.
    pub binds: bool,
    /// It may have written: its connection serves the next statement too (for
    /// `LAST_INSERT_ID()`, `ROW_COUNT()`, the transaction `SET TRANSACTION` shapes).
    pub writes: bool,
    /// It reads the diagnostics of the statement before (`SHOW WARNINGS`…): they stay
    /// where they are for another such statement, as on the server.
    pub keeps_diagnostics: bool,
}

impl Effects {
    /// The effects of a statement of this analysis and routing meaning.
    pub(super) fn of(analysis: &Analysis, statement: Statement) -> Effects {
        Effects {
            binds: statement == Statement::SessionState
                || analysis.features.session_function
                || analysis.multi_statement,
            writes: analysis.features.next_transaction
                || matches!(
                    analysis.kind,
                    Kind::Insert | Kind::Update | Kind::Delete | Kind::Replace
                ),
            keeps_diagnostics: statement == Statement::Diagnostics,
        }
    }

    /// What a command that is no statement does: COM_SET_OPTION changes how the
    /// connection parses multi-statements, which binds it; the others leave nothing.
    pub(super) fn of_command(cmd: u8) -> Effects {
        Effects {
            binds: cmd == command::SET_OPTION,
            ..Effects::default()
        }
    }
}

/// One command as the steps of the pipeline see it: the bytes the client sent, and what
/// inspection made of the statement they carry (a COM_QUERY's text, or the text a
/// COM_STMT_EXECUTE's statement was prepared from).
pub(super) struct Request {
    pub cmd: u8,
    pub packet: RawPacket,
    pub started: Instant,
    /// The session's id of the prepared statement a COM_STMT_* command names.
    pub prepared: Option<u32>,
    /// What the rules and the firewall made of the statement.
    pub inspected: Inspected,
    /// What routing makes of the statement.
    pub statement: Statement,
    pub effects: Effects,
    /// Counted in the digest statistics and the query log: a COM_QUERY, or a
    /// COM_STMT_EXECUTE (a prepare runs nothing).
    pub accounted: bool,
    /// A COM_STMT_EXECUTE that asked for a cursor.
    pub cursor: bool,
    /// The connection a prepared statement's command must use: where its long data or
    /// open cursor is.
    pub home: Option<(Target, u32)>,
}

impl Request {
    pub fn plan(&self) -> &Plan {
        self.inspected.plan()
    }

    /// The statement's text as the client sent it (after the command byte).
    pub fn body(&self) -> &[u8] {
        &self.packet.first_frame()[1..]
    }
}
