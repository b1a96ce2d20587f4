//! `global_variables`: the configuration's settings sections as `name = value` rows, named
//! by section: `mysql-<key>` for `[proxy]`, `mysql-pool_<key>`, `mysql-throttle_<key>`,
//! `mysql-firewall_<key>`, `mysql-query_log_<key>`, `mysql-query_cache_<key>`,
//! `mysql-mirror_<key>`, and `monitor-<key>`. A value is read
//! back with the type the setting has, and the section is checked as the file would be.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::proxysql_defaults;
use crate::config::Config;

/// Section prefixes, longest first so `mysql-pool_` wins over `mysql-`.
const PREFIXES: [(&str, &str); 8] = [
    ("mysql-query_cache_", "query_cache"),
    ("mysql-query_log_", "query_log"),
    ("mysql-mirror_", "mirror"),
    ("mysql-firewall_", "firewall"),
    ("mysql-throttle_", "throttle"),
    ("mysql-pool_", "pool"),
    ("monitor-", "monitor"),
    ("mysql-", "proxy"),
];

fn table_of<T: Serialize>(section: &T) -> toml::Table {
    match toml::Value::try_from(section) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    }
}

fn sections(config: &Config) -> Vec<(&'static str, toml::Table)> {
    let mut out = vec![
        ("proxy", table_of(&config.proxy)),
        ("pool", table_of(&config.pool)),
        ("throttle", table_of(&config.throttle)),
        ("firewall", table_of(&config.firewall)),
        ("query_log", table_of(&config.query_log)),
        ("query_cache", table_of(&config.query_cache)),
        ("mirror", table_of(&config.mirror)),
    ];
    if let Some(m) = &config.monitor {
        out.push(("monitor", table_of(m)));
    }
    out
}

fn prefix_of(section: &str) -> &'static str {
    PREFIXES
        .iter()
        .find(|(_, s)| *s == section)
        .map(|(p, _)| *p)
        .expect("every section has a prefix")
}

fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// ProxySQL's names for the settings Sluice has under its own: each is a second row of
/// `global_variables` with the same value, so that scripts written for ProxySQL read (and
/// change) them. `(ProxySQL's name, Sluice's name)`; where the two are the same there is
/// one row.
const PROXYSQL_NAMES: [(&str, &str); 20] = [
    ("mysql-interfaces", "mysql-listen"),
    ("mysql-max_connections", "mysql-max_client_connections"),
    ("mysql-connect_timeout_client", "mysql-handshake_timeout_ms"),
    ("mysql-connect_timeout_server", "mysql-connect_timeout_ms"),
    ("mysql-wait_timeout", "mysql-idle_timeout_ms"),
    ("mysql-long_query_time", "mysql-long_query_time_ms"),
    ("mysql-multiplexing", "mysql-pool_multiplex"),
    ("mysql-connection_max_age_ms", "mysql-pool_max_lifetime_ms"),
    (
        "mysql-max_stmts_per_connection",
        "mysql-pool_max_prepared_per_connection",
    ),
    ("mysql-max_stmts_cache", "mysql-pool_statement_cache_size"),
    (
        "mysql-query_cache_size_MB",
        "mysql-query_cache_max_memory_mb",
    ),
    (
        "mysql-query_cache_stores_empty_result",
        "mysql-query_cache_stores_empty_result",
    ),
    (
        "mysql-mirror_max_concurrency",
        "mysql-mirror_max_concurrency",
    ),
    ("mysql-mirror_max_queue_length", "mysql-mirror_max_queue"),
    ("mysql-eventslog_filename", "mysql-query_log_path"),
    ("mysql-eventslog_filesize", "mysql-query_log_max_bytes"),
    ("mysql-monitor_username", "monitor-user"),
    ("mysql-monitor_ping_interval", "monitor-interval_ms"),
    ("mysql-monitor_ping_timeout", "monitor-timeout_ms"),
    ("mysql-monitor_ping_max_failures", "monitor-fail_after"),
];

/// The `admin-` variables: read-only facts about the admin port and the build
/// (`admin-version` is what ProxySQL tools read to know what they talk to), the accounts
/// (names and password hashes, never a password), and ProxySQL's other admin variables
/// at their defaults.
pub fn admin_rows(config: &Config) -> Vec<(String, String)> {
    let admin = config.admin.as_ref();
    let listen = admin.map(|a| a.listen.to_string()).unwrap_or_default();
    let credentials = admin
        .map(|a| {
            a.users
                .iter()
                .map(|u| format!("{}:{}", u.name, u.password))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default();
    let mut rows = vec![
        ("admin-admin_credentials".into(), credentials),
        ("admin-mysql_ifaces".into(), listen),
        ("admin-version".into(), super::functions::version()),
    ];
    rows.extend(
        proxysql_defaults::ADMIN
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    rows
}

/// ProxySQL variables that describe Sluice itself rather than a setting: read-only,
/// with Sluice's real value.
pub fn facts(config: &Config) -> Vec<(String, String)> {
    let workers = super::global_status::worker_threads();
    // what the client port's greeting offers (`Door::clients`: CLIENT_DEPRECATE_EOF too)
    let capabilities = crate::frontend::handshake::offered_capabilities(
        config.frontend_tls.is_some(),
        config.proxy.compression,
        true,
    );
    vec![
        ("mysql-threads".into(), workers.to_string()),
        (
            "mysql-stacksize".into(),
            crate::allocator::WORKER_STACK_BYTES.to_string(),
        ),
        ("mysql-server_capabilities".into(), capabilities.to_string()),
        (
            "mysql-have_ssl".into(),
            config.frontend_tls.is_some().to_string(),
        ),
        (
            "mysql-have_compress".into(),
            config.proxy.compression.to_string(),
        ),
    ]
}

/// The read-only `mysql-` rows: [`facts`] and ProxySQL's variables at their defaults.
fn read_only_rows(config: &Config) -> Vec<(String, String)> {
    let mut rows = facts(config);
    rows.extend(
        proxysql_defaults::MYSQL
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string())),
    );
    rows
}

/// `LOAD|SAVE ADMIN VARIABLES`: the `admin-` rows must hold what is in force (they are
/// read-only); nothing else changes.
pub fn check_admin(config: &Config, rows: &[(String, String)]) -> Result<(), String> {
    let fixed = admin_rows(config);
    for (name, value) in rows.iter().filter(|(n, _)| n.starts_with("admin-")) {
        match fixed.iter().find(|(n, _)| n == name) {
            Some((_, v)) if v == value => {}
            Some((_, v)) => return Err(format!("{name}: read-only (it is {v:?})")),
            None => return Err(format!("{name}: unknown variable")),
        }
    }
    Ok(())
}

/// The settings of `config` under Sluice's own names only (no ProxySQL aliases, no
/// `admin-` rows), in section order.
pub fn setting_rows(config: &Config) -> Vec<(String, String)> {
    sections(config)
        .into_iter()
        .flat_map(|(section, table)| {
            let prefix = prefix_of(section);
            table
                .into_iter()
                .map(move |(key, value)| (format!("{prefix}{key}"), show(&value)))
        })
        .collect()
}

/// Every variable of `config`, sorted by name.
pub fn rows(config: &Config) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = setting_rows(config)
        .into_iter()
        .chain(admin_rows(config))
        .chain(read_only_rows(config))
        .collect();
    let aliases: Vec<(String, String)> = PROXYSQL_NAMES
        .iter()
        .filter(|(alias, name)| alias != name)
        .filter_map(|(alias, name)| {
            let value = rows.iter().find(|(n, _)| n == name)?.1.clone();
            Some((alias.to_string(), value))
        })
        .collect();
    rows.extend(aliases);
    rows.sort();
    rows
}

/// `rows` with ProxySQL-named rows folded into Sluice's: a ProxySQL name whose value was
/// changed carries the change (both names changed to different values is refused).
fn fold_proxysql_names(
    config: &Config,
    rows: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let current = self::rows(config);
    let now = |name: &str| current.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let mut out: Vec<(String, String)> = rows
        .iter()
        .filter(|(n, _)| !PROXYSQL_NAMES.iter().any(|(a, s)| a == n && a != s))
        .cloned()
        .collect();
    for (alias, name) in PROXYSQL_NAMES.iter().filter(|(a, s)| a != s) {
        let Some((_, wanted)) = rows.iter().find(|(n, _)| n == alias) else {
            continue;
        };
        if Some(wanted) == now(alias) {
            continue;
        }
        match out.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) if Some(&*v) == now(name) => *v = wanted.clone(),
            Some((_, v)) if v != wanted => {
                return Err(format!(
                    "{alias} and {name} are one setting: change only one"
                ))
            }
            Some(_) => {}
            None => out.push((name.to_string(), wanted.clone())),
        }
    }
    Ok(out)
}

/// Refuses a change to a read-only variable (every `admin-` one, and the `mysql-` ones
/// that are ProxySQL's without a Sluice setting or facts about Sluice); `None` for any
/// other name or an unchanged value.
pub fn refuse_read_only(config: &Config, name: &str, value: &str) -> Option<String> {
    let fixed: Vec<(String, String)> = read_only_rows(config)
        .into_iter()
        .chain(admin_rows(config))
        .collect();
    refusal(&fixed, name, value)
}

/// The error for setting `name`, one of the `fixed` rows, to another value than it has.
fn refusal(fixed: &[(String, String)], name: &str, value: &str) -> Option<String> {
    let (_, fixed) = fixed.iter().find(|(n, _)| n == name)?;
    (fixed != value)
        .then(|| format!("{name} is read-only: no Sluice setting is behind it; it stays {fixed:?}"))
}

/// `config` with the variables in `rows` applied; names and values are checked.
pub fn apply(config: &Config, rows: &[(String, String)]) -> Result<Config, String> {
    let mut tables = sections(config);
    // read-only rows (admin- ones are checked by `check_admin`) keep their values
    let fixed = read_only_rows(config);
    for (name, value) in rows {
        if let Some(refused) = refusal(&fixed, name, value) {
            return Err(refused);
        }
    }
    let rows: Vec<(String, String)> = rows
        .iter()
        .filter(|(n, _)| !fixed.iter().any(|(f, _)| f == n))
        .cloned()
        .collect();
    let rows = fold_proxysql_names(config, &rows)?;
    // `admin-` rows are LOAD ADMIN VARIABLES' business (see `check_admin`)
    for (name, value) in rows.iter().filter(|(n, _)| !n.starts_with("admin-")) {
        let (prefix, section) = PREFIXES
            .iter()
            .find(|(p, _)| name.starts_with(p))
            .ok_or_else(|| format!("{name}: unknown variable"))?;
        let key = &name[prefix.len()..];
        let table = tables
            .iter_mut()
            .find(|(s, _)| s == section)
            .map(|(_, t)| t)
            .ok_or_else(|| format!("{name}: the configuration has no [{section}] section"))?;
        let current = table
            .get(key)
            .ok_or_else(|| format!("{name}: unknown variable"))?;
        let parsed = match current {
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| format!("{name}: {value:?} is not a whole number")),
            toml::Value::Boolean(_) => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(toml::Value::Boolean(true)),
                "false" | "0" => Ok(toml::Value::Boolean(false)),
                _ => Err(format!("{name}: {value:?} is not true or false")),
            },
            _ => Ok(toml::Value::String(value.clone())),
        }?;
        table.insert(key.to_owned(), parsed);
    }
    let mut next = config.clone();
    for (section, table) in tables {
        let value = toml::Value::Table(table);
        let bad = |e: toml::de::Error| format!("{}: {e}", prefix_of(section));
        match section {
            "proxy" => next.proxy = back(value).map_err(bad)?,
            "pool" => next.pool = back(value).map_err(bad)?,
            "throttle" => next.throttle = back(value).map_err(bad)?,
            "firewall" => next.firewall = back(value).map_err(bad)?,
            "query_log" => next.query_log = back(value).map_err(bad)?,
            "query_cache" => next.query_cache = back(value).map_err(bad)?,
            "mirror" => next.mirror = back(value).map_err(bad)?,
            "monitor" => next.monitor = Some(back(value).map_err(bad)?),
            _ => unreachable!("sections() names these only"),
        }
    }
    Ok(next)
}

fn back<T: DeserializeOwned>(value: toml::Value) -> Result<T, toml::de::Error> {
    value.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        Config::from_toml(
            "[monitor]\nuser = \"monitor\"\npassword_file = \"/dev/null\"\n\n[[servers]]\nhost = \"a\"\nhostgroup = 1\n",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn proxysql_names_show_and_change_the_same_setting() {
        let config = demo();
        let rows = rows(&config);
        let value = |rows: &[(String, String)], name: &str| {
            rows.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        };
        assert_eq!(
            value(&rows, "mysql-max_connections"),
            value(&rows, "mysql-max_client_connections")
        );
        assert_eq!(
            value(&rows, "mysql-monitor_username").as_deref(),
            Some("monitor")
        );
        let with = |changes: &[(&str, &str)]| {
            let mut next = rows.clone();
            for (name, v) in changes {
                next.iter_mut().find(|(n, _)| n == name).unwrap().1 = v.to_string();
            }
            apply(&config, &next)
        };
        let changed = with(&[("mysql-max_connections", "77")]).unwrap();
        assert_eq!(changed.proxy.max_client_connections, 77);
        let changed = with(&[("mysql-max_client_connections", "78")]).unwrap();
        assert_eq!(changed.proxy.max_client_connections, 78);
        let err = with(&[
            ("mysql-max_connections", "77"),
            ("mysql-max_client_connections", "78"),
        ])
        .unwrap_err();
        assert!(err.contains("one setting"), "{err}");
        let same = with(&[
            ("mysql-max_connections", "79"),
            ("mysql-max_client_connections", "79"),
        ])
        .unwrap();
        assert_eq!(same.proxy.max_client_connections, 79);
    }

    #[test]
    fn proxysqls_own_variables_are_rows_once_each_and_read_only() {
        let config = demo();
        let rows = rows(&config);
        let mut names: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), rows.len(), "a name shown twice");
        let value = |name: &str| {
            rows.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("mysql-shun_on_failures"), Some("5"));
        // what the proxy offers clients: compression unless turned off
        assert_eq!(value("mysql-have_compress"), Some("true"));
        let mut plain = config.clone();
        plain.proxy.compression = false;
        let off = facts(&plain);
        assert!(off.contains(&("mysql-have_compress".into(), "false".into())));
        assert_eq!(value("admin-refresh_interval"), Some("2000"));
        // unchanged, they pass a LOAD; changed, they are refused with the reason
        apply(&config, &rows).unwrap();
        let err = apply(&config, &[("mysql-shun_on_failures".into(), "7".into())]).unwrap_err();
        assert!(err.contains("read-only") && err.contains("\"5\""), "{err}");
        let err = apply(&config, &[("mysql-threads".into(), "64".into())]).unwrap_err();
        assert!(err.contains("read-only"), "{err}");
        assert!(refuse_read_only(&config, "mysql-max_connections", "5").is_none());
        let err = check_admin(&config, &[("admin-web_enabled".into(), "true".into())]).unwrap_err();
        assert!(err.contains("read-only"), "{err}");
    }

    #[test]
    fn variables_round_trip_and_changes_are_typed() {
        let config = demo();
        let rows = rows(&config);
        assert!(rows
            .iter()
            .any(|(n, v)| n == "mysql-max_allowed_packet" && v == "67108864"));
        assert!(rows
            .iter()
            .any(|(n, v)| n == "mysql-pool_max_idle_per_server" && v == "64"));
        assert!(rows
            .iter()
            .any(|(n, v)| n == "monitor-interval_ms" && v == "500"));
        assert!(rows
            .iter()
            .any(|(n, v)| n == "mysql-firewall_mode" && v == "off"));
        let same = apply(&config, &rows).unwrap();
        assert_eq!(super::rows(&same), rows);

        let changed = apply(&config, &[("mysql-idle_timeout_ms".into(), "5000".into())]).unwrap();
        assert_eq!(changed.proxy.idle_timeout_ms, 5000);
        let err = apply(&config, &[("mysql-idle_timeout_ms".into(), "soon".into())]).unwrap_err();
        assert!(err.contains("not a whole number"), "{err}");
        let err = apply(&config, &[("mysql-firewall_mode".into(), "block".into())]).unwrap_err();
        assert!(err.starts_with("mysql-firewall_"), "{err}");
        let err = apply(&config, &[("mysql-nonsense".into(), "1".into())]).unwrap_err();
        assert!(err.contains("unknown variable"), "{err}");
    }
}
