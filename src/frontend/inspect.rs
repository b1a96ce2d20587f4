//! What the session does with a statement's text before it goes anywhere: analyse it once,
//! walk the query rules, ask the firewall, look for injection shapes; and afterwards,
//! count it in the digest statistics and write the query log line.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::config::{FirewallMode, QueryLogMode};
use crate::protocol::constants::capability::MULTI_STATEMENTS;
use crate::protocol::packets::ErrPacket;
use crate::rules::stats::{Execution, CACHE_HOSTGROUP};
use crate::rules::{format_digest, Analysis, Decision, Query, Suspicion, Verdict};
use crate::runtime::Runtime;

use super::registry::Registry;
use super::session::Session;

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

/// How a statement ended, for statistics and the query log.
pub(super) struct Ran<'a> {
    /// Where it ran; `None` when it was refused or answered from the cache.
    pub hostgroup: Option<u32>,
    pub from_cache: bool,
    pub server: Option<&'a str>,
    pub duration: Duration,
    pub error: bool,
}

impl Session {
    /// A statement of this session as the rules see it; the digest text is the analyzer's
    /// (of the statement it analysed last).
    pub(super) fn rule_query<'a>(
        &'a self,
        sql: &'a [u8],
        analysis: &'a Analysis,
        suspicious: bool,
    ) -> Query<'a> {
        Query {
            user: &self.user.config.name,
            schema: self.login.database.as_deref(),
            client: self.peer.ip(),
            sql,
            digest_text: self.analyzer.digest_text(),
            analysis,
            suspicious,
        }
    }

    /// Analyses a statement (COM_QUERY or COM_STMT_PREPARE text) and decides about it.
    pub(super) fn inspect(&mut self, runtime: &Runtime, sql: &[u8]) -> Plan {
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
        let decision = runtime
            .rules
            .evaluate(&self.rule_query(sql, &analysis, suspicion.any()));
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

    /// Counts a statement in the digest statistics and writes its query log line.
    pub(super) fn account(&mut self, runtime: &Runtime, plan: &Plan, ran: Ran<'_>) {
        self.frontend
            .counters
            .statement(plan.analysis.kind, ran.duration);
        if let Some(hostgroup) = ran.hostgroup {
            self.latency(hostgroup).observe(ran.duration.as_secs_f64());
        }
        let schema = self.login.database.as_deref().unwrap_or_default();
        let recorded = match ran.hostgroup {
            Some(hostgroup) => Some(i64::from(hostgroup)),
            None if ran.from_cache => Some(CACHE_HOSTGROUP),
            None => None,
        };
        if let Some(hostgroup) = recorded {
            let execution = Execution {
                user: &self.user.config.name,
                schema,
                hostgroup,
                duration: ran.duration,
                error: ran.error,
            };
            let text = || self.analyzer.digest_text().to_vec();
            self.frontend
                .digests
                .record(plan.analysis.digest, text, execution);
        }
        let Some(log) = &runtime.query_log else {
            return;
        };
        let refused = recorded.is_none();
        let wanted = match log.settings().mode {
            QueryLogMode::All => true,
            QueryLogMode::Rules => plan.decision.log || refused || plan.suspicion.any(),
            QueryLogMode::Off => false,
        };
        if wanted {
            log.write(self.log_line(plan, &ran, schema));
        }
    }

    /// The latency histogram of `hostgroup`, looked up once per session and hostgroup.
    fn latency(&mut self, hostgroup: u32) -> &prometheus::Histogram {
        let i = match self.histograms.iter().position(|(id, _)| *id == hostgroup) {
            Some(i) => i,
            None => {
                let h = self.frontend.metrics.hostgroup_histogram(hostgroup);
                self.histograms.push((hostgroup, h));
                self.histograms.len() - 1
            }
        };
        &self.histograms[i].1
    }

    fn log_line(&self, plan: &Plan, ran: &Ran<'_>, schema: &str) -> String {
        serde_json::json!({
            "time": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "user": self.user.config.name,
            "client": client(self.peer),
            "schema": schema,
            "kind": plan.analysis.kind.name(),
            "digest": format_digest(plan.analysis.digest),
            "digest_text": String::from_utf8_lossy(self.analyzer.digest_text()),
            "hostgroup": ran.hostgroup.map(i64::from).or(ran.from_cache.then_some(CACHE_HOSTGROUP)),
            "server": ran.server,
            "duration_us": ran.duration.as_micros() as u64,
            "error": ran.error,
            "rule": plan.decision.last_rule,
            "refused": ran.hostgroup.is_none(),
            "firewall": plan.verdict.map(|v| format!("{v:?}").to_lowercase()),
            "injection": plan.suspicion.reasons(),
        })
        .to_string()
    }
}

fn client(peer: SocketAddr) -> String {
    peer.to_string()
}
