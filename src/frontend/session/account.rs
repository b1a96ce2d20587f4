//! After a statement: counting it in the digest statistics, the command counters and
//! the latency histograms, and writing its query log line. A COM_STMT_EXECUTE is counted
//! as the text it was prepared from.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use crate::config::QueryLogMode;
use crate::frontend::registry::Registry;
use crate::rules::format_digest;
use crate::rules::stats::{Execution, RowCounts, CACHE_HOSTGROUP};
use crate::runtime::Runtime;

use super::request::Request;
use super::Session;

/// How a statement ended, for statistics and the query log.
pub(super) struct Ran<'a> {
    /// Where it ran; `None` when it was refused or answered from the cache.
    pub hostgroup: Option<u32>,
    pub from_cache: bool,
    pub server: Option<&'a str>,
    pub duration: Duration,
    pub error: bool,
    pub rows: RowCounts,
}

impl Ran<'static> {
    /// The accounting of a statement that never reached a backend.
    pub(super) fn refused(request: &Request) -> Ran<'static> {
        Ran {
            hostgroup: None,
            from_cache: false,
            server: None,
            duration: request.started.elapsed(),
            error: true,
            rows: RowCounts::default(),
        }
    }

    /// The accounting of a statement answered from the query cache.
    pub(super) fn from_cache(request: &Request) -> Ran<'static> {
        Ran {
            hostgroup: None,
            from_cache: true,
            server: None,
            duration: request.started.elapsed(),
            error: false,
            rows: RowCounts::default(),
        }
    }
}

impl Session {
    /// Counts a statement in the digest statistics and writes its query log line.
    pub(super) fn account(&mut self, runtime: &Runtime, request: &Request, ran: Ran<'_>) {
        let plan = request.plan();
        let counters = &self.frontend.counters;
        counters.statement(plan.analysis.kind, plan.analysis.command, ran.duration);
        if plan.analysis.features.set_names_only {
            Registry::count(&counters.set_names);
        }
        if ran.duration.as_millis() > u128::from(runtime.proxy.long_query_time_ms) {
            Registry::count(&counters.slow_queries);
        }
        if let Some(hostgroup) = ran.hostgroup {
            let ns = ran.duration.as_nanos().min(u128::from(u64::MAX)) as u64;
            counters.backend_query_ns.fetch_add(ns, Ordering::Relaxed);
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
                rows: ran.rows,
            };
            let text = || request.inspected.digest_text(&self.analyzer).to_vec();
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
            log.write(self.log_line(request, &ran, schema));
        }
    }

    /// The latency histogram of `hostgroup`, looked up once per session and hostgroup.
    fn latency(&mut self, hostgroup: u32) -> &prometheus::Histogram {
        let i = match self.histograms.iter().position(|(id, _)| *id == hostgroup) {
            Some(i) => i,
            None => {
                let h = self.frontend.latencies.hostgroup_histogram(hostgroup);
                self.histograms.push((hostgroup, h));
                self.histograms.len() - 1
            }
        };
        &self.histograms[i].1
    }

    fn log_line(&self, request: &Request, ran: &Ran<'_>, schema: &str) -> String {
        let plan = request.plan();
        serde_json::json!({
            "time": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "user": self.user.config.name,
            "client": client(self.peer),
            "schema": schema,
            "kind": plan.analysis.kind.name(),
            "digest": format_digest(plan.analysis.digest),
            "digest_text": String::from_utf8_lossy(request.inspected.digest_text(&self.analyzer)),
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
