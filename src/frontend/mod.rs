//! The server side of the proxy: accepting clients ([`listener`]), deciding who may try
//! ([`admission`]), logging them in ([`handshake`]) and serving their commands
//! ([`session`]: the command loop and the one pipeline every statement takes; `relay`
//! moves response bytes).
//!
//! Nothing here decides where a statement goes or which server a connection comes from:
//! sessions ask the backend pool, which owns that choice.

pub mod admission;
pub mod authenticate;
pub mod error_stats;
pub mod handshake;
pub mod latency;
pub mod listener;
pub mod mirror;
pub mod registry;
mod relay;
pub mod session;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::backend::Pool;
use crate::connlog::ConnectionLog;
use crate::query_cache::QueryCache;
use crate::rules::DigestStats;
use crate::shared::Shared;
use admission::Admission;
use registry::{Counters, Registry};

/// Digests tracked at most; executions of shapes beyond this are counted as dropped.
const MAX_DIGESTS: u64 = 100_000;

/// What every client task shares.
pub struct Frontend {
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub admission: Admission,
    pub connlog: ConnectionLog,
    /// Per-digest statistics, kept across reloads.
    pub digests: DigestStats,
    /// Results of reads that rules with `cache_ttl` cache, kept across reloads.
    pub query_cache: QueryCache,
    /// Copies of statements that rules with `mirror_hostgroup` send elsewhere.
    pub mirror: mirror::Mirror,
    /// Errors the backends answered with (`stats_mysql_errors`).
    pub errors: error_stats::ErrorStats,
    /// Committed GTIDs and what readers applied, for read-your-writes.
    pub gtids: crate::router::gtid::GtidTracker,
    /// What full `caching_sha2_password` logins revealed, for the fast path.
    pub sha2_cache: authenticate::Sha2Cache,
    /// The live sessions, for the processlist and KILL.
    pub registry: Arc<Registry>,
    pub counters: Counters,
    /// What the data path observes for Prometheus (query latency per hostgroup).
    pub latencies: latency::Latencies,
    /// The configuration sync with the other proxies of the cluster, when on.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// When the proxy started.
    pub started: std::time::Instant,
    next_connection_id: AtomicU32,
    clients: AtomicUsize,
    /// `PROXYSQL PAUSE`: new clients are refused until `PROXYSQL RESUME`.
    paused: AtomicBool,
    /// `PROXYSQL SHUTDOWN`: asks the process to stop as on SIGTERM.
    pub stop_requested: tokio::sync::Notify,
    shutdown: watch::Receiver<bool>,
}

impl Frontend {
    pub fn new(
        shared: Arc<Shared>,
        pool: Pool,
        connlog: ConnectionLog,
        shutdown: watch::Receiver<bool>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Frontend {
        let query_cache = QueryCache::new(&shared.load().config.query_cache);
        Frontend {
            query_cache,
            mirror: Default::default(),
            errors: Default::default(),
            gtids: Default::default(),
            shared,
            pool,
            admission: Admission::default(),
            connlog,
            digests: DigestStats::new(MAX_DIGESTS),
            sha2_cache: Default::default(),
            registry: Arc::default(),
            counters: Counters::default(),
            latencies: Default::default(),
            cluster,
            started: std::time::Instant::now(),
            next_connection_id: AtomicU32::new(1),
            clients: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            stop_requested: tokio::sync::Notify::new(),
            shutdown,
        }
    }

    /// `PROXYSQL PAUSE` (true) / `PROXYSQL RESUME` (false).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// `PROXYSQL FLUSH MYSQL CLIENT HOSTS`: failed logins and blocks are forgotten here
    /// and, with the cluster on, by every proxy.
    pub fn forget_client_hosts(&self) {
        self.admission.clear();
        if let Some(cluster) = &self.cluster {
            cluster.clear_blocks();
        }
    }

    /// Client connections open right now.
    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub(crate) fn next_connection_id(&self) -> u32 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A receiver that completes when the proxy starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

/// Counts one open client connection for as long as it lives.
struct ClientSlot(Arc<Frontend>);

impl ClientSlot {
    /// Takes a slot, or returns `None` when `max` clients are already connected.
    fn acquire(frontend: &Arc<Frontend>, max: usize) -> Option<ClientSlot> {
        let before = frontend.clients.fetch_add(1, Ordering::Relaxed);
        let slot = ClientSlot(frontend.clone());
        (before < max).then_some(slot)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
