//! The statistics tables that complete ProxySQL's `stats` schema beside those of
//! `live.rs`: backend errors, rule hits, idle connections, and the `_reset` twins. Each is
//! filled from the live state right before a statement reads it; reading a `_reset` twin
//! returns the rows and then clears what ProxySQL clears.

use rusqlite::types::Value;
use serde_json::json;

use super::live::{int, text, Live};
use super::tables::{unkeyed as table, Table};
use crate::cluster::store::PeerRow;
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

/// The proxies sharing this one's configuration (`[cluster]`): each peer's configuration
/// version, when it applied it (Unix seconds), when it was last heard from, whether it
/// runs the newest version and was heard from within three intervals, and the version it
/// refused and why. This proxy's own row is its live state, also when the cluster is
/// unreachable (then `last_error` says so). Empty without `[cluster] sync`.
pub const CLUSTER_PEERS: Table = table(
    "stats_sluice_cluster_peers",
    &[
        ("proxy", "VARCHAR"),
        ("is_self", "INT"),
        ("version", "INT"),
        ("applied_at", "INTEGER"),
        ("last_seen", "INTEGER"),
        ("silent_ms", "INT"),
        ("in_sync", "INT"),
        ("refused_version", "INT"),
        ("last_error", "VARCHAR"),
    ],
);

/// The certificates the proxy loaded (ProxySQL 3.0's columns): `server` (presented to
/// clients), `ca` (client certificates chain to it), `backend_ca`; times as
/// `YYYY-MM-DD HH:MM:SS` UTC, `loaded_at` in Unix seconds.
pub const TLS_CERTIFICATES: Table = table(
    "stats_tls_certificates",
    &[
        ("cert_type", "VARCHAR"),
        ("file_path", "VARCHAR"),
        ("subject_cn", "VARCHAR"),
        ("issuer_cn", "VARCHAR"),
        ("serial_number", "VARCHAR"),
        ("not_before", "VARCHAR"),
        ("not_after", "VARCHAR"),
        ("days_until_expiry", "INT"),
        ("sha256_fingerprint", "VARCHAR"),
        ("loaded_at", "INT"),
    ],
);

/// Every table of this file, all in `stats`.
pub const TABLES: [&Table; 6] = [
    &ERRORS,
    &ERRORS_RESET,
    &RULE_HITS,
    &FREE_CONNECTIONS,
    &CLUSTER_PEERS,
    &TLS_CERTIFICATES,
];

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
        "stats_sluice_cluster_peers" => cluster_peers(live),
        "stats_tls_certificates" => certificates(runtime),
        _ => return None,
    })
}

fn certificates(runtime: &Runtime) -> Vec<Vec<Value>> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let optional = |s: &Option<String>| s.clone().map_or(Value::Null, text);
    runtime
        .certificates
        .iter()
        .map(|c| {
            vec![
                text(c.cert_type),
                text(c.file_path.clone()),
                optional(&c.subject_cn),
                optional(&c.issuer_cn),
                text(c.serial_number.clone()),
                text(sql_time(c.not_before)),
                text(sql_time(c.not_after)),
                int((c.not_after - now).div_euclid(86_400)),
                text(c.sha256_fingerprint.clone()),
                int(c.loaded_at),
            ]
        })
        .collect()
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
fn sql_time(unix: i64) -> String {
    let (days, seconds) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (year, month, day) = crate::tls::civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
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

fn cluster_peers(live: &Live<'_>) -> Vec<Vec<Value>> {
    let Some(cluster) = &live.frontend.cluster else {
        return Vec::new();
    };
    let status = cluster.status();
    let seconds = |ms: u64| int(ms / 1000);
    let row = |peer: &PeerRow, is_self: bool, in_sync: bool| {
        vec![
            text(&peer.proxy),
            int(u64::from(is_self)),
            int(peer.version),
            seconds(peer.applied_unix_ms),
            seconds(peer.last_seen_unix_ms),
            int(peer.silent_ms),
            int(u64::from(in_sync)),
            int(peer.refused_version),
            peer.last_error.clone().map_or(Value::Null, Value::Text),
        ]
    };
    let peers = cluster.peers();
    // this proxy's row is its live state, whatever the table last said of it
    let heard = peers.iter().find(|p| p.is_self).map(|p| p.row.clone());
    let own = PeerRow {
        proxy: cluster.proxy_name.clone(),
        version: status.version,
        applied_unix_ms: status.applied_unix_ms,
        refused_version: status.refused.as_ref().map_or(0, |r| r.0),
        last_error: status.last_error.clone().or_else(|| status.refusal()),
        ..heard.clone().unwrap_or_default()
    };
    let own_in_sync = status.last_error.is_none() && status.version >= status.latest;
    let mut rows: Vec<Vec<Value>> = peers
        .iter()
        .map(|p| {
            if p.is_self {
                row(&own, true, own_in_sync)
            } else {
                row(&p.row, false, p.in_sync)
            }
        })
        .collect();
    if heard.is_none() {
        rows.push(row(&own, true, own_in_sync));
    }
    rows
}
