//! The local cluster's nodes as tests that fault them see them: their processes, signals
//! to them, SQL straight to one, and bringing the cluster back whole.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{mariadb, repo, stderr, stdout, Proxy, RawClient};

pub fn cluster_dir() -> String {
    std::env::var("SLUICE_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/sluice-cluster".into())
}

pub fn node_name(port: u16) -> &'static str {
    match port {
        13306 => "node1",
        13307 => "node2",
        13308 => "node3",
        13309 => "replica1",
        13310 => "replica2",
        _ => panic!("no node on port {port}"),
    }
}

pub fn pid(port: u16) -> String {
    let path = format!("{}/{}/started.pid", cluster_dir(), node_name(port));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

pub fn signal(port: u16, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid(port)])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {}", node_name(port));
}

/// Restarts whatever is down and waits until the cluster is whole again.
pub fn cluster_up() {
    let out = Command::new(repo().join("scripts/cluster.sh"))
        .arg("up")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster.sh up: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Runs SQL directly on one node, as the app user (it has all privileges).
pub fn on_node(port: u16, sql: &str) -> String {
    let out = mariadb(port, &["-uapp", "-papp", "-e", sql]);
    assert!(out.status.success(), "{sql} on {port}: {}", stderr(&out));
    stdout(&out)
}

/// The port of the current writer, as the proxy routes writes.
pub fn writer_port(proxy: &Proxy) -> String {
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    c.query_column("SELECT @@port FOR UPDATE")[0].clone()
}

/// Polls `check` every 100 ms until it holds, for at most `limit`.
pub fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// A fault of a node, and its undoing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// `kill -9`: its connections are reset at once.
    Kill,
    /// SIGSTOP: nothing answers, nothing is reset; only timeouts find it.
    Stop,
    /// `wsrep_desync = ON`: it still works, but may fall behind.
    Desync,
    /// `gmcast.isolate`: cut off from its peers, it leaves the primary component and
    /// refuses statements (ERR 1047, 1180) while its connections stay open.
    Isolate,
}

/// A fault in place on a node. [`Applied::undo`] undoes it and waits until the cluster is
/// whole again; dropped without that — a test failed with the fault in place — it is
/// undone as far as it can be without asserting anything (a signal, a setting,
/// `cluster.sh up`), so that the tests after it do not find a node still down.
#[must_use = "a fault stays in place until `undo`"]
pub struct Applied {
    fault: Fault,
    port: u16,
    settled: bool,
}

impl Applied {
    pub fn undo(mut self) {
        self.settled = true;
        self.fault.undo(self.port);
    }

    /// The fault was overtaken by another one on the same node (a stopped node killed):
    /// undoing that one brings the node back.
    pub fn superseded(mut self) {
        self.settled = true;
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // this runs while a test unwinds: nothing here may panic
        eprintln!(
            "undoing {:?} of {} left in place",
            self.fault,
            node_name(self.port)
        );
        let sql = |sql: &str| {
            let _ = Command::new("mariadb")
                .args(["--no-defaults", "-h127.0.0.1", &format!("-P{}", self.port)])
                .args(["-uapp", "-papp", "-e", sql])
                .output();
        };
        match self.fault {
            Fault::Kill => {}
            Fault::Stop => {
                let path = format!("{}/{}/started.pid", cluster_dir(), node_name(self.port));
                if let Ok(pid) = std::fs::read_to_string(path) {
                    let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
                }
            }
            Fault::Desync => sql("SET GLOBAL wsrep_desync = OFF"),
            Fault::Isolate => sql("SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'"),
        }
        let _ = Command::new(repo().join("scripts/cluster.sh"))
            .arg("up")
            .output();
    }
}

impl Fault {
    pub fn apply(self, port: u16) -> Applied {
        self.put_in_place(port);
        Applied {
            fault: self,
            port,
            settled: false,
        }
    }

    fn put_in_place(self, port: u16) {
        match self {
            Fault::Kill => signal(port, "KILL"),
            Fault::Stop => signal(port, "STOP"),
            Fault::Desync => {
                on_node(port, "SET GLOBAL wsrep_desync = ON");
            }
            Fault::Isolate => {
                on_node(
                    port,
                    "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=1'",
                );
            }
        }
    }

    fn undo(self, port: u16) {
        let rejoined = |what: &str| {
            eventually(Duration::from_secs(60), what, || {
                let view = |p: u16| {
                    let out = mariadb(p, &["-uapp", "-papp", "-e", "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('wsrep_cluster_conf_id', 'wsrep_cluster_size', 'wsrep_local_state') ORDER BY VARIABLE_NAME"]);
                    out.status.success().then(|| stdout(&out))
                };
                let (node, survivor) = (view(port), view(13308));
                node.is_some() && node == survivor && survivor.unwrap().contains("\n3\n4\n")
            })
        };
        match self {
            Fault::Kill => {}
            Fault::Isolate => {
                on_node(
                    port,
                    "SET GLOBAL wsrep_provider_options = 'gmcast.isolate=0'",
                );
                rejoined("the isolated node rejoined");
            }
            Fault::Stop => {
                signal(port, "CONT");
                // it wakes up believing it is still in the old primary component: wait
                // until it has been through the survivors' views back into theirs
                rejoined("the stopped node rejoined");
            }
            Fault::Desync => {
                on_node(port, "SET GLOBAL wsrep_desync = OFF");
            }
        }
        // a killed node is started again; a stopped one, partitioned away meanwhile,
        // rejoins by itself: either way the cluster is whole again before the next round
        cluster_up();
    }
}
