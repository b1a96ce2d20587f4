//! Which admin tables mirror the running proxy, and refilling them: each live table a
//! statement names is filled from the live state right before the statement runs.

use rusqlite::types::Value;
use rusqlite::Connection;

use super::live::{
    checks, client_hosts, commands, connection_pool, digests, galera_row, global, lag_row, memory,
    ping_row, prepared_statements, processlist, read_only_row, runtime_servers, users, Live,
    CLIENT_HOSTS, CLIENT_HOSTS_RESET, COMMANDS, CONNECTION_POOL, CONNECTION_POOL_RESET, DIGEST,
    DIGEST_RESET, GALERA_LOG, GLOBAL, LAG_LOG, MEMORY, PING_LOG, PREPARED_INFO, PROCESSLIST,
    READ_ONLY_LOG, USERS,
};
use super::stats_tables;
use super::tables::{self, Table};
use super::variables;
use crate::runtime::Runtime;

/// Every live table and its schema.
pub const LIVE_TABLES: [(&str, &Table); 22] = [
    ("stats", &CLIENT_HOSTS),
    ("stats", &CLIENT_HOSTS_RESET),
    ("stats", &CONNECTION_POOL_RESET),
    ("stats", stats_tables::TABLES[0]),
    ("stats", stats_tables::TABLES[1]),
    ("stats", stats_tables::TABLES[2]),
    ("stats", stats_tables::TABLES[3]),
    ("stats", stats_tables::TABLES[4]),
    ("stats", stats_tables::TABLES[5]),
    ("stats", &PREPARED_INFO),
    ("stats", &CONNECTION_POOL),
    ("stats", &DIGEST),
    ("stats", &DIGEST_RESET),
    ("stats", &GLOBAL),
    ("stats", &USERS),
    ("stats", &PROCESSLIST),
    ("stats", &COMMANDS),
    ("stats", &MEMORY),
    ("monitor", &PING_LOG),
    ("monitor", &GALERA_LOG),
    ("monitor", &READ_ONLY_LOG),
    ("monitor", &LAG_LOG),
];

/// Whether a statement that writes targets a table that may only be read.
pub fn writes_live_table(sql: &str) -> bool {
    let mut analyzer = crate::rules::Analyzer::default();
    let analysis = analyzer.analyze(sql.as_bytes());
    let target = analysis
        .tables
        .names(sql.as_bytes())
        .next()
        .unwrap_or_default();
    let target = String::from_utf8_lossy(target)
        .to_ascii_lowercase()
        .replace('`', "");
    ["runtime_", "stats", "monitor."]
        .iter()
        .any(|p| target.starts_with(p))
}

/// Refills every live table `lower_sql` names.
pub fn refresh(db: &Connection, live: &Live<'_>, lower_sql: &str) -> rusqlite::Result<()> {
    let runtime = live.runtime();
    let config = &runtime.config;
    let mentions = |name: &str| lower_sql.contains(&name.to_ascii_lowercase());
    let runtime_table = |t: &Table| format!("runtime_{}", t.name);
    if mentions(&runtime_table(&tables::SERVERS)) {
        tables::fill(
            db,
            "main",
            &runtime_table(&tables::SERVERS),
            &runtime_servers(live, &runtime),
        )?;
    }
    if mentions(&runtime_table(&tables::GALERA)) {
        tables::fill(
            db,
            "main",
            &runtime_table(&tables::GALERA),
            &tables::galera_rows(config),
        )?;
    }
    if mentions(&runtime_table(&tables::USERS)) {
        tables::fill(
            db,
            "main",
            &runtime_table(&tables::USERS),
            &tables::user_rows(config),
        )?;
    }
    if mentions(&runtime_table(&tables::QUERY_RULES)) {
        tables::fill(
            db,
            "main",
            &runtime_table(&tables::QUERY_RULES),
            &tables::rule_rows(config),
        )?;
    }
    if mentions(&runtime_table(&tables::VARIABLES)) {
        let rows: Vec<Vec<Value>> = variables::rows(config)
            .into_iter()
            .map(|(n, v)| vec![Value::Text(n), Value::Text(v)])
            .collect();
        tables::fill(db, "main", &runtime_table(&tables::VARIABLES), &rows)?;
    }
    for (schema, table) in LIVE_TABLES {
        // `stats_mysql_query_digest` is also a prefix of its `_reset` twin: fill both
        if mentions(table.name) {
            tables::fill(
                db,
                schema,
                table.name,
                &live_rows(table.name, live, &runtime),
            )?;
        }
    }
    Ok(())
}

fn live_rows(name: &str, live: &Live<'_>, runtime: &Runtime) -> Vec<Vec<Value>> {
    if let Some(rows) = stats_tables::rows(name, live, runtime) {
        return rows;
    }
    match name {
        "stats_mysql_connection_pool" | "stats_mysql_connection_pool_reset" => {
            connection_pool(live, runtime)
        }
        "stats_mysql_client_host_cache_reset" => {
            let rows = client_hosts(live);
            live.frontend.forget_client_hosts();
            rows
        }
        "stats_mysql_query_digest" | "stats_mysql_query_digest_reset" => digests(live),
        "stats_mysql_global" => global(live, runtime),
        "stats_mysql_users" => users(live, runtime),
        "stats_mysql_processlist" => processlist(live),
        "stats_mysql_commands_counters" => commands(live),
        "stats_memory_metrics" => memory(live, runtime),
        "stats_mysql_client_host_cache" => client_hosts(live),
        "stats_mysql_prepared_statements_info" => prepared_statements(live),
        "mysql_server_ping_log" => checks(live, ping_row),
        "mysql_server_galera_log" => checks(live, galera_row),
        "mysql_server_read_only_log" => checks(live, read_only_row),
        "mysql_server_replication_lag_log" => checks(live, lag_row),
        _ => Vec::new(),
    }
}
