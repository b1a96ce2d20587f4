//! A logged-in client's life: the command loop. Each command goes, as the bytes the client
//! sent, to the backend connection the router picks — the primary (the user's default
//! hostgroup, the writer) or a reader — and the response comes back through `relay`.
//! The session keeps what the router needs to know (transaction open, state left on the
//! primary) and replays schema and character set onto its reader connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::backend::{BackendConn, Login};
use crate::connection::{Connection, RawPacket, ReadError, Request};
use crate::protocol::auth::NATIVE_PASSWORD;
use crate::protocol::constants::{command, error, status};
use crate::protocol::frame::FrameError;
use crate::protocol::handshake::ChangeUser;
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::protocol::response::{Outcome, ResponseTracker};
use crate::router::{classify, SessionRouting, Statement, Target};
use crate::runtime::UserEntry;

use super::admission::{AddressSlot, Refusal};
use super::handshake::{
    self, access_denied, check_credentials, send_err, HandshakeError, LoggedIn, TlsInfo,
};
use super::relay::{relay, stream_packet, Eviction, RelayError, StreamError};
use super::{ClientSlot, Frontend};
use crate::connlog::Entry;

/// Serves one client from its first byte to its last.
pub(super) async fn run(
    frontend: Arc<Frontend>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ClientSlot,
) {
    let runtime = frontend.shared.load();
    let address_slot = match frontend
        .admission
        .admit(peer.ip(), runtime.proxy.max_connections_per_address)
    {
        Ok(s) => s,
        Err(refusal) => return refuse_before_login(&frontend, tcp, peer, refusal).await,
    };
    let id = frontend.next_connection_id();
    let timeout = Duration::from_millis(runtime.proxy.handshake_timeout_ms);
    let login = tokio::time::timeout(timeout, handshake::login(tcp, peer, &runtime, id)).await;
    let logged_in = match login {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => return login_failed(&frontend, peer, e),
        Err(_) => {
            tracing::info!(%peer, "login timed out");
            let mut entry = Entry::new(peer, "refused");
            entry.reason = Some("handshake timeout");
            frontend.connlog.record(&entry);
            return;
        }
    };
    let user = logged_in.user.config.name.clone();
    let tls = logged_in.tls.clone();
    let mut entry = Entry::new(peer, "accepted");
    entry.user = Some(&user);
    entry.tls_version = tls.as_ref().map(|t| t.version.as_str());
    entry.tls_cipher = tls.as_ref().map(|t| t.cipher.as_str());
    frontend.admission.login_succeeded(peer.ip());
    let mut session = match Session::start(frontend.clone(), logged_in, peer, address_slot).await {
        Ok(session) => session,
        Err(reason) => {
            entry.result = "refused";
            entry.reason = Some(reason);
            frontend.connlog.record(&entry);
            return;
        }
    };
    frontend.connlog.record(&entry);
    tracing::debug!(%peer, user = %session.user.config.name, id, "session started");
    session.command_loop().await;
    session.close().await;
    drop(slot);
}

/// Logs a failed login and counts it against the address.
fn login_failed(frontend: &Frontend, peer: SocketAddr, error: HandshakeError) {
    tracing::info!(%peer, %error, "login failed");
    let mut entry = Entry::new(peer, "refused");
    let counts = match &error {
        HandshakeError::Denied { user, reason, tls } => {
            entry.user = Some(user);
            entry.reason = Some(reason);
            entry.tls_version = tls.as_ref().map(|t| t.version.as_str());
            entry.tls_cipher = tls.as_ref().map(|t| t.cipher.as_str());
            true
        }
        HandshakeError::Protocol(_) => {
            entry.reason = Some("bad handshake");
            true
        }
        HandshakeError::Tls(_) => {
            entry.reason = Some("TLS handshake failed");
            true
        }
        HandshakeError::Closed | HandshakeError::Io(_) => {
            entry.reason = Some("closed during login");
            false
        }
    };
    frontend.connlog.record(&entry);
    if counts {
        let policy = frontend.shared.load().throttle.clone();
        if let Some(block) = frontend.admission.login_failed(peer.ip(), &policy) {
            tracing::warn!(client = %peer.ip(), ?block, "too many failed logins: address refused");
        }
    }
}

/// Refuses a connection before its greeting (throttled address, per-address cap) with the
/// ERR MySQL would send in the greeting's place.
async fn refuse_before_login(
    frontend: &Frontend,
    tcp: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
) {
    let (code, message, reason) = match refusal {
        Refusal::Throttled { remaining } => (
            error::HOST_BLOCKED,
            format!(
                "Host '{}' is blocked because of many connection errors; retry in {} s",
                peer.ip(),
                remaining.as_secs() + 1
            ),
            "throttled",
        ),
        Refusal::TooManyFromAddress { max } => (
            error::TOO_MANY_CONNECTIONS,
            format!("Too many connections from {} (limit {max})", peer.ip()),
            "address connection limit",
        ),
    };
    tracing::info!(%peer, reason, "client refused before login");
    let mut entry = Entry::new(peer, "refused");
    entry.reason = Some(reason);
    frontend.connlog.record(&entry);
    let mut conn = Connection::new(crate::connection::Stream::Tcp(tcp));
    send_err(&mut conn, 0, 0, code, &message).await;
    conn.shutdown().await;
}

/// Refuses a connection over the global limit the way MySQL does: an ERR instead of a
/// greeting.
pub(super) async fn refuse_too_many(
    frontend: &Frontend,
    tcp: TcpStream,
    peer: SocketAddr,
    max: usize,
) {
    tracing::warn!(%peer, max, "client refused: max_client_connections reached");
    let mut entry = Entry::new(peer, "refused");
    entry.reason = Some("connection limit");
    frontend.connlog.record(&entry);
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
    /// The connection to the user's default hostgroup (the writer, for split users).
    primary: Option<BackendConn>,
    /// The connection to the readers, with the session state replayed on it so far.
    reader: Option<(BackendConn, Replayed)>,
    routing: SessionRouting,
    /// The last `SET NAMES` that succeeded, to replay on reader connections.
    names: Option<Vec<u8>>,
    /// For read-your-writes: the GTID of this session's last committed write.
    last_write_gtid: Option<String>,
    tls: Option<TlsInfo>,
    /// This connection's share of its address's connection cap.
    _address_slot: AddressSlot,
}

/// Session state applied to a reader connection (its schema is on the connection itself).
#[derive(Debug, Default)]
struct Replayed {
    names: Option<Vec<u8>>,
    /// The last write GTID this reader was seen to have applied.
    applied_gtid: Option<String>,
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
        address_slot: AddressSlot,
    ) -> Result<Session, &'static str> {
        let Some(user_slot) = UserSlot::acquire(&li.user) else {
            let message = format!(
                "User {} already has more than 'max_user_connections' active connections",
                li.user.config.name
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
            return Err("user connection limit");
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
                return Err("no backend");
            }
        };
        tracing::debug!(%peer, backend = %backend.server.address(), thread = backend.thread_id, "backend connected");
        let ok = OkPacket {
            affected_rows: 0,
            last_insert_id: 0,
            status: status::AUTOCOMMIT,
            warnings: 0,
        };
        ok.encode(li.conn.write_buffer(), li.next_seq);
        li.conn.flush().await.map_err(|_| "closed during login")?;
        let routing = routing_for(&frontend, &li.user);
        Ok(Session {
            frontend,
            client: li.conn,
            peer,
            user: li.user,
            user_slot,
            login: li.login,
            capabilities: li.capabilities,
            scramble: li.scramble,
            primary: Some(backend),
            reader: None,
            routing,
            names: None,
            last_write_gtid: None,
            tls: li.tls,
            _address_slot: address_slot,
        })
    }

    async fn command_loop(&mut self) {
        let mut shutdown = self.frontend.shutdown_signal();
        loop {
            let max = self.frontend.shared.load().proxy.max_allowed_packet;
            let idle = Duration::from_millis(self.frontend.shared.load().proxy.idle_timeout_ms);
            let read = tokio::select! {
                read = self.client.read_request(max) => Ok(read),
                _ = shutdown.wait_for(|stop| *stop) => Err(false),
                _ = tokio::time::sleep(idle) => Err(true),
            };
            let read = match read {
                Ok(read) => read,
                Err(false) => {
                    self.send_error(0, error::SERVER_SHUTDOWN, "Server shutdown in progress")
                        .await;
                    return;
                }
                Err(true) => {
                    tracing::info!(peer = %self.peer, ?idle, "idle client disconnected");
                    let message =
                        "The client was disconnected by the server because of inactivity.";
                    self.send_error(0, error::IDLE_TIMEOUT, message).await;
                    return;
                }
            };
            let packet = match read {
                Ok(Some(Request::Whole(p))) => p,
                Ok(Some(Request::Large { seq, command })) => {
                    if let Err(Failure::Client) = self.forward_large(seq, command).await {
                        return;
                    }
                    self.client.shrink_buffers();
                    continue;
                }
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

    /// Sends the command to the backend the router picks and relays the response.
    async fn forward(&mut self, cmd: u8, packet: RawPacket) -> Result<(), Failure> {
        let statement = if cmd == command::QUERY {
            classify(&packet.first_frame()[1..])
        } else {
            Statement::Write
        };
        let mut target = match cmd {
            command::QUERY => self.routing.route(statement),
            _ => Target::Primary,
        };
        if target == Target::Reader
            && !(self.ensure_reader().await? && self.reader_has_our_writes().await)
        {
            if !self.routing.fallback_to_writer {
                let hostgroup = self.routing.reader_hostgroup.unwrap_or_default();
                let message = format!("no reader of hostgroup {hostgroup} can serve this read");
                self.send_packet_err(1, &ErrPacket::new(error::NO_BACKEND, message))
                    .await?;
                return Err(Failure::Backend);
            }
            target = Target::Primary;
        }
        if target == Target::Primary {
            self.ensure_primary().await?;
        }
        let backend = self.backend(target);
        if let Err(e) = backend.conn.write_wire(&packet.wire).await {
            return self.backend_lost(target, 1, &e.to_string()).await;
        }
        self.relay_response(target, cmd, statement, &packet.first_frame()[1..])
            .await
    }

    /// A request too large to hold (see `connection::STREAM_ABOVE`): streamed to the
    /// primary as it arrives. Whatever goes wrong midway leaves both connections
    /// mid-packet, so the session ends.
    async fn forward_large(&mut self, seq: u8, cmd: u8) -> Result<(), Failure> {
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
        if self.ensure_primary().await.is_err() {
            return Err(Failure::Client);
        }
        let max = self.frontend.shared.load().proxy.max_allowed_packet;
        let primary = self.primary.as_mut().expect("ensured");
        match stream_packet(&mut self.client, &mut primary.conn, max).await {
            Ok(_) => {
                self.relay_response(Target::Primary, cmd, Statement::Write, &[])
                    .await
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

    /// The session's connection for `target`, which must be there.
    fn backend(&mut self, target: Target) -> &mut BackendConn {
        match target {
            Target::Primary => self.primary.as_mut(),
            Target::Reader => self.reader.as_mut().map(|(b, _)| b),
        }
        .expect("ensured")
    }

    /// Relays the response to a request already sent to `target`, then learns from it.
    /// `body` is the request after its command byte (empty for streamed requests).
    async fn relay_response(
        &mut self,
        target: Target,
        cmd: u8,
        statement: Statement,
        body: &[u8],
    ) -> Result<(), Failure> {
        let Some(mut tracker) = ResponseTracker::for_command(cmd) else {
            return Ok(());
        };
        let shared = self.frontend.shared.clone();
        let max = shared.load().proxy.max_allowed_packet;
        let backend = match target {
            Target::Primary => self.primary.as_mut(),
            Target::Reader => self.reader.as_mut().map(|(b, _)| b),
        }
        .expect("ensured");
        let mut eviction = Eviction::new(&shared, backend.server.address());
        let relayed = relay(
            &mut self.client,
            &mut backend.conn,
            &mut tracker,
            max,
            &mut eviction,
        )
        .await;
        backend.conn.shrink_buffers();
        match relayed {
            Ok(outcome) => {
                if target == Target::Primary {
                    self.after_primary(cmd, statement, body, outcome).await;
                    if self.user.config.causal_reads && writes(cmd, statement) && !outcome.error {
                        self.note_write_gtid().await;
                    }
                }
                Ok(())
            }
            Err(RelayError::Client) => Err(Failure::Client),
            Err(RelayError::Backend(why)) => {
                self.backend_lost(target, tracker.next_seq(), &why).await
            }
        }
    }

    /// Learns from a statement that ran on the primary: transaction state, schema,
    /// character set, resets.
    async fn after_primary(
        &mut self,
        cmd: u8,
        statement: Statement,
        body: &[u8],
        outcome: Outcome,
    ) {
        if outcome.error {
            return;
        }
        self.routing.after(statement, outcome.status);
        match cmd {
            command::INIT_DB => {
                let name = String::from_utf8_lossy(body).into_owned();
                if let Some(primary) = self.primary.as_mut() {
                    primary.schema = Some(name.clone());
                }
                self.login.database = Some(name);
            }
            command::RESET_CONNECTION => self.reset_routing().await,
            command::QUERY if statement == Statement::SetNames => {
                self.names = Some(body.to_vec());
            }
            _ => {}
        }
    }

    /// After a write that committed (autocommit, or the COMMIT itself), remembers its GTID
    /// for read-your-writes. Inside a transaction nothing is committed yet.
    async fn note_write_gtid(&mut self) {
        if self.routing.in_transaction {
            return;
        }
        let Some(primary) = self.primary.as_mut() else {
            return;
        };
        match primary.query_text("SELECT @@last_gtid").await {
            Ok(Ok(result)) => {
                if let Some(gtid) = result
                    .rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                {
                    if !gtid.is_empty() {
                        self.last_write_gtid = Some(gtid);
                    }
                }
            }
            other => tracing::warn!(peer = %self.peer, ?other, "cannot read @@last_gtid"),
        }
    }

    /// For read-your-writes: whether the reader has applied this session's last write,
    /// waiting up to `causal_read_wait_ms` for it. Always true for other users.
    async fn reader_has_our_writes(&mut self) -> bool {
        if !self.user.config.causal_reads {
            return true;
        }
        let Some(gtid) = &self.last_write_gtid else {
            return true;
        };
        let Some((reader, replayed)) = self.reader.as_mut() else {
            return false;
        };
        if replayed.applied_gtid.as_ref() == Some(gtid) {
            return true;
        }
        let wait = self.frontend.shared.load().proxy.causal_read_wait_ms as f64 / 1000.0;
        // GTIDs are digits and dashes (and commas between domains): safe to inline
        if !gtid
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b',')
        {
            return false;
        }
        let sql = format!("SELECT MASTER_GTID_WAIT('{gtid}', {wait})");
        match reader.query_text(&sql).await {
            Ok(Ok(result))
                if result
                    .rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .as_deref()
                    == Some("0") =>
            {
                replayed.applied_gtid = Some(gtid.clone());
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "reader failed during a causal wait");
                self.reader = None;
                false
            }
        }
    }

    /// Back to a clean session: no pin, no transaction, no replayed state.
    async fn reset_routing(&mut self) {
        self.routing = routing_for(&self.frontend, &self.user);
        self.names = None;
        if let Some((reader, _)) = self.reader.take() {
            self.release(reader).await;
        }
    }

    /// Makes sure the session has a primary connection to a server that is still in its
    /// hostgroup, connecting anew after a loss or a failover. A failure is reported to the
    /// client.
    async fn ensure_primary(&mut self) -> Result<(), Failure> {
        let hostgroup = self.user.config.default_hostgroup;
        if let Some(primary) = &self.primary {
            let address = primary.server.address();
            // An open transaction finishes where it began (or fails with its server).
            if self.routing.in_transaction || self.frontend.shared.is_member(hostgroup, &address) {
                return Ok(());
            }
            // The server left the hostgroup (a new writer was elected): statements must
            // not go on reaching it. Whatever the session set on it stays behind.
            tracing::info!(peer = %self.peer, server = %address, hostgroup, "leaving a server that left the hostgroup");
            let old = self.primary.take().expect("checked");
            self.release(old).await;
        }
        match self
            .frontend
            .pool
            .acquire(&self.frontend.shared, hostgroup, &self.login)
            .await
        {
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

    /// Makes sure the session has a reader connection in step with its state. Returns
    /// false when no reader can serve and the read should go to the primary instead.
    async fn ensure_reader(&mut self) -> Result<bool, Failure> {
        let Some(hostgroup) = self.routing.reader_hostgroup else {
            return Ok(false);
        };
        let shared = self.frontend.shared.clone();
        if let Some((reader, _)) = &self.reader {
            if !shared.is_member(hostgroup, &reader.server.address()) {
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
                    self.reader = Some((b, Replayed::default()));
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, hostgroup, error = %e, "no reader; reading from the primary");
                    return Ok(false);
                }
            }
        }
        match self.replay_on_reader().await {
            Ok(()) => Ok(true),
            Err(why) => {
                tracing::warn!(peer = %self.peer, error = %why, "reader connection failed; reading from the primary");
                self.reader = None;
                Ok(false)
            }
        }
    }

    /// Brings the reader connection's schema and character set in line with the session's.
    async fn replay_on_reader(&mut self) -> Result<(), String> {
        let (reader, replayed) = self.reader.as_mut().expect("ensured");
        if reader.schema != self.login.database {
            if let Some(schema) = &self.login.database {
                reader.run(command::INIT_DB, schema.as_bytes()).await?;
            }
            reader.schema = self.login.database.clone();
        }
        if replayed.names != self.names {
            if let Some(names) = &self.names {
                reader.run(command::QUERY, names).await?;
            }
            replayed.names = self.names.clone();
        }
        Ok(())
    }

    /// Tells the client its statement died with the backend connection, and forgets the
    /// connection; the next command gets a new one.
    async fn backend_lost(&mut self, target: Target, seq: u8, why: &str) -> Result<(), Failure> {
        let backend = match target {
            Target::Primary => {
                self.routing.in_transaction = false;
                self.primary.take()
            }
            Target::Reader => self.reader.take().map(|(b, _)| b),
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
            Ok(b) => self.primary = Some(b),
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

    /// Hands a backend connection back to the pool (which resets it for the next user).
    async fn release(&self, conn: BackendConn) {
        let settings = self.frontend.shared.load().pool.clone();
        self.frontend.pool.release(conn, &settings).await;
    }

    async fn send_error(&mut self, seq: u8, code: error::Code, message: &str) {
        send_err(&mut self.client, seq, self.capabilities, code, message).await;
    }

    async fn send_packet_err(&mut self, seq: u8, err: &ErrPacket) -> Result<(), Failure> {
        err.encode(self.client.write_buffer(), seq, self.capabilities);
        self.client.flush().await.map_err(|_| Failure::Client)
    }

    async fn close(mut self) {
        if let Some(backend) = self.primary.take() {
            self.release(backend).await;
        }
        if let Some((backend, _)) = self.reader.take() {
            self.release(backend).await;
        }
        self.client.shutdown().await;
    }
}

/// Whether a command may have written (and so moves the session's last write GTID).
fn writes(cmd: u8, statement: Statement) -> bool {
    match cmd {
        command::QUERY => statement != Statement::Read && statement != Statement::SetNames,
        command::STMT_EXECUTE => true,
        _ => false,
    }
}

/// The routing state a fresh session of `user` starts with.
fn routing_for(frontend: &Frontend, user: &UserEntry) -> SessionRouting {
    SessionRouting::for_user(
        &frontend.shared.load().galera,
        user.config.default_hostgroup,
        user.config.split_reads,
        user.config.transaction_persistent,
    )
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
