//! The phase before the command loop: admitting a client, its login (see `handshake`),
//! the session's first backend connection and the final OK; and the refusals a client
//! gets instead of a session.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::backend::Login;
use crate::connection::Connection;
use crate::connlog::Entry;
use crate::frontend::admission::{AddressSlot, Refusal};
use crate::frontend::authenticate::LoginReadError;
use crate::frontend::handshake::{self, send_err, Door, HandshakeError, LoggedIn, LoginFailure};
use crate::frontend::registry::Registry;
use crate::frontend::{ClientSlot, Frontend};
use crate::protocol::compressed::Codec;
use crate::protocol::constants::{capability, error, status};
use crate::protocol::packets::OkPacket;
use crate::router::gtid::GtidPosition;
use crate::router::SessionRouting;
use crate::rules::variables::Values;
use crate::rules::Analyzer;
use crate::runtime::UserEntry;

use super::connections::failover_wait;
use super::statements::ClientStatements;
use super::{routing_for, Session};

/// Serves one client from its first byte to its last.
pub(in crate::frontend) async fn run(
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
        Err(refusal) => return Box::pin(refuse_before_login(&frontend, tcp, peer, refusal)).await,
    };
    let id = frontend.next_connection_id();
    let timeout = Duration::from_millis(runtime.proxy.handshake_timeout_ms);
    // The login, the session's start and its close are boxed: a future holds the largest
    // state of any of its steps for its whole life, and an idle session should not carry
    // the login's.
    let door = Door::clients(&runtime, &frontend.sha2_cache);
    let login =
        tokio::time::timeout(timeout, Box::pin(handshake::login(tcp, peer, &door, id))).await;
    let logged_in = match login {
        Ok(Ok(client)) => client,
        Ok(Err(failure)) => return Box::pin(login_failed(&frontend, peer, failure)).await,
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
    let mut session = match Box::pin(Session::start(
        frontend.clone(),
        logged_in,
        peer,
        address_slot,
        id,
    ))
    .await
    {
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
    Box::pin(session.close()).await;
    drop(slot);
}

/// Logs a failed login and counts it against the address, then tells the client.
async fn login_failed(frontend: &Frontend, peer: SocketAddr, failure: LoginFailure) {
    let error = &failure.error;
    tracing::info!(%peer, %error, "login failed");
    let mut entry = Entry::new(peer, "refused");
    let counts = match error {
        HandshakeError::Denied { user, reason, tls } => {
            if matches!(*reason, "wrong password" | "unknown user") {
                Registry::count(&frontend.counters.denied_password);
            }
            entry.user = Some(user);
            entry.reason = Some(reason);
            entry.tls_version = tls.as_ref().map(|t| t.version.as_str());
            entry.tls_cipher = tls.as_ref().map(|t| t.cipher.as_str());
            true
        }
        HandshakeError::Read(LoginReadError::Protocol(_)) => {
            entry.reason = Some("bad handshake");
            true
        }
        HandshakeError::Tls(_) => {
            Registry::count(&frontend.counters.tls_failures);
            entry.reason = Some("TLS handshake failed");
            true
        }
        HandshakeError::Read(LoginReadError::Closed | LoginReadError::Io(_)) => {
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
pub(in crate::frontend) async fn refuse_paused(
    frontend: &Frontend,
    tcp: TcpStream,
    peer: SocketAddr,
) {
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
pub(in crate::frontend) async fn refuse_too_many(
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
        let wait = failover_wait(&frontend.shared.peek(), login_hostgroup);
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
        if let Some(codec) = compression(li.capabilities, li.zstd_level, &frontend) {
            tracing::debug!(%peer, algorithm = codec.name(), level = codec.level(), "compressed protocol");
            li.conn.enable_compression(codec);
        }
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
            if let Err(why) = backend
                .sync_session(li.login.database.as_deref(), None, &Values::new())
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
            transaction: Default::default(),
            not_serving: None,
            statements: ClientStatements::default(),
            server_status: status::AUTOCOMMIT,
            last_outcome: None,
            last_counts: Default::default(),
            added_status: 0,
            _address_slot: address_slot,
        })
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

/// The compression a client negotiated: zstd at the level it asked for (as MySQL grants
/// it), else zlib at `compression_level`; none when it asked for neither.
fn compression(capabilities: u32, zstd_level: Option<u8>, frontend: &Frontend) -> Option<Codec> {
    if capabilities & capability::ZSTD_COMPRESSION_ALGORITHM != 0 {
        let level = zstd_level.map_or(DEFAULT_ZSTD_LEVEL, i32::from);
        return Some(Codec::Zstd(level.clamp(1, MAX_ZSTD_LEVEL)));
    }
    if capabilities & capability::COMPRESS != 0 {
        let level = frontend.shared.peek().proxy.compression_level;
        return Some(Codec::Zlib(level.clamp(1, 9)));
    }
    None
}

/// zstd's level when a client names none (MySQL's `protocol_compression_level` default).
const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The highest level MySQL accepts.
const MAX_ZSTD_LEVEL: i32 = 22;
