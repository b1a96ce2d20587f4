//! A statement whose transaction a deadlock rolled back runs again.
//!
//! ERR 1213 (ER_LOCK_DEADLOCK) — InnoDB chose the transaction as a deadlock's victim, or
//! Galera aborted it for a conflicting write set of another node — means the server rolled
//! the whole transaction back: nothing of it took effect, not even a COMMIT that got it.
//! The application would start over; the proxy can do that for it, as MaxScale's
//! `transaction_replay_retry_on_deadlock` does. On the same connection it replays the
//! record of the transaction open before the statement (each answer compared with the
//! first time's, see `replay`), then sends the statement again. An autocommit statement has
//! no record: it is only sent again. When the record cannot be replayed, or an answer
//! differs, the transaction is rolled back and the client gets the deadlock as the server
//! said it, as without the proxy. Sessions that do not replay transactions
//! (`transaction_replay = false`, or no `transaction_replay_max_size`) always get it.

use bytes::BytesMut;

use crate::frontend::registry::Registry;
use crate::protocol::constants::{command, status};
use crate::protocol::response::Outcome;
use crate::router::Target;

use super::replay::Refusal;
use super::{Failure, Session};

impl Session {
    /// The deadlock answer to the statement in flight on `target`, kept from the client by
    /// the relay: the caller runs the statement again when it may (`Failure::RolledBack`),
    /// else the client gets the answer now.
    pub(super) async fn deadlocked(
        &mut self,
        target: Target,
        answer: BytesMut,
    ) -> Result<bool, Failure> {
        if target == Target::Primary && self.replays() && self.transaction.rerunnable() {
            return Err(Failure::RolledBack(answer));
        }
        self.relay_deadlock(target, answer).await
    }

    /// After a deadlock rolled back the statement's transaction: replays the transaction's
    /// record on the same connection so that the statement can run again (Ok), unless
    /// `again` is false (it ran often enough). Otherwise the client gets its answer (the
    /// deadlock, unless the replay relayed an error of its own), and the error is the
    /// statement's outcome.
    pub(super) async fn rerun_after_deadlock(
        &mut self,
        answer: BytesMut,
        again: bool,
    ) -> Result<(), Result<bool, Failure>> {
        if !again {
            return Err(self.relay_deadlock(Target::Primary, answer).await);
        }
        let refusal = match self.replay_record().await {
            Ok(statements) => {
                Registry::count(&self.frontend.counters.deadlocks_retried);
                tracing::info!(peer = %self.peer, statements, "deadlock: the transaction was replayed on its connection; its statement runs again");
                return Ok(());
            }
            Err(refusal) => refusal,
        };
        tracing::info!(peer = %self.peer, reason = %refusal.reason(), "deadlock: the transaction could not be replayed; the client gets the deadlock");
        let rolled_back = match self.primary.as_mut() {
            Some(primary) => primary.run(command::QUERY, b"ROLLBACK").await.is_ok(),
            None => false,
        };
        self.transaction.forget();
        self.server_status &= !status::IN_TRANS;
        self.routing.in_transaction = self.server_status & status::AUTOCOMMIT == 0;
        let told = match refusal {
            Refusal::Client => return Err(Err(Failure::Client)),
            // the replay relayed an error of its own (a prepare that failed there)
            Refusal::Told => Ok(false),
            Refusal::Said(_) => self.relay_deadlock(Target::Primary, answer).await,
        };
        if rolled_back {
            return Err(told);
        }
        // the connection failed under the replay: whatever the session held there is gone
        self.primary = None;
        Err(match self.bound {
            true => told.and(Err(Failure::StateLost)),
            false => told,
        })
    }

    /// Relays the deadlock answer kept from the client, as the relay would have.
    pub(super) async fn relay_deadlock(
        &mut self,
        target: Target,
        answer: BytesMut,
    ) -> Result<bool, Failure> {
        let outcome = Outcome {
            status: None,
            error: true,
            warnings: 0,
        };
        self.last_outcome = Some(outcome);
        if target == Target::Primary {
            let max = self
                .frontend
                .shared
                .peek()
                .proxy
                .transaction_replay_max_size;
            self.transaction.answered(&outcome, None, max);
        }
        self.client.queue_wire(&answer);
        self.client.flush().await.map_err(|_| Failure::Client)?;
        Ok(false)
    }
}
