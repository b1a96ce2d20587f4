//! COM_CHANGE_USER: the login again, on an open connection.

use crate::connection::RawPacket;
use crate::protocol::auth::NATIVE_PASSWORD;
use crate::protocol::constants::{error, status};
use crate::protocol::handshake::ChangeUser;
use crate::protocol::packets::OkPacket;

use crate::frontend::handshake::{self, access_denied, check_credentials};

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
        let mut seq = 1;
        let mut proof = request.auth_response.clone();
        if request
            .auth_plugin
            .as_deref()
            .is_some_and(|p| p != NATIVE_PASSWORD)
        {
            let reply = handshake::auth_switch(&mut self.client, seq, &self.scramble)
                .await
                .map_err(|_| Failure::Client)?;
            proof = reply.payload.to_vec();
            seq = reply.last_seq.wrapping_add(1);
        }
        let runtime = self.frontend.shared.load();
        let user = runtime.users.get(&request.username).cloned();
        let checked = check_credentials(
            user.as_deref(),
            self.peer,
            self.tls.as_ref(),
            &self.scramble,
            &proof,
        );
        let key = match checked {
            Ok(key) => key,
            Err(reason) => {
                tracing::info!(peer = %self.peer, user = %request.username, reason, "COM_CHANGE_USER refused");
                let message = access_denied(&request.username, self.peer, !proof.is_empty());
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
