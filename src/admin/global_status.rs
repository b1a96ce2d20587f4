//! `stats_mysql_global` and `stats_memory_metrics`: ProxySQL's status variables, under
//! its names and in its order (ProxySQL 2.7, `MySQL_Threads_Handler::SQL3_GlobalStatus`
//! and the admin's additions), then Sluice's own. Tools written for ProxySQL (PMM's
//! exporter, dashboards) read these by name; a quantity Sluice does not have keeps
//! ProxySQL's idle value (README lists which).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::frontend::Frontend;
use crate::protocol::constants::command;
use crate::rules::Command;
use crate::runtime::{Runtime, ServerStats};

/// One `Variable_Name`, `Variable_Value` row.
pub type Row = (&'static str, String);

fn n(counter: &AtomicU64) -> String {
    counter.load(Ordering::Relaxed).to_string()
}

fn un(counter: &AtomicUsize) -> String {
    counter.load(Ordering::Relaxed).to_string()
}

/// One counter of every configured server, summed.
fn server_sum(runtime: &Runtime, pick: fn(&ServerStats) -> &AtomicU64) -> String {
    runtime
        .servers()
        .map(|s| pick(&s.stats).load(Ordering::Relaxed))
        .sum::<u64>()
        .to_string()
}

/// The runtime's worker threads (ProxySQL's MySQL threads), which `proxy.worker_threads`
/// may have set below the cores; outside a runtime (a unit test), the cores, as the
/// runtime would start by default.
pub(super) fn worker_threads() -> usize {
    tokio::runtime::Handle::try_current().map_or_else(
        |_| std::thread::available_parallelism().map_or(1, usize::from),
        |h| h.metrics().num_workers(),
    )
}

/// ProxySQL's value for a feature Sluice does not have.
fn idle() -> String {
    "0".into()
}

/// Every row of `stats_mysql_global`.
pub fn global(f: &Frontend, runtime: &Runtime) -> Vec<Row> {
    let mut rows = sessions(f, runtime);
    rows.extend(commands(f, runtime));
    rows.extend(thread_counters(f, runtime));
    rows.extend(monitor(f));
    rows.extend(admin_additions(f));
    rows.extend(sluice(f));
    rows
}

/// Connections, sessions and transactions.
fn sessions(f: &Frontend, runtime: &Runtime) -> Vec<Row> {
    let c = &f.counters;
    let backend_open: u64 = runtime
        .servers()
        .map(|s| u64::from(s.connections.load(Ordering::Relaxed)))
        .sum();
    let sum = |pick| server_sum(runtime, pick);
    let activities: Vec<_> = f.registry.sessions().iter().map(|s| s.activity()).collect();
    let in_transaction = activities.iter().filter(|a| a.in_transaction).count();
    let busy = activities.iter().filter(|a| a.command != "Sleep").count();
    vec![
        ("ProxySQL_Uptime", f.started.elapsed().as_secs().to_string()),
        ("Active_Transactions", in_transaction.to_string()),
        ("Client_Connections_aborted", n(&c.logins_failed)),
        ("Client_Connections_connected", f.client_count().to_string()),
        ("Client_Connections_created", n(&c.logins)),
        ("Server_Connections_aborted", sum(|s| &s.connect_errors)),
        ("Server_Connections_connected", backend_open.to_string()),
        ("Server_Connections_created", sum(|s| &s.connect_ok)),
        // connections held back by ProxySQL's throttle_connections_per_sec_to_hostgroup
        ("Server_Connections_delayed", idle()),
        ("Client_Connections_non_idle", busy.to_string()),
        // ProxySQL's per-thread buffer accounting; Sluice does not track buffer bytes
        ("mysql_backend_buffers_bytes", idle()),
        ("mysql_frontend_buffers_bytes", idle()),
        ("mysql_session_internal_bytes", idle()),
    ]
}

/// `Com_*`: statements and commands by what they were.
fn commands(f: &Frontend, runtime: &Runtime) -> Vec<Row> {
    let c = &f.counters;
    let by = |command: Command| n(&c.by_command.of(command).count);
    let sent = |cmd: u8| n(&c.commands[usize::from(cmd)]);
    let sum = |pick| server_sum(runtime, pick);
    vec![
        ("Com_autocommit", n(&c.set_autocommit)),
        // ProxySQL answers some of these itself ("filtered"); Sluice forwards them all
        ("Com_autocommit_filtered", idle()),
        ("Com_commit", by(Command::Commit)),
        ("Com_commit_filtered", idle()),
        ("Com_rollback", by(Command::Rollback)),
        ("Com_rollback_filtered", idle()),
        // Sluice resets pooled connections with COM_RESET_CONNECTION (MyHGM_myconnpoll_reset)
        ("Com_backend_change_user", idle()),
        ("Com_backend_init_db", sum(|s| &s.init_db)),
        ("Com_backend_set_names", sum(|s| &s.set_names)),
        ("Com_frontend_init_db", sent(command::INIT_DB)),
        ("Com_frontend_set_names", n(&c.set_names)),
        ("Com_frontend_use_db", by(Command::Use)),
    ]
}

/// ProxySQL's per-thread counters, summed (`MySQL_Thread_status_variables_counter_array`),
/// and the rows between them.
fn thread_counters(f: &Frontend, runtime: &Runtime) -> Vec<Row> {
    let c = &f.counters;
    let ps = &f.pool.statements.stats;
    let pool = &f.pool.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let bytes = |pick| server_sum(runtime, pick);
    let generated_errors: u64 = c.errors().iter().map(|(_, count)| count).sum();
    let refused = |reason: &str| -> String {
        c.refusals()
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, count)| count)
            .sum::<u64>()
            .to_string()
    };
    vec![
        (
            "Com_backend_stmt_prepare",
            (load(&ps.client_prepares) + load(&ps.reprepares)).to_string(),
        ),
        ("Com_backend_stmt_execute", n(&ps.executes)),
        ("Com_backend_stmt_close", n(&ps.backend_evictions)),
        ("Com_frontend_stmt_prepare", n(&ps.client_prepares)),
        ("Com_frontend_stmt_execute", n(&ps.executes)),
        (
            "Com_frontend_stmt_close",
            n(&c.commands[usize::from(command::STMT_CLOSE)]),
        ),
        ("Questions", n(&c.questions)),
        ("Slow_queries", n(&c.slow_queries)),
        ("GTID_consistent_queries", n(&c.gtid_consistent_queries)),
        ("GTID_session_collected", n(&c.gtids_collected)),
        ("Queries_backends_bytes_recv", bytes(|s| &s.bytes_received)),
        ("Queries_backends_bytes_sent", bytes(|s| &s.bytes_sent)),
        ("Queries_frontends_bytes_recv", n(&c.bytes_from_clients)),
        ("Queries_frontends_bytes_sent", n(&c.bytes_to_clients)),
        ("Query_Processor_time_nsec", n(&c.query_processor_ns)),
        ("Backend_query_time_nsec", n(&c.backend_query_ns)),
        // ProxySQL's latency-aware server choice; Sluice picks by weight
        ("ConnPool_get_conn_latency_awareness", idle()),
        ("ConnPool_get_conn_immediate", n(&pool.gets_immediate)),
        ("ConnPool_get_conn_success", n(&pool.gets_ok)),
        ("ConnPool_get_conn_failure", n(&pool.gets_failed)),
        ("mysql_killed_backend_connections", idle()),
        ("mysql_killed_backend_queries", idle()),
        ("hostgroup_locked_set_cmds", idle()),
        ("hostgroup_locked_queries", idle()),
        ("mysql_unexpected_frontend_com_quit", idle()),
        ("mysql_unexpected_frontend_packets", idle()),
        ("queries_with_max_lag_ms__total_wait_time_us", idle()),
        ("queries_with_max_lag_ms__delayed", idle()),
        ("queries_with_max_lag_ms", idle()),
        ("backend_lagging_during_query", idle()),
        ("backend_offline_during_query", idle()),
        ("get_aws_aurora_replicas_skipped_during_query", idle()),
        ("automatic_detected_sql_injection", n(&c.injection_flagged)),
        ("whitelisted_sqli_fingerprint", idle()),
        ("max_connect_timeouts", n(&f.pool.waits.timeouts)),
        ("generated_error_packets", generated_errors.to_string()),
        ("client_host_error_killed_connections", refused("throttled")),
        ("Client_Connections_hostgroup_locked", idle()),
        ("Mirror_concurrency", n(&f.mirror.stats.running)),
        ("Mirror_queue_length", un(&f.mirror.stats.queued)),
        ("Selects_for_update__autocommit0", idle()),
        (
            "Servers_table_version",
            f.shared.servers_version().to_string(),
        ),
        ("MySQL_Thread_Workers", worker_threads().to_string()),
        ("Access_Denied_Wrong_Password", n(&c.denied_password)),
        ("Access_Denied_Max_Connections", refused("connection limit")),
        (
            "Access_Denied_Max_User_Connections",
            refused("user connection limit"),
        ),
    ]
}

/// `MySQL_Monitor_*`. Sluice's monitor is one task with one check per server at a time.
fn monitor(f: &Frontend) -> Vec<Row> {
    let k = &f.shared.check_counts;
    let monitoring = f.shared.load().monitor.is_some();
    vec![
        ("MySQL_Monitor_Workers", u8::from(monitoring).to_string()),
        ("MySQL_Monitor_Workers_Aux", idle()),
        (
            "MySQL_Monitor_Workers_Started",
            u8::from(monitoring).to_string(),
        ),
        ("MySQL_Monitor_connect_check_OK", n(&k.connect_ok)),
        ("MySQL_Monitor_connect_check_ERR", n(&k.connect_err)),
        ("MySQL_Monitor_ping_check_OK", n(&k.ping_ok)),
        ("MySQL_Monitor_ping_check_ERR", n(&k.ping_err)),
        ("MySQL_Monitor_read_only_check_OK", n(&k.read_only_ok)),
        ("MySQL_Monitor_read_only_check_ERR", n(&k.read_only_err)),
        ("MySQL_Monitor_replication_lag_check_OK", n(&k.lag_ok)),
        ("MySQL_Monitor_replication_lag_check_ERR", n(&k.lag_err)),
        // ProxySQL's own DNS cache; Sluice resolves with the system's
        ("MySQL_Monitor_dns_cache_queried", idle()),
        ("MySQL_Monitor_dns_cache_lookup_success", idle()),
        ("MySQL_Monitor_dns_cache_record_updated", idle()),
    ]
}

/// What ProxySQL's admin adds to the threads' rows: the pool, memory, prepared
/// statements and the query cache.
fn admin_additions(f: &Frontend) -> Vec<Row> {
    let pool = &f.pool.stats;
    let statements = f.pool.statements.info();
    let client_active = statements.iter().filter(|s| s.client_refs > 0);
    let server_active = statements.iter().filter(|s| s.server_refs > 0);
    let qc = &f.query_cache;
    vec![
        ("MyHGM_myconnpoll_get", n(&pool.gets)),
        ("MyHGM_myconnpoll_get_ok", n(&pool.gets_ok)),
        ("MyHGM_myconnpoll_push", n(&pool.pushes)),
        ("MyHGM_myconnpoll_destroy", n(&pool.destroys)),
        ("MyHGM_myconnpoll_reset", n(&pool.resets)),
        ("SQLite3_memory_bytes", sqlite_memory().to_string()),
        ("ConnPool_memory_bytes", f.pool.memory_bytes().to_string()),
        (
            "Stmt_Client_Active_Total",
            client_active
                .clone()
                .map(|s| s.client_refs)
                .sum::<usize>()
                .to_string(),
        ),
        (
            "Stmt_Client_Active_Unique",
            client_active.count().to_string(),
        ),
        (
            "Stmt_Server_Active_Total",
            server_active
                .clone()
                .map(|s| u64::from(s.server_refs))
                .sum::<u64>()
                .to_string(),
        ),
        (
            "Stmt_Server_Active_Unique",
            server_active.count().to_string(),
        ),
        (
            "Stmt_Max_Stmt_id",
            statements
                .iter()
                .map(|s| s.id)
                .max()
                .unwrap_or(0)
                .to_string(),
        ),
        ("Stmt_Cached", statements.len().to_string()),
        ("Query_Cache_Memory_bytes", qc.memory_bytes().to_string()),
        ("Query_Cache_count_GET", n(&qc.stats.lookups)),
        ("Query_Cache_count_GET_OK", n(&qc.stats.hits)),
        ("Query_Cache_count_SET", n(&qc.stats.stores)),
        ("Query_Cache_bytes_IN", n(&qc.stats.bytes_in)),
        ("Query_Cache_bytes_OUT", n(&qc.stats.bytes_out)),
        ("Query_Cache_Purged", n(&qc.stats.purged)),
        ("Query_Cache_Entries", qc.len().to_string()),
        // connections query rules asked to open anew (ProxySQL's create_new_connection)
        ("new_req_conns_count", idle()),
        ("mysql_listener_paused", f.is_paused().to_string()),
    ]
}

/// Sluice's own rows, after ProxySQL's.
fn sluice(f: &Frontend) -> Vec<Row> {
    let c = &f.counters;
    let ps = &f.pool.statements.stats;
    let qc = &f.query_cache;
    let mirror = &f.mirror.stats;
    vec![
        ("Client_Connections_refused", n(&c.connections_refused)),
        ("Query_Rules_refused", n(&c.rule_refusals)),
        ("Firewall_blocked", n(&c.firewall_blocked)),
        ("Firewall_learned", n(&c.firewall_learned)),
        ("SQL_injection_flagged", n(&c.injection_flagged)),
        ("Backend_connections_lost", n(&c.backends_lost)),
        ("Reads_retried", n(&c.reads_retried)),
        ("Transactions_replayed", n(&c.transactions_replayed)),
        (
            "Transaction_replays_refused",
            n(&c.transaction_replays_failed),
        ),
        ("Deadlocks_retried", n(&c.deadlocks_retried)),
        ("Pool_idle_connections", f.pool.idle_count().to_string()),
        ("Pool_waiting", n(&f.pool.waits.waiting)),
        ("Pool_waits", n(&f.pool.waits.waits)),
        ("Pool_wait_timeouts", n(&f.pool.waits.timeouts)),
        ("Pool_wait_us", n(&f.pool.waits.waited_us)),
        ("Digests_dropped", n(&f.digests.dropped)),
        ("Stmt_reprepares", n(&ps.reprepares)),
        ("Stmt_definitions_changed", n(&ps.definitions_changed)),
        ("Stmt_backend_evictions", n(&ps.backend_evictions)),
        ("Stmt_cache_evictions", n(&ps.cache_evictions)),
        ("Query_Cache_Evicted", qc.evictions().to_string()),
        ("Query_Cache_too_large", n(&qc.stats.too_large)),
        ("Mirror_sent", n(&mirror.sent)),
        ("Mirror_errors", n(&mirror.errors)),
        ("Mirror_dropped_queue_full", n(&mirror.dropped_full)),
        ("Mirror_dropped_unreachable", n(&mirror.dropped_unreachable)),
        ("Mirror_timeouts", n(&mirror.timeouts)),
        (
            "Mirror_skipped_in_transaction",
            n(&mirror.skipped_in_transaction),
        ),
        ("Writer_changes", f.shared.writer_changes().to_string()),
    ]
}

/// Bytes SQLite holds for the admin database (SQLite's own count).
pub fn sqlite_memory() -> i64 {
    // SAFETY: a read of SQLite's global memory counter; no arguments, no state changed
    unsafe { rusqlite::ffi::sqlite3_memory_used() }
}

/// Every row of `stats_memory_metrics`, ProxySQL's names first. The allocator rows are
/// jemalloc's own statistics (Sluice runs on jemalloc, as ProxySQL does); the others
/// count the structures and strings Sluice holds for each purpose.
pub fn memory(f: &Frontend, runtime: &Runtime) -> Vec<Row> {
    let allocator = crate::allocator::stats();
    let auth: usize = runtime
        .users
        .iter()
        .map(|(name, user)| name.capacity() + std::mem::size_of_val(&**user))
        .sum();
    let statements = f.pool.statements.info();
    let firewall = runtime.firewall.memory_bytes().to_string();
    let memory = crate::metrics::process_memory_bytes;
    vec![
        ("SQLite3_memory_bytes", sqlite_memory().to_string()),
        ("jemalloc_resident", allocator.resident.to_string()),
        ("jemalloc_active", allocator.active.to_string()),
        ("jemalloc_allocated", allocator.allocated.to_string()),
        ("jemalloc_mapped", allocator.mapped.to_string()),
        ("jemalloc_metadata", allocator.metadata.to_string()),
        ("jemalloc_retained", allocator.retained.to_string()),
        ("Auth_memory", auth.to_string()),
        ("query_digest_memory", f.digests.memory_bytes().to_string()),
        (
            "mysql_query_rules_memory",
            runtime.rules.memory_bytes().to_string(),
        ),
        (
            "prepare_statement_metadata_memory",
            statements
                .iter()
                .map(|s| s.text.len() + s.user.capacity())
                .sum::<usize>()
                .to_string(),
        ),
        // what backends hold for prepared statements is the servers' memory
        ("prepare_statement_backend_memory", idle()),
        // the allow list is both the table and the configuration in Sluice
        ("mysql_firewall_users_table", firewall.clone()),
        ("mysql_firewall_users_config", idle()),
        ("mysql_firewall_rules_table", idle()),
        ("mysql_firewall_rules_config", idle()),
        (
            "stack_memory_mysql_threads",
            (worker_threads() * crate::allocator::WORKER_STACK_BYTES).to_string(),
        ),
        // the admin port and the cluster sync run on the same worker threads
        ("stack_memory_admin_threads", idle()),
        ("stack_memory_cluster_threads", idle()),
        (
            "process_resident_memory_bytes",
            memory("VmRSS:").to_string(),
        ),
        (
            "process_virtual_memory_bytes",
            memory("VmSize:").to_string(),
        ),
        ("client_sessions", f.registry.sessions().len().to_string()),
        (
            "jemalloc_background_threads",
            u8::from(allocator.background_threads).to_string(),
        ),
        ("pool_idle_connections", f.pool.idle_count().to_string()),
        ("pool_idle_memory", f.pool.memory_bytes().to_string()),
        ("query_digests", f.digests.len().to_string()),
        (
            "query_cache_memory",
            f.query_cache.memory_bytes().to_string(),
        ),
    ]
}
