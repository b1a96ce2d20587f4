//! Two `sluice` processes of one `[cluster] name` against the real local cluster: what an
//! operator changes through one proxy's admin port is in force on the other within two
//! sync intervals; learned firewall digests and failed-login blocks protect on both;
//! conflicting changes end with both proxies on one version; a change a peer cannot
//! accept is refused there whole, visibly.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{app, cluster_section, pair, version, INTERVAL};
use common::{admin, admin_ok, wait_for};
use common::{stderr, Proxy, RawClient};

#[test]
fn a_query_rule_loaded_on_one_proxy_denies_on_the_other_within_two_intervals() {
    let (a, b) = pair("rule", |c| c);
    let before = version(&a);
    assert!(app(&b, "SELECT 4242").status.success());
    admin_ok(
        &a,
        "INSERT INTO mysql_query_rules (rule_id, active, match_digest, error_msg, apply) \
         VALUES (77, 1, '^SELECT \\?$', 'denied by a rule loaded on proxy A', 1); \
         LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    let loaded = Instant::now();
    let took = wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B denies",
        || stderr(&app(&b, "SELECT 4242")).contains("denied by a rule loaded on proxy A"),
    );
    eprintln!("B applied A's rule after {:?}", loaded.elapsed().min(took));
    assert!(loaded.elapsed() < 2 * INTERVAL + Duration::from_millis(300));
    // B's memory tables show it too (as ProxySQL's cluster sync does), and both agree
    assert_eq!(
        admin_ok(
            &b,
            "SELECT rule_id FROM mysql_query_rules WHERE rule_id = 77"
        ),
        "77\n"
    );
    assert_eq!(version(&a), before + 1);
    assert_eq!(version(&b), before + 1);
    wait_for(3 * INTERVAL, "A sees B in sync", || {
        admin_ok(
            &a,
            "SELECT COUNT(*) FROM stats_sluice_cluster_peers WHERE in_sync = 1",
        ) == "2\n"
    });
    let metrics = common::http_get(b.metrics_port, "/metrics").1;
    assert!(
        metrics.contains(&format!("sluice_cluster_config_version {}", before + 1)),
        "{metrics}"
    );
    assert!(metrics.contains("sluice_cluster_peers_out_of_sync 0"));
    // B restarted (cluster up) takes the cluster's version, not its TOML's rules
    drop(a);
    let mut b = b;
    b.restart();
    assert!(stderr(&app(&b, "SELECT 4242")).contains("denied by a rule loaded on proxy A"));
}

#[test]
fn a_server_set_offline_soft_through_one_proxy_drains_on_the_other() {
    // tables of their own: the first proxy creates them
    let table = format!("cluster_t{}", std::process::id());
    let own_table = |c: String| format!("{c}table = \"{table}\"\n");
    let (a, b) = pair("offline", own_table);
    admin_ok(
        &b,
        "UPDATE mysql_servers SET status = 'OFFLINE_SOFT' WHERE port = 13309; \
         LOAD MYSQL SERVERS TO RUNTIME",
    );
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "A has it",
        || {
            admin_ok(
                &a,
                "SELECT status FROM runtime_mysql_servers WHERE port = 13309 AND hostgroup_id = 20",
            )
            .contains("OFFLINE_SOFT")
        },
    );
    let ports = common::read_ports(&a, 40);
    assert_eq!(ports.get("13309"), None, "no new read on 13309: {ports:?}");
    assert_eq!(ports.get("13310"), Some(&40), "{ports:?}");
    let created = common::direct_ok(&format!(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'sluice' \
         AND table_name LIKE '{table}%'"
    ));
    assert_eq!(created, "4\n");
    drop((a, b));
    common::direct_ok(&format!(
        "DROP TABLE sluice.{table}, sluice.{table}_peers, sluice.{table}_allowlist, \
         sluice.{table}_blocks"
    ));
}

#[test]
fn a_digest_learned_on_one_proxy_passes_protect_mode_on_the_other() {
    let table = format!("cluster_fw_{}", std::process::id());
    common::direct_ok(&format!(
        "CREATE TABLE IF NOT EXISTS sbtest.{table} (id INT PRIMARY KEY, c INT); \
         REPLACE INTO sbtest.{table} VALUES (1, 10), (2, 20)"
    ));
    let firewall = |c: String| c + "\n[firewall]\nmode = \"detect\"\nflush_interval_ms = 100\n";
    let (a, b) = pair("firewall", firewall);
    let learned = format!("SELECT c FROM {table} WHERE id = 1");
    assert!(app(&a, &learned).status.success());
    assert!(a.log_shows("firewall learned a new statement shape"));
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B adopts",
        || {
            std::fs::read_to_string(b.dir.join("firewall-allowlist.tsv"))
                .is_ok_and(|t| t.contains(&format!("SELECT c FROM {table} WHERE id = ?")))
        },
    );
    // protect mode everywhere, set through A
    admin_ok(
        &a,
        "SET mysql-firewall_mode = 'protect'; LOAD MYSQL VARIABLES TO RUNTIME",
    );
    // each probe is a new shape (a new alias): one sent while B still detects is learned
    let mut probe = 0;
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B protects",
        || {
            probe += 1;
            stderr(&app(&b, &format!("SELECT id AS probe{probe} FROM {table}")))
                .contains("refused by the firewall")
        },
    );
    let out = app(&b, &format!("SELECT c FROM {table} WHERE id = 2"));
    assert!(
        out.status.success(),
        "learned on A, allowed on B: {}",
        stderr(&out)
    );
}

#[test]
fn a_client_address_blocked_on_one_proxy_is_refused_by_the_other() {
    let (a, b) = pair("throttle", |c| {
        c.replace("max_failures = 10", "max_failures = 3")
    });
    for _ in 0..3 {
        let err = RawClient::login_from(a.port, "127.0.0.9", "app", "wrong").unwrap_err();
        assert_eq!(err.code, 1045);
    }
    assert_eq!(
        RawClient::login_from(a.port, "127.0.0.9", "app", "app")
            .err()
            .map(|e| e.code),
        Some(1129),
        "blocked on A"
    );
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B refuses",
        || {
            RawClient::login_from(b.port, "127.0.0.9", "app", "app")
                .err()
                .is_some_and(|e| e.code == 1129)
        },
    );
    assert!(
        RawClient::login_from(b.port, "127.0.0.1", "app", "app").is_ok(),
        "B serves other addresses"
    );
    // a flush through B lifts the block on both
    admin_ok(&b, "PROXYSQL FLUSH MYSQL CLIENT HOSTS");
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "A lets it in",
        || RawClient::login_from(a.port, "127.0.0.9", "app", "app").is_ok(),
    );
}

#[test]
fn simultaneous_conflicting_changes_end_with_both_proxies_on_one_version() {
    let (a, b) = pair("conflict", |c| c);
    admin_ok(
        &a,
        "INSERT INTO mysql_query_rules (rule_id, active, match_digest, comment, apply) \
         VALUES (90, 1, '^SELECT 9090', 'start', 0); LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    let mut conflicts = 0;
    for round in 0..8 {
        let change = |p: &Proxy, who: &str| {
            admin(
                p,
                &format!(
                    "UPDATE mysql_query_rules SET comment = '{who}{round}' WHERE rule_id = 90; \
                     LOAD MYSQL QUERY RULES TO RUNTIME"
                ),
            )
        };
        let (ra, rb) = std::thread::scope(|s| {
            let ta = s.spawn(|| change(&a, "A"));
            let tb = s.spawn(|| change(&b, "B"));
            (ta.join().unwrap(), tb.join().unwrap())
        });
        for r in [&ra, &rb] {
            if !r.status.success() {
                assert!(stderr(r).contains("another proxy wrote"), "{}", stderr(r));
                conflicts += 1;
            }
        }
        assert!(
            ra.status.success() || rb.status.success(),
            "one of two changes wins"
        );
        let comment = |p: &Proxy| {
            admin_ok(
                p,
                "SELECT comment FROM runtime_mysql_query_rules WHERE rule_id = 90",
            )
        };
        wait_for(3 * INTERVAL, "one version on both", || {
            version(&a) == version(&b) && comment(&a) == comment(&b)
        });
    }
    eprintln!("{conflicts} conflicts in 8 rounds of simultaneous changes");
    assert!(
        conflicts > 0,
        "the rounds never collided: the test proves nothing"
    );
}

#[test]
fn a_version_a_peer_cannot_accept_is_refused_there_whole_and_visibly() {
    // B offers no TLS to clients: a user that requires TLS cannot exist there
    let without_tls_user = |c: String| {
        let start = c
            .find("[[users]]\nname = \"app_tls\"")
            .expect("app_tls user");
        let end = start + c[start..].find("\n\n").expect("end of block");
        format!("{}{}", &c[..start], &c[end..])
    };
    let section = cluster_section("refuse");
    let a = Proxy::start_with(|c| without_tls_user(c) + &section);
    let b = Proxy::start_with(|c| {
        let c = without_tls_user(c);
        let start = c.find("[frontend_tls]").expect("frontend_tls");
        let end = start + c[start..].find("\n\n").expect("end of section");
        format!("{}{}", &c[..start], &c[end..]) + &section
    });
    wait_for(Duration::from_secs(10), "one version", || {
        version(&a) > 0 && version(&a) == version(&b)
    });
    let good = version(&b);
    admin_ok(
        &a,
        "INSERT INTO mysql_users (username, password, default_hostgroup, use_ssl) \
         VALUES ('tls_only', '*8D2B1288F1564EEE8BF8F0E31EF107AE6D32949E', 10, 1); \
         LOAD MYSQL USERS TO RUNTIME",
    );
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B refuses",
        || {
            admin_ok(
                &b,
                "SELECT refused_version FROM stats_sluice_cluster_peers WHERE is_self = 1",
            )
            .trim()
                == (good + 1).to_string()
        },
    );
    let error = admin_ok(
        &b,
        "SELECT last_error FROM stats_sluice_cluster_peers WHERE is_self = 1",
    );
    assert!(error.contains("require_tls"), "{error}");
    assert_eq!(version(&b), good, "B keeps the version it had");
    assert_eq!(
        admin_ok(
            &b,
            "SELECT COUNT(*) FROM runtime_mysql_users WHERE username = 'tls_only'"
        ),
        "0\n",
        "nothing of the refused version is in force"
    );
    assert!(b.log_shows("refused a configuration version"));
    wait_for(3 * INTERVAL, "A sees B out of sync", || {
        admin_ok(
            &a,
            "SELECT in_sync FROM stats_sluice_cluster_peers WHERE is_self = 0",
        ) == "0\n"
    });
    // the next version that fits is taken
    admin_ok(
        &a,
        "DELETE FROM mysql_users WHERE username = 'tls_only'; LOAD MYSQL USERS TO RUNTIME",
    );
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B takes the next",
        || version(&b) == good + 2,
    );
}
