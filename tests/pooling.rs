//! Backend connections outlive their sessions: reset, pooled, and handed to the next
//! session of the same user, which must find nothing of the previous one on it.

mod common;

use std::time::Duration;

use common::{Proxy, RawClient};

/// The writer-side connection id of a new session, after `setup` ran in it.
fn session_on_writer(proxy: &Proxy, setup: &[&str]) -> String {
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    for sql in setup {
        c.query(sql);
    }
    c.query_column("SELECT CONNECTION_ID() FOR UPDATE")[0].clone()
}

/// Waits until the proxy has reset and pooled a released connection.
fn settle() {
    std::thread::sleep(Duration::from_millis(150));
}

#[test]
fn a_released_connection_serves_the_next_session_clean() {
    let proxy = Proxy::start();
    let mut first = RawClient::login(proxy.port, "app", "app").unwrap();
    first.query("CREATE TABLE IF NOT EXISTS pooling_rows (id INT PRIMARY KEY)");
    first.query("DELETE FROM pooling_rows");
    first.query("SET @leftover = 'from the first session'");
    first.query("CREATE TEMPORARY TABLE pooling_temp (a INT)");
    first.query("SET SESSION sql_mode = 'ANSI_QUOTES'");
    first.query("BEGIN");
    first.query("INSERT INTO pooling_rows VALUES (1)");
    let id = first.query_column("SELECT CONNECTION_ID() FOR UPDATE")[0].clone();
    drop(first);
    settle();

    let mut second = RawClient::login(proxy.port, "app", "app").unwrap();
    assert_eq!(
        second.query_column("SELECT CONNECTION_ID() FOR UPDATE"),
        vec![id],
        "reused"
    );
    assert_eq!(second.query_column("SELECT @leftover IS NULL"), vec!["1"]);
    let temp = second.query("SELECT * FROM pooling_temp");
    assert_eq!(
        common::expect_err(&temp[0]).code,
        1146,
        "temporary table gone"
    );
    assert_eq!(
        second.query_column("SELECT @@session.sql_mode = @@global.sql_mode"),
        vec!["1"]
    );
    assert_eq!(
        second.query_column("SELECT COUNT(*) FROM pooling_rows FOR UPDATE"),
        vec!["0"],
        "rolled back"
    );
}

#[test]
fn the_next_session_gets_its_own_schema() {
    let proxy = Proxy::start();
    let mut first = RawClient::login(proxy.port, "app", "app").unwrap();
    first.query("USE mysql");
    let id = first.query_column("SELECT CONNECTION_ID() FOR UPDATE")[0].clone();
    drop(first);
    settle();
    // logs in with schema sbtest: the pooled connection is switched back
    let mut second = RawClient::login(proxy.port, "app", "app").unwrap();
    assert_eq!(
        second.query_column("SELECT CONCAT(CONNECTION_ID(), ' ', DATABASE()) FOR UPDATE"),
        vec![format!("{id} sbtest")]
    );
}

#[test]
fn idle_connections_expire_and_pooling_can_be_off() {
    // a second of idle life: long enough to be reused on a busy machine, short to wait out
    let proxy = Proxy::start_with(|c| format!("{c}\n[pool]\nidle_timeout_ms = 1000\n"));
    let first = session_on_writer(&proxy, &[]);
    settle();
    assert_eq!(session_on_writer(&proxy, &[]), first, "reused while fresh");
    std::thread::sleep(Duration::from_millis(1500));
    assert_ne!(
        session_on_writer(&proxy, &[]),
        first,
        "expired after 1 s idle"
    );

    let proxy = Proxy::start_with(|c| format!("{c}\n[pool]\nmax_idle_per_server = 0\n"));
    let first = session_on_writer(&proxy, &[]);
    settle();
    assert_ne!(session_on_writer(&proxy, &[]), first, "no pooling");
}

#[test]
fn idle_connections_are_opened_ahead_once_a_user_has_logged_in() {
    let proxy = Proxy::start_with(|c| format!("{c}\n[pool]\nmin_idle_per_server = 3\n"));
    let free = |port: u16| -> u32 {
        common::mariadb_ok(
            &proxy,
            proxy.admin_port,
            "admin",
            &format!("SELECT ConnFree FROM stats_mysql_connection_pool WHERE srv_port = {port}"),
        )
        .trim()
        .parse()
        .unwrap()
    };
    // the proxy can log in as a user only after it has seen the user's password proof
    assert_eq!(free(13306), 0);
    let _session = RawClient::login(proxy.port, "app", "app").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let warm = |p| free(p) >= 3;
    while !(warm(13306) && warm(13309) && warm(13310)) {
        assert!(
            std::time::Instant::now() < deadline,
            "idle on writer {}, replicas {} and {}",
            free(13306),
            free(13309),
            free(13310)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // the sweeper keeps them at the minimum, no more
    std::thread::sleep(Duration::from_millis(5500));
    assert_eq!(free(13306), 3);
}
