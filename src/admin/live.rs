//! The admin tables that mirror the running proxy — `runtime_mysql_servers` (where the
//! monitor placed the servers), `stats.*` and `monitor.*` — their schemas and their rows
//! as the live state has them now. `refresh` decides when they are filled.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::types::Value;

use super::tables::{self, unkeyed as table, Table};
use crate::config::Config;
use crate::frontend::registry::LATENCY_BUCKETS_US;
use crate::frontend::Frontend;
use crate::monitor::health::Observation;
use crate::runtime::Runtime;

/// The running proxy, as the admin port reaches it.
pub struct Live<'a> {
    pub frontend: &'a Arc<Frontend>,
    /// Called with a configuration to put in force (a reload).
    pub apply: &'a (dyn Fn(&Config) -> Result<(), String> + Sync),
}

impl Live<'_> {
    pub fn runtime(&self) -> Arc<Runtime> {
        self.frontend.shared.load()
    }

    pub fn apply(&self, config: &Config) -> Result<(), String> {
        (self.apply)(config)
    }
}

const INT: &str = "INT";
const TEXT: &str = "VARCHAR";

const CONNECTION_POOL_COLUMNS: &[(&str, &str)] = &[
    ("hostgroup", INT),
    ("srv_host", TEXT),
    ("srv_port", INT),
    ("status", TEXT),
    ("ConnUsed", INT),
    ("ConnFree", INT),
    ("ConnOK", INT),
    ("ConnERR", INT),
    ("MaxConnUsed", INT),
    ("Queries", INT),
    ("Queries_GTID_sync", INT),
    ("Bytes_data_sent", INT),
    ("Bytes_data_recv", INT),
    ("Latency_us", INT),
];

pub const CONNECTION_POOL: Table = table("stats_mysql_connection_pool", CONNECTION_POOL_COLUMNS);
/// The same rows. ProxySQL clears the counters when this is read; Sluice's also feed
/// /metrics, whose counters must only grow, so they are left as they are.
pub const CONNECTION_POOL_RESET: Table =
    table("stats_mysql_connection_pool_reset", CONNECTION_POOL_COLUMNS);

const DIGEST_COLUMNS: &[(&str, &str)] = &[
    ("hostgroup", INT),
    ("schemaname", TEXT),
    ("username", TEXT),
    ("client_address", TEXT),
    ("digest", TEXT),
    ("digest_text", TEXT),
    ("count_star", "INTEGER"),
    ("first_seen", "INTEGER"),
    ("last_seen", "INTEGER"),
    ("sum_time", "INTEGER"),
    ("min_time", "INTEGER"),
    ("max_time", "INTEGER"),
    ("sum_rows_affected", "INTEGER"),
    ("sum_rows_sent", "INTEGER"),
    ("errors", INT),
];

pub const DIGEST: Table = table("stats_mysql_query_digest", DIGEST_COLUMNS);
pub const DIGEST_RESET: Table = table("stats_mysql_query_digest_reset", DIGEST_COLUMNS);

pub const GLOBAL: Table = table(
    "stats_mysql_global",
    &[("Variable_Name", TEXT), ("Variable_Value", TEXT)],
);

pub const USERS: Table = table(
    "stats_mysql_users",
    &[
        ("username", TEXT),
        ("frontend_connections", INT),
        ("frontend_max_connections", INT),
    ],
);

pub const PROCESSLIST: Table = table(
    "stats_mysql_processlist",
    &[
        ("ThreadID", INT),
        ("SessionID", "INTEGER"),
        ("user", TEXT),
        ("db", TEXT),
        ("cli_host", TEXT),
        ("cli_port", INT),
        ("hostgroup", INT),
        ("l_srv_host", TEXT),
        ("l_srv_port", INT),
        ("srv_host", TEXT),
        ("srv_port", INT),
        ("command", TEXT),
        ("time_ms", INT),
        ("info", TEXT),
        ("status_flags", INT),
        ("extended_info", TEXT),
    ],
);

pub const COMMANDS: Table = table(
    "stats_mysql_commands_counters",
    &[
        ("Command", TEXT),
        ("Total_Time_us", INT),
        ("Total_cnt", INT),
        ("cnt_100us", INT),
        ("cnt_500us", INT),
        ("cnt_1ms", INT),
        ("cnt_5ms", INT),
        ("cnt_10ms", INT),
        ("cnt_50ms", INT),
        ("cnt_100ms", INT),
        ("cnt_500ms", INT),
        ("cnt_1s", INT),
        ("cnt_5s", INT),
        ("cnt_10s", INT),
        ("cnt_INFs", INT),
    ],
);

pub const MEMORY: Table = table(
    "stats_memory_metrics",
    &[("Variable_Name", TEXT), ("Variable_Value", TEXT)],
);

const CLIENT_HOST_COLUMNS: &[(&str, &str)] = &[
    ("client_address", TEXT),
    ("error_count", INT),
    ("last_updated", "BIGINT"),
    ("blocks", INT),
    ("blocked_for_ms", INT),
];

/// Failed logins per client address (ProxySQL's `stats_mysql_client_host_cache`;
/// `last_updated` in Unix microseconds), with the blocks they earned added.
pub const CLIENT_HOSTS: Table = table("stats_mysql_client_host_cache", CLIENT_HOST_COLUMNS);
/// Reading it forgets every failure and block, as `PROXYSQL FLUSH MYSQL CLIENT HOSTS`.
pub const CLIENT_HOSTS_RESET: Table =
    table("stats_mysql_client_host_cache_reset", CLIENT_HOST_COLUMNS);

pub const PING_LOG: Table = table(
    "mysql_server_ping_log",
    &[
        ("hostname", TEXT),
        ("port", INT),
        ("time_start_us", INT),
        ("ping_success_time_us", INT),
        ("ping_error", TEXT),
    ],
);

pub const GALERA_LOG: Table = table(
    "mysql_server_galera_log",
    &[
        ("hostname", TEXT),
        ("port", INT),
        ("time_start_us", INT),
        ("success_time_us", INT),
        ("primary_partition", TEXT),
        ("read_only", TEXT),
        ("wsrep_local_recv_queue", INT),
        ("wsrep_local_state", INT),
        ("wsrep_desync", TEXT),
        ("wsrep_reject_queries", TEXT),
        ("wsrep_sst_donor_rejects_queries", TEXT),
        ("error", TEXT),
    ],
);

pub const READ_ONLY_LOG: Table = table(
    "mysql_server_read_only_log",
    &[
        ("hostname", TEXT),
        ("port", INT),
        ("time_start_us", INT),
        ("success_time_us", INT),
        ("read_only", INT),
        ("error", TEXT),
    ],
);

pub const LAG_LOG: Table = table(
    "mysql_server_replication_lag_log",
    &[
        ("hostname", TEXT),
        ("port", INT),
        ("time_start_us", INT),
        ("success_time_us", INT),
        ("repl_lag", INT),
        ("error", TEXT),
    ],
);

/// The proxy's prepared statements, one per user, schema and text (ProxySQL's columns).
pub const PREPARED_INFO: Table = table(
    "stats_mysql_prepared_statements_info",
    &[
        ("global_stmt_id", INT),
        ("schemaname", TEXT),
        ("username", TEXT),
        ("digest", TEXT),
        ("ref_count_client", INT),
        ("ref_count_server", INT),
        ("num_columns", INT),
        ("num_params", INT),
        ("query", TEXT),
    ],
);

pub(super) fn int(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

pub(super) fn text(s: impl Into<String>) -> Value {
    Value::Text(s.into())
}

/// One server in one hostgroup, as `runtime_mysql_servers` and the pool statistics show
/// it.
struct ServerRow {
    hostgroup: u32,
    server: Arc<crate::runtime::ServerTarget>,
    status: &'static str,
}

/// Where the servers are now: the monitor's placement (or the configured hostgroups when
/// there is no monitor), one row per hostgroup a server is in; a configured server the
/// monitor took out of service keeps a row in its configured hostgroup with ProxySQL's
/// word for why (`SHUNNED_REPLICATION_LAG` for a replica whose replication stopped or
/// fell behind, `SHUNNED` for one that failed its checks).
fn server_rows(live: &Live<'_>, runtime: &Runtime) -> Vec<ServerRow> {
    let membership = live.frontend.shared.membership();
    let hostgroups = match &membership {
        Some(m) => &m.hostgroups,
        None => &runtime.hostgroups,
    };
    let mut rows: Vec<ServerRow> = hostgroups
        .iter()
        .flat_map(|(id, members)| {
            members.servers.iter().map(|s| ServerRow {
                hostgroup: *id,
                server: s.clone(),
                status: tables::status_name(s.status),
            })
        })
        .collect();
    if let Some(m) = &membership {
        for s in runtime.servers() {
            let placed = rows.iter().any(|r| r.server.address() == s.address());
            if placed {
                continue;
            }
            let status = match s.status {
                crate::config::ServerStatus::Online if m.lagging.contains(s.address()) => {
                    "SHUNNED_REPLICATION_LAG"
                }
                crate::config::ServerStatus::Online => "SHUNNED",
                other => tables::status_name(other),
            };
            rows.push(ServerRow {
                hostgroup: s.hostgroup,
                server: s.clone(),
                status,
            });
        }
    }
    rows.sort_by(|a, b| {
        (a.hostgroup, &a.server.host, a.server.port).cmp(&(
            b.hostgroup,
            &b.server.host,
            b.server.port,
        ))
    });
    rows
}

pub(super) fn runtime_servers(live: &Live<'_>, runtime: &Runtime) -> Vec<Vec<Value>> {
    server_rows(live, runtime)
        .into_iter()
        .map(|row| {
            let s = &row.server;
            vec![
                int(row.hostgroup),
                text(&s.host),
                int(s.port),
                int(0),
                text(row.status),
                int(s.weight),
                int(0),
                int(s.max_connections),
                int(s.max_replication_lag),
                int(s.tls),
                int(0),
                text(""),
                int(s.priority),
            ]
        })
        .collect()
}

pub(super) fn connection_pool(live: &Live<'_>, runtime: &Runtime) -> Vec<Vec<Value>> {
    let idle = live.frontend.pool.idle_by_server();
    let checks = live.frontend.shared.checks();
    server_rows(live, runtime)
        .into_iter()
        .map(|row| {
            let server = &row.server;
            let stats = &server.stats;
            let free = idle.get(server.address()).copied().unwrap_or(0) as i64;
            let open = i64::from(server.connections.load(Ordering::Relaxed));
            let latency = checks
                .iter()
                .rev()
                .find(|c| c.host == server.host && c.port == server.port)
                .map_or(0, |c| c.took_us);
            vec![
                int(row.hostgroup),
                text(server.host.clone()),
                int(server.port),
                text(row.status),
                int((open - free).max(0)),
                int(free),
                int(stats.connect_ok.load(Ordering::Relaxed)),
                int(stats.connect_errors.load(Ordering::Relaxed)),
                int(stats.max_connections_used.load(Ordering::Relaxed)),
                int(stats.queries.load(Ordering::Relaxed)),
                int(0),
                int(stats.bytes_sent.load(Ordering::Relaxed)),
                int(stats.bytes_received.load(Ordering::Relaxed)),
                int(latency),
            ]
        })
        .collect()
}

pub(super) fn digests(live: &Live<'_>) -> Vec<Vec<Value>> {
    live.frontend
        .digests
        .rows()
        .into_iter()
        .map(|d| {
            vec![
                int(d.hostgroup),
                text(d.schema),
                text(d.user),
                text(""),
                text(crate::rules::format_digest(d.digest)),
                text(d.text),
                int(d.count),
                int(d.first_seen),
                int(d.last_seen),
                int(d.sum_us),
                int(d.min_us),
                int(d.max_us),
                int(d.rows_affected),
                int(d.rows_sent),
                int(d.errors),
            ]
        })
        .collect()
}

pub(super) fn global(live: &Live<'_>, runtime: &Runtime) -> Vec<Vec<Value>> {
    super::global_status::global(live.frontend, runtime)
        .into_iter()
        .map(|(name, value)| vec![text(name), text(value)])
        .collect()
}

pub(super) fn users(live: &Live<'_>, runtime: &Runtime) -> Vec<Vec<Value>> {
    let _ = live;
    let mut names: Vec<&String> = runtime.users.keys().collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let u = &runtime.users[name];
            vec![
                text(name.clone()),
                int(u.connections.load(Ordering::Relaxed)),
                int(u.config.max_connections),
            ]
        })
        .collect()
}

pub(super) fn processlist(live: &Live<'_>) -> Vec<Vec<Value>> {
    let now = Instant::now();
    live.frontend
        .registry
        .sessions()
        .into_iter()
        .map(|s| {
            let a = s.activity();
            let (srv_host, srv_port) = match &a.server {
                Some(s) => (text(s.host.clone()), int(s.port)),
                None => (Value::Null, Value::Null),
            };
            vec![
                int(s.id),
                int(s.id),
                text(s.user.clone()),
                a.schema.clone().map_or(Value::Null, text),
                text(s.client.ip().to_string()),
                int(s.client.port()),
                a.hostgroup.map_or(Value::Null, int),
                Value::Null,
                Value::Null,
                srv_host,
                srv_port,
                text(a.command),
                int(a.since.map_or(0, |t| now.duration_since(t).as_millis())),
                if a.info.is_empty() {
                    Value::Null
                } else {
                    text(a.info.clone())
                },
                // ProxySQL's internal session flags: Sluice has none
                int(0),
                text(extended_info(&s, &a, now).to_string()),
            ]
        })
        .collect()
}

/// What the processlist knows of a session beyond its row, as JSON (ProxySQL fills
/// `extended_info` with its own session internals).
fn extended_info(
    s: &crate::frontend::registry::SessionEntry,
    a: &crate::frontend::registry::Activity,
    now: Instant,
) -> serde_json::Value {
    serde_json::json!({
        "session_id": s.id,
        "user": s.user,
        "client": s.client.to_string(),
        "connected_ms": now.duration_since(s.started).as_millis() as u64,
        "schema": a.schema,
        "command": a.command,
        "hostgroup": a.hostgroup,
        "backend": a.server.as_ref().map(|srv| srv.address().to_string()),
        "statement_ms": a.since.map(|t| now.duration_since(t).as_millis() as u64),
    })
}

pub(super) fn commands(live: &Live<'_>) -> Vec<Vec<Value>> {
    let c = &live.frontend.counters;
    crate::rules::Command::ALL
        .iter()
        .map(|command| {
            let k = c.by_command.of(*command);
            let mut row = vec![
                text(command.name()),
                int(k.total_us.load(Ordering::Relaxed)),
                int(k.count.load(Ordering::Relaxed)),
            ];
            row.extend(k.buckets.iter().map(|b| int(b.load(Ordering::Relaxed))));
            debug_assert_eq!(k.buckets.len(), LATENCY_BUCKETS_US.len() + 1);
            row
        })
        .collect()
}

pub(super) fn prepared_statements(live: &Live<'_>) -> Vec<Vec<Value>> {
    live.frontend
        .pool
        .statements
        .info()
        .into_iter()
        .map(|s| {
            vec![
                int(s.id),
                text(s.schema.unwrap_or_default()),
                text(s.user),
                text(crate::rules::format_digest(s.digest)),
                int(s.client_refs),
                int(s.server_refs),
                int(s.columns),
                int(s.params),
                text(String::from_utf8_lossy(&s.text).into_owned()),
            ]
        })
        .collect()
}

pub(super) fn client_hosts(live: &Live<'_>) -> Vec<Vec<Value>> {
    live.frontend
        .admission
        .tracked()
        .into_iter()
        .map(|t| {
            vec![
                text(t.ip.to_string()),
                int(t.failures),
                int(t.last_failed_unix_us),
                int(t.blocks),
                t.blocked_for.map_or(Value::Null, |d| int(d.as_millis())),
            ]
        })
        .collect()
}

pub(super) fn memory(live: &Live<'_>, runtime: &Runtime) -> Vec<Vec<Value>> {
    super::global_status::memory(live.frontend, runtime)
        .into_iter()
        .map(|(name, value)| vec![text(name), text(value)])
        .collect()
}

pub(super) fn checks(
    live: &Live<'_>,
    row: fn(&crate::shared::CheckRecord) -> Option<Vec<Value>>,
) -> Vec<Vec<Value>> {
    live.frontend
        .shared
        .checks()
        .iter()
        .filter_map(row)
        .collect()
}

fn head(c: &crate::shared::CheckRecord) -> Vec<Value> {
    vec![text(c.host.clone()), int(c.port), int(c.started_us)]
}

fn error_of(c: &crate::shared::CheckRecord) -> Option<String> {
    match &c.seen {
        Observation::Unreachable(why) => Some(why.clone()),
        _ => None,
    }
}

pub(super) fn ping_row(c: &crate::shared::CheckRecord) -> Option<Vec<Value>> {
    let mut row = head(c);
    match error_of(c) {
        Some(e) => row.extend([int(0), text(e)]),
        None => row.extend([int(c.took_us), Value::Null]),
    }
    Some(row)
}

fn yes(b: bool) -> Value {
    text(if b { "YES" } else { "NO" })
}

pub(super) fn galera_row(c: &crate::shared::CheckRecord) -> Option<Vec<Value>> {
    let mut row = head(c);
    match &c.seen {
        Observation::Galera(g) => row.extend([
            int(c.took_us),
            yes(g.primary),
            yes(g.read_only),
            int(g.recv_queue),
            int(g.local_state),
            yes(g.desync),
            yes(g.reject_queries),
            yes(g.donor_rejects_queries),
            Value::Null,
        ]),
        Observation::Unreachable(e) => {
            row.push(int(0));
            row.extend(std::iter::repeat_n(Value::Null, 7));
            row.push(text(e.clone()));
        }
        _ => return None,
    }
    Some(row)
}

pub(super) fn read_only_row(c: &crate::shared::CheckRecord) -> Option<Vec<Value>> {
    let mut row = head(c);
    let read_only = match &c.seen {
        Observation::Galera(g) => Some(g.read_only),
        Observation::Replica(r) => Some(r.read_only),
        Observation::Plain { read_only } => Some(*read_only),
        Observation::Unreachable(_) => None,
    };
    row.push(int(if read_only.is_some() { c.took_us } else { 0 }));
    row.push(read_only.map_or(Value::Null, int));
    row.push(error_of(c).map_or(Value::Null, text));
    Some(row)
}

pub(super) fn lag_row(c: &crate::shared::CheckRecord) -> Option<Vec<Value>> {
    let mut row = head(c);
    match &c.seen {
        Observation::Replica(r) => {
            row.extend([int(c.took_us), r.lag.map_or(Value::Null, int), Value::Null])
        }
        Observation::Unreachable(e) => row.extend([int(0), Value::Null, text(e.clone())]),
        _ => return None,
    }
    Some(row)
}

/// `KILL [CONNECTION] id`: ends a client session; the rows affected.
pub fn kill(live: &Live<'_>, words: &[String]) -> Result<u64, String> {
    let id = words
        .iter()
        .skip(1)
        .find(|w| *w != "CONNECTION")
        .and_then(|w| w.parse::<u32>().ok())
        .ok_or("expected KILL [CONNECTION] <SessionID from stats_mysql_processlist>")?;
    if live.frontend.registry.kill(id) {
        Ok(1)
    } else {
        Err(format!("Unknown thread id: {id}"))
    }
}
