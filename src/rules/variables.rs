//! Session variables the proxy follows so that a session that sets them can still share
//! backend connections: `SET sql_mode = …`, `SET time_zone = …` and the like. The proxy
//! reads the resulting values back from the server (so `CONCAT(@@sql_mode, …)` or a named
//! time zone come out as the server resolved them) and replays them on any other
//! connection the session's statements run on, only where they differ.
//!
//! The variables followed change what statements mean or return and hold nothing on the
//! connection; each can be put back to its global value with `DEFAULT`. `autocommit` is
//! followed too, through the status flags of every reply rather than by replay: with it
//! off the session is in a transaction and keeps its connection until it is back on.
//! Variables that shape the connection itself (`wait_timeout`, isolation) are not
//! followed: a `SET` of them keeps the session on its connection.

use super::tokens::{Token, TokenKind, Tokens};

/// The session variables followed and replayed, lower case.
pub const REPLAYED: [&str; 14] = [
    "sql_mode",
    "time_zone",
    "sql_auto_is_null",
    "sql_select_limit",
    "sql_safe_updates",
    "sql_big_selects",
    "sql_notes",
    "group_concat_max_len",
    "div_precision_increment",
    "lc_time_names",
    "max_statement_time",
    "default_week_format",
    "innodb_lock_wait_timeout",
    "lock_wait_timeout",
];

/// Followed through the server's status flags, never read back or replayed.
pub const BY_STATUS: &str = "autocommit";

/// A session's (or a connection's) values of the replayed variables it changed, sorted by
/// name, each as the SQL literal that sets it.
pub type Values = Vec<(&'static str, String)>;

/// The variables a `SET` statement assigns, when every assignment is to a replayed
/// session variable (with no user variable in the values and nothing after it); `None`
/// for any other statement.
pub fn replayed_assignments(sql: &[u8]) -> Option<Vec<&'static str>> {
    let mut tokens = Tokens::new(sql);
    let first = tokens.next()?;
    if first.kind != TokenKind::Word || !first.text(sql).eq_ignore_ascii_case(b"SET") {
        return None;
    }
    after_set(tokens, sql)
}

/// [`replayed_assignments`] with the tokens just after `SET`.
pub(super) fn after_set(mut tokens: Tokens<'_>, sql: &[u8]) -> Option<Vec<&'static str>> {
    let mut names = Vec::new();
    loop {
        let name = variable(&mut tokens, sql)?;
        let op = tokens.next()?;
        if op.kind != TokenKind::Operator || !matches!(op.text(sql), b"=" | b":=") {
            return None;
        }
        if !names.contains(&name) {
            names.push(name);
        }
        if !value(&mut tokens)? {
            return Some(names);
        }
    }
}

/// The replayed variable an assignment names: `x`, `SESSION x`, `LOCAL x`, `@@x`,
/// `@@session.x`, `@@local.x`.
fn variable(tokens: &mut Tokens<'_>, sql: &[u8]) -> Option<&'static str> {
    let t = tokens.next()?;
    let name = match t.kind {
        TokenKind::Word => {
            let text = t.text(sql);
            if text.eq_ignore_ascii_case(b"SESSION") || text.eq_ignore_ascii_case(b"LOCAL") {
                let n: Token = tokens.next()?;
                (n.kind == TokenKind::Word).then(|| n.text(sql))?
            } else {
                text
            }
        }
        TokenKind::SystemVar => {
            let text = &t.text(sql)[2..];
            match text.iter().position(|&c| c == b'.') {
                Some(dot) => {
                    let scope = &text[..dot];
                    let local = scope.eq_ignore_ascii_case(b"session")
                        || scope.eq_ignore_ascii_case(b"local");
                    local.then(|| &text[dot + 1..])?
                }
                None => text,
            }
        }
        _ => return None,
    };
    REPLAYED
        .iter()
        .copied()
        .chain([BY_STATUS])
        .find(|v| v.as_bytes().eq_ignore_ascii_case(name))
}

/// Skips one value up to the comma that ends it; `Some(true)` when another assignment
/// follows, `Some(false)` at the end, `None` for what is not followed (user variables, a
/// second statement, an empty value).
fn value(tokens: &mut Tokens<'_>) -> Option<bool> {
    let mut depth = 0u32;
    let mut seen = false;
    loop {
        let Some(t) = tokens.next() else {
            return seen.then_some(false);
        };
        match t.kind {
            TokenKind::OpenParen => depth += 1,
            TokenKind::CloseParen => depth = depth.saturating_sub(1),
            TokenKind::Comma if depth == 0 => return seen.then_some(true),
            TokenKind::Semicolon | TokenKind::UserVar => return None,
            _ => {}
        }
        seen = true;
    }
}

/// The SQL literal that sets a variable to `value` as the server reported it: numbers as
/// they are, text in single quotes. `None` for text with a backslash, whose meaning would
/// depend on the connection's `sql_mode`.
pub fn literal(value: Option<&str>) -> Option<String> {
    let Some(value) = value else {
        return Some("NULL".into());
    };
    let digits = value.strip_prefix('-').unwrap_or(value);
    let numeric = !digits.is_empty()
        && digits.split('.').count() <= 2
        && digits.bytes().all(|c| c.is_ascii_digit() || c == b'.')
        && !digits.starts_with('.')
        && !digits.ends_with('.');
    if numeric {
        return Some(value.to_string());
    }
    if value.contains('\\') {
        return None;
    }
    Some(format!("'{}'", value.replace('\'', "''")))
}

/// The `SET` that brings a connection holding `from` to `to`: each variable that differs
/// set to the session's value, or back to `DEFAULT` where the session never set it.
/// `None` when nothing differs.
pub fn replay(from: &Values, to: &Values) -> Option<String> {
    if from == to {
        return None;
    }
    let mut parts = Vec::new();
    for (name, value) in to {
        if from.iter().find(|(n, _)| n == name).map(|(_, v)| v) != Some(value) {
            parts.push(format!("@@SESSION.{name} = {value}"));
        }
    }
    for (name, _) in from {
        if !to.iter().any(|(n, _)| n == name) {
            parts.push(format!("@@SESSION.{name} = DEFAULT"));
        }
    }
    Some(format!("SET {}", parts.join(", ")))
}

/// Records new values into `values`, keeping it sorted by name.
pub fn merge(values: &mut Values, new: impl IntoIterator<Item = (&'static str, String)>) {
    for (name, value) in new {
        match values.binary_search_by(|(n, _)| n.cmp(&name)) {
            Ok(i) => values[i].1 = value,
            Err(i) => values.insert(i, (name, value)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Option<Vec<&'static str>> {
        replayed_assignments(sql.as_bytes())
    }

    #[test]
    fn every_spelling_of_a_session_assignment_is_followed() {
        assert_eq!(names("SET sql_mode = 'ANSI'"), Some(vec!["sql_mode"]));
        assert_eq!(
            names("set SESSION time_zone='+00:00'"),
            Some(vec!["time_zone"])
        );
        assert_eq!(
            names("SET LOCAL sql_select_limit = 10"),
            Some(vec!["sql_select_limit"])
        );
        assert_eq!(
            names("SET @@session.sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), @@time_zone = 'UTC'"),
            Some(vec!["sql_mode", "time_zone"])
        );
        assert_eq!(
            names("SET @@SESSION.sql_auto_is_null = 0, SESSION group_concat_max_len := 1 << 20"),
            Some(vec!["sql_auto_is_null", "group_concat_max_len"])
        );
        assert_eq!(
            names("SET lc_time_names = 'de_DE'"),
            Some(vec!["lc_time_names"])
        );
    }

    #[test]
    fn anything_else_is_not() {
        for sql in [
            "SET GLOBAL sql_mode = ''",
            "SET @@global.time_zone = '+00:00'",
            "SET sql_mode = @saved",
            "SET @x = 1",
            "SET NAMES utf8mb4",
            "SET wait_timeout = 10",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET sql_mode = 'ANSI', wait_timeout = 0",
            "SET sql_mode = 'ANSI'; DROP TABLE t",
            "SET sql_mode =",
            "SET sql_mode",
            "SELECT 1",
            "SET",
        ] {
            assert_eq!(names(sql), None, "{sql}");
        }
    }

    #[test]
    fn values_become_literals_that_set_them_back() {
        assert_eq!(literal(Some("28800")).as_deref(), Some("28800"));
        assert_eq!(literal(Some("-1.5")).as_deref(), Some("-1.5"));
        assert_eq!(literal(Some("+05:00")).as_deref(), Some("'+05:00'"));
        assert_eq!(literal(Some("1.2.3")).as_deref(), Some("'1.2.3'"));
        assert_eq!(literal(Some("O'Brien")).as_deref(), Some("'O''Brien'"));
        assert_eq!(literal(Some("")).as_deref(), Some("''"));
        assert_eq!(literal(None).as_deref(), Some("NULL"));
        assert_eq!(literal(Some("a\\b")), None);
    }

    #[test]
    fn a_replay_sets_what_differs_and_defaults_what_the_session_never_set() {
        let mut conn = Values::new();
        merge(&mut conn, [("time_zone", "'+01:00'".to_string())]);
        merge(&mut conn, [("sql_mode", "'ANSI'".to_string())]);
        assert_eq!(conn[0].0, "sql_mode", "kept sorted");
        let mut session = Values::new();
        merge(&mut session, [("sql_mode", "'ANSI'".to_string())]);
        merge(&mut session, [("lc_time_names", "'de_DE'".to_string())]);
        assert_eq!(
            replay(&conn, &session).as_deref(),
            Some("SET @@SESSION.lc_time_names = 'de_DE', @@SESSION.time_zone = DEFAULT")
        );
        assert_eq!(replay(&session, &session), None);
    }
}
