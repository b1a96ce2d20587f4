//! The rule engine against the real cluster with the `mariadb` client: refusals the backend
//! never runs, rewrites, routing by digest, rule timeouts, the firewall's detect → protect
//! cycle across a reload and a restart, injection shapes, and the query log.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{direct, mariadb, mariadb_ok, stderr, stdout, wait_for, Proxy};

fn run(proxy: &Proxy, sql: &str) -> std::process::Output {
    mariadb(proxy.port, &["-uapp", "-papp", "-e", sql])
}

fn ok(proxy: &Proxy, sql: &str) -> String {
    mariadb_ok(proxy, proxy.port, "app", sql)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-rules-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A table of this binary's own, present on the writer and both replicas.
fn items() {
    let out = direct(&[
        "-e",
        "CREATE TABLE IF NOT EXISTS sbtest.rules_items (id INT PRIMARY KEY, c VARCHAR(20)); \
        REPLACE INTO sbtest.rules_items VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for replica in [13309, 13310] {
        wait_for(
            Duration::from_secs(10),
            "the replicas to have rules_items",
            || {
                let out = mariadb(
                    replica,
                    &[
                        "-uapp",
                        "-papp",
                        "-e",
                        "SELECT COUNT(*) FROM sbtest.rules_items",
                    ],
                );
                stdout(&out) == "3\n"
            },
        );
    }
}

#[test]
fn a_deny_rule_refuses_with_its_error_and_the_backend_never_runs_the_statement() {
    let out = direct(&["-e", "CREATE TABLE IF NOT EXISTS sbtest.rules_guarded (id INT PRIMARY KEY); REPLACE INTO sbtest.rules_guarded VALUES (1)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 5
match_pattern = "^\\s*DELETE\\s+FROM\\s+(sbtest\\.)?rules_guarded"
error_msg = "Deleting from rules_guarded is not allowed"
"#
    });
    let out = run(&proxy, "delete from sbtest.rules_guarded where id = 1");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("ERROR 1148")
            && stderr(&out).contains("Deleting from rules_guarded is not allowed"),
        "{}",
        stderr(&out)
    );
    let left = direct(&[
        "-e",
        "SELECT COUNT(*) FROM sbtest.rules_guarded WHERE id = 1",
    ]);
    assert_eq!(stdout(&left), "1\n", "the row is still there");
    // other statements on the same table pass
    assert_eq!(ok(&proxy, "SELECT id FROM sbtest.rules_guarded"), "1\n");
}

#[test]
fn a_rewrite_rule_changes_what_runs_and_routing_rules_pick_the_hostgroup() {
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 1
match_pattern = "^SELECT 'before' AS (\\w+)$"
replace_pattern = "SELECT 'after' AS $1"
apply = true

[[query_rules]]
rule_id = 2
match_digest = "^SELECT @@port AS on_writer$"
destination_hostgroup = 10

[[query_rules]]
rule_id = 3
match_digest = "^SELECT @@port AS on_backup$"
destination_hostgroup = 11
"#
    });
    assert_eq!(ok(&proxy, "SELECT 'before' AS word"), "after\n");
    // a plain read goes to a replica; the rules send these to the writer and the backups
    let plain = ok(&proxy, "SELECT @@port AS anywhere");
    assert!(plain == "13309\n" || plain == "13310\n", "{plain}");
    for _ in 0..4 {
        assert_eq!(ok(&proxy, "SELECT @@port AS on_writer"), "13306\n");
        let backup = ok(&proxy, "SELECT @@port AS on_backup");
        assert!(backup == "13307\n" || backup == "13308\n", "{backup}");
    }
}

#[test]
fn a_rule_timeout_kills_the_statement_on_its_backend() {
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 1
match_digest = "SLEEP"
destination_hostgroup = 10
timeout_ms = 300
"#
    });
    let started = Instant::now();
    let out = run(&proxy, "SELECT SLEEP(20)");
    assert!(
        stderr(&out).contains("ERROR 1317") && stderr(&out).contains("interrupted"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.log_shows("statement over its rule's timeout"));
}

fn firewall_config(allowlist: &Path, mode: &str) -> impl FnOnce(String) -> String {
    let section = format!(
        "\n[firewall]\nmode = \"{mode}\"\nallowlist = \"{}\"\nflush_interval_ms = 100\n",
        allowlist.display()
    );
    move |c: String| c + &section
}

#[test]
fn the_firewall_learns_in_detect_mode_then_protects_across_reload_and_restart() {
    items();
    let dir = scratch("firewall");
    let allowlist = dir.join("allow.tsv");
    let proxy = Proxy::start_with(firewall_config(&allowlist, "detect"));
    ok(&proxy, "SELECT c FROM rules_items WHERE id = 1");
    ok(
        &proxy,
        "SELECT COUNT(*) FROM rules_items WHERE id BETWEEN 1 AND 10",
    );
    assert!(proxy.log_shows("firewall learned a new statement shape"));
    wait_for(Duration::from_secs(5), "the allow list file", || {
        std::fs::read_to_string(&allowlist).is_ok_and(|t| {
            t.contains("app\t0x") && t.contains("SELECT c FROM rules_items WHERE id = ?")
        })
    });

    // protect: switch the running proxy with a reload
    let config = proxy.dir.join("sluice.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("mode = \"detect\"", "mode = \"protect\""),
    )
    .unwrap();
    proxy.signal("HUP");
    assert!(proxy.log_shows("configuration reloaded"));
    assert_eq!(ok(&proxy, "SELECT c FROM rules_items WHERE id = 2"), "b\n");
    let out = run(&proxy, "SELECT id FROM rules_items WHERE id = 42");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ERROR 1148")
            && err.contains("refused by the firewall")
            && err.contains("user 'app'"),
        "{err}"
    );
    drop(proxy);

    // a restart in protect mode keeps what was learned
    let proxy = Proxy::start_with(firewall_config(&allowlist, "protect"));
    ok(
        &proxy,
        "SELECT COUNT(*) FROM rules_items WHERE id BETWEEN 5 AND 500",
    );
    assert!(!run(&proxy, "SELECT 1").status.success());
}

#[test]
fn injection_shapes_are_flagged_and_blocked_where_a_rule_says_so() {
    items();
    let dir = scratch("injection");
    let log = dir.join("queries.log");
    let proxy = Proxy::start_with(|c| {
        c + &format!(
            r#"
[query_log]
mode = "rules"
path = "{}"

[[query_rules]]
rule_id = 1
username = "app"
sql_injection = true
match_digest = "^DELETE"
error_msg = "Refused: looks like SQL injection"
"#,
            log.display()
        )
    });
    // flagged, logged, still served (no rule blocks SELECTs)
    let rows = ok(
        &proxy,
        "SELECT id FROM rules_items WHERE c = '' OR '1'='1' LIMIT 2",
    );
    assert_eq!(rows.lines().count(), 2);
    assert!(proxy.log_shows("statement with an injection shape"));
    assert!(proxy.log_shows("tautology"));
    // the same shape in a DELETE is refused before it reaches the backend
    let out = direct(&["-e", "CREATE TABLE IF NOT EXISTS sbtest.rules_injection (id INT PRIMARY KEY); REPLACE INTO sbtest.rules_injection VALUES (1), (2)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&proxy, "DELETE FROM rules_injection WHERE id = -1 OR 1=1");
    assert!(
        stderr(&out).contains("looks like SQL injection"),
        "{}",
        stderr(&out)
    );
    let left = direct(&["-e", "SELECT COUNT(*) FROM sbtest.rules_injection"]);
    assert_eq!(stdout(&left), "2\n");
    // an injection inside a string literal is just a value: not flagged
    ok(
        &proxy,
        "SELECT id FROM rules_items WHERE c = 'x'' OR ''1''=''1' LIMIT 1",
    );
    ok(
        &proxy,
        "SELECT id FROM rules_items WHERE id = 1 OR 2=2 LIMIT 1",
    );
    wait_for(Duration::from_secs(5), "the query log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 3)
    });
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "only the flagged statements: {text}");
    assert_eq!(lines[0]["injection"][0], "tautology");
    assert_eq!(lines[1]["refused"], true);
    assert_eq!(
        lines[1]["digest_text"],
        "DELETE FROM rules_injection WHERE id = ? OR ? = ?"
    );
    assert_eq!(
        lines[2]["digest_text"],
        "SELECT id FROM rules_items WHERE id = ? OR ? = ? LIMIT ?"
    );
}

#[test]
fn the_query_log_holds_digests_never_values() {
    items();
    let dir = scratch("querylog");
    let log = dir.join("queries.log");
    let proxy = Proxy::start_with(|c| {
        c + &format!(
            "\n[query_log]\nmode = \"all\"\npath = \"{}\"\n",
            log.display()
        )
    });
    ok(
        &proxy,
        "SELECT PASSWORD('hunter2-secret'), 'card-4111111111111111'",
    );
    ok(&proxy, "SELECT c FROM rules_items WHERE id = 7");
    wait_for(Duration::from_secs(5), "the query log", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("WHERE id = ?"))
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("hunter2") && !text.contains("4111"),
        "{text}"
    );
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["digest_text"] == "SELECT c FROM rules_items WHERE id = ?")
        .expect("the point select is logged");
    assert_eq!(line["user"], "app");
    assert_eq!(line["schema"], "sbtest");
    assert_eq!(line["kind"], "select");
    assert_eq!(line["hostgroup"], 20);
    assert!(line["server"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:1331"));
    assert!(line["digest"].as_str().unwrap().starts_with("0x"));
}
