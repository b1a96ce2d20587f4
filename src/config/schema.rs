//! The TOML schema. Unknown keys are errors (a misspelt key must not be silently ignored),
//! and every optional key has the default a ProxySQL user would expect.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub throttle: Throttle,
    #[serde(default)]
    pub pool: PoolSettings,
    /// TLS offered to clients; without it the proxy does not advertise TLS.
    pub frontend_tls: Option<FrontendTls>,
    /// How to verify backends that have `tls = true`.
    pub backend_tls: Option<BackendTls>,
    /// Health checks of the backends; without it every configured server counts as healthy.
    pub monitor: Option<Monitor>,
    #[serde(default)]
    pub hostgroups: Vec<Hostgroup>,
    /// Galera clusters: which hostgroups the monitor fills with writer, backup writers,
    /// readers and offline nodes (ProxySQL's `mysql_galera_hostgroups`).
    #[serde(default)]
    pub galera_hostgroups: Vec<GaleraHostgroups>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub users: Vec<User>,
    /// Query rules (ProxySQL's `mysql_query_rules`), walked in `rule_id` order.
    #[serde(default)]
    pub query_rules: Vec<QueryRule>,
    #[serde(default)]
    pub firewall: Firewall,
    #[serde(default)]
    pub query_log: QueryLog,
    #[serde(default)]
    pub query_cache: QueryCacheSettings,
    #[serde(default)]
    pub mirror: MirrorSettings,
    /// The SQL admin port; without it there is none.
    pub admin: Option<Admin>,
    /// The Prometheus endpoint; without it there is none.
    pub metrics: Option<Metrics>,
    /// Proxies that share one configuration through the Galera cluster they front.
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]`: proxies of one `name` keep what operators change at runtime (servers,
/// users, query rules, variables), the firewall's learned digests and failed-login blocks
/// in tables of the Galera cluster itself, so that every proxy serves the same
/// configuration. The TOML file stays the bootstrap: how to reach the cluster, where to
/// listen, which certificates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Proxies with the same name share one configuration.
    pub name: String,
    /// Off: the section is validated but nothing is shared.
    #[serde(default)]
    pub sync: bool,
    /// The account that reads and writes the shared tables (needs CREATE, SELECT, INSERT,
    /// UPDATE, DELETE on `schema`).
    pub user: String,
    /// A file holding that account's password (mode 0600), as for the monitor.
    pub password_file: PathBuf,
    /// How often a proxy looks for a newer configuration and shares what it learned.
    #[serde(default = "default_cluster_interval")]
    pub interval_ms: u64,
    /// One exchange with the cluster that takes longer has failed (a hung node).
    #[serde(default = "default_cluster_timeout")]
    pub timeout_ms: u64,
    /// The schema the shared tables live in (created when missing).
    #[serde(default = "default_cluster_schema")]
    pub schema: String,
    /// The versioned configuration table; its companions are `<table>_peers`,
    /// `<table>_allowlist` and `<table>_blocks`.
    #[serde(default = "default_cluster_table")]
    pub table: String,
    /// This proxy's name among its peers (default: host name and listen port).
    pub proxy_name: Option<String>,
    /// Where the last configuration synced from the cluster is kept, so that a proxy
    /// restarted while the cluster is down starts from it (relative: to the config file).
    #[serde(default = "default_cluster_state_file")]
    pub state_file: PathBuf,
    /// The Galera writer hostgroup whose nodes hold the shared tables (default: the first
    /// `[[galera_hostgroups]]`' writer hostgroup).
    pub hostgroup: Option<u32>,
}

fn default_cluster_interval() -> u64 {
    1000
}

fn default_cluster_timeout() -> u64 {
    2000
}

fn default_cluster_schema() -> String {
    "sluice".into()
}

fn default_cluster_table() -> String {
    "cluster_config".into()
}

fn default_cluster_state_file() -> PathBuf {
    PathBuf::from("cluster-state.toml")
}

/// The SQL admin port (MySQL protocol), ProxySQL's port 6032.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Admin accounts; application users cannot log in here.
    pub users: Vec<AdminUser>,
    /// Offer TLS (with the `frontend_tls` certificate) and require it of every admin.
    #[serde(default)]
    pub tls: bool,
    /// Needed, with `tls`, to listen on anything but a loopback address.
    #[serde(default)]
    pub allow_remote: bool,
}

/// An admin account: a name and its `mysql_native_password` hash.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub name: String,
    pub password: String,
}

/// The Prometheus endpoint: `/metrics`, and `/health` for load balancers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6032))
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 6070))
}

/// One query rule: what it matches (every given field must match) and what it does.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRule {
    pub rule_id: u32,
    #[serde(default = "yes")]
    pub active: bool,
    pub username: Option<String>,
    /// The session's current schema.
    pub schemaname: Option<String>,
    /// The client's address: one address or a CIDR network.
    pub client_addr: Option<String>,
    /// The digest's hash as logged: "0x" and hex digits.
    pub digest: Option<String>,
    /// A regular expression over the digest text.
    pub match_digest: Option<String>,
    /// A regular expression over the statement as sent (or as rewritten by an earlier rule).
    pub match_pattern: Option<String>,
    /// Match statements that do NOT match `match_pattern`.
    #[serde(default)]
    pub negate_match_pattern: bool,
    /// Regular expressions ignore case unless this is set (ProxySQL's CASELESS default).
    #[serde(default)]
    pub case_sensitive: bool,
    /// Statement kinds: select, locking_select, insert, update, delete, replace, ddl,
    /// transaction, set, use, show, call, other.
    #[serde(default)]
    pub statement_kind: Vec<crate::rules::Kind>,
    /// true: match only statements with an injection shape; false: only those without.
    pub sql_injection: Option<bool>,
    /// The rule is considered only while the walk's flag equals this (starts at 0).
    #[serde(default)]
    pub flag_in: u32,
    /// On a match, the walk goes on with this flag.
    pub flag_out: Option<u32>,
    /// Send matching statements to this hostgroup.
    pub destination_hostgroup: Option<u32>,
    /// Rewrite: what replaces each `match_pattern` match (`$1` for capture groups).
    pub replace_pattern: Option<String>,
    /// Refuse matching statements with this message.
    pub error_msg: Option<String>,
    /// The error code of a refusal (default 1148).
    pub error_code: Option<u16>,
    /// Write matching statements to the query log.
    #[serde(default)]
    pub log: bool,
    /// Kill a matching statement on its backend after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Answer matching autocommit reads from the query cache for this many milliseconds
    /// after the server last answered them (ProxySQL's `cache_ttl`; see `[query_cache]`).
    pub cache_ttl: Option<u64>,
    /// Whether a result without rows is cached too; unset: `[query_cache]
    /// stores_empty_result`.
    pub cache_empty_result: Option<bool>,
    /// Send a copy of each matching statement to a server of this hostgroup, after the
    /// client has its answer (see `[mirror]`).
    pub mirror_hostgroup: Option<u32>,
    /// The copy walks the rules again from this flag (to be rewritten or routed for the
    /// mirror); its destination_hostgroup, if one matches, overrides mirror_hostgroup.
    #[serde(rename = "mirror_flagOUT", alias = "mirror_flag_out")]
    pub mirror_flag_out: Option<u32>,
    /// Stop the walk at this rule when it matches.
    #[serde(default)]
    pub apply: bool,
    pub comment: Option<String>,
}

/// What a user's reads on replicas may miss (see `User::consistency`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Reads may miss any write the replica has not applied yet.
    None,
    /// A session's reads see that session's own committed writes.
    #[default]
    Session,
    /// A read sees every write committed through this proxy (by sessions that track
    /// their writes: `session` or `global`) before the read began.
    Global,
}

/// What the firewall does with statement shapes it has not learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FirewallMode {
    /// Nothing: no learning, no blocking.
    #[default]
    Off,
    /// Learn every new digest into the allow list, and log it as one that protect mode
    /// would block.
    Detect,
    /// Only digests on the allow list pass; others are refused.
    Protect,
}

/// The digest firewall: per user (`users[].firewall`), or this default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Firewall {
    pub mode: FirewallMode,
    /// The learned allow list: one `user<TAB>digest<TAB>digest text` line per entry,
    /// written atomically, editable (re-read on reload). Relative to the config file.
    pub allowlist: PathBuf,
    /// Newly learned digests are written out this often.
    pub flush_interval_ms: u64,
    /// The error code a blocked statement gets.
    pub error_code: u16,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            mode: FirewallMode::Off,
            allowlist: PathBuf::from("firewall-allowlist.tsv"),
            flush_interval_ms: 1000,
            error_code: 1148,
        }
    }
}

/// The query log: one JSON line per statement (digest text only, never values).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLog {
    /// "off", "all" (every statement) or "rules" (only those a rule with `log` matched,
    /// and refused ones).
    pub mode: QueryLogMode,
    /// Where the lines go, relative to the config file.
    pub path: PathBuf,
    /// The file is rotated (`.1`, `.2`, …) when it grows past this.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

/// Which statements the query log records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryLogMode {
    #[default]
    Off,
    All,
    Rules,
}

impl Default for QueryLog {
    fn default() -> Self {
        QueryLog {
            mode: QueryLogMode::Off,
            path: PathBuf::from("queries.log"),
            max_bytes: 100 << 20,
            keep: 5,
        }
    }
}

/// The client-facing listener and its limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Connections the kernel may hold completed but not yet accepted (the kernel caps it
    /// at `net.core.somaxconn`). A storm of logins — an application fleet restarting, a
    /// connect-per-request pool — overflows a short queue, and each connection that overflows
    /// waits for the kernel's SYN-ACK retransmit (1 s, then 3, 7, 15 s) before it is seen.
    pub listen_backlog: u32,
    /// The runtime's worker threads (ProxySQL's `mysql-threads`); 0: one per core. Read
    /// at start only. Fewer workers than cores cost less CPU per statement where the proxy
    /// shares its cores with other work (no thread looks for work to steal), at the price
    /// of the peak throughput a dedicated host gets from one worker per core.
    pub worker_threads: usize,
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
    /// Offer clients the compressed protocol (`CLIENT_COMPRESS`, zlib); off: a client that
    /// asks runs uncompressed, as against a server without it. Backends stay uncompressed.
    pub compression: bool,
    /// zlib's level for what goes to compressed clients: 1 (fastest) to 9 (smallest).
    pub compression_level: u32,
    /// On shutdown, how long open sessions get to finish before they are closed.
    pub shutdown_timeout_ms: u64,
    /// For users with `consistency = "session"`: how long a read may wait for a replica to
    /// apply the session's last write before it is sent to the writer instead.
    pub causal_read_wait_ms: u64,
    /// A statement that takes longer than this (from its arrival to its answer) counts as
    /// slow (`Slow_queries`, ProxySQL's `mysql-long_query_time`).
    pub long_query_time_ms: u64,
    /// When a session's default hostgroup is a Galera writer hostgroup with no server it
    /// can reach — a failover under way — how long a statement (or a login) waits for the
    /// next writer before it gets ERR 9001 (0: no wait). Other hostgroups do not wait.
    pub failover_wait_ms: u64,
    /// Transaction replay: an open transaction whose writer connection is lost before its
    /// COMMIT is sent runs again on the next writer, when its statements and their
    /// results, recorded as it ran, add up to at most this many bytes (0: never replay).
    /// See `User::transaction_replay`.
    pub transaction_replay_max_size: usize,
    /// Client connections from one address beyond this many are refused with ERR 1040
    /// (0: no limit).
    pub max_connections_per_address: usize,
    /// A logged-in client silent for this long is disconnected (MariaDB's wait_timeout).
    pub idle_timeout_ms: u64,
    /// One JSON line per accepted or refused client connection: "off", "stderr", or a file
    /// path (appended to).
    pub connection_log: String,
}

/// Idle backend connections kept for reuse.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    /// Idle connections kept per server and user (0: no pooling, close on release).
    pub max_idle_per_server: usize,
    /// Idle connections opened ahead of need per server and user, once the user has
    /// logged in (the proxy can log in as a user only after seeing its password proof),
    /// kept up every few seconds within the server's max_connections.
    pub min_idle_per_server: usize,
    /// An idle connection unused this long is closed.
    pub idle_timeout_ms: u64,
    /// A connection older than this is closed instead of reused.
    pub max_lifetime_ms: u64,
    /// A connection idle longer than this is pinged before it is handed out.
    pub check_after_idle_ms: u64,
    /// Multiplexing: a session's backend connection goes back to the pool after each
    /// statement when nothing but its schema and character set is on it (no transaction,
    /// prepared statement, user variable, lock, temporary table, other SET…), so many
    /// client sessions share few backend connections.
    pub multiplex: bool,
    /// When every server of a hostgroup is at its max_connections, how long a statement
    /// waits for a connection to come back before it gets ERR 1040 (0: no wait).
    pub wait_timeout_ms: u64,
    /// Ask backends to flag session state changes (for clients that negotiated session
    /// tracking), so that state set where the proxy cannot see it — a procedure that sets
    /// a variable — keeps the session on its connection. Off by default: it costs CPU.
    pub track_session_state: bool,
    /// Prepared statements the proxy keeps, one per user, schema and text, so that
    /// sessions that prepare the same text share it on every connection.
    pub statement_cache_size: usize,
    /// Prepared statements one backend connection holds at most: beyond it the least
    /// recently used is closed there (and prepared again when it is next needed), so
    /// clients cannot exhaust the server's max_prepared_stmt_count.
    pub max_prepared_per_connection: usize,
    /// Prepared statements one client session may hold open, as a server's
    /// max_prepared_stmt_count would limit it (ERR 1461 beyond).
    pub max_prepared_per_session: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle_per_server: 64,
            min_idle_per_server: 0,
            idle_timeout_ms: 60_000,
            max_lifetime_ms: 3_600_000,
            check_after_idle_ms: 1_000,
            multiplex: true,
            wait_timeout_ms: 10_000,
            track_session_state: false,
            statement_cache_size: 10_000,
            max_prepared_per_connection: 256,
            max_prepared_per_session: 16_382,
        }
    }
}

/// The query cache that rules with `cache_ttl` fill (ProxySQL's `mysql-query_cache_*`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryCacheSettings {
    /// Memory the cached results may take, all together; beyond it the entries least
    /// used lately go first.
    pub max_memory_mb: u64,
    /// A result larger than this is not cached.
    pub max_entry_kb: u64,
    /// Whether results without rows are cached (a rule's `cache_empty_result` overrides).
    pub stores_empty_result: bool,
}

impl Default for QueryCacheSettings {
    fn default() -> Self {
        QueryCacheSettings {
            max_memory_mb: 256,
            max_entry_kb: 4096,
            stores_empty_result: true,
        }
    }
}

/// Mirroring: copies of statements that rules with `mirror_hostgroup` send elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorSettings {
    /// Copies waiting to be sent, at most; a copy beyond it is dropped (and counted), so
    /// a slow or dead mirror never holds a client up.
    pub max_queue: usize,
    /// Copies being run on mirror servers at once.
    pub max_concurrency: usize,
    /// A copy not answered within this long is abandoned (its connection closed).
    pub timeout_ms: u64,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            max_queue: 32_000,
            max_concurrency: 16,
            timeout_ms: 10_000,
        }
    }
}

/// Failed-login throttling per client address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Throttle {
    /// Consecutive failed logins from one address before it is refused.
    pub max_failures: u32,
    /// How long the first refusal lasts; each repeat doubles it.
    pub block_ms: u64,
    /// The longest a refusal may grow to.
    pub max_block_ms: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            max_failures: 10,
            block_ms: 60_000,
            max_block_ms: 3_600_000,
        }
    }
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            listen: SocketAddr::from(([127, 0, 0, 1], 6033)),
            listen_backlog: 4096,
            worker_threads: 0,
            server_version: "5.5.5-10.11.6-MariaDB-Sluice".to_string(),
            max_client_connections: 10_000,
            handshake_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            max_allowed_packet: 64 << 20,
            compression: true,
            compression_level: 1,
            shutdown_timeout_ms: 30_000,
            causal_read_wait_ms: 100,
            long_query_time_ms: 1_000,
            failover_wait_ms: 10_000,
            transaction_replay_max_size: 1 << 20,
            max_connections_per_address: 0,
            idle_timeout_ms: 28_800_000,
            connection_log: "off".to_string(),
        }
    }
}

/// TLS toward clients.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendTls {
    /// PEM certificate chain presented to clients.
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA bundle; when set, clients may present certificates, which are verified.
    pub client_ca: Option<PathBuf>,
    /// The cipher suites offered, in the proxy's order of preference, by their OpenSSL
    /// names (as `Ssl_cipher_list` shows them): for a policy that allows only some.
    /// Unset: all of rustls' suites, AES-128-GCM first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphers: Option<Vec<String>>,
}

/// TLS toward backends.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTls {
    /// PEM CA bundle that backend certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Verify backend certificates (chain and name). Turning this off is logged loudly.
    #[serde(default = "yes")]
    pub verify: bool,
}

/// The monitor: how and how often backends are checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    /// The account the checks log in as (needs REPLICATION CLIENT / SLAVE MONITOR on replicas).
    pub user: String,
    /// A file holding the monitor account's password. The proxy logs in on its own here, so
    /// it needs the secret itself; a file (mode 0600) keeps it out of the configuration.
    pub password_file: PathBuf,
    /// Time between two checks of one server.
    #[serde(default = "default_monitor_interval")]
    pub interval_ms: u64,
    /// A check (connect, queries) that takes longer has failed: this is how a hung node is seen.
    #[serde(default = "default_monitor_timeout")]
    pub timeout_ms: u64,
    /// Consecutive failed checks before a server leaves its hostgroups.
    #[serde(default = "default_fail_after")]
    pub fail_after: u32,
    /// Consecutive good checks before it comes back (no flapping).
    #[serde(default = "default_recover_after")]
    pub recover_after: u32,
    /// How long a Galera node whose checks time out keeps its role on the cluster's word
    /// (its peers still count it in the primary component): an overloaded node is not a
    /// dead one. Galera evicts a hung node well before this (its suspicion timeout);
    /// this bounds a node whose SQL side hangs while its replication still answers.
    #[serde(default = "default_vouch_limit")]
    pub vouch_limit_ms: u64,
}

/// The hostgroups of one Galera cluster. Its nodes are the servers configured in the writer
/// or backup-writer hostgroup; the monitor decides at run time which node is in which group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GaleraHostgroups {
    pub writer_hostgroup: u32,
    pub backup_writer_hostgroup: u32,
    pub reader_hostgroup: u32,
    pub offline_hostgroup: u32,
    /// How many nodes take writes at once (1 avoids certification conflicts).
    #[serde(default = "one")]
    pub max_writers: u32,
    /// 0: only read_only nodes read; 1: every healthy node reads, writer included;
    /// 2: backup writers and read_only nodes read, the writer does not (as in ProxySQL).
    #[serde(default)]
    pub writer_is_also_reader: u8,
    /// A node whose apply queue (`wsrep_local_recv_queue`) is longer serves no reads.
    #[serde(default = "default_transactions_behind")]
    pub max_transactions_behind: u64,
    /// When no reader qualifies, send reads to the writer (true) or fail them (false).
    #[serde(default = "yes")]
    pub fallback_to_writer: bool,
}

/// A group of interchangeable servers (a role: writer, readers, ...).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hostgroup {
    pub id: u32,
    #[serde(default)]
    pub name: String,
}

/// One backend server in one hostgroup.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// For replicas: seconds of `Seconds_Behind_Master` beyond which the server gets no
    /// reads (0: lag is not checked, but a stopped replication thread still is).
    #[serde(default)]
    pub max_replication_lag: u64,
    /// Order of preference in writer elections (higher first; then weight, then order here).
    #[serde(default)]
    pub priority: i32,
    /// The operator's word on this server, as in ProxySQL: ONLINE serves; OFFLINE_SOFT
    /// takes no new connections while sessions on it finish; OFFLINE_HARD takes none and
    /// sessions leave it at their next statement. (SHUNNED is the monitor's verdict, not
    /// something to configure.)
    #[serde(default)]
    pub status: ServerStatus,
}

/// See [`Server::status`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerStatus {
    #[default]
    Online,
    OfflineSoft,
    OfflineHard,
}

/// A user clients log in as; the proxy logs in to backends as the same user.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// The verifier of the user's password, which also says the method the client logs
    /// in with: a `mysql_native_password` hash (`*` and 40 hex digits, `SELECT
    /// PASSWORD('…')`), a `caching_sha2_password` verifier as MySQL stores it
    /// (`$A$005$…`, or `0x` and hex), or an `ed25519` public key as MariaDB stores it
    /// (43 base64 characters). `sluice verifier` makes each from a password.
    pub password: String,
    /// A file (mode 0600) holding the password of this user's backend account, which the
    /// proxy then logs in with. Required for an `ed25519` user (its proof reveals nothing
    /// to log in with); unset otherwise: the proxy logs in with the key the client's
    /// native or caching_sha2 login revealed, and the backend account must have the same
    /// password with `mysql_native_password`.
    pub backend_password_file: Option<PathBuf>,
    pub default_hostgroup: u32,
    /// Refuse this user on connections without TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Refuse this user unless the client presented a certificate that chains to
    /// `frontend_tls.client_ca` (implies TLS).
    #[serde(default)]
    pub require_client_cert: bool,
    /// The client certificate's subject must be exactly this, written as MySQL's
    /// `REQUIRE SUBJECT` does: `/O=Example/CN=app`.
    pub cert_subject: Option<String>,
    /// The client certificate's issuer must be exactly this (same form).
    pub cert_issuer: Option<String>,
    /// Client networks this user may connect from (CIDRs, e.g. "10.1.0.0/16",
    /// "127.0.0.1/32"); empty: anywhere. Outside them the login fails like a bad password.
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    /// Most concurrent client connections of this user.
    #[serde(default = "default_user_connections")]
    pub max_connections: u32,
    /// Schema used when the client names none.
    pub default_schema: Option<String>,
    /// Send reads (plain SELECTs outside transactions) to the reader hostgroup of the
    /// default hostgroup's Galera cluster. Off: everything goes to `default_hostgroup`.
    #[serde(default = "yes")]
    pub split_reads: bool,
    /// Once a transaction starts, keep the session on the writer until it ends, including
    /// reads (ProxySQL's `transaction_persistent`).
    #[serde(default = "yes")]
    pub transaction_persistent: bool,
    /// What a read may miss of the writes before it: `session` (the default) —
    /// read-your-writes: after the session commits a write, its reads go to a replica only
    /// once that replica has applied the write's GTID (waiting at most
    /// `proxy.causal_read_wait_ms`), else to the writer; `none` — reads go to any fresh
    /// enough replica, and may not see the session's own latest write yet.
    #[serde(default)]
    pub consistency: Consistency,
    /// Replay this user's open transactions on the next writer when the writer is lost
    /// (within `proxy.transaction_replay_max_size`); off: the client gets the error and
    /// its connection is closed, as the server's would be.
    #[serde(default = "yes")]
    pub transaction_replay: bool,
    /// This user's firewall mode; unset: `firewall.mode`.
    pub firewall: Option<FirewallMode>,
}

impl User {
    /// An account that only logs in (the admin port's): no routing settings matter.
    pub fn account(name: &str, password: &str, require_tls: bool) -> User {
        User {
            name: name.to_owned(),
            password: password.to_owned(),
            backend_password_file: None,
            default_hostgroup: 0,
            require_tls,
            require_client_cert: false,
            cert_subject: None,
            cert_issuer: None,
            allowed_networks: Vec::new(),
            max_connections: default_user_connections(),
            default_schema: None,
            split_reads: false,
            transaction_persistent: true,
            consistency: Consistency::None,
            transaction_replay: false,
            firewall: None,
        }
    }
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
fn default_monitor_interval() -> u64 {
    500
}
fn default_monitor_timeout() -> u64 {
    1000
}
fn default_fail_after() -> u32 {
    2
}
fn default_recover_after() -> u32 {
    3
}
fn default_vouch_limit() -> u64 {
    30_000
}
fn default_transactions_behind() -> u64 {
    100
}
