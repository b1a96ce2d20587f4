//! The live configuration: an immutable snapshot built from a validated [`Config`] and
//! swapped atomically on reload. Sessions take a cheap `Arc` of the snapshot when they
//! need it and never lock; a session that started under the old snapshot finishes with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

use rustls::{ClientConfig, ServerConfig};

use crate::config::{
    Config, Firewall as FirewallSettings, GaleraHostgroups, Monitor, PoolSettings, ProxySection,
    QueryLogMode, ServerStatus, Throttle, User,
};
use crate::protocol::auth::{ProvenKey, Verifier};
use crate::rules::{Firewall, QueryLog, QueryRules};
use crate::tls::{self, TlsError};

/// A user as the frontend needs it: the configured entry with its hash already parsed.
#[derive(Debug)]
pub struct UserEntry {
    pub config: User,
    pub password: Option<Verifier>,
    /// The key of `backend_password_file`'s password: backend logins use it, when set,
    /// instead of what the client's login revealed.
    pub backend_key: Option<ProvenKey>,
    /// `allowed_networks`, parsed; empty: anywhere.
    pub networks: Vec<ipnet::IpNet>,
    /// Client connections of this user currently open (shared across snapshots).
    pub connections: Arc<AtomicU32>,
}

/// One backend server of one hostgroup.
#[derive(Debug, Clone)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub hostgroup: u32,
    pub weight: u32,
    pub max_connections: u32,
    pub tls: bool,
    pub max_replication_lag: u64,
    pub priority: i32,
    pub status: ServerStatus,
    /// Backend connections open to this server (shared across snapshots).
    pub connections: Arc<AtomicU32>,
    /// Traffic and connection counters (shared across snapshots).
    pub stats: Arc<ServerStats>,
    /// `host:port`, made once: sessions compare it on every statement.
    pub address: String,
}

/// What went through one server's connections (ProxySQL's `stats_mysql_connection_pool`).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub queries: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub connect_ok: AtomicU64,
    pub connect_errors: AtomicU64,
    /// Session state the proxy replayed on pooled connections: `SET NAMES`, `COM_INIT_DB`.
    pub set_names: AtomicU64,
    pub init_db: AtomicU64,
    /// The most connections open at once.
    pub max_connections_used: AtomicU32,
    /// Wakes the statements waiting on this server when the monitor gives up on it.
    pub evictions: Evictions,
}

/// One wake-up per open connection to a server, so that a statement waiting for the
/// server's answer can be told the monitor found the server unreachable. Each statement
/// waits on its own connection's: one channel shared by every session would be a lock
/// taken by every statement. The table is touched when a connection opens or closes.
#[derive(Debug, Default)]
pub struct Evictions {
    wakers: Mutex<HashMap<u64, Arc<tokio::sync::Notify>>>,
    next: AtomicU64,
}

/// A connection's place in [`Evictions`], given up when the connection closes.
#[derive(Debug)]
pub struct EvictionWaker {
    id: u64,
    pub notify: Arc<tokio::sync::Notify>,
    owner: Arc<ServerStats>,
}

impl Evictions {
    /// Registers a new connection of the server whose stats these are.
    pub fn register(stats: &Arc<ServerStats>) -> EvictionWaker {
        let id = stats.evictions.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(tokio::sync::Notify::new());
        stats
            .evictions
            .wakers
            .lock()
            .expect("evictions lock")
            .insert(id, notify.clone());
        EvictionWaker {
            id,
            notify,
            owner: stats.clone(),
        }
    }

    /// Wakes whatever waits on any connection to the server.
    pub fn wake_all(&self) {
        for notify in self.wakers.lock().expect("evictions lock").values() {
            notify.notify_waiters();
        }
    }
}

impl Drop for EvictionWaker {
    fn drop(&mut self) {
        self.owner
            .evictions
            .wakers
            .lock()
            .expect("evictions lock")
            .remove(&self.id);
    }
}

impl ServerTarget {
    /// `host:port`, the server's identity across hostgroups and snapshots.
    pub fn address(&self) -> &str {
        &self.address
    }
}

/// See the module documentation.
pub struct Runtime {
    /// The configuration this snapshot was built from (what the admin port shows as
    /// `runtime_*`).
    pub config: Arc<Config>,
    pub proxy: ProxySection,
    pub throttle: Throttle,
    pub pool: PoolSettings,
    pub users: HashMap<String, Arc<UserEntry>>,
    pub hostgroups: HashMap<u32, Members>,
    pub frontend_tls: Option<Arc<ServerConfig>>,
    /// What `SHOW STATUS` reports of the proxy's side of a client's TLS link.
    pub frontend_link: Option<Arc<tls::LinkFacts>>,
    /// The certificates the TLS settings name, as loaded.
    pub certificates: Vec<tls::CertificateInfo>,
    pub backend_tls: Option<Arc<ClientConfig>>,
    pub galera: Vec<GaleraHostgroups>,
    pub monitor: Option<MonitorSettings>,
    /// The active query rules, compiled.
    pub rules: Arc<QueryRules>,
    /// The firewall's settings and its allow list (re-read from its file on reload).
    pub firewall_settings: FirewallSettings,
    pub firewall: Arc<Firewall>,
    /// The query log, when on (kept across reloads that leave its settings alone).
    pub query_log: Option<Arc<QueryLog>>,
    /// Some user reads with `consistency = "global"`: a tracked write's OK then waits
    /// until its GTID is known to the proxy, so that no read begun after the client saw
    /// the OK can miss it.
    pub global_reads: bool,
    servers_in_order: Vec<Arc<ServerTarget>>,
}

/// The monitor's configuration with its password already turned into a login key.
pub struct MonitorSettings {
    pub config: Monitor,
    pub key: ProvenKey,
}

impl Runtime {
    /// Builds a snapshot. Counters of users and servers that exist in `previous` carry over,
    /// so connection limits hold across a reload.
    pub fn build(config: &Config, previous: Option<&Runtime>) -> Result<Runtime, TlsError> {
        let frontend_tls = config
            .frontend_tls
            .as_ref()
            .map(tls::server_config)
            .transpose()?;
        let frontend_link = match (&config.frontend_tls, &frontend_tls) {
            (Some(settings), Some(server)) => Some(Arc::new(tls::link_facts(settings, server)?)),
            _ => None,
        };
        let backend_tls = config
            .backend_tls
            .as_ref()
            .map(tls::client_config)
            .transpose()?;
        let certificates =
            tls::certificates(config.frontend_tls.as_ref(), config.backend_tls.as_ref())?;
        let users = config
            .users
            .iter()
            .map(|u| {
                let connections = previous
                    .and_then(|p| p.users.get(&u.name))
                    .map(|old| old.connections.clone())
                    .unwrap_or_default();
                let backend_key = u
                    .backend_password_file
                    .as_deref()
                    .map(|path| read_password_file("users.backend_password_file", path))
                    .transpose()?;
                let entry = UserEntry {
                    config: u.clone(),
                    password: Verifier::parse(&u.password).expect("validated"),
                    backend_key,
                    networks: u
                        .allowed_networks
                        .iter()
                        .map(|n| parse_network(n))
                        .collect(),
                    connections,
                };
                Ok((u.name.clone(), Arc::new(entry)))
            })
            .collect::<Result<_, TlsError>>()?;
        let mut grouped: HashMap<u32, Vec<Arc<ServerTarget>>> = HashMap::new();
        let mut servers_in_order = Vec::new();
        for s in &config.servers {
            let old = previous.and_then(|p| p.find_server(s.hostgroup, &s.host, s.port));
            let connections = old.map(|o| o.connections.clone()).unwrap_or_default();
            let stats = old.map(|o| o.stats.clone()).unwrap_or_default();
            let target = Arc::new(ServerTarget {
                host: s.host.clone(),
                port: s.port,
                hostgroup: s.hostgroup,
                weight: s.weight,
                max_connections: s.max_connections,
                tls: s.tls,
                max_replication_lag: s.max_replication_lag,
                priority: s.priority,
                status: s.status,
                connections,
                stats,
                address: format!("{}:{}", s.host, s.port),
            });
            grouped.entry(s.hostgroup).or_default().push(target.clone());
            servers_in_order.push(target);
        }
        let hostgroups = grouped
            .into_iter()
            .map(|(id, servers)| (id, Members::new(servers)))
            .collect();
        let monitor = match &config.monitor {
            Some(m) => Some(MonitorSettings {
                config: m.clone(),
                key: read_password_file("monitor.password_file", &m.password_file)?,
            }),
            None => None,
        };
        let outbox = previous
            .map(|p| p.firewall.outbox().clone())
            .unwrap_or_default();
        let firewall = Firewall::load(&config.firewall.allowlist, outbox).map_err(|message| {
            TlsError::File {
                key: "firewall.allowlist",
                path: config.firewall.allowlist.display().to_string(),
                message,
            }
        })?;
        let query_log = query_log(config, previous)?;
        let global_reads = config
            .users
            .iter()
            .any(|u| u.consistency == crate::config::Consistency::Global);
        Ok(Runtime {
            global_reads,
            config: Arc::new(config.clone()),
            rules: Arc::new(QueryRules::compile(&config.query_rules).expect("validated")),
            firewall_settings: config.firewall.clone(),
            firewall: Arc::new(firewall),
            query_log,
            proxy: config.proxy.clone(),
            throttle: config.throttle.clone(),
            pool: config.pool.clone(),
            users,
            hostgroups,
            frontend_tls,
            frontend_link,
            certificates,
            backend_tls,
            galera: config.galera_hostgroups.clone(),
            monitor,
            servers_in_order,
        })
    }

    fn find_server(&self, hostgroup: u32, host: &str, port: u16) -> Option<&Arc<ServerTarget>> {
        self.hostgroups
            .get(&hostgroup)?
            .servers
            .iter()
            .find(|s| s.host == host && s.port == port)
    }

    /// Every configured server, in configuration order.
    pub fn servers(&self) -> impl Iterator<Item = &Arc<ServerTarget>> {
        self.servers_in_order.iter()
    }
}

/// The servers of one hostgroup, with the hostgroup's own rotation counter (a shared counter
/// would let one hostgroup's picks skew another's).
#[derive(Debug, Default)]
pub struct Members {
    pub servers: Vec<Arc<ServerTarget>>,
    next: AtomicU32,
}

impl Members {
    pub fn new(servers: Vec<Arc<ServerTarget>>) -> Members {
        Members {
            servers,
            next: AtomicU32::new(0),
        }
    }

    /// The servers in the order to try them for the next new connection: ONLINE ones only.
    pub fn candidates(&self) -> Vec<Arc<ServerTarget>> {
        let online: Vec<Arc<ServerTarget>> = self
            .servers
            .iter()
            .filter(|s| s.status == ServerStatus::Online)
            .cloned()
            .collect();
        weighted_order(&online, self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Whether some server here takes new connections (as `candidates` would list, without
    /// turning the rotation).
    pub fn has_candidates(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.status == ServerStatus::Online)
    }

    /// Whether a session may keep using its connection to `address` here (OFFLINE_SOFT
    /// servers keep the sessions they have).
    pub fn contains(&self, address: &str) -> bool {
        self.servers
            .iter()
            .any(|s| s.address() == address && s.status != ServerStatus::OfflineHard)
    }
}

/// `servers` in the order to try them for a new connection: a weighted rotation (`ticket`
/// picks the first), then the others as fallbacks.
pub fn weighted_order(servers: &[Arc<ServerTarget>], ticket: u32) -> Vec<Arc<ServerTarget>> {
    let total: u32 = servers.iter().map(|s| s.weight.max(1)).sum();
    let mut ticket = ticket % total.max(1);
    let mut first = 0;
    for (i, s) in servers.iter().enumerate() {
        let w = s.weight.max(1);
        if ticket < w {
            first = i;
            break;
        }
        ticket -= w;
    }
    let mut ordered = Vec::with_capacity(servers.len());
    ordered.extend(servers[first..].iter().cloned());
    ordered.extend(servers[..first].iter().cloned());
    ordered
}

/// A CIDR network, or a single address as its /32 (/128).
fn parse_network(text: &str) -> ipnet::IpNet {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .expect("validated")
}

impl UserEntry {
    /// Whether this user may connect from `ip`.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip))
    }
}

/// Reads the monitor's password file into a login key; the cleartext is dropped at once.
/// The query log of `config`: the previous one when its settings did not change.
fn query_log(
    config: &Config,
    previous: Option<&Runtime>,
) -> Result<Option<Arc<QueryLog>>, TlsError> {
    let settings = &config.query_log;
    if settings.mode == QueryLogMode::Off {
        return Ok(None);
    }
    if let Some(log) = previous.and_then(|p| p.query_log.as_ref()) {
        if log.settings() == settings {
            return Ok(Some(log.clone()));
        }
    }
    QueryLog::open(settings)
        .map(|log| Some(Arc::new(log)))
        .map_err(|e| TlsError::File {
            key: "query_log.path",
            path: settings.path.display().to_string(),
            message: e.to_string(),
        })
}

/// The login key of the password in the file a setting (`key`) names: the file's text
/// without its final line break.
pub(crate) fn read_password_file(
    key: &'static str,
    path: &std::path::Path,
) -> Result<ProvenKey, TlsError> {
    let text = std::fs::read_to_string(path).map_err(|e| TlsError::File {
        key,
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(ProvenKey::of_password(
        text.trim_end_matches(['\n', '\r']).as_bytes(),
    ))
}
