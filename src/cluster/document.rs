//! What proxies of one cluster share: the parts of the configuration an operator changes at
//! runtime through the admin port (servers, Galera hostgroups, users, query rules, and the
//! settings of `global_variables`), as one TOML document. Everything else — where a proxy
//! listens, its certificates, its admin and metrics ports, how it reaches the cluster and
//! the monitor's credentials, its own file paths — stays what its TOML file says.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::admin::variables;
use crate::config::{Config, GaleraHostgroups, Hostgroup, QueryRule, Server, User};

/// Settings that stay each proxy's own even though `global_variables` shows them: they
/// name this host's addresses, files and credentials.
pub const LOCAL_VARIABLES: [&str; 6] = [
    "mysql-listen",
    "mysql-connection_log",
    "mysql-firewall_allowlist",
    "mysql-query_log_path",
    "monitor-user",
    "monitor-password_file",
];

/// The shared part of a configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// `global_variables` rows under Sluice's names, without [`LOCAL_VARIABLES`].
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub hostgroups: Vec<Hostgroup>,
    #[serde(default)]
    pub galera_hostgroups: Vec<GaleraHostgroups>,
    #[serde(default)]
    pub servers: Vec<Server>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub query_rules: Vec<QueryRule>,
}

impl SharedConfig {
    /// The shared part of `config`.
    pub fn of(config: &Config) -> SharedConfig {
        let variables = variables::setting_rows(config)
            .into_iter()
            .filter(|(name, _)| !LOCAL_VARIABLES.contains(&name.as_str()))
            .collect();
        SharedConfig {
            variables,
            hostgroups: config.hostgroups.clone(),
            galera_hostgroups: config.galera_hostgroups.clone(),
            servers: config.servers.clone(),
            users: config.users.clone(),
            query_rules: config.query_rules.clone(),
        }
    }

    /// `local` with its shared part replaced by this one, checked as a file would be: a
    /// document that does not fit this proxy (a setting of a section it lacks, a user
    /// needing TLS it does not offer) is refused whole.
    pub fn apply_to(&self, local: &Config) -> Result<Config, String> {
        let rows: Vec<(String, String)> = self
            .variables
            .iter()
            .filter(|(name, _)| !LOCAL_VARIABLES.contains(&name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let mut next = variables::apply(local, &rows)?;
        next.hostgroups = self.hostgroups.clone();
        next.galera_hostgroups = self.galera_hostgroups.clone();
        next.servers = self.servers.clone();
        next.users = self.users.clone();
        next.query_rules = self.query_rules.clone();
        next.check().map_err(|e| e.to_string())?;
        Ok(next)
    }

    /// The document as stored in the cluster.
    pub fn to_text(&self) -> String {
        toml::to_string(self).expect("a configuration always serializes")
    }

    pub fn parse(text: &str) -> Result<SharedConfig, String> {
        toml::from_str(text).map_err(|e| format!("the shared configuration does not parse: {e}"))
    }
}

/// The last configuration a proxy took from the cluster, kept on its disk so that it can
/// start from it while the cluster is unreachable.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncedState {
    pub cluster: String,
    pub version: u64,
    pub written_by: String,
    /// When this proxy applied it, in Unix milliseconds.
    pub applied_unix_ms: u64,
    pub config: SharedConfig,
}

impl SyncedState {
    /// Reads a state file; a missing file is `Ok(None)`.
    pub fn load(path: &Path) -> Result<Option<SyncedState>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes it atomically (a crash leaves the old file or the new one).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string(self).map_err(|e| e.to_string())?;
        crate::rules::firewall::write_atomically(path, text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [proxy]
        listen = "127.0.0.1:7001"
        connection_log = "/tmp/a.log"
        [pool]
        max_idle_per_server = 7
        [[servers]]
        host = "127.0.0.1"
        port = 13306
        hostgroup = 10
        [[users]]
        name = "app"
        password = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
        default_hostgroup = 10
    "#;

    fn config(text: &str) -> Config {
        Config::from_toml(text, Path::new(".")).unwrap()
    }

    #[test]
    fn the_shared_part_travels_and_the_local_part_stays() {
        let a = config(BASE);
        let b = config(
            &BASE
                .replace("7001", "7002")
                .replace("/tmp/a.log", "/tmp/b.log")
                .replace("max_idle_per_server = 7", "max_idle_per_server = 3"),
        );
        let shared = SharedConfig::parse(&SharedConfig::of(&a).to_text()).unwrap();
        let next = shared.apply_to(&b).unwrap();
        assert_eq!(next.proxy.listen.port(), 7002, "listen is local");
        assert_eq!(next.proxy.connection_log, "/tmp/b.log", "files are local");
        assert_eq!(next.pool.max_idle_per_server, 7, "settings are shared");
        assert_eq!(SharedConfig::of(&next).to_text(), shared.to_text());
        assert_ne!(SharedConfig::of(&b).to_text(), shared.to_text());
    }

    #[test]
    fn a_document_that_does_not_fit_is_refused_whole() {
        let mut shared = SharedConfig::of(&config(BASE));
        shared.users[0].require_tls = true;
        shared.query_rules.clear();
        let b = config(BASE);
        let err = shared.apply_to(&b).unwrap_err();
        assert!(err.contains("require_tls"), "{err}");
        shared.users[0].require_tls = false;
        shared
            .variables
            .insert("monitor-interval_ms".into(), "500".into());
        let err = shared.apply_to(&b).unwrap_err();
        assert!(err.contains("monitor"), "{err}");
        let err = SharedConfig::parse("variables = {}\nunknown = 1\n").unwrap_err();
        assert!(err.contains("unknown"), "{err}");
    }
}
