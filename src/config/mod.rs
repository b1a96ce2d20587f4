//! The configuration: a TOML file, its typed schema, and validation whose every message
//! names the offending key. A loaded [`Config`] is checked as a whole; nothing half-valid
//! ever reaches the running proxy.

mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use schema::{
    Admin, AdminUser, BackendTls, ClusterSettings, Config, Consistency, Firewall, FirewallMode,
    FrontendTls, GaleraHostgroups, Hostgroup, Metrics, MirrorSettings, Monitor, PoolSettings,
    ProxySection, QueryCacheSettings, QueryLog, QueryLogMode, QueryRule, Server, ServerStatus,
    Throttle, User,
};

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {problem}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
    },
}

impl Config {
    /// Reads, parses and validates a configuration file. Relative paths inside it (TLS
    /// certificates) are taken relative to the file's directory, so a config works wherever
    /// the proxy is started from.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ConfigError::Invalid { key, problem, .. } => ConfigError::Invalid {
                path: path.to_owned(),
                key,
                problem,
            },
            other => other,
        })
    }

    /// Parses and validates TOML text; relative paths are resolved against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.resolve_paths(base);
        validate::validate(&config).map_err(|(key, problem)| ConfigError::Invalid {
            path: PathBuf::new(),
            key,
            problem,
        })?;
        Ok(config)
    }

    /// Checks a configuration built in memory (by the admin port) as a file is checked.
    pub fn check(&self) -> Result<(), ConfigError> {
        validate::validate(self).map_err(|(key, problem)| ConfigError::Invalid {
            path: PathBuf::new(),
            key,
            problem,
        })
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.frontend_tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                resolve(ca);
            }
        }
        if let Some(monitor) = &mut self.monitor {
            resolve(&mut monitor.password_file);
        }
        if let Some(tls) = &mut self.backend_tls {
            if let Some(ca) = &mut tls.ca {
                resolve(ca);
            }
        }
        if let Some(cluster) = &mut self.cluster {
            resolve(&mut cluster.password_file);
            resolve(&mut cluster.state_file);
        }
        resolve(&mut self.firewall.allowlist);
        resolve(&mut self.query_log.path);
    }
}
