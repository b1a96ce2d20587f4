//! A client's life after its login: admission, the final OK, the command loop, the end.
//! Each command goes, as the bytes the client sent, to the backend connection the router
//! picks (see `backends`: the primary — the user's default hostgroup, the writer — or a
//! reader), and the response comes back through `relay`. COM_CHANGE_USER re-runs the login
//! (`change_user`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::backend::{BackendConn, Login};
use crate::connection::{Connection, ReadError, Request};
use crate::protocol::constants::{command, error, status};
use crate::protocol::frame::FrameError;
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::protocol::response::Outcome;
use crate::router::gtid::GtidPosition;
use crate::router::SessionRouting;
use crate::rules::variables::Values;
use crate::rules::Analyzer;
use crate::runtime::UserEntry;

use super::admission::{AddressSlot, Refusal};
use super::handshake::{self, send_err, Door, HandshakeError, LoggedIn, LoginFailure, TlsInfo};
use super::prepared::ClientStatements;
use super::registry::{self, Listed, Registry};
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
    let login = tokio::time::timeout(
        timeout,
        handshake::login(tcp, peer, &Door::clients(&runtime), id),
    )
    .await;
    let logged_in = match login {
        Ok(Ok(client)) => client,
        Ok(Err(failure)) => return login_failed(&frontend, peer, failure).await,
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
    let mut session =
        match Session::start(frontend.clone(), logged_in, peer, address_slot, id).await {
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

/// Logs a failed login and counts it against the address, then tells the client.
async fn login_failed(frontend: &Frontend, peer: SocketAddr, failure: LoginFailure) {
    let error = &failure.error;
    tracing::info!(%peer, %error, "login failed");
    let mut entry = Entry::new(peer, "refused");
    let counts = match error {
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
            Registry::count(&frontend.counters.tls_failures);
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
        Registry::count(&frontend.counters.logins_failed);
        let policy = frontend.shared.load().throttle.clone();
        if let Some(block) = frontend.admission.login_failed(peer.ip(), &policy) {
            tracing::warn!(client = %peer.ip(), ?block, "too many failed logins: address refused");
        }
    }
    failure.answer().await;
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
    frontend.counters.refuse(reason);
    tracing::info!(%peer, reason, "client refused before login");
    let mut entry = Entry::new(peer, "refused");
    entry.reason = Some(reason);
    frontend.connlog.record(&entry);
    let mut conn = Connection::new(crate::connection::Stream::Tcp(tcp));
    send_err(&mut conn, 0, 0, code, &message).await;
    conn.shutdown().await;
}

/// Refuses a connection while the proxy is paused (`PROXYSQL PAUSE` on the admin port).
pub(super) async fn refuse_paused(frontend: &Frontend, tcp: TcpStream, peer: SocketAddr) {
    frontend.counters.refuse("paused");
    tracing::info!(%peer, "client refused: the proxy is paused");
    let mut entry = Entry::new(peer, "refused");
    entry.reason = Some("paused");
    frontend.connlog.record(&entry);
    let mut conn = Connection::new(crate::connection::Stream::Tcp(tcp));
    let message = "The proxy is paused (PROXYSQL PAUSE): not accepting new connections";
    send_err(&mut conn, 0, 0, error::SERVER_SHUTDOWN, message).await;
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
    frontend.counters.refuse("connection limit");
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

/// Remembers how to log in as this session's user for `min_idle_per_server`, and opens
/// the idle connections at once the first time (the sweeper keeps them up after).
fn keep_warm(frontend: &Arc<Frontend>, login: &Login, primary: u32, reader: Option<u32>) {
    let mut first = false;
    for hostgroup in std::iter::once(primary).chain(reader) {
        first |= frontend.pool.remember(hostgroup, login);
    }
    if first {
        let frontend = frontend.clone();
        tokio::spawn(async move { frontend.pool.top_up(&frontend.shared).await });
    }
}

/// A user's share of its `max_connections`, held while the session is logged in as it.
pub(super) struct UserSlot(Arc<UserEntry>);

impl UserSlot {
    pub(super) fn acquire(user: &Arc<UserEntry>) -> Option<UserSlot> {
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

pub(super) struct Session {
    pub(super) frontend: Arc<Frontend>,
    pub(super) client: Connection,
    pub(super) peer: SocketAddr,
    pub(super) user: Arc<UserEntry>,
    pub(super) user_slot: UserSlot,
    pub(super) login: Login,
    pub(super) capabilities: u32,
    pub(super) scramble: [u8; 20],
    /// The connection to the user's default hostgroup (the writer, for split users).
    pub(super) primary: Option<BackendConn>,
    /// The connection to the readers, with the session state replayed on it so far.
    pub(super) reader: Option<(BackendConn, Replayed)>,
    pub(super) routing: SessionRouting,
    /// The last `SET NAMES` that succeeded, to replay on other connections.
    pub(super) names: Option<Vec<u8>>,
    /// The followed session variables the session set, to replay on other connections.
    pub(super) variables: Values,
    /// For read-your-writes: the GTID of this session's last committed write.
    pub(super) last_write_gtid: GtidPosition,
    pub(super) tls: Option<TlsInfo>,
    /// Analyses statements; its buffer is reused from one statement to the next.
    pub(super) analyzer: Analyzer,
    /// This session's line in the processlist.
    pub(super) listed: Listed,
    /// The session left state on its primary connection: it is not multiplexed.
    pub(super) bound: bool,
    /// The last statement wrote: its connection serves the next statement too.
    pub(super) hold_next: bool,
    /// The client's prepared statements.
    pub(super) statements: ClientStatements,
    /// The status flags of the primary's last reply (for answers the proxy gives itself).
    pub(super) server_status: u16,
    /// Status flags to add to the EOFs of the next response (what the proxy knows and the
    /// server answering it cannot: SERVER_STATUS_METADATA_CHANGED after a re-prepare).
    pub(super) added_status: u16,
    /// How the last relayed response ended.
    pub(super) last_outcome: Option<Outcome>,
    /// Latency histograms of the hostgroups this session used.
    pub(super) histograms: Vec<(u32, prometheus::Histogram)>,
    /// This connection's share of its address's connection cap.
    pub(super) _address_slot: AddressSlot,
}

/// Session state applied to a reader connection (its schema is on the connection itself).
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// The hostgroup the connection was taken for.
    pub(super) hostgroup: u32,
}

/// Why the wait for the next command ended without one.
enum Interrupt {
    Shutdown,
    Killed,
    Idle,
}

/// Why a command could not be completed.
pub(super) enum Failure {
    /// The client is gone or broke the protocol: the session ends.
    Client,
    /// The backend connection failed; the client was told, the session goes on.
    Backend,
    /// A reader failed before answering a read (the reason): nothing reached the client
    /// yet, the caller sends the read again or tells the client.
    Unanswered(String),
}

impl Session {
    /// Finishes the login: connects the backend and sends the final OK (or the error).
    async fn start(
        frontend: Arc<Frontend>,
        mut li: LoggedIn,
        peer: SocketAddr,
        address_slot: AddressSlot,
        id: u32,
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
            frontend.counters.refuse("user connection limit");
            tracing::warn!(%peer, user = %li.user.config.name, "client refused: user connection limit");
            return Err("user connection limit");
        };
        let routing = routing_for(&frontend, &li.user);
        let login_hostgroup = login_hostgroup(&frontend, &li.user, &routing);
        let wait = super::backends::failover_wait(&frontend.shared.peek(), login_hostgroup);
        let backend = match frontend
            .pool
            .acquire_through_failover(&frontend.shared, login_hostgroup, &li.login, wait)
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
        let runtime = frontend.shared.load();
        if runtime.pool.min_idle_per_server > 0 {
            keep_warm(
                &frontend,
                &li.login,
                li.user.config.default_hostgroup,
                routing.reader_hostgroup,
            );
        }
        // multiplexing: the login's connection goes back until the first statement
        let backend = if runtime.pool.multiplex {
            frontend.pool.put_back(backend, &runtime.pool);
            None
        } else {
            // a connection from the pool may carry another session's character set or
            // variables (given back without a reset while multiplexing was on)
            let mut backend = backend;
            if let Err(why) = super::backends::sync(
                &mut backend,
                li.login.database.as_deref(),
                None,
                &Values::new(),
            )
            .await
            {
                tracing::warn!(%peer, error = %why, "backend connection failed while setting the session up");
                return Err("backend lost");
            }
            Some(backend)
        };
        let listed =
            frontend
                .registry
                .list(id, &li.user.config.name, peer, li.login.database.clone());
        Registry::count(&frontend.counters.logins);
        Ok(Session {
            frontend,
            client: li.conn,
            peer,
            user: li.user,
            user_slot,
            login: li.login,
            capabilities: li.capabilities,
            scramble: li.scramble,
            primary: backend,
            reader: None,
            routing,
            names: None,
            variables: Values::new(),
            last_write_gtid: GtidPosition::default(),
            tls: li.tls,
            analyzer: Analyzer::default(),
            listed,
            histograms: Default::default(),
            bound: false,
            hold_next: false,
            statements: ClientStatements::default(),
            server_status: status::AUTOCOMMIT,
            last_outcome: None,
            added_status: 0,
            _address_slot: address_slot,
        })
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.frontend.shared.peek().proxy.idle_timeout_ms)
    }

    async fn command_loop(&mut self) {
        // What can interrupt a read lives as long as the loop: made anew for every
        // statement it would register and deregister with the timer wheel each time. The
        // idle timer is lazy: it fires at the deadline it was set for and is moved on if
        // the client was active since.
        let entry = self.listed.entry.clone();
        let interrupted = entry.interrupted();
        tokio::pin!(interrupted);
        // the shutdown may have been announced before this session was listed
        if *self.frontend.shutdown_signal().borrow() {
            self.send_error(0, error::SERVER_SHUTDOWN, "Server shutdown in progress")
                .await;
            return;
        }
        let mut idle = self.idle_timeout();
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        loop {
            let (max, configured) = {
                let proxy = &self.frontend.shared.peek().proxy;
                (
                    proxy.max_allowed_packet,
                    Duration::from_millis(proxy.idle_timeout_ms),
                )
            };
            let last_active = tokio::time::Instant::now();
            if configured != idle {
                idle = configured;
                idle_timer.as_mut().reset(last_active + idle);
            }
            let read = loop {
                let interrupted = tokio::select! {
                    read = self.client.read_request(max) => break read,
                    why = &mut interrupted => match why {
                        registry::Interrupt::Killed => Interrupt::Killed,
                        registry::Interrupt::Shutdown => Interrupt::Shutdown,
                    },
                    _ = &mut idle_timer => Interrupt::Idle,
                };
                match interrupted {
                    Interrupt::Idle if last_active.elapsed() < idle => {
                        idle_timer.as_mut().reset(last_active + idle);
                    }
                    Interrupt::Idle => {
                        tracing::info!(peer = %self.peer, ?idle, "idle client disconnected");
                        let message =
                            "The client was disconnected by the server because of inactivity.";
                        self.send_error(0, error::IDLE_TIMEOUT, message).await;
                        return;
                    }
                    Interrupt::Shutdown => {
                        self.send_error(0, error::SERVER_SHUTDOWN, "Server shutdown in progress")
                            .await;
                        return;
                    }
                    Interrupt::Killed => {
                        tracing::info!(peer = %self.peer, id = entry.id, "session killed from the admin port");
                        self.send_error(0, error::CONNECTION_KILLED, "Connection was killed")
                            .await;
                        return;
                    }
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

    /// Hands a backend connection back to the pool (which resets it for the next user).
    pub(super) async fn release(&self, conn: BackendConn) {
        let settings = self.frontend.shared.load().pool.clone();
        self.frontend.pool.release(conn, &settings).await;
    }

    pub(super) async fn send_error(&mut self, seq: u8, code: error::Code, message: &str) {
        self.frontend.counters.error(code.0);
        send_err(&mut self.client, seq, self.capabilities, code, message).await;
    }

    pub(super) async fn send_packet_err(
        &mut self,
        seq: u8,
        err: &ErrPacket,
    ) -> Result<(), Failure> {
        self.frontend.counters.error(err.code);
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

/// The routing state a fresh session of `user` starts with.
/// Where a login checks that the user can reach a server (the account, the schema): the
/// default hostgroup, or — while it has no server at all (every Galera node down) — the
/// readers of a session whose reads are split off, so that reads go on being served. Only
/// when multiplexing: the login's connection then goes back to the pool, and the session's
/// first write looks for the writer as any statement does.
fn login_hostgroup(frontend: &Frontend, user: &UserEntry, routing: &SessionRouting) -> u32 {
    let default = user.config.default_hostgroup;
    match routing.reader_hostgroup {
        Some(readers)
            if frontend.shared.peek().pool.multiplex
                && !frontend.shared.has_candidates(default)
                && frontend.shared.has_candidates(readers) =>
        {
            readers
        }
        _ => default,
    }
}

pub(super) fn routing_for(frontend: &Frontend, user: &UserEntry) -> SessionRouting {
    SessionRouting::for_user(
        &frontend.shared.load().galera,
        user.config.default_hostgroup,
        user.config.split_reads,
        user.config.transaction_persistent,
    )
}

/// Commands that must not pass through a proxy: replication streams, server shutdown,
/// and the obsolete internal ones.
pub(super) fn is_refused(cmd: u8) -> bool {
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
