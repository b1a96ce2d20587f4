//! Multiplexing against the real cluster: many client sessions share few backend
//! connections, yet each session keeps what it set up (transactions, user variables,
//! character set, schema, LAST_INSERT_ID), and a statement waits for a connection rather
//! than failing when the server is at its limit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{admin_ok, capped, capped_pool, Proxy, RawClient};

#[test]
fn forty_sessions_share_four_connections_and_each_keeps_its_own_state() {
    let proxy = Proxy::start_with(capped(4));
    let port = proxy.port;
    let sessions: Vec<_> = (0..40)
        .map(|i| {
            thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                c.query(&format!("SET @mine = {i}"));
                for _ in 0..10 {
                    assert_eq!(
                        c.query_column("SELECT @mine"),
                        [i.to_string()],
                        "user variable"
                    );
                }
                drop(c);
                // a clean session: point selects only, multiplexed
                let mut c = RawClient::login(port, "app", "app").unwrap();
                for _ in 0..20 {
                    assert_eq!(c.query_column("SELECT 1 + 1"), ["2"]);
                }
            })
        })
        .collect();
    for s in sessions {
        s.join().unwrap();
    }
    // the cap counts the monitor's own connection to the node too
    common::assert_writer_connections_at_most(&proxy, 4);
}

#[test]
fn transactions_last_insert_id_charset_and_schema_survive_multiplexing() {
    let proxy = Proxy::start_with(capped(3));
    common::direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.mux_ids (id INT AUTO_INCREMENT PRIMARY KEY, who INT)",
    );
    let port = proxy.port;
    let workers: Vec<_> = (0..6)
        .map(|w| {
            thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                if w % 2 == 0 {
                    c.query("SET NAMES latin1");
                }
                for round in 0..15 {
                    // LAST_INSERT_ID right after the insert, with others inserting too
                    c.query(&format!("INSERT INTO mux_ids (who) VALUES ({w})"));
                    let id = c.query_column("SELECT LAST_INSERT_ID()")[0].clone();
                    assert_eq!(
                        c.query_column(&format!("SELECT who FROM mux_ids WHERE id = {id}")),
                        [w.to_string()],
                        "worker {w} round {round}"
                    );
                    // a transaction keeps its connection: its own row is visible inside
                    c.query("BEGIN");
                    c.query(&format!("INSERT INTO mux_ids (who) VALUES ({})", 1000 + w));
                    let mine = c.query_column(&format!(
                        "SELECT COUNT(*) FROM mux_ids WHERE who = {}",
                        1000 + w
                    ));
                    c.query("ROLLBACK");
                    assert_eq!(mine, ["1"], "uncommitted row seen inside its transaction");
                    let charset = if w % 2 == 0 { "latin1" } else { "utf8mb4" };
                    assert_eq!(c.query_column("SELECT @@character_set_client"), [charset]);
                    assert_eq!(c.query_column("SELECT DATABASE()"), ["sbtest"]);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn a_statement_waits_for_a_connection_and_gives_up_with_1040_after_the_timeout() {
    // two connections to the node: the monitor's and one for every session; a statement
    // waits at most 300 ms for it
    let proxy = Proxy::start_with(capped_pool(2, "wait_timeout_ms = 300"));
    // sessions log in while the connection is free; then one holds it in a transaction
    let mut holder = RawClient::login(proxy.port, "app", "app").unwrap();
    let mut waiter = RawClient::login(proxy.port, "app", "app").unwrap();
    holder.query("BEGIN");
    holder.query("SELECT 1");
    let started = Instant::now();
    let packets = waiter.query("SELECT 2");
    let err = common::expect_err(&packets[0]);
    assert_eq!(err.code, 1040, "{err:?}");
    assert!(err.message.contains("max_connections"), "{}", err.message);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // once the transaction ends the connection comes back and the waiter is served
    holder.query("COMMIT");
    assert_eq!(waiter.query_column("SELECT 3"), ["3"]);
    // short waits succeed: three sessions queue behind each other on one connection
    let port = proxy.port;
    let queued: Vec<_> = (0..3)
        .map(|_| {
            thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                c.query_column("SELECT SLEEP(0.05)")
            })
        })
        .collect();
    for q in queued {
        assert_eq!(q.join().unwrap(), ["0"]);
    }
    // the waits are counted: the one that gave up, and those served after waiting
    let stats = admin_ok(
        &proxy,
        "SELECT Variable_Name, Variable_Value FROM stats_mysql_global WHERE Variable_Name LIKE 'Pool_wait%' ORDER BY 1",
    );
    let value = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} missing from {stats}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("Pool_wait_timeouts"), 1, "{stats}");
    assert!(value("Pool_waits") >= 2, "{stats}");
    assert!(value("Pool_wait_us") >= 300_000, "{stats}");
    assert_eq!(value("Pool_waiting"), 0, "{stats}");
}

#[test]
fn idle_connections_of_another_user_make_room_at_a_full_server() {
    let proxy = Proxy::start_with(capped(3));
    // two bound sessions of `app` fill the two connections sessions may have, then leave
    // them idle in the pool (logged in as `app`)
    let mut a = RawClient::login(proxy.port, "app", "app").unwrap();
    let mut b = RawClient::login(proxy.port, "app", "app").unwrap();
    a.query("SET @bound = 1");
    b.query("SET @bound = 2");
    drop((a, b));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut other = RawClient::login(proxy.port, "app_local", "app_local").unwrap();
    assert_eq!(
        other.query_column("SELECT CURRENT_USER()"),
        ["app_local@127.0.0.1"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn session_variables_follow_each_session_onto_shared_connections() {
    // twelve sessions on three connections: were a SET to bind its session to a
    // connection, nine of them would wait for one and fail with 1040
    let proxy = Proxy::start_with(capped_pool(3, "wait_timeout_ms = 3000"));
    let port = proxy.port;
    let ready = Arc::new(AtomicUsize::new(0));
    let sessions: Vec<_> = (0..12)
        .map(|i| {
            let ready = ready.clone();
            thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                let zone = format!("+{:02}:00", i % 10);
                let mode = if i % 2 == 0 {
                    "ANSI_QUOTES"
                } else {
                    "NO_ZERO_DATE"
                };
                let set = format!("SET time_zone = '{zone}', @@session.sql_mode = '{mode}'");
                let reply = c.query(&set);
                assert_ne!(reply[0].payload[0], 0xff, "{set} failed");
                // all twelve hold their settings at once before any goes on
                ready.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(10);
                while ready.load(Ordering::SeqCst) < 12 && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(10));
                }
                let want = format!("{zone}|{mode}");
                for round in 0..15 {
                    assert_eq!(
                        c.query_column("SELECT CONCAT(@@time_zone, '|', @@sql_mode)"),
                        std::slice::from_ref(&want),
                        "session {i}, round {round}"
                    );
                }
                // a later SET of one variable keeps the other
                c.query("SET SESSION time_zone = DEFAULT");
                let system = c.query_column("SELECT @@global.time_zone")[0].clone();
                assert_eq!(
                    c.query_column("SELECT CONCAT(@@time_zone, '|', @@sql_mode)"),
                    [format!("{system}|{mode}")],
                    "session {i} after DEFAULT"
                );
            })
        })
        .collect();
    for s in sessions {
        s.join().unwrap();
    }
    // a new session on a connection others changed sees the server's defaults
    let mut fresh = RawClient::login(port, "app", "app").unwrap();
    let defaults = common::direct_ok("SELECT CONCAT(@@global.time_zone, '|', @@global.sql_mode)")
        .trim()
        .to_string();
    for _ in 0..6 {
        assert_eq!(
            fresh.query_column("SELECT CONCAT(@@time_zone, '|', @@sql_mode)"),
            std::slice::from_ref(&defaults)
        );
    }
    common::assert_writer_connections_at_most(&proxy, 3);
}

#[test]
fn a_session_that_sets_its_time_zone_still_reads_from_the_replicas() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    c.query("SET time_zone = '+03:00'");
    let mut ports = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let row = c.query_column("SELECT CONCAT(@@port, ' ', @@time_zone)")[0].clone();
        let (port, zone) = row.split_once(' ').unwrap();
        assert_eq!(zone, "+03:00", "on {port}");
        ports.insert(port.to_string());
    }
    assert!(
        ports.iter().any(|p| p == "13309" || p == "13310"),
        "reads stayed on {ports:?}"
    );
}

#[test]
fn state_set_where_the_proxy_cannot_see_it_keeps_the_session_on_its_connection() {
    // a procedure sets a user variable: nothing in `CALL …` says so, but the server flags
    // the state change to a client that negotiated session tracking
    common::direct_ok("CREATE PROCEDURE IF NOT EXISTS sbtest.mux_remember(v INT) SET @mux_v = v");
    let proxy = Proxy::start_with(capped_pool(3, "track_session_state = true"));
    let track = sluice::protocol::constants::capability::SESSION_TRACK;
    let mut a = RawClient::login_with(proxy.port, "app", "app", track).unwrap();
    let mut b = RawClient::login_with(proxy.port, "app", "app", track).unwrap();
    for round in 0..5 {
        a.query("CALL mux_remember(1)");
        b.query("CALL mux_remember(2)");
        assert_eq!(a.query_column("SELECT @mux_v"), ["1"], "round {round}");
        assert_eq!(b.query_column("SELECT @mux_v"), ["2"], "round {round}");
    }
}

#[test]
fn autocommit_off_holds_the_connection_until_it_is_back_on() {
    common::direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.mux_autocommit (id INT PRIMARY KEY, who INT)",
    );
    common::direct_ok("DELETE FROM sbtest.mux_autocommit");
    let proxy = Proxy::start_with(capped(4));
    // `SET autocommit = 1`, which many drivers send at connect, binds nothing: twelve
    // such sessions hold their connections' worth at once without waiting
    let port = proxy.port;
    let mut polite: Vec<_> = (0..12)
        .map(|_| {
            let mut c = RawClient::login(port, "app", "app").unwrap();
            assert_eq!(c.query_column("SELECT 1 + @@autocommit"), ["2"]);
            c
        })
        .collect();
    for c in &mut polite {
        let reply = c.query("SET autocommit = 1");
        assert_eq!(reply[0].payload[0], 0, "SET autocommit = 1 failed");
    }
    for c in &mut polite {
        assert_eq!(c.query_column("SELECT 1 + @@autocommit"), ["2"]);
    }
    // autocommit off: the session's writes stay its own until it commits
    let mut writer = RawClient::login(port, "app", "app").unwrap();
    let mut reader = RawClient::login(port, "app", "app").unwrap();
    writer.query("SET autocommit = 0");
    writer.query("INSERT INTO mux_autocommit VALUES (1, 1)");
    for c in polite.iter_mut().take(3) {
        c.query_column("SELECT 1");
    }
    assert_eq!(
        writer.query_column("SELECT COUNT(*) FROM mux_autocommit"),
        ["1"],
        "the writer sees its uncommitted row"
    );
    assert_eq!(
        reader.query_column("SELECT COUNT(*) FROM mux_autocommit"),
        ["0"],
        "nobody else does"
    );
    writer.query("SET autocommit = 1");
    assert_eq!(
        reader.query_column("SELECT COUNT(*) FROM mux_autocommit"),
        ["1"],
        "turning autocommit back on committed it"
    );
    assert_eq!(writer.query_column("SELECT @@autocommit"), ["1"]);
}

#[test]
fn temporary_tables_of_the_same_name_stay_with_their_sessions() {
    let proxy = Proxy::start_with(capped(5));
    let port = proxy.port;
    let sessions: Vec<_> = (0..8)
        .map(|i| {
            thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                // sessions without temporary tables share the connections meanwhile
                for _ in 0..5 {
                    assert_eq!(c.query_column("SELECT 1"), ["1"]);
                }
                c.query("CREATE TEMPORARY TABLE mux_tmp (who INT)");
                c.query(&format!("INSERT INTO mux_tmp VALUES ({i})"));
                for round in 0..10 {
                    assert_eq!(
                        c.query_column("SELECT who FROM mux_tmp"),
                        [i.to_string()],
                        "session {i}, round {round}"
                    );
                }
            })
        })
        .collect();
    for s in sessions {
        s.join().unwrap();
    }
}
