//! The SQL admin port (ProxySQL's 6032): MySQL protocol, its own accounts, and SQL over
//! tables that mirror the running proxy ([`engine`]). Operators and tools written for
//! ProxySQL's admin port read and change servers, users, rules and variables here, put
//! them in force with `LOAD … TO RUNTIME` and keep them with `SAVE … TO DISK`.

mod disk;
pub mod engine;
mod functions;
pub mod global_status;
mod inert;
pub mod live;
pub mod module;
mod proxysql_defaults;
mod refresh;
mod stats_tables;
pub mod tables;
pub mod variables;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Admin, Config, User};
use crate::connection::Connection;
use crate::frontend::handshake::{self, Door};
use crate::frontend::Frontend;
use crate::protocol::auth::{PasswordHash, Verifier};
use crate::protocol::constants::{command, error, status};
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::runtime::UserEntry;
use engine::{AdminDb, Reply};
use live::Live;

/// Largest statement the admin port accepts.
const MAX_STATEMENT: usize = 1 << 20;

/// What every admin session shares.
pub struct AdminServer {
    frontend: Arc<Frontend>,
    db: Mutex<AdminDb>,
    users: HashMap<String, Arc<UserEntry>>,
    settings: Admin,
}

impl AdminServer {
    /// Sets up the admin database from the configuration the proxy started with.
    pub fn new(
        frontend: Arc<Frontend>,
        config: &Config,
        path: &Path,
    ) -> Result<AdminServer, String> {
        let settings = config.admin.clone().ok_or("no [admin] section")?;
        let users = settings
            .users
            .iter()
            .map(|u| {
                let entry = UserEntry {
                    config: User::account(&u.name, &u.password, settings.tls),
                    password: PasswordHash::parse(&u.password)
                        .expect("validated")
                        .map(Verifier::Native),
                    backend_key: None,
                    networks: Vec::new(),
                    connections: Default::default(),
                };
                (u.name.clone(), Arc::new(entry))
            })
            .collect();
        Ok(AdminServer {
            db: Mutex::new(AdminDb::new(config, path)?),
            frontend,
            users,
            settings,
        })
    }

    /// After SIGHUP: memory becomes what the file now says, as the running proxy does.
    pub fn reloaded(&self, config: &Config) {
        if let Err(e) = self.db.lock().expect("admin db").fill_memory(config) {
            tracing::warn!(error = %e, "admin: cannot refresh memory tables after reload");
        }
    }

    /// Accepts admin connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(self.clone().session(tcp, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn session(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let runtime = self.frontend.shared.load();
        let door = Door {
            users: &self.users,
            tls: if self.settings.tls {
                runtime.frontend_tls.as_ref()
            } else {
                None
            },
            server_version: &runtime.proxy.server_version,
            track_session_state: false,
            compression: false,
            deprecate_eof: false,
            sha2_cache: &self.frontend.sha2_cache,
        };
        let id = self.frontend.next_connection_id();
        let timeout = Duration::from_millis(runtime.proxy.handshake_timeout_ms);
        let logged_in =
            match tokio::time::timeout(timeout, handshake::login(tcp, peer, &door, id)).await {
                Ok(Ok(li)) => li,
                Ok(Err(failure)) => {
                    tracing::warn!(%peer, error = %failure.error, "admin login failed");
                    return failure.answer().await;
                }
                Err(_) => return,
            };
        drop(runtime);
        let mut conn = logged_in.conn;
        let ok = OkPacket {
            affected_rows: 0,
            last_insert_id: 0,
            status: status::AUTOCOMMIT,
            warnings: 0,
        };
        ok.encode(conn.write_buffer(), logged_in.next_seq);
        if conn.flush().await.is_err() {
            return;
        }
        tracing::info!(%peer, user = %logged_in.user.config.name, "admin session");
        while let Ok(Some(packet)) = conn.read_packet(MAX_STATEMENT).await {
            let Some((&cmd, body)) = packet.payload.split_first() else {
                break;
            };
            let reply = match cmd {
                command::QUIT => break,
                command::QUERY => {
                    let sql = String::from_utf8_lossy(body).into_owned();
                    let session = functions::SessionContext {
                        id,
                        user: logged_in.user.config.name.clone(),
                    };
                    self.clone().run(sql, session).await
                }
                command::PING | command::INIT_DB => Ok(Reply::Done { affected: 0 }),
                _ => Err("only COM_QUERY, COM_PING and COM_INIT_DB on the admin port".into()),
            };
            if send(&mut conn, reply, logged_in.capabilities)
                .await
                .is_err()
            {
                break;
            }
        }
    }

    /// Runs one statement on a blocking thread (SQLite and reloads are synchronous).
    async fn run(
        self: Arc<Self>,
        sql: String,
        session: functions::SessionContext,
    ) -> Result<Reply, String> {
        tokio::task::spawn_blocking(move || {
            let local = |config: &Config| {
                self.frontend
                    .shared
                    .reload(config)
                    .map_err(|e| e.to_string())
            };
            let apply = |config: &Config| match &self.frontend.cluster {
                Some(cluster) => {
                    tokio::runtime::Handle::current().block_on(cluster.publish(config, &local))
                }
                None => local(config),
            };
            let live = Live {
                frontend: &self.frontend,
                apply: &apply,
            };
            let mut db = self.db.lock().expect("admin db");
            db.execute(&sql, &live, session)
        })
        .await
        .map_err(|e| format!("admin statement failed: {e}"))?
    }
}

async fn send(
    conn: &mut Connection,
    reply: Result<Reply, String>,
    capabilities: u32,
) -> std::io::Result<()> {
    let out: &mut BytesMut = conn.write_buffer();
    match reply {
        Ok(Reply::Rows(result)) => {
            result.encode(out, 1, status::AUTOCOMMIT);
        }
        Ok(Reply::Done { affected }) => {
            let ok = OkPacket {
                affected_rows: affected,
                last_insert_id: 0,
                status: status::AUTOCOMMIT,
                warnings: 0,
            };
            ok.encode(out, 1);
        }
        Err(message) => {
            ErrPacket::new(error::ADMIN_ERROR, message).encode(out, 1, capabilities);
        }
    }
    conn.flush().await
}

/// Binds the admin port, if one is configured, and serves it.
pub async fn start(
    frontend: Arc<Frontend>,
    config: &Config,
    path: &Path,
) -> Result<Option<Arc<AdminServer>>, String> {
    let Some(settings) = &config.admin else {
        return Ok(None);
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("admin.listen {}: {e}", settings.listen))?;
    let server = Arc::new(AdminServer::new(frontend, config, path)?);
    tracing::info!(listen = %settings.listen, "admin port listening");
    tokio::spawn(server.clone().serve(listener));
    Ok(Some(server))
}
