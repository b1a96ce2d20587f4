//! Start-up and the process's life: bind the listener, serve, reload on SIGHUP, drain and
//! stop on SIGTERM or SIGINT.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::admin::AdminServer;
use crate::backend::Pool;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::connlog::ConnectionLog;
use crate::frontend::{listener, Frontend};
use crate::runtime::Runtime;
use crate::shared::Shared;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{0}")]
    Admin(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(std::net::SocketAddr, std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("proxy.connection_log: cannot open {0}: {1}")]
    ConnectionLog(String, std::io::Error),
    #[error("{0}")]
    Cluster(String),
}

/// Warns when files holding secrets can be read by other users, or the configuration by
/// everyone: the proxy still starts, but the operator hears about it.
fn warn_about_permissions(config_path: &Path, config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode()).ok();
    if mode(config_path).is_some_and(|m| m & 0o004 != 0) {
        tracing::warn!(file = %config_path.display(), "the configuration is readable by every user; consider chmod o-r");
    }
    let mut secrets = Vec::new();
    if let Some(tls) = &config.frontend_tls {
        secrets.push(tls.key.as_path());
    }
    if let Some(m) = &config.monitor {
        secrets.push(m.password_file.as_path());
    }
    secrets.extend(
        config
            .users
            .iter()
            .filter_map(|u| u.backend_password_file.as_deref()),
    );
    for file in secrets {
        if mode(file).is_some_and(|m| m & 0o077 != 0) {
            tracing::warn!(file = %file.display(), "a secret is readable by other users; chmod 600 it");
        }
    }
}

/// Runs the proxy with the configuration at `path` until it is told to stop.
pub async fn run(path: &Path, config: Config) -> Result<(), StartError> {
    let (config, synced) = match config.cluster.clone().filter(|c| c.sync) {
        Some(settings) => Cluster::starting_config(&settings, config),
        None => (config, None),
    };
    let runtime = Runtime::build(&config, None)?;
    let listen = config.proxy.listen;
    let tcp = listener::bind(listen, config.proxy.listen_backlog)
        .map_err(|e| StartError::Bind(listen, e))?;
    warn_about_permissions(path, &config);
    let connlog = ConnectionLog::open(&config.proxy.connection_log)
        .map_err(|e| StartError::ConnectionLog(config.proxy.connection_log.clone(), e))?;
    let shared = Arc::new(Shared::new(runtime));
    let cluster = Cluster::new(&config, &shared).map_err(StartError::Cluster)?;
    if let Some(c) = &cluster {
        c.started_from(synced);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let frontend = Arc::new(Frontend::new(
        shared.clone(),
        Pool::new(),
        connlog,
        stop_rx,
        cluster.clone(),
    ));
    let mut hangup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;

    let admin = crate::admin::start(frontend.clone(), &config, path)
        .await
        .map_err(StartError::Admin)?;
    crate::metrics::start(frontend.clone(), config.metrics.as_ref().map(|m| m.listen))
        .await
        .map_err(StartError::Admin)?;
    let mut sync = cluster.map(|c| start_sync(c, &frontend, admin.clone()));
    if let Some((_, first)) = sync.as_mut() {
        // serve with the cluster's configuration when it answers at once; a proxy
        // starting while the cluster is down serves what it has and keeps trying
        let wait = Duration::from_millis(config.cluster.as_ref().map_or(0, |c| c.timeout_ms));
        if tokio::time::timeout(wait, first).await.is_err() {
            tracing::warn!("cluster: the store did not answer at start; serving the configuration this proxy has");
        }
    }
    // after the sync's first round: the first election knows the peers' writers
    crate::monitor::start(shared.clone()).await;
    tracing::info!(%listen, version = env!("CARGO_PKG_VERSION"), "sluice listening");
    let accept = tokio::spawn(listener::serve(frontend.clone(), tcp));
    let sweeper = {
        let frontend = frontend.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                frontend.pool.sweep(&frontend.shared.load().pool);
                frontend.pool.top_up(&frontend.shared).await;
            }
        })
    };
    let firewall_writer = tokio::spawn(write_firewall_allowlist(shared.clone()));
    let mirror = tokio::spawn(crate::frontend::mirror::run(frontend.clone()));
    let cache_purger = {
        let frontend = frontend.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                frontend.query_cache.purge_expired();
            }
        })
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&frontend, path, admin.as_deref()).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = frontend.stop_requested.notified() => {
                tracing::info!("PROXYSQL SHUTDOWN on the admin port");
                break;
            }
        }
    }
    tracing::info!(
        clients = frontend.client_count(),
        "shutting down: draining sessions"
    );
    let _ = stop_tx.send(true);
    frontend.registry.shut_down_all();
    let _ = accept.await;
    drain(
        &frontend,
        Duration::from_millis(shared.load().proxy.shutdown_timeout_ms),
    )
    .await;
    sweeper.abort();
    cache_purger.abort();
    mirror.abort();
    firewall_writer.abort();
    if let Some((task, _)) = sync {
        task.abort();
    }
    flush_firewall(&shared);
    Ok(())
}

/// Starts the cluster sync; the receiver completes after its first round.
fn start_sync(
    cluster: Arc<Cluster>,
    frontend: &Arc<Frontend>,
    admin: Option<Arc<AdminServer>>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    if let Some(admin) = admin {
        let shared = frontend.shared.clone();
        cluster.on_applied(Box::new(move || admin.reloaded(&shared.load().config)));
    }
    let (done, first) = tokio::sync::oneshot::channel();
    (tokio::spawn(cluster.run(frontend.clone(), done)), first)
}

/// Writes what the firewall learned to its allow list file, every `flush_interval_ms`.
async fn write_firewall_allowlist(shared: Arc<Shared>) {
    loop {
        let every = shared.load().firewall_settings.flush_interval_ms.max(10);
        tokio::time::sleep(Duration::from_millis(every)).await;
        flush_firewall(&shared);
    }
}

fn flush_firewall(shared: &Shared) {
    let firewall = shared.load().firewall.clone();
    if let Err(e) = firewall.flush() {
        tracing::warn!(path = %firewall.path().display(), error = %e, "cannot write the firewall allow list");
    }
}

/// Re-reads the configuration file and certificates; a bad file leaves the running
/// configuration as it was.
async fn reload(frontend: &Frontend, path: &Path, admin: Option<&AdminServer>) {
    let shared = &frontend.shared;
    let result = match Config::load(path) {
        Err(e) => Err(e.to_string()),
        Ok(config) => {
            let listen = shared.load().proxy.listen;
            if config.proxy.listen != listen {
                tracing::warn!(old = %listen, new = %config.proxy.listen, "proxy.listen changes only on restart");
            }
            let workers = shared.load().proxy.worker_threads;
            if config.proxy.worker_threads != workers {
                tracing::warn!(
                    old = workers,
                    new = config.proxy.worker_threads,
                    "proxy.worker_threads changes only on restart"
                );
            }
            let applied = match &frontend.cluster {
                Some(cluster) => cluster.reload_file(config).await,
                None => shared
                    .reload(&config)
                    .map(|()| config)
                    .map_err(|e| e.to_string()),
            };
            applied.map(|config| {
                if let Some(admin) = admin {
                    admin.reloaded(&config);
                }
            })
        }
    };
    match result {
        Ok(()) => tracing::info!(config = %path.display(), "configuration reloaded"),
        Err(e) => tracing::error!(error = %e, "reload refused; the running configuration stays"),
    }
}

/// Waits for sessions to end (idle ones are told to close), up to `limit`.
async fn drain(frontend: &Frontend, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while frontend.client_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = frontend.client_count();
    if left > 0 {
        tracing::warn!(left, "shutdown timeout reached; closing remaining sessions");
    } else {
        tracing::info!("all sessions closed");
    }
}
