//! The record of a session's open transaction, for its replay (`replay`, `deadlock`):
//! what each statement is to the transaction (`Role`), which statements are recorded with
//! their answers' fingerprints, and what may be sent again when one is lost in flight. Pure
//! bookkeeping, fed by the session as statements go out and answers come back.

use bytes::Bytes;

use crate::protocol::constants::{command, status};
use crate::protocol::response::Outcome;
use crate::rules::command::Command;
use crate::rules::{Analysis, Kind};

/// What a statement is to the record of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// It ends the transaction open before it, if one is (COMMIT, ROLLBACK, and the
    /// statements that commit implicitly): the record starts over.
    Ends,
    /// BEGIN, START TRANSACTION: it ends the transaction open before it, if one is, and
    /// opens one; lost in flight outside a transaction, it changed nothing.
    Begins,
    /// Run again on the same data, it does the same and answers the same: reads, writes,
    /// savepoints, `SET TRANSACTION`.
    Repeatable,
    /// Its bytes alone cannot run it again (LOAD DATA's file, a cursor, a CALL, a change
    /// of the session's schema or character set…): the transaction cannot be replayed.
    Unrepeatable(&'static str),
    /// It changes nothing a replay must repeat (a ping, closing a statement).
    Inert,
}

impl Role {
    /// The role of a COM_QUERY or COM_STMT_EXECUTE of this analysis.
    pub(super) fn of(analysis: &Analysis) -> Role {
        if analysis.multi_statement {
            return Role::Unrepeatable("a multi-statement");
        }
        match analysis.command {
            Command::Begin | Command::StartTransaction => return Role::Begins,
            Command::Commit | Command::Rollback => return Role::Ends,
            Command::Savepoint | Command::RollbackSavepoint | Command::ReleaseSavepoint => {
                return Role::Repeatable
            }
            Command::Load => return Role::Unrepeatable("LOAD DATA"),
            _ => {}
        }
        match analysis.kind {
            Kind::Select | Kind::LockingSelect | Kind::Show => Role::Repeatable,
            Kind::Insert | Kind::Update | Kind::Delete | Kind::Replace => Role::Repeatable,
            Kind::Transaction if analysis.features.next_transaction => {
                match analysis.command {
                    // XA's transactions are not the session's to repeat
                    Command::Unknown => Role::Unrepeatable("XA"),
                    _ => Role::Repeatable,
                }
            }
            Kind::Ddl => Role::Ends,
            Kind::Call => Role::Unrepeatable("a CALL"),
            Kind::Set | Kind::Use => Role::Unrepeatable("a change of the session's settings"),
            _ => Role::Unrepeatable("a statement of an unknown effect"),
        }
    }

    /// The role of a command that carries no statement text of its own.
    pub(super) fn of_command(cmd: u8, cursor: bool) -> Role {
        match cmd {
            command::STMT_EXECUTE if cursor => Role::Unrepeatable("a cursor"),
            command::PING
            | command::STATISTICS
            | command::FIELD_LIST
            | command::STMT_PREPARE
            | command::STMT_RESET
            | command::STMT_CLOSE
            | command::PROCESS_INFO => Role::Inert,
            _ => Role::Unrepeatable("a command the record cannot repeat"),
        }
    }
}

/// One statement of the open transaction, as sent, and its answer's fingerprint.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) cmd: u8,
    /// The payload sent, command byte first (an execute's with its parameter types,
    /// whatever the connection had bound before).
    pub(super) payload: Bytes,
    /// For an execute: the session's id of its statement.
    pub(super) prepared: Option<u32>,
    pub(super) fingerprint: u64,
}

/// A statement sent on the primary connection whose answer is awaited.
#[derive(Debug)]
struct InFlight {
    role: Role,
    /// Present when the statement is to be recorded.
    entry: Option<Entry>,
    next_transaction: bool,
}

/// The record of the session's open transaction. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct TransactionLog {
    pub(super) entries: Vec<Entry>,
    bytes: usize,
    /// The last answer on the primary connection said a transaction was open.
    open: bool,
    /// Why the open transaction cannot be replayed, once something made it so.
    spoiled: Option<&'static str>,
    in_flight: Option<InFlight>,
}

impl TransactionLog {
    /// Whether a statement of `role` about to be sent on the primary connection is to be
    /// recorded: one of a transaction open, or opening. `autocommit` is the session's
    /// setting: with it off, any statement opens one.
    pub(super) fn wants(&self, role: Role, next_transaction: bool, autocommit: bool) -> bool {
        // a transaction spoiled stays so until a statement ends it
        let ends = matches!(role, Role::Ends | Role::Begins);
        (ends || role == Role::Repeatable)
            && (self.open || !autocommit || ends || next_transaction)
            && (self.spoiled.is_none() || ends)
    }

    /// Notes the statement about to be sent on the primary connection, and what of it is
    /// recorded (`sent`: its command, payload and prepared statement) if it is.
    pub(super) fn expect(
        &mut self,
        role: Role,
        sent: Option<(u8, Bytes, Option<u32>)>,
        next_transaction: bool,
    ) {
        if let Role::Unrepeatable(why) = role {
            if self.open {
                self.spoil(why);
            }
        }
        let entry = sent.map(|(cmd, payload, prepared)| Entry {
            cmd,
            payload,
            prepared,
            fingerprint: 0,
        });
        self.in_flight = Some(InFlight {
            role,
            entry,
            next_transaction,
        });
    }

    /// Takes the answer to the statement in flight: records it while a transaction is
    /// open, starts over when one ended. `max` is the record's bound in bytes.
    pub(super) fn answered(&mut self, outcome: &Outcome, fingerprint: Option<u64>, max: usize) {
        // a statement not announced (one too large to hold) is not in the record
        let in_flight = self.in_flight.take().unwrap_or(InFlight {
            role: Role::Unrepeatable("a statement too large to record"),
            entry: None,
            next_transaction: false,
        });
        if in_flight.role == Role::Inert {
            return;
        }
        let Some(flags) = outcome.status.filter(|_| !outcome.error) else {
            // an error's effect on the transaction is not said (a deadlock ends it)
            if self.open {
                self.spoil("a statement in it failed");
            }
            return;
        };
        let open_after = flags & status::IN_TRANS != 0;
        if matches!(in_flight.role, Role::Ends | Role::Begins) && self.open {
            self.clear();
        }
        if !open_after {
            self.clear();
            self.open = false;
            if !in_flight.next_transaction {
                return;
            }
        }
        self.open = open_after;
        match (in_flight.role, in_flight.entry, fingerprint) {
            (Role::Unrepeatable(why), _, _) => self.spoil(why),
            (_, Some(mut entry), Some(fingerprint)) if self.spoiled.is_none() => {
                entry.fingerprint = fingerprint;
                self.bytes += entry.payload.len() + std::mem::size_of::<Entry>();
                self.entries.push(entry);
                if self.bytes > max {
                    self.spoil("its record grew over transaction_replay_max_size");
                }
            }
            (_, None, _) if open_after => self.spoil("a statement in it was not recorded"),
            _ => {}
        }
    }

    /// The statement in flight may be sent again after a replay: its loss undid it (a
    /// statement of the open transaction, or the one that opened it with autocommit
    /// off), or it changed nothing (a BEGIN outside one).
    pub(super) fn resendable(&self) -> bool {
        let Some(in_flight) = &self.in_flight else {
            return false;
        };
        match in_flight.role {
            // recorded outside a transaction: autocommit is off, so it opened one, which
            // its loss rolled back (an autocommit statement is not recorded)
            Role::Repeatable if !self.open => in_flight.entry.is_some(),
            // an inert command (a prepare) inside the transaction goes after its replay
            Role::Repeatable | Role::Inert => self.replayable(),
            Role::Begins => !self.open,
            _ => false,
        }
    }

    /// After a deadlock rolled back the transaction of the statement in flight: whether
    /// the statement can run again, once the record of the transaction open before it (if
    /// one was) is replayed. Not what its bytes alone cannot repeat.
    pub(super) fn rerunnable(&self) -> bool {
        let Some(in_flight) = &self.in_flight else {
            return false;
        };
        let repeatable = matches!(in_flight.role, Role::Repeatable | Role::Ends | Role::Begins);
        repeatable && (!self.open || self.spoiled.is_none())
    }

    /// Whether the answer to the statement in flight is to be fingerprinted.
    pub(super) fn recording(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.entry.is_some())
    }

    /// An open transaction whose record can be replayed.
    pub(super) fn replayable(&self) -> bool {
        self.open && self.spoiled.is_none()
    }

    /// Forgets the transaction (it ended, or the session lost it).
    pub(super) fn forget(&mut self) {
        self.clear();
        self.open = false;
        self.in_flight = None;
    }

    fn spoil(&mut self, why: &'static str) {
        self.entries = Vec::new();
        self.bytes = 0;
        self.spoiled = Some(why);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.spoiled = None;
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Analyzer;

    const IN_TRANS: u16 = status::IN_TRANS | status::AUTOCOMMIT;
    const IDLE: u16 = status::AUTOCOMMIT;
    const MAX: usize = 1 << 20;

    fn role(sql: &str) -> Role {
        Role::of(&Analyzer::default().analyze(sql.as_bytes()))
    }

    /// Runs `sql` through the log as a session would, answered with `flags`.
    fn run(log: &mut TransactionLog, sql: &str, flags: u16, autocommit: bool) {
        let analysis = Analyzer::default().analyze(sql.as_bytes());
        let (role, next) = (Role::of(&analysis), analysis.features.next_transaction);
        let fingerprinted = log.wants(role, next, autocommit);
        let sent = Some((command::QUERY, Bytes::copy_from_slice(sql.as_bytes()), None));
        log.expect(role, sent.filter(|_| fingerprinted), next);
        let outcome = Outcome {
            status: Some(flags),
            error: false,
            warnings: 0,
        };
        log.answered(&outcome, fingerprinted.then_some(7), MAX);
    }

    fn recorded(log: &TransactionLog) -> Vec<String> {
        let text = |e: &Entry| String::from_utf8_lossy(&e.payload).into_owned();
        log.entries.iter().map(text).collect()
    }

    #[test]
    fn statements_have_the_roles_their_loss_allows() {
        for sql in ["COMMIT", "ROLLBACK", "CREATE TABLE t (a INT)"] {
            assert_eq!(role(sql), Role::Ends, "{sql}");
        }
        for sql in ["BEGIN", "START TRANSACTION READ WRITE"] {
            assert_eq!(role(sql), Role::Begins, "{sql}");
        }
        for sql in [
            "SELECT 1",
            "SELECT a FROM t FOR UPDATE",
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a = 2",
            "DELETE FROM t",
            "SAVEPOINT s",
            "ROLLBACK TO SAVEPOINT s",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        ] {
            assert_eq!(role(sql), Role::Repeatable, "{sql}");
        }
        for sql in [
            "LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
            "CALL p()",
            "SET sql_mode = ''",
            "USE db",
            "XA START 'x'",
            "SELECT 1; SELECT 2",
        ] {
            assert!(matches!(role(sql), Role::Unrepeatable(_)), "{sql}");
        }
    }

    #[test]
    fn the_record_holds_the_open_transaction_only() {
        let mut log = TransactionLog::default();
        run(&mut log, "INSERT INTO t VALUES (0)", IDLE, true);
        assert!(
            recorded(&log).is_empty(),
            "an autocommit write is no transaction"
        );
        run(
            &mut log,
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            IDLE,
            true,
        );
        run(&mut log, "BEGIN", IN_TRANS, true);
        run(&mut log, "INSERT INTO t VALUES (1)", IN_TRANS, true);
        assert!(log.replayable());
        assert_eq!(
            recorded(&log),
            [
                "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "BEGIN",
                "INSERT INTO t VALUES (1)"
            ]
        );
        // BEGIN commits the transaction before it: the record starts over
        run(&mut log, "BEGIN", IN_TRANS, true);
        assert_eq!(recorded(&log), ["BEGIN"]);
        run(&mut log, "COMMIT", IDLE, true);
        assert!(recorded(&log).is_empty() && !log.replayable());
    }

    #[test]
    fn with_autocommit_off_the_first_statement_opens_the_transaction() {
        let mut log = TransactionLog::default();
        run(
            &mut log,
            "UPDATE t SET a = 1",
            IN_TRANS & !status::AUTOCOMMIT,
            false,
        );
        assert_eq!(recorded(&log), ["UPDATE t SET a = 1"]);
        run(&mut log, "COMMIT", 0, false);
        assert!(recorded(&log).is_empty() && !log.replayable());
    }

    #[test]
    fn what_cannot_be_repeated_spoils_the_transaction_until_it_ends() {
        let mut log = TransactionLog::default();
        run(&mut log, "BEGIN", IN_TRANS, true);
        run(&mut log, "CALL p()", IN_TRANS, true);
        assert!(!log.replayable());
        run(&mut log, "INSERT INTO t VALUES (1)", IN_TRANS, true);
        assert!(!log.replayable() && recorded(&log).is_empty());
        run(&mut log, "ROLLBACK", IDLE, true);
        run(&mut log, "BEGIN", IN_TRANS, true);
        assert!(log.replayable(), "the next transaction is replayable again");
        // an error leaves the transaction's state unsaid
        log.expect(Role::Repeatable, None, false);
        let failed = Outcome {
            status: None,
            error: true,
            warnings: 0,
        };
        log.answered(&failed, None, MAX);
        assert!(!log.replayable());
    }

    #[test]
    fn a_record_over_its_bound_spoils_the_transaction() {
        let mut log = TransactionLog::default();
        run(&mut log, "BEGIN", IN_TRANS, true);
        let big = format!("INSERT INTO t VALUES ('{}')", "x".repeat(MAX));
        run(&mut log, &big, IN_TRANS, true);
        assert!(!log.replayable() && log.entries.is_empty());
    }

    #[test]
    fn only_a_repeatable_statement_in_flight_is_sent_again() {
        let mut log = TransactionLog::default();
        run(&mut log, "BEGIN", IN_TRANS, true);
        let expect = |log: &mut TransactionLog, sql: &str| {
            let analysis = Analyzer::default().analyze(sql.as_bytes());
            log.expect(Role::of(&analysis), None, false);
        };
        expect(&mut log, "UPDATE t SET a = 1");
        assert!(log.resendable());
        log.expect(Role::of_command(command::STMT_PREPARE, false), None, false);
        assert!(log.resendable(), "a prepare changed nothing");
        expect(&mut log, "COMMIT");
        assert!(!log.resendable(), "a COMMIT sent may have committed");
        assert!(log.replayable(), "but one not sent yet may follow a replay");
        expect(&mut log, "BEGIN");
        assert!(!log.resendable(), "a BEGIN in a transaction commits it");
        run(&mut log, "COMMIT", IDLE, true);
        expect(&mut log, "BEGIN");
        assert!(log.resendable(), "outside one, it changed nothing");
        expect(&mut log, "INSERT INTO t VALUES (1)");
        assert!(!log.resendable(), "an autocommit write may have committed");
    }

    #[test]
    fn after_a_deadlock_a_repeatable_statement_runs_again_unless_the_record_is_spoiled() {
        let mut log = TransactionLog::default();
        let expect = |log: &mut TransactionLog, sql: &str| {
            let analysis = Analyzer::default().analyze(sql.as_bytes());
            log.expect(Role::of(&analysis), None, false);
        };
        expect(&mut log, "UPDATE t SET a = 1");
        assert!(log.rerunnable(), "an autocommit statement");
        run(&mut log, "BEGIN", IN_TRANS, true);
        expect(&mut log, "UPDATE t SET a = 1");
        assert!(log.rerunnable());
        expect(&mut log, "COMMIT");
        assert!(
            log.rerunnable(),
            "a COMMIT a deadlock refused did not commit"
        );
        expect(&mut log, "CALL p()");
        assert!(!log.rerunnable(), "its bytes alone cannot repeat it");
        run(&mut log, "CALL p()", IN_TRANS, true);
        expect(&mut log, "UPDATE t SET a = 1");
        assert!(!log.rerunnable(), "the record cannot be replayed");
        log.forget();
        assert!(!log.rerunnable(), "nothing in flight");
    }

    #[test]
    fn with_autocommit_off_the_statement_that_opens_the_transaction_is_sent_again() {
        let mut log = TransactionLog::default();
        let sql = "INSERT INTO t VALUES (1)";
        let analysis = Analyzer::default().analyze(sql.as_bytes());
        let (role, next) = (Role::of(&analysis), analysis.features.next_transaction);
        assert!(log.wants(role, next, false));
        let sent = Some((command::QUERY, Bytes::from_static(sql.as_bytes()), None));
        log.expect(role, sent, next);
        assert!(
            log.resendable(),
            "its loss rolled back the transaction it opened"
        );
        // the same write with autocommit on is not recorded, and not sent again
        assert!(!log.wants(role, next, true));
        log.expect(role, None, next);
        assert!(!log.resendable());
    }
}
