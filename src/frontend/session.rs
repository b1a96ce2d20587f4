//! A logged-in client's life: the command loop. Each command is forwarded to the session's
//! backend connection as the bytes the client sent, and the response comes back as the bytes
//! the server sent, in the batches they were read, with only the packets that end a response
//! looked at (see `protocol::response`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::backend::{BackendConn, Login};
use crate::connection::{Connection, RawPacket, ReadError};
use crate::protocol::auth::NATIVE_PASSWORD;
use crate::protocol::constants::{command, error, status};
use crate::protocol::frame::FrameError;
use crate::protocol::handshake::ChangeUser;
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::protocol::response::{Outcome, Progress, ResponseTracker, TrackError};
use crate::runtime::UserEntry;

use super::handshake::{self, access_denied, check_credentials, send_err, LoggedIn};
use super::{ClientSlot, Frontend};

/// Serves one client from its first byte to its last.
pub(super) async fn run(
    frontend: Arc<Frontend>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ClientSlot,
) {
    let runtime = frontend.shared.load();
    let id = frontend.next_connection_id();
    let timeout = Duration::from_millis(runtime.proxy.handshake_timeout_ms);
    let logged_in =
        match tokio::time::timeout(timeout, handshake::login(tcp, peer, &runtime, id)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "login failed");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "login timed out");
                return;
            }
        };
    let Some(mut session) = Session::start(frontend, logged_in, peer, id).await else {
        return;
    };
    tracing::debug!(%peer, user = %session.user.config.name, id, "session started");
    session.command_loop().await;
    session.close().await;
    drop(slot);
}

/// Refuses a connection over the global limit the way MySQL does: an ERR instead of a
/// greeting.
pub(super) async fn refuse_too_many(tcp: TcpStream, peer: SocketAddr, max: usize) {
    tracing::warn!(%peer, max, "client refused: max_client_connections reached");
    let mut conn = Connection::new(crate::connection::Stream::Tcp(tcp));
    send_err(
        &mut conn,
        0,
        0,
        error::TOO_MANY_CONNECTIONS,
        "Too many connections",
    )
    .await;
    conn.shutdown().await;
}

/// A user's share of its `max_connections`, held while the session is logged in as it.
struct UserSlot(Arc<UserEntry>);

impl UserSlot {
    fn acquire(user: &Arc<UserEntry>) -> Option<UserSlot> {
        let before = user.connections.fetch_add(1, Ordering::Relaxed);
        let slot = UserSlot(user.clone());
        (before < user.config.max_connections).then_some(slot)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Session {
    frontend: Arc<Frontend>,
    client: Connection,
    peer: SocketAddr,
    user: Arc<UserEntry>,
    user_slot: UserSlot,
    login: Login,
    capabilities: u32,
    scramble: [u8; 20],
    backend: Option<BackendConn>,
}

/// Why a command could not be completed.
enum Failure {
    /// The client is gone or broke the protocol: the session ends.
    Client,
    /// The backend connection failed; the client was told, the session goes on.
    Backend,
}

impl Session {
    /// Finishes the login: connects the backend and sends the final OK (or the error).
    async fn start(
        frontend: Arc<Frontend>,
        mut li: LoggedIn,
        peer: SocketAddr,
        id: u32,
    ) -> Option<Session> {
        let Some(user_slot) = UserSlot::acquire(&li.user) else {
            let message = format!(
                "User '{}' has exceeded the 'max_user_connections' resource ({})",
                li.user.config.name, li.user.config.max_connections
            );
            send_err(
                &mut li.conn,
                li.next_seq,
                li.capabilities,
                error::USER_LIMIT_REACHED,
                &message,
            )
            .await;
            tracing::warn!(%peer, user = %li.user.config.name, "client refused: user connection limit");
            return None;
        };
        let backend = match frontend
            .pool
            .acquire(
                &frontend.shared,
                li.user.config.default_hostgroup,
                &li.login,
            )
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%peer, user = %li.user.config.name, error = %e, "no backend for new session");
                let err = e.to_err_packet();
                err.encode(li.conn.write_buffer(), li.next_seq, li.capabilities);
                let _ = li.conn.flush().await;
                return None;
            }
        };
        tracing::debug!(%peer, id, backend = %backend.server.address(), thread = backend.thread_id, "backend connected");
        let ok = OkPacket {
            affected_rows: 0,
            last_insert_id: 0,
            status: status::AUTOCOMMIT,
            warnings: 0,
        };
        ok.encode(li.conn.write_buffer(), li.next_seq);
        li.conn.flush().await.ok()?;
        Some(Session {
            frontend,
            client: li.conn,
            peer,
            user: li.user,
            user_slot,
            login: li.login,
            capabilities: li.capabilities,
            scramble: li.scramble,
            backend: Some(backend),
        })
    }

    async fn command_loop(&mut self) {
        let mut shutdown = self.frontend.shutdown_signal();
        loop {
            let max = self.frontend.shared.load().proxy.max_allowed_packet;
            let read = tokio::select! {
                read = self.client.read_raw(max) => Some(read),
                _ = shutdown.wait_for(|stop| *stop) => None,
            };
            let Some(read) = read else {
                self.send_error(0, error::SERVER_SHUTDOWN, "Server shutdown in progress")
                    .await;
                return;
            };
            let packet = match read {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(ReadError::Frame(FrameError::TooLarge { .. })) => {
                    let message = "Got a packet bigger than 'max_allowed_packet' bytes";
                    self.send_error(1, error::NET_PACKET_TOO_LARGE, message)
                        .await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "client read failed");
                    return;
                }
            };
            if packet.span.first_seq != 0 {
                self.send_error(
                    1,
                    error::NET_PACKETS_OUT_OF_ORDER,
                    "Got packets out of order",
                )
                .await;
                return;
            }
            let result = match packet.first_frame().first().copied() {
                Some(command::QUIT) => return,
                Some(command::CHANGE_USER) => self.change_user(packet).await,
                Some(cmd) if is_refused(cmd) => {
                    let message = format!("Command {cmd:#04x} is not supported through the proxy");
                    self.send_error(1, error::UNKNOWN_COMMAND, &message).await;
                    Ok(())
                }
                Some(cmd) => self.forward(cmd, packet).await,
                None => {
                    self.send_error(1, error::UNKNOWN_COMMAND, "Empty command packet")
                        .await;
                    Ok(())
                }
            };
            if let Err(Failure::Client) = result {
                return;
            }
            self.client.shrink_buffers();
        }
    }

    /// Sends the command to the backend and relays the response.
    async fn forward(&mut self, cmd: u8, packet: RawPacket) -> Result<(), Failure> {
        self.ensure_backend().await?;
        let backend = self.backend.as_mut().expect("ensured");
        if let Err(e) = backend.conn.write_wire(&packet.wire).await {
            return self.backend_lost(1, &e.to_string()).await;
        }
        let Some(mut tracker) = ResponseTracker::for_command(cmd) else {
            return Ok(());
        };
        let max = self.frontend.shared.load().proxy.max_allowed_packet;
        match relay(&mut self.client, &mut backend.conn, &mut tracker, max).await {
            Ok(outcome) => {
                if cmd == command::INIT_DB && !outcome.error {
                    let name = String::from_utf8_lossy(&packet.first_frame()[1..]).into_owned();
                    self.login.database = Some(name);
                }
                backend.conn.shrink_buffers();
                Ok(())
            }
            Err(RelayError::Client) => Err(Failure::Client),
            Err(RelayError::Backend(why)) => self.backend_lost(tracker.next_seq(), &why).await,
        }
    }

    /// Makes sure the session has a backend connection, connecting a new one after the
    /// previous one was lost. A failure is reported to the client.
    async fn ensure_backend(&mut self) -> Result<(), Failure> {
        if self.backend.is_some() {
            return Ok(());
        }
        let hostgroup = self.user.config.default_hostgroup;
        match self
            .frontend
            .pool
            .acquire(&self.frontend.shared, hostgroup, &self.login)
            .await
        {
            Ok(b) => {
                self.backend = Some(b);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, hostgroup, error = %e, "no backend");
                let err = e.to_err_packet();
                self.send_packet_err(1, &err).await?;
                Err(Failure::Backend)
            }
        }
    }

    /// Tells the client its statement died with the backend connection, and forgets the
    /// connection; the next command gets a new one.
    async fn backend_lost(&mut self, seq: u8, why: &str) -> Result<(), Failure> {
        let Some(backend) = self.backend.take() else {
            return Err(Failure::Backend);
        };
        let message = format!(
            "Lost connection to backend {} (hostgroup {}) during query: {why}",
            backend.server.address(),
            backend.server.hostgroup
        );
        tracing::warn!(peer = %self.peer, "{message}");
        drop(backend);
        self.send_packet_err(seq, &ErrPacket::new(error::LOST_BACKEND, message))
            .await?;
        Err(Failure::Backend)
    }

    /// COM_CHANGE_USER: authenticate the new user here, then give the session a backend
    /// connection logged in as that user (the old one is released, which resets its state
    /// as the command requires).
    async fn change_user(&mut self, packet: RawPacket) -> Result<(), Failure> {
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
            self.client.is_tls(),
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
        if let Some(old) = self.backend.take() {
            self.frontend.pool.release(old);
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
            Ok(b) => self.backend = Some(b),
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

    async fn send_error(&mut self, seq: u8, code: error::Code, message: &str) {
        send_err(&mut self.client, seq, self.capabilities, code, message).await;
    }

    async fn send_packet_err(&mut self, seq: u8, err: &ErrPacket) -> Result<(), Failure> {
        err.encode(self.client.write_buffer(), seq, self.capabilities);
        self.client.flush().await.map_err(|_| Failure::Client)
    }

    async fn close(mut self) {
        if let Some(backend) = self.backend.take() {
            self.frontend.pool.release(backend);
        }
        self.client.shutdown().await;
    }
}

/// Commands that must not pass through a proxy: replication streams, server shutdown,
/// and the obsolete internal ones.
fn is_refused(cmd: u8) -> bool {
    matches!(
        cmd,
        command::SLEEP
            | command::SHUTDOWN
            | command::CONNECT
            | command::TIME
            | command::DELAYED_INSERT
            | command::BINLOG_DUMP
            | command::TABLE_DUMP
            | command::CONNECT_OUT
            | command::REGISTER_SLAVE
            | command::DAEMON
            | command::BINLOG_DUMP_GTID
    ) || cmd > command::RESET_CONNECTION
}

enum RelayError {
    /// Writing to the client failed.
    Client,
    /// The backend failed or broke the protocol (the reason, for the client's error).
    Backend(String),
}

impl From<TrackError> for RelayError {
    fn from(e: TrackError) -> Self {
        RelayError::Backend(e.to_string())
    }
}

/// Copies one response from `backend` to `client`, batch by batch as it was read, until
/// `tracker` says it is complete.
async fn relay(
    client: &mut Connection,
    backend: &mut Connection,
    tracker: &mut ResponseTracker,
    max_packet: usize,
) -> Result<Outcome, RelayError> {
    loop {
        let buf = backend.buffered();
        let scan = tracker.scan(buf)?;
        buf.reserve(scan.missing);
        if scan.complete > 0 {
            let batch = buf.split_to(scan.complete);
            client
                .write_wire(&batch)
                .await
                .map_err(|_| RelayError::Client)?;
        }
        match scan.end {
            Some(Progress::Done(outcome)) => return Ok(outcome),
            Some(Progress::LocalInfile) => {
                let next_seq = relay_file(client, backend, max_packet).await?;
                tracker.file_sent(next_seq);
                continue;
            }
            _ => {}
        }
        match backend.fill().await {
            Ok(0) => {
                return Err(RelayError::Backend(
                    "connection closed by the server".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(RelayError::Backend(e.to_string())),
        }
    }
}

/// LOAD DATA LOCAL INFILE: forwards the client's file packets to the backend up to and
/// including the empty packet that ends the file; returns the sequence id that follows.
async fn relay_file(
    client: &mut Connection,
    backend: &mut Connection,
    max_packet: usize,
) -> Result<u8, RelayError> {
    loop {
        let packet = match client.read_raw(max_packet).await {
            Ok(Some(p)) => p,
            _ => return Err(RelayError::Client),
        };
        backend
            .write_wire(&packet.wire)
            .await
            .map_err(|e| RelayError::Backend(e.to_string()))?;
        if packet.span.payload_len == 0 {
            return Ok(packet.span.last_seq.wrapping_add(1));
        }
    }
}
