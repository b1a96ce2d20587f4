//! One statement path for both protocols, against the real cluster: a prepared read runs on
//! the replicas as its text would (and stays on the writer when the user does not split
//! reads), waits for the session's own writes there, is counted in the digest statistics
//! and the query log, obeys the rules (a deny loaded after the prepare, a cache rule), and
//! a prepared CALL of a procedure returning results through a loop completes.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::binary::{binary_result, execute, prepare, Param};
use common::{admin_ok, direct_ok, mariadb, stdout, sysbench, wait_for, Proxy, RawClient};
use sluice::protocol::constants::{command, header};

const REPLICAS: [u16; 2] = [13309, 13310];

/// `Com_stmt_execute` of the server on `port`, read directly.
fn executes_on(port: u16) -> u64 {
    let out = mariadb(
        port,
        &[
            "-uapp_local",
            "-papp_local",
            "-N",
            "-e",
            "SHOW GLOBAL STATUS LIKE 'Com_stmt_execute'",
        ],
    );
    let text = stdout(&out);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Kills the `app` user's connections on the server on `port` (the proxy's pooled ones).
fn kill_app_connections(port: u16) {
    let sql = "SELECT GROUP_CONCAT(CONCAT('KILL ', id) SEPARATOR ';') FROM information_schema.processlist \
               WHERE user = 'app' AND id <> CONNECTION_ID()";
    let kills = stdout(&mariadb(port, &["-uapp", "-papp", "-e", sql]));
    let kills = kills.trim();
    if kills != "NULL" && !kills.is_empty() {
        let out = mariadb(port, &["-uapp", "-papp", "-e", kills]);
        assert!(out.status.success(), "{kills}: {}", common::stderr(&out));
    }
}

fn replica_executes() -> u64 {
    REPLICAS.iter().map(|p| executes_on(*p)).sum()
}

/// sysbench's `oltp_point_select` with its default server-side prepared statements, for
/// `seconds`: the point selects it ran, and its errors.
fn prepared_point_selects(port: u16, database: &str, seconds: u32) -> (u64, u64) {
    let out = sysbench(
        port,
        "oltp_point_select",
        database,
        &[
            "--threads=4",
            &format!("--time={seconds}"),
            "--db-ps-mode=auto",
            "run",
        ],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", common::stderr(&out));
    let number = |label: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"));
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap()
    };
    (number("read:"), number("ignored errors:"))
}

fn prepare_sysbench_tables(port: u16, database: &str) {
    direct_ok(&format!("CREATE DATABASE IF NOT EXISTS {database}"));
    let out = sysbench(port, "oltp_point_select", database, &["cleanup"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = sysbench(port, "oltp_point_select", database, &["prepare"]);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

#[test]
fn sysbench_prepared_point_selects_run_on_the_replicas_unless_reads_are_not_split() {
    let database = "prepared_split";
    let proxy = Proxy::start();
    prepare_sysbench_tables(proxy.port, database);
    common::replicas_caught_up();
    let before = replica_executes();
    let (selects, errors) = prepared_point_selects(proxy.port, database, 5);
    let on_replicas = replica_executes() - before;
    assert_eq!(errors, 0);
    assert!(selects > 1000, "{selects} point selects");
    assert!(
        on_replicas * 100 >= selects * 95,
        "{on_replicas} of {selects} prepared point selects ran on the replicas"
    );

    // the same workload for a user whose reads are not split: none on the replicas, as
    // the proxy's own per-server counts show (other tests may execute on the replicas
    // meanwhile, so the servers' counters cannot tell)
    let unsplit =
        Proxy::start_with(|c| c.replace("name = \"app\"", "name = \"app\"\nsplit_reads = false"));
    let (selects, errors) = prepared_point_selects(unsplit.port, database, 3);
    assert_eq!(errors, 0);
    assert!(selects > 500, "{selects} point selects");
    let per_server = admin_ok(
        &unsplit,
        "SELECT srv_port, Queries FROM stats_mysql_connection_pool ORDER BY srv_port",
    );
    let queries: HashMap<u16, u64> = per_server
        .lines()
        .map(|l| {
            let mut f = l.split('\t');
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    for replica in REPLICAS {
        assert_eq!(
            queries.get(&replica).copied().unwrap_or(0),
            0,
            "{per_server}"
        );
    }
    assert!(
        queries.values().sum::<u64>() >= selects,
        "every execute ran on the writer: {per_server}"
    );
}

/// Updates a row and reads it back with prepared statements, `n` times: how many reads
/// missed the write, and which servers answered.
fn prepared_write_then_read(port: u16, user: &str, id: i64, n: i64) -> (u32, HashMap<String, u32>) {
    let mut c = RawClient::login(port, user, user).unwrap();
    let update = prepare(&mut c, "UPDATE sbtest.prepared_rows SET v = ? WHERE id = ?");
    let select = prepare(
        &mut c,
        "SELECT CAST(v AS CHAR), CAST(@@port AS CHAR) FROM sbtest.prepared_rows WHERE id = ?",
    );
    let mut stale = 0;
    let mut servers = HashMap::new();
    for i in 1..=n {
        let ok = execute(&mut c, update, &[Param::Int(i), Param::Int(id)], i == 1);
        assert_eq!(ok[0].payload[0], header::OK, "{:?}", ok[0].payload);
        let read = execute(&mut c, select, &[Param::Int(id)], i == 1);
        let (_, rows) = binary_result(&read);
        if rows[0] != i.to_string() {
            stale += 1;
        }
        let port = second_column(&read);
        *servers.entry(port).or_default() += 1;
    }
    (stale, servers)
}

/// The second (string) column of a one-row binary result of two non-NULL string columns.
fn second_column(packets: &[common::RawPacket]) -> String {
    let row = &packets[packets.len() - 2].payload;
    let at = 2; // header, NULL bitmap
    let first = row[at] as usize;
    let second = at + 1 + first;
    let len = row[second] as usize;
    String::from_utf8_lossy(&row[second + 1..second + 1 + len]).into_owned()
}

#[test]
fn prepared_reads_after_prepared_writes_see_them_on_the_replicas() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.prepared_rows (id INT PRIMARY KEY, v INT); \
         REPLACE INTO sbtest.prepared_rows VALUES (1, 0), (2, 0)",
    );
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "name = \"app_local\"",
            "name = \"app_local\"\nconsistency = \"none\"",
        )
    });
    let (stale, servers) = prepared_write_then_read(proxy.port, "app", 1, 1000);
    eprintln!("session: {servers:?}");
    assert_eq!(
        stale, 0,
        "read-your-writes missed {stale} of 1000 ({servers:?})"
    );
    let on_replicas: u32 = REPLICAS
        .iter()
        .filter_map(|p| servers.get(&p.to_string()))
        .sum();
    assert!(on_replicas > 500, "reads go to the replicas: {servers:?}");
    // without read-your-writes the same reads miss writes (so this test can fail)
    let (stale, servers) = prepared_write_then_read(proxy.port, "app_local", 2, 1000);
    eprintln!("none: {servers:?}");
    assert!(
        stale > 0,
        "no read missed its write without read-your-writes: {servers:?}"
    );
}

#[test]
fn a_prepared_call_whose_results_come_from_a_loop_completes_as_the_server_answers_it() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.rpd_rows (w INT); \
         DELETE FROM sbtest.rpd_rows; INSERT INTO sbtest.rpd_rows VALUES (1), (2)",
    );
    let out = mariadb(
        13306,
        &[
            "-uapp",
            "-papp",
            "-e",
            "DELIMITER //\nCREATE OR REPLACE PROCEDURE sbtest.rpd() \
             BEGIN FOR r IN (SELECT w FROM sbtest.rpd_rows ORDER BY w) DO SELECT r.w; END FOR; END//",
        ],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let run = |port: u16| {
        let mut c = RawClient::login(port, "app", "app").unwrap();
        let id = prepare(&mut c, "CALL sbtest.rpd()");
        let answer = c.command(
            command::STMT_EXECUTE,
            &common::binary::execute_body(id, &[], false),
        );
        assert_eq!(c.query_column("SELECT 'after'"), vec!["after"]);
        answer.into_iter().map(|p| p.payload).collect::<Vec<_>>()
    };
    let direct = run(13306);
    for consistency in ["session", "none"] {
        let proxy = Proxy::start_with(|c| {
            c.replace(
                "name = \"app\"",
                &format!("name = \"app\"\nconsistency = \"{consistency}\""),
            )
        });
        assert_eq!(run(proxy.port), direct, "consistency {consistency}");
    }
    // two result sets (count, definition, EOF, a row, EOF each) and the CALL's OK
    assert_eq!(direct.len(), 11, "{direct:?}");
}

fn digest_count(proxy: &Proxy, like: &str) -> String {
    admin_ok(
        proxy,
        &format!(
            "SELECT hostgroup, count_star, sum_rows_sent FROM stats_mysql_query_digest \
             WHERE digest_text LIKE '{like}' ORDER BY hostgroup"
        ),
    )
}

#[test]
fn executes_are_counted_logged_cached_and_refused_by_rules_loaded_after_their_prepare() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.prepared_items (id INT PRIMARY KEY, c VARCHAR(20)); \
         REPLACE INTO sbtest.prepared_items VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    );
    let dir = std::env::temp_dir().join(format!("sluice-prepared-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("queries.log");
    let _ = std::fs::remove_file(&log);
    let proxy = Proxy::start_with(|c| {
        c + &format!(
            "\n[query_log]\nmode = \"all\"\npath = \"{}\"\n\n\
             [[query_rules]]\nrule_id = 1\nmatch_pattern = \"FROM sbtest\\\\.prepared_items WHERE id = \\\\?\"\ncache_ttl = 600000\n",
            log.display()
        )
    });
    std::thread::sleep(Duration::from_millis(500)); // the replicas have the rows
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let select = prepare(&mut c, "SELECT c FROM sbtest.prepared_items WHERE id = ?");
    let answers: Vec<Vec<common::RawPacket>> = [1, 2, 1, 2, 1]
        .iter()
        .enumerate()
        .map(|(i, id)| execute(&mut c, select, &[Param::Int(*id)], i == 0))
        .collect();
    let values: Vec<String> = answers
        .iter()
        .map(|a| binary_result(a).1[0].clone())
        .collect();
    assert_eq!(values, ["one", "two", "one", "two", "one"]);
    let bytes = |a: &[common::RawPacket]| {
        a.iter()
            .map(|p| (p.seq, p.payload.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        bytes(&answers[2]),
        bytes(&answers[0]),
        "a hit is the binary result as the server sent it"
    );
    // two from the replicas (a row each), three from the cache (hostgroup -1), keyed by
    // the values
    assert_eq!(
        digest_count(&proxy, "SELECT c FROM sbtest.prepared_items WHERE id = ?"),
        "-1\t3\t0\n20\t2\t2\n"
    );
    let unprepared = prepare(
        &mut c,
        "SELECT c, ? FROM sbtest.prepared_items WHERE id < 0",
    );
    let empty = execute(&mut c, unprepared, &[Param::Text("x")], true);
    assert_eq!(binary_result(&empty).1.len(), 0);
    wait_for(
        Duration::from_secs(5),
        "the executes in the query log",
        || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("WHERE id < ?")),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let logged = text
        .lines()
        .filter(|l| l.contains("SELECT c FROM sbtest.prepared_items WHERE id = ?"))
        .count();
    assert_eq!(logged, 5, "{text}");

    // a deny rule loaded after the prepare refuses the statement's next execute
    admin_ok(
        &proxy,
        "INSERT INTO mysql_query_rules (rule_id, active, match_digest, error_msg, apply) \
         VALUES (2, 1, 'prepared_items WHERE id < ', 'no listing through prepared statements', 1); \
         LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    let refused = execute(&mut c, unprepared, &[Param::Text("x")], false);
    let err = common::expect_err(&refused[0]);
    assert_eq!(err.message, "no listing through prepared statements");
    // the other statement goes on as before
    let rows = binary_result(&execute(&mut c, select, &[Param::Int(2)], false)).1;
    assert_eq!(rows, ["two"]);
    // every execute counts as the SELECT it is (the refused one too), no prepare does
    assert_eq!(
        admin_ok(
            &proxy,
            "SELECT Total_cnt FROM stats_mysql_commands_counters WHERE Command = 'SELECT'"
        ),
        "8\n"
    );

    // another session's first execute binds its types and is answered from the cache;
    // its next execute leaves the types out, as drivers do, and must reach the server
    // with them
    let mut other = RawClient::login(proxy.port, "app", "app").unwrap();
    let same = prepare(
        &mut other,
        "SELECT c FROM sbtest.prepared_items WHERE id = ?",
    );
    let hit = execute(&mut other, same, &[Param::Int(1)], true);
    assert_eq!(binary_result(&hit).1, ["one"]);
    // the replicas' connections that were given those types are gone
    for port in REPLICAS {
        kill_app_connections(port);
    }
    let miss = execute(&mut other, same, &[Param::Int(3)], false);
    assert_eq!(
        miss[0].payload[0],
        0x01,
        "a result set of one column, not {:?}",
        String::from_utf8_lossy(&miss[0].payload)
    );
    assert_eq!(binary_result(&miss).1, ["three"]);
}

#[test]
fn a_cursor_on_a_replica_is_fetched_in_pieces_there() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let id = prepare(&mut c, "SELECT seq, CAST(@@port AS CHAR) FROM seq_1_to_25");
    let mut body = id.to_vec();
    body.push(0x01); // CURSOR_TYPE_READ_ONLY
    body.extend_from_slice(&1u32.to_le_bytes());
    let opened = c.command(command::STMT_EXECUTE, &body);
    assert_eq!(opened.last().unwrap().payload[0], header::EOF);
    let mut ports = Vec::new();
    let mut seen = 0;
    for _ in 0..3 {
        let mut fetch = id.to_vec();
        fetch.extend_from_slice(&10u32.to_le_bytes());
        let rows = c.command(command::STMT_FETCH, &fetch);
        for row in &rows[..rows.len() - 1] {
            // binary row: header, NULL bitmap, BIGINT seq, then the port as a string
            seen += 1;
            let len = usize::from(row.payload[10]);
            ports.push(String::from_utf8_lossy(&row.payload[11..11 + len]).into_owned());
        }
    }
    assert_eq!(seen, 25);
    ports.dedup();
    assert_eq!(
        ports.len(),
        1,
        "one server served the whole cursor: {ports:?}"
    );
    assert!(
        REPLICAS.iter().any(|p| p.to_string() == ports[0]),
        "the cursor was on a replica: {ports:?}"
    );
}

#[test]
fn mirrored_prepared_inserts_arrive_on_the_mirror_with_their_parameters() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.mirror_psrc (id INT PRIMARY KEY, v VARCHAR(10)); \
         DELETE FROM sbtest.mirror_psrc",
    );
    // a table on the mirror (the second replica) alone
    let on_mirror = |sql: &str| {
        let out = mariadb(13310, &["-uapp", "-papp", "-N", "-e", sql]);
        assert!(out.status.success(), "{sql}: {}", common::stderr(&out));
        stdout(&out)
    };
    on_mirror(
        "CREATE DATABASE IF NOT EXISTS sluice_mirror; \
         CREATE TABLE IF NOT EXISTS sluice_mirror.pcopy (id INT PRIMARY KEY, v VARCHAR(10)); \
         DELETE FROM sluice_mirror.pcopy",
    );
    let proxy = Proxy::start_with(|c| {
        c + &common::hostgroup_of(50, 13310)
            + r#"
[[query_rules]]
rule_id = 10
match_pattern = "^INSERT INTO sbtest\\.mirror_psrc"
mirror_hostgroup = 50
mirror_flagOUT = 100

[[query_rules]]
rule_id = 11
flag_in = 100
match_pattern = "sbtest\\.mirror_psrc"
replace_pattern = "sluice_mirror.pcopy"
"#
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let insert = prepare(&mut c, "INSERT INTO sbtest.mirror_psrc VALUES (?, ?)");
    for id in 1..=20 {
        let value = format!("v{id}");
        // the types go with the first execute only, as libmariadb sends them
        let ok = execute(
            &mut c,
            insert,
            &[Param::Int(id), Param::Text(&value)],
            id == 1,
        );
        assert_eq!(ok[0].payload[0], header::OK, "{:?}", ok[0].payload);
    }
    let expected = (1..=20).map(|i| format!("{i}\tv{i}\n")).collect::<String>();
    wait_for(Duration::from_secs(20), "the copies", || {
        on_mirror("SELECT id, v FROM sluice_mirror.pcopy ORDER BY id") == expected
    });
    assert_eq!(
        direct_ok("SELECT COUNT(*) FROM sbtest.mirror_psrc"),
        "20\n",
        "the client's own inserts went to the writer"
    );
}

#[test]
fn a_rule_timeout_kills_a_prepared_read_on_its_replica() {
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 1
match_digest = "SLEEP"
timeout_ms = 300
"#
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let sleep = prepare(&mut c, "SELECT CAST(SLEEP(?) AS CHAR)");
    let started = std::time::Instant::now();
    let answer = execute(&mut c, sleep, &[Param::Int(20)], true);
    // killed: the server fails the statement (1317), after the result's metadata
    let last = answer.last().unwrap();
    assert_eq!(common::expect_err(last).code, 1317, "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.log_shows("statement over its rule's timeout"));
    let log = proxy.log();
    let line = log
        .lines()
        .find(|l| l.contains("statement over its rule's timeout"))
        .unwrap();
    assert!(
        REPLICAS
            .iter()
            .any(|p| line.contains(&format!("127.0.0.1:{p}"))),
        "killed on a replica: {line}"
    );
    // the session goes on
    let again = prepare(&mut c, "SELECT 1");
    assert_eq!(
        binary_result(&execute(&mut c, again, &[], false)).1.len(),
        1
    );
}
