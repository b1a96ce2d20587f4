//! A small, single-pass look at a statement's text: enough to tell a plain read from
//! everything else. It skips comments and never looks inside string literals or quoted
//! identifiers. (The rule engine's full tokenizer will replace it.)

/// What a statement means for routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement {
    /// A SELECT that only reads and leaves no state on the connection: may go to a reader.
    Read,
    /// `SET NAMES …`: changes the connection character set; replayable on other connections.
    SetNames,
    /// Anything else: writes, DDL, locking reads, transaction control, session changes.
    Write,
    /// A statement that leaves state on its connection that later reads may depend on
    /// (user variables, `SET` other than NAMES, temporary tables, locks, `PREPARE`):
    /// the session should stay on the writer from now on.
    SessionState,
}

/// Classifies one statement (the text after the COM_QUERY byte).
pub fn classify(sql: &[u8]) -> Statement {
    let words = Words::new(sql);
    let mut words = words.peekable();
    let Some(first) = words.next() else {
        return Statement::Write;
    };
    match first {
        Word::Keyword(k) if k.eq_ignore_ascii_case(b"SELECT") => select(words),
        Word::Keyword(k) if k.eq_ignore_ascii_case(b"SET") => match words.next() {
            // `SET NAMES x, other = y` sets more than the character set
            Some(Word::Keyword(n)) if n.eq_ignore_ascii_case(b"NAMES") && !sql.contains(&b',') => {
                Statement::SetNames
            }
            _ => Statement::SessionState,
        },
        Word::Keyword(k) if k.eq_ignore_ascii_case(b"CREATE") => {
            // CREATE [OR REPLACE] TEMPORARY TABLE lives on its connection
            let temporary = words
                .take(3)
                .any(|w| matches!(w, Word::Keyword(t) if t.eq_ignore_ascii_case(b"TEMPORARY")));
            if temporary {
                Statement::SessionState
            } else {
                Statement::Write
            }
        }
        Word::Keyword(k)
            if [&b"PREPARE"[..], b"LOCK", b"USE"]
                .iter()
                .any(|w| k.eq_ignore_ascii_case(w)) =>
        {
            // LOCK TABLES, PREPARE, USE: state bound to the connection
            Statement::SessionState
        }
        _ => Statement::Write,
    }
}

fn select<'a>(words: impl Iterator<Item = Word<'a>>) -> Statement {
    let mut previous: Option<&[u8]> = None;
    for word in words {
        match word {
            Word::UserVariable => return Statement::SessionState,
            Word::Executable | Word::Separator => return Statement::Write,
            Word::Keyword(k) => {
                let locking = (k.eq_ignore_ascii_case(b"UPDATE")
                    || k.eq_ignore_ascii_case(b"SHARE"))
                    && previous.is_some_and(|p| {
                        p.eq_ignore_ascii_case(b"FOR") || p.eq_ignore_ascii_case(b"IN")
                    });
                let session_bound = [
                    &b"INTO"[..],
                    b"GET_LOCK",
                    b"RELEASE_LOCK",
                    b"IS_FREE_LOCK",
                    b"LAST_INSERT_ID",
                    b"FOUND_ROWS",
                    b"SQL_CALC_FOUND_ROWS",
                    b"ROW_COUNT",
                    b"NEXTVAL",
                    b"SETVAL",
                    b"LASTVAL",
                ]
                .iter()
                .any(|w| k.eq_ignore_ascii_case(w));
                if locking || session_bound {
                    return Statement::Write;
                }
                previous = Some(k);
            }
            Word::Other => previous = None,
        }
    }
    Statement::Read
}

/// A token as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word<'a> {
    Keyword(&'a [u8]),
    /// `@name` (not `@@system_variable`).
    UserVariable,
    /// `/*! … */` or `/*M! … */`: code the server runs that this scan does not read.
    Executable,
    /// `;` followed by more text: a second statement.
    Separator,
    Other,
}

struct Words<'a> {
    sql: &'a [u8],
    pos: usize,
}

impl<'a> Words<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Words { sql, pos: 0 }
    }

    fn skip_quoted(&mut self, quote: u8) {
        self.pos += 1;
        while self.pos < self.sql.len() {
            let c = self.sql[self.pos];
            if c == b'\\' && quote != b'`' {
                self.pos += 2;
                continue;
            }
            self.pos += 1;
            if c == quote {
                // a doubled quote is an escaped quote
                if self.sql.get(self.pos) == Some(&quote) {
                    self.pos += 1;
                    continue;
                }
                return;
            }
        }
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = Word<'a>;

    fn next(&mut self) -> Option<Word<'a>> {
        let sql = self.sql;
        while self.pos < sql.len() {
            let c = sql[self.pos];
            let next = sql.get(self.pos + 1).copied();
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b',' => self.pos += 1,
                b'#' => self.skip_line(),
                b'-' if next == Some(b'-')
                    && sql
                        .get(self.pos + 2)
                        .is_none_or(|c| c.is_ascii_whitespace()) =>
                {
                    self.skip_line()
                }
                b'/' if next == Some(b'*') => {
                    let executable = matches!(sql.get(self.pos + 2), Some(b'!'))
                        || (sql.get(self.pos + 2) == Some(&b'M')
                            && sql.get(self.pos + 3) == Some(&b'!'));
                    let end = find(&sql[self.pos + 2..], b"*/").map(|i| self.pos + 2 + i + 2);
                    self.pos = end.unwrap_or(sql.len());
                    if executable {
                        return Some(Word::Executable);
                    }
                }
                b'\'' | b'"' | b'`' => {
                    self.skip_quoted(c);
                    return Some(Word::Other);
                }
                b';' => {
                    self.pos += 1;
                    let rest = &sql[self.pos..];
                    if rest.iter().all(|c| c.is_ascii_whitespace() || *c == b';') {
                        self.pos = sql.len();
                        return None;
                    }
                    return Some(Word::Separator);
                }
                b'@' => {
                    if next == Some(b'@') {
                        self.pos += 2;
                        self.skip_identifier();
                        return Some(Word::Other);
                    }
                    self.pos += 1;
                    self.skip_identifier();
                    return Some(Word::UserVariable);
                }
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let start = self.pos;
                    self.skip_identifier();
                    return Some(Word::Keyword(&sql[start..self.pos]));
                }
                _ => {
                    self.pos += 1;
                    return Some(Word::Other);
                }
            }
        }
        None
    }
}

impl Words<'_> {
    fn skip_line(&mut self) {
        while self.pos < self.sql.len() && self.sql[self.pos] != b'\n' {
            self.pos += 1;
        }
    }

    fn skip_identifier(&mut self) {
        while self
            .sql
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c == b'.')
        {
            self.pos += 1;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sql: &str) -> Statement {
        classify(sql.as_bytes())
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
            "SELECT a INTO @x FROM t",
            "SELECT GET_LOCK('x', 1)",
            "SELECT LAST_INSERT_ID()",
            "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1",
            "SELECT FOUND_ROWS()",
            "SELECT NEXTVAL(s)",
            "SELECT 1; DELETE FROM t",
            "SELECT /*!50000 SQL_NO_CACHE */ 1",
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
            "SET autocommit = 0",
            "SET SESSION sql_mode = ''",
            "CREATE TEMPORARY TABLE t (a INT)",
            "create or replace temporary table t (a int)",
            "LOCK TABLES t WRITE",
            "PREPARE s FROM 'SELECT 1'",
            "USE sbtest",
        ] {
            assert_eq!(c(sql), Statement::SessionState, "{sql}");
        }
        assert_eq!(c("SET NAMES utf8mb4"), Statement::SetNames);
        assert_eq!(
            c("set names 'latin1' collate 'latin1_swedish_ci'"),
            Statement::SetNames
        );
        assert_eq!(
            c("SET NAMES utf8mb4, time_zone = '+00:00'"),
            Statement::SessionState
        );
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
