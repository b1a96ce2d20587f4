//! Read/write split against the real cluster: reads on the replicas by weight, writes and
//! transactions on the elected Galera writer, session state kept where it was set.

mod common;

use common::{direct_ok, mariadb, read_ports, stderr, stdout, Proxy, RawClient};

#[test]
fn reads_go_to_the_replicas_by_weight_and_writes_to_the_writer() {
    // replica 13309 weighs 3, replica 13310 weighs 1
    let proxy = Proxy::start_with(|c| {
        c.replacen(
            "port = 13309\nhostgroup = 20",
            "port = 13309\nhostgroup = 20\nweight = 3",
            1,
        )
    });
    let seen = read_ports(&proxy, 40);
    assert_eq!(
        seen.keys()
            .filter(|p| *p != "13309" && *p != "13310")
            .count(),
        0,
        "reads left the replicas: {seen:?}"
    );
    let heavy = seen.get("13309").copied().unwrap_or(0);
    assert!(
        (26..=34).contains(&heavy),
        "13309 (weight 3) served {heavy} of 40: {seen:?}"
    );

    // writes: the row records the port of the server that executed the INSERT
    let out = mariadb(
        proxy.port,
        &["-uapp", "-papp", "-e", "CREATE TABLE IF NOT EXISTS routing_writes (id INT AUTO_INCREMENT PRIMARY KEY, port INT); \
          INSERT INTO routing_writes (port) VALUES (@@port); \
          SELECT port FROM routing_writes WHERE id = LAST_INSERT_ID(); \
          SELECT @@port FOR UPDATE"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "13306\n13306\n",
        "the writer is node1 (highest priority)"
    );
}

#[test]
fn a_transaction_stays_on_the_writer_and_sees_its_own_rows() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    c.query("CREATE TABLE IF NOT EXISTS routing_tx (id INT PRIMARY KEY, note VARCHAR(20))");
    c.query("DELETE FROM routing_tx WHERE id = 7");
    c.query("BEGIN");
    c.query("INSERT INTO routing_tx VALUES (7, 'uncommitted')");
    // plain reads inside the transaction: same backend, so the row is visible
    assert_eq!(c.query_column("SELECT @@port"), vec!["13306"]);
    assert_eq!(
        c.query_column("SELECT note FROM routing_tx WHERE id = 7"),
        vec!["uncommitted"]
    );
    c.query("ROLLBACK");
    // after the transaction, reads split again
    let port = c.query_column("SELECT @@port")[0].clone();
    assert!(port == "13309" || port == "13310", "read went to {port}");
    // autocommit off opens a transaction implicitly: reads stay on the writer
    c.query("SET autocommit = 0");
    assert_eq!(c.query_column("SELECT @@port"), vec!["13306"]);
}

#[test]
fn session_state_pins_reads_to_the_writer() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    c.query("SET @marker = 42");
    assert_eq!(c.query_column("SELECT @marker"), vec!["42"]);
    assert_eq!(
        c.query_column("SELECT @@port"),
        vec!["13306"],
        "pinned after a user variable"
    );
}

#[test]
fn schema_and_character_set_follow_the_session_to_its_reader() {
    let proxy = Proxy::start();
    let out = mariadb(
        proxy.port,
        &[
            "-uapp",
            "-papp",
            "-e",
            "use mysql\nSET NAMES latin1;\nSELECT @@port, DATABASE(), @@character_set_client;",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let row = stdout(&out);
    let fields: Vec<&str> = row.trim().split('\t').collect();
    assert!(fields[0] == "13309" || fields[0] == "13310", "{row}");
    assert_eq!(&fields[1..], ["mysql", "latin1"], "{row}");
}

#[test]
fn users_that_must_not_be_split_read_from_their_default_hostgroup() {
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "# SELECT PASSWORD('app_local')\ndefault_hostgroup = 10",
            "# SELECT PASSWORD('app_local')\ndefault_hostgroup = 10\nsplit_reads = false",
        )
    });
    let out = mariadb(
        proxy.port,
        &["-uapp_local", "-papp_local", "-e", "SELECT @@port"],
    );
    assert_eq!(stdout(&out), "13306\n", "{}", stderr(&out));
}

#[test]
fn prepared_reads_split_like_text_reads_and_stay_on_the_writer_in_a_transaction() {
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let prepared = c.command(
        sluice::protocol::constants::command::STMT_PREPARE,
        b"SELECT @@port",
    );
    assert_eq!(prepared[0].payload[0], 0);
    let mut execute = prepared[0].payload[1..5].to_vec();
    execute.push(0);
    execute.extend_from_slice(&1u32.to_le_bytes());
    let port = |c: &mut RawClient| {
        let rows = c.command(sluice::protocol::constants::command::STMT_EXECUTE, &execute);
        // binary row: 0x00 header, null bitmap (1 byte for 1 column), then the value
        let row = &rows[3].payload;
        assert_eq!(row[0], 0);
        u64::from_le_bytes(row[2..10].try_into().unwrap())
    };
    let outside = port(&mut c);
    assert!([13309, 13310].contains(&outside), "{outside}");
    c.query("BEGIN");
    assert_eq!(port(&mut c), 13306, "inside a transaction");
    c.query("COMMIT");
}

fn offline(config: String, port: u16, status: &str) -> String {
    config.replacen(
        &format!("port = {port}\nhostgroup = 20"),
        &format!("port = {port}\nhostgroup = 20\nstatus = \"{status}\""),
        1,
    )
}

#[test]
fn offline_servers_get_no_new_connections() {
    let proxy = Proxy::start_with(|c| offline(c, 13310, "OFFLINE_SOFT"));
    let seen = read_ports(&proxy, 8);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["13309"], "{seen:?}");
}

#[test]
fn without_readers_reads_fall_back_to_the_writer_or_fail_as_configured() {
    let proxy =
        Proxy::start_with(|c| offline(offline(c, 13309, "OFFLINE_HARD"), 13310, "OFFLINE_HARD"));
    let seen = read_ports(&proxy, 4);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["13306"], "{seen:?}");

    let proxy = Proxy::start_with(|c| {
        offline(offline(c, 13309, "OFFLINE_HARD"), 13310, "OFFLINE_HARD").replace(
            "max_transactions_behind = 100",
            "max_transactions_behind = 100\nfallback_to_writer = false",
        )
    });
    let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 9001") && stderr(&out).contains("hostgroup 20"),
        "{}",
        stderr(&out)
    );
    // writes are unaffected
    let out = mariadb(
        proxy.port,
        &["-uapp", "-papp", "-e", "SELECT @@port FOR UPDATE"],
    );
    assert_eq!(stdout(&out), "13306\n", "{}", stderr(&out));
}

#[test]
fn read_only_transactions_run_whole_on_a_replica_after_the_sessions_writes() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.read_only_rows (id INT PRIMARY KEY, v INT); \
         REPLACE INTO sbtest.read_only_rows VALUES (1, 0)",
    );
    let proxy = Proxy::start();
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let port = |c: &mut RawClient| c.query_column("SELECT @@port").remove(0);
    for round in 1..=20 {
        let ok = c.query(&format!(
            "UPDATE sbtest.read_only_rows SET v = {round} WHERE id = 1"
        ));
        assert_eq!(ok[0].payload[0], 0, "{:?}", ok[0].payload);
        c.query("START TRANSACTION READ ONLY");
        let first = port(&mut c);
        let seen = c.query_column("SELECT v FROM sbtest.read_only_rows WHERE id = 1");
        assert_eq!(seen, [round.to_string()], "the session's write is there");
        assert_eq!(port(&mut c), first, "one server serves the transaction");
        assert!(["13309", "13310"].contains(&first.as_str()), "{first}");
        // a write inside it is refused by the server, as without the proxy
        let refused = c.query("UPDATE sbtest.read_only_rows SET v = 0 WHERE id = 1");
        assert_eq!(common::expect_err(&refused[0]).code, 1792);
        c.query("COMMIT");
    }
    // the next transaction shaped by SET TRANSACTION runs where that ran
    c.query("SET TRANSACTION READ ONLY");
    c.query("START TRANSACTION");
    let shaped = port(&mut c);
    assert!(["13309", "13310"].contains(&shaped.as_str()), "{shaped}");
    let refused = c.query("DELETE FROM sbtest.read_only_rows WHERE id = 1");
    assert_eq!(common::expect_err(&refused[0]).code, 1792);
    c.query("COMMIT");
    // a plain transaction stays on the writer
    c.query("BEGIN");
    assert_eq!(port(&mut c), "13306");
    c.query("COMMIT");
}
