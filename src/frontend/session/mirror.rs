//! The session's side of mirroring (see `frontend::mirror` for the queue and the copies'
//! runs): after the client has its own answer, the copy the rules asked for.

use std::sync::atomic::Ordering;

use crate::frontend::mirror::MirrorCopy;
use crate::protocol::statement::ExecuteLayout;
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
    /// An execute's copy is prepared on the mirror from its statement's text and run with
    /// the execute's parameters.
    pub(super) fn mirror(&self, runtime: &Runtime, request: &Request, in_transaction: bool) {
        let plan = request.plan();
        let Some(to) = plan.decision.mirror else {
            return;
        };
        let stats = &self.frontend.mirror.stats;
        if in_transaction || self.routing.in_any_transaction() {
            stats.skipped_in_transaction.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let execute = match request.prepared {
            Some(id) => match self.execute_parameters(request, id) {
                Some(parameters) => Some((id, parameters)),
                None => return,
            },
            None => None,
        };
        let sql = match execute {
            Some((id, _)) => &self.statements.by_id[&id].prepared.text[..],
            None => request.body(),
        };
        let effects = request.effects;
        let digest_text = request.inspected.digest_text(&self.analyzer);
        let (text, hostgroup) = match to.flag {
            Some(flag) => {
                let suspicious = plan.suspicion.any();
                let query = self.rule_query(sql, &plan.analysis, digest_text, suspicious);
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
            execute: execute.map(|(_, parameters)| parameters),
            digest: plan.analysis.digest,
            digest_text: digest_text.to_vec(),
            clean: !effects.binds && !effects.writes,
        };
        self.frontend
            .mirror
            .enqueue(copy, runtime.config.mirror.max_queue);
    }

    /// What follows the statement id in an execute, with the parameter types in it (the
    /// client may have left them out, relying on the ones it bound before). `None` when
    /// the execute cannot be read.
    fn execute_parameters(&self, request: &Request, id: u32) -> Option<Vec<u8>> {
        let statement = self.statements.by_id.get(&id)?;
        let payload = request.packet.first_frame();
        let layout = ExecuteLayout::parse(payload, statement.prepared.params).ok()?;
        let whole = match (&layout.types, layout.bound_flag_at, &statement.types) {
            (None, Some(_), Some(bound)) => layout.with_types(payload, bound)?,
            (None, Some(_), None) => return None,
            _ => payload.to_vec(),
        };
        Some(whole[5..].to_vec())
    }
}
