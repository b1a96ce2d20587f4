//! One connection to a backend: TCP (and TLS when the server is configured for it), the
//! MySQL login as the client's user, then a plain packet [`Connection`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::connection::{Connection, ReadError, Stream};
use crate::protocol::auth::{native_proof, ProvenKey, NATIVE_PASSWORD};
use crate::protocol::constants::{capability, command, header};
use crate::protocol::handshake::{
    encode_ssl_request, AuthSwitchRequest, HandshakeResponse, InitialHandshake,
};
use crate::protocol::packets::ErrPacket;
use crate::protocol::response::{Outcome, Progress, ResponseTracker};
use crate::protocol::text::{decode_result, TextResult};
use crate::rules::variables::Values;
use crate::runtime::{EvictionWaker, Evictions, ServerTarget};

use super::count;
use super::statements::ConnStatements;

/// Largest packet accepted from a backend during login.
const LOGIN_PACKET_LIMIT: usize = 64 * 1024;
/// The `max_packet_size` announced to backends: the protocol's maximum.
const MAX_PACKET: u32 = 1 << 30;

/// Capabilities a client may ask for that the proxy passes on to its backend connection,
/// because they change what the server sends and the client must get what it asked for.
const MIRRORED: u32 = capability::FOUND_ROWS
    | capability::LONG_FLAG
    | capability::NO_SCHEMA
    | capability::LOCAL_FILES
    | capability::IGNORE_SPACE
    | capability::INTERACTIVE
    | capability::MULTI_STATEMENTS
    | capability::MULTI_RESULTS
    | capability::PS_MULTI_RESULTS
    | capability::SESSION_TRACK;

/// Capabilities the proxy always uses toward backends.
const REQUIRED: u32 = capability::LONG_PASSWORD
    | capability::PROTOCOL_41
    | capability::TRANSACTIONS
    | capability::SECURE_CONNECTION
    | capability::PLUGIN_AUTH
    | capability::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | capability::CONNECT_ATTRS;

/// Adds `last_gtid` to the session's tracked system variables, whatever they are.
const TRACK_GTID: &str = "session_track_system_variables = \
    IF(@@session.session_track_system_variables = '', 'last_gtid', \
    CONCAT(@@session.session_track_system_variables, ',last_gtid'))";

/// Who to log in as, and the session the client asked for.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    /// `None` for a user without a password.
    pub key: Option<ProvenKey>,
    pub database: Option<String>,
    pub charset: u8,
    /// The client's capability flags; the relevant ones are mirrored.
    pub client_capabilities: u32,
    pub connect_attrs: Option<Vec<u8>>,
    /// Turn the server's session-state tracking on for connections logged in this way
    /// (`[pool] track_session_state`, see [`BackendConn::track_state_changes`]).
    pub track_session_state: bool,
    /// Have the server report each commit's GTID in its OK packet (`last_gtid` added to
    /// the tracked system variables; session tracking negotiated whatever the client did):
    /// how a session doing read-your-writes learns its write's position without a
    /// statement after it (see [`crate::protocol::session_state`]).
    pub track_gtid: bool,
}

/// Why a backend connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("{0} did not complete the login within {1:?}")]
    Timeout(String, Duration),
    #[error("TLS to {0} failed: {1}")]
    Tls(String, String),
    #[error("{0} broke the protocol during login: {1}")]
    Protocol(String, String),
    /// The server answered with an error (bad credentials, too many connections, ...).
    /// This one is the client's business: it is forwarded as is.
    #[error("{0} refused the login: {1}")]
    Refused(String, ErrPacket),
}

/// Holds one place in a server's `max_connections` for as long as the connection lives.
#[derive(Debug)]
pub(super) struct Slot(Arc<ServerTarget>);

impl Slot {
    /// Takes a place; returns it with the number of connections open before it.
    pub(super) fn take(server: &Arc<ServerTarget>) -> (Slot, u32) {
        let before = server.connections.fetch_add(1, Ordering::Relaxed);
        (Slot(server.clone()), before)
    }

    /// Takes a slot only while fewer than the server's max_connections are open, so the
    /// count never goes over it, even for a moment.
    pub(super) fn try_take(server: &Arc<ServerTarget>) -> Option<Slot> {
        server
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < server.max_connections).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(server.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A logged-in backend connection.
pub struct BackendConn {
    pub conn: Connection,
    pub server: Arc<ServerTarget>,
    /// The server's thread id for this connection (for KILL and logs).
    pub thread_id: u32,
    /// The connection's current default schema, as far as the proxy set it.
    pub schema: Option<String>,
    /// The `SET NAMES …` statement in force on it since its login or last reset, if any.
    pub names: Option<Vec<u8>>,
    /// The followed session variables set on it since its login or last reset.
    pub variables: Values,
    /// Whether the server flags session state changes on this connection
    /// (`session_track_state_change`); see [`BackendConn::track_state_changes`].
    pub tracking: bool,
    /// Whether it should (the login asked for it and the client negotiated tracking).
    wants_tracking: bool,
    /// Whether the connection negotiated session tracking: its OK packets carry the info
    /// text and session state in the tracking form.
    pub session_track: bool,
    /// Whether the server reports `last_gtid` in the session state of OK packets here:
    /// set up by the proxy, so the proxy takes it out again before the client sees it.
    /// Cleared when the client sets the tracked list itself.
    pub tracks_gtid: bool,
    wants_gtid: bool,
    /// When the login happened (for the pool's max lifetime).
    pub created: std::time::Instant,
    /// Which sessions this connection can serve: it was logged in for this.
    pub(super) key: PoolKey,
    /// Wakes a statement waiting here when the monitor finds the server unreachable.
    pub eviction: EvictionWaker,
    /// The prepared statements the server holds for this connection.
    pub statements: ConnStatements,
    _slot: Slot,
}

/// What makes backend connections interchangeable: same server, same user, and the same
/// capabilities and character set negotiated at login (they shape what the server sends).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    pub address: String,
    pub user: String,
    pub capabilities: u32,
    pub charset: u8,
}

impl PoolKey {
    pub(super) fn new(server: &ServerTarget, login: &Login) -> PoolKey {
        PoolKey {
            address: server.address().to_string(),
            user: login.user.clone(),
            capabilities: mirrored(login),
            charset: login.charset,
        }
    }
}

impl BackendConn {
    /// Opens a connection to one given server regardless of its hostgroups (the monitor's
    /// way in; sessions go through the pool).
    pub async fn connect(
        server: &Arc<ServerTarget>,
        login: &Login,
        tls: Option<&Arc<ClientConfig>>,
        timeout: Duration,
    ) -> Result<BackendConn, BackendError> {
        let (slot, _) = Slot::take(server);
        BackendConn::open(slot, login, tls, timeout).await
    }

    /// Runs one statement and decodes its (small) text result; for the monitor, never for
    /// client traffic. An ERR from the server is `Ok(Err(..))`.
    pub async fn query_text(
        &mut self,
        sql: &str,
    ) -> Result<Result<TextResult, ErrPacket>, BackendError> {
        let packets = self.exchange(command::QUERY, sql.as_bytes()).await?;
        let slices: Vec<&[u8]> = packets.iter().map(|p| &p[..]).collect();
        decode_result(&slices)
            .map_err(|e| BackendError::Protocol(self.server.address().to_string(), e.to_string()))
    }

    /// Asks the server to flag, in the status of each OK packet, a statement that changed
    /// the session's state (`SERVER_SESSION_STATE_CHANGED`): how the proxy learns of state
    /// its analysis cannot see, such as a user variable set inside a procedure. Only where
    /// the client negotiated session tracking: without it the server never sets the flag,
    /// and the extra bytes it adds to OK packets are what such a client expects. A reset
    /// turns it off again (`tracking` is then false). Off unless `[pool]
    /// track_session_state`: measured, it made the proxy spend about a third more CPU per
    /// prepared point select (same syscalls; the cause is not known yet).
    ///
    /// In the same statement, where the login asks for it, `last_gtid` joins the tracked
    /// system variables (see [`Login::track_gtid`]).
    pub async fn track_state_changes(&mut self) -> Result<(), String> {
        let state = self.wants_tracking && !self.tracking;
        let gtid = self.wants_gtid && !self.tracks_gtid;
        let assignments: Vec<&str> = [
            state.then_some("session_track_state_change = ON"),
            gtid.then_some(TRACK_GTID),
        ]
        .into_iter()
        .flatten()
        .collect();
        if assignments.is_empty() {
            return Ok(());
        }
        let set = format!("SET SESSION {}", assignments.join(", "));
        self.run(command::QUERY, set.as_bytes()).await?;
        self.tracking |= state;
        self.tracks_gtid |= gtid;
        Ok(())
    }

    /// Brings the connection's character set, followed session variables and schema in
    /// line with a client session's, each only where it differs: what lets a pooled
    /// connection serve whichever session borrows it.
    pub async fn sync_session(
        &mut self,
        schema: Option<&str>,
        names: Option<&[u8]>,
        variables: &Values,
    ) -> Result<(), String> {
        if self.names.as_deref() != names {
            match names {
                Some(names) => {
                    self.run(command::QUERY, names).await?;
                    count(&self.server.stats.set_names);
                }
                // no statement unsets a SET NAMES: start the connection over
                None => self.reset().await?,
            }
            self.names = names.map(<[u8]>::to_vec);
        }
        self.track_state_changes().await?;
        if let Some(set) = crate::rules::variables::replay(&self.variables, variables) {
            self.run(command::QUERY, set.as_bytes()).await?;
            self.variables = variables.clone();
        }
        if self.schema.as_deref() != schema {
            if let Some(schema) = schema {
                self.run(command::INIT_DB, schema.as_bytes()).await?;
                count(&self.server.stats.init_db);
                self.schema = Some(schema.to_owned());
            }
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION: the session on the server starts over (and state tracking is
    /// turned back on).
    pub async fn reset(&mut self) -> Result<(), String> {
        self.run(command::RESET_CONNECTION, &[]).await?;
        self.after_reset().await
    }

    /// Forgets what a COM_RESET_CONNECTION (the proxy's or the client's own) wiped on the
    /// server, and turns state tracking back on.
    pub async fn after_reset(&mut self) -> Result<(), String> {
        self.statements.clear();
        self.names = None;
        self.variables.clear();
        self.tracking = false;
        self.tracks_gtid = false;
        self.track_state_changes().await
    }

    /// Runs a command of the proxy's own (replaying session state) whose answer is OK or
    /// ERR; the answer is consumed here, never forwarded.
    pub async fn run(&mut self, cmd: u8, body: &[u8]) -> Result<(), String> {
        let packets = self.exchange(cmd, body).await.map_err(|e| e.to_string())?;
        match packets.last().and_then(|p| p.first()) {
            Some(&header::ERR) => Err(ErrPacket::decode(packets.last().expect("checked"))
                .map(|e| e.to_string())
                .unwrap_or_else(|e| e.to_string())),
            _ => Ok(()),
        }
    }

    /// Prepares `text` for the proxy's own use: the server's statement id, or its refusal.
    pub async fn prepare(&mut self, text: &[u8]) -> Result<Result<u32, ErrPacket>, String> {
        let packets = self
            .exchange(command::STMT_PREPARE, text)
            .await
            .map_err(|e| e.to_string())?;
        let first = packets.first().ok_or("an empty answer to a prepare")?;
        if first.first() == Some(&header::ERR) {
            return Ok(Err(ErrPacket::decode(first).map_err(|e| e.to_string())?));
        }
        let ok = crate::protocol::statement::PrepareOk::decode(first).map_err(|e| e.to_string())?;
        Ok(Ok(ok.statement_id))
    }

    /// Sends one command and collects the payloads of its whole response.
    async fn exchange(&mut self, cmd: u8, body: &[u8]) -> Result<Vec<bytes::Bytes>, BackendError> {
        let address = self.server.address().to_string();
        self.send_command(cmd, body)
            .await
            .map_err(|e| BackendError::Connect(address.clone(), e))?;
        read_response(&mut self.conn, &address, cmd).await
    }

    /// Reads the response to a command the proxy sent for itself and throws it away as it
    /// arrives, however large (a mirrored statement's result); says how it ended. A LOCAL
    /// INFILE request is answered with an empty file.
    pub async fn discard_response(&mut self, cmd: u8) -> Result<Outcome, BackendError> {
        let tracker = self.tracker_for(cmd)?;
        self.drain(tracker).await.map(|(outcome, _)| outcome)
    }

    /// Reads the response to a command the proxy sent again for a client (a transaction
    /// replayed) and throws it away, keeping its fingerprint (see
    /// `ResponseTracker::fingerprint_results`) to compare with the first answer's.
    pub async fn fingerprint_response(&mut self, cmd: u8) -> Result<(Outcome, u64), BackendError> {
        let mut tracker = self.tracker_for(cmd)?;
        tracker.fingerprint_results();
        let (outcome, tracker) = self.drain(tracker).await?;
        Ok((outcome, tracker.fingerprint().expect("asked for")))
    }

    fn tracker_for(&self, cmd: u8) -> Result<ResponseTracker, BackendError> {
        ResponseTracker::for_command(cmd).ok_or_else(|| {
            BackendError::Protocol(self.server.address().to_string(), "no response".into())
        })
    }

    /// Reads one response through `tracker`, throwing its bytes away as they arrive.
    async fn drain(
        &mut self,
        mut tracker: ResponseTracker,
    ) -> Result<(Outcome, ResponseTracker), BackendError> {
        let address = self.server.address().to_string();
        let broken = |why: String| BackendError::Protocol(address.clone(), why);
        loop {
            let buf = self.conn.buffered();
            let scan = tracker.scan(buf).map_err(|e| broken(e.to_string()))?;
            let _ = buf.split_to(scan.complete);
            match scan.end {
                Some(Progress::Done(outcome)) => return Ok((outcome, tracker)),
                Some(Progress::LocalInfile) => {
                    let seq = tracker.next_seq();
                    self.conn.queue_packet(seq, &[]);
                    self.conn
                        .flush()
                        .await
                        .map_err(|e| BackendError::Connect(address.clone(), e))?;
                    tracker.file_sent(seq.wrapping_add(1));
                    continue;
                }
                _ => {}
            }
            match self.conn.fill().await {
                Ok(0) => {
                    return Err(BackendError::Connect(
                        address,
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(BackendError::Connect(address, e)),
            }
        }
    }

    /// Sends one command of the proxy's own (its reply is read with [`read_response`]).
    pub async fn send_command(&mut self, cmd: u8, body: &[u8]) -> std::io::Result<()> {
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(cmd);
        payload.extend_from_slice(body);
        self.conn.queue_packet(0, &payload);
        self.conn.flush().await
    }

    /// Queues COM_STMT_CLOSE of a statement of this connection; it has no reply and goes
    /// out ahead of the next command.
    pub fn queue_close(&mut self, backend_id: u32) {
        let mut payload = [command::STMT_CLOSE, 0, 0, 0, 0];
        payload[1..].copy_from_slice(&backend_id.to_le_bytes());
        self.conn.queue_packet(0, &payload);
    }

    pub(super) async fn open(
        slot: Slot,
        login: &Login,
        tls: Option<&Arc<ClientConfig>>,
        timeout: Duration,
    ) -> Result<BackendConn, BackendError> {
        let address = slot.0.address().to_string();
        let opened = tokio::time::timeout(timeout, handshake(&slot.0, login, tls)).await;
        let stats = &slot.0.stats;
        let counter = match &opened {
            Ok(Ok(_)) => {
                let open = slot.0.connections.load(Ordering::Relaxed);
                stats
                    .max_connections_used
                    .fetch_max(open, Ordering::Relaxed);
                &stats.connect_ok
            }
            _ => &stats.connect_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut conn = match opened {
            Ok(Ok((conn, thread_id, caps))) => BackendConn {
                conn,
                key: PoolKey::new(&slot.0, login),
                server: slot.0.clone(),
                thread_id,
                schema: login.database.clone(),
                names: None,
                variables: Values::new(),
                tracking: false,
                wants_tracking: login.track_session_state
                    && login.client_capabilities & capability::SESSION_TRACK != 0,
                session_track: caps & capability::SESSION_TRACK != 0,
                tracks_gtid: false,
                wants_gtid: login.track_gtid && caps & capability::SESSION_TRACK != 0,
                created: std::time::Instant::now(),
                eviction: Evictions::register(&slot.0.stats),
                statements: ConnStatements::default(),
                _slot: slot,
            },
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(BackendError::Timeout(address, timeout)),
        };
        match tokio::time::timeout(timeout, conn.track_state_changes()).await {
            Ok(Ok(())) => Ok(conn),
            Ok(Err(why)) => Err(BackendError::Protocol(address, why)),
            Err(_) => Err(BackendError::Timeout(address, timeout)),
        }
    }
}

/// The capabilities a backend connection of `login` asks for beyond [`REQUIRED`]: the
/// client's that shape what the server sends, and session tracking wherever the proxy
/// tracks GTIDs (the client that lacks it gets its OK packets in its own form).
fn mirrored(login: &Login) -> u32 {
    let gtid = match login.track_gtid {
        true => capability::SESSION_TRACK,
        false => 0,
    };
    (login.client_capabilities & MIRRORED) | gtid
}

/// Logs in: the connection, the server's thread id for it, the capabilities negotiated.
async fn handshake(
    server: &ServerTarget,
    login: &Login,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(Connection, u32, u32), BackendError> {
    let address = server.address().to_string();
    let protocol = |what: String| BackendError::Protocol(address.clone(), what);
    let tcp = TcpStream::connect((server.host.as_str(), server.port))
        .await
        .map_err(|e| BackendError::Connect(address.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let mut conn = Connection::new(Stream::Tcp(tcp));

    let greeting = read(&mut conn, &address).await?;
    if greeting.payload.first() == Some(&header::ERR) {
        return Err(refused(&address, &greeting.payload));
    }
    let hs = InitialHandshake::decode(&greeting.payload).map_err(|e| protocol(e.to_string()))?;
    let mut seq = greeting.last_seq.wrapping_add(1);
    let mut caps = (mirrored(login) & hs.capabilities) | REQUIRED;
    // The SSLRequest must announce exactly what the HandshakeResponse will: servers refuse
    // a login whose capabilities change after the TLS upgrade.
    if login.database.is_some() {
        caps |= capability::CONNECT_WITH_DB;
    }
    if login.connect_attrs.is_none() {
        caps &= !capability::CONNECT_ATTRS;
    }

    if server.tls {
        let config = tls.ok_or_else(|| {
            BackendError::Tls(address.clone(), "no [backend_tls] configured".into())
        })?;
        if hs.capabilities & capability::SSL == 0 {
            return Err(BackendError::Tls(
                address.clone(),
                "server does not offer TLS".into(),
            ));
        }
        caps |= capability::SSL;
        let mut request = bytes::BytesMut::new();
        encode_ssl_request(&mut request, caps, MAX_PACKET, login.charset);
        seq = conn.queue_packet(seq, &request);
        conn.flush()
            .await
            .map_err(|e| BackendError::Connect(address.clone(), e))?;
        conn = upgrade(conn, server, config).await?;
    }

    let response = HandshakeResponse {
        capabilities: caps,
        max_packet: MAX_PACKET,
        charset: login.charset,
        username: login.user.clone(),
        auth_response: proof(login, &hs.scramble),
        database: login.database.clone(),
        auth_plugin: Some(NATIVE_PASSWORD.to_string()),
        connect_attrs: login.connect_attrs.clone(),
        zstd_level: None,
    };
    let mut payload = bytes::BytesMut::new();
    response.encode(&mut payload);
    conn.queue_packet(seq, &payload);
    conn.flush()
        .await
        .map_err(|e| BackendError::Connect(address.clone(), e))?;

    loop {
        let reply = read(&mut conn, &address).await?;
        match reply.payload.first() {
            Some(&header::OK) => return Ok((conn, hs.connection_id, caps)),
            Some(&header::ERR) => return Err(refused(&address, &reply.payload)),
            Some(&header::AUTH_SWITCH) => {
                let switch = AuthSwitchRequest::decode(&reply.payload)
                    .map_err(|e| protocol(e.to_string()))?;
                if switch.plugin != NATIVE_PASSWORD {
                    return Err(protocol(format!(
                        "asks for auth plugin {}; only {NATIVE_PASSWORD} can be answered \
                         without the cleartext password",
                        switch.plugin
                    )));
                }
                let answer = proof(login, &switch.data);
                conn.queue_packet(reply.last_seq.wrapping_add(1), &answer);
                conn.flush()
                    .await
                    .map_err(|e| BackendError::Connect(address.clone(), e))?;
            }
            _ => return Err(protocol("unexpected packet during login".into())),
        }
    }
}

/// The `mysql_native_password` answer to a scramble. Whatever plugin the greeting names,
/// the proxy answers natively (and says so); a server whose account uses that plugin
/// accepts it, others switch or refuse.
fn proof(login: &Login, scramble: &[u8]) -> Vec<u8> {
    match &login.key {
        Some(key) => native_proof(key, scramble).to_vec(),
        None => Vec::new(),
    }
}

/// Reads the whole response to `cmd` (small responses of the proxy's own commands, and
/// prepare replies) and returns the payloads of its packets.
pub async fn read_response(
    conn: &mut Connection,
    address: &str,
    cmd: u8,
) -> Result<Vec<bytes::Bytes>, BackendError> {
    let mut tracker = ResponseTracker::for_command(cmd).ok_or_else(|| {
        BackendError::Protocol(address.to_string(), "command without a response".into())
    })?;
    let mut packets = Vec::new();
    loop {
        let packet = read(conn, address).await?;
        let progress = tracker
            .feed(&packet.payload, packet.payload.len())
            .map_err(|e| BackendError::Protocol(address.to_string(), e.to_string()))?;
        packets.push(packet.payload);
        match progress {
            Progress::More => {}
            Progress::Done(_) => return Ok(packets),
            Progress::LocalInfile => {
                return Err(BackendError::Protocol(
                    address.to_string(),
                    "unexpected LOCAL INFILE".into(),
                ))
            }
        }
    }
}

async fn read(
    conn: &mut Connection,
    address: &str,
) -> Result<crate::connection::Packet, BackendError> {
    match conn.read_packet(LOGIN_PACKET_LIMIT).await {
        Ok(Some(p)) => Ok(p),
        Ok(None) | Err(ReadError::Truncated) => Err(BackendError::Connect(
            address.to_string(),
            std::io::ErrorKind::UnexpectedEof.into(),
        )),
        Err(ReadError::Io(e)) => Err(BackendError::Connect(address.to_string(), e)),
        Err(e) => Err(BackendError::Protocol(address.to_string(), e.to_string())),
    }
}

fn refused(address: &str, payload: &[u8]) -> BackendError {
    match ErrPacket::decode(payload) {
        Ok(err) => BackendError::Refused(address.to_string(), err),
        Err(e) => BackendError::Protocol(address.to_string(), e.to_string()),
    }
}

async fn upgrade(
    conn: Connection,
    server: &ServerTarget,
    config: &Arc<ClientConfig>,
) -> Result<Connection, BackendError> {
    let address = server.address().to_string();
    let (stream, pending) = conn.into_parts();
    let Stream::Tcp(tcp) = stream else {
        return Err(BackendError::Tls(address, "already TLS".into()));
    };
    if !pending.is_empty() {
        return Err(BackendError::Protocol(
            address,
            "data before the TLS handshake".into(),
        ));
    }
    let name = ServerName::try_from(server.host.clone())
        .map_err(|e| BackendError::Tls(address.clone(), e.to_string()))?;
    let tls = TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| BackendError::Tls(address.clone(), e.to_string()))?;
    Ok(Connection::new(Stream::TlsClient(Box::new(tls))))
}
