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
    /// The user's default hostgroup: where the session's primary connection goes.
    pub primary_hostgroup: u32,
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
    /// The session's reader connection, of this hostgroup, holds it: a read-only
    /// transaction is open there, or the next transaction's characteristics were set
    /// there (`SET TRANSACTION READ ONLY`).
    pub held_reader: Option<u32>,
    /// The connection the session's last statement ran on (and its hostgroup), while the
    /// session still has it: a statement that asks what that one left (its warnings,
    /// errors, row counts) runs there. `None` when that connection went back to the pool.
    pub diagnostics_at: Option<(Target, u32)>,
}

/// One statement as the router sees it: plain values, whichever protocol carried it (a
/// COM_QUERY, or a COM_STMT_EXECUTE of a prepared text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// What the statement means for routing.
    pub statement: Statement,
    /// The hostgroup a query rule named for it.
    pub ruled: Option<u32>,
    /// The connection it must run on (and that connection's hostgroup), whatever else
    /// holds: a prepared statement's open cursor or its long data lives there.
    pub held: Option<(Target, u32)>,
}

/// Where the router wants a statement to run, before anyone knows whether a server there
/// can take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    /// The session's primary connection.
    Primary,
    /// The connection the session already has for the target, of that hostgroup (a
    /// cursor or long data is on it): no other will do.
    Held(Target, u32),
    /// A connection to `hostgroup`: the readers, by the read/write split, or the hostgroup
    /// a rule named (`by_rule`).
    Elsewhere { hostgroup: u32, by_rule: bool },
}

/// What the session found when it looked for a connection to a [`Wish::Elsewhere`]'s
/// hostgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A connection whose server has applied what the session must see.
    Ready,
    /// A connection, but its server has not applied the session's writes in time
    /// (read-your-writes).
    Behind,
    /// No connection: no healthy server, or it failed while being set up.
    Unavailable,
}

/// Where a statement runs in the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the connection for this target; for [`Target::Reader`], of this hostgroup.
    Run(Target, u32),
    /// Nowhere: the client is told why (the rule's hostgroup cannot be reached, or no
    /// reader can serve a read and falling back to the writer is off).
    Refused,
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
            primary_hostgroup: default_hostgroup,
            reader_hostgroup: cluster.map(|g| g.reader_hostgroup),
            fallback_to_writer: cluster.is_none_or(|g| g.fallback_to_writer),
            transaction_persistent,
            ..SessionRouting::default()
        }
    }

    /// Whether an open transaction keeps every statement on the primary.
    fn held_by_transaction(&self) -> bool {
        self.in_transaction && self.transaction_persistent
    }

    /// Whether a transaction is open on either connection, or about to begin on the
    /// reader's.
    pub fn in_any_transaction(&self) -> bool {
        self.in_transaction || self.held_reader.is_some()
    }

    /// Where a statement should run: where its cursor or long data is; where a read-only
    /// transaction is open; for a statement asking about the one before, where that one
    /// ran; the hostgroup a rule named, unless a transaction holds the session; the
    /// readers for a read or a read-only transaction that nothing holds on the primary (no
    /// transaction, no session state); else the primary.
    pub fn wish(&self, ask: Ask) -> Wish {
        if let Some((target, hostgroup)) = ask.held {
            return Wish::Held(target, hostgroup);
        }
        if let Some(hostgroup) = self.held_reader {
            return Wish::Held(Target::Reader, hostgroup);
        }
        if ask.statement == Statement::Diagnostics {
            return match self.diagnostics_at {
                Some((target, hostgroup)) => Wish::Held(target, hostgroup),
                None => Wish::Primary,
            };
        }
        match ask.ruled {
            Some(hg) if hg != self.primary_hostgroup && !self.held_by_transaction() => {
                return Wish::Elsewhere {
                    hostgroup: hg,
                    by_rule: true,
                }
            }
            Some(_) => return Wish::Primary,
            None => {}
        }
        let held_on_primary = self.pinned || self.held_by_transaction();
        let readable = matches!(
            ask.statement,
            Statement::Read | Statement::ReadOnlyTransaction | Statement::ReadOnlyNext
        );
        match (readable, self.reader_hostgroup) {
            (true, Some(hostgroup)) if !held_on_primary => Wish::Elsewhere {
                hostgroup,
                by_rule: false,
            },
            _ => Wish::Primary,
        }
    }

    /// Where a statement runs, given its wish and, for [`Wish::Elsewhere`], what the
    /// session found there: a reader that is behind the session's writes yields to the
    /// primary; an unreachable one too, unless the rule named it or the user does not
    /// fall back to the writer.
    pub fn settle(&self, wish: Wish, found: Found) -> Placement {
        match (wish, found) {
            (Wish::Primary, _) => Placement::Run(Target::Primary, self.primary_hostgroup),
            (Wish::Held(_, _), Found::Unavailable) => Placement::Refused,
            (Wish::Held(target, hostgroup), _) => Placement::Run(target, hostgroup),
            (Wish::Elsewhere { hostgroup, .. }, Found::Ready) => {
                Placement::Run(Target::Reader, hostgroup)
            }
            (Wish::Elsewhere { by_rule: true, .. }, Found::Unavailable) => Placement::Refused,
            (Wish::Elsewhere { .. }, Found::Unavailable) if !self.fallback_to_writer => {
                Placement::Refused
            }
            (Wish::Elsewhere { .. }, Found::Behind | Found::Unavailable) => {
                Placement::Run(Target::Primary, self.primary_hostgroup)
            }
        }
    }

    /// Whether a statement must find an empty diagnostics area where it runs: it asks
    /// what the statement before it left, and that statement left nothing (its
    /// connection went back to the pool, so no warnings, no error), while the connection
    /// it gets may hold what some older statement left.
    pub fn wants_clean_diagnostics(&self, statement: Statement) -> bool {
        statement == Statement::Diagnostics
            && self.diagnostics_at.is_none()
            && self.held_reader.is_none()
    }

    /// Updates the session's state after a statement ran on the reader connection, of
    /// `hostgroup`, and ended with these status flags (`None`: an error, which changes
    /// nothing): the reader holds the session while a transaction is open there, and for
    /// the statement after a `SET TRANSACTION READ ONLY`.
    pub fn after_reader(&mut self, statement: Statement, status: Option<u16>, hostgroup: u32) {
        use crate::protocol::constants::status::IN_TRANS;
        let Some(flags) = status else {
            return;
        };
        let holds = statement == Statement::ReadOnlyNext || flags & IN_TRANS != 0;
        self.held_reader = holds.then_some(hostgroup);
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

    const WRITERS: u32 = 10;
    const READERS: u32 = 20;
    const RULED: u32 = 30;

    fn split() -> SessionRouting {
        SessionRouting {
            primary_hostgroup: WRITERS,
            reader_hostgroup: Some(READERS),
            fallback_to_writer: true,
            transaction_persistent: true,
            ..Default::default()
        }
    }

    fn ask(statement: Statement) -> Ask {
        Ask {
            statement,
            ruled: None,
            held: None,
        }
    }

    const READ: Wish = Wish::Elsewhere {
        hostgroup: READERS,
        by_rule: false,
    };
    const BY_RULE: Wish = Wish::Elsewhere {
        hostgroup: RULED,
        by_rule: true,
    };

    /// One row of the routing table: the session's state, the statement, and where the
    /// router wants it.
    struct Case {
        what: &'static str,
        session: SessionRouting,
        ask: Ask,
        wish: Wish,
    }

    #[test]
    fn the_routing_table() {
        let in_trans = SessionRouting {
            in_transaction: true,
            ..split()
        };
        let pinned = SessionRouting {
            pinned: true,
            ..split()
        };
        let not_persistent = SessionRouting {
            in_transaction: true,
            transaction_persistent: false,
            ..split()
        };
        let unsplit = SessionRouting {
            reader_hostgroup: None,
            ..split()
        };
        let read_only = SessionRouting {
            held_reader: Some(READERS),
            ..split()
        };
        let ruled = |hg| Ask {
            ruled: Some(hg),
            ..ask(Statement::Read)
        };
        let held = |target, hostgroup| Ask {
            held: Some((target, hostgroup)),
            ..ask(Statement::Read)
        };
        let warned_on_reader = SessionRouting {
            diagnostics_at: Some((Target::Reader, READERS)),
            ..split()
        };
        let warned_by_rule = SessionRouting {
            diagnostics_at: Some((Target::Reader, RULED)),
            ..in_trans
        };
        let diagnostics = ask(Statement::Diagnostics);
        #[rustfmt::skip]
        let cases = [
            Case { what: "a read splits off", session: split(), ask: ask(Statement::Read), wish: READ },
            Case { what: "a write stays", session: split(), ask: ask(Statement::Write), wish: Wish::Primary },
            Case { what: "session state stays", session: split(), ask: ask(Statement::SessionState), wish: Wish::Primary },
            Case { what: "SET NAMES runs on the primary", session: split(), ask: ask(Statement::SetNames), wish: Wish::Primary },
            Case { what: "a read in a transaction stays", session: in_trans, ask: ask(Statement::Read), wish: Wish::Primary },
            Case { what: "a read of a pinned session stays", session: pinned, ask: ask(Statement::Read), wish: Wish::Primary },
            Case { what: "transaction_persistent off splits reads in a transaction", session: not_persistent, ask: ask(Statement::Read), wish: READ },
            Case { what: "without readers everything stays", session: unsplit, ask: ask(Statement::Read), wish: Wish::Primary },
            Case { what: "a rule's hostgroup", session: split(), ask: ruled(RULED), wish: BY_RULE },
            Case { what: "a rule's hostgroup for a write", session: split(), ask: Ask { ruled: Some(RULED), ..ask(Statement::Write) }, wish: BY_RULE },
            Case { what: "a rule's hostgroup, pinned", session: pinned, ask: ruled(RULED), wish: BY_RULE },
            Case { what: "a rule naming the primary's hostgroup", session: split(), ask: ruled(WRITERS), wish: Wish::Primary },
            Case { what: "a rule inside a transaction", session: in_trans, ask: ruled(RULED), wish: Wish::Primary },
            Case { what: "a read-only transaction splits off", session: split(), ask: ask(Statement::ReadOnlyTransaction), wish: READ },
            Case { what: "SET TRANSACTION READ ONLY splits off", session: split(), ask: ask(Statement::ReadOnlyNext), wish: READ },
            Case { what: "a read-only transaction inside one on the primary", session: in_trans, ask: ask(Statement::ReadOnlyTransaction), wish: Wish::Primary },
            Case { what: "a read-only transaction of a pinned session", session: pinned, ask: ask(Statement::ReadOnlyTransaction), wish: Wish::Primary },
            Case { what: "a read in a read-only transaction", session: read_only, ask: ask(Statement::Read), wish: Wish::Held(Target::Reader, READERS) },
            Case { what: "a write in a read-only transaction (the server refuses it)", session: read_only, ask: ask(Statement::Write), wish: Wish::Held(Target::Reader, READERS) },
            Case { what: "a rule inside a read-only transaction", session: read_only, ask: ruled(RULED), wish: Wish::Held(Target::Reader, READERS) },
            Case { what: "a cursor on the reader", session: in_trans, ask: held(Target::Reader, RULED), wish: Wish::Held(Target::Reader, RULED) },
            Case { what: "long data on the primary", session: split(), ask: held(Target::Primary, WRITERS), wish: Wish::Held(Target::Primary, WRITERS) },
            Case { what: "SHOW WARNINGS after a read that warned", session: warned_on_reader, ask: diagnostics, wish: Wish::Held(Target::Reader, READERS) },
            Case { what: "SHOW WARNINGS after a ruled statement in a transaction", session: warned_by_rule, ask: diagnostics, wish: Wish::Held(Target::Reader, RULED) },
            Case { what: "a read after a read that warned", session: warned_on_reader, ask: ask(Statement::Read), wish: READ },
            Case { what: "SHOW WARNINGS after nothing left", session: split(), ask: diagnostics, wish: Wish::Primary },
            Case { what: "SHOW WARNINGS in a read-only transaction", session: read_only, ask: diagnostics, wish: Wish::Held(Target::Reader, READERS) },
            Case { what: "a rule cannot move SHOW WARNINGS", session: warned_on_reader, ask: Ask { ruled: Some(RULED), ..diagnostics }, wish: Wish::Held(Target::Reader, READERS) },
        ];
        for case in cases {
            assert_eq!(case.session.wish(case.ask), case.wish, "{}", case.what);
        }
    }

    #[test]
    fn the_settlement_table() {
        let primary = Placement::Run(Target::Primary, WRITERS);
        let no_fallback = SessionRouting {
            fallback_to_writer: false,
            ..split()
        };
        #[rustfmt::skip]
        let cases = [
            ("a ready reader", split(), READ, Found::Ready, Placement::Run(Target::Reader, READERS)),
            ("a reader behind the session's writes", split(), READ, Found::Behind, primary),
            ("no reader: the writer reads", split(), READ, Found::Unavailable, primary),
            ("no reader, no fallback", no_fallback, READ, Found::Unavailable, Placement::Refused),
            ("behind, no fallback: the writer has the writes", no_fallback, READ, Found::Behind, primary),
            ("the rule's hostgroup", split(), BY_RULE, Found::Ready, Placement::Run(Target::Reader, RULED)),
            ("the rule's hostgroup unreachable", split(), BY_RULE, Found::Unavailable, Placement::Refused),
            ("the rule's hostgroup behind", split(), BY_RULE, Found::Behind, primary),
            ("the primary", split(), Wish::Primary, Found::Unavailable, primary),
            ("a held reader", split(), Wish::Held(Target::Reader, READERS), Found::Ready, Placement::Run(Target::Reader, READERS)),
            ("a held connection lost", split(), Wish::Held(Target::Primary, WRITERS), Found::Unavailable, Placement::Refused),
        ];
        for (what, session, wish, found, placement) in cases {
            assert_eq!(session.settle(wish, found), placement, "{what}");
        }
    }

    #[test]
    fn diagnostics_are_cleaned_only_where_nothing_was_left() {
        let mut s = split();
        assert!(s.wants_clean_diagnostics(Statement::Diagnostics));
        assert!(!s.wants_clean_diagnostics(Statement::Read));
        s.diagnostics_at = Some((Target::Primary, WRITERS));
        assert!(!s.wants_clean_diagnostics(Statement::Diagnostics));
        let read_only = SessionRouting {
            held_reader: Some(READERS),
            ..split()
        };
        assert!(
            !read_only.wants_clean_diagnostics(Statement::Diagnostics),
            "every statement of the transaction ran there"
        );
    }

    #[test]
    fn the_reader_holds_the_session_through_a_read_only_transaction() {
        let mut s = split();
        s.after_reader(Statement::ReadOnlyTransaction, Some(0x0003), READERS);
        assert_eq!(s.held_reader, Some(READERS));
        s.after_reader(Statement::Read, None, READERS);
        assert_eq!(s.held_reader, Some(READERS), "an error ends nothing");
        s.after_reader(Statement::Write, Some(0x0002), READERS); // COMMIT
        assert_eq!(s.held_reader, None);
        s.after_reader(Statement::ReadOnlyNext, Some(0x0002), READERS);
        assert_eq!(
            s.held_reader,
            Some(READERS),
            "the next transaction is shaped there"
        );
        s.after_reader(Statement::Read, Some(0x0002), READERS);
        assert_eq!(s.held_reader, None, "an autocommit statement used it up");
    }

    #[test]
    fn transaction_state_follows_the_primarys_status_flags() {
        let mut s = split();
        s.after(Statement::Write, Some(0x0003)); // IN_TRANS | AUTOCOMMIT
        assert!(s.in_transaction);
        s.after(Statement::Write, Some(0x0002));
        assert!(!s.in_transaction, "after COMMIT");
        s.after(Statement::Write, Some(0x0000)); // autocommit off
        assert!(s.in_transaction);
        s.after(Statement::Write, Some(0x0002));
        s.after(Statement::SessionState, Some(0x0002));
        assert!(s.pinned, "pinned by session state");
        assert_eq!(s.wish(ask(Statement::Read)), Wish::Primary);
    }
}
