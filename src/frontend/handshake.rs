//! Logging a client in: greeting, optional TLS upgrade, HandshakeResponse, then the
//! password exchange in the user's method ([`super::authenticate`]).
//!
//! Every refusal looks the same to the client — ERR 1045 — whether the user is unknown, the
//! password wrong or TLS missing, so that a stranger learns nothing; the log says which.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::ServerConfig;
use tokio::net::TcpStream;

use crate::backend::Login;
use crate::config::Consistency;
use crate::connection::{Connection, Stream};
use crate::protocol::auth::{self, NATIVE_PASSWORD};
use crate::protocol::constants::{capability, error, status, DEFAULT_CHARSET};
use crate::protocol::handshake::{
    is_ssl_request, HandshakeResponse, InitialHandshake, SCRAMBLE_LEN,
};
use crate::protocol::packets::ErrPacket;
use crate::runtime::{Runtime, UserEntry};
use crate::tls::ServerStream;

use super::authenticate::{expect_seq, read, Exchange, LoginReadError, Sha2Cache};

/// What the proxy offers every client. Offered where the port has them: TLS, compression
/// and CLIENT_DEPRECATE_EOF (see [`Door`]). Never: MariaDB's extended capabilities.
pub const SERVER_CAPABILITIES: u32 = capability::LONG_PASSWORD
    | capability::FOUND_ROWS
    | capability::LONG_FLAG
    | capability::CONNECT_WITH_DB
    | capability::NO_SCHEMA
    | capability::LOCAL_FILES
    | capability::IGNORE_SPACE
    | capability::PROTOCOL_41
    | capability::INTERACTIVE
    | capability::TRANSACTIONS
    | capability::SECURE_CONNECTION
    | capability::MULTI_STATEMENTS
    | capability::MULTI_RESULTS
    | capability::PS_MULTI_RESULTS
    | capability::PLUGIN_AUTH
    | capability::CONNECT_ATTRS
    | capability::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | capability::SESSION_TRACK;

/// What the TLS layer of a client connection established.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    /// The client certificate's subject and issuer (`/O=…/CN=…`), when one was presented;
    /// rustls has verified it against `frontend_tls.client_ca` by then.
    pub client_subject: Option<String>,
    pub client_issuer: Option<String>,
    /// The client resumed an earlier TLS session (`Ssl_sessions_reused`).
    pub resumed: bool,
}

/// A client that proved who it is.
pub struct LoggedIn {
    pub conn: Connection,
    pub user: Arc<UserEntry>,
    /// How to log in to backends on this client's behalf.
    pub login: Login,
    /// Capabilities in force on the client connection.
    pub capabilities: u32,
    /// The nonce of this connection's greeting; COM_CHANGE_USER proofs are made with it.
    pub scramble: [u8; SCRAMBLE_LEN],
    /// Sequence id for the next packet to the client (the final OK or ERR of the login).
    pub next_seq: u8,
    /// The zstd level the client asked for, with CLIENT_ZSTD_COMPRESSION_ALGORITHM.
    pub zstd_level: Option<u8>,
    pub tls: Option<TlsInfo>,
}

/// Why a login did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client's packets could not be read: closed, failed, or not the protocol.
    #[error(transparent)]
    Read(#[from] LoginReadError),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("access denied for '{user}': {reason}")]
    Denied {
        user: String,
        reason: &'static str,
        tls: Option<Box<TlsInfo>>,
    },
}

/// A login that did not complete. When the client is owed an ERR it comes along unsent:
/// the caller accounts for the failure first (the failed-login throttle), so that a
/// client retrying the moment it reads its ERR already meets the consequence.
#[derive(Debug)]
pub struct LoginFailure {
    pub error: HandshakeError,
    pub owed: Option<OwedErr>,
}

impl<E: Into<HandshakeError>> From<E> for LoginFailure {
    fn from(e: E) -> Self {
        LoginFailure {
            error: e.into(),
            owed: None,
        }
    }
}

impl LoginFailure {
    /// Sends the ERR the client is owed, if any.
    pub async fn answer(self) {
        if let Some(owed) = self.owed {
            owed.send().await;
        }
    }
}

/// An ERR packet due to a client, with the connection to send it on.
pub struct OwedErr {
    conn: Connection,
    seq: u8,
    capabilities: u32,
    code: error::Code,
    message: String,
}

impl std::fmt::Debug for OwedErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwedErr({}: {})", self.code.0, self.message)
    }
}

impl OwedErr {
    async fn send(mut self) {
        send_err(
            &mut self.conn,
            self.seq,
            self.capabilities,
            self.code,
            &self.message,
        )
        .await;
    }
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Read(LoginReadError::Io(e))
    }
}

impl HandshakeError {
    fn protocol(why: impl Into<String>) -> HandshakeError {
        HandshakeError::Read(LoginReadError::Protocol(why.into()))
    }
}

/// Who may come in through a listener and how: its users, its TLS, the version it
/// announces. The client port and the admin port each have one.
pub struct Door<'a> {
    pub users: &'a HashMap<String, Arc<UserEntry>>,
    /// Whether sessions ask backends to flag session state changes.
    pub track_session_state: bool,
    pub tls: Option<&'a Arc<ServerConfig>>,
    pub server_version: &'a str,
    /// Offer the compressed protocol.
    pub compression: bool,
    /// Offer CLIENT_DEPRECATE_EOF: the client port rewrites its responses for such
    /// clients (`protocol::deprecate_eof`); the admin port does not.
    pub deprecate_eof: bool,
    /// What full `caching_sha2_password` authentications revealed.
    pub sha2_cache: &'a Sha2Cache,
}

/// The capability flags a port's greeting offers: [`SERVER_CAPABILITIES`], and TLS,
/// compression and CLIENT_DEPRECATE_EOF where the port has them.
pub fn offered_capabilities(tls: bool, compression: bool, deprecate_eof: bool) -> u32 {
    let mut offered = SERVER_CAPABILITIES;
    if tls {
        offered |= capability::SSL;
    }
    if compression {
        offered |= capability::COMPRESS | capability::ZSTD_COMPRESSION_ALGORITHM;
    }
    if deprecate_eof {
        offered |= capability::DEPRECATE_EOF;
    }
    offered
}

impl<'a> Door<'a> {
    /// The client port's door.
    pub fn clients(runtime: &'a Runtime, sha2_cache: &'a Sha2Cache) -> Door<'a> {
        Door {
            users: &runtime.users,
            tls: runtime.frontend_tls.as_ref(),
            server_version: &runtime.proxy.server_version,
            track_session_state: runtime.pool.track_session_state,
            compression: runtime.proxy.compression,
            deprecate_eof: true,
            sha2_cache,
        }
    }
}

/// Runs the login on a fresh client socket. A refusal comes back with its ERR unsent
/// (see [`LoginFailure`]).
pub async fn login(
    tcp: TcpStream,
    peer: SocketAddr,
    door: &Door<'_>,
    connection_id: u32,
) -> Result<LoggedIn, LoginFailure> {
    let mut conn = Connection::new(Stream::Tcp(tcp));
    let scramble = auth::new_scramble();
    let offered = offered_capabilities(door.tls.is_some(), door.compression, door.deprecate_eof);
    let greeting = InitialHandshake {
        server_version: door.server_version.to_string(),
        connection_id,
        scramble: scramble.to_vec(),
        capabilities: offered,
        charset: DEFAULT_CHARSET,
        status: status::AUTOCOMMIT,
        auth_plugin: NATIVE_PASSWORD.to_string(),
    };
    let mut payload = BytesMut::with_capacity(128);
    greeting.encode(&mut payload);
    conn.queue_packet(0, &payload);
    conn.flush().await?;

    let mut packet = read(&mut conn).await?;
    expect_seq(&packet, 1)?;
    let mut tls = None;
    if is_ssl_request(&packet.payload) {
        let Some(config) = door.tls else {
            return Err(HandshakeError::protocol("TLS requested but not offered").into());
        };
        let (upgraded, info) = accept_tls(conn, config.clone()).await?;
        conn = upgraded;
        tls = Some(info);
        packet = read(&mut conn).await?;
        expect_seq(&packet, 2)?;
    }
    let response = match HandshakeResponse::decode(&packet.payload) {
        Ok(r) => r,
        Err(e) => {
            return Err(LoginFailure {
                error: HandshakeError::protocol(e.to_string()),
                owed: Some(OwedErr {
                    conn,
                    seq: packet.last_seq.wrapping_add(1),
                    capabilities: 0,
                    code: error::HANDSHAKE_ERROR,
                    message: "Bad handshake".into(),
                }),
            });
        }
    };
    let capabilities = response.capabilities & (offered | capability::SSL);
    let user = door.users.get(&response.username).cloned();
    let mut exchange = Exchange {
        conn: &mut conn,
        seq: packet.last_seq.wrapping_add(1),
        scramble: &scramble,
        secure: tls.is_some(),
        cache: door.sha2_cache,
    };
    let access = check_access(user.as_deref(), peer, tls.as_ref());
    let plugin = response.auth_plugin.as_deref();
    let proven = exchange
        .prove(access, plugin, response.auth_response.clone())
        .await?;
    let seq = exchange.seq;
    let key = match proven.result {
        Ok(key) => key,
        Err(reason) => {
            let message = access_denied(&response.username, peer, proven.with_password);
            return Err(LoginFailure {
                error: HandshakeError::Denied {
                    user: response.username,
                    reason,
                    tls: tls.map(Box::new),
                },
                owed: Some(OwedErr {
                    conn,
                    seq,
                    capabilities,
                    code: error::ACCESS_DENIED,
                    message,
                }),
            });
        }
    };
    let user = user.expect("credentials checked");
    let login = Login {
        user: response.username.clone(),
        key,
        database: response
            .database
            .clone()
            .or_else(|| user.config.default_schema.clone()),
        charset: response.charset,
        client_capabilities: capabilities,
        connect_attrs: response.connect_attrs.clone(),
        track_session_state: door.track_session_state,
        track_gtid: user.config.consistency != Consistency::None,
    };
    Ok(LoggedIn {
        conn,
        user,
        login,
        capabilities,
        scramble,
        next_seq: seq,
        zstd_level: response.zstd_level,
        tls,
    })
}

/// Checks everything but the password that decides whether `user` may log in from `peer`
/// on this connection: network, TLS, client certificate. The reason for a refusal is for
/// the log only; the client sees the same 1045 for all of them, after the password
/// exchange.
pub fn check_access<'u>(
    user: Option<&'u UserEntry>,
    peer: SocketAddr,
    tls: Option<&TlsInfo>,
) -> Result<&'u UserEntry, &'static str> {
    let user = user.ok_or("unknown user")?;
    if !user.allows(peer.ip()) {
        return Err("not allowed from this network");
    }
    let c = &user.config;
    if (c.require_tls || c.require_client_cert) && tls.is_none() {
        return Err("user requires TLS");
    }
    let subject = tls.and_then(|t| t.client_subject.as_deref());
    let issuer = tls.and_then(|t| t.client_issuer.as_deref());
    let wants_cert = c.require_client_cert || c.cert_subject.is_some() || c.cert_issuer.is_some();
    if wants_cert && subject.is_none() {
        return Err("user requires a client certificate");
    }
    if c.cert_subject
        .as_deref()
        .is_some_and(|want| Some(want) != subject)
    {
        return Err("client certificate subject does not match");
    }
    if c.cert_issuer
        .as_deref()
        .is_some_and(|want| Some(want) != issuer)
    {
        return Err("client certificate issuer does not match");
    }
    Ok(user)
}

/// MySQL's wording, so that tools and people recognise it.
pub fn access_denied(user: &str, peer: SocketAddr, with_password: bool) -> String {
    format!(
        "Access denied for user '{user}'@'{}' (using password: {})",
        peer.ip(),
        if with_password { "YES" } else { "NO" }
    )
}

/// Queues and flushes an ERR packet, ignoring write errors (the client may be gone).
pub async fn send_err(
    conn: &mut Connection,
    seq: u8,
    capabilities: u32,
    code: error::Code,
    message: &str,
) {
    ErrPacket::new(code, message).encode(
        conn.write_buffer(),
        seq,
        capabilities | capability::PROTOCOL_41,
    );
    let _ = conn.flush().await;
}

async fn accept_tls(
    conn: Connection,
    config: Arc<rustls::ServerConfig>,
) -> Result<(Connection, TlsInfo), HandshakeError> {
    let (stream, pending) = conn.into_parts();
    let Stream::Tcp(tcp) = stream else {
        return Err(HandshakeError::protocol("TLS requested twice"));
    };
    let tls = ServerStream::accept(config, pending, tcp)
        .await
        .map_err(HandshakeError::Tls)?;
    let info = tls_info(tls.session());
    Ok((Connection::new(Stream::TlsServer(Box::new(tls))), info))
}

fn tls_info(session: &rustls::CommonState) -> TlsInfo {
    let leaf = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, cert)| cert)
        });
    TlsInfo {
        version: session
            .protocol_version()
            .map(|v| {
                // "TLSv1_3" → "TLSv1.3", as MySQL's Ssl_version shows it
                v.as_str()
                    .map(|s| s.replace('_', "."))
                    .unwrap_or_else(|| format!("{v:?}"))
            })
            .unwrap_or_default(),
        cipher: session
            .negotiated_cipher_suite()
            .map(|c| crate::tls::openssl_name(c.suite()))
            .unwrap_or_default(),
        resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        client_subject: leaf.as_ref().map(|c| distinguished_name(c.subject())),
        client_issuer: leaf.as_ref().map(|c| distinguished_name(c.issuer())),
    }
}

/// A distinguished name the way MySQL's `REQUIRE SUBJECT` writes it: `/O=Example/CN=app`.
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let mut out = String::new();
    for rdn in name.iter() {
        for attr in rdn.iter() {
            let key = oid2abbrev(attr.attr_type(), oid_registry())
                .map(str::to_string)
                .unwrap_or_else(|_| attr.attr_type().to_id_string());
            out.push('/');
            out.push_str(&key);
            out.push('=');
            out.push_str(attr.as_str().unwrap_or("?"));
        }
    }
    out
}
