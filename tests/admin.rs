//! The SQL admin port with the `mariadb` client: ProxySQL's tables and commands change the
//! running proxy, survive a restart once saved, refuse what cannot work with a clear error,
//! and show the live sessions, digests and counters.

mod common;

use std::time::{Duration, Instant};

use common::{admin, admin_ok, mariadb, mariadb_ok, read_ports, stderr, stdout, Proxy};

fn app(proxy: &Proxy, sql: &str) -> String {
    mariadb_ok(proxy, proxy.port, "app", sql)
}

#[test]
fn server_weight_status_and_a_query_rule_change_routing_and_survive_a_restart() {
    let mut proxy = Proxy::start();
    admin_ok(
        &proxy,
        "UPDATE mysql_servers SET weight = 9 WHERE port = 13309; \
         LOAD MYSQL SERVERS TO RUNTIME",
    );
    // the monitor's placement, which runtime_mysql_servers shows, is republished within a
    // check cycle of the reload
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let weights = admin_ok(
            &proxy,
            "SELECT weight FROM runtime_mysql_servers WHERE hostgroup_id = 20 ORDER BY port",
        );
        if weights == "9\n1\n" {
            break;
        }
        assert!(Instant::now() < deadline, "runtime weights: {weights:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = read_ports(&proxy, 40);
    assert!(
        seen.get("13309").copied().unwrap_or(0) >= 30,
        "weight 9:1 → {seen:?}"
    );

    admin_ok(
        &proxy,
        "UPDATE mysql_servers SET status = 'OFFLINE_HARD' WHERE port = 13309; \
         LOAD MYSQL SERVERS TO RUNTIME; \
         INSERT INTO mysql_query_rules (rule_id, active, match_digest, destination_hostgroup, apply) \
             VALUES (7, 1, '^SELECT @@port AS on_writer$', 10, 1); \
         LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    let seen = read_ports(&proxy, 10);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["13310"],
        "13309 is OFFLINE_HARD: {seen:?}"
    );
    assert_eq!(app(&proxy, "SELECT @@port AS on_writer"), "13306\n");
    assert_eq!(
        admin_ok(
            &proxy,
            "SELECT rule_id, destination_hostgroup FROM runtime_mysql_query_rules"
        ),
        "7\t10\n"
    );

    // saved, then restarted from the file
    admin_ok(
        &proxy,
        "SAVE MYSQL SERVERS TO DISK; SAVE MYSQL QUERY RULES TO DISK",
    );
    let saved = std::fs::read_to_string(proxy.dir.join("sluice.toml")).unwrap();
    assert!(
        saved.contains("OFFLINE_HARD") && saved.contains("rule_id = 7"),
        "{saved}"
    );
    assert!(
        saved.contains("# Health checks"),
        "comments of other sections stay"
    );
    assert!(proxy.dir.join("sluice.toml.bak").exists());
    proxy.restart();
    let seen = read_ports(&proxy, 10);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["13310"],
        "after restart: {seen:?}"
    );
    assert_eq!(app(&proxy, "SELECT @@port AS on_writer"), "13306\n");
}

#[test]
fn wrong_changes_get_clear_errors_and_change_nothing() {
    let proxy = Proxy::start();
    let out = admin(
        &proxy,
        "UPDATE mysql_servers SET status = 'BROKEN' WHERE port = 13310; LOAD MYSQL SERVERS TO RUNTIME",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("status") && err.contains("\"BROKEN\" is not ONLINE"),
        "{err}"
    );
    let out = admin(
        &proxy,
        "INSERT INTO mysql_servers (hostgroup_id, hostname, nonsense) VALUES (1, 'x', 2)",
    );
    assert!(
        stderr(&out).contains("no column named nonsense"),
        "{}",
        stderr(&out)
    );
    let out = admin(
        &proxy,
        "INSERT INTO mysql_query_rules (rule_id, active, match_pattern) VALUES (1, 1, '(unclosed'); \
         LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    assert!(
        stderr(&out).contains("query_rules[0].match_pattern"),
        "{}",
        stderr(&out)
    );
    let out = admin(&proxy, "UPDATE global_variables SET variable_value = 'soon' WHERE variable_name = 'mysql-idle_timeout_ms'; LOAD MYSQL VARIABLES TO RUNTIME");
    assert!(
        stderr(&out).contains("not a whole number"),
        "{}",
        stderr(&out)
    );
    let out = admin(&proxy, "DELETE FROM runtime_mysql_servers");
    assert!(stderr(&out).contains("read-only"), "{}", stderr(&out));
    // runtime untouched: reads still spread over both replicas
    assert_eq!(
        admin_ok(&proxy, "SELECT COUNT(*) FROM runtime_mysql_servers WHERE hostgroup_id = 20 AND status = 'ONLINE'"),
        "2\n"
    );
    // a good variable change applies
    admin_ok(&proxy, "UPDATE global_variables SET variable_value = '3000' WHERE variable_name = 'mysql-idle_timeout_ms'; LOAD MYSQL VARIABLES TO RUNTIME");
    assert_eq!(
        admin_ok(&proxy, "SELECT variable_value FROM runtime_global_variables WHERE variable_name = 'mysql-idle_timeout_ms'"),
        "3000\n"
    );
}

#[test]
fn only_admin_accounts_get_in_and_admins_are_not_clients() {
    let proxy = Proxy::start();
    let out = mariadb(proxy.admin_port, &["-uapp", "-papp", "-e", "SELECT 1"]);
    assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    let out = mariadb(proxy.admin_port, &["-uadmin", "-pwrong", "-e", "SELECT 1"]);
    assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    let out = mariadb(proxy.port, &["-uadmin", "-padmin", "-e", "SELECT 1"]);
    assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    assert_eq!(admin_ok(&proxy, "SELECT 1"), "1\n");
}

#[test]
fn tools_read_live_sessions_digests_and_counters_with_real_sql() {
    let proxy = Proxy::start();
    for id in 1..=3 {
        app(&proxy, &format!("SELECT {id} AS probe"));
    }
    let port = proxy.port;
    let sleeper =
        std::thread::spawn(move || mariadb(port, &["-uapp", "-papp", "-e", "SELECT SLEEP(2)"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let row = loop {
        let row = admin_ok(
            &proxy,
            "SELECT user, db, cli_host, hostgroup, command, info FROM stats_mysql_processlist WHERE command = 'Query'",
        );
        if !row.is_empty() || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(row, "app\tsbtest\t127.0.0.1\t20\tQuery\tSELECT SLEEP(?)\n");
    assert!(sleeper.join().unwrap().status.success());

    let grouped = admin_ok(
        &proxy,
        "SELECT user, db, cli_host, COUNT(*) FROM stats_mysql_processlist GROUP BY user, db, cli_host",
    );
    assert!(
        grouped.is_empty() || grouped.starts_with("app\t"),
        "{grouped}"
    );
    let digests = admin_ok(
        &proxy,
        "SELECT hostgroup, srv_host, srv_port, Queries > 0 FROM stats_mysql_connection_pool WHERE hostgroup = 20 ORDER BY srv_port",
    );
    assert!(
        digests.contains("20\t127.0.0.1\t13309\t") && digests.contains("20\t127.0.0.1\t13310\t"),
        "{digests}"
    );
    let sleep_digest = admin_ok(
        &proxy,
        "SELECT count_star, digest_text FROM stats_mysql_query_digest WHERE digest_text LIKE 'SELECT SLEEP%'",
    );
    assert_eq!(sleep_digest, "1\tSELECT SLEEP(?)\n");
    let questions: u64 = admin_ok(
        &proxy,
        "SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = 'Questions'",
    )
    .trim()
    .parse()
    .unwrap();
    assert!(questions >= 4, "{questions}");
    assert_eq!(
        admin_ok(
            &proxy,
            "SELECT Total_cnt >= 4 FROM stats_mysql_commands_counters WHERE Command = 'SELECT'"
        ),
        "1\n"
    );
    assert_eq!(
        admin_ok(
            &proxy,
            "SELECT COUNT(*) > 0 FROM monitor.mysql_server_ping_log WHERE ping_error IS NULL"
        ),
        "1\n"
    );
    // the reset table answers and empties the digests
    assert!(!admin_ok(&proxy, "SELECT * FROM stats_mysql_query_digest_reset").is_empty());
    assert_eq!(
        admin_ok(&proxy, "SELECT COUNT(*) FROM stats_mysql_query_digest"),
        "0\n"
    );
}

#[test]
fn a_session_is_killed_from_the_admin_port() {
    let proxy = Proxy::start();
    let mut client = common::RawClient::login(proxy.port, "app", "app").unwrap();
    assert_eq!(client.query_column("SELECT 1"), ["1"]);
    let id = admin_ok(
        &proxy,
        "SELECT SessionID FROM stats_mysql_processlist WHERE user = 'app'",
    );
    admin_ok(&proxy, &format!("KILL CONNECTION {}", id.trim()));
    let answer = client.read().expect("the kill notice");
    let err = common::expect_err(&answer);
    assert_eq!(err.code, 1927, "{err:?}");
    assert_eq!(
        admin_ok(&proxy, "SELECT COUNT(*) FROM stats_mysql_processlist"),
        "0\n"
    );
    let out = admin(&proxy, "KILL 999999");
    assert!(
        stderr(&out).contains("Unknown thread id"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reloads_under_load_lose_no_statement() {
    let proxy = Proxy::start();
    common::direct_ok("CREATE DATABASE IF NOT EXISTS admin_reload");
    let bench =
        |args: &[&str]| common::sysbench(proxy.port, "oltp_point_select", "admin_reload", args);
    let _ = bench(&["cleanup"]);
    assert!(bench(&["prepare"]).status.success());
    common::replicas_caught_up();
    let port = proxy.port;
    let run = std::thread::spawn(move || {
        common::sysbench(
            port,
            "oltp_point_select",
            "admin_reload",
            &[
                "--threads=4",
                "--time=8",
                "--mysql-ignore-errors=none",
                "run",
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..20 {
        if i % 2 == 0 {
            admin_ok(&proxy, "LOAD MYSQL SERVERS TO RUNTIME; LOAD MYSQL USERS TO RUNTIME; LOAD MYSQL QUERY RULES TO RUNTIME");
        } else {
            proxy.signal("HUP");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let out = run.join().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("ignored errors:                      0"),
        "{report}"
    );
    assert_eq!(proxy.log().matches("configuration reloaded").count(), 10);
    let _ = bench(&["cleanup"]);
}

#[test]
fn throttled_addresses_are_visible_and_clearable() {
    let proxy = Proxy::start_with(|c| c.replace("max_failures = 10", "max_failures = 3"));
    for _ in 0..3 {
        let err =
            common::RawClient::login_from(proxy.port, "127.0.0.4", "app", "wrong").unwrap_err();
        assert_eq!(err.code, 1045);
    }
    let err = common::RawClient::login_from(proxy.port, "127.0.0.4", "app", "app").unwrap_err();
    assert_eq!(err.code, 1129, "blocked");
    let row = admin_ok(
        &proxy,
        "SELECT client_address, blocks, blocked_for_ms > 0 FROM stats_mysql_client_host_cache",
    );
    assert_eq!(row, "127.0.0.4\t1\t1\n");
    admin_ok(&proxy, "PROXYSQL FLUSH MYSQL CLIENT HOSTS");
    assert_eq!(
        admin_ok(&proxy, "SELECT COUNT(*) FROM stats_mysql_client_host_cache"),
        "0\n"
    );
    assert!(common::RawClient::login_from(proxy.port, "127.0.0.4", "app", "app").is_ok());
}
