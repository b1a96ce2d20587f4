//! The session's backend connections: a primary connection to the user's default
//! hostgroup that follows the writer when it changes, a reader connection kept in step
//! with the session (schema, character set, followed variables), and losing either
//! cleanly.

use std::time::{Duration, Instant};

use crate::backend::{AcquireError, BackendConn};
use crate::frontend::registry::Registry;
use crate::protocol::constants::{error, status};
use crate::protocol::packets::ErrPacket;
use crate::router::Target;
use crate::runtime::Runtime;

use super::{Failure, Replayed, Session};

impl Session {
    /// Makes sure the session has a primary connection to a server that is still in its
    /// hostgroup, connecting anew after a loss or a failover. A failure is reported to the
    /// client.
    pub(super) async fn ensure_primary(&mut self) -> Result<(), Failure> {
        let hostgroup = self.user.config.default_hostgroup;
        if let Some(primary) = &self.primary {
            // Held for the statement after a write, its server closed it meanwhile (it was
            // killed): nothing was sent on it, so the statement can go to the next writer.
            // A session with a transaction or other state there has lost it: it is told
            // when the statement fails on the connection.
            if self.nothing_on_primary() && primary.conn.peer_closed() {
                tracing::info!(peer = %self.peer, server = %primary.server.address(), "held connection closed by its server: taking another");
                self.primary = None;
                self.hold_next = false;
                return Box::pin(self.ensure_primary()).await;
            }
            let address = primary.server.address();
            // An open transaction finishes where it began (or fails with its server).
            if self.routing.in_transaction || self.frontend.shared.is_member(hostgroup, address) {
                return Ok(());
            }
            // The server left the hostgroup (a new writer was elected): statements must
            // not go on reaching it. Whatever the session set on it stays behind.
            tracing::info!(peer = %self.peer, server = %address, hostgroup, "leaving a server that left the hostgroup");
            let old = self.primary.take().expect("checked");
            self.release(old).await;
        }
        let acquired = self.fresh_primary().await;
        match acquired {
            Ok(b) => {
                self.primary = Some(b);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, hostgroup, error = %e, "no backend");
                self.send_packet_err(1, &e.to_err_packet()).await?;
                Err(Failure::Backend)
            }
        }
    }

    /// Nothing ties the session to its primary connection: no transaction, no state on it,
    /// no pin. A statement not yet answered there may go to another writer.
    pub(super) fn nothing_on_primary(&self) -> bool {
        !self.routing.in_transaction && !self.bound && !self.routing.pinned
    }

    /// Like [`Session::nothing_on_primary`], but autocommit off alone holds nothing: only a
    /// transaction actually open there (the server's IN_TRANS) does, for what the next
    /// statement may begin on any writer.
    pub(super) fn nothing_open_on_primary(&self) -> bool {
        !self.bound && !self.routing.pinned && self.server_status & status::IN_TRANS == 0
    }

    /// Whether a statement the primary connection's server never ran (lost before it was
    /// sent, or refused unrun) can go to another writer: nothing ties the session to that
    /// connection, or its open transaction can be replayed first.
    pub(super) fn primary_movable(&self) -> bool {
        self.nothing_on_primary() || self.transaction_replayable()
    }

    /// A new connection to the session's default hostgroup, in step with the session
    /// (schema, character set, followed variables). A server that fails while it is set up
    /// — a node restarted and not serving yet (ERR 1047), a connection reset — is given up
    /// for the next one the pool offers, every 100 ms, while a failover's wait lasts: no
    /// statement was sent on it yet; so is a node that just said it is out of the primary
    /// component (`not_serving`), until the monitor has placed another writer.
    pub(super) async fn fresh_primary(&mut self) -> Result<BackendConn, AcquireError> {
        let hostgroup = self.user.config.default_hostgroup;
        let wait = failover_wait(&self.frontend.shared.peek(), hostgroup);
        let deadline = Instant::now() + wait;
        let avoided = self.not_serving.take();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut conn = self
                .frontend
                .pool
                .acquire_through_failover(&self.frontend.shared, hostgroup, &self.login, left)
                .await?;
            let synced = match avoided.as_deref() {
                Some(avoided) if avoided == conn.server.address() => {
                    Err("out of the Galera primary component".to_owned())
                }
                _ => {
                    conn.sync_session(
                        self.login.database.as_deref(),
                        self.names.as_deref(),
                        &self.variables,
                    )
                    .await
                }
            };
            let Err(why) = synced else {
                return Ok(conn);
            };
            let address = conn.server.address().to_owned();
            drop(conn);
            if Instant::now() + SETUP_RETRY >= deadline {
                return Err(AcquireError::Refused(ErrPacket::new(
                    error::LOST_BACKEND,
                    format!("Lost connection to {address} while setting the session up: {why}"),
                )));
            }
            tracing::info!(peer = %self.peer, server = %address, error = %why, "a server failed while the session was set up on it: taking another");
            tokio::time::sleep(SETUP_RETRY).await;
        }
    }

    /// Makes sure the session has a connection to `hostgroup` (the readers, or a
    /// hostgroup a rule chose) in step with the session's schema and character set. The
    /// error says why there is none.
    pub(super) async fn ensure_reader(&mut self, hostgroup: u32) -> Result<(), ErrPacket> {
        let shared = self.frontend.shared.clone();
        if let Some((reader, replayed)) = &self.reader {
            if replayed.hostgroup != hostgroup
                || !shared.is_member(hostgroup, reader.server.address())
            {
                let (old, _) = self.reader.take().expect("checked");
                self.release(old).await;
            }
        }
        if self.reader.is_none() {
            match self
                .frontend
                .pool
                .acquire(&shared, hostgroup, &self.login)
                .await
            {
                Ok(b) => {
                    self.reader = Some((b, Replayed { hostgroup }));
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, hostgroup, error = %e, "no connection to the hostgroup");
                    return Err(e.to_err_packet());
                }
            }
        }
        self.replay_on_reader().await.map_err(|why| {
            tracing::warn!(peer = %self.peer, hostgroup, error = %why, "reader connection failed");
            self.reader = None;
            ErrPacket::new(
                error::LOST_BACKEND,
                format!("Lost connection to hostgroup {hostgroup}: {why}"),
            )
        })
    }

    /// Brings the reader connection's schema and character set in line with the session's.
    async fn replay_on_reader(&mut self) -> Result<(), String> {
        let (reader, _) = self.reader.as_mut().expect("ensured");
        reader
            .sync_session(
                self.login.database.as_deref(),
                self.names.as_deref(),
                &self.variables,
            )
            .await
    }

    /// A read's reader failed before answering: the connection is dropped without a word
    /// to the client, whose read is sent again (see [`retryable`]).
    pub(super) fn reader_lost_unanswered(&mut self, why: &str) {
        if let Some((reader, _)) = self.reader.take() {
            tracing::warn!(peer = %self.peer, server = %reader.server.address(), error = why, "reader lost before answering: the read is retried");
            Registry::count(&self.frontend.counters.backends_lost);
        }
    }

    /// Tells the client its statement died with the backend connection, and forgets the
    /// connection; the next command gets a new one.
    pub(super) async fn backend_lost(
        &mut self,
        target: Target,
        seq: u8,
        why: &str,
    ) -> Result<(), Failure> {
        let mut state_lost = false;
        let backend = match target {
            Target::Primary => {
                state_lost = self.bound || self.routing.in_transaction;
                self.routing.in_transaction = false;
                self.transaction.forget();
                self.primary.take()
            }
            Target::Reader => {
                self.routing.held_reader = None;
                self.reader.take().map(|(b, _)| b)
            }
        };
        let Some(backend) = backend else {
            return Err(Failure::Backend);
        };
        let message = format!(
            "Lost connection to backend {} (hostgroup {}) during query: {why}",
            backend.server.address(),
            backend.server.hostgroup
        );
        tracing::warn!(peer = %self.peer, "{message}");
        Registry::count(&self.frontend.counters.backends_lost);
        drop(backend);
        self.send_packet_err(seq, &ErrPacket::new(error::LOST_BACKEND, message))
            .await?;
        if state_lost {
            tracing::warn!(peer = %self.peer, "the session's state was on that connection: closing the client connection");
            return Err(Failure::StateLost);
        }
        Err(Failure::Backend)
    }
}

/// The pause before a session set up on a server that failed tries the next one.
const SETUP_RETRY: Duration = Duration::from_millis(100);

/// How long a statement or login for `hostgroup` waits for a server while it has none:
/// `failover_wait_ms` for a Galera writer hostgroup (the monitor will place the next
/// writer), no wait for other hostgroups (nobody is coming).
pub(in crate::frontend) fn failover_wait(runtime: &Runtime, hostgroup: u32) -> Duration {
    let writer = runtime
        .galera
        .iter()
        .any(|g| g.writer_hostgroup == hostgroup);
    Duration::from_millis(if writer {
        runtime.proxy.failover_wait_ms
    } else {
        0
    })
}

/// The session's connection for `target`, which must be there. A function of the two
/// fields rather than a method, so the client connection can be borrowed beside it.
pub(super) fn connection_for<'a>(
    primary: &'a mut Option<BackendConn>,
    reader: &'a mut Option<(BackendConn, Replayed)>,
    target: Target,
) -> &'a mut BackendConn {
    match target {
        Target::Primary => primary.as_mut(),
        Target::Reader => reader.as_mut().map(|(b, _)| b),
    }
    .expect("ensured")
}
