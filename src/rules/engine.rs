//! Query rules, ProxySQL's way: an ordered list, each matching on who sends what, each
//! acting (route, rewrite, deny, log, time out) and either stopping the walk (`apply`) or
//! handing on to the rules of another flag (`flag_out`). Compiled once per configuration
//! snapshot; evaluating them allocates nothing unless a rule rewrites.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::analysis::{Analysis, Kind};
use crate::config::QueryRule;

/// The error code of a denial when the rule names none (ProxySQL's).
pub const DEFAULT_DENY_CODE: u16 = 1148;

/// A statement as the rules see it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub user: &'a str,
    pub schema: Option<&'a str>,
    pub client: IpAddr,
    pub sql: &'a [u8],
    pub digest_text: &'a [u8],
    pub analysis: &'a Analysis,
    /// The statement shows an injection shape (see [`super::injection`]).
    pub suspicious: bool,
}

/// What the matching rules decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Send the statement to this hostgroup.
    pub hostgroup: Option<u32>,
    /// Send this text instead of the client's.
    pub rewritten: Option<Vec<u8>>,
    /// Refuse the statement with this error code and message.
    pub deny: Option<(u16, String)>,
    /// Write the statement to the query log even when only logging of rule hits is on.
    pub log: bool,
    /// Kill the statement on its backend after this long.
    pub timeout_ms: Option<u64>,
    /// Answer the statement from the query cache, and cache its result this long (ms).
    pub cache_ttl: Option<u64>,
    /// Whether a result without rows may be cached (`None`: the global setting).
    pub cache_empty_result: Option<bool>,
    /// Send a copy of the statement here once the client has its answer.
    pub mirror: Option<MirrorTo>,
    /// The last rule that matched (for logs).
    pub last_rule: Option<u32>,
}

/// Where a statement's copy goes: a hostgroup, and the flag its copy walks the rules
/// from again (ProxySQL's `mirror_flagOUT`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorTo {
    pub hostgroup: Option<u32>,
    pub flag: Option<u32>,
}

/// A rule ready to match.
struct Compiled {
    id: u32,
    flag_in: u32,
    flag_out: Option<u32>,
    username: Option<String>,
    schemaname: Option<String>,
    client: Option<IpNet>,
    digest: Option<u64>,
    /// Index into the digest regex set.
    match_digest: Option<usize>,
    /// Index into the pattern regex set, and the regex itself (for text rewritten by an
    /// earlier rule, and for replacing).
    match_pattern: Option<(usize, Regex)>,
    negate_pattern: bool,
    kinds: Vec<Kind>,
    sql_injection: Option<bool>,
    destination_hostgroup: Option<u32>,
    replace_pattern: Option<Vec<u8>>,
    error: Option<(u16, String)>,
    log: bool,
    timeout_ms: Option<u64>,
    cache_ttl: Option<u64>,
    cache_empty_result: Option<bool>,
    mirror: Option<MirrorTo>,
    apply: bool,
}

/// The active rules of one configuration snapshot, in `rule_id` order, with their hit
/// counters.
#[derive(Default)]
pub struct QueryRules {
    rules: Vec<Compiled>,
    digest_set: Option<RegexSet>,
    pattern_set: Option<RegexSet>,
    hits: Vec<AtomicU64>,
}

impl QueryRules {
    /// Memory the rules hold: their structures and the texts of their patterns (the
    /// compiled automata are the regex crate's and not counted).
    pub fn memory_bytes(&self) -> usize {
        self.rules
            .iter()
            .map(|r| {
                std::mem::size_of::<Compiled>()
                    + r.match_pattern
                        .as_ref()
                        .map_or(0, |(_, re)| re.as_str().len())
                    + r.username.as_ref().map_or(0, String::capacity)
                    + r.schemaname.as_ref().map_or(0, String::capacity)
            })
            .sum::<usize>()
            + self.hits.len() * std::mem::size_of::<AtomicU64>()
    }
}

impl std::fmt::Debug for QueryRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryRules")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// A rule that cannot be compiled: which key of which rule, and why.
pub type RuleError = (String, String);

fn regex(pattern: &str, case_sensitive: bool) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .case_insensitive(!case_sensitive)
        .build()
        .map_err(|e| e.to_string())
}

impl QueryRules {
    /// Compiles the active rules; `rules` are config entries (any order).
    pub fn compile(rules: &[QueryRule]) -> Result<QueryRules, RuleError> {
        let mut ordered: Vec<(usize, &QueryRule)> =
            rules.iter().enumerate().filter(|(_, r)| r.active).collect();
        ordered.sort_by_key(|(_, r)| r.rule_id);
        let mut digest_patterns = Vec::new();
        let mut text_patterns = Vec::new();
        let mut compiled = Vec::with_capacity(ordered.len());
        for (i, rule) in ordered {
            let key = |field: &str| format!("query_rules[{i}].{field}");
            compiled.push(compile_one(
                rule,
                &key,
                &mut digest_patterns,
                &mut text_patterns,
            )?);
        }
        let set = |patterns: &[(String, bool)]| -> Option<RegexSet> {
            if patterns.is_empty() {
                return None;
            }
            // One set cannot mix case sensitivities: patterns carry their own flag.
            let inline: Vec<String> = patterns
                .iter()
                .map(|(p, cs)| if *cs { p.clone() } else { format!("(?i:{p})") })
                .collect();
            Some(
                RegexSetBuilder::new(inline)
                    .build()
                    .expect("each pattern compiled alone"),
            )
        };
        Ok(QueryRules {
            hits: compiled.iter().map(|_| AtomicU64::new(0)).collect(),
            digest_set: set(&digest_patterns),
            pattern_set: set(&text_patterns),
            rules: compiled,
        })
    }

    /// Whether there is nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Hits per rule id, in rule order.
    pub fn hits(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.rules
            .iter()
            .zip(&self.hits)
            .map(|(r, h)| (r.id, h.load(Ordering::Relaxed)))
    }

    /// Walks the rules for one statement.
    pub fn evaluate(&self, query: &Query<'_>) -> Decision {
        self.evaluate_from(query, 0)
    }

    /// Walks the rules from `flag` (0 for a client's statement; a mirror's copy starts at
    /// its rule's `mirror_flagOUT`).
    pub fn evaluate_from(&self, query: &Query<'_>, start: u32) -> Decision {
        let mut decision = Decision::default();
        if self.rules.is_empty() {
            return decision;
        }
        let digest_hits = self
            .digest_set
            .as_ref()
            .map(|s| s.matches(query.digest_text));
        let mut pattern_hits = self.pattern_set.as_ref().map(|s| s.matches(query.sql));
        let mut flag = start;
        for (rule, hits) in self.rules.iter().zip(&self.hits) {
            if rule.flag_in != flag {
                continue;
            }
            let text = decision.rewritten.as_deref().unwrap_or(query.sql);
            let pattern_matched = rule
                .match_pattern
                .as_ref()
                .map(|(i, re)| match &pattern_hits {
                    Some(hits) if decision.rewritten.is_none() => hits.matched(*i),
                    _ => re.is_match(text),
                });
            let digest_matched = rule
                .match_digest
                .map(|i| digest_hits.as_ref().is_some_and(|h| h.matched(i)));
            if !rule.matches(query, digest_matched, pattern_matched) {
                continue;
            }
            hits.fetch_add(1, Ordering::Relaxed);
            decision.last_rule = Some(rule.id);
            if let Some(out) = rule.flag_out {
                flag = out;
            }
            if let (Some(replacement), Some((_, re))) = (&rule.replace_pattern, &rule.match_pattern)
            {
                let replaced = re.replace_all(text, replacement.as_slice()).into_owned();
                decision.rewritten = Some(replaced);
                pattern_hits = None;
            }
            decision.hostgroup = rule.destination_hostgroup.or(decision.hostgroup);
            decision.timeout_ms = rule.timeout_ms.or(decision.timeout_ms);
            decision.cache_ttl = rule.cache_ttl.or(decision.cache_ttl);
            decision.cache_empty_result = rule.cache_empty_result.or(decision.cache_empty_result);
            decision.mirror = rule.mirror.or(decision.mirror);
            decision.log |= rule.log;
            if let Some(error) = &rule.error {
                decision.deny = Some(error.clone());
                return decision;
            }
            if rule.apply {
                break;
            }
        }
        decision
    }
}

impl Compiled {
    fn matches(&self, q: &Query<'_>, digest: Option<bool>, pattern: Option<bool>) -> bool {
        self.username.as_deref().is_none_or(|u| u == q.user)
            && self
                .schemaname
                .as_deref()
                .is_none_or(|s| Some(s) == q.schema)
            && self.client.is_none_or(|net| net.contains(&q.client))
            && self.digest.is_none_or(|d| d == q.analysis.digest)
            && (self.kinds.is_empty() || self.kinds.contains(&q.analysis.kind))
            && self.sql_injection.is_none_or(|s| s == q.suspicious)
            && digest.unwrap_or(true)
            && pattern.is_none_or(|m| m != self.negate_pattern)
    }
}

fn compile_one(
    rule: &QueryRule,
    key: &dyn Fn(&str) -> String,
    digest_patterns: &mut Vec<(String, bool)>,
    text_patterns: &mut Vec<(String, bool)>,
) -> Result<Compiled, RuleError> {
    let cs = rule.case_sensitive;
    let match_digest = match &rule.match_digest {
        Some(p) => {
            regex(p, cs).map_err(|e| (key("match_digest"), e))?;
            digest_patterns.push((p.clone(), cs));
            Some(digest_patterns.len() - 1)
        }
        None => None,
    };
    let match_pattern = match &rule.match_pattern {
        Some(p) => {
            let re = regex(p, cs).map_err(|e| (key("match_pattern"), e))?;
            text_patterns.push((p.clone(), cs));
            Some((text_patterns.len() - 1, re))
        }
        None => None,
    };
    if rule.replace_pattern.is_some() && match_pattern.is_none() {
        return Err((
            key("replace_pattern"),
            "needs match_pattern (the text it replaces)".into(),
        ));
    }
    let client = match &rule.client_addr {
        Some(a) => Some(parse_net(a).ok_or_else(|| {
            (
                key("client_addr"),
                format!("{a:?} is not an address or CIDR network"),
            )
        })?),
        None => None,
    };
    let digest = match &rule.digest {
        Some(d) => Some(parse_digest(d).ok_or_else(|| {
            (
                key("digest"),
                format!("{d:?} is not a digest (0x and up to 16 hex digits)"),
            )
        })?),
        None => None,
    };
    let error = rule
        .error_msg
        .clone()
        .map(|m| (rule.error_code.unwrap_or(DEFAULT_DENY_CODE), m));
    if rule.error_code.is_some() && error.is_none() {
        return Err((key("error_code"), "needs error_msg".into()));
    }
    Ok(Compiled {
        id: rule.rule_id,
        flag_in: rule.flag_in,
        flag_out: rule.flag_out,
        username: rule.username.clone(),
        schemaname: rule.schemaname.clone(),
        client,
        digest,
        match_digest,
        match_pattern,
        negate_pattern: rule.negate_match_pattern,
        kinds: rule.statement_kind.clone(),
        sql_injection: rule.sql_injection,
        destination_hostgroup: rule.destination_hostgroup,
        replace_pattern: rule.replace_pattern.clone().map(String::into_bytes),
        error,
        log: rule.log,
        timeout_ms: rule.timeout_ms,
        cache_ttl: rule.cache_ttl,
        cache_empty_result: rule.cache_empty_result,
        mirror: (rule.mirror_hostgroup.is_some() || rule.mirror_flag_out.is_some()).then_some(
            MirrorTo {
                hostgroup: rule.mirror_hostgroup,
                flag: rule.mirror_flag_out,
            },
        ),
        apply: rule.apply,
    })
}

/// `10.0.0.0/8` or a single address.
fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A digest as shown in logs and the admin port: `0x` and hex digits.
pub fn parse_digest(text: &str) -> Option<u64> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// How digests are written: `0x` and 16 upper-case hex digits, as ProxySQL shows them.
pub fn format_digest(digest: u64) -> String {
    format!("0x{digest:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Analyzer;

    fn rules(toml_rules: &str) -> QueryRules {
        #[derive(serde::Deserialize)]
        struct Rules {
            query_rules: Vec<QueryRule>,
        }
        let parsed: Rules = toml::from_str(toml_rules).expect("rules parse");
        QueryRules::compile(&parsed.query_rules).expect("rules compile")
    }

    fn decide(rules: &QueryRules, user: &str, client: &str, sql: &str) -> Decision {
        let mut analyzer = Analyzer::default();
        let analysis = analyzer.analyze(sql.as_bytes());
        rules.evaluate(&Query {
            user,
            schema: Some("shop"),
            client: client.parse().unwrap(),
            sql: sql.as_bytes(),
            digest_text: analyzer.digest_text(),
            analysis: &analysis,
            suspicious: false,
        })
    }

    #[test]
    fn rules_match_on_every_field_and_act_in_order() {
        let r = rules(
            r#"
            [[query_rules]]
            rule_id = 30
            match_digest = "^SELECT .* FOR UPDATE$"
            destination_hostgroup = 10
            apply = true
            [[query_rules]]
            rule_id = 10
            username = "report"
            client_addr = "10.0.0.0/8"
            statement_kind = ["select"]
            destination_hostgroup = 20
            [[query_rules]]
            rule_id = 20
            match_pattern = "^DELETE FROM orders"
            error_msg = "no deleting orders"
            [[query_rules]]
            rule_id = 40
            schemaname = "other"
            error_msg = "never: wrong schema"
            "#,
        );
        let d = decide(
            &r,
            "report",
            "10.1.2.3",
            "select * from orders where id = 1",
        );
        assert_eq!((d.hostgroup, d.last_rule), (Some(20), Some(10)));
        let d = decide(
            &r,
            "report",
            "192.168.0.1",
            "select * from orders where id = 1",
        );
        assert_eq!(d.hostgroup, None, "client outside the network");
        let d = decide(
            &r,
            "app",
            "10.1.2.3",
            "SELECT * FROM orders WHERE id = 1 FOR UPDATE",
        );
        assert_eq!((d.hostgroup, d.last_rule), (Some(10), Some(30)));
        let d = decide(&r, "app", "10.1.2.3", "delete from orders where id = 7");
        assert_eq!(
            d.deny,
            Some((1148, "no deleting orders".to_string())),
            "caseless by default"
        );
        let hits: Vec<(u32, u64)> = r.hits().collect();
        assert_eq!(hits, [(10, 1), (20, 1), (30, 1), (40, 0)]);
    }

    #[test]
    fn rewrite_uses_capture_groups_and_later_rules_see_the_new_text() {
        let r = rules(
            r#"
            [[query_rules]]
            rule_id = 1
            match_pattern = "FROM sales_(\\d+)"
            replace_pattern = "FROM archive.sales_$1"
            [[query_rules]]
            rule_id = 2
            match_pattern = "archive\\."
            destination_hostgroup = 30
            "#,
        );
        let d = decide(
            &r,
            "app",
            "127.0.0.1",
            "SELECT SUM(x) FROM sales_2019 WHERE y = 1",
        );
        assert_eq!(
            d.rewritten.as_deref(),
            Some(&b"SELECT SUM(x) FROM archive.sales_2019 WHERE y = 1"[..])
        );
        assert_eq!(d.hostgroup, Some(30));
    }

    #[test]
    fn flags_chain_rules_and_negation_inverts_the_pattern() {
        let r = rules(
            r#"
            [[query_rules]]
            rule_id = 1
            username = "etl"
            flag_out = 100
            [[query_rules]]
            rule_id = 2
            flag_in = 100
            match_pattern = "^SELECT"
            negate_match_pattern = true
            error_msg = "etl may only read"
            error_code = 1142
            [[query_rules]]
            rule_id = 3
            match_pattern = "^SELECT"
            negate_match_pattern = true
            log = true
            "#,
        );
        let d = decide(&r, "etl", "127.0.0.1", "UPDATE t SET a = 1");
        assert_eq!(d.deny.map(|(code, _)| code), Some(1142));
        let d = decide(&r, "etl", "127.0.0.1", "SELECT 1");
        assert!(
            d.deny.is_none() && !d.log,
            "flag 100: rule 3 (flag 0) is not considered"
        );
        let d = decide(&r, "app", "127.0.0.1", "UPDATE t SET a = 1");
        assert!(d.deny.is_none() && d.log);
    }

    #[test]
    fn cache_and_mirror_settings_come_from_the_rules_that_matched() {
        let r = rules(
            r#"
            [[query_rules]]
            rule_id = 1
            match_digest = "^SELECT"
            cache_ttl = 5000
            flag_out = 7
            [[query_rules]]
            rule_id = 2
            flag_in = 7
            match_pattern = "FROM big"
            cache_empty_result = false
            cache_ttl = 100
            [[query_rules]]
            rule_id = 3
            match_pattern = "^INSERT INTO orders"
            mirror_hostgroup = 40
            mirror_flagOUT = 9
            [[query_rules]]
            rule_id = 4
            flag_in = 9
            match_pattern = "orders"
            replace_pattern = "orders_copy"
            destination_hostgroup = 41
            "#,
        );
        let d = decide(&r, "a", "127.0.0.1", "SELECT x FROM small");
        assert_eq!((d.cache_ttl, d.cache_empty_result), (Some(5000), None));
        let d = decide(&r, "a", "127.0.0.1", "SELECT x FROM big");
        assert_eq!(
            (d.cache_ttl, d.cache_empty_result),
            (Some(100), Some(false))
        );
        let d = decide(&r, "a", "127.0.0.1", "INSERT INTO orders VALUES (1)");
        let mirror = d.mirror.expect("mirrored");
        assert_eq!(
            (mirror.hostgroup, mirror.flag, d.rewritten),
            (Some(40), Some(9), None)
        );
        // the copy walks from flag 9 only: rule 4 rewrites it and sends it elsewhere
        let mut analyzer = Analyzer::default();
        let sql = b"INSERT INTO orders VALUES (1)";
        let analysis = analyzer.analyze(sql);
        let copy = r.evaluate_from(
            &Query {
                user: "a",
                schema: None,
                client: "127.0.0.1".parse().unwrap(),
                sql,
                digest_text: analyzer.digest_text(),
                analysis: &analysis,
                suspicious: false,
            },
            9,
        );
        assert_eq!(
            (copy.rewritten.as_deref(), copy.hostgroup, copy.mirror),
            (
                Some(&b"INSERT INTO orders_copy VALUES (1)"[..]),
                Some(41),
                None
            )
        );
    }

    #[test]
    fn digests_match_by_hash() {
        let mut analyzer = Analyzer::default();
        let digest = analyzer.analyze(b"SELECT c FROM t WHERE id = 5").digest;
        let r = rules(&format!(
            "[[query_rules]]\nrule_id = 1\ndigest = \"{}\"\ntimeout_ms = 250\n",
            format_digest(digest)
        ));
        assert_eq!(
            decide(&r, "a", "127.0.0.1", "SELECT c FROM t WHERE id = 99").timeout_ms,
            Some(250)
        );
        assert_eq!(
            decide(&r, "a", "127.0.0.1", "SELECT c FROM t WHERE id > 99").timeout_ms,
            None
        );
        assert_eq!(parse_digest(&format_digest(digest)), Some(digest));
    }

    #[test]
    fn bad_rules_are_refused_with_their_key() {
        #[derive(serde::Deserialize)]
        struct Rules {
            query_rules: Vec<QueryRule>,
        }
        for (text, key) in [
            (
                "rule_id = 1\nmatch_pattern = \"(\"",
                "query_rules[0].match_pattern",
            ),
            (
                "rule_id = 1\nmatch_digest = \"[\"",
                "query_rules[0].match_digest",
            ),
            (
                "rule_id = 1\nreplace_pattern = \"x\"",
                "query_rules[0].replace_pattern",
            ),
            (
                "rule_id = 1\nclient_addr = \"10.0.0.0/40\"",
                "query_rules[0].client_addr",
            ),
            ("rule_id = 1\ndigest = \"12345\"", "query_rules[0].digest"),
            (
                "rule_id = 1\nerror_code = 1000",
                "query_rules[0].error_code",
            ),
        ] {
            let parsed: Rules = toml::from_str(&format!("[[query_rules]]\n{text}")).unwrap();
            let err = QueryRules::compile(&parsed.query_rules).unwrap_err();
            assert_eq!(err.0, key, "{text}: {}", err.1);
        }
    }
}
