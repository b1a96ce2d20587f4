//! The Prometheus endpoint: what it exposes passes `promtool check metrics`, a real
//! Prometheus server (Debian's) scrapes it and sees the query counter rise, and `/health`
//! says whether a writer is known.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, mariadb, stderr, Proxy};

/// `GET path` over plain HTTP/1.1: the status code and the body.
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_exposition_passes_promtool_and_counts_what_happened() {
    let proxy = Proxy::start();
    for _ in 0..3 {
        let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", "SELECT 1"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = mariadb(proxy.port, &["-uapp", "-pwrong", "-e", "SELECT 1"]);
    assert!(!out.status.success());
    let (status, body) = common::http_get(proxy.metrics_port, "/metrics");
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        value(&body, "sluice_queries_total{kind=\"select\"}").unwrap() >= 3.0,
        "{body}"
    );
    assert!(value(&body, "sluice_client_logins_total").unwrap() >= 3.0);
    assert!(value(&body, "sluice_commands_total{command=\"Query\"}").unwrap() >= 3.0);
    assert_eq!(
        value(
            &body,
            "sluice_client_connections_refused_total{reason=\"failed_login\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "sluice_errors_total{code=\"1045\"}"),
        None,
        "login refusals are not session errors"
    );
    assert!(body.contains("sluice_query_duration_seconds_bucket{hostgroup=\"20\",le=\"0.001\"}"));
    assert_eq!(
        value(
            &body,
            "sluice_server_role{hostgroup=\"10\",role=\"writer\",server=\"127.0.0.1:13306\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&body, "sluice_server_up{server=\"127.0.0.1:13309\"}"),
        Some(1.0)
    );
    assert!(value(
        &body,
        "sluice_backend_queries_total{server=\"127.0.0.1:13309\"}"
    )
    .is_some());
    assert_eq!(common::http_get(proxy.metrics_port, "/nothing").0, 404);
}

#[test]
fn health_says_ready_only_with_a_writer() {
    let proxy = Proxy::start();
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::http_get(proxy.metrics_port, "/health").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // a cluster whose only node does not exist never has a writer
    let dead = Proxy::start_with(|c| {
        let mut c = c.replace("port = 13306\nhostgroup = 10", "port = 1\nhostgroup = 10");
        c = c.replace("port = 13307\nhostgroup = 10", "port = 2\nhostgroup = 10");
        c.replace("port = 13308\nhostgroup = 10", "port = 3\nhostgroup = 10")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = common::http_get(dead.metrics_port, "/health");
    assert_eq!((status, body.as_str()), (503, "no writer\n"));
}

/// A Prometheus server of our own, on a free port, scraping the proxy every second.
struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sluice-prometheus-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus is installed");
        Prometheus { child, port, dir }
    }

    /// The value of an instant query with one result, if there is one yet.
    fn query(&self, expr: &str) -> Option<f64> {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(tcp, "GET /api/v1/query?query={encoded} HTTP/1.0\r\n\r\n").ok()?;
        let mut response = String::new();
        tcp.read_to_string(&mut response).ok()?;
        let body = response.split_once("\r\n\r\n")?.1;
        let json: serde_json::Value = serde_json::from_str(body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_real_prometheus_scrapes_the_query_counter_rising() {
    let proxy = Proxy::start();
    let prometheus = Prometheus::start(proxy.metrics_port);
    let series = "sluice_queries_total{kind=\"select\"}";
    let wait_for = |what: &str, check: &dyn Fn(f64) -> bool| -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = prometheus.query(series).filter(|v| check(*v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "Prometheus never saw {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let before = wait_for("a first scrape", &|_| true);
    for _ in 0..5 {
        let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", "SELECT 1"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let after = wait_for("the counter rise", &|v| v >= before + 5.0);
    assert!(after >= before + 5.0);
    assert_eq!(prometheus.query("up{job=\"sluice\"}"), Some(1.0));
}

/// The alerting and recording rules shipped in config/prometheus: valid, their own
/// promtool tests pass (each alert fires and stays silent where it should), and every
/// metric they read is one the proxy exposes — a renamed metric would leave an alert
/// that can never fire.
#[test]
fn the_shipped_alert_rules_pass_promtool_and_read_metrics_that_exist() {
    let dir = common::repo().join("config/prometheus");
    for args in [
        ["check", "rules", "sluice-rules.yml"],
        ["test", "rules", "sluice-rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    let rules = std::fs::read_to_string(dir.join("sluice-rules.yml")).unwrap();
    let mut read: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("sluice_"))
        .collect();
    read.sort_unstable();
    read.dedup();
    assert!(read.len() >= 12, "{read:?}");
    // a proxy with TLS, a monitor and a cluster store: every family the rules read
    let proxy = Proxy::start_with(|c| c + &common::cluster::cluster_section("rules"));
    // a statement for the latency histogram; the monitor's checks for server state and lag
    let out = mariadb(proxy.port, &["-uapp", "-papp", "-e", "SELECT 1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = common::http_get(proxy.metrics_port, "/metrics");
        let missing: Vec<&&str> = read
            .iter()
            .filter(|name| {
                let family = name.trim_end_matches("_bucket");
                !body.contains(&format!("# TYPE {family} "))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules read metrics /metrics lacks: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
