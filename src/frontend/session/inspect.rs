//! What the session does with a statement's text before it goes anywhere: analyse it once,
//! walk the query rules, ask the firewall, look for injection shapes. A prepared
//! statement's text is inspected at its prepare and that inspection serves each of its
//! executes, until a reload brings other rules.

use std::sync::{Arc, LazyLock};

use crate::config::FirewallMode;
use crate::frontend::registry::Registry;
use crate::protocol::constants::capability::MULTI_STATEMENTS;
use crate::protocol::packets::ErrPacket;
use crate::rules::{
    format_digest, Analysis, Analyzer, Decision, Query, QueryRules, Suspicion, Verdict,
};
use crate::runtime::Runtime;

use super::Session;

/// What the inspection of one statement decided.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub analysis: Analysis,
    pub decision: Decision,
    pub verdict: Option<Verdict>,
    pub suspicion: Suspicion,
}

impl Plan {
    /// The refusal to send instead of running the statement, if any.
    pub(super) fn refusal(&self, runtime: &Runtime, user: &str) -> Option<ErrPacket> {
        if let Some((code, message)) = &self.decision.deny {
            return Some(ErrPacket {
                code: *code,
                sql_state: "HY000".into(),
                message: message.clone(),
            });
        }
        (self.verdict == Some(Verdict::Blocked)).then(|| ErrPacket {
            code: runtime.firewall_settings.error_code,
            sql_state: "HY000".into(),
            message: format!(
                "Statement refused by the firewall: digest {} is not on the allow list of user '{user}'",
                format_digest(self.analysis.digest)
            ),
        })
    }
}

/// A prepared statement's inspection, made at its prepare, used by each of its executes.
#[derive(Debug)]
pub(super) struct StatementPlan {
    pub plan: Plan,
    /// The digest text of the statement (an execute has no text of its own to analyse).
    pub digest_text: Vec<u8>,
    /// The rules it was walked against: a reload that brings others walks them anew.
    pub rules: Arc<QueryRules>,
}

/// What inspection made of a command.
#[derive(Debug, Default)]
pub(super) enum Inspected {
    /// Not a statement (COM_PING, COM_INIT_DB, …): nothing to inspect.
    #[default]
    Nothing,
    /// A text statement (a COM_QUERY, or a COM_STMT_PREPARE's text), inspected now; its
    /// digest text is the analyzer's.
    Now(Plan),
    /// A COM_STMT_EXECUTE: the inspection of its statement's text.
    Prepared(Arc<StatementPlan>),
}

static NOTHING: LazyLock<Plan> = LazyLock::new(Plan::default);

impl Inspected {
    pub(super) fn plan(&self) -> &Plan {
        match self {
            Inspected::Nothing => &NOTHING,
            Inspected::Now(plan) => plan,
            Inspected::Prepared(statement) => &statement.plan,
        }
    }

    /// The digest text of the statement: a prepared one's own, else the analyzer's (of
    /// the statement it analysed last, this one).
    pub(super) fn digest_text<'a>(&'a self, analyzer: &'a Analyzer) -> &'a [u8] {
        match self {
            Inspected::Prepared(statement) => &statement.digest_text,
            _ => analyzer.digest_text(),
        }
    }
}

impl Session {
    /// A statement of this session as the rules see it.
    pub(super) fn rule_query<'a>(
        &'a self,
        sql: &'a [u8],
        analysis: &'a Analysis,
        digest_text: &'a [u8],
        suspicious: bool,
    ) -> Query<'a> {
        Query {
            user: &self.user.config.name,
            schema: self.login.database.as_deref(),
            client: self.peer.ip(),
            sql,
            digest_text,
            analysis,
            suspicious,
        }
    }

    /// Analyses a statement (COM_QUERY or COM_STMT_PREPARE text) and decides about it.
    pub(super) fn inspect(&mut self, runtime: &Runtime, sql: &[u8]) -> Plan {
        let started = std::time::Instant::now();
        let plan = self.inspect_untimed(runtime, sql);
        let ns = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.frontend
            .counters
            .query_processor_ns
            .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
        plan
    }

    fn inspect_untimed(&mut self, runtime: &Runtime, sql: &[u8]) -> Plan {
        let analysis = self.analyzer.analyze(sql);
        let multi = self.capabilities & MULTI_STATEMENTS != 0;
        let digests = &self.frontend.digests;
        let suspicion = Suspicion::of(&analysis, multi, || digests.known(analysis.digest));
        let digest_text = self.analyzer.digest_text();
        let counters = &self.frontend.counters;
        if suspicion.any() {
            Registry::count(&counters.injection_flagged);
            tracing::warn!(
                peer = %self.peer,
                user = %self.user.config.name,
                digest = %format_digest(analysis.digest),
                digest_text = %String::from_utf8_lossy(digest_text),
                reasons = ?suspicion.reasons(),
                "statement with an injection shape"
            );
        }
        let decision =
            runtime
                .rules
                .evaluate(&self.rule_query(sql, &analysis, digest_text, suspicion.any()));
        let mode = self
            .user
            .config
            .firewall
            .unwrap_or(runtime.firewall_settings.mode);
        let verdict = (mode != FirewallMode::Off).then(|| {
            runtime
                .firewall
                .check(mode, &self.user.config.name, analysis.digest, digest_text)
        });
        match verdict {
            Some(Verdict::Learned) => Registry::count(&counters.firewall_learned),
            Some(Verdict::Blocked) => Registry::count(&counters.firewall_blocked),
            _ => {}
        }
        if decision.deny.is_some() {
            Registry::count(&counters.rule_refusals);
        }
        if verdict == Some(Verdict::Learned) {
            tracing::info!(
                user = %self.user.config.name,
                digest = %format_digest(analysis.digest),
                digest_text = %String::from_utf8_lossy(digest_text),
                "firewall learned a new statement shape (protect mode would refuse it)"
            );
        }
        Plan {
            analysis,
            decision,
            verdict,
            suspicion,
        }
    }

    /// Inspects a prepared statement's text, for its executes.
    pub(super) fn inspect_for_executes(&mut self, runtime: &Runtime, sql: &[u8]) -> StatementPlan {
        let plan = self.inspect(runtime, sql);
        StatementPlan {
            plan,
            digest_text: self.analyzer.digest_text().to_vec(),
            rules: runtime.rules.clone(),
        }
    }
}
