//! The query cache and mirroring against the real cluster: cached results byte for byte
//! the server's (10,000 rows; every column type in tests/data/all_types.sql), nothing
//! cached inside a transaction or with warnings, the memory cap under 100,000 distinct
//! statements, `PROXYSQL FLUSH QUERY CACHE`; mirrored writes arriving on a replica-only
//! hostgroup with the mirror's errors counted and transactions left alone. What needs a
//! stopped server (a hit while the backend is SIGSTOPped, a stopped mirror) is in
//! tests/failover.rs, which runs alone.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    direct_ok, mariadb, mariadb_ok, repo, stat, stderr, stdout, wait_for, Proxy, RawClient,
};
use sluice::protocol::constants::header;

/// Waits until replica `port` returns `expected` for `sql`.
fn replica_has(port: u16, sql: &str, expected: &str) {
    wait_for(Duration::from_secs(20), sql, || {
        stdout(&mariadb(port, &["-uapp", "-papp", "-e", sql])) == expected
    });
}

/// A one-row table on the writer and both replicas, for reads of `NOW(6)`.
fn clock_table() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.qc_clock (id INT PRIMARY KEY); \
         REPLACE INTO sbtest.qc_clock VALUES (1)",
    );
    for replica in [13309, 13310] {
        replica_has(replica, "SELECT COUNT(*) FROM sbtest.qc_clock", "1\n");
    }
}

/// A response as the client received it: each packet's sequence id and payload.
fn wire(packets: &[common::RawPacket]) -> Vec<(u8, Vec<u8>)> {
    packets.iter().map(|p| (p.seq, p.payload.clone())).collect()
}

fn query_wire(client: &mut RawClient, sql: &str) -> Vec<(u8, Vec<u8>)> {
    let packets = client.query(sql);
    assert_ne!(packets[0].payload[0], header::ERR, "{sql}: {packets:?}");
    wire(&packets)
}

#[test]
fn cached_results_are_the_servers_bytes_for_10000_rows_and_every_column_type() {
    let sql_file = repo().join("tests/data/all_types.sql");
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h127.0.0.1", "-P13306", "-uapp", "-papp"])
        .stdin(Stdio::from(std::fs::File::open(&sql_file).unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.qc_rows (id INT PRIMARY KEY, c CHAR(60), d DOUBLE); \
         REPLACE INTO sbtest.qc_rows SELECT seq, REPEAT(CHAR(65 + seq % 26), 1 + seq % 60), seq / 7 \
         FROM sbtest.seq_1_to_10000",
    );
    replica_has(13309, "SELECT COUNT(*) FROM sbtest.qc_rows", "10000\n");
    replica_has(13309, "SELECT COUNT(*) FROM sbtest.qc_types", "3\n");
    let proxy = Proxy::start_with(|c| {
        c + &common::hostgroup_of(60, 13309)
            + r#"
[[query_rules]]
rule_id = 1
match_pattern = "FROM sbtest\\.qc_(rows|types)"
destination_hostgroup = 60
cache_ttl = 600000
"#
    });
    let mut server = RawClient::login(13309, "app", "app").unwrap();
    let mut client = RawClient::login(proxy.port, "app", "app").unwrap();
    for set_names in ["SET NAMES utf8mb4", "SET NAMES latin1"] {
        server.query(set_names);
        client.query(set_names);
        for sql in [
            "SELECT * FROM sbtest.qc_rows ORDER BY id",
            "SELECT * FROM sbtest.qc_types ORDER BY id",
        ] {
            let expected = query_wire(&mut server, sql);
            let hits = stat(&proxy, "Query_Cache_count_GET_OK");
            let relayed = query_wire(&mut client, sql);
            let cached = query_wire(&mut client, sql);
            assert_eq!(
                stat(&proxy, "Query_Cache_count_GET_OK"),
                hits + 1,
                "{sql} ({set_names}): the second run is a hit"
            );
            assert!(
                relayed == expected,
                "{sql} ({set_names}): relayed bytes differ"
            );
            assert!(
                cached == expected,
                "{sql} ({set_names}): cached bytes differ"
            );
        }
    }
    assert_eq!(
        stat(&proxy, "Query_Cache_count_SET"),
        4,
        "each character set has its own entries"
    );
    // a hit is counted in the digest statistics under hostgroup -1, as ProxySQL shows it
    let digests = mariadb_ok(
        &proxy,
        proxy.admin_port,
        "admin",
        "SELECT hostgroup, count_star FROM stats_mysql_query_digest \
         WHERE digest_text LIKE '%qc_rows%' ORDER BY hostgroup",
    );
    assert_eq!(digests, "-1\t2\n60\t2\n");
}

#[test]
fn nothing_is_cached_or_served_inside_a_transaction_or_with_warnings_and_flush_empties_it() {
    clock_table();
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 1
match_pattern = "FROM sbtest\\.qc_clock WHERE id < 0"
cache_ttl = 600000
cache_empty_result = false

[[query_rules]]
rule_id = 2
match_pattern = "FROM sbtest\\.qc_clock"
cache_ttl = 600000
"#
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let now = "SELECT NOW(6) FROM sbtest.qc_clock";
    let read = |c: &mut RawClient| c.query_column(now)[0].clone();
    let cached = read(&mut c);
    std::thread::sleep(Duration::from_millis(2));
    assert_eq!(read(&mut c), cached, "served from the cache");
    let lookups = stat(&proxy, "Query_Cache_count_GET");
    for begin in ["BEGIN", "SET autocommit = 0"] {
        c.query(begin);
        let first = read(&mut c);
        let second = read(&mut c);
        assert!(
            first != cached && second != first,
            "{begin}: the server answered each read ({cached}, {first}, {second})"
        );
        c.query("COMMIT");
        if begin.starts_with("SET") {
            c.query("SET autocommit = 1");
        }
    }
    assert_eq!(
        stat(&proxy, "Query_Cache_count_GET"),
        lookups,
        "not even looked up"
    );
    assert_eq!(
        read(&mut c),
        cached,
        "outside the transaction: the cache again"
    );
    // warnings, and (for this rule) empty results, are not kept
    let stores = stat(&proxy, "Query_Cache_count_SET");
    let warned = "SELECT CAST('12abc' AS INT), NOW(6) FROM sbtest.qc_clock";
    let first = query_wire(&mut c, warned);
    assert_ne!(
        query_wire(&mut c, warned),
        first,
        "a result with a warning is not cached"
    );
    c.query("SELECT NOW(6) FROM sbtest.qc_clock WHERE id < 0");
    c.query("SELECT NOW(6) FROM sbtest.qc_clock WHERE id < 0");
    assert_eq!(stat(&proxy, "Query_Cache_count_SET"), stores);
    // FLUSH empties it
    assert!(stat(&proxy, "Query_Cache_Entries") >= 1);
    mariadb_ok(
        &proxy,
        proxy.admin_port,
        "admin",
        "PROXYSQL FLUSH QUERY CACHE",
    );
    assert_eq!(stat(&proxy, "Query_Cache_Entries"), 0);
    assert_eq!(stat(&proxy, "Query_Cache_Memory_bytes"), 0);
    let fresh = read(&mut c);
    assert_ne!(fresh, cached, "after a flush the server answers");
    assert_eq!(read(&mut c), fresh);
    // a session holding state on its connection neither reads nor fills the cache
    c.query("CREATE TEMPORARY TABLE qc_session_state (id INT)");
    let bound = read(&mut c);
    assert!(
        bound != fresh && read(&mut c) != bound,
        "a bound session reads from its server"
    );
    // the same figures on /metrics
    let metrics = common::http_get(proxy.metrics_port, "/metrics").1;
    assert!(
        metrics.contains("sluice_query_cache_lookups_total{result=\"hit\"} 3"),
        "{metrics}"
    );
}

#[test]
fn the_memory_cap_holds_under_100000_distinct_cached_statements() {
    clock_table();
    let proxy = Proxy::start_with(|c| {
        c.replacen(
            "[throttle]",
            "[query_cache]\nmax_memory_mb = 2\nmax_entry_kb = 64\n\n[throttle]",
            1,
        ) + r#"
[[query_rules]]
rule_id = 1
match_pattern = "qc_many"
cache_ttl = 600000
"#
    });
    let before = proxy.rss_kib();
    let port = proxy.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                for i in 0..25_000 {
                    let n = t * 25_000 + i;
                    let sql =
                        format!("SELECT {n} AS n, REPEAT('x', 100) AS pad FROM sbtest.qc_clock /* qc_many */");
                    assert_eq!(c.query_column(&sql), [n.to_string()]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let entries = stat(&proxy, "Query_Cache_Entries");
    let memory = stat(&proxy, "Query_Cache_Memory_bytes");
    assert_eq!(stat(&proxy, "Query_Cache_count_SET"), 100_000);
    assert!(memory <= 2 * 1024 * 1024, "{memory} bytes");
    assert!(entries > 1_000 && entries < 100_000, "{entries} entries");
    assert!(
        stat(&proxy, "Query_Cache_Evicted") >= 100_000 - entries,
        "what is not held was evicted"
    );
    let grown = proxy.rss_kib().saturating_sub(before);
    eprintln!("{entries} entries, {memory} bytes counted, RSS grew by {grown} KiB");
    // 100,000 results of ~250 bytes each would be ~25 MiB uncapped
    assert!(grown < 20 * 1024, "the proxy grew by {grown} KiB");
}

#[test]
fn mirrored_writes_arrive_on_the_mirror_and_its_errors_are_counted() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.mirror_src (id INT PRIMARY KEY, v INT); \
         DELETE FROM sbtest.mirror_src",
    );
    replica_has(13310, "SELECT COUNT(*) FROM sbtest.mirror_src", "0\n");
    // a table on the mirror alone (its writes stay in the replica's own GTID domain)
    let on_mirror = |sql: &str| {
        let out = mariadb(13310, &["-uapp", "-papp", "-e", sql]);
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out)
    };
    on_mirror(
        "CREATE DATABASE IF NOT EXISTS sluice_mirror; \
         CREATE TABLE IF NOT EXISTS sluice_mirror.copy (id INT PRIMARY KEY, v INT); \
         DELETE FROM sluice_mirror.copy; INSERT INTO sluice_mirror.copy VALUES (1000, 0)",
    );
    let proxy = Proxy::start_with(|c| {
        c + &common::hostgroup_of(50, 13310)
            + r#"
[[query_rules]]
rule_id = 10
match_pattern = "^INSERT INTO sbtest\\.mirror_src"
mirror_hostgroup = 50
mirror_flagOUT = 100

[[query_rules]]
rule_id = 11
flag_in = 100
match_pattern = "sbtest\\.mirror_src"
replace_pattern = "sluice_mirror.copy"
"#
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    for id in 1..=200 {
        let packets = c.query(&format!(
            "INSERT INTO sbtest.mirror_src VALUES ({id}, {id})"
        ));
        assert_eq!(packets[0].payload[0], header::OK);
    }
    // the mirror already has 1000: its copy fails there, the client's insert does not
    let packets = c.query("INSERT INTO sbtest.mirror_src VALUES (1000, 1)");
    assert_eq!(packets[0].payload[0], header::OK);
    // inside a transaction nothing is mirrored
    c.query("BEGIN");
    c.query("INSERT INTO sbtest.mirror_src VALUES (500, 1)");
    c.query("COMMIT");
    wait_for(Duration::from_secs(20), "the copies", || {
        stat(&proxy, "Mirror_sent") == 201
    });
    assert_eq!(
        on_mirror("SELECT COUNT(*), SUM(id = 500), SUM(v) FROM sluice_mirror.copy"),
        format!("201\t0\t{}\n", (1..=200).sum::<u32>())
    );
    assert_eq!(stat(&proxy, "Mirror_errors"), 1);
    assert_eq!(stat(&proxy, "Mirror_skipped_in_transaction"), 1);
    assert_eq!(stat(&proxy, "Mirror_dropped_queue_full"), 0);
    assert_eq!(
        direct_ok("SELECT COUNT(*) FROM sbtest.mirror_src"),
        "202\n",
        "the client's own writes all went to the writer"
    );
    // the copies are in the digest statistics under the mirror's hostgroup
    let digests = mariadb_ok(
        &proxy,
        proxy.admin_port,
        "admin",
        "SELECT hostgroup, count_star, errors FROM stats_mysql_query_digest \
         WHERE digest_text LIKE 'INSERT INTO sbtest.mirror_src%' ORDER BY hostgroup",
    );
    assert_eq!(digests, "10\t202\t0\n50\t201\t1\n");
    on_mirror("DROP DATABASE sluice_mirror");
}

#[test]
fn a_cache_rule_loaded_through_the_admin_port_takes_effect_and_saves_to_disk() {
    clock_table();
    let proxy = Proxy::start();
    let admin = |sql: &str| mariadb_ok(&proxy, proxy.admin_port, "admin", sql);
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let sql = "SELECT NOW(6) FROM sbtest.qc_clock /* admin rule */";
    let first = c.query_column(sql);
    assert_ne!(c.query_column(sql), first, "no rule yet: not cached");
    admin(
        "INSERT INTO mysql_query_rules (rule_id, active, match_pattern, cache_ttl, \
         cache_empty_result, mirror_flagOUT, mirror_hostgroup, apply) \
         VALUES (7, 1, 'admin rule', 600000, 0, NULL, NULL, 1)",
    );
    admin("LOAD MYSQL QUERY RULES TO RUNTIME");
    assert_eq!(
        admin("SELECT rule_id, cache_ttl, cache_empty_result, mirror_hostgroup FROM runtime_mysql_query_rules"),
        "7\t600000\t0\tNULL\n"
    );
    let cached = c.query_column(sql);
    assert_eq!(c.query_column(sql), cached, "the loaded rule caches");
    admin("SAVE MYSQL QUERY RULES TO DISK");
    let saved = std::fs::read_to_string(proxy.dir.join("sluice.toml")).unwrap();
    assert!(
        saved.contains("cache_ttl = 600000") && saved.contains("cache_empty_result = false"),
        "{saved}"
    );
    // the sections' settings are variables too
    admin(
        "UPDATE global_variables SET variable_value = '8' \
         WHERE variable_name = 'mysql-query_cache_max_memory_mb'; \
         UPDATE global_variables SET variable_value = '100' \
         WHERE variable_name = 'mysql-mirror_max_queue'; \
         LOAD MYSQL VARIABLES TO RUNTIME",
    );
    assert_eq!(
        admin(
            "SELECT variable_value FROM runtime_global_variables WHERE variable_name IN \
             ('mysql-query_cache_max_memory_mb', 'mysql-mirror_max_queue') ORDER BY variable_name"
        ),
        "100\n8\n"
    );
    // a TTL of 0 is refused (ProxySQL's CHECK constraint on the column)
    let out = mariadb(
        proxy.admin_port,
        &[
            "-uadmin",
            "-padmin",
            "-e",
            "UPDATE mysql_query_rules SET cache_ttl = 0 WHERE rule_id = 7",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cache_ttl"), "{}", stderr(&out));
}
