//! The statistics tables that complete ProxySQL's `stats` schema beside those of
//! `live.rs`: backend errors, rule hits, idle connections, and the `_reset` twins. Each is
//! filled from the live state right before a statement reads it; reading a `_reset` twin
//! returns the rows and then clears what ProxySQL clears.

use rusqlite::types::Value;
use serde_json::json;

use super::live::{int, text, Live};
use super::tables::{unkeyed as table, Table};
use crate::runtime::Runtime;

const ERROR_COLUMNS: &[(&str, &str)] = &[
    ("hostgroup", "INT"),
    ("hostname", "VARCHAR"),
    ("port", "INT"),
    ("username", "VARCHAR"),
    ("client_address", "VARCHAR"),
    ("schemaname", "VARCHAR"),
    ("errno", "INT"),
    ("count_star", "INTEGER"),
    ("first_seen", "INTEGER"),
    ("last_seen", "INTEGER"),
    ("last_error", "VARCHAR"),
];

/// Errors the backends answered, per hostgroup, server, user, client, schema and errno.
pub const ERRORS: Table = table("stats_mysql_errors", ERROR_COLUMNS);
/// Reading it clears the error statistics.
pub const ERRORS_RESET: Table = table("stats_mysql_errors_reset", ERROR_COLUMNS);

/// Hits per active query rule.
pub const RULE_HITS: Table = table(
    "stats_mysql_query_rules",
    &[("rule_id", "INTEGER"), ("hits", "INT")],
);

/// The pool's idle connections. `init_connect` is always NULL (Sluice sends none);
/// `time_zone`, `sql_mode` and `autocommit` are what a session set on the connection, NULL
/// where it holds the server's default; `statistics` is JSON (backend thread id, age).
pub const FREE_CONNECTIONS: Table = table(
    "stats_mysql_free_connections",
    &[
        ("fd", "INT"),
        ("hostgroup", "INT"),
        ("srv_host", "VARCHAR"),
        ("srv_port", "INT"),
        ("user", "VARCHAR"),
        ("schema", "VARCHAR"),
        ("init_connect", "VARCHAR"),
        ("time_zone", "VARCHAR"),
        ("sql_mode", "VARCHAR"),
        ("autocommit", "VARCHAR"),
        ("idle_ms", "INT"),
        ("statistics", "VARCHAR"),
        ("mysql_info", "VARCHAR"),
    ],
);

/// Every table of this file, all in `stats`.
pub const TABLES: [&Table; 4] = [&ERRORS, &ERRORS_RESET, &RULE_HITS, &FREE_CONNECTIONS];

/// The rows of `name`, if it is a table of this file.
pub fn rows(name: &str, live: &Live<'_>, runtime: &Runtime) -> Option<Vec<Vec<Value>>> {
    Some(match name {
        "stats_mysql_errors" => errors(live),
        "stats_mysql_errors_reset" => {
            let rows = errors(live);
            live.frontend.errors.reset();
            rows
        }
        "stats_mysql_query_rules" => runtime
            .rules
            .hits()
            .map(|(id, hits)| vec![int(id), int(hits)])
            .collect(),
        "stats_mysql_free_connections" => free_connections(live),
        _ => return None,
    })
}

fn errors(live: &Live<'_>) -> Vec<Vec<Value>> {
    live.frontend
        .errors
        .snapshot()
        .into_iter()
        .map(|(k, c)| {
            vec![
                int(k.hostgroup),
                text(k.host),
                int(k.port),
                text(k.user),
                text(k.client_address),
                text(k.schema),
                int(k.errno),
                int(c.count),
                int(c.first_seen),
                int(c.last_seen),
                text(c.last_message),
            ]
        })
        .collect()
}

fn free_connections(live: &Live<'_>) -> Vec<Vec<Value>> {
    live.frontend
        .pool
        .idle_connections()
        .into_iter()
        .map(|c| {
            let variable = |name: &str| {
                c.variables
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(Value::Null, |(_, v)| text(v.clone()))
            };
            let statistics = json!({
                "thread_id": c.thread_id,
                "connection_age_ms": c.age.as_millis() as u64,
            });
            vec![
                int(c.fd),
                int(c.hostgroup),
                text(c.host),
                int(c.port),
                text(c.user),
                c.schema.map_or(Value::Null, text),
                Value::Null,
                variable("time_zone"),
                variable("sql_mode"),
                variable("autocommit"),
                int(c.idle.as_millis()),
                text(statistics.to_string()),
                Value::Null,
            ]
        })
        .collect()
}
