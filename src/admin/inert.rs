//! ProxySQL admin tables for features Sluice does not have, or has in another shape:
//! present with ProxySQL's names and columns so that tools which read them get an answer,
//! and always empty — what ProxySQL shows while the feature is idle. A configuration table
//! here that an operator fills is refused at `LOAD … TO RUNTIME` of its module, naming the
//! feature, rather than accepted and ignored. Configuration tables have `runtime_` twins
//! (empty too); statistics tables live in the `stats` schema.

use rusqlite::Connection;

use super::module::Module;
use super::tables::{unkeyed as table, Table};

/// An always-empty table, the module whose LOAD checks it, and the feature it belongs to.
pub struct Inert {
    pub table: Table,
    pub module: Option<Module>,
    pub feature: &'static str,
}

/// In `main`, with `runtime_` twins (but `mysql_collations`, which has none).
pub const CONFIG: [Inert; 10] = [
    Inert {
        table: table("mysql_aws_aurora_hostgroups", &[("writer_hostgroup", "INT"), ("reader_hostgroup", "INT"), ("active", "INT"), ("aurora_port", "INT"), ("domain_name", "VARCHAR"), ("max_lag_ms", "INT"), ("check_interval_ms", "INT"), ("check_timeout_ms", "INT"), ("writer_is_also_reader", "INT"), ("new_reader_weight", "INT"), ("add_lag_ms", "INT"), ("min_lag_ms", "INT"), ("lag_num_checks", "INT"), ("comment", "VARCHAR")]),
        module: Some(Module::Servers),
        feature: "Aurora hostgroups",
    },
    Inert {
        table: table("mysql_group_replication_hostgroups", &[("writer_hostgroup", "INT"), ("backup_writer_hostgroup", "INT"), ("reader_hostgroup", "INT"), ("offline_hostgroup", "INT"), ("active", "INT"), ("max_writers", "INT"), ("writer_is_also_reader", "INT"), ("max_transactions_behind", "INT"), ("comment", "VARCHAR")]),
        module: Some(Module::Servers),
        feature: "group replication hostgroups",
    },
    Inert {
        table: table("mysql_hostgroup_attributes", &[("hostgroup_id", "INT"), ("max_num_online_servers", "INT"), ("autocommit", "INT"), ("free_connections_pct", "INT"), ("init_connect", "VARCHAR"), ("multiplex", "INT"), ("connection_warming", "INT"), ("throttle_connections_per_sec", "INT"), ("ignore_session_variables", "VARCHAR"), ("hostgroup_settings", "VARCHAR"), ("servers_defaults", "VARCHAR"), ("comment", "VARCHAR")]),
        module: Some(Module::Servers),
        feature: "per-hostgroup attributes",
    },
    Inert {
        table: table("mysql_servers_ssl_params", &[("hostname", "VARCHAR"), ("port", "INT"), ("username", "VARCHAR"), ("ssl_ca", "VARCHAR"), ("ssl_cert", "VARCHAR"), ("ssl_key", "VARCHAR"), ("ssl_capath", "VARCHAR"), ("ssl_crl", "VARCHAR"), ("ssl_crlpath", "VARCHAR"), ("ssl_cipher", "VARCHAR"), ("tls_version", "VARCHAR"), ("comment", "VARCHAR")]),
        module: Some(Module::Servers),
        feature: "per-server TLS parameters ([backend_tls] and a server's tls serve instead)",
    },
    Inert {
        table: table("mysql_ldap_mapping", &[("priority", "INTEGER"), ("frontend_entity", "VARCHAR"), ("backend_entity", "VARCHAR"), ("comment", "VARCHAR")]),
        module: Some(Module::Users),
        feature: "LDAP mapping",
    },
    Inert {
        table: table("mysql_query_rules_fast_routing", &[("username", "VARCHAR"), ("schemaname", "VARCHAR"), ("flagIN", "INT"), ("destination_hostgroup", "INT"), ("comment", "VARCHAR")]),
        module: Some(Module::QueryRules),
        feature: "fast routing (query rules with username/schemaname and destination_hostgroup serve instead)",
    },
    Inert {
        table: table("mysql_firewall_whitelist_rules", &[("active", "INT"), ("username", "VARCHAR"), ("client_address", "VARCHAR"), ("schemaname", "VARCHAR"), ("flagIN", "INT"), ("digest", "VARCHAR"), ("comment", "VARCHAR")]),
        module: Some(Module::QueryRules),
        feature: "ProxySQL's firewall (Sluice's digest firewall has its own allow list file)",
    },
    Inert {
        table: table("mysql_firewall_whitelist_sqli_fingerprints", &[("active", "INT"), ("fingerprint", "VARCHAR")]),
        module: Some(Module::QueryRules),
        feature: "ProxySQL's firewall",
    },
    Inert {
        table: table("mysql_firewall_whitelist_users", &[("active", "INT"), ("username", "VARCHAR"), ("client_address", "VARCHAR"), ("mode", "VARCHAR"), ("comment", "VARCHAR")]),
        module: Some(Module::QueryRules),
        feature: "ProxySQL's firewall",
    },
    Inert {
        table: table("mysql_collations", &[("Id", "INTEGER"), ("Collation", "VARCHAR"), ("Charset", "VARCHAR"), ("Default", "VARCHAR")]),
        module: None,
        feature: "ProxySQL's list of collations",
    },
];

/// In `stats`.
pub const STATS: [Inert; 7] = [
    Inert {
        table: table(
            "stats_mysql_gtid_executed",
            &[
                ("hostname", "VARCHAR"),
                ("port", "INT"),
                ("gtid_executed", "VARCHAR"),
                ("events", "INT"),
            ],
        ),
        module: None,
        feature: "GTID tracking of ProxySQL's binlog reader",
    },
    Inert {
        table: table(
            "stats_proxysql_message_metrics",
            &[
                ("message_id", "VARCHAR"),
                ("filename", "VARCHAR"),
                ("line", "INT"),
                ("func", "VARCHAR"),
                ("count_star", "INTEGER"),
                ("first_seen", "INTEGER"),
                ("last_seen", "INTEGER"),
            ],
        ),
        module: None,
        feature: "ProxySQL's log message counters",
    },
    Inert {
        table: table(
            "stats_proxysql_message_metrics_reset",
            &[
                ("message_id", "VARCHAR"),
                ("filename", "VARCHAR"),
                ("line", "INT"),
                ("func", "VARCHAR"),
                ("count_star", "INTEGER"),
                ("first_seen", "INTEGER"),
                ("last_seen", "INTEGER"),
            ],
        ),
        module: None,
        feature: "ProxySQL's log message counters",
    },
    Inert {
        table: table(
            "stats_proxysql_servers_checksums",
            &[
                ("hostname", "VARCHAR"),
                ("port", "INT"),
                ("name", "VARCHAR"),
                ("version", "INT"),
                ("epoch", "INT"),
                ("checksum", "VARCHAR"),
                ("changed_at", "INT"),
                ("updated_at", "INT"),
                ("diff_check", "INT"),
            ],
        ),
        module: None,
        feature: "ProxySQL Cluster",
    },
    Inert {
        table: table(
            "stats_proxysql_servers_clients_status",
            &[
                ("uuid", "VARCHAR"),
                ("hostname", "VARCHAR"),
                ("port", "INT"),
                ("admin_mysql_ifaces", "VARCHAR"),
                ("last_seen_at", "INT"),
            ],
        ),
        module: None,
        feature: "ProxySQL Cluster",
    },
    Inert {
        table: table(
            "stats_proxysql_servers_metrics",
            &[
                ("hostname", "VARCHAR"),
                ("port", "INT"),
                ("weight", "INT"),
                ("comment", "VARCHAR"),
                ("response_time_ms", "INT"),
                ("Uptime_s", "INT"),
                ("last_check_ms", "INT"),
                ("Queries", "INT"),
                ("Client_Connections_connected", "INT"),
                ("Client_Connections_created", "INT"),
            ],
        ),
        module: None,
        feature: "ProxySQL Cluster",
    },
    Inert {
        table: table(
            "stats_proxysql_servers_status",
            &[
                ("hostname", "VARCHAR"),
                ("port", "INT"),
                ("weight", "INT"),
                ("master", "VARCHAR"),
                ("global_version", "INT"),
                ("check_age_us", "INT"),
                ("ping_time_us", "INT"),
                ("checks_OK", "INT"),
                ("checks_ERR", "INT"),
            ],
        ),
        module: None,
        feature: "ProxySQL Cluster",
    },
];

/// Creates every inert table.
pub fn create(db: &Connection) -> rusqlite::Result<()> {
    for inert in &CONFIG {
        let t = &inert.table;
        db.execute(&t.create("main", t.name), [])?;
        if inert.module.is_some() {
            db.execute(&t.create("main", &format!("runtime_{}", t.name)), [])?;
        }
    }
    for inert in &STATS {
        db.execute(&inert.table.create("stats", inert.table.name), [])?;
    }
    Ok(())
}

/// Refuses a LOAD of `module` while one of its inert tables holds rows.
pub fn check_empty(db: &Connection, module: Module) -> Result<(), String> {
    for inert in CONFIG.iter().filter(|i| i.module == Some(module)) {
        let name = inert.table.name;
        let rows: i64 = db
            .query_row(&format!("SELECT COUNT(*) FROM main.{name}"), [], |r| {
                r.get(0)
            })
            .map_err(|e| e.to_string())?;
        if rows > 0 {
            return Err(format!(
                "{name}: not supported: Sluice has no {}; the table must stay empty",
                inert.feature
            ));
        }
    }
    Ok(())
}
