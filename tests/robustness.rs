//! Bad input and bad luck: malformed packets, floods, slow clients, oversized packets, dead
//! backends, a backend connection killed under a session. The proxy must answer with a
//! clear error and keep serving everyone else.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{direct, expect_err, mariadb, stderr, stdout, Proxy, RawClient};
use sluice::protocol::auth::{native_proof, ProvenKey, CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};
use sluice::protocol::constants::{command, header};
use sluice::protocol::handshake::{AuthSwitchRequest, HandshakeResponse};

fn still_serves(proxy: &Proxy) {
    let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", "SELECT 'alive'"]);
    assert!(
        out.status.success(),
        "proxy no longer serves: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "alive\n");
}

#[test]
fn garbage_instead_of_a_handshake_is_dropped() {
    let mut proxy = Proxy::start();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xFF; 300][..],
        &[0x01, 0x00, 0x00, 0x01, 0x00][..],
        &[][..],
    ] {
        let mut c = RawClient::connect(proxy.port);
        c.greeting();
        c.stream.write_all(garbage).unwrap();
        c.stream.shutdown(std::net::Shutdown::Write).unwrap();
        // whatever the proxy answers, it ends the connection
        while c.read().is_some() {}
    }
    assert!(proxy.is_alive());
    still_serves(&proxy);
}

#[test]
fn packets_with_wrong_sequence_ids_are_refused() {
    let proxy = Proxy::start();
    let mut c = RawClient::connect(proxy.port);
    c.greeting();
    c.write(7, &[0u8; 40]); // the handshake response must be packet 1
    assert!(c.read().is_none(), "connection must be closed");

    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    c.write(3, b"\x03SELECT 1"); // a command must start at 0
    let err = expect_err(&c.read().unwrap());
    assert_eq!(err.code, 1156);
    still_serves(&proxy);
}

#[test]
fn a_length_that_lies_does_not_hang_or_crash_the_proxy() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    // announces 1000 bytes, sends 9, then closes
    c.stream
        .write_all(&[
            0xE8, 0x03, 0x00, 0x00, 0x03, b'S', b'E', b'L', b'E', b'C', b'T', b' ', b'1',
        ])
        .unwrap();
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.read().is_none());
    still_serves(&proxy);
}

#[test]
fn oversized_packets_get_1153_before_they_are_buffered() {
    let proxy =
        Proxy::start_with(|c| c.replacen("listen =", "max_allowed_packet = 1048576\nlisten =", 1));
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    // only the header of a 16 MiB packet: the proxy must refuse from the header alone
    c.stream.write_all(&[0xFF, 0xFF, 0xFF, 0x00, 0x03]).unwrap();
    let err = expect_err(&c.read().expect("an error, not a hang"));
    assert_eq!(err.code, 1153);
    assert!(c.read().is_none(), "the connection is closed after 1153");
    still_serves(&proxy);
}

#[test]
fn flood_of_500_connections_then_the_next_client_is_served() {
    // this flood's wrong passwords all come from 127.0.0.1: throttling (tested on its own)
    // would otherwise block the address for the good logins too
    let mut proxy = Proxy::start_with(|c| c.replace("max_failures = 10", "max_failures = 100000"));
    let port = proxy.port;
    let threads: Vec<_> = (0..500)
        .map(|i| {
            std::thread::spawn(move || match i % 3 {
                // a full login and a query
                0 => {
                    let mut c = RawClient::login(port, "app", "app").expect("login under load");
                    assert_eq!(c.query_column("SELECT 7"), vec!["7"]);
                    true
                }
                // connect and leave at once
                1 => {
                    drop(RawClient::connect(port));
                    true
                }
                // a wrong password
                _ => RawClient::login(port, "app", "wrong").is_err(),
            })
        })
        .collect();
    let ok = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(ok, 500);
    assert!(proxy.is_alive());
    still_serves(&proxy);
}

#[test]
fn silent_clients_are_closed_after_the_handshake_timeout() {
    let proxy =
        Proxy::start_with(|c| c.replacen("listen =", "handshake_timeout_ms = 500\nlisten =", 1));
    let started = Instant::now();
    let mut silent: Vec<RawClient> = (0..50).map(|_| RawClient::connect(proxy.port)).collect();
    for c in &mut silent {
        c.greeting();
        assert!(c.read().is_none(), "a silent client must be disconnected");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    still_serves(&proxy);
}

#[test]
fn connections_beyond_the_limit_get_1040() {
    let proxy =
        Proxy::start_with(|c| c.replacen("listen =", "max_client_connections = 3\nlisten =", 1));
    // the start-up probe's connection holds a client slot until the proxy has seen it close
    let connected = || {
        common::mariadb_ok(
            &proxy,
            proxy.admin_port,
            "admin",
            "SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = 'Client_Connections_connected'",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while connected().trim() != "0" {
        assert!(
            Instant::now() < deadline,
            "clients still connected: {}",
            connected()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held: Vec<RawClient> = (0..3)
        .map(|_| RawClient::login(proxy.port, "app", "app").unwrap())
        .collect();
    let mut extra = RawClient::connect(proxy.port);
    let err = expect_err(&extra.read().unwrap());
    assert_eq!(err.code, 1040);
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    still_serves(&proxy);
}

#[test]
fn a_dead_backend_gives_a_clear_error_naming_the_hostgroup() {
    // app_local's hostgroup 50 holds one server, where nothing listens
    let proxy = Proxy::start_with(|c| {
        let c = c.replace(
            "# SELECT PASSWORD('app_local')\ndefault_hostgroup = 10",
            "# SELECT PASSWORD('app_local')\ndefault_hostgroup = 50",
        );
        format!("{c}\n[[servers]]\nhost = \"127.0.0.1\"\nport = 1\nhostgroup = 50\n")
    });
    let started = Instant::now();
    let out = mariadb(
        proxy.port,
        &["-uapp_local", "-papp_local", "-e", "SELECT 1"],
    );
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("ERROR 9001"), "{message}");
    assert!(message.contains("hostgroup 50"), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_backend_connection_killed_under_a_session_with_nothing_on_it_is_replaced_unseen() {
    // without multiplexing the session keeps its writer connection, with nothing on it
    // but its schema: losing it loses nothing
    let proxy = Proxy::start_with(|c| {
        c.replacen("[throttle]", "[pool]\nmultiplex = false\n\n[throttle]", 1)
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    // a locking read runs on the writer connection; it finds itself in the process list
    // (CONNECTION_ID() would bind the session: the id must stay valid)
    let own_id = "SELECT ID FROM information_schema.PROCESSLIST \
                  WHERE INFO LIKE '%find me%' AND COMMAND = 'Query' FOR UPDATE";
    let thread_id = c.query_column(own_id)[0].clone();
    let out = direct(&["-e", &format!("KILL {thread_id}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(100)); // the close reaches the proxy
                                                    // the next statement runs on a new backend connection, with the session's schema
    let new_id = c.query_column(own_id)[0].clone();
    assert_ne!(new_id, thread_id);
    assert_eq!(c.query_column("SELECT DATABASE()"), vec!["sbtest"]);
}

#[test]
fn a_session_whose_state_dies_with_its_backend_connection_is_closed_like_the_servers() {
    let proxy = Proxy::start();
    for bind in ["SET @keep = 42", "START TRANSACTION"] {
        let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
        c.query(bind);
        let thread_id = c.query_column("SELECT CONNECTION_ID()")[0].clone();
        let out = direct(&["-e", &format!("KILL {thread_id}")]);
        assert!(out.status.success(), "{}", stderr(&out));
        // the session's variable or transaction is gone: an error, then no session, as
        // from the server itself — never a fresh connection where @keep is NULL
        let packets = c.query("SELECT @keep");
        let err = expect_err(&packets[0]);
        assert_eq!(err.code, 1152, "{bind}: {err}");
        assert_eq!(err.sql_state, "08S01");
        assert!(
            c.read().is_none(),
            "{bind}: the client connection is closed"
        );
    }
    still_serves(&proxy);
}

#[test]
fn the_mariadb_client_reads_the_lost_connection_error() {
    let proxy = Proxy::start();
    let port = proxy.port;
    // a session bound by its variable sleeps on the writer; its connection is killed
    let client = std::thread::spawn(move || {
        mariadb(
            port,
            &[
                "-uapp",
                "-papp",
                "-e",
                "SET @keep = 42; DO SLEEP(5); SELECT @keep",
            ],
        )
    });
    let started = Instant::now();
    let thread_id = loop {
        let found = direct(&[
            "-N",
            "-e",
            "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = 'DO SLEEP(5)'",
        ]);
        let id = stdout(&found).trim().to_owned();
        if !id.is_empty() {
            break id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sleep never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = direct(&["-e", &format!("KILL {thread_id}")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = client.join().unwrap();
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(error.contains("ERROR 1152 (08S01)"), "{error}");
    assert!(error.contains("Lost connection to backend"), "{error}");
    still_serves(&proxy);
}

#[test]
fn mysql8_style_client_is_switched_to_native_password() {
    let proxy = Proxy::start();
    let mut c = RawClient::connect(proxy.port);
    let hs = c.greeting();
    // what a MySQL 8 client sends first: a caching_sha2_password answer
    let response = HandshakeResponse {
        capabilities: common::client_capabilities(),
        max_packet: 1 << 24,
        charset: 255,
        username: "app".into(),
        auth_response: vec![0x5A; 32],
        database: None,
        auth_plugin: Some(CACHING_SHA2_PASSWORD.into()),
        connect_attrs: None,
        zstd_level: None,
    };
    let mut payload = BytesMut::new();
    response.encode(&mut payload);
    c.write(1, &payload);
    let switch = c.read().unwrap();
    assert_eq!(switch.seq, 2);
    let switch = AuthSwitchRequest::decode(&switch.payload).expect("an AuthSwitchRequest");
    assert_eq!(switch.plugin, NATIVE_PASSWORD);
    assert_eq!(
        switch.data, hs.scramble,
        "the switch reuses the greeting's nonce"
    );
    c.write(
        3,
        &native_proof(&ProvenKey::of_password(b"app"), &switch.data),
    );
    let ok = c.read().unwrap();
    assert_eq!((ok.seq, ok.payload[0]), (4, header::OK));
    assert_eq!(
        c.query_column("SELECT CURRENT_USER()"),
        vec!["app@127.0.0.1"]
    );
}

/// What the servers were sent through the proxy so far.
fn queries_sent(proxy: &Proxy) -> u64 {
    common::admin_ok(
        proxy,
        "SELECT SUM(Queries) FROM stats_mysql_connection_pool",
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn a_ping_is_answered_by_the_proxy_unless_the_session_holds_state_on_a_server() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    // `pings` pings answered OK; how many of them reached a server
    let servers_pinged = |c: &mut RawClient, pings: u64| {
        let before = queries_sent(&proxy);
        for _ in 0..pings {
            assert_eq!(c.command(command::PING, b"")[0].payload[0], header::OK);
        }
        queries_sent(&proxy) - before
    };
    assert_eq!(servers_pinged(&mut c, 20), 0, "no server was pinged");
    // autocommit off (Connector/Python's default) opens nothing until a statement does
    c.query("CREATE TABLE IF NOT EXISTS sbtest.robust_ping (a INT)");
    c.query("SET autocommit = 0");
    assert_eq!(servers_pinged(&mut c, 1), 0, "no server was pinged");
    c.query("SELECT a FROM sbtest.robust_ping FOR UPDATE");
    assert_eq!(
        servers_pinged(&mut c, 1),
        1,
        "the open transaction's server was pinged"
    );
    c.query("COMMIT");
    c.query("SET autocommit = 1");
    // a user variable binds the session to its connection: that server answers
    c.query("SET @bound = 1");
    assert_eq!(
        servers_pinged(&mut c, 1),
        1,
        "the bound connection's server was pinged"
    );
}

#[test]
fn field_list_statistics_ping_and_reset_connection_are_forwarded() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    c.query("CREATE TABLE IF NOT EXISTS robust_fields (a INT, b VARCHAR(3))");
    let fields = c.command(command::FIELD_LIST, b"robust_fields\0");
    assert_eq!(fields.len(), 3, "two column definitions and an EOF");
    let stats = c.command(command::STATISTICS, b"");
    assert!(String::from_utf8_lossy(&stats[0].payload).contains("Uptime"));
    assert_eq!(c.command(command::PING, b"")[0].payload[0], header::OK);
    c.query("SET @marker = 5");
    assert_eq!(
        c.command(command::RESET_CONNECTION, b"")[0].payload[0],
        header::OK
    );
    let packets = c.query("SELECT @marker IS NULL");
    assert_eq!(
        packets[3].payload,
        vec![1, b'1'],
        "user variables were reset"
    );
    c.query("DROP TABLE robust_fields");
    // replication and shutdown commands do not pass
    let err = expect_err(&c.command(command::SHUTDOWN, b"")[0]);
    assert_eq!(err.code, 1047);
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let mut proxy = Proxy::start();
    let mut idle = RawClient::login(proxy.port, "app", "app").unwrap();
    proxy.signal("TERM");
    // the idle session is told and closed
    let err = expect_err(&idle.read().expect("a shutdown error"));
    assert_eq!(err.code, 1053);
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(true));
}

#[test]
fn sighup_reloads_and_a_bad_config_is_refused() {
    let proxy = Proxy::start();
    let path = proxy.dir.join("sluice.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    // break the file: the reload must be refused and the proxy keep serving
    std::fs::write(
        &path,
        good.replace("default_hostgroup = 10", "default_hostgroup = 77"),
    )
    .unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_shows("reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    still_serves(&proxy);
    // a good change applies: app_local gets a different default schema
    std::fs::write(
        &path,
        good.replace(
            "name = \"app_local\"",
            "name = \"app_local\"\ndefault_schema = \"mysql\"",
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.log_shows("configuration reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = mariadb(
        proxy.port,
        &["-uapp_local", "-papp_local", "-e", "SELECT DATABASE()"],
    );
    assert_eq!(stdout(&out), "mysql\n", "{}", stderr(&out));
}

#[test]
fn prepared_statement_cursor_fetch_long_data_and_reset() {
    use sluice::protocol::constants::status;
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();

    // prepare a statement without parameters over MariaDB's sequence engine
    let prepared = c.command(command::STMT_PREPARE, b"SELECT seq FROM seq_1_to_25");
    assert_eq!(
        prepared[0].payload[0],
        header::OK,
        "{:?}",
        prepared[0].payload
    );
    let stmt_id = prepared[0].payload[1..5].to_vec();

    // execute with a read-only cursor: metadata only, the EOF says a cursor exists
    let mut execute = stmt_id.clone();
    execute.push(0x01); // CURSOR_TYPE_READ_ONLY
    execute.extend_from_slice(&1u32.to_le_bytes());
    let response = c.command(command::STMT_EXECUTE, &execute);
    let eof = &response.last().unwrap().payload;
    assert_eq!(eof[0], header::EOF);
    assert_ne!(
        u16::from_le_bytes([eof[3], eof[4]]) & status::CURSOR_EXISTS,
        0
    );

    // fetch 10 rows, then the rest
    let mut fetch = stmt_id.clone();
    fetch.extend_from_slice(&10u32.to_le_bytes());
    let rows = c.command(command::STMT_FETCH, &fetch);
    assert_eq!(rows.len(), 11, "10 rows and an EOF");
    let mut fetch = stmt_id.clone();
    fetch.extend_from_slice(&100u32.to_le_bytes());
    let rows = c.command(command::STMT_FETCH, &fetch);
    assert_eq!(rows.len(), 16, "the remaining 15 rows and an EOF");
    let eof = &rows.last().unwrap().payload;
    assert_ne!(
        u16::from_le_bytes([eof[3], eof[4]]) & status::LAST_ROW_SENT,
        0
    );

    // COM_STMT_SEND_LONG_DATA has no response; COM_STMT_RESET answers OK
    let prepared = c.command(command::STMT_PREPARE, b"SELECT LENGTH(?)");
    let stmt2 = prepared[0].payload[1..5].to_vec();
    let mut long_data = stmt2.clone();
    long_data.extend_from_slice(&0u16.to_le_bytes());
    long_data.extend_from_slice(&[b'x'; 1000]);
    let mut payload = vec![command::STMT_SEND_LONG_DATA];
    payload.extend_from_slice(&long_data);
    c.write(0, &payload);
    assert_eq!(
        c.command(command::STMT_RESET, &stmt2)[0].payload[0],
        header::OK
    );

    // COM_STMT_CLOSE has no response either; the connection goes on
    let mut payload = vec![command::STMT_CLOSE];
    payload.extend_from_slice(&stmt_id);
    c.write(0, &payload);
    assert_eq!(c.query_column("SELECT 'after'"), vec!["after"]);
}

#[test]
fn stored_procedure_results_arrive_whole() {
    let proxy = Proxy::start();
    let sql = "DELIMITER //\nCREATE OR REPLACE PROCEDURE robust_two_results() \
               BEGIN SELECT 1 AS a; SELECT 2 AS b UNION SELECT 3; END//";
    let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", sql]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = mariadb(
        proxy.port,
        &[
            "-uapp",
            "-papp",
            "-e",
            "CALL robust_two_results(); SELECT 'next'; DROP PROCEDURE robust_two_results",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1\n2\n3\nnext\n");
}
