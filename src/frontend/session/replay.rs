//! Transaction replay: an open transaction whose writer connection is lost before its
//! COMMIT is sent runs again on the next writer, and the client goes on as if nothing had
//! happened.
//!
//! While a transaction is open on the session's primary connection, each statement run
//! there is recorded with a fingerprint of its answer (`ResponseTracker::
//! fingerprint_results`). When the connection is lost and what was in flight can be sent
//! again without doubt — a statement whose answer the client has not seen and whose loss
//! undid it (not a COMMIT, nor anything that commits by itself), or any statement that
//! never left the proxy — the session takes a connection to the writer of the moment,
//! brings it to the session's state, sends the record again, and compares each answer's
//! fingerprint with the first. All equal: the lost statement runs there. Anything else — an
//! answer that differs, a record over `transaction_replay_max_size`, a statement that
//! cannot be repeated from its bytes alone, state on the connection the proxy cannot
//! rebuild — ends the session as it ended without replay: an error, and the client
//! connection closed, so that the driver knows the transaction is gone.

use bytes::Bytes;

use crate::frontend::registry::Registry;
use crate::protocol::constants::{command, error, status};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::packets::ErrPacket;
use crate::protocol::statement::{set_statement_id, ExecuteLayout};

use super::request::Request;
use super::transaction_log::{Entry, Role};
use super::{Failure, Session, Statement};

impl Session {
    /// Whether this session's transactions may be replayed at all.
    pub(super) fn replays(&self) -> bool {
        self.user.config.transaction_replay
            && self
                .frontend
                .shared
                .peek()
                .proxy
                .transaction_replay_max_size
                > 0
    }

    /// Notes `request`, about to be sent on the primary connection as `sent` (a text
    /// statement as the rules rewrote it): whether its answer is to be fingerprinted.
    pub(super) fn expect_on_primary(&mut self, request: &Request, sent: &[u8]) {
        if !self.replays() {
            return;
        }
        let cmd = request.cmd;
        let analysis = &request.plan().analysis;
        let role = match cmd {
            command::QUERY => Role::of(analysis),
            command::STMT_EXECUTE if !request.cursor => Role::of(analysis),
            _ => Role::of_command(cmd, request.cursor),
        };
        let autocommit = self.server_status & status::AUTOCOMMIT != 0;
        let next_transaction = analysis.features.next_transaction;
        let recorded = self.transaction.wants(role, next_transaction, autocommit);
        let sent = match cmd {
            _ if !recorded => None,
            command::QUERY => Some((cmd, [&[cmd], sent].concat().into(), None)),
            command::STMT_EXECUTE => self
                .execute_with_types(request)
                .map(|payload| (cmd, payload, request.prepared)),
            _ => None,
        };
        self.transaction.expect(role, sent, next_transaction);
    }

    /// An execute's payload as it can be sent on another connection: with the parameter
    /// types the server it ran on had bound, when the client left them out.
    fn execute_with_types(&self, request: &Request) -> Option<Bytes> {
        let payload = request.packet.wire.get(HEADER_LEN..)?;
        let id = request.prepared?;
        let prepared = &self.statements.by_id.get(&id)?.prepared;
        let layout = ExecuteLayout::parse(payload, prepared.params).ok()?;
        if layout.types.is_none() && prepared.params > 0 {
            let bound = self.primary.as_ref()?.statements.types(prepared.id)?;
            return layout.with_types(payload, bound).map(Bytes::from);
        }
        Some(Bytes::copy_from_slice(payload))
    }

    /// Whether the statement in flight on the primary connection, lost before the client
    /// saw its answer, can be sent again on the next writer: after replaying the open
    /// transaction it belonged to, or, outside one, what changed nothing (an autocommit
    /// read, as a reader's lost read is sent again; a COM_STMT_PREPARE), a `SET` of what
    /// the proxy sets on every connection of the session anyway (`SET NAMES`, followed
    /// variables: drivers send them as they connect), or a BEGIN.
    pub(super) fn resendable_on_primary(&self, cmd: u8, statement: Statement) -> bool {
        let changes_nothing = match cmd {
            command::QUERY => matches!(
                statement,
                Statement::Read | Statement::SetNames | Statement::SetVariables
            ),
            command::STMT_EXECUTE => statement == Statement::Read,
            command::STMT_PREPARE => true,
            _ => false,
        };
        // with autocommit off and no transaction open, a read opened one its loss undid
        (changes_nothing && self.nothing_open_on_primary())
            || (!self.bound && self.replays() && self.transaction.resendable())
    }

    /// Whether the session's open transaction can be replayed on another writer (whatever
    /// is in flight: for a statement that never took effect).
    pub(super) fn transaction_replayable(&self) -> bool {
        self.transaction.replayable() && !self.bound && self.replays()
    }

    /// Whether the open transaction is to be replayed elsewhere before the statement about
    /// to be sent: its primary connection is already gone (closed by its server, the
    /// server found unreachable), or the operator took the server out of service
    /// (OFFLINE_HARD, or removed). A server that merely lost the writer's role (desynced,
    /// outranked) keeps the transaction to its end.
    pub(super) fn lost_before_sending(&self) -> Option<&'static str> {
        if !self.transaction_replayable() {
            return None;
        }
        let primary = self.primary.as_ref()?;
        let address = primary.server.address();
        if primary.conn.peer_closed() {
            return Some("connection closed by the server");
        }
        if self.frontend.shared.is_unreachable(address) {
            return Some("the monitor found the server unreachable");
        }
        let runtime = self.frontend.shared.peek();
        let hostgroup = runtime.hostgroups.get(&primary.server.hostgroup);
        match hostgroup.is_some_and(|g| g.contains(address)) {
            true => None,
            false => Some("the server was taken out of service (OFFLINE_HARD)"),
        }
    }

    /// The primary connection was lost (`why`) with a transaction open: replays the
    /// transaction on the writer of the moment (waiting for one as a statement does).
    /// Ok: the session is where it was, on a new connection. Otherwise the client was
    /// told and the session ends.
    pub(super) async fn replay_transaction(&mut self, why: &str) -> Result<(), Failure> {
        let lost = self.primary.take();
        let lost_address = lost.as_ref().map(|b| b.server.address().to_owned());
        drop(lost);
        Registry::count(&self.frontend.counters.backends_lost);
        // outside a transaction (a BEGIN, a statement a node refused unrun) there is
        // nothing to replay: only the next writer to find
        let open = self.transaction.replayable();
        tracing::warn!(peer = %self.peer, server = ?lost_address, error = why, open, "writer connection lost: replaying the session's transaction on the next writer");
        match self.replay().await {
            Ok(statements) => {
                if open {
                    Registry::count(&self.frontend.counters.transactions_replayed);
                }
                tracing::info!(peer = %self.peer, statements, "transaction replayed");
                Ok(())
            }
            Err(refusal) if !open => {
                self.primary = None;
                if let Refusal::Said(reason) = refusal {
                    let message = format!("Lost connection to the writer ({why}): {reason}");
                    self.send_packet_err(1, &ErrPacket::new(error::LOST_BACKEND, message))
                        .await?;
                }
                Err(Failure::Backend)
            }
            Err(refusal) => {
                Registry::count(&self.frontend.counters.transaction_replays_failed);
                self.transaction_lost();
                tracing::warn!(peer = %self.peer, reason = %refusal.reason(), "transaction not replayed: closing the client connection");
                if let Refusal::Said(reason) = refusal {
                    let address = lost_address.unwrap_or_default();
                    let message = format!("Lost connection to backend {address} during a transaction ({why}); it could not be replayed: {reason}");
                    self.send_packet_err(1, &ErrPacket::new(error::LOST_BACKEND, message))
                        .await?;
                }
                Err(Failure::StateLost)
            }
        }
    }

    /// Forgets the transaction the session lost with its primary connection; the session
    /// must end (its client is told by the caller).
    pub(super) fn transaction_lost(&mut self) -> Failure {
        self.primary = None;
        self.transaction.forget();
        self.routing.in_transaction = false;
        Failure::StateLost
    }

    /// Takes a writer connection, brings it to the session's state and runs the record
    /// there, answer by answer; the number of statements replayed.
    async fn replay(&mut self) -> Result<usize, Refusal> {
        let mut conn = self
            .fresh_primary()
            .await
            .map_err(|e| Refusal::Said(format!("no writer: {e}")))?;
        if self.server_status & status::AUTOCOMMIT == 0 {
            conn.run(command::QUERY, b"SET autocommit = 0")
                .await
                .map_err(Refusal::Said)?;
        }
        self.primary = Some(conn);
        self.replay_record().await
    }

    /// Runs the record on the primary connection, answer by answer; the number of
    /// statements replayed.
    pub(super) async fn replay_record(&mut self) -> Result<usize, Refusal> {
        let entries = self.transaction.entries.clone();
        for entry in &entries {
            self.replay_entry(entry).await?;
        }
        Ok(entries.len())
    }

    /// Runs one recorded statement on the new primary connection and compares answers.
    async fn replay_entry(&mut self, entry: &Entry) -> Result<(), Refusal> {
        let mut payload = entry.payload.to_vec();
        if let Some(id) = entry.prepared {
            if !self.statements.by_id.contains_key(&id) {
                return Err(Refusal::Said(
                    "a statement it executed was closed since".into(),
                ));
            }
            let backend_id = match self.prepared_on(super::Target::Primary, id, true).await {
                Ok(Some(backend_id)) => backend_id,
                // the client was answered: the prepare failed there
                Ok(None) => return Err(Refusal::Told),
                Err(Failure::Client) => return Err(Refusal::Client),
                Err(_) => return Err(Refusal::Said("the new writer was lost too".into())),
            };
            set_statement_id(&mut payload, backend_id);
        }
        let conn = self.primary.as_mut().expect("taken above");
        let answered = async {
            conn.send_command(payload[0], &payload[1..])
                .await
                .map_err(|e| e.to_string())?;
            conn.fingerprint_response(entry.cmd)
                .await
                .map_err(|e| e.to_string())
        };
        let (_, fingerprint) = answered.await.map_err(Refusal::Said)?;
        if fingerprint != entry.fingerprint {
            tracing::info!(peer = %self.peer, statement = %String::from_utf8_lossy(&entry.payload[1..]),
                "a replayed statement's answer differs from the first time");
            return Err(Refusal::Said(
                "a statement's answer differs from the first time".into(),
            ));
        }
        Ok(())
    }
}

/// Why a transaction was not replayed.
pub(super) enum Refusal {
    /// The reason, for the client's error.
    Said(String),
    /// The client already has its answer (an error the replay relayed).
    Told,
    /// The client is gone.
    Client,
}

impl Refusal {
    pub(super) fn reason(&self) -> &str {
        match self {
            Refusal::Said(reason) => reason,
            Refusal::Told => "an error was relayed",
            Refusal::Client => "the client is gone",
        }
    }
}
