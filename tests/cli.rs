//! The `mariadb` command-line client through Sluice, and the `sluice` command line itself.

mod common;

use common::{mariadb, repo, stderr, stdout, Proxy};
use std::process::Command;

#[test]
fn plain_login_runs_queries() {
    let proxy = Proxy::start();
    let out = mariadb(
        proxy.port,
        &["-uapp", "-papp", "-e", "SELECT DATABASE(); SELECT 1 + 1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "sbtest\n2\n");
}

#[test]
fn tls_login_verifies_the_proxy_certificate() {
    let proxy = Proxy::start();
    let ca = repo().join("certs/ca.pem");
    let out = mariadb(
        proxy.port,
        &[
            "-uapp_tls",
            "-papp_tls",
            "--ssl",
            &format!("--ssl-ca={}", ca.display()),
            "--ssl-verify-server-cert",
            "-e",
            "SELECT CURRENT_USER(); \\s",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("app_tls@127.0.0.1\n"), "{text}");
    assert!(
        text.contains("Cipher in use is TLS_"),
        "no TLS in status: {text}"
    );
}

#[test]
fn tls_with_an_unknown_ca_is_refused_by_the_client() {
    let proxy = Proxy::start();
    let other = repo().join("certs/other-ca.pem");
    let out = mariadb(
        proxy.port,
        &[
            "-uapp",
            "-papp",
            "--ssl",
            &format!("--ssl-ca={}", other.display()),
            "--ssl-verify-server-cert",
            "-e",
            "SELECT 1",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ERROR 2026"), "{}", stderr(&out));
}

#[test]
fn require_tls_user_is_refused_without_tls() {
    let proxy = Proxy::start();
    let out = mariadb(
        proxy.port,
        &["-uapp_tls", "-papp_tls", "--skip-ssl", "-e", "SELECT 1"],
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "ERROR 1045 (28000): Access denied for user 'app_tls'@'127.0.0.1' (using password: YES)"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_1045() {
    let proxy = Proxy::start();
    let out = mariadb(
        proxy.port,
        &["-uapp", "-pnot-the-password", "-e", "SELECT 1"],
    );
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1' (using password: YES)"
    );
    let out = mariadb(proxy.port, &["-unobody", "-pwhatever", "-e", "SELECT 1"]);
    assert_eq!(
        stderr(&out).trim(),
        "ERROR 1045 (28000): Access denied for user 'nobody'@'127.0.0.1' (using password: YES)"
    );
    let out = mariadb(proxy.port, &["-uapp", "-e", "SELECT 1"]);
    assert!(
        stderr(&out).contains("(using password: NO)"),
        "{}",
        stderr(&out)
    );
    assert!(
        proxy.log_shows("wrong password"),
        "the log names the reason"
    );
}

#[test]
fn backend_errors_reach_the_client_unchanged() {
    let proxy = Proxy::start();
    let out = mariadb(
        proxy.port,
        &["-uapp", "-papp", "-e", "SELECT * FROM no_such_table"],
    );
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message
            .trim_end()
            .ends_with("ERROR 1146 (42S02) at line 1: Table 'sbtest.no_such_table' doesn't exist"),
        "{message}"
    );
}

#[test]
fn use_database_and_admin_commands() {
    let proxy = Proxy::start();
    // `use` is COM_INIT_DB in the client
    let out = mariadb(
        proxy.port,
        &["-uapp", "-papp", "-e", "use mysql\nSELECT DATABASE()"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "mysql\n");
    // COM_PING and COM_STATISTICS through mariadb-admin
    let admin = |cmd: &str| {
        Command::new("mariadb-admin")
            .args([
                "--no-defaults",
                "-h127.0.0.1",
                &format!("-P{}", proxy.port),
                "-uapp",
                "-papp",
                cmd,
            ])
            .output()
            .unwrap()
    };
    let ping = admin("ping");
    assert!(ping.status.success(), "{}", stderr(&ping));
    assert!(stdout(&ping).contains("mysqld is alive"));
    let status = admin("status");
    assert!(stdout(&status).contains("Uptime:"), "{}", stdout(&status));
}

fn sluice(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_shipped_configs() {
    for file in ["config/sluice.toml", "config/reference.toml"] {
        let path = repo().join(file);
        let out = sluice(&["check-config", "--config", path.to_str().unwrap()]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
    }
    // the compose layout's config, with the certificates it mounts beside it
    let dir = std::env::temp_dir().join(format!("sluice-compose-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    for file in ["sluice.toml", "monitor.secret", "cluster.secret"] {
        std::fs::copy(repo().join("docker/compose").join(file), dir.join(file)).unwrap();
    }
    for file in ["server.pem", "server-key.pem"] {
        std::fs::copy(
            repo().join("certs").join(file),
            dir.join("certs").join(file),
        )
        .unwrap();
    }
    let out = sluice(&[
        "check-config",
        "--config",
        dir.join("sluice.toml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "docker/compose/sluice.toml: {}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[servers]]\nhost = \"127.0.0.1\"\nhostgroup = 1\n\n[[users]]\nname = \"app\"\npassword = \"app\"\ndefault_hostgroup = 1\n",
    )
    .unwrap();
    let out = sluice(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("users[0].password"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&path, "[proxy]\nlisten = 5\n").unwrap();
    let out = sluice(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("listen"), "{}", stderr(&out));
    // [cluster] is checked too: an unknown key, a missing password file
    let reference = std::fs::read_to_string(repo().join("config/reference.toml")).unwrap();
    let config_dir = repo().join("config");
    let reference = reference
        .replace("\"../certs/", &format!("\"{}/certs/", repo().display()))
        .replace(
            "\"monitor.secret\"",
            &format!("\"{}/monitor.secret\"", config_dir.display()),
        )
        .replace(
            "\"cluster.secret\"",
            &format!("\"{}/cluster.secret\"", config_dir.display()),
        );
    std::fs::write(&path, &reference).unwrap();
    let out = sluice(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (change, named) in [
        (
            ("interval_ms = 1000", "interval_ms = 1000\nsyncing = true"),
            "syncing",
        ),
        (
            ("config/cluster.secret", "config/missing.secret"),
            "cluster.password_file",
        ),
    ] {
        std::fs::write(&path, reference.replace(change.0, change.1)).unwrap();
        let out = sluice(&["check-config", "--config", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{named}");
        assert!(stderr(&out).contains(named), "{}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn version_prints_the_crate_version() {
    let out = sluice(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("sluice {}\n", env!("CARGO_PKG_VERSION"))
    );
}
