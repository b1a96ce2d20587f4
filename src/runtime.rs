//! The live configuration: an immutable snapshot built from a validated [`Config`] and
//! swapped atomically on reload. Sessions take a cheap `Arc` of the snapshot when they
//! need it and never lock; a session that started under the old snapshot finishes with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::{ClientConfig, ServerConfig};

use crate::config::{Config, ProxySection, User};
use crate::protocol::auth::PasswordHash;
use crate::tls::{self, TlsError};

/// A user as the frontend needs it: the configured entry with its hash already parsed.
#[derive(Debug)]
pub struct UserEntry {
    pub config: User,
    pub password: Option<PasswordHash>,
    /// Client connections of this user currently open (shared across snapshots).
    pub connections: Arc<AtomicU32>,
}

/// One backend server of one hostgroup.
#[derive(Debug)]
pub struct ServerTarget {
    pub host: String,
    pub port: u16,
    pub hostgroup: u32,
    pub weight: u32,
    pub max_connections: u32,
    pub tls: bool,
    /// Backend connections open to this server (shared across snapshots).
    pub connections: Arc<AtomicU32>,
}

impl ServerTarget {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// See the module documentation.
pub struct Runtime {
    pub proxy: ProxySection,
    pub users: HashMap<String, Arc<UserEntry>>,
    pub hostgroups: HashMap<u32, Vec<Arc<ServerTarget>>>,
    pub frontend_tls: Option<Arc<ServerConfig>>,
    pub backend_tls: Option<Arc<ClientConfig>>,
    /// Round-robin position for weighted server choice, per snapshot.
    pub next_pick: AtomicU32,
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
        let backend_tls = config
            .backend_tls
            .as_ref()
            .map(tls::client_config)
            .transpose()?;
        let users = config
            .users
            .iter()
            .map(|u| {
                let connections = previous
                    .and_then(|p| p.users.get(&u.name))
                    .map(|old| old.connections.clone())
                    .unwrap_or_default();
                let entry = UserEntry {
                    config: u.clone(),
                    password: PasswordHash::parse(&u.password).expect("validated"),
                    connections,
                };
                (u.name.clone(), Arc::new(entry))
            })
            .collect();
        let mut hostgroups: HashMap<u32, Vec<Arc<ServerTarget>>> = HashMap::new();
        for s in &config.servers {
            let connections = previous
                .and_then(|p| p.find_server(s.hostgroup, &s.host, s.port))
                .map(|old| old.connections.clone())
                .unwrap_or_default();
            hostgroups
                .entry(s.hostgroup)
                .or_default()
                .push(Arc::new(ServerTarget {
                    host: s.host.clone(),
                    port: s.port,
                    hostgroup: s.hostgroup,
                    weight: s.weight,
                    max_connections: s.max_connections,
                    tls: s.tls,
                    connections,
                }));
        }
        Ok(Runtime {
            proxy: config.proxy.clone(),
            users,
            hostgroups,
            frontend_tls,
            backend_tls,
            next_pick: AtomicU32::new(0),
        })
    }

    fn find_server(&self, hostgroup: u32, host: &str, port: u16) -> Option<&Arc<ServerTarget>> {
        self.hostgroups
            .get(&hostgroup)?
            .iter()
            .find(|s| s.host == host && s.port == port)
    }

    /// The servers of `hostgroup` in the order to try them: a weighted rotation, so that
    /// new connections spread by weight, followed by the others as fallbacks.
    pub fn candidates(&self, hostgroup: u32) -> Vec<Arc<ServerTarget>> {
        let Some(servers) = self.hostgroups.get(&hostgroup) else {
            return Vec::new();
        };
        let total: u32 = servers.iter().map(|s| s.weight.max(1)).sum();
        let mut ticket = self.next_pick.fetch_add(1, Ordering::Relaxed) % total.max(1);
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
}

/// The current snapshot, shared by every task.
pub struct Shared {
    current: ArcSwap<Runtime>,
}

impl Shared {
    pub fn new(runtime: Runtime) -> Shared {
        Shared {
            current: ArcSwap::from_pointee(runtime),
        }
    }

    pub fn load(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Rebuilds the snapshot from a new configuration and swaps it in; on error the old
    /// snapshot stays.
    pub fn reload(&self, config: &Config) -> Result<(), TlsError> {
        let next = Runtime::build(config, Some(&self.current.load()))?;
        self.current.store(Arc::new(next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn weighted_rotation_spreads_by_weight() {
        let config = Config::from_toml(
            r#"
            [[servers]]
            host = "a"
            hostgroup = 1
            weight = 3
            [[servers]]
            host = "b"
            hostgroup = 1
            weight = 1
            "#,
            Path::new("."),
        )
        .unwrap();
        let rt = Runtime::build(&config, None).unwrap();
        let mut firsts = HashMap::new();
        for _ in 0..400 {
            let c = rt.candidates(1);
            assert_eq!(c.len(), 2);
            *firsts.entry(c[0].host.clone()).or_insert(0) += 1;
        }
        assert_eq!(firsts["a"], 300);
        assert_eq!(firsts["b"], 100);
        assert!(rt.candidates(2).is_empty());
    }
}
