//! The sync: one task per proxy that, every interval, looks for a newer configuration
//! version in the cluster and applies it (the same validation and atomic swap as a local
//! reload), shares what this proxy's firewall learned and which addresses it blocked,
//! takes in what its peers shared, and writes its heartbeat. `LOAD … TO RUNTIME` on the
//! admin port goes through [`Cluster::publish`]: the change is written as the next version
//! first and applied here only once the cluster holds it.
//!
//! Versions only go up: a proxy never applies a version at or below the one it runs. A
//! version that fails validation here is refused whole, logged, shown to the peers, and
//! not tried again; the proxy keeps what it has until a newer version comes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::document::{SharedConfig, SyncedState};
use super::store::{Heartbeat, PeerRow, Published, Store, Tables};
use crate::backend::Login;
use crate::config::{ClusterSettings, Config};
use crate::frontend::Frontend;
use crate::monitor::agreement::{self, PeerWriters, Reported};
use crate::protocol::auth::ProvenKey;
use crate::protocol::constants::DEFAULT_CHARSET;
use crate::runtime::{Runtime, ServerTarget};
use crate::shared::Shared;

/// A peer whose heartbeat is older than this many intervals is out of sync.
const SILENT_INTERVALS: u64 = 3;
/// Expired blocks are deleted from the shared table every this many rounds.
const PRUNE_EVERY: u64 = 60;

/// Counters of the sync since start (for `/metrics`).
#[derive(Debug, Default)]
pub struct SyncCounters {
    pub rounds_ok: AtomicU64,
    pub rounds_failed: AtomicU64,
    pub versions_applied: AtomicU64,
    pub versions_refused: AtomicU64,
    pub versions_published: AtomicU64,
    pub conflicts: AtomicU64,
    pub digests_shared: AtomicU64,
    pub digests_adopted: AtomicU64,
    pub blocks_shared: AtomicU64,
}

/// What the sync knows, for the admin port and metrics.
#[derive(Debug, Clone, Default)]
pub struct SyncStatus {
    /// The version this proxy runs (0: none taken from or written to the cluster yet).
    pub version: u64,
    pub applied_unix_ms: u64,
    /// The newest version the cluster holds, as last read.
    pub latest: u64,
    /// A version refused here, and why.
    pub refused: Option<(u64, String)>,
    /// The last round's failure, if it failed.
    pub last_error: Option<String>,
    pub last_ok_unix_ms: u64,
    /// The peers as last read (this proxy among them).
    pub peers: Vec<PeerRow>,
}

impl SyncStatus {
    /// The refused version and why, as the peers and the admin port show it.
    pub fn refusal(&self) -> Option<String> {
        self.refused
            .as_ref()
            .map(|(v, e)| format!("version {v} refused: {e}"))
    }
}

/// One peer as the admin port shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub row: PeerRow,
    pub is_self: bool,
    pub in_sync: bool,
}

/// See the module documentation.
pub struct Cluster {
    pub settings: ClusterSettings,
    pub proxy_name: String,
    key: ProvenKey,
    /// The Galera writer hostgroup whose nodes hold the shared tables.
    writer: u32,
    tables: Arc<Tables>,
    shared: Arc<Shared>,
    /// The Galera nodes the TOML file lists: how to reach the store whatever the shared
    /// configuration says about servers.
    bootstrap: Vec<Arc<ServerTarget>>,
    status: Mutex<SyncStatus>,
    /// The connection to the store, taken by a round or a publish: one at a time, which
    /// also orders every version change.
    store: tokio::sync::Mutex<Option<Store>>,
    /// The shared part the running configuration was built from.
    current: Mutex<Option<SharedConfig>>,
    wake: Notify,
    /// Refreshes the admin port's memory tables after a peer's version was applied.
    on_applied: OnceLock<Box<dyn Fn() + Send + Sync>>,
    clear_blocks: std::sync::atomic::AtomicBool,
    /// The newest `learned_at` of the shared allow list read so far.
    digest_cursor: Mutex<Option<String>>,
    pub counters: SyncCounters,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The default name of a proxy among its peers: host name and client port.
fn default_proxy_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", config.proxy.listen.port())
}

impl Cluster {
    /// The sync of a proxy started from `config` (its TOML file): `None` when `[cluster]`
    /// is absent or `sync = false`. Reads the password file.
    pub fn new(config: &Config, shared: &Arc<Shared>) -> Result<Option<Arc<Cluster>>, String> {
        let Some(settings) = config.cluster.clone().filter(|c| c.sync) else {
            return Ok(None);
        };
        let key =
            crate::runtime::read_password_file("cluster.password_file", &settings.password_file)
                .map_err(|e| e.to_string())?;
        let writer = settings
            .hostgroup
            .or_else(|| config.galera_hostgroups.first().map(|g| g.writer_hostgroup))
            .ok_or("cluster.sync needs [[galera_hostgroups]]")?;
        let galera = config
            .galera_hostgroups
            .iter()
            .find(|g| g.writer_hostgroup == writer)
            .ok_or("cluster.hostgroup: no such Galera writer hostgroup")?;
        let groups = [
            galera.writer_hostgroup,
            galera.backup_writer_hostgroup,
            galera.reader_hostgroup,
            galera.offline_hostgroup,
        ];
        let mut bootstrap: Vec<Arc<ServerTarget>> = Vec::new();
        for s in shared.load().servers() {
            if groups.contains(&s.hostgroup) && !bootstrap.iter().any(|b| b.address == s.address) {
                bootstrap.push(s.clone());
            }
        }
        let proxy_name = settings
            .proxy_name
            .clone()
            .unwrap_or_else(|| default_proxy_name(config));
        Ok(Some(Arc::new(Cluster {
            tables: Arc::new(Tables::new(&settings)),
            writer,
            settings,
            proxy_name,
            key,
            shared: shared.clone(),
            bootstrap,
            status: Mutex::default(),
            store: tokio::sync::Mutex::new(None),
            current: Mutex::new(None),
            wake: Notify::new(),
            on_applied: OnceLock::new(),
            clear_blocks: Default::default(),
            digest_cursor: Mutex::new(None),
            counters: SyncCounters::default(),
        })))
    }

    /// The configuration to start from: `config` (the TOML file) with the shared part of
    /// the last synced state laid over it, when one was persisted. Says which it is.
    pub fn starting_config(
        settings: &ClusterSettings,
        config: Config,
    ) -> (Config, Option<SyncedState>) {
        match SyncedState::load(&settings.state_file) {
            Ok(Some(state)) if state.cluster == settings.name => {
                match state.config.apply_to(&config) {
                    Ok(next) => {
                        tracing::info!(
                            version = state.version,
                            written_by = %state.written_by,
                            file = %settings.state_file.display(),
                            "cluster: starting from the last synced configuration"
                        );
                        (next, Some(state))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, file = %settings.state_file.display(), "cluster: the last synced configuration does not fit this proxy; starting from the TOML file");
                        (config, None)
                    }
                }
            }
            Ok(Some(state)) => {
                tracing::warn!(file = %settings.state_file.display(), other = %state.cluster, "cluster: the state file belongs to another cluster name; ignored");
                (config, None)
            }
            Ok(None) => (config, None),
            Err(e) => {
                tracing::error!(error = %e, "cluster: cannot read the state file; starting from the TOML file");
                (config, None)
            }
        }
    }

    /// Records the state the proxy started from (see [`Cluster::starting_config`]).
    pub fn started_from(&self, state: Option<SyncedState>) {
        let Some(state) = state else { return };
        let mut status = self.status.lock().expect("cluster status");
        status.version = state.version;
        status.applied_unix_ms = state.applied_unix_ms;
        *self.current.lock().expect("cluster current") = Some(state.config);
    }

    /// Set once the admin port exists: what to do after a peer's version was applied.
    pub fn on_applied(&self, hook: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_applied.set(hook);
    }

    /// What the sync knows now.
    pub fn status(&self) -> SyncStatus {
        self.status.lock().expect("cluster status").clone()
    }

    /// The peers with whether each runs the newest version and was heard from lately.
    pub fn peers(&self) -> Vec<PeerView> {
        let status = self.status();
        let silent_limit = self.settings.interval_ms * SILENT_INTERVALS;
        status
            .peers
            .iter()
            .map(|row| PeerView {
                is_self: row.proxy == self.proxy_name,
                in_sync: row.version == status.latest.max(status.version)
                    && row.silent_ms <= silent_limit,
                row: row.clone(),
            })
            .collect()
    }

    /// `PROXYSQL FLUSH MYSQL CLIENT HOSTS`: the cluster forgets its blocks too.
    pub fn clear_blocks(&self) {
        self.clear_blocks.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Runs the sync until the process ends: a first round at once (bounded by the
    /// timeout, so that a proxy starting while the cluster is down still starts), then
    /// one per interval.
    pub async fn run(
        self: Arc<Self>,
        frontend: Arc<Frontend>,
        first: tokio::sync::oneshot::Sender<()>,
    ) {
        frontend.admission.sharing.store(true, Ordering::Relaxed);
        let mut first = Some(first);
        let mut round: u64 = 0;
        loop {
            self.round(&frontend, round).await;
            if let Some(done) = first.take() {
                let _ = done.send(());
            }
            round += 1;
            let interval = Duration::from_millis(self.settings.interval_ms);
            let _ = tokio::time::timeout(interval, self.wake.notified()).await;
        }
    }

    /// One round; its failure is recorded and the store connection dropped, to be opened
    /// afresh (maybe on another node) next time.
    async fn round(&self, frontend: &Frontend, round: u64) {
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let mut store = self.store.lock().await;
        let applied =
            match tokio::time::timeout(timeout * 4, self.exchange(&mut store, frontend, round))
                .await
            {
                Ok(Ok(applied)) => {
                    self.counters.rounds_ok.fetch_add(1, Ordering::Relaxed);
                    let mut status = self.status.lock().expect("cluster status");
                    status.last_error = None;
                    status.last_ok_unix_ms = now_unix_ms();
                    applied
                }
                Ok(Err(e)) => {
                    self.failed(&mut store, e);
                    false
                }
                Err(_) => {
                    self.failed(
                        &mut store,
                        format!("the cluster did not answer within {:?}", timeout * 4),
                    );
                    false
                }
            };
        drop(store);
        if applied {
            if let Some(hook) = self.on_applied.get() {
                let hook: &(dyn Fn() + Send + Sync) = hook.as_ref();
                tokio::task::block_in_place(hook);
            }
        }
    }

    fn failed(&self, store: &mut Option<Store>, error: String) {
        self.counters.rounds_failed.fetch_add(1, Ordering::Relaxed);
        let mut status = self.status.lock().expect("cluster status");
        if status.last_error.as_deref() != Some(error.as_str()) {
            tracing::warn!(error = %error, version = status.version, "cluster: sync failed; serving the configuration in force, retrying");
        }
        status.last_error = Some(error);
        *store = None;
    }

    /// Opens the store on the current writer, else on any Galera node of the TOML file.
    async fn connect(&self) -> Result<Store, String> {
        let runtime = self.shared.load();
        let mut candidates = self.shared.candidates(self.writer);
        for s in &self.bootstrap {
            if !candidates.iter().any(|c| c.address == s.address) {
                candidates.push(s.clone());
            }
        }
        let login = Login {
            user: self.settings.user.clone(),
            key: Some(self.key),
            database: None,
            charset: DEFAULT_CHARSET,
            client_capabilities: 0,
            connect_attrs: None,
            track_session_state: false,
            track_gtid: false,
        };
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let mut errors = Vec::new();
        for server in candidates {
            let opened = tokio::time::timeout(
                timeout,
                Store::open(
                    &server,
                    &login,
                    runtime.backend_tls.as_ref(),
                    timeout,
                    self.tables.clone(),
                    &self.settings.name,
                ),
            )
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
            match opened {
                Ok(store) => return Ok(store),
                Err(e) => errors.push(format!("{}: {e}", server.address)),
            }
        }
        Err(format!("no Galera node answered: {}", errors.join("; ")))
    }

    async fn ensure<'a>(&self, store: &'a mut Option<Store>) -> Result<&'a mut Store, String> {
        if store.is_none() {
            *store = Some(self.connect().await?);
            // a new connection reads the whole shared allow list once: whatever a cursor
            // moved past while a row was still committing is taken then
            *self.digest_cursor.lock().expect("cursor") = None;
        }
        Ok(store.as_mut().expect("connected"))
    }

    /// A round's exchanges; returns whether a peer's version was applied.
    async fn exchange(
        &self,
        slot: &mut Option<Store>,
        frontend: &Frontend,
        round: u64,
    ) -> Result<bool, String> {
        let store = self.ensure(slot).await?;
        let latest = store.latest_version().await?;
        let (version, refused) = {
            let mut status = self.status.lock().expect("cluster status");
            status.latest = latest;
            (status.version, status.refused.as_ref().map(|r| r.0))
        };
        let mut applied = false;
        if latest > version && refused != Some(latest) {
            applied = self.take_version(store, latest).await?;
        } else if latest < version || latest == 0 {
            // an empty store (the first proxy, or the tables were dropped): what runs here
            // becomes the cluster's version
            self.seed(store, version.max(1)).await?;
        }
        self.share_learned(store, frontend).await?;
        if round % PRUNE_EVERY == 0 {
            store.clear_blocks(false).await?;
        }
        self.heartbeat(store).await?;
        Ok(applied)
    }

    async fn take_version(&self, store: &mut Store, version: u64) -> Result<bool, String> {
        let Some(stored) = store.fetch(version).await? else {
            return Ok(false);
        };
        let outcome = SharedConfig::parse(&stored.text).and_then(|doc| {
            let running = self.shared.load().config.clone();
            let next = doc.apply_to(&running)?;
            self.shared.reload(&next).map_err(|e| e.to_string())?;
            Ok(doc)
        });
        match outcome {
            Ok(doc) => {
                self.counters
                    .versions_applied
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(version, written_by = %stored.written_by, "cluster: applied a peer's configuration");
                self.adopted(version, &stored.written_by, doc);
                Ok(true)
            }
            Err(e) => {
                self.counters
                    .versions_refused
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(version, written_by = %stored.written_by, error = %e, "cluster: refused a configuration version; the one in force stays");
                self.status.lock().expect("cluster status").refused = Some((version, e));
                Ok(false)
            }
        }
    }

    /// Records that `version` runs here now and persists it.
    fn adopted(&self, version: u64, written_by: &str, doc: SharedConfig) {
        let applied_unix_ms = now_unix_ms();
        {
            let mut status = self.status.lock().expect("cluster status");
            status.version = version;
            status.latest = status.latest.max(version);
            status.applied_unix_ms = applied_unix_ms;
            status.refused = None;
        }
        let state = SyncedState {
            cluster: self.settings.name.clone(),
            version,
            written_by: written_by.to_owned(),
            applied_unix_ms,
            config: doc.clone(),
        };
        if let Err(e) = state.save(&self.settings.state_file) {
            tracing::warn!(error = %e, "cluster: cannot persist the synced configuration");
        }
        *self.current.lock().expect("cluster current") = Some(doc);
    }

    async fn seed(&self, store: &mut Store, version: u64) -> Result<(), String> {
        let doc = SharedConfig::of(&self.shared.load().config);
        match store.publish(version, &self.proxy_name, &doc).await? {
            Published::Written => {
                tracing::info!(
                    version,
                    "cluster: the store held no newer configuration; wrote this proxy's"
                );
                self.counters
                    .versions_published
                    .fetch_add(1, Ordering::Relaxed);
                self.adopted(version, &self.proxy_name.clone(), doc);
            }
            // a peer seeded at the same moment: its version is taken next round
            Published::Conflict(_) => self.wake.notify_one(),
        }
        Ok(())
    }

    async fn share_learned(&self, store: &mut Store, frontend: &Frontend) -> Result<(), String> {
        let firewall = self.shared.load().firewall.clone();
        let outbox = firewall.outbox().clone();
        outbox.enabled.store(true, Ordering::Relaxed);
        let learned = outbox.take();
        if !learned.is_empty() {
            if let Err(e) = store.share_digests(&self.proxy_name, &learned).await {
                outbox.put_back(learned);
                return Err(e);
            }
            self.counters
                .digests_shared
                .fetch_add(learned.len() as u64, Ordering::Relaxed);
        }
        let cursor = self.digest_cursor.lock().expect("cursor").clone();
        let (digests, newest) = store.digests_since(cursor.as_deref()).await?;
        let added = firewall.adopt(digests);
        self.counters
            .digests_adopted
            .fetch_add(added as u64, Ordering::Relaxed);
        *self.digest_cursor.lock().expect("cursor") = newest;

        let as_of = std::time::Instant::now();
        let blocks: Vec<(IpAddr, Duration)> = frontend.admission.take_new_blocks();
        if self.clear_blocks.swap(false, Ordering::Relaxed) {
            store.clear_blocks(true).await?;
        }
        if !blocks.is_empty() {
            store.share_blocks(&self.proxy_name, &blocks).await?;
            self.counters
                .blocks_shared
                .fetch_add(blocks.len() as u64, Ordering::Relaxed);
        }
        frontend
            .admission
            .set_cluster_blocks(&store.active_blocks().await?, as_of);
        Ok(())
    }

    async fn heartbeat(&self, store: &mut Store) -> Result<(), String> {
        let status = self.status();
        let refused_error = status.refusal();
        let writers = self
            .shared
            .membership()
            .map(|m| agreement::encode(&m.writers))
            .unwrap_or_default();
        let beat = Heartbeat {
            version: status.version,
            applied_unix_ms: status.applied_unix_ms,
            refused_version: status.refused.as_ref().map_or(0, |r| r.0),
            last_error: refused_error.as_deref(),
            writers: &writers,
        };
        store.heartbeat(&self.proxy_name, &beat).await?;
        let peers = store.peers().await?;
        self.shared.set_peer_writers(self.peer_writers(&peers));
        self.status.lock().expect("cluster status").peers = peers;
        Ok(())
    }

    /// The writers this proxy and the peers heard from lately reported (see
    /// `monitor::agreement`).
    fn peer_writers(&self, rows: &[PeerRow]) -> PeerWriters {
        let silent_limit = self.settings.interval_ms * SILENT_INTERVALS;
        let reported = |row: &PeerRow| Reported {
            writers: agreement::decode(&row.writers),
            held_ms: row.writers_held_ms,
            ago_ms: row.silent_ms,
        };
        PeerWriters {
            own: rows
                .iter()
                .find(|r| r.proxy == self.proxy_name)
                .map(reported),
            peers: rows
                .iter()
                .filter(|r| r.proxy != self.proxy_name && r.silent_ms <= silent_limit)
                .map(reported)
                .collect(),
        }
    }

    /// `LOAD … TO RUNTIME` with the cluster on: `next` is checked here, written to the
    /// cluster as the next version, and only then put in force (by `apply`). A change of
    /// this proxy's own settings alone is applied here without a new version. Refused when
    /// the cluster cannot be reached (a change must reach every proxy) or when a peer
    /// wrote the next version first (this proxy then takes the peer's).
    pub async fn publish(
        &self,
        next: &Config,
        apply: &(dyn Fn(&Config) -> Result<(), String> + Sync),
    ) -> Result<(), String> {
        let mut slot = self.store.lock().await;
        let running = self.shared.load();
        Runtime::build(next, Some(&running)).map_err(|e| e.to_string())?;
        let doc = SharedConfig::of(next);
        // only this proxy's own settings changed: nothing for the peers
        if doc.to_text() == SharedConfig::of(&running.config).to_text() {
            return apply(next);
        }
        let version = self.status.lock().expect("cluster status").version;
        let timeout = Duration::from_millis(self.settings.timeout_ms) * 2;
        let written = tokio::time::timeout(timeout, async {
            let store = self.ensure(&mut slot).await?;
            store.publish(version + 1, &self.proxy_name, &doc).await
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        match written {
            Ok(Published::Written) => {
                apply(next)?;
                self.counters
                    .versions_published
                    .fetch_add(1, Ordering::Relaxed);
                self.adopted(version + 1, &self.proxy_name.clone(), doc);
                tracing::info!(
                    version = version + 1,
                    "cluster: wrote and applied a new configuration version"
                );
                Ok(())
            }
            Ok(Published::Conflict(why)) => {
                self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                self.wake.notify_one();
                tracing::warn!(version = version + 1, %why, "cluster: a peer wrote the same version first; taking the peer's");
                Err(format!(
                    "another proxy wrote configuration version {} first; this change was not applied and the peer's version is being applied here: look at it, then apply the change again",
                    version + 1
                ))
            }
            Err(e) => {
                *slot = None;
                Err(format!(
                    "the cluster store is unreachable ({e}); runtime changes are refused until it answers, so that the proxies cannot diverge"
                ))
            }
        }
    }

    /// SIGHUP with the cluster on: the file's own parts (certificates, paths, local
    /// settings) with the shared part in force laid over them.
    pub async fn reload_file(&self, file: Config) -> Result<Config, String> {
        let _held = self.store.lock().await;
        let current = self.current.lock().expect("cluster current").clone();
        let next = match current {
            Some(doc) => doc.apply_to(&file)?,
            None => file,
        };
        self.shared.reload(&next).map_err(|e| e.to_string())?;
        Ok(next)
    }
}
