//! Who may connect, from where, and what a hostile client can do: per-user networks,
//! client certificates, failed-login throttling, connection caps, idle and handshake
//! timeouts, the connection log. Source addresses are picked within 127.0.0.0/8 with the
//! client's --bind-address.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{expect_err, mariadb, repo, stderr, stdout, Proxy, RawClient};

/// Logs in from `source`; the error code if refused.
fn login_from(proxy: &Proxy, source: &str, user: &str, password: &str) -> Result<RawClient, u16> {
    RawClient::login_from(proxy.port, source, user, password).map_err(|e| e.code)
}

/// `app_tls` runs `sql` over verified TLS, presenting the certificate `cert` (a name in
/// certs/, with its `-key` file) when given.
fn app_tls(proxy: &Proxy, cert: Option<&str>, sql: &str) -> std::process::Output {
    let certs = repo().join("certs");
    let mut args = vec![
        "-uapp_tls".to_string(),
        "-papp_tls".to_string(),
        "--ssl".to_string(),
        format!("--ssl-ca={}", certs.join("ca.pem").display()),
    ];
    if let Some(cert) = cert {
        args.push(format!(
            "--ssl-cert={}",
            certs.join(format!("{cert}.pem")).display()
        ));
        args.push(format!(
            "--ssl-key={}",
            certs.join(format!("{cert}-key.pem")).display()
        ));
    }
    args.extend(["-e".to_string(), sql.to_string()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    mariadb(proxy.port, &refs)
}

#[test]
fn a_user_is_refused_outside_its_networks_like_a_bad_password() {
    let proxy = Proxy::start();
    let mut ok = login_from(&proxy, "127.0.0.1", "app_local", "app_local").expect("from 127.0.0.1");
    assert_eq!(
        ok.query_column("SELECT CURRENT_USER()"),
        vec!["app_local@127.0.0.1"]
    );
    let refused =
        RawClient::login_from(proxy.port, "127.0.0.2", "app_local", "app_local").unwrap_err();
    assert_eq!(refused.code, 1045);
    assert_eq!(
        refused.message,
        "Access denied for user 'app_local'@'127.0.0.2' (using password: YES)"
    );
    // a user without a network list may come from anywhere in 127/8
    assert!(login_from(&proxy, "127.0.0.2", "app", "app").is_ok());
    assert!(proxy.log_shows("not allowed from this network"));
}

#[test]
fn client_certificates_are_required_verified_and_matched() {
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "name = \"app_tls\"",
            "name = \"app_tls\"\nrequire_client_cert = true\ncert_subject = \"/O=Sluice test/CN=app_tls\"\ncert_issuer = \"/O=Sluice test/CN=Sluice test CA\"",
        )
    });
    let good = app_tls(&proxy, Some("client"), "SELECT CURRENT_USER()");
    assert!(good.status.success(), "{}\n{}", stderr(&good), proxy.log());
    assert_eq!(stdout(&good), "app_tls@127.0.0.1\n");

    // TLS without a certificate: refused like a bad password
    let without = app_tls(&proxy, None, "SELECT 1");
    assert!(
        stderr(&without).contains("ERROR 1045"),
        "{}",
        stderr(&without)
    );

    // a certificate from another CA does not get through the TLS handshake
    let foreign = app_tls(&proxy, Some("other-client"), "SELECT 1");
    assert!(!foreign.status.success());
    assert!(
        !stderr(&foreign).contains("1045"),
        "refused by TLS, before any login: {}",
        stderr(&foreign)
    );
    assert!(proxy.log_shows("user requires a client certificate"));
}

#[test]
fn a_certificate_with_the_wrong_subject_is_refused() {
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "name = \"app_tls\"",
            "name = \"app_tls\"\ncert_subject = \"/O=Sluice test/CN=someone_else\"",
        )
    });
    let out = app_tls(&proxy, Some("client"), "SELECT 1");
    assert!(stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    assert!(proxy.log_shows("subject does not match"));
}

#[test]
fn ten_bad_passwords_block_an_address_while_others_are_served() {
    let proxy = Proxy::start_with(|c| c.replace("block_ms = 60000", "block_ms = 2000"));
    for _ in 0..10 {
        assert_eq!(
            login_from(&proxy, "127.0.0.3", "app", "wrong").err(),
            Some(1045)
        );
    }
    let blocked_at = Instant::now();
    assert_eq!(
        login_from(&proxy, "127.0.0.3", "app", "app").err(),
        Some(1129),
        "the right password is refused while blocked"
    );
    assert!(
        login_from(&proxy, "127.0.0.1", "app", "app").is_ok(),
        "another address is served"
    );
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(blocked_at.elapsed()));
    let mut back = login_from(&proxy, "127.0.0.3", "app", "app").expect("after the block");
    assert_eq!(back.query_column("SELECT 'back'"), vec!["back"]);
}

#[test]
fn per_address_and_per_user_connection_caps() {
    let proxy = Proxy::start_with(|c| {
        c.replacen("listen =", "max_connections_per_address = 2\nlisten =", 1)
    });
    let held: Vec<RawClient> = (0..2)
        .map(|_| login_from(&proxy, "127.0.0.4", "app", "app").unwrap())
        .collect();
    let mut third = RawClient::connect_from(proxy.port, "127.0.0.4");
    let err = expect_err(&third.read().unwrap());
    assert_eq!(err.code, 1040);
    assert!(err.message.contains("127.0.0.4"), "{err}");
    assert!(
        login_from(&proxy, "127.0.0.5", "app", "app").is_ok(),
        "other addresses are served"
    );
    drop(held);

    // per user: app_local may hold one connection
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "name = \"app_local\"",
            "name = \"app_local\"\nmax_connections = 1",
        )
    });
    let first = RawClient::login(proxy.port, "app_local", "app_local").unwrap();
    let err = RawClient::login(proxy.port, "app_local", "app_local").expect_err("refused");
    assert_eq!(err.code, 1203);
    assert_eq!(
        err.message,
        "User app_local already has more than 'max_user_connections' active connections"
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(100));
    assert!(RawClient::login(proxy.port, "app_local", "app_local").is_ok());
}

#[test]
fn idle_clients_are_disconnected() {
    let proxy = Proxy::start_with(|c| c.replacen("listen =", "idle_timeout_ms = 500\nlisten =", 1));
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    std::thread::sleep(Duration::from_millis(900));
    let err = expect_err(&c.read().expect("an error before the close"));
    assert_eq!(err.code, 4031);
    assert!(c.read().is_none());
}

fn sysbench(port: u16, args: &[&str]) -> std::process::Output {
    common::sysbench(port, "oltp_point_select", "slowloris", args)
}

#[test]
fn slowloris_sockets_are_closed_while_sysbench_runs_without_errors() {
    let proxy =
        Proxy::start_with(|c| c.replacen("listen =", "handshake_timeout_ms = 2000\nlisten =", 1));
    // its own database: other tests use sbtest's sysbench tables at the same time
    common::direct_ok("CREATE DATABASE IF NOT EXISTS slowloris");
    let _ = sysbench(proxy.port, &["cleanup"]);
    let out = sysbench(proxy.port, &["prepare"]);
    assert!(
        out.status.success(),
        "prepare: {}{}",
        stdout(&out),
        stderr(&out)
    );
    common::replicas_caught_up();
    let started = Instant::now();
    let silent: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.port)).unwrap())
        .collect();
    let run = sysbench(
        proxy.port,
        &[
            "--threads=4",
            "--time=5",
            "--mysql-ignore-errors=none",
            "run",
        ],
    );
    assert!(
        run.status.success(),
        "sysbench under slowloris: {}{}",
        stdout(&run),
        stderr(&run)
    );
    assert!(
        stdout(&run).contains("ignored errors:                      0"),
        "{}",
        stdout(&run)
    );
    // every silent socket gets its greeting and is then closed by the proxy
    let mut open = 0;
    for mut s in silent {
        let left = Duration::from_secs(4).saturating_sub(started.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(50))))
            .unwrap();
        let mut drained = Vec::new();
        if std::io::Read::read_to_end(&mut s, &mut drained).is_err() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} silent sockets were still open");
    let _ = sysbench(proxy.port, &["cleanup"]);
}

#[test]
fn the_connection_log_records_each_outcome_without_secrets() {
    let dir = std::env::temp_dir().join(format!("sluice-connlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("connections.log");
    let log_path = log.display().to_string();
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "connection_log = \"off\"",
            &format!("connection_log = \"{log_path}\""),
        )
    });
    let ca = format!("--ssl-ca={}", repo().join("certs/ca.pem").display());
    assert!(mariadb(
        proxy.port,
        &["-uapp_tls", "-papp_tls", "--ssl", &ca, "-e", "SELECT 1"]
    )
    .status
    .success());
    mariadb(proxy.port, &["-uapp", "-pnot-this-one", "-e", "SELECT 1"]);
    assert!(login_from(&proxy, "127.0.0.2", "app_local", "app_local").is_err());
    let mut junk = RawClient::connect(proxy.port);
    junk.greeting();
    junk.write(1, b"junk, not a handshake response");
    while junk.read().is_some() {}
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let complete = [
            "accepted",
            "wrong password",
            "not allowed from this network",
            "bad handshake",
        ]
        .iter()
        .all(|t| text.contains(t));
        if complete || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |user: &str, result: &str| {
        lines
            .iter()
            .find(|l| l["user"] == user && l["result"] == result)
            .unwrap_or_else(|| panic!("no {result} line for {user} in:\n{text}"))
    };
    let tls = find("app_tls", "accepted");
    assert!(
        tls["tls_version"].as_str().unwrap().starts_with("TLSv1"),
        "{tls}"
    );
    assert!(
        tls["tls_cipher"].as_str().unwrap().starts_with("TLS"),
        "{tls}"
    );
    assert!(tls["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(find("app", "refused")["reason"], "wrong password");
    let network = find("app_local", "refused");
    assert_eq!(network["reason"], "not allowed from this network");
    assert_eq!(network["client"], "127.0.0.2");
    assert!(
        lines.iter().any(|l| l["reason"] == "bad handshake"),
        "{text}"
    );
    assert!(!text.contains("not-this-one"), "a password leaked:\n{text}");
    for line in &lines {
        for key in line.as_object().unwrap().keys() {
            assert!(
                [
                    "time",
                    "client",
                    "port",
                    "user",
                    "tls_version",
                    "tls_cipher",
                    "result",
                    "reason"
                ]
                .contains(&key.as_str()),
                "unexpected field {key}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends `frames` maximal frames of one COM_QUERY packet (16 MiB each) as fast as the
/// proxy takes them; returns the first packet the proxy answered, if any arrived.
fn send_huge_query(port: u16, frames: usize) -> Option<common::RawPacket> {
    let mut c = RawClient::login(port, "app", "app").unwrap();
    let writer = c.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        let chunk = vec![b' '; 1 << 20];
        for seq in 0..frames {
            let mut header = vec![0xFF, 0xFF, 0xFF, seq as u8];
            if seq == 0 {
                header.extend_from_slice(b"\x03SELECT 1 -- ");
            }
            if std::io::Write::write_all(&mut writer, &header).is_err() {
                return;
            }
            let body = (1 << 24) - 1 - if seq == 0 { 13 } else { 0 };
            let mut left = body;
            while left > 0 {
                let n = left.min(chunk.len());
                if std::io::Write::write_all(&mut writer, &chunk[..n]).is_err() {
                    return;
                }
                left -= n;
            }
        }
    });
    let answer = c.read();
    let _ = sender.join();
    answer
}

#[test]
fn a_huge_packet_is_refused_without_the_proxy_buffering_it() {
    // refused from the first header when one frame already exceeds the limit
    let proxy =
        Proxy::start_with(|c| c.replacen("listen =", "max_allowed_packet = 4194304\nlisten =", 1));
    let err = expect_err(&send_huge_query(proxy.port, 64).expect("an answer"));
    assert_eq!(err.code, 1153);

    // with the default 64 MiB limit, 1 GiB announced frame by frame: streamed, never held
    let proxy = Proxy::start();
    let before = proxy.rss_kib();
    // the answer is ERR 1153, unless the client's own flood resets the connection first
    let answer = send_huge_query(proxy.port, 64);
    eprintln!("answer to 1 GiB: {answer:?}");
    if let Some(answer) = answer {
        assert_eq!(expect_err(&answer).code, 1153);
    }
    let grown = proxy.rss_kib().saturating_sub(before);
    eprintln!("RSS grew by {grown} KiB while refusing 1 GiB");
    assert!(grown < 8 * 1024, "the proxy grew by {grown} KiB");
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    assert_eq!(
        c.query_column("SELECT 'still serving'"),
        vec!["still serving"]
    );
}

#[test]
fn churn_of_20000_connections_leaves_sysbench_unharmed_and_memory_where_it_was() {
    let proxy = Proxy::start_with(|c| c.replace("max_failures = 10", "max_failures = 100000"));
    common::direct_ok("CREATE DATABASE IF NOT EXISTS churn");
    let bench = |args: &[&str]| common::sysbench(proxy.port, "oltp_point_select", "churn", args);
    let _ = bench(&["cleanup"]);
    assert!(bench(&["prepare"]).status.success());
    common::replicas_caught_up();

    let port = proxy.port;
    let churn = move |connections: usize| {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..connections / 4 {
                        if (i + t) % 2 == 0 {
                            // mid-handshake: take the greeting and leave
                            let mut c = RawClient::connect(port);
                            c.greeting();
                        } else {
                            let c =
                                RawClient::login(port, "app", "app").expect("login during churn");
                            drop(c);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    };
    // warm up, so that the baseline includes the allocator's steady state
    churn(2000);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = proxy.rss_kib();

    let sysbench = std::thread::spawn(move || {
        common::sysbench(
            port,
            "oltp_point_select",
            "churn",
            &[
                "--threads=2",
                "--time=15",
                "--mysql-ignore-errors=none",
                "run",
            ],
        )
    });
    let started = Instant::now();
    churn(20_000);
    let churned_in = started.elapsed();
    let run = sysbench.join().unwrap();
    assert!(
        run.status.success(),
        "sysbench during churn: {}{}",
        stdout(&run),
        stderr(&run)
    );
    assert!(
        stdout(&run).contains("ignored errors:                      0"),
        "{}",
        stdout(&run)
    );

    std::thread::sleep(Duration::from_secs(1));
    let after = proxy.rss_kib();
    eprintln!("20,000 connections churned in {churned_in:?}; RSS {baseline} KiB before, {after} KiB after");
    assert!(
        after <= baseline + baseline / 10,
        "RSS grew from {baseline} KiB to {after} KiB"
    );
    let _ = bench(&["cleanup"]);
}
