//! The TOML schema. Unknown keys are errors (a misspelt key must not be silently ignored),
//! and every optional key has the default a ProxySQL user would expect.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxySection,
    /// TLS offered to clients; without it the proxy does not advertise TLS.
    pub frontend_tls: Option<FrontendTls>,
    /// How to verify backends that have `tls = true`.
    pub backend_tls: Option<BackendTls>,
    #[serde(default)]
    pub hostgroups: Vec<Hostgroup>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub users: Vec<User>,
}

/// The client-facing listener and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The version string in the greeting. Clients use it to pick features; the `5.5.5-`
    /// prefix is MariaDB's convention that keeps MySQL connectors from mistaking 10.x for
    /// a MySQL 10.
    pub server_version: String,
    /// Client connections beyond this many are refused with ERR 1040.
    pub max_client_connections: usize,
    /// A client that has not finished logging in after this long is disconnected.
    pub handshake_timeout_ms: u64,
    /// How long to wait for a backend to accept a connection and log in.
    pub connect_timeout_ms: u64,
    /// Largest packet accepted from a client, checked before it is buffered.
    pub max_allowed_packet: usize,
    /// On shutdown, how long open sessions get to finish before they are closed.
    pub shutdown_timeout_ms: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 6033)),
            server_version: "5.5.5-10.11.6-MariaDB-Sluice".to_string(),
            max_client_connections: 10_000,
            handshake_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_allowed_packet: 64 << 20,
            shutdown_timeout_ms: 30_000,
        }
    }
}

/// TLS toward clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendTls {
    /// PEM certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA bundle; when set, clients may present certificates, which are verified.
    pub client_ca: Option<PathBuf>,
}

/// TLS toward backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// PEM CA bundle that backend certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Verify backend certificates (chain and name). Turning this off is logged loudly.
    #[serde(default = "yes")]
    pub verify: bool,
}

/// A group of interchangeable servers (a role: writer, readers, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hostgroup {
    pub id: u32,
    #[serde(default)]
    pub name: String,
}

/// One backend server in one hostgroup.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub hostgroup: u32,
    /// Relative share of new connections among the hostgroup's servers.
    #[serde(default = "one")]
    pub weight: u32,
    /// Most connections the proxy opens to this server.
    #[serde(default = "default_server_connections")]
    pub max_connections: u32,
    /// Speak TLS to this server (verified per `[backend_tls]`).
    #[serde(default)]
    pub tls: bool,
}

/// A user clients log in as; the proxy logs in to backends as the same user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// `mysql_native_password` hash: `*` and 40 hex digits (`SELECT PASSWORD('…')`).
    pub password: String,
    pub default_hostgroup: u32,
    /// Refuse this user on connections without TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Most concurrent client connections of this user.
    #[serde(default = "default_user_connections")]
    pub max_connections: u32,
    /// Schema used when the client names none.
    pub default_schema: Option<String>,
}

fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}
fn default_port() -> u16 {
    3306
}
fn default_server_connections() -> u32 {
    1000
}
fn default_user_connections() -> u32 {
    10_000
}
