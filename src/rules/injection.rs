//! SQL-injection shapes: things an application's own statements do not normally contain.
//! A flag is a hint, logged and counted; rules decide whether it blocks (`sql_injection`).

use super::analysis::Analysis;

/// Which injection shapes a statement shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Suspicion {
    /// An always-true condition: `OR 1=1`, `OR 'a'='a'`.
    pub tautology: bool,
    /// More than one statement from a client that did not ask for multi-statements.
    pub stacked: bool,
    /// A comment that cuts the statement short (`… 'x' -- …`), or one left open.
    pub comment_truncation: bool,
    /// `UNION SELECT` in a statement shape never seen before.
    pub new_union_select: bool,
}

impl Suspicion {
    /// Looks at one analysed statement. `seen_before` says whether its digest is known
    /// (asked only for `UNION SELECT`s).
    pub fn of(
        analysis: &Analysis,
        multi_statements_allowed: bool,
        seen_before: impl FnOnce() -> bool,
    ) -> Suspicion {
        let f = &analysis.features;
        Suspicion {
            tautology: f.tautology,
            stacked: analysis.multi_statement && !multi_statements_allowed,
            comment_truncation: f.trailing_comment,
            new_union_select: f.union_select && !seen_before(),
        }
    }

    /// Any shape at all.
    pub fn any(&self) -> bool {
        self.tautology || self.stacked || self.comment_truncation || self.new_union_select
    }

    /// The shapes, by name, for logs.
    pub fn reasons(&self) -> Vec<&'static str> {
        [
            (self.tautology, "tautology"),
            (self.stacked, "stacked_statements"),
            (self.comment_truncation, "comment_truncation"),
            (self.new_union_select, "new_union_select"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Analyzer;

    fn inspect(sql: &str, multi: bool, seen: bool) -> Suspicion {
        Suspicion::of(&Analyzer::default().analyze(sql.as_bytes()), multi, || seen)
    }

    #[test]
    fn shapes_are_named() {
        let s = inspect("SELECT * FROM u WHERE n = '' OR '1'='1'", false, false);
        assert_eq!(s.reasons(), ["tautology"]);
        assert!(inspect("SELECT 1; DROP TABLE u", false, false).stacked);
        assert!(!inspect("SELECT 1; DROP TABLE u", true, false).stacked);
        let s = inspect(
            "SELECT * FROM u WHERE id = 1 UNION SELECT pw FROM m",
            true,
            false,
        );
        assert!(s.new_union_select && s.any());
        assert!(!inspect("SELECT a FROM u UNION SELECT a FROM m", true, true).any());
        assert!(
            inspect("SELECT * FROM u WHERE n = 'a'-- ' AND p = ''", true, true).comment_truncation
        );
        assert!(!inspect("SELECT * FROM u WHERE a = 'x' OR b = 'y'", false, false).any());
    }
}
