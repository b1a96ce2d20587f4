//! COM_CHANGE_USER: the login again, on an open connection.

use crate::connection::RawPacket;
use crate::protocol::constants::{error, status};
use crate::protocol::handshake::ChangeUser;
use crate::protocol::packets::OkPacket;

use crate::frontend::authenticate::Exchange;
use crate::frontend::handshake::{access_denied, check_access};

use super::start::UserSlot;
use super::{Failure, Session};

impl Session {
    /// COM_CHANGE_USER: authenticate the new user here, then give the session a backend
    /// connection logged in as that user (the old one is released, which resets its state
    /// as the command requires).
    pub(super) async fn change_user(&mut self, packet: RawPacket) -> Result<(), Failure> {
        let packet = packet.into_packet();
        let request = match ChangeUser::decode(&packet.payload[1..], self.capabilities) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "malformed COM_CHANGE_USER");
                self.send_error(1, error::HANDSHAKE_ERROR, "Bad handshake")
                    .await;
                return Err(Failure::Client);
            }
        };
        let runtime = self.frontend.shared.load();
        let user = runtime.users.get(&request.username).cloned();
        let access = check_access(user.as_deref(), self.peer, self.tls.as_ref());
        let mut exchange = Exchange {
            conn: &mut self.client,
            seq: 1,
            scramble: &self.scramble,
            secure: self.tls.is_some(),
            cache: &self.frontend.sha2_cache,
        };
        let plugin = request.auth_plugin.as_deref();
        let proven = exchange
            .prove(access, plugin, request.auth_response.clone())
            .await
            .map_err(|_| Failure::Client)?;
        let seq = exchange.seq;
        let key = match proven.result {
            Ok(key) => key,
            Err(reason) => {
                tracing::info!(peer = %self.peer, user = %request.username, reason, "COM_CHANGE_USER refused");
                let message = access_denied(&request.username, self.peer, proven.with_password);
                self.send_error(seq, error::ACCESS_DENIED, &message).await;
                return Err(Failure::Client);
            }
        };
        let user = user.expect("credentials checked");
        let Some(user_slot) = UserSlot::acquire(&user) else {
            self.send_error(
                seq,
                error::USER_LIMIT_REACHED,
                "User has exceeded the 'max_user_connections' resource",
            )
            .await;
            return Err(Failure::Client);
        };
        if let Some(old) = self.primary.take() {
            self.release(old).await;
        }
        let mut login = self.login.clone();
        login.user = request.username.clone();
        login.key = key;
        login.database = request
            .database
            .clone()
            .or_else(|| user.config.default_schema.clone());
        if let Some(charset) = request.charset {
            login.charset = charset as u8;
        }
        self.login = login;
        self.user = user;
        self.user_slot = user_slot;
        self.reset_routing().await;
        match self
            .frontend
            .pool
            .acquire(
                &self.frontend.shared,
                self.user.config.default_hostgroup,
                &self.login,
            )
            .await
        {
            Ok(mut b) => {
                // the connection may carry another session's character set or variables
                if let Err(why) = b
                    .sync_session(self.login.database.as_deref(), None, &self.variables)
                    .await
                {
                    let message = format!("Lost connection to backend while changing user: {why}");
                    self.send_error(seq, error::LOST_BACKEND, &message).await;
                    return Err(Failure::Backend);
                }
                self.primary = Some(b);
            }
            Err(e) => {
                self.send_packet_err(seq, &e.to_err_packet()).await?;
                return Err(Failure::Backend);
            }
        }
        let ok = OkPacket {
            affected_rows: 0,
            last_insert_id: 0,
            status: status::AUTOCOMMIT,
            warnings: 0,
        };
        ok.encode(self.client.write_buffer(), seq);
        self.client.flush().await.map_err(|_| Failure::Client)
    }
}
