//! What a statement means for routing, from the rule engine's analysis of its text.

use crate::rules::{Analysis, Kind};

/// What a statement means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// A SELECT that only reads and leaves no state on the connection: may go to a reader.
    Read,
    /// `SET NAMES …`: changes the connection character set; replayable on other connections.
    SetNames,
    /// `SET` of session variables the proxy follows (`sql_mode`, `time_zone`, …): runs on
    /// the primary, and the values are replayed on other connections.
    SetVariables,
    /// Anything else: writes, DDL, locking reads, transaction control, session changes.
    Write,
    /// `START TRANSACTION … READ ONLY`: a transaction a reader can serve whole.
    ReadOnlyTransaction,
    /// `SET TRANSACTION … READ ONLY`: the next transaction cannot write; it runs where
    /// this ran.
    ReadOnlyNext,
    /// A statement that reads what the statement before it left on its connection (its
    /// warnings, errors or row counts): it runs where that statement ran.
    Diagnostics,
    /// A statement that leaves state on its connection that later reads may depend on
    /// (user variables, `SET` other than NAMES, temporary tables, locks, `PREPARE`, `USE`):
    /// the session should stay on the writer from now on.
    SessionState,
}

impl Statement {
    /// The routing meaning of an analysed statement.
    pub fn of(analysis: &Analysis) -> Statement {
        let f = &analysis.features;
        if f.user_variable || f.temporary_table || f.session_statement {
            return Statement::SessionState;
        }
        match analysis.kind {
            _ if analysis.multi_statement => Statement::Write,
            Kind::Select | Kind::Show | Kind::Other
                if f.diagnostics && !f.session_function && !f.select_into =>
            {
                Statement::Diagnostics
            }
            Kind::Select if f.session_function || f.select_into => Statement::Write,
            Kind::Select => Statement::Read,
            Kind::Set if f.set_names_only => Statement::SetNames,
            Kind::Set if f.set_replayed_only => Statement::SetVariables,
            Kind::Set | Kind::Use => Statement::SessionState,
            Kind::Transaction if f.read_only_transaction && f.next_transaction => {
                Statement::ReadOnlyNext
            }
            Kind::Transaction if f.read_only_transaction => Statement::ReadOnlyTransaction,
            _ => Statement::Write,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Analyzer;

    fn c(sql: &str) -> Statement {
        Statement::of(&Analyzer::default().analyze(sql.as_bytes()))
    }

    #[test]
    fn plain_selects_are_reads() {
        for sql in [
            "SELECT c FROM sbtest1 WHERE id=4993",
            "  select * from t where a = 'FOR UPDATE'",
            "/* app: list */ SELECT 1",
            "-- comment\nSELECT @@port",
            "# comment\nSELECT `for`, `update` FROM t",
            "(SELECT 1) UNION (SELECT 2)",
            "SELECT 1;",
            "SELECT DISTINCT c FROM t ORDER BY c LIMIT 10",
            "SELECT 'it''s', \"a\\\"b\" FROM t",
            "SELECT /*!40001 SQL_NO_CACHE */ 1",
            "WITH c AS (SELECT 1) SELECT * FROM c",
        ] {
            assert_eq!(c(sql), Statement::Read, "{sql}");
        }
    }

    #[test]
    fn locking_and_session_bound_selects_go_to_the_writer() {
        for sql in [
            "SELECT * FROM t WHERE id = 1 FOR UPDATE",
            "select * from t lock in share mode",
            "SELECT * FROM t FOR SHARE",
            "SELECT a FROM t INTO OUTFILE '/tmp/a'",
            "SELECT GET_LOCK('x', 1)",
            "SELECT LAST_INSERT_ID()",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
            "SELECT FOUND_ROWS(), LAST_INSERT_ID()",
            "SELECT NEXTVAL(s)",
            "SELECT 1; DELETE FROM t",
            "SELECT 1 /*!50000 FOR UPDATE */",
            "WITH c AS (SELECT 1) DELETE FROM t",
        ] {
            assert_eq!(c(sql), Statement::Write, "{sql}");
        }
    }

    #[test]
    fn everything_else_is_a_write_or_session_state() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "UPDATE t SET a=1",
            "BEGIN",
            "COMMIT",
            "SHOW TABLES",
            "CALL p()",
            "",
            "   ",
        ] {
            assert_eq!(c(sql), Statement::Write, "{sql}");
        }
        for sql in [
            "SET @a = 1",
            "SELECT @a",
            "SELECT @a := 5",
            "SELECT a INTO @x FROM t",
            "SET SESSION wait_timeout = 10",
            "SET sql_mode = @saved",
            "CREATE TEMPORARY TABLE t (a INT)",
            "create or replace temporary table t (a int)",
            "LOCK TABLES t WRITE",
            "PREPARE s FROM 'SELECT 1'",
            "USE sbtest",
            "HANDLER t OPEN",
            "DROP TEMPORARY TABLE t",
        ] {
            assert_eq!(c(sql), Statement::SessionState, "{sql}");
        }
        assert_eq!(c("SET NAMES utf8mb4"), Statement::SetNames);
        for sql in [
            "SHOW WARNINGS",
            "SHOW COUNT(*) ERRORS",
            "SELECT @@warning_count, @@error_count",
            "SELECT ROW_COUNT()",
            "SELECT FOUND_ROWS()",
            "GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT",
        ] {
            let expected = if sql.contains('@') && !sql.contains("@@") {
                Statement::SessionState // it sets a user variable where it runs
            } else {
                Statement::Diagnostics
            };
            assert_eq!(c(sql), expected, "{sql}");
        }
        assert_eq!(c("SHOW WARNINGS; SELECT 1"), Statement::Write);
        assert_eq!(
            c("START TRANSACTION READ ONLY"),
            Statement::ReadOnlyTransaction
        );
        assert_eq!(c("SET TRANSACTION READ ONLY"), Statement::ReadOnlyNext);
        assert_eq!(c("SET SESSION TRANSACTION READ ONLY"), Statement::Write);
        assert_eq!(
            c("START TRANSACTION READ ONLY; DELETE FROM t"),
            Statement::Write
        );
        assert_eq!(
            c("set names 'latin1' collate 'latin1_swedish_ci'"),
            Statement::SetNames
        );
        assert_eq!(
            c("SET NAMES utf8mb4, time_zone = '+00:00'"),
            Statement::SessionState
        );
        for sql in [
            "SET SESSION sql_mode = ''",
            "SET autocommit = 0",
            "SET time_zone = '+00:00', @@session.sql_mode = CONCAT(@@sql_mode, ',ANSI')",
        ] {
            assert_eq!(c(sql), Statement::SetVariables, "{sql}");
        }
    }

    #[test]
    fn unterminated_quotes_and_comments_do_not_panic() {
        for sql in [
            "SELECT 'abc",
            "SELECT /* abc",
            "SELECT `x",
            "SELECT \"\\",
            "@",
            "--",
            "/*",
        ] {
            let _ = c(sql);
        }
    }
}
