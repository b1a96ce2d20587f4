//! Nothing of the proxy shows through a session's diagnostics: `SHOW WARNINGS` and its kin
//! describe the session's own statement before, wherever it ran (a replica, the writer),
//! while other sessions of the same user leave warnings on the same pooled connections;
//! the client link's TLS status is the client link's.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice::protocol::constants::{capability, header};

use common::{
    direct_ok, mariadb, mariadb_ok, python, repo, stderr, stdout, succeeds, Proxy, RawClient,
};

const REPLICAS: [&str; 2] = ["13309", "13310"];

/// Sessions of `app` that leave warnings of their own on the pooled connections (reads on
/// the replicas, notes on the writer), until the guard drops. Each runs bounded batches.
struct Noise {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Noise {
    fn start(port: u16) -> Noise {
        let stop = Arc::new(AtomicBool::new(false));
        let noisy = [
            "SELECT CAST('noise' AS INT) FROM sbtest.diag_items LIMIT 1",
            "DROP TABLE IF EXISTS sbtest.diag_never_there",
        ];
        let threads = noisy
            .iter()
            .map(|sql| {
                let (stop, batch) = (stop.clone(), [*sql; 20].join(";"));
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        mariadb(port, &["-uapp", "-papp", "-e", &batch]);
                    }
                })
            })
            .collect();
        Noise { stop, threads }
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn setup() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.diag_items (id INT PRIMARY KEY, c VARCHAR(20)); \
         REPLACE INTO sbtest.diag_items VALUES (1, 'one'), (2, 'two'); \
         DELETE FROM sbtest.diag_items WHERE id >= 1000 AND id < 2000",
    );
    std::thread::sleep(Duration::from_millis(500)); // on the replicas too
}

#[test]
fn show_warnings_describes_the_sessions_own_statement_while_others_leave_theirs() {
    setup();
    let proxy = Proxy::start();
    let _noise = Noise::start(proxy.port);
    for round in 0..10 {
        // a read on a replica that warns; SHOW WARNINGS finds it there
        let out = mariadb_ok(
            &proxy,
            proxy.port,
            "app",
            "SELECT CAST('abc' AS DECIMAL), @@port FROM sbtest.diag_items WHERE id = 1; SHOW WARNINGS",
        );
        let lines: Vec<&str> = out.lines().collect();
        let port = lines[0].split('\t').nth(1).unwrap();
        assert!(REPLICAS.contains(&port), "round {round}: read on {port}");
        assert_eq!(
            lines[1..],
            ["Warning\t1292\tTruncated incorrect DECIMAL value: 'abc'"],
            "round {round}"
        );

        // a write on the writer that warns (read-your-writes on: its GTID is tracked)
        let id = 1000 + round;
        let out = mariadb_ok(
            &proxy,
            proxy.port,
            "app",
            &format!(
                "INSERT IGNORE INTO sbtest.diag_items VALUES (1, 'dup'), ({id}, 'new'); \
                 SHOW WARNINGS; SHOW COUNT(*) WARNINGS; SELECT @@warning_count"
            ),
        );
        assert_eq!(
            out, "Warning\t1062\tDuplicate entry '1' for key 'PRIMARY'\n1\n1\n",
            "round {round}"
        );

        // after a statement without warnings: nothing, never an older statement's
        let out = mariadb_ok(
            &proxy,
            proxy.port,
            "app",
            "SELECT c FROM sbtest.diag_items WHERE id = 2; SHOW WARNINGS; SHOW COUNT(*) WARNINGS; \
             SELECT @@warning_count",
        );
        assert_eq!(out, "two\n0\n0\n", "round {round}");
        let out = mariadb_ok(
            &proxy,
            proxy.port,
            "app",
            "SELECT CAST('abc' AS DECIMAL) FROM sbtest.diag_items WHERE id = 1; \
             SELECT c FROM sbtest.diag_items WHERE id = 2; SHOW WARNINGS",
        );
        assert_eq!(out, "0\ntwo\n", "round {round}");
        // an error is what SHOW ERRORS lists, as on the server itself
        let errors = |port| {
            let mut c = RawClient::login(port, "app", "app").unwrap();
            let err = c
                .try_query_column("SELECT nope FROM sbtest.diag_items")
                .unwrap_err();
            (
                err,
                c.query_column("SHOW COUNT(*) ERRORS"),
                c.query_column("SHOW ERRORS"),
            )
        };
        let direct = errors(13306);
        assert_eq!(direct.1, ["1"]);
        assert_eq!(errors(proxy.port), direct, "round {round}");
    }
}

#[test]
fn row_count_after_a_write_is_the_servers() {
    setup();
    let proxy = Proxy::start();
    let _noise = Noise::start(proxy.port);
    // this test's rows are 5000–5199: the tests beside it write 5200 and 5300 meanwhile
    direct_ok("DELETE FROM sbtest.diag_items WHERE id BETWEEN 5000 AND 5199");
    let out = mariadb_ok(
        &proxy,
        proxy.port,
        "app",
        "INSERT INTO sbtest.diag_items VALUES (5000, 'a'), (5001, 'b'), (5002, 'c'); SELECT ROW_COUNT(); \
         UPDATE sbtest.diag_items SET c = 'z' WHERE id BETWEEN 5000 AND 5199; SELECT ROW_COUNT(); \
         SELECT c FROM sbtest.diag_items WHERE id = 1; SELECT ROW_COUNT()",
    );
    assert_eq!(out, "3\n3\none\n-1\n");

    // LOAD DATA LOCAL: the rows the file brought
    let dir = std::env::temp_dir().join(format!("sluice-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rows.tsv");
    std::fs::write(&file, "5100\tx\n5101\ty\n5102\tz\n5103\tw\n").unwrap();
    let out = mariadb(
        proxy.port,
        &[
            "-uapp",
            "-papp",
            "--local-infile=1",
            "-e",
            &format!(
                "LOAD DATA LOCAL INFILE '{}' INTO TABLE sbtest.diag_items; SELECT ROW_COUNT()",
                file.display()
            ),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "4\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sessions_profile_holds_its_statements_only() {
    setup();
    let proxy = Proxy::start();
    let writes = [
        "REPLACE INTO sbtest.diag_items VALUES (5200, 'p')",
        "SELECT ROW_COUNT()",
        "UPDATE sbtest.diag_items SET c = 'q' WHERE id = 5200",
        "COMMIT",
    ];
    let sql = format!("SET profiling = 1; {}; SHOW PROFILES", writes.join("; "));
    let profiled = |out: String| -> Vec<String> {
        out.lines()
            .map(|l| l.split('\t').nth(2).unwrap_or_default().to_owned())
            .collect()
    };
    // the proxy's read of each write's GTID would be profiled between them
    let through = profiled(mariadb_ok(&proxy, proxy.port, "app", &sql));
    let direct = profiled(mariadb_ok(&proxy, 13306, "app", &sql));
    assert_eq!(through, direct);
    // (the profile's first entry, the end of `SET profiling` itself, has no text)
    assert_eq!(through[1..], writes);
}

#[test]
fn a_writes_ok_packet_reaches_the_client_as_the_server_sent_it() {
    setup();
    let proxy = Proxy::start();
    let statements = [
        "REPLACE INTO sbtest.diag_items VALUES (5300, 'r')",
        "SELECT ROW_COUNT()",
        "INSERT INTO sbtest.diag_items VALUES (5300, 's'), (5301, 't') ON DUPLICATE KEY UPDATE c = VALUES(c)",
        "SET autocommit = 0",
        "REPLACE INTO sbtest.diag_items VALUES (5301, 'u')",
        "COMMIT",
        "SET autocommit = 1",
    ];
    // the proxy has the server report each commit's GTID in the OK, over session tracking
    // whatever the client negotiated: a client that negotiated it but asked for no GTID,
    // and one that did not, each get the OK the server sends it, and ROW_COUNT() after
    let answers = |port: u16, extra: u32| -> Vec<Vec<Vec<u8>>> {
        let mut c = RawClient::login_with(port, "app", "app", extra).unwrap();
        // on the connection that writes next: a DELETE on another node could reach the
        // writer after this transaction began there, and Galera would abort it (1213)
        let cleared = c.query("DELETE FROM sbtest.diag_items WHERE id >= 5300");
        assert_eq!(cleared[0].payload[0], header::OK, "DELETE");
        statements
            .iter()
            .map(|sql| c.query(sql).into_iter().map(|p| p.payload).collect())
            .collect()
    };
    for extra in [capability::SESSION_TRACK, 0] {
        let direct = answers(13306, extra);
        let through = answers(proxy.port, extra);
        for ((sql, d), t) in statements.iter().zip(&direct).zip(&through) {
            assert_eq!(t, d, "{sql} (capabilities {extra:#x})");
        }
    }
}

/// `mariadb` over verified TLS to the proxy as `app_tls`: `SHOW STATUS` rows about TLS.
fn tls_status(proxy: &Proxy, sql: &str) -> String {
    let ca = format!("--ssl-ca={}", repo().join("certs/ca.pem").display());
    let out = mariadb(
        proxy.port,
        &["-uapp_tls", "-papp_tls", "--ssl", &ca, "-e", sql],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), proxy.log());
    stdout(&out)
}

fn the_client_links_tls_is_shown(proxy: &Proxy) {
    let out = tls_status(
        proxy,
        "SHOW STATUS LIKE 'Ssl_cipher'; SHOW SESSION STATUS LIKE 'Ssl_version'; \
         SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME IN ('SSL_VERSION', 'SSL_SERVER_NOT_AFTER', 'SSL_VERIFY_MODE') ORDER BY 1",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("Ssl_cipher\tTLS_AES_") || lines[0].starts_with("Ssl_cipher\tECDHE-"),
        "{out}"
    );
    assert_eq!(lines[1], "Ssl_version\tTLSv1.3");
    assert!(lines[2].starts_with("SSL_SERVER_NOT_AFTER\t") && lines[2].ends_with(" GMT"));
    assert_eq!(
        lines[3], "SSL_VERIFY_MODE\t5",
        "the demo checks client certificates"
    );
    assert_eq!(lines[4], "SSL_VERSION\tTLSv1.3");

    // without TLS on the client link, the rows are empty, as a server shows them
    let out = mariadb_ok(
        proxy,
        proxy.port,
        "app",
        "SHOW STATUS WHERE Variable_name IN ('Ssl_cipher', 'Ssl_version', 'Ssl_verify_mode')",
    );
    assert_ne!(out, "", "rows");
    let plain = mariadb(
        proxy.port,
        &[
            "-uapp",
            "-papp",
            "--skip-ssl",
            "-e",
            "SHOW STATUS WHERE Variable_name IN ('Ssl_cipher', 'Ssl_version', 'Ssl_verify_mode')",
        ],
    );
    assert_eq!(
        stdout(&plain),
        "Ssl_cipher\t\nSsl_verify_mode\t0\nSsl_version\t\n",
        "{}",
        stderr(&plain)
    );
}

#[test]
fn ssl_status_is_the_client_links_with_backend_tls_off() {
    let proxy = Proxy::start();
    the_client_links_tls_is_shown(&proxy);
}

/// `frontend_tls.ciphers` is what clients get: with AES-256-GCM listed alone, the
/// mariadb client negotiates it and the link's status shows it; by default the proxy's
/// order puts AES-128-GCM first.
#[test]
fn the_configured_cipher_suites_are_what_clients_negotiate() {
    let query = "SHOW STATUS WHERE Variable_name IN ('Ssl_cipher', 'Ssl_cipher_list')";
    let proxy = Proxy::start();
    assert_eq!(
        tls_status(&proxy, query).lines().next(),
        Some("Ssl_cipher\tTLS_AES_128_GCM_SHA256")
    );
    let proxy = Proxy::start_with(|c| {
        c.replacen(
            "client_ca = ",
            "ciphers = [\"TLS_AES_256_GCM_SHA384\", \"ECDHE-ECDSA-AES256-GCM-SHA384\"]\nclient_ca = ",
            1,
        )
    });
    assert_eq!(
        tls_status(&proxy, query),
        "Ssl_cipher\tTLS_AES_256_GCM_SHA384\n\
         Ssl_cipher_list\tTLS_AES_256_GCM_SHA384:ECDHE-ECDSA-AES256-GCM-SHA384\n"
    );
}

/// A client that offers the TLS session it was given (OpenSSL, through CPython's `ssl`)
/// resumes it — the proxy gives stateless tickets — and its link's `Ssl_sessions_reused`
/// says so.
#[test]
fn a_returning_tls_client_resumes_its_session_and_the_status_says_so() {
    let proxy = Proxy::start();
    let mut resume = std::process::Command::new(python());
    resume
        .arg(repo().join("tests/driver/tls_resume.py"))
        .arg(proxy.port.to_string())
        .arg(repo().join("certs/ca.pem"));
    assert_eq!(
        succeeds(resume, "tls_resume.py", &proxy),
        "first reused=0 status=0\nsecond reused=1 status=1\n"
    );
}

#[test]
fn ssl_status_is_the_client_links_with_backend_tls_on() {
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "max_connections = 1000",
            "max_connections = 1000\ntls = true",
        )
    });
    the_client_links_tls_is_shown(&proxy);
}
