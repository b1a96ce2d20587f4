//! Where a statement goes: the session's connection to its default hostgroup (the writer)
//! or a connection to the readers. Pure decisions, no I/O: the session asks, this answers.

pub mod classify;
pub mod gtid;

pub use classify::Statement;

use crate::config::GaleraHostgroups;

/// Which of a session's backend connections serves a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The connection to the user's default hostgroup (the writer for split users).
    Primary,
    /// A connection to the reader hostgroup.
    Reader,
}

/// What the router knows about a session when it decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionRouting {
    /// The reader hostgroup, when this session's reads are split off.
    pub reader_hostgroup: Option<u32>,
    /// When no reader qualifies, read from the primary instead of failing.
    pub fallback_to_writer: bool,
    /// The primary connection reported an open transaction (SERVER_STATUS_IN_TRANS) or
    /// autocommit off.
    pub in_transaction: bool,
    /// Keep reads on the primary inside transactions (the user's transaction_persistent).
    pub transaction_persistent: bool,
    /// The session left state on the primary that reads may depend on.
    pub pinned: bool,
}

impl SessionRouting {
    /// The routing of a fresh session of a user whose default hostgroup is
    /// `default_hostgroup`: reads split to the reader group of the Galera cluster it writes
    /// to, when the user splits reads.
    pub fn for_user(
        galera: &[GaleraHostgroups],
        default_hostgroup: u32,
        split_reads: bool,
        transaction_persistent: bool,
    ) -> SessionRouting {
        let cluster = galera
            .iter()
            .find(|g| g.writer_hostgroup == default_hostgroup && split_reads);
        SessionRouting {
            reader_hostgroup: cluster.map(|g| g.reader_hostgroup),
            fallback_to_writer: cluster.is_none_or(|g| g.fallback_to_writer),
            transaction_persistent,
            ..SessionRouting::default()
        }
    }

    /// Routes one text statement.
    pub fn route(&self, statement: Statement) -> Target {
        let held_on_primary = self.pinned || (self.in_transaction && self.transaction_persistent);
        match (statement, self.reader_hostgroup) {
            (Statement::Read, Some(_)) if !held_on_primary => Target::Reader,
            _ => Target::Primary,
        }
    }

    /// Updates the session's state after a statement ran on the primary connection.
    pub fn after(&mut self, statement: Statement, status: Option<u16>) {
        use crate::protocol::constants::status::{AUTOCOMMIT, IN_TRANS};
        if statement == Statement::SessionState {
            self.pinned = true;
        }
        if let Some(flags) = status {
            self.in_transaction = flags & IN_TRANS != 0 || flags & AUTOCOMMIT == 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> SessionRouting {
        SessionRouting {
            reader_hostgroup: Some(20),
            transaction_persistent: true,
            ..Default::default()
        }
    }

    #[test]
    fn reads_split_until_a_transaction_or_session_state() {
        let mut s = split();
        assert_eq!(s.route(Statement::Read), Target::Reader);
        assert_eq!(s.route(Statement::Write), Target::Primary);
        s.after(Statement::Write, Some(0x0003)); // IN_TRANS | AUTOCOMMIT
        assert_eq!(
            s.route(Statement::Read),
            Target::Primary,
            "inside a transaction"
        );
        s.after(Statement::Write, Some(0x0002));
        assert_eq!(s.route(Statement::Read), Target::Reader, "after COMMIT");
        s.after(Statement::Write, Some(0x0000)); // autocommit off
        assert_eq!(s.route(Statement::Read), Target::Primary);
        s.after(Statement::Write, Some(0x0002));
        s.after(Statement::SessionState, Some(0x0002));
        assert_eq!(
            s.route(Statement::Read),
            Target::Primary,
            "pinned by session state"
        );
    }

    #[test]
    fn without_a_reader_group_everything_stays() {
        let s = SessionRouting::default();
        assert_eq!(s.route(Statement::Read), Target::Primary);
    }

    #[test]
    fn non_persistent_transactions_still_split_reads() {
        let mut s = split();
        s.transaction_persistent = false;
        s.after(Statement::Write, Some(0x0003));
        assert_eq!(s.route(Statement::Read), Target::Reader);
    }
}
