//! The session's side of mirroring (see `frontend::mirror` for the queue and the copies'
//! runs): after the client has its own answer, the copy the rules asked for.

use std::sync::atomic::Ordering;

use crate::frontend::mirror::MirrorCopy;
use crate::runtime::Runtime;

use super::request::Request;
use super::Session;

impl Session {
    /// The session's side: after the client has its answer, queues the copy the rules
    /// asked for. A copy walks the rules again from its `mirror_flagOUT` (which may rewrite
    /// or route it; a refusal there means no copy); it goes to the hostgroup that walk
    /// named, else `mirror_hostgroup`, else the user's default. Statements inside a
    /// transaction are not mirrored: run alone on the mirror, a write the client later
    /// rolls back would stay there.
    /// Only text statements are mirrored: an execute's copy would have to be prepared on
    /// the mirror first.
    pub(super) fn mirror(&self, runtime: &Runtime, request: &Request, in_transaction: bool) {
        let plan = request.plan();
        let Some(to) = plan.decision.mirror else {
            return;
        };
        let stats = &self.frontend.mirror.stats;
        if in_transaction || self.routing.in_transaction {
            stats.skipped_in_transaction.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (sql, effects) = (request.body(), request.effects);
        let digest_text = request.inspected.digest_text(&self.analyzer);
        let (text, hostgroup) = match to.flag {
            Some(flag) => {
                let query = self.rule_query(sql, &plan.analysis, plan.suspicion.any());
                let copy = runtime.rules.evaluate_from(&query, flag);
                if copy.deny.is_some() {
                    return;
                }
                (
                    copy.rewritten.unwrap_or_else(|| sql.to_vec()),
                    copy.hostgroup.or(to.hostgroup),
                )
            }
            None => (sql.to_vec(), to.hostgroup),
        };
        let copy = MirrorCopy {
            hostgroup: hostgroup.unwrap_or(self.user.config.default_hostgroup),
            login: self.login.clone(),
            names: self.names.clone(),
            variables: self.variables.clone(),
            sql: text,
            digest: plan.analysis.digest,
            digest_text: digest_text.to_vec(),
            clean: !effects.binds && !effects.writes,
        };
        self.frontend
            .mirror
            .enqueue(copy, runtime.config.mirror.max_queue);
    }
}
