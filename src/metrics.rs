//! The Prometheus endpoint: `/metrics` in the text format, and `/health` for load
//! balancers (200 once every Galera cluster has a writer). Query latency is a real
//! histogram observed on the data path; everything else is read at scrape time from the
//! counters the proxy keeps anyway, so a scrape costs the data path nothing.
//!
//! The HTTP side is deliberately tiny — one GET per connection, bounded in size and time —
//! because two fixed paths do not justify an HTTP stack.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::frontend::registry::KINDS;
use crate::frontend::Frontend;
use crate::monitor::health::Observation;

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Everything, in Prometheus' text format.
pub fn render(frontend: &Frontend) -> String {
    let scratch = Registry::new();
    let add = |c: Box<dyn prometheus::core::Collector>| {
        scratch.register(c).expect("distinct names");
    };
    for c in clients(frontend) {
        add(c);
    }
    for c in backends(frontend) {
        add(c);
    }
    for c in rules(frontend) {
        add(c);
    }
    for c in cluster(frontend) {
        add(c);
    }
    let mut families = frontend.latencies.gather();
    families.extend(scratch.gather());
    families.sort_by(|a, b| a.get_name().cmp(b.get_name()));
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut out)
        .expect("text encoding");
    String::from_utf8(out).expect("the text format is UTF-8")
}

type Collectors = Vec<Box<dyn prometheus::core::Collector>>;

fn clients(f: &Frontend) -> Collectors {
    let c = &f.counters;
    let connections = gauge(
        "sluice_client_connections",
        "Client connections open now.",
        &[],
    );
    connections
        .with_label_values(&[])
        .set(f.client_count() as i64);
    let logins = counter(
        "sluice_client_logins_total",
        "Client logins that succeeded.",
        &[],
    );
    logins.with_label_values(&[]).inc_by(load(&c.logins));
    let refused = counter(
        "sluice_client_connections_refused_total",
        "Client connections refused, by reason.",
        &["reason"],
    );
    for (reason, n) in c.refusals() {
        refused.with_label_values(&[reason]).inc_by(n);
    }
    refused
        .with_label_values(&["failed_login"])
        .inc_by(load(&c.logins_failed));
    let tls = counter(
        "sluice_tls_handshakes_total",
        "TLS handshakes with clients, by result.",
        &["result"],
    );
    tls.with_label_values(&["ok"])
        .inc_by(load(&c.tls_handshakes));
    tls.with_label_values(&["failed"])
        .inc_by(load(&c.tls_failures));
    let queries = counter(
        "sluice_queries_total",
        "Statements (COM_QUERY and prepares) by kind.",
        &["kind"],
    );
    for (kind, k) in KINDS.iter().zip(&c.kinds) {
        queries
            .with_label_values(&[kind.name()])
            .inc_by(load(&k.count));
    }
    let commands = counter(
        "sluice_commands_total",
        "Client commands forwarded, by command.",
        &["command"],
    );
    for (cmd, n) in c.commands.iter().enumerate() {
        let n = load(n);
        if n > 0 {
            let name = crate::protocol::constants::command::name(cmd as u8);
            commands.with_label_values(&[name]).inc_by(n);
        }
    }
    let bytes = counter(
        "sluice_client_received_bytes_total",
        "Bytes of client commands forwarded.",
        &[],
    );
    bytes
        .with_label_values(&[])
        .inc_by(load(&c.bytes_from_clients));
    let errors = counter(
        "sluice_errors_total",
        "Errors the proxy itself sent to clients, by MySQL error code.",
        &["code"],
    );
    for (code, n) in c.errors() {
        errors.with_label_values(&[&code.to_string()]).inc_by(n);
    }
    let rss = gauge(
        "sluice_process_resident_memory_bytes",
        "Resident memory of the proxy process.",
        &[],
    );
    rss.with_label_values(&[])
        .set(process_memory_bytes("VmRSS:") as i64);
    vec![
        Box::new(connections),
        Box::new(logins),
        Box::new(refused),
        Box::new(tls),
        Box::new(queries),
        Box::new(commands),
        Box::new(bytes),
        Box::new(errors),
        Box::new(rss),
    ]
}

/// The configuration sync (`[cluster] sync`); nothing without it.
fn cluster(f: &Frontend) -> Collectors {
    let Some(cluster) = &f.cluster else {
        return Vec::new();
    };
    let status = cluster.status();
    let peers = cluster.peers();
    let c = &cluster.counters;
    let single = |name: &str, help: &str, value: i64| -> Box<dyn prometheus::core::Collector> {
        let g = gauge(name, help, &[]);
        g.with_label_values(&[]).set(value);
        Box::new(g)
    };
    let versions = counter(
        "sluice_cluster_config_versions_total",
        "Configuration versions this proxy applied from a peer, wrote itself, or refused.",
        &["result"],
    );
    versions
        .with_label_values(&["applied"])
        .inc_by(load(&c.versions_applied));
    versions
        .with_label_values(&["published"])
        .inc_by(load(&c.versions_published));
    versions
        .with_label_values(&["refused"])
        .inc_by(load(&c.versions_refused));
    versions
        .with_label_values(&["conflict"])
        .inc_by(load(&c.conflicts));
    let rounds = counter(
        "sluice_cluster_sync_rounds_total",
        "Sync rounds with the cluster store, by result.",
        &["result"],
    );
    rounds.with_label_values(&["ok"]).inc_by(load(&c.rounds_ok));
    rounds
        .with_label_values(&["failed"])
        .inc_by(load(&c.rounds_failed));
    let shared = counter(
        "sluice_cluster_shared_total",
        "Firewall digests and client blocks shared with peers, and digests taken from them.",
        &["what"],
    );
    shared
        .with_label_values(&["digests_sent"])
        .inc_by(load(&c.digests_shared));
    shared
        .with_label_values(&["digests_adopted"])
        .inc_by(load(&c.digests_adopted));
    shared
        .with_label_values(&["blocks_sent"])
        .inc_by(load(&c.blocks_shared));
    let out_of_sync = peers.iter().filter(|p| !p.is_self && !p.in_sync).count();
    vec![
        single(
            "sluice_cluster_config_version",
            "The shared configuration version this proxy runs.",
            status.version as i64,
        ),
        single(
            "sluice_cluster_latest_config_version",
            "The newest configuration version the cluster store holds, as last read.",
            status.latest as i64,
        ),
        single(
            "sluice_cluster_peers",
            "Proxies of this cluster name that ever wrote a heartbeat, this one included.",
            peers.len() as i64,
        ),
        single(
            "sluice_cluster_peers_out_of_sync",
            "Other proxies not on the newest version or not heard from within three intervals.",
            out_of_sync as i64,
        ),
        single(
            "sluice_cluster_sync_failing",
            "1 while the last sync round failed (the cluster store unreachable or refusing).",
            i64::from(status.last_error.is_some()),
        ),
        single(
            "sluice_cluster_last_sync_timestamp_seconds",
            "When a sync round last succeeded, in Unix seconds.",
            (status.last_ok_unix_ms / 1000) as i64,
        ),
        single(
            "sluice_cluster_refused_config_version",
            "The newest version this proxy refused as invalid here (0: none).",
            status.refused.as_ref().map_or(0, |r| r.0) as i64,
        ),
        Box::new(versions),
        Box::new(rounds),
        Box::new(shared),
    ]
}

fn backends(f: &Frontend) -> Collectors {
    let runtime = f.shared.load();
    let idle = f.pool.idle_by_server();
    let connections = gauge(
        "sluice_backend_connections",
        "Backend connections per server: used by sessions or the monitor, or idle in the pool.",
        &["server", "state"],
    );
    let connects = counter(
        "sluice_backend_connects_total",
        "Backend logins, by result.",
        &["server", "result"],
    );
    let queries = counter(
        "sluice_backend_queries_total",
        "Commands sent per server.",
        &["server"],
    );
    let sent = counter(
        "sluice_backend_sent_bytes_total",
        "Bytes sent per server.",
        &["server"],
    );
    let received = counter(
        "sluice_backend_received_bytes_total",
        "Response bytes relayed per server.",
        &["server"],
    );
    let mut seen = std::collections::HashSet::new();
    for s in runtime.servers() {
        if !seen.insert(s.address().to_owned()) {
            continue;
        }
        let server = s.address();
        let free = idle.get(server).copied().unwrap_or(0) as i64;
        let open = i64::from(s.connections.load(Ordering::Relaxed));
        connections.with_label_values(&[server, "idle"]).set(free);
        connections
            .with_label_values(&[server, "used"])
            .set((open - free).max(0));
        let st = &s.stats;
        connects
            .with_label_values(&[server, "ok"])
            .inc_by(load(&st.connect_ok));
        connects
            .with_label_values(&[server, "error"])
            .inc_by(load(&st.connect_errors));
        queries
            .with_label_values(&[server])
            .inc_by(load(&st.queries));
        sent.with_label_values(&[server])
            .inc_by(load(&st.bytes_sent));
        received
            .with_label_values(&[server])
            .inc_by(load(&st.bytes_received));
    }
    let lost = counter(
        "sluice_backend_connections_lost_total",
        "Backend connections lost while a statement was in flight.",
        &[],
    );
    lost.with_label_values(&[])
        .inc_by(load(&f.counters.backends_lost));
    let retried = counter(
        "sluice_reads_retried_total",
        "Autocommit reads sent to another server after their reader failed before answering.",
        &[],
    );
    retried
        .with_label_values(&[])
        .inc_by(load(&f.counters.reads_retried));
    let replays = counter(
        "sluice_transaction_replays_total",
        "Open transactions whose writer connection was lost, by how their replay on the next writer ended (replayed, refused).",
        &["result"],
    );
    replays
        .with_label_values(&["replayed"])
        .inc_by(load(&f.counters.transactions_replayed));
    replays
        .with_label_values(&["refused"])
        .inc_by(load(&f.counters.transaction_replays_failed));
    let deadlocks = counter(
        "sluice_deadlocks_retried_total",
        "Statements run again (after their transaction's replay on the same connection) once a deadlock had rolled their transaction back.",
        &[],
    );
    deadlocks
        .with_label_values(&[])
        .inc_by(load(&f.counters.deadlocks_retried));
    let w = &f.pool.waits;
    let waiting = gauge(
        "sluice_backend_pool_waiting",
        "Statements waiting now for a connection at a server that is at its max_connections.",
        &[],
    );
    waiting.with_label_values(&[]).set(load(&w.waiting) as i64);
    let waits = counter(
        "sluice_backend_pool_waits_total",
        "Statements that waited for a connection, by how the wait ended.",
        &["result"],
    );
    let timeouts = load(&w.timeouts);
    let ended = load(&w.waits).saturating_sub(load(&w.waiting));
    waits.with_label_values(&["timeout"]).inc_by(timeouts);
    waits
        .with_label_values(&["served"])
        .inc_by(ended.saturating_sub(timeouts));
    let waited = prometheus::CounterVec::new(
        prometheus::Opts::new(
            "sluice_backend_pool_wait_seconds_total",
            "Time statements spent waiting for a connection, all together.",
        ),
        &[],
    )
    .expect("valid metric");
    waited
        .with_label_values(&[])
        .inc_by(load(&w.waited_us) as f64 / 1e6);
    let mut out: Collectors = vec![
        Box::new(waiting),
        Box::new(waits),
        Box::new(waited),
        Box::new(connections),
        Box::new(connects),
        Box::new(queries),
        Box::new(sent),
        Box::new(received),
        Box::new(lost),
    ];
    out.extend(statements(f));
    out.extend(query_cache(f));
    out.extend(mirror(f));
    out.extend(health(f));
    out.extend(certificates(f));
    out
}

/// Prepared statements: prepares by who asked, executes, the cache, evictions.
fn statements(f: &Frontend) -> Collectors {
    let cache = &f.pool.statements;
    let st = &cache.stats;
    let prepares = counter(
        "sluice_statement_prepares_total",
        "Statements prepared on backends: for a client's COM_STMT_PREPARE, or by the proxy on a connection that lacked one before an execute.",
        &["by"],
    );
    prepares
        .with_label_values(&["client"])
        .inc_by(load(&st.client_prepares));
    prepares
        .with_label_values(&["proxy"])
        .inc_by(load(&st.reprepares));
    let executes = counter(
        "sluice_statement_executes_total",
        "COM_STMT_EXECUTE from clients.",
        &[],
    );
    executes.with_label_values(&[]).inc_by(load(&st.executes));
    let changed = counter(
        "sluice_statement_definitions_changed_total",
        "Prepares by the proxy whose column or parameter definitions differed from the ones seen before.",
        &[],
    );
    changed
        .with_label_values(&[])
        .inc_by(load(&st.definitions_changed));
    let evictions = counter(
        "sluice_statement_evictions_total",
        "Statements closed on a backend to stay under max_prepared_per_connection, or dropped from the cache to stay under statement_cache_size.",
        &["from"],
    );
    evictions
        .with_label_values(&["backend"])
        .inc_by(load(&st.backend_evictions));
    evictions
        .with_label_values(&["cache"])
        .inc_by(load(&st.cache_evictions));
    let entries = gauge(
        "sluice_statement_cache_entries",
        "Prepared statements in the proxy's cache (one per user, schema and text).",
        &[],
    );
    entries.with_label_values(&[]).set(cache.len() as i64);
    vec![
        Box::new(prepares),
        Box::new(executes),
        Box::new(changed),
        Box::new(evictions),
        Box::new(entries),
    ]
}

/// The query cache: lookups by result, what went in and out, what it holds.
fn query_cache(f: &Frontend) -> Collectors {
    let qc = &f.query_cache;
    let st = &qc.stats;
    let lookups = counter(
        "sluice_query_cache_lookups_total",
        "Statements whose rules set cache_ttl, looked up in the query cache, by whether a live result was there.",
        &["result"],
    );
    let hits = load(&st.hits);
    lookups.with_label_values(&["hit"]).inc_by(hits);
    lookups
        .with_label_values(&["miss"])
        .inc_by(load(&st.lookups).saturating_sub(hits));
    let bytes = counter(
        "sluice_query_cache_bytes_total",
        "Result bytes stored in the query cache (in) and sent to clients from it (out).",
        &["direction"],
    );
    bytes.with_label_values(&["in"]).inc_by(load(&st.bytes_in));
    bytes
        .with_label_values(&["out"])
        .inc_by(load(&st.bytes_out));
    let stores = counter(
        "sluice_query_cache_stores_total",
        "Results stored in the query cache.",
        &[],
    );
    stores.with_label_values(&[]).inc_by(load(&st.stores));
    let removed = counter(
        "sluice_query_cache_removed_total",
        "Entries removed from the query cache: expired (ttl), pushed out to stay within max_memory_mb (memory), or never stored because larger than max_entry_kb (too_large).",
        &["reason"],
    );
    removed.with_label_values(&["ttl"]).inc_by(load(&st.purged));
    removed
        .with_label_values(&["memory"])
        .inc_by(qc.evictions());
    removed
        .with_label_values(&["too_large"])
        .inc_by(load(&st.too_large));
    let entries = gauge(
        "sluice_query_cache_entries",
        "Results held in the query cache.",
        &[],
    );
    entries.with_label_values(&[]).set(qc.len() as i64);
    let memory = gauge(
        "sluice_query_cache_memory_bytes",
        "Memory the query cache's entries take, as counted against max_memory_mb.",
        &[],
    );
    memory
        .with_label_values(&[])
        .set(i64::try_from(qc.memory_bytes()).unwrap_or(i64::MAX));
    vec![
        Box::new(lookups),
        Box::new(bytes),
        Box::new(stores),
        Box::new(removed),
        Box::new(entries),
        Box::new(memory),
    ]
}

/// Mirroring: copies by how they ended, and what is waiting or running now.
fn mirror(f: &Frontend) -> Collectors {
    let st = &f.mirror.stats;
    let copies = counter(
        "sluice_mirror_statements_total",
        "Statement copies for mirror hostgroups by how they ended: answered (ok, error), or dropped (queue_full, unreachable, timeout, in_transaction).",
        &["result"],
    );
    let sent = load(&st.sent);
    let errors = load(&st.errors);
    for (result, n) in [
        ("ok", sent.saturating_sub(errors)),
        ("error", errors),
        ("queue_full", load(&st.dropped_full)),
        ("unreachable", load(&st.dropped_unreachable)),
        ("timeout", load(&st.timeouts)),
        ("in_transaction", load(&st.skipped_in_transaction)),
    ] {
        copies.with_label_values(&[result]).inc_by(n);
    }
    let now = gauge(
        "sluice_mirror_copies",
        "Statement copies waiting for a mirror (queued) or running on one (running).",
        &["state"],
    );
    now.with_label_values(&["queued"])
        .set(st.queued.load(Ordering::Relaxed) as i64);
    now.with_label_values(&["running"])
        .set(load(&st.running) as i64);
    vec![Box::new(copies), Box::new(now)]
}

/// Server health, roles, failovers and the monitor's checks.
fn health(f: &Frontend) -> Collectors {
    let runtime = f.shared.load();
    let role_of = |hostgroup: u32| {
        runtime
            .galera
            .iter()
            .find_map(|g| {
                [
                    (g.writer_hostgroup, "writer"),
                    (g.backup_writer_hostgroup, "backup_writer"),
                    (g.reader_hostgroup, "reader"),
                    (g.offline_hostgroup, "offline"),
                ]
                .into_iter()
                .find(|(id, _)| *id == hostgroup)
                .map(|(_, role)| role)
            })
            .unwrap_or("member")
    };
    let roles = gauge(
        "sluice_server_role",
        "1 for each hostgroup a server is in now, with the hostgroup's role.",
        &["server", "hostgroup", "role"],
    );
    let membership = f.shared.membership();
    let hostgroups = match &membership {
        Some(m) => &m.hostgroups,
        None => &runtime.hostgroups,
    };
    for (id, members) in hostgroups {
        for s in &members.servers {
            roles
                .with_label_values(&[s.address(), &id.to_string(), role_of(*id)])
                .set(1);
        }
    }
    let up = gauge(
        "sluice_server_up",
        "1 when the monitor's last check of the server succeeded.",
        &["server"],
    );
    let duration = prometheus::GaugeVec::new(
        Opts::new(
            "sluice_monitor_check_duration_seconds",
            "How long the monitor's last check of the server took.",
        ),
        &["server"],
    )
    .expect("valid gauge");
    let mut last: HashMap<String, (bool, u64)> = HashMap::new();
    for c in f.shared.checks() {
        let ok = !matches!(c.seen, Observation::Unreachable(_));
        last.insert(format!("{}:{}", c.host, c.port), (ok, c.took_us));
    }
    for (server, (ok, took_us)) in &last {
        up.with_label_values(&[server]).set(i64::from(*ok));
        duration
            .with_label_values(&[server])
            .set(*took_us as f64 / 1e6);
    }
    let checks = counter(
        "sluice_monitor_checks_total",
        "Health checks by server and result.",
        &["server", "result"],
    );
    for (server, (total, errors)) in f.shared.check_totals() {
        checks
            .with_label_values(&[&server, "ok"])
            .inc_by(total - errors);
        checks.with_label_values(&[&server, "error"]).inc_by(errors);
    }
    let failovers = counter(
        "sluice_writer_changes_total",
        "Times a Galera writer hostgroup got a different writer (failovers and switchovers).",
        &[],
    );
    failovers
        .with_label_values(&[])
        .inc_by(f.shared.writer_changes());
    let servers = gauge(
        "sluice_hostgroup_servers",
        "Servers in each configured hostgroup now (0: the hostgroup is empty), with its role.",
        &["hostgroup", "role"],
    );
    let mut configured: Vec<u32> = runtime.hostgroups.keys().copied().collect();
    for g in &runtime.galera {
        configured.extend([g.writer_hostgroup, g.reader_hostgroup]);
    }
    configured.sort_unstable();
    configured.dedup();
    for id in configured {
        let count = hostgroups.get(&id).map_or(0, |m| m.servers.len());
        servers
            .with_label_values(&[&id.to_string(), role_of(id)])
            .set(count as i64);
    }
    let lag = gauge(
        "sluice_replica_lag_seconds",
        "Seconds_Behind_Master at the monitor's last check of each replica (absent: unknown).",
        &["server"],
    );
    for c in f.shared.checks() {
        if let Observation::Replica(r) = &c.seen {
            let server = format!("{}:{}", c.host, c.port);
            match r.lag {
                Some(seconds) => lag.with_label_values(&[&server]).set(seconds as i64),
                None => {
                    let _ = lag.remove_label_values(&[&server]);
                }
            }
        }
    }
    vec![
        Box::new(roles),
        Box::new(up),
        Box::new(duration),
        Box::new(checks),
        Box::new(failovers),
        Box::new(servers),
        Box::new(lag),
    ]
}

/// The certificates in use, for an alert before one expires.
fn certificates(f: &Frontend) -> Collectors {
    let expiry = gauge(
        "sluice_tls_certificate_not_after_timestamp_seconds",
        "When each certificate the proxy loaded expires, in Unix seconds.",
        &["cert_type", "file_path"],
    );
    for c in &f.shared.load().certificates {
        expiry
            .with_label_values(&[c.cert_type, &c.file_path])
            .set(c.not_after);
    }
    vec![Box::new(expiry)]
}

fn rules(f: &Frontend) -> Collectors {
    let runtime = f.shared.load();
    let c = &f.counters;
    let hits = counter(
        "sluice_rule_hits_total",
        "Matches per query rule.",
        &["rule_id"],
    );
    for (id, n) in runtime.rules.hits() {
        hits.with_label_values(&[&id.to_string()]).inc_by(n);
    }
    let refusals = counter(
        "sluice_rule_refusals_total",
        "Statements refused by a query rule's error_msg.",
        &[],
    );
    refusals
        .with_label_values(&[])
        .inc_by(load(&c.rule_refusals));
    let firewall = counter(
        "sluice_firewall_decisions_total",
        "Firewall decisions on statements it had not learned.",
        &["decision"],
    );
    firewall
        .with_label_values(&["learned"])
        .inc_by(load(&c.firewall_learned));
    firewall
        .with_label_values(&["blocked"])
        .inc_by(load(&c.firewall_blocked));
    let injection = counter(
        "sluice_sql_injection_flagged_total",
        "Statements with an injection shape.",
        &[],
    );
    injection
        .with_label_values(&[])
        .inc_by(load(&c.injection_flagged));
    let dropped = counter(
        "sluice_dropped_total",
        "Records not kept: digests beyond the table's bound, query log lines behind a slow disk.",
        &["what"],
    );
    dropped
        .with_label_values(&["digest"])
        .inc_by(load(&f.digests.dropped));
    if let Some(log) = &runtime.query_log {
        dropped
            .with_label_values(&["query_log_line"])
            .inc_by(load(&log.dropped));
    }
    vec![
        Box::new(hits),
        Box::new(refusals),
        Box::new(firewall),
        Box::new(injection),
        Box::new(dropped),
    ]
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:`, `VmSize:`), in
/// bytes; 0 where the file cannot be read.
pub fn process_memory_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Ready for traffic: every Galera writer hostgroup has a writer (or, without Galera
/// hostgroups, some hostgroup has a server).
pub fn ready(f: &Frontend) -> bool {
    let runtime = f.shared.load();
    let membership = f.shared.membership();
    match &membership {
        Some(m) if !runtime.galera.is_empty() => runtime.galera.iter().all(|g| {
            m.hostgroups
                .get(&g.writer_hostgroup)
                .is_some_and(|w| !w.servers.is_empty())
        }),
        Some(m) => m.hostgroups.values().any(|h| !h.servers.is_empty()),
        None => runtime.galera.is_empty() && !runtime.hostgroups.is_empty(),
    }
}

/// Serves `/metrics` and `/health` until the listener fails.
pub async fn serve(frontend: Arc<Frontend>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(answer(frontend.clone(), tcp));
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Largest request head read.
const REQUEST_LIMIT: usize = 8 * 1024;

async fn answer(frontend: Arc<Frontend>, mut tcp: TcpStream) {
    let Ok(Some(path)) = tokio::time::timeout(Duration::from_secs(5), request_path(&mut tcp)).await
    else {
        return;
    };
    let (status, content_type, body) = match path.as_str() {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(&frontend),
        ),
        "/health" if ready(&frontend) => ("200 OK", "text/plain", "ready\n".to_string()),
        "/health" => (
            "503 Service Unavailable",
            "text/plain",
            "no writer\n".to_string(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// The path of a `GET` request (query string dropped), once its head has arrived.
async fn request_path(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.ok()?;
        if n == 0 || head.len() + n > REQUEST_LIMIT {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next()?;
    let mut parts = std::str::from_utf8(line).ok()?.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    (method == "GET").then(|| target.split('?').next().unwrap_or(target).to_string())
}

/// Binds the metrics endpoint, if one is configured, and serves it.
pub async fn start(
    frontend: Arc<Frontend>,
    listen: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let Some(listen) = listen else {
        return Ok(());
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("metrics.listen {listen}: {e}"))?;
    tracing::info!(%listen, "metrics listening");
    tokio::spawn(serve(frontend, listener));
    Ok(())
}
