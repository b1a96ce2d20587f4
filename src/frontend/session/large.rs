//! Requests too large to hold (see `connection::STREAM_ABOVE`): streamed to the primary
//! as they arrive, the statement id of a prepared statement's command rewritten in the
//! part already buffered. Whatever goes wrong midway leaves both connections mid-packet,
//! so the session ends.

use std::sync::atomic::Ordering;

use crate::config::FirewallMode;
use crate::frontend::relay::{stream_packet, StreamError};
use crate::protocol::constants::{command, error};
use crate::protocol::frame::HEADER_LEN;
use crate::protocol::packets::ErrPacket;
use crate::protocol::statement::{
    set_statement_id, statement_id, ExecuteLayout, CURSOR_TYPE_READ_ONLY,
};
use crate::router::{Statement, Target};

use super::statements::{unknown_statement, NEED_REPREPARE};
use super::{is_refused, Failure, Session};

impl Session {
    /// A request too large to hold (see `connection::STREAM_ABOVE`): streamed to the
    /// primary as it arrives. Whatever goes wrong midway leaves both connections
    /// mid-packet, so the session ends.
    pub(super) async fn forward_large(&mut self, seq: u8, cmd: u8) -> Result<(), Failure> {
        if seq != 0 {
            self.send_error(
                1,
                error::NET_PACKETS_OUT_OF_ORDER,
                "Got packets out of order",
            )
            .await;
            return Err(Failure::Client);
        }
        if matches!(cmd, command::QUIT | command::CHANGE_USER) || is_refused(cmd) {
            let message = format!("Command {cmd:#04x} with a payload this large is not accepted");
            self.send_error(1, error::UNKNOWN_COMMAND, &message).await;
            return Err(Failure::Client);
        }
        let runtime = self.frontend.shared.load();
        let mode = self
            .user
            .config
            .firewall
            .unwrap_or(runtime.firewall_settings.mode);
        if mode == FirewallMode::Protect {
            // a statement this large is not held in memory, so it cannot be inspected
            let message = format!(
                "Statement refused by the firewall: statements over {} bytes cannot be inspected",
                crate::connection::STREAM_ABOVE
            );
            self.send_error(1, error::NOT_ALLOWED, &message).await;
            return Err(Failure::Client);
        }
        if self.ensure_primary().await.is_err() {
            return Err(Failure::Client);
        }
        let prepared = match cmd {
            command::STMT_EXECUTE | command::STMT_SEND_LONG_DATA => {
                match self.bind_streamed_statement(cmd).await? {
                    Some(id) => Some(id),
                    None => return Err(Failure::Client),
                }
            }
            _ => None,
        };
        // the cursor flags of a streamed execute are in its buffered start
        let cursor = cmd == command::STMT_EXECUTE
            && self
                .client
                .buffered()
                .get(HEADER_LEN + 5)
                .copied()
                .unwrap_or(0)
                & CURSOR_TYPE_READ_ONLY
                != 0;
        if let Some(statement) = prepared.and_then(|id| self.statements.by_id.get_mut(&id)) {
            if cmd == command::STMT_EXECUTE {
                statement.cursor = cursor;
            }
        }
        let max = runtime.proxy.max_allowed_packet;
        let primary = self.primary.as_mut().expect("ensured");
        match stream_packet(&mut self.client, &mut primary.conn, max, 0).await {
            Ok(_) => {
                let result = self
                    .relay_response(Target::Primary, cmd, Statement::Write, &[], cursor, None)
                    .await;
                // a streamed request is not held: it cannot be sent again
                let result = match result {
                    Err(Failure::RolledBack(answer)) => {
                        self.relay_deadlock(Target::Primary, answer).await
                    }
                    other => other,
                };
                if let Some(id) = prepared {
                    if !matches!(result, Err(Failure::Client)) {
                        let at = (Target::Primary, self.routing.primary_hostgroup);
                        self.after_statement_command(cmd, id, at);
                    }
                }
                result.map(|_| ())
            }
            Err(e) => {
                // the backend holds part of a packet: it cannot be used again
                self.primary = None;
                match e {
                    StreamError::TooLarge { next_seq } => {
                        let message = "Got a packet bigger than 'max_allowed_packet' bytes";
                        self.send_error(next_seq, error::NET_PACKET_TOO_LARGE, message)
                            .await;
                    }
                    StreamError::Backend(why) => {
                        let message = format!("Lost connection to backend during query: {why}");
                        self.send_error(1, error::LOST_BACKEND, &message).await;
                    }
                    StreamError::Client => {}
                }
                Err(Failure::Client)
            }
        }
    }

    /// For a COM_STMT_EXECUTE or SEND_LONG_DATA too large to hold (streamed to the
    /// primary): makes the buffered start of it fit the primary connection, as
    /// [`Session::bind_statement`] does for whole packets. An execute that would need
    /// parameter types inserted cannot be changed while it streams: it is refused and the
    /// session ends (its rest cannot be skipped). `Ok(None)`: answered, the session ends;
    /// else the session's id of the statement.
    pub(super) async fn bind_streamed_statement(
        &mut self,
        cmd: u8,
    ) -> Result<Option<u32>, Failure> {
        let body_at = HEADER_LEN;
        self.fill_client_to(body_at + 11).await?;
        let raw = statement_id(&self.client.buffered()[body_at..]).expect("buffered");
        let id = self.statements.resolve(raw);
        if !self.statements.by_id.contains_key(&id) {
            self.send_packet_err(1, &unknown_statement(raw, cmd))
                .await?;
            return Ok(None);
        }
        let Some(backend_id) = self.prepared_on(Target::Primary, id, false).await? else {
            return Ok(None);
        };
        set_statement_id(&mut self.client.buffered()[body_at..], backend_id);
        if cmd == command::STMT_SEND_LONG_DATA {
            return Ok(Some(id));
        }
        self.frontend
            .pool
            .statements
            .stats
            .executes
            .fetch_add(1, Ordering::Relaxed);
        let statement = &self.statements.by_id[&id];
        let params = statement.prepared.params;
        let (prepared_id, bound) = (statement.prepared.id, statement.types.clone());
        let layout = if params == 0 {
            None
        } else {
            let flag_at = body_at + 10 + usize::from(params).div_ceil(8);
            self.fill_client_to(flag_at + 1 + 2 * usize::from(params))
                .await?;
            let buffered = &self.client.buffered()[body_at..];
            ExecuteLayout::parse(buffered, params).ok()
        };
        let primary = self.primary.as_mut().expect("ensured");
        let on = primary.statements.get(prepared_id).expect("prepared above");
        match layout {
            Some(ExecuteLayout {
                types: Some(at), ..
            }) => {
                let sent = self.client.buffered()[body_at..][at].to_vec();
                on.types = Some(sent.clone());
                if let Some(s) = self.statements.by_id.get_mut(&id) {
                    s.types = Some(sent);
                }
            }
            Some(_) if bound.is_some() && on.types != bound => {
                let message = "A prepared statement's execute over 1 MiB that relies on parameter types bound earlier cannot move to another connection: bind the types again";
                let err = ErrPacket::new(NEED_REPREPARE, message);
                self.send_packet_err(1, &err).await?;
                return Ok(None);
            }
            _ => {}
        }
        Ok(Some(id))
    }

    async fn fill_client_to(&mut self, len: usize) -> Result<(), Failure> {
        while self.client.buffered().len() < len {
            match self.client.fill().await {
                Ok(0) | Err(_) => return Err(Failure::Client),
                Ok(_) => {}
            }
        }
        Ok(())
    }
}
