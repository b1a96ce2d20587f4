//! TLS from Sluice to MariaDB, with the backend certificate verified against the CA.

mod common;

use common::{mariadb, repo, stderr, stdout, Proxy};

/// TLS to every Galera node (each has `max_connections = 1000` in the demo config).
fn with_backend_tls(config: String) -> String {
    config.replace(
        "max_connections = 1000",
        "max_connections = 1000\ntls = true",
    )
}

/// TLS handshakes the writer node has finished with its clients.
fn writer_tls_accepts() -> u64 {
    let out = mariadb(
        13306,
        &[
            "-uapp",
            "-papp",
            "--skip-ssl",
            "-e",
            "SHOW GLOBAL STATUS LIKE 'Ssl_finished_accepts'",
        ],
    );
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn backend_connections_use_verified_tls_when_configured() {
    // the session's own SHOW STATUS describes the client link (see tests/diagnostics.rs):
    // the backend's TLS shows in the server's count of finished handshakes
    let before = writer_tls_accepts();
    let proxy = Proxy::start_with(with_backend_tls);
    let out = mariadb(
        proxy.port,
        &[
            "-uapp",
            "-papp",
            "--skip-ssl",
            "-e",
            "BEGIN; SELECT @@port; COMMIT",
        ],
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), proxy.log());
    assert_eq!(stdout(&out), "13306\n");
    assert!(
        writer_tls_accepts() > before,
        "no TLS handshake on the writer: backend session not on TLS"
    );
}

#[test]
fn a_backend_certificate_from_another_ca_is_refused() {
    let other = repo().join("certs/other-ca.pem");
    let proxy = Proxy::start_with(|c| {
        with_backend_tls(c)
            .replace(
                &format!("\nca = \"{}\"", repo().join("certs/ca.pem").display()),
                &format!("\nca = \"{}\"", other.display()),
            )
            .replace("[proxy]\n", "[proxy]\nfailover_wait_ms = 500\n")
    });
    // the replicas (no TLS) still serve reads: a locking read needs the writer
    let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", "SELECT 1 FOR UPDATE"]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(message.contains("ERROR 9001"), "{message}");
    assert!(
        message.contains("hostgroup 10") && message.contains("TLS"),
        "{message}"
    );
}
