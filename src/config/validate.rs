//! Checks that go beyond types: references between sections, duplicates, formats, files.
//! Each failure is `(key, problem)` with the key written as it appears in the file.

use std::collections::HashSet;

use super::Config;
use crate::protocol::auth::{PasswordHash, Verifier};

type Failure = (String, String);

pub(super) fn validate(config: &Config) -> Result<(), Failure> {
    proxy(config)?;
    let hostgroups = hostgroups(config)?;
    servers(config, &hostgroups)?;
    users(config, &hostgroups)?;
    galera(config, &hostgroups)?;
    monitor(config)?;
    query_rules(config, &hostgroups)?;
    admin(config)?;
    cluster(config)?;
    tls_files(config)
}

fn cluster(config: &Config) -> Result<(), Failure> {
    let Some(c) = &config.cluster else {
        return Ok(());
    };
    let identifier = |key: &str, value: &str| {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if ok {
            Ok(())
        } else {
            fail(
                format!("cluster.{key}"),
                "letters, digits and _ only, at most 64",
            )
        }
    };
    if c.name.is_empty() || c.name.len() > 64 {
        return fail("cluster.name", "must be 1 to 64 characters");
    }
    identifier("schema", &c.schema)?;
    // `<table>_allowlist` must fit MariaDB's 64-character names too
    if c.table.len() > 54 {
        return fail("cluster.table", "at most 54 characters");
    }
    identifier("table", &c.table)?;
    if c.proxy_name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > 255)
    {
        return fail("cluster.proxy_name", "must be 1 to 255 characters");
    }
    if c.interval_ms < 100 {
        return fail("cluster.interval_ms", "must be at least 100");
    }
    if c.timeout_ms == 0 {
        return fail("cluster.timeout_ms", "must be greater than 0");
    }
    if c.user.is_empty() {
        return fail("cluster.user", "must not be empty");
    }
    if let Err(e) = std::fs::metadata(&c.password_file) {
        return fail(
            "cluster.password_file",
            format!("cannot read {}: {e}", c.password_file.display()),
        );
    }
    let writers: Vec<u32> = config
        .galera_hostgroups
        .iter()
        .map(|g| g.writer_hostgroup)
        .collect();
    match c.hostgroup {
        Some(h) if !writers.contains(&h) => fail(
            "cluster.hostgroup",
            format!("{h} is not the writer_hostgroup of any [[galera_hostgroups]]"),
        ),
        None if c.sync && writers.is_empty() => fail(
            "cluster.sync",
            "needs a [[galera_hostgroups]] entry: the shared tables live in the Galera cluster",
        ),
        _ => Ok(()),
    }
}

fn admin(config: &Config) -> Result<(), Failure> {
    let Some(admin) = &config.admin else {
        return Ok(());
    };
    if admin.users.is_empty() {
        return fail("admin.users", "at least one admin account is needed");
    }
    for (i, u) in admin.users.iter().enumerate() {
        if !matches!(PasswordHash::parse(&u.password), Ok(Some(_))) {
            return fail(
                format!("admin.users[{i}].password"),
                "expected `*` and 40 hex digits, as SELECT PASSWORD('…') prints",
            );
        }
        if config.users.iter().any(|app| app.name == u.name) {
            return fail(
                format!("admin.users[{i}].name"),
                format!(
                    "'{}' is also an application user; admin accounts must be separate",
                    u.name
                ),
            );
        }
    }
    if admin.tls && config.frontend_tls.is_none() {
        return fail("admin.tls", "needs a [frontend_tls] certificate");
    }
    let remote_allowed = admin.tls && admin.allow_remote;
    if !admin.listen.ip().is_loopback() && !remote_allowed {
        return fail(
            "admin.listen",
            format!(
                "{} is not a loopback address: the admin port listens elsewhere only with tls = true and allow_remote = true",
                admin.listen
            ),
        );
    }
    Ok(())
}

fn query_rules(config: &Config, hostgroups: &HashSet<u32>) -> Result<(), Failure> {
    let mut ids = HashSet::new();
    for (i, rule) in config.query_rules.iter().enumerate() {
        if !ids.insert(rule.rule_id) {
            return fail(
                format!("query_rules[{i}].rule_id"),
                format!("rule {} is defined twice", rule.rule_id),
            );
        }
        for (field, hg) in [
            ("destination_hostgroup", rule.destination_hostgroup),
            ("mirror_hostgroup", rule.mirror_hostgroup),
        ] {
            let Some(hg) = hg else { continue };
            let managed = config.galera_hostgroups.iter().any(|g| {
                [
                    g.writer_hostgroup,
                    g.backup_writer_hostgroup,
                    g.reader_hostgroup,
                ]
                .contains(&hg)
            });
            if !hostgroups.contains(&hg) && !managed {
                return fail(
                    format!("query_rules[{i}].{field}"),
                    format!("hostgroup {hg} is not declared and has no servers"),
                );
            }
        }
        if rule.cache_ttl == Some(0) {
            return fail(
                format!("query_rules[{i}].cache_ttl"),
                "must be at least 1 ms",
            );
        }
    }
    crate::rules::QueryRules::compile(&config.query_rules).map(|_| ())
}

fn galera(config: &Config, hostgroups: &HashSet<u32>) -> Result<(), Failure> {
    let mut claimed = HashSet::new();
    for (i, g) in config.galera_hostgroups.iter().enumerate() {
        let key = |field: &str| format!("galera_hostgroups[{i}].{field}");
        let ids = [
            ("writer_hostgroup", g.writer_hostgroup),
            ("backup_writer_hostgroup", g.backup_writer_hostgroup),
            ("reader_hostgroup", g.reader_hostgroup),
            ("offline_hostgroup", g.offline_hostgroup),
        ];
        for (field, id) in ids {
            if !claimed.insert(id) {
                return fail(key(field), format!("hostgroup {id} already has a role"));
            }
        }
        if !hostgroups.contains(&g.writer_hostgroup) {
            return fail(
                key("writer_hostgroup"),
                format!("hostgroup {} has no servers", g.writer_hostgroup),
            );
        }
        if g.max_writers == 0 {
            return fail(key("max_writers"), "must be at least 1");
        }
        if g.writer_is_also_reader > 2 {
            return fail(key("writer_is_also_reader"), "must be 0, 1 or 2");
        }
        if config.monitor.is_none() {
            return fail(
                key("writer_hostgroup"),
                "Galera hostgroups need a [monitor] section",
            );
        }
    }
    Ok(())
}

fn monitor(config: &Config) -> Result<(), Failure> {
    let Some(m) = &config.monitor else {
        return Ok(());
    };
    if m.interval_ms < 50 {
        return fail("monitor.interval_ms", "must be at least 50");
    }
    if m.timeout_ms == 0 {
        return fail("monitor.timeout_ms", "must be greater than 0");
    }
    if m.fail_after == 0 || m.recover_after == 0 {
        return fail("monitor", "fail_after and recover_after must be at least 1");
    }
    if let Err(e) = std::fs::metadata(&m.password_file) {
        return fail(
            "monitor.password_file",
            format!("cannot read {}: {e}", m.password_file.display()),
        );
    }
    Ok(())
}

fn fail<T>(key: impl Into<String>, problem: impl Into<String>) -> Result<T, Failure> {
    Err((key.into(), problem.into()))
}

fn proxy(config: &Config) -> Result<(), Failure> {
    let p = &config.proxy;
    if p.max_client_connections == 0 {
        return fail("proxy.max_client_connections", "must be at least 1");
    }
    if p.listen_backlog == 0 {
        return fail("proxy.listen_backlog", "must be at least 1");
    }
    if p.worker_threads > 1024 {
        return fail(
            "proxy.worker_threads",
            "must be at most 1024 (0: one per core)",
        );
    }
    if p.max_allowed_packet < 1024 || p.max_allowed_packet > 1 << 30 {
        return fail(
            "proxy.max_allowed_packet",
            "must be between 1024 and 1073741824 bytes",
        );
    }
    if !(1..=9).contains(&p.compression_level) {
        return fail("proxy.compression_level", "must be between 1 and 9");
    }
    if p.handshake_timeout_ms == 0 || p.connect_timeout_ms == 0 {
        return fail("proxy", "timeouts must be greater than 0 ms");
    }
    if p.idle_timeout_ms == 0 {
        return fail("proxy.idle_timeout_ms", "must be greater than 0");
    }
    let pool = &config.pool;
    for (name, value) in [
        ("pool.statement_cache_size", pool.statement_cache_size),
        (
            "pool.max_prepared_per_connection",
            pool.max_prepared_per_connection,
        ),
        (
            "pool.max_prepared_per_session",
            pool.max_prepared_per_session,
        ),
    ] {
        if value == 0 {
            return fail(name, "must be at least 1");
        }
    }
    let cache = &config.query_cache;
    if cache.max_memory_mb == 0 || cache.max_entry_kb == 0 {
        return fail(
            "query_cache",
            "max_memory_mb and max_entry_kb must be at least 1",
        );
    }
    if cache.max_entry_kb > cache.max_memory_mb * 1024 {
        return fail("query_cache.max_entry_kb", "must not exceed max_memory_mb");
    }
    let mirror = &config.mirror;
    if mirror.max_concurrency == 0 || mirror.timeout_ms == 0 {
        return fail(
            "mirror",
            "max_concurrency and timeout_ms must be at least 1",
        );
    }
    if config.throttle.max_failures == 0 || config.throttle.block_ms == 0 {
        return fail("throttle", "max_failures and block_ms must be at least 1");
    }
    if p.server_version.is_empty() || p.server_version.contains('\0') {
        return fail(
            "proxy.server_version",
            "must be a non-empty string without NUL",
        );
    }
    Ok(())
}

/// Hostgroups may be declared explicitly; any hostgroup a server names exists implicitly.
fn hostgroups(config: &Config) -> Result<HashSet<u32>, Failure> {
    let mut ids = HashSet::new();
    for (i, hg) in config.hostgroups.iter().enumerate() {
        if !ids.insert(hg.id) {
            return fail(
                format!("hostgroups[{i}].id"),
                format!("hostgroup {} is declared twice", hg.id),
            );
        }
    }
    ids.extend(config.servers.iter().map(|s| s.hostgroup));
    Ok(ids)
}

fn servers(config: &Config, hostgroups: &HashSet<u32>) -> Result<(), Failure> {
    if config.servers.is_empty() {
        return fail("servers", "at least one [[servers]] entry is required");
    }
    let mut seen = HashSet::new();
    for (i, s) in config.servers.iter().enumerate() {
        let key = |field: &str| format!("servers[{i}].{field}");
        if s.host.trim().is_empty() {
            return fail(key("host"), "must not be empty");
        }
        if s.port == 0 {
            return fail(key("port"), "must be between 1 and 65535");
        }
        if s.max_connections == 0 {
            return fail(key("max_connections"), "must be at least 1");
        }
        if !seen.insert((s.host.as_str(), s.port, s.hostgroup)) {
            return fail(
                key("host"),
                format!(
                    "{}:{} is listed twice in hostgroup {}",
                    s.host, s.port, s.hostgroup
                ),
            );
        }
        if s.tls && config.backend_tls.is_none() {
            return fail(key("tls"), "tls = true needs a [backend_tls] section");
        }
        debug_assert!(hostgroups.contains(&s.hostgroup));
    }
    Ok(())
}

fn users(config: &Config, hostgroups: &HashSet<u32>) -> Result<(), Failure> {
    let mut names = HashSet::new();
    for (i, u) in config.users.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        if u.name.is_empty() || u.name.len() > 128 {
            return fail(key("name"), "must be 1 to 128 characters");
        }
        if !names.insert(u.name.as_str()) {
            return fail(key("name"), format!("user '{}' is defined twice", u.name));
        }
        match Verifier::parse(&u.password) {
            Err(e) => return fail(key("password"), e.to_string()),
            Ok(Some(Verifier::Ed25519(_))) if u.backend_password_file.is_none() => {
                return fail(
                    key("backend_password_file"),
                    "an ed25519 user needs one: its login proves the password to the proxy \
                     without revealing anything the proxy could log in to a backend with",
                )
            }
            Ok(_) => {}
        }
        if !hostgroups.contains(&u.default_hostgroup) {
            return fail(
                key("default_hostgroup"),
                format!("hostgroup {} has no servers", u.default_hostgroup),
            );
        }
        if u.require_tls && config.frontend_tls.is_none() {
            return fail(
                key("require_tls"),
                "require_tls needs a [frontend_tls] section",
            );
        }
        let wants_cert =
            u.require_client_cert || u.cert_subject.is_some() || u.cert_issuer.is_some();
        if wants_cert
            && config
                .frontend_tls
                .as_ref()
                .is_none_or(|t| t.client_ca.is_none())
        {
            return fail(
                key("require_client_cert"),
                "client certificates need frontend_tls.client_ca to verify them",
            );
        }
        for (j, net) in u.allowed_networks.iter().enumerate() {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                return fail(
                    format!("users[{i}].allowed_networks[{j}]"),
                    format!("'{net}' is not an address or a CIDR network like 10.0.0.0/8"),
                );
            }
        }
    }
    Ok(())
}

fn tls_files(config: &Config) -> Result<(), Failure> {
    let mut files = Vec::new();
    if let Some(tls) = &config.frontend_tls {
        files.push(("frontend_tls.cert", &tls.cert));
        files.push(("frontend_tls.key", &tls.key));
        if let Some(ca) = &tls.client_ca {
            files.push(("frontend_tls.client_ca", ca));
        }
    }
    if let Some(ca) = config.backend_tls.as_ref().and_then(|t| t.ca.as_ref()) {
        files.push(("backend_tls.ca", ca));
    }
    for (key, path) in files {
        if let Err(e) = std::fs::metadata(path) {
            return fail(key, format!("cannot read {}: {e}", path.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const MINIMAL: &str = r#"
        [[servers]]
        host = "127.0.0.1"
        port = 13306
        hostgroup = 10

        [[users]]
        name = "app"
        password = "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
        default_hostgroup = 10
    "#;

    fn invalid(text: &str) -> (String, String) {
        match Config::from_toml(text, Path::new(".")) {
            Err(ConfigError::Invalid { key, problem, .. }) => (key, problem),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn the_admin_port_stays_on_loopback_unless_tls_and_allow_remote_say_otherwise() {
        let base = "[[servers]]\nhost = \"a\"\nhostgroup = 1\n";
        let admin = |extra: &str| {
            format!("{base}[admin]\nusers = [{{ name = \"admin\", password = \"*4ACFE3202A5FF5CF467898FC58AAB1D615029441\" }}]\n{extra}")
        };
        assert!(Config::from_toml(&admin("listen = \"127.0.0.1:6032\""), Path::new(".")).is_ok());
        let (key, problem) = invalid(&admin("listen = \"0.0.0.0:6032\""));
        assert_eq!(key, "admin.listen");
        assert!(
            problem.contains("tls = true and allow_remote = true"),
            "{problem}"
        );
        let (key, _) = invalid(&admin("listen = \"0.0.0.0:6032\"\nallow_remote = true"));
        assert_eq!(key, "admin.listen");
        let (key, _) = invalid(&admin(
            "listen = \"0.0.0.0:6032\"\nallow_remote = true\ntls = true",
        ));
        assert_eq!(key, "admin.tls", "TLS needs a certificate");
        let (key, _) = invalid(&admin("").replace("*4ACF", "4ACF"));
        assert_eq!(key, "admin.users[0].password");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:6033");
        assert_eq!(c.servers[0].weight, 1);
        assert!(!c.users[0].require_tls);
    }

    #[test]
    fn cleartext_password_is_refused_with_the_key_named() {
        let text = MINIMAL.replace("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3", "app");
        let (key, problem) = invalid(&text);
        assert_eq!(key, "users[0].password");
        assert!(problem.contains("40 hex digits"), "{problem}");
    }

    #[test]
    fn each_methods_verifier_is_accepted_and_ed25519_needs_a_backend_password() {
        let sha2 = "$A$005$aaaaaaaaaaaaaaaaaaaa0123456789012345678901234567890123456789012";
        let text = MINIMAL.replace("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3", sha2);
        assert!(Config::from_toml(&text, Path::new(".")).is_ok());
        let ed25519 = "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY";
        let text = MINIMAL.replace("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3", ed25519);
        let (key, problem) = invalid(&text);
        assert_eq!(key, "users[0].backend_password_file");
        assert!(problem.contains("ed25519"), "{problem}");
        let text = format!("{text}\nbackend_password_file = \"app.secret\"\n");
        assert!(Config::from_toml(&text, Path::new(".")).is_ok());
    }

    #[test]
    fn worker_threads_default_to_one_per_core_and_are_bounded() {
        let c = Config::from_toml(MINIMAL, Path::new(".")).unwrap();
        assert_eq!(c.proxy.worker_threads, 0, "0: tokio's one per core");
        let one = format!("[proxy]\nworker_threads = 1\n{MINIMAL}");
        assert_eq!(
            Config::from_toml(&one, Path::new("."))
                .unwrap()
                .proxy
                .worker_threads,
            1
        );
        let (key, problem) = invalid(&format!("[proxy]\nworker_threads = 5000\n{MINIMAL}"));
        assert_eq!(key, "proxy.worker_threads");
        assert!(problem.contains("1024"), "{problem}");
    }

    #[test]
    fn unknown_hostgroup_is_refused() {
        let text = MINIMAL.replace("default_hostgroup = 10", "default_hostgroup = 20");
        assert_eq!(invalid(&text).0, "users[0].default_hostgroup");
    }

    #[test]
    fn require_tls_without_frontend_tls_is_refused() {
        let text = format!("{MINIMAL}\nrequire_tls = true\n");
        assert_eq!(invalid(&text).0, "users[0].require_tls");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let err = Config::from_toml(
            &format!("[proxy]\nlisen = \"x\"\n{MINIMAL}"),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::from_toml(
            &MINIMAL.replace("port = 13306", "port = \"x\""),
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn duplicate_servers_and_users_are_refused() {
        let dup_server =
            format!("{MINIMAL}\n[[servers]]\nhost = \"127.0.0.1\"\nport = 13306\nhostgroup = 10\n");
        assert_eq!(invalid(&dup_server).0, "servers[1].host");
        let dup_user = format!(
            "{MINIMAL}\n[[users]]\nname = \"app\"\npassword = \"\"\ndefault_hostgroup = 10\n"
        );
        assert_eq!(invalid(&dup_user).0, "users[1].name");
    }

    #[test]
    fn bad_networks_are_named() {
        let text = MINIMAL.replace(
            "default_hostgroup = 10",
            "default_hostgroup = 10\nallowed_networks = [\"127.0.0.1/32\", \"10.0.0.0/33\"]",
        );
        assert_eq!(invalid(&text).0, "users[0].allowed_networks[1]");
    }

    #[test]
    fn missing_tls_files_are_named() {
        let text =
            format!("[frontend_tls]\ncert = \"nope.pem\"\nkey = \"nope-key.pem\"\n{MINIMAL}");
        assert_eq!(invalid(&text).0, "frontend_tls.cert");
    }

    #[test]
    fn the_cluster_section_is_checked_and_its_unknown_keys_are_errors() {
        let galera = "[[galera_hostgroups]]\nwriter_hostgroup = 10\nbackup_writer_hostgroup = 20\nreader_hostgroup = 30\noffline_hostgroup = 40\n[monitor]\nuser = \"m\"\npassword_file = \"/dev/zero\"\n";
        let cluster = |extra: &str| {
            format!("{MINIMAL}{galera}[cluster]\nname = \"prod\"\nuser = \"sync\"\n{extra}\npassword_file = \"/dev/null\"\n")
        };
        let ok = Config::from_toml(&cluster("sync = true"), Path::new(".")).unwrap();
        let c = ok.cluster.unwrap();
        assert_eq!((c.interval_ms, c.schema.as_str()), (1000, "sluice"));
        assert_eq!(c.table, "cluster_config");
        assert_eq!(c.state_file, Path::new("./cluster-state.toml"));
        match Config::from_toml(&cluster("syncing = true"), Path::new(".")) {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("syncing"), "{message}")
            }
            other => panic!("an unknown key must be refused, got {other:?}"),
        }
        assert_eq!(invalid(&cluster("schema = \"a-b\"")).0, "cluster.schema");
        assert_eq!(
            invalid(&cluster("interval_ms = 10")).0,
            "cluster.interval_ms"
        );
        assert_eq!(invalid(&cluster("hostgroup = 30")).0, "cluster.hostgroup");
        let missing = cluster("").replace("/dev/null", "/nonexistent/pw");
        assert_eq!(invalid(&missing).0, "cluster.password_file");
        let no_galera = format!("{MINIMAL}[cluster]\nname = \"p\"\nuser = \"s\"\npassword_file = \"/dev/null\"\nsync = true\n");
        assert_eq!(invalid(&no_galera).0, "cluster.sync");
    }
}
