//! Prepared statements under multiplexing, against the real cluster: sessions that
//! prepare share few backend connections, a statement executes on whatever connection its
//! session has (prepared there first, with the parameter types the client bound earlier),
//! long data stays where it was sent, and what the proxy answers itself is what MariaDB
//! answers.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use common::binary::{binary_result, execute, execute_body, prepare, Param};
use common::{admin_ok, capped, capped_pool, direct_ok, expect_err, Proxy, RawClient, RawPacket};
use sluice::protocol::constants::{command, header};

fn global(proxy: &Proxy, name: &str) -> u64 {
    let sql =
        format!("SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = '{name}'");
    admin_ok(proxy, &sql).trim().parse().unwrap()
}

fn payloads(packets: &[RawPacket]) -> Vec<Vec<u8>> {
    packets.iter().map(|p| p.payload.clone()).collect()
}

fn one_value(packets: &[RawPacket]) -> String {
    let (_, rows) = binary_result(packets);
    assert_eq!(rows.len(), 1);
    rows[0].clone()
}

#[test]
fn connector_python_prepared_cursors_round_trip_every_type_on_four_connections() {
    let proxy = Proxy::start_with(capped(4));
    let out = std::process::Command::new(common::python())
        .arg(common::repo().join("tests/driver/connector.py"))
        .arg(proxy.port.to_string())
        .arg("prepared_types")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nproxy log:\n{}",
        common::stderr(&out),
        proxy.log()
    );
    assert!(common::stdout(&out).contains("prepared types ok: 500 rows"));
    let executes = global(&proxy, "Com_frontend_stmt_execute");
    assert!(
        executes >= 1000,
        "{executes} executes went through the proxy"
    );
}

#[test]
fn fifty_preparing_sessions_share_four_connections_with_their_own_parameter_types() {
    let proxy = Proxy::start_with(capped(4));
    let port = proxy.port;
    let together = Arc::new(Barrier::new(50));
    let sessions: Vec<_> = (0..50)
        .map(|i: i64| {
            let together = together.clone();
            thread::spawn(move || {
                let mut c = RawClient::login(port, "app", "app").unwrap();
                // every session prepares the same text: one statement in the proxy's cache
                let id = prepare(&mut c, "SELECT CONCAT(?, '/', ?)");
                together.wait();
                for round in 0..20i64 {
                    // half the sessions bind integers, half strings; after the first
                    // execute they leave the types out, so a connection where the other
                    // half bound theirs must be given this session's again
                    let (a, b) = (format!("{i}"), format!("{round}"));
                    let params = if i % 2 == 0 {
                        [Param::Int(i), Param::Int(round)]
                    } else {
                        [Param::Text(&a), Param::Text(&b)]
                    };
                    let got = one_value(&execute(&mut c, id, &params, round == 0));
                    assert_eq!(got, format!("{i}/{round}"), "session {i} round {round}");
                }
            })
        })
        .collect();
    for s in sessions {
        s.join().unwrap();
    }
    common::assert_writer_connections_at_most(&proxy, 4);
    assert_eq!(global(&proxy, "Com_frontend_stmt_execute"), 1000);
    assert_eq!(global(&proxy, "Com_frontend_stmt_prepare"), 50);
    assert_eq!(
        global(&proxy, "Stmt_Cached"),
        1,
        "one text, one user, one schema"
    );
}

/// Session `holder` takes the only idle connection (a transaction keeps it), so the other
/// session's next statement runs on a connection of its own.
fn hold_the_idle_connection(port: u16) -> RawClient {
    let mut holder = RawClient::login(port, "app", "app").unwrap();
    holder.query("BEGIN");
    assert_eq!(holder.query_column("SELECT 1"), ["1"]);
    holder
}

#[test]
fn a_statement_follows_its_session_to_another_connection_and_sees_an_altered_table() {
    direct_ok(
        "CREATE OR REPLACE TABLE sbtest.ps_alter (id INT PRIMARY KEY, a VARCHAR(10)); \
         INSERT INTO sbtest.ps_alter VALUES (1, 'one')",
    );
    // the server's own answer, on one connection: the execute after the ALTER has the
    // new column
    let mut direct = RawClient::login(common::WRITER_PORT, "app", "app").unwrap();
    direct.query("USE sbtest");
    let direct_id = prepare(&mut direct, "SELECT * FROM ps_alter WHERE id = ?");
    let before_alter = payloads(&execute(&mut direct, direct_id, &[Param::Int(1)], true));
    assert_eq!(before_alter[0], [2], "two columns");

    let proxy = Proxy::start_with(capped(8));
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let id = prepare(&mut c, "SELECT * FROM ps_alter WHERE id = ?");
    let got = payloads(&execute(&mut c, id, &[Param::Int(1)], true));
    assert_eq!(got, before_alter);
    let before = global(&proxy, "Stmt_reprepares");

    direct_ok("ALTER TABLE sbtest.ps_alter ADD COLUMN b INT NOT NULL DEFAULT 7");
    let expected = payloads(&execute(&mut direct, direct_id, &[Param::Int(1)], false));
    assert_eq!(expected[0], [3], "three columns");

    let _holder = hold_the_idle_connection(proxy.port);
    // types left out: the new connection gets the ones bound by the first execute
    let got = payloads(&execute(&mut c, id, &[Param::Int(1)], false));
    assert_eq!(
        got, expected,
        "byte for byte what the server answers after the ALTER"
    );
    assert!(
        global(&proxy, "Stmt_reprepares") > before,
        "prepared on the new connection"
    );
    assert_eq!(global(&proxy, "Stmt_definitions_changed"), 1);
    // one client statement, prepared on both connections
    let info = admin_ok(
        &proxy,
        "SELECT username, schemaname, ref_count_client, ref_count_server, num_params, query \
         FROM stats_mysql_prepared_statements_info",
    );
    assert_eq!(
        info,
        "app\tsbtest\t1\t2\t1\tSELECT * FROM ps_alter WHERE id = ?\n"
    );
    direct_ok("DROP TABLE sbtest.ps_alter");
}

/// What a raw client gets for `cmd` on statement `id`.
fn answer(c: &mut RawClient, cmd: u8, body: &[u8]) -> (u16, String, String) {
    let reply = c.command(cmd, body);
    let err = expect_err(&reply[0]);
    (err.code, err.sql_state, err.message)
}

#[test]
fn unknown_and_closed_statements_get_the_servers_own_errors() {
    let proxy = Proxy::start();
    for port in [common::WRITER_PORT, proxy.port] {
        let mut c = RawClient::login(port, "app", "app").unwrap();
        let id = prepare(&mut c, "SELECT 1");
        let mut close = vec![command::STMT_CLOSE];
        close.extend_from_slice(&id);
        c.write(0, &close);
        // the server numbers from 1 on each connection, so do sessions
        let closed = answer(&mut c, command::STMT_EXECUTE, &execute_body(id, &[], false));
        assert_eq!(
            closed,
            (
                1243,
                "HY000".into(),
                format!(
                    "Unknown prepared statement handler ({}) given to mysqld_stmt_execute",
                    u32::from_le_bytes(id)
                )
            ),
            "port {port}"
        );
        let mut fetch = 77u32.to_le_bytes().to_vec();
        fetch.extend_from_slice(&1u32.to_le_bytes());
        let unknown = answer(&mut c, command::STMT_FETCH, &fetch);
        assert_eq!(unknown.0, 1243, "port {port}: {unknown:?}");
        let unknown = answer(&mut c, command::STMT_RESET, &77u32.to_le_bytes());
        assert_eq!(unknown.0, 1243, "port {port}: {unknown:?}");
        assert!(unknown.2.ends_with("mysqld_stmt_reset"), "{unknown:?}");
        // a fetch without a cursor, and a reset with nothing to reset
        let id = prepare(&mut c, "SELECT '2'");
        let mut fetch = id.to_vec();
        fetch.extend_from_slice(&1u32.to_le_bytes());
        let no_cursor = answer(&mut c, command::STMT_FETCH, &fetch);
        assert_eq!(no_cursor.0, 1421, "port {port}: {no_cursor:?}");
        let reset = c.command(command::STMT_RESET, &id);
        assert_eq!(reset[0].payload[0], header::OK, "port {port}");
        assert_eq!(one_value(&execute(&mut c, id, &[], false)), "2");
    }
}

#[test]
fn ten_thousand_distinct_prepares_stay_under_the_per_connection_cap() {
    let proxy = Proxy::start_with(capped_pool(4, "max_prepared_per_connection = 20"));
    let server_count = || -> u64 {
        let out = direct_ok("SHOW GLOBAL STATUS LIKE 'Prepared_stmt_count'");
        out.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let baseline = server_count();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let mut ids = Vec::new();
    let mut highest = 0;
    for i in 0..10_000 {
        ids.push(prepare(&mut c, &format!("SELECT CONCAT('n', {i})")));
        if i % 1000 == 999 {
            highest = highest.max(server_count());
        }
    }
    // 4 connections × 20, and whatever the tests running beside this one hold
    assert!(
        highest <= baseline + 80 + 200,
        "the server held {highest} prepared statements (before: {baseline})"
    );
    assert!(global(&proxy, "Stmt_backend_evictions") >= 9_900);
    // every statement the client holds still runs: prepared again where it is needed
    for i in [0usize, 17, 5_000, 9_999] {
        assert_eq!(
            one_value(&execute(&mut c, ids[i], &[], false)),
            format!("n{i}")
        );
    }
}

#[test]
fn long_data_stays_with_the_connection_it_was_sent_to() {
    direct_ok("CREATE OR REPLACE TABLE sbtest.ps_blob (id INT PRIMARY KEY, body LONGBLOB)");
    let proxy = Proxy::start_with(capped(8));
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let id = prepare(&mut c, "INSERT INTO ps_blob VALUES (?, ?)");
    let long_data = |c: &mut RawClient, chunk: &[u8]| {
        let mut p = vec![command::STMT_SEND_LONG_DATA];
        p.extend_from_slice(&id);
        p.extend_from_slice(&1u16.to_le_bytes());
        p.extend_from_slice(chunk);
        c.write(0, &p);
    };
    // a small chunk, another session busy in between, then a chunk large enough to be
    // streamed by the proxy rather than held
    let small = vec![b'a'; 100_000];
    let large = vec![b'b'; 3 << 20];
    long_data(&mut c, &small);
    let _holder = hold_the_idle_connection(proxy.port);
    long_data(&mut c, &large);
    // parameter 1 comes from long data: its type is bound, its value not sent
    let mut body = id.to_vec();
    body.push(0);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.push(0); // NULL bitmap
    body.push(1);
    body.extend_from_slice(&[0x03, 0x00, 0xfc, 0x00]); // LONG, BLOB
    body.extend_from_slice(&1i32.to_le_bytes());
    let reply = c.command(command::STMT_EXECUTE, &body);
    assert_eq!(
        reply[0].payload[0],
        header::OK,
        "{:?}",
        String::from_utf8_lossy(&reply[0].payload)
    );
    let stored = direct_ok(
        "SELECT LENGTH(body), MD5(body) = MD5(CONCAT(REPEAT('a', 100000), REPEAT('b', 3 << 20))) \
         FROM sbtest.ps_blob WHERE id = 1",
    );
    assert_eq!(stored, format!("{}\t1\n", small.len() + large.len()));
    direct_ok("DROP TABLE sbtest.ps_blob");
}
