//! Health and failover against the real cluster: killed, hung, desynced, rejecting and
//! lagging servers; and what must go on while a server is stopped (query cache hits, a
//! client whose statements are mirrored to the stopped server). These tests stop and start servers of the shared local cluster, so
//! `scripts/test.sh` runs them alone, one at a time, after the rest of the suite.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::binary::{binary_result, execute_body, prepare};
use common::nodes::{cluster_dir, cluster_up, eventually, on_node, signal, writer_port, Fault};
use common::{read_ports, stat, stderr, Proxy, RawClient};
use sluice::protocol::constants::{command, header};

/// Clients inserting rows as fast as they can, each on its own connection (reconnecting
/// after errors), recording when each insert was acknowledged. Client `i` of source `s`
/// writes rows (src = "s-i", n = 1, 2, …).
struct WriteLoop {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, u64, Instant)>>>,
    /// When each statement that failed was sent.
    failed: Arc<Mutex<Vec<Instant>>>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl WriteLoop {
    fn start(port: u16, source: &str, clients: usize) -> WriteLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..clients)
            .map(|i| {
                let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
                let src = format!("{source}-{i}");
                thread::spawn(move || write_rows(port, &src, &stop, &acked, &failed))
            })
            .collect();
        WriteLoop {
            stop,
            acked,
            failed,
            handles,
        }
    }

    /// Statements sent after `t` that failed.
    fn failed_after(&self, t: Instant) -> usize {
        self.failed
            .lock()
            .unwrap()
            .iter()
            .filter(|at| **at > t)
            .count()
    }

    fn acked_after(&self, t: Instant) -> usize {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, at)| *at > t)
            .count()
    }

    /// Stops the clients; returns the acknowledged rows and the longest pause between two
    /// acknowledgements from `t` on (the stall around a fault at `t`).
    fn finish(self, t: Instant) -> (BTreeSet<(String, u64)>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle.join().unwrap();
        }
        let acked = self.acked.lock().unwrap();
        let mut times: Vec<Instant> = acked.iter().map(|(_, _, at)| *at).collect();
        times.sort();
        let from = times.iter().rposition(|at| *at <= t).unwrap_or(0);
        let stall = times[from..]
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .expect("writes before and after the fault");
        let rows = acked.iter().map(|(src, n, _)| (src.clone(), *n)).collect();
        (rows, stall)
    }
}

/// One client of a [`WriteLoop`].
fn write_rows(
    port: u16,
    src: &str,
    stop: &AtomicBool,
    acked: &Mutex<Vec<(String, u64, Instant)>>,
    failed: &Mutex<Vec<Instant>>,
) {
    let mut n = 0u64;
    let mut client: Option<RawClient> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match client.as_mut() {
            Some(c) => c,
            None => match RawClient::try_login(port, "app", "app") {
                Some(c) => client.insert(c),
                None => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        n += 1;
        let sql = format!("INSERT INTO failover_writes (src, n) VALUES ('{src}', {n})");
        let sent = Instant::now();
        match c.try_query(&sql) {
            Some(p) if p[0].payload[0] == header::OK => {
                acked
                    .lock()
                    .unwrap()
                    .push((src.to_owned(), n, Instant::now()))
            }
            Some(_) => {
                failed.lock().unwrap().push(sent);
                thread::sleep(Duration::from_millis(20))
            }
            None => {
                failed.lock().unwrap().push(sent);
                client = None
            }
        }
    }
}

/// What one round of [`writer_fault_under_write_load`] saw.
struct Round {
    /// The longest pause in acknowledgements around the fault: through the proxy, and of
    /// a client writing straight to a surviving node (Galera's own stall).
    proxy_stall: Duration,
    cluster_stall: Duration,
    /// Client errors through the proxy: all, and of statements sent after the fault.
    errors: usize,
    errors_after: usize,
}

/// Faults the writer `rounds` times while 4 clients insert through the proxy and one
/// straight into node3 (never the writer here: lowest priority; never faulted: the
/// replicas follow it). Asserts, each round: no statement sent after the fault failed,
/// every acknowledged row is on the survivors, the writer moved and did not fail back.
fn writer_fault_under_write_load(fault: Fault, rounds: usize) -> Vec<Round> {
    let proxy = Proxy::start();
    on_node(13306, "CREATE TABLE IF NOT EXISTS sbtest.failover_writes (id BIGINT AUTO_INCREMENT PRIMARY KEY, src VARCHAR(40), n BIGINT, KEY (src, n))");
    let mut seen = Vec::new();
    for round in 0..rounds {
        let writer: u16 = writer_port(&proxy).parse().unwrap();
        assert_ne!(writer, 13308);
        let direct: u16 = 13308;
        let tag = format!("{fault:?}-{round}-{}", std::process::id());
        let proxy_src = format!("proxy-{tag}");
        let through_proxy = WriteLoop::start(proxy.port, &proxy_src, 4);
        let straight = WriteLoop::start(direct, &format!("direct-{tag}"), 1);
        thread::sleep(Duration::from_secs(1));
        let applied = fault.apply(writer);
        // after the fault: what was sent while `kill` was starting (tens of ms on a busy
        // machine) was in flight when the writer died, and may fail
        let fault_at = Instant::now();
        let resumed = |l: &WriteLoop| l.acked_after(fault_at + Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(40);
        while resumed(&through_proxy) <= 20 || resumed(&straight) <= 20 {
            assert!(
                Instant::now() < deadline,
                "{fault:?} round {round}: writes did not resume after the fault on {writer}: through the proxy {}, direct {}; node3 says {}; proxy log:\n{}",
                resumed(&through_proxy),
                resumed(&straight),
                on_node(13308, "SHOW STATUS LIKE 'wsrep_cluster_status'"),
                proxy.log().lines().rev().take(40).collect::<Vec<_>>().join("\n")
            );
            thread::sleep(Duration::from_millis(100));
        }
        let settle = Instant::now();
        eventually(
            Duration::from_secs(10),
            "a second of writes after recovery",
            || through_proxy.acked_after(settle + Duration::from_secs(1)) > 0,
        );
        // the statements in flight at the fault may fail; none sent after it does: they
        // wait for the next writer (failover_wait_ms)
        let errors_after = through_proxy.failed_after(fault_at + Duration::from_millis(50));
        let errors = through_proxy.failed_after(fault_at - Duration::from_secs(5));
        let (proxy_acked, proxy_stall) = through_proxy.finish(fault_at);
        let (_, cluster_stall) = straight.finish(fault_at);
        eprintln!(
            "{fault:?} round {round} on {writer}: cluster's own stall {cluster_stall:?}, through the proxy {proxy_stall:?}; client errors {errors}, of statements sent after the fault {errors_after}; {} writes acknowledged",
            proxy_acked.len()
        );
        assert_eq!(
            errors_after, 0,
            "{fault:?} round {round}: statements sent after the fault failed"
        );

        // every acknowledged write is on the survivors
        let stored: BTreeSet<(String, u64)> = on_node(
            direct,
            &format!("SELECT src, n FROM sbtest.failover_writes WHERE src LIKE '{proxy_src}-%'"),
        )
        .lines()
        .map(|l| {
            let (src, n) = l.split_once('\t').unwrap();
            (src.to_owned(), n.parse().unwrap())
        })
        .collect();
        let missing: Vec<_> = proxy_acked.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "{fault:?}: acknowledged writes lost: {missing:?}"
        );

        // the node comes back as a backup writer, not as a second writer
        let new_writer = writer_port(&proxy);
        assert_ne!(new_writer, writer.to_string());
        let logged = proxy.log().len();
        applied.undo();
        let back = format!("server=127.0.0.1:{writer}");
        eventually(Duration::from_secs(30), "the node back in service", || {
            proxy.log()[logged..]
                .lines()
                .any(|l| l.contains("back in service") && l.contains(&back))
        });
        assert_eq!(
            writer_port(&proxy),
            new_writer,
            "no failback to the returned node"
        );
        seen.push(Round {
            proxy_stall,
            cluster_stall,
            errors,
            errors_after,
        });
    }
    seen
}

/// The stall the proxy added to Galera's own, per round, sorted.
fn stall_added(rounds: &[Round]) -> Vec<f64> {
    let mut added: Vec<f64> = rounds
        .iter()
        .map(|r| r.proxy_stall.as_secs_f64() - r.cluster_stall.as_secs_f64())
        .collect();
    added.sort_by(f64::total_cmp);
    added
}

#[test]
fn writer_killed_fails_over_within_the_clusters_own_stall_and_loses_no_write() {
    let rounds = writer_fault_under_write_load(Fault::Kill, 3);
    let added = stall_added(&rounds);
    let median = added[1];
    eprintln!("kill -9: stall added by the proxy, per kill: {added:?} s; median {median:.3} s");
    assert!(
        median < 1.0,
        "the proxy added {median:.3} s (median) to the cluster's stall"
    );
}

#[test]
fn a_hung_writer_is_replaced_by_the_time_galera_evicts_it_and_its_statements_are_released() {
    let rounds = writer_fault_under_write_load(Fault::Stop, 2);
    let added = stall_added(&rounds);
    eprintln!("SIGSTOP: stall added by the proxy, per round: {added:?} s");
    // writes through the proxy resume within 1 s of those straight to a survivor, which
    // resume when Galera has evicted the hung node
    assert!(
        added.iter().all(|a| *a < 1.0),
        "the proxy added {added:?} s to the cluster's stall"
    );
    // the statements that hung with the writer were released with an error (at most one
    // per client), not left hanging: the loops went on after them
    assert!(rounds.iter().all(|r| r.errors <= 4));
}

#[test]
fn a_desynced_writer_is_replaced_under_write_load_without_a_client_error() {
    let rounds = writer_fault_under_write_load(Fault::Desync, 1);
    assert_eq!(rounds[0].errors, 0, "a desynced writer still answers");
    assert_eq!(rounds[0].errors_after, 0);
}

/// Clients reading `SELECT @@port` through the proxy in a loop, each on its own
/// connection: which server answered each read, and how many reads failed.
struct ReadLoop {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<(String, Instant)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl ReadLoop {
    /// `prepared`: the read is a prepared statement's execute, else a text query.
    fn start(port: u16, clients: usize, prepared: bool) -> ReadLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..clients)
            .map(|_| {
                let (stop, answers, failed) = (stop.clone(), answers.clone(), failed.clone());
                let mut client = RawClient::login(port, "app", "app").unwrap();
                let statement =
                    prepared.then(|| prepare(&mut client, "SELECT CAST(@@port AS CHAR)"));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let read = match statement {
                            Some(id) => prepared_port(&mut client, id),
                            None => client.try_query_column("SELECT @@port"),
                        };
                        match read {
                            Ok(mut ports) => answers
                                .lock()
                                .unwrap()
                                .push((ports.remove(0), Instant::now())),
                            Err(err) => {
                                failed.lock().unwrap().push(err);
                                thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                })
            })
            .collect();
        ReadLoop {
            stop,
            answers,
            failed,
            handles,
        }
    }

    /// How many reads each server answered after `t`.
    fn answered_after(&self, t: Instant) -> std::collections::BTreeMap<String, usize> {
        let mut by_port = std::collections::BTreeMap::new();
        for (port, at) in self.answers.lock().unwrap().iter() {
            if *at > t {
                *by_port.entry(port.clone()).or_default() += 1;
            }
        }
        by_port
    }

    /// Stops the clients; returns the errors they saw.
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle.join().unwrap();
        }
        std::mem::take(&mut *self.failed.lock().unwrap())
    }
}

/// Executes the prepared `SELECT CAST(@@port AS CHAR)`: the port, or the error.
fn prepared_port(client: &mut RawClient, id: [u8; 4]) -> Result<Vec<String>, String> {
    let answer = client.command(command::STMT_EXECUTE, &execute_body(id, &[], false));
    if answer[0].payload[0] == header::ERR {
        return Err(common::expect_err(&answer[0]).message);
    }
    Ok(binary_result(&answer).1)
}

#[test]
fn reads_in_flight_on_a_hung_replica_are_answered_by_the_other_and_it_returns_after_sigcont() {
    hung_replica(false);
}

#[test]
fn prepared_reads_in_flight_on_a_hung_replica_are_answered_by_the_other() {
    hung_replica(true);
}

/// Replica1 hangs (SIGSTOP) while 4 clients read, in text or `prepared`: every read is
/// answered (by replica2; those in flight on replica1 are sent again), and replica1 serves
/// again after SIGCONT.
fn hung_replica(prepared: bool) {
    // most reads go to replica1, so reads are in flight there when it hangs
    let proxy = Proxy::start_with(|c| {
        c.replacen(
            "port = 13309\nhostgroup = 20\n",
            "port = 13309\nhostgroup = 20\nweight = 50\n",
            1,
        )
    });
    let config = std::fs::read_to_string(proxy.dir.join("sluice.toml")).unwrap();
    assert!(config.contains("weight = 50"), "the weight applies");
    let readers = ReadLoop::start(proxy.port, 4, prepared);
    thread::sleep(Duration::from_millis(500));
    let before = Instant::now();
    assert!(
        readers.answered_after(before - Duration::from_millis(400))["13309"] > 0,
        "reads reach replica1 before it hangs"
    );
    let retried_before = stat(&proxy, "Reads_retried");
    signal(13309, "STOP");
    let stopped = Instant::now();
    eventually(
        Duration::from_secs(10),
        "reads answered by replica2 while replica1 hangs",
        || {
            readers
                .answered_after(stopped + Duration::from_millis(100))
                .get("13310")
                .is_some_and(|n| *n > 100)
        },
    );
    let retried = stat(&proxy, "Reads_retried") - retried_before;
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    eventually(
        Duration::from_secs(5),
        "the hung replica shows as SHUNNED in its hostgroup",
        || {
            admin.query_column(
                "SELECT hostgroup || ' ' || status FROM stats_mysql_connection_pool \
                 WHERE srv_port = 13309",
            ) == ["20 SHUNNED"]
        },
    );
    signal(13309, "CONT");
    let during = readers.answered_after(stopped + Duration::from_millis(100));
    let errors = readers.finish();
    eprintln!(
        "while replica1 hung (prepared: {prepared}): answers {during:?}, reads retried {retried}, errors {errors:?}"
    );
    assert!(errors.is_empty(), "reads failed: {errors:?}");
    assert!(
        !during.contains_key("13309"),
        "a stopped server answered: {during:?}"
    );
    // each client had a read in flight on replica1 (1 in 51 went elsewhere): those were
    // sent again once the monitor found it unreachable
    assert!(retried >= 1, "no read was retried");
    assert!(retried <= 4, "{retried} reads retried for 4 clients");

    eventually(
        Duration::from_secs(15),
        "the replica serves reads again",
        || read_ports(&proxy, 6).contains_key("13309"),
    );
}

#[test]
fn a_replica_with_a_stopped_sql_thread_or_too_much_lag_gets_no_reads() {
    let proxy =
        Proxy::start_with(|c| c.replace("max_replication_lag = 10", "max_replication_lag = 2"));
    on_node(13309, "STOP SLAVE SQL_THREAD");
    eventually(
        Duration::from_secs(10),
        "reads avoid the stopped replica",
        || read_ports(&proxy, 6).keys().all(|p| p == "13310"),
    );
    // the admin port keeps the replica's rows, in its hostgroup, as ProxySQL shows them
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    for table in ["runtime_mysql_servers", "stats_mysql_connection_pool"] {
        let hostgroup = if table == "runtime_mysql_servers" {
            "hostgroup_id"
        } else {
            "hostgroup"
        };
        let sql = format!(
            "SELECT {hostgroup} || ' ' || status FROM {table} \
             WHERE {} = 13309",
            if table == "runtime_mysql_servers" {
                "port"
            } else {
                "srv_port"
            }
        );
        assert_eq!(
            admin.query_column(&sql),
            ["20 SHUNNED_REPLICATION_LAG"],
            "{table}"
        );
    }
    on_node(13309, "START SLAVE SQL_THREAD");
    eventually(
        Duration::from_secs(15),
        "the replica serves reads again",
        || read_ports(&proxy, 6).contains_key("13309"),
    );

    // lag: replica1 applies events 6 s late while writes keep coming
    on_node(
        13309,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 6; START SLAVE",
    );
    on_node(13306, "CREATE TABLE IF NOT EXISTS sbtest.failover_lag (id INT AUTO_INCREMENT PRIMARY KEY, at TIMESTAMP(6))");
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        thread::spawn(move || {
            while writing.load(Ordering::Relaxed) {
                on_node(
                    13306,
                    "INSERT INTO sbtest.failover_lag (at) VALUES (NOW(6))",
                );
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let lagging = std::panic::catch_unwind(|| {
        eventually(
            Duration::from_secs(20),
            "reads avoid the lagging replica",
            || read_ports(&proxy, 6).keys().all(|p| p == "13310"),
        )
    });
    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    on_node(
        13309,
        "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE",
    );
    assert!(lagging.is_ok(), "the lagging replica kept getting reads");
    eventually(
        Duration::from_secs(20),
        "the caught-up replica serves reads again",
        || read_ports(&proxy, 6).contains_key("13309"),
    );
}

#[test]
fn desynced_or_rejecting_writers_are_replaced_without_failback() {
    let proxy = Proxy::start();
    assert_eq!(writer_port(&proxy), "13306");
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.failover_tx (id INT PRIMARY KEY)",
    );
    on_node(13306, "DELETE FROM sbtest.failover_tx");
    // a transaction open on the writer when it is replaced finishes there
    let mut in_tx = RawClient::login(proxy.port, "app", "app").unwrap();
    in_tx.query("BEGIN");
    in_tx.query("INSERT INTO sbtest.failover_tx VALUES (1)");
    on_node(13306, "SET GLOBAL wsrep_desync = ON");
    eventually(Duration::from_secs(10), "a new writer", || {
        writer_port(&proxy) == "13307"
    });
    assert_eq!(in_tx.query_column("SELECT @@port"), vec!["13306"]);
    assert_eq!(in_tx.query("COMMIT")[0].payload[0], header::OK);
    assert_eq!(
        in_tx.query_column("SELECT @@port FOR UPDATE"),
        vec!["13307"],
        "then it follows the new writer"
    );
    assert_eq!(
        on_node(13307, "SELECT COUNT(*) FROM sbtest.failover_tx"),
        "1\n"
    );
    on_node(13306, "SET GLOBAL wsrep_desync = OFF");
    let back = "server=127.0.0.1:13306";
    eventually(Duration::from_secs(10), "node1 back in service", || {
        proxy
            .log()
            .lines()
            .any(|l| l.contains("back in service") && l.contains(back))
    });
    assert_eq!(
        writer_port(&proxy),
        "13307",
        "node1 returns as a backup writer"
    );

    // wsrep_reject_queries on the current writer
    on_node(13307, "SET GLOBAL wsrep_reject_queries = ALL");
    let moved = std::panic::catch_unwind(|| {
        eventually(
            Duration::from_secs(10),
            "the rejecting writer replaced",
            || writer_port(&proxy) == "13306",
        )
    });
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-uroot",
            &format!("--socket={}/node2/mysqld.sock", cluster_dir()),
            "-e",
            "SET GLOBAL wsrep_reject_queries = NONE",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(moved.is_ok(), "writes still went to the rejecting node");
}

#[test]
fn read_your_writes_sees_each_write_even_on_delayed_replicas() {
    let proxy = Proxy::start_with(|c| {
        // app_local reads its writes (the default); app does not
        c.replace("name = \"app\"", "name = \"app\"\nconsistency = \"none\"")
    });
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.failover_causal (id INT PRIMARY KEY, who VARCHAR(10))",
    );
    on_node(13306, "DELETE FROM sbtest.failover_causal");
    let delayed = std::panic::catch_unwind(|| {
        for replica in [13309, 13310] {
            on_node(
                replica,
                "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3; START SLAVE",
            );
        }
        let mut causal = RawClient::login(proxy.port, "app_local", "app_local").unwrap();
        let mut plain = RawClient::login(proxy.port, "app", "app").unwrap();
        let mut stale_reads = 0;
        for i in 0..10 {
            causal.query(&format!(
                "INSERT INTO sbtest.failover_causal VALUES ({i}, 'causal')"
            ));
            let seen = causal.query_column(&format!(
                "SELECT COUNT(*) FROM sbtest.failover_causal WHERE id = {i}"
            ));
            assert_eq!(seen, vec!["1"], "read-your-writes missed write {i}");

            let j = 100 + i;
            plain.query(&format!(
                "INSERT INTO sbtest.failover_causal VALUES ({j}, 'plain')"
            ));
            let seen = plain.query_column(&format!(
                "SELECT COUNT(*) FROM sbtest.failover_causal WHERE id = {j}"
            ));
            if seen == vec!["0"] {
                stale_reads += 1;
            }
        }
        // without read-your-writes the same reads were stale: the replicas really lagged
        assert!(
            stale_reads > 5,
            "only {stale_reads} of 10 plain reads were stale"
        );
    });
    for replica in [13309, 13310] {
        on_node(
            replica,
            "STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE",
        );
    }
    if let Err(panic) = delayed {
        std::panic::resume_unwind(panic);
    }
}

fn answer(packets: &[common::RawPacket]) -> Vec<(u8, Vec<u8>)> {
    packets.iter().map(|p| (p.seq, p.payload.clone())).collect()
}

#[test]
fn a_cached_select_is_answered_while_its_server_is_stopped_and_by_the_server_after_its_ttl() {
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.failover_cached (id INT PRIMARY KEY); \
         REPLACE INTO sbtest.failover_cached VALUES (1)",
    );
    eventually(Duration::from_secs(10), "the replica has the row", || {
        on_node(13310, "SELECT COUNT(*) FROM sbtest.failover_cached") == "1\n"
    });
    let ttl = Duration::from_millis(3000);
    let proxy = Proxy::start_with(|c| {
        c + &common::hostgroup_of(50, 13310)
            + &format!(
                "\n[[query_rules]]\nrule_id = 1\nmatch_pattern = \"FROM sbtest\\\\.failover_cached\"\n\
                 destination_hostgroup = 50\ncache_ttl = {}\n",
                ttl.as_millis()
            )
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let sql = "SELECT @@port, NOW(6) FROM sbtest.failover_cached";
    let cached_at = Instant::now();
    let first = answer(&c.query(sql));
    assert_eq!(
        c.query_column(sql),
        ["13310"],
        "served by the stopped-to-be replica"
    );
    signal(13310, "STOP");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..5 {
            assert_eq!(answer(&c.query(sql)), first, "answered from the cache");
        }
        assert!(cached_at.elapsed() < ttl, "the hits came within the TTL");
        // past the TTL the statement goes to its server again: stopped, it cannot answer
        thread::sleep(ttl.saturating_sub(cached_at.elapsed()) + Duration::from_millis(200));
        let after = c.query(sql);
        assert_eq!(
            after[0].payload[0],
            header::ERR,
            "expired: the stopped server was asked"
        );
    }));
    signal(13310, "CONT");
    if let Err(panic) = stopped {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(stat(&proxy, "Query_Cache_count_GET_OK"), 6);
    eventually(Duration::from_secs(20), "the server answers again", || {
        let packets = c.query(sql);
        packets[0].payload[0] != header::ERR && answer(&packets) != first
    });
}

#[test]
fn a_stopped_mirror_does_not_slow_the_client_and_its_copies_are_dropped_and_counted() {
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.failover_cached (id INT PRIMARY KEY); \
         REPLACE INTO sbtest.failover_cached VALUES (1)",
    );
    let proxy = Proxy::start_with(|c| {
        c.replacen(
            "[throttle]",
            "[mirror]\nmax_queue = 50\nmax_concurrency = 4\ntimeout_ms = 3000\n\n[throttle]",
            1,
        ) + &common::hostgroup_of(50, 13310)
            + &common::hostgroup_of(60, 13309)
            + r#"
[[query_rules]]
rule_id = 1
match_pattern = "mirror_probe"
destination_hostgroup = 60
mirror_hostgroup = 50
"#
    });
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    let sql = "SELECT id FROM sbtest.failover_cached /* mirror_probe */";
    let median_latency = |c: &mut RawClient| {
        let mut took: Vec<Duration> = (0..300)
            .map(|_| {
                let started = Instant::now();
                assert_eq!(c.query_column(sql), ["1"]);
                started.elapsed()
            })
            .collect();
        took.sort();
        took[took.len() / 2]
    };
    let mirrored = median_latency(&mut c);
    eventually(Duration::from_secs(10), "the copies ran", || {
        stat(&proxy, "Mirror_sent") == 300
    });
    signal(13310, "STOP");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let latency = median_latency(&mut c);
        // the copies running on the stopped server are abandoned after timeout_ms
        eventually(Duration::from_secs(10), "a copy timed out", || {
            stat(&proxy, "Mirror_timeouts") > 0
        });
        latency
    }));
    signal(13310, "CONT");
    let with_mirror_stopped = match stopped {
        Ok(latency) => latency,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // a client held up by its copies would wait for the mirror (timeout_ms, 3 s) or the
    // queue: a thousand times slower. The bound leaves room for this machine's noise, which
    // moves a median of 300 statements by up to 2.6× between two phases.
    let ratio = with_mirror_stopped.as_secs_f64() / mirrored.as_secs_f64();
    assert!(
        ratio < 4.0,
        "median latency {mirrored:?} with the mirror up, {with_mirror_stopped:?} with it stopped"
    );
    let dropped = [
        "Mirror_dropped_queue_full",
        "Mirror_dropped_unreachable",
        "Mirror_timeouts",
    ];
    let lost = || dropped.iter().map(|name| stat(&proxy, name)).sum::<u64>();
    assert!(
        lost() > 0,
        "copies to the stopped mirror are dropped and counted"
    );
    // every copy is accounted for once the stopped ones have timed out
    eventually(Duration::from_secs(20), "every copy accounted for", || {
        stat(&proxy, "Mirror_sent") + lost() == 600
    });
    assert_eq!(stat(&proxy, "Mirror_errors"), 0);
    eprintln!(
        "mirror up: {mirrored:?}, stopped: {with_mirror_stopped:?}; {}",
        [
            "Mirror_sent",
            "Mirror_dropped_queue_full",
            "Mirror_dropped_unreachable",
            "Mirror_timeouts"
        ]
        .map(|n| format!("{n} {}", stat(&proxy, n)))
        .join(", ")
    );
}

/// Sends SIGCONT to the stopped servers when dropped, also when the test fails.
struct Resume(Vec<u16>);

impl Drop for Resume {
    fn drop(&mut self) {
        for port in self.0.drain(..) {
            signal(port, "CONT");
        }
    }
}

fn metric(proxy: &Proxy, name: &str) -> Option<f64> {
    let body = common::http_get(proxy.metrics_port, "/metrics").1;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn with_every_galera_node_stopped_two_proxies_serve_on_and_converge_when_the_nodes_return() {
    use common::cluster::{pair, version, INTERVAL};
    use common::{admin, admin_ok, wait_for};
    let (a, mut b) = pair("outage", |c| c);
    admin_ok(
        &a,
        "INSERT INTO mysql_query_rules (rule_id, active, match_pattern, error_msg, apply) \
         VALUES (55, 1, '^SELECT 5555', 'a rule from before the outage', 1); \
         LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    // new logins too: a login checks the account on a reader while no writer exists
    let has_rule = |p: &Proxy, text: &str| {
        let mut c = RawClient::login(p.port, "app", "app").unwrap();
        c.try_query_column("SELECT 5555")
            .is_err_and(|e| e.contains(text))
    };
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B has the rule",
        || has_rule(&b, "a rule from before the outage"),
    );
    let before = version(&b);

    let galera = [13306, 13307, 13308];
    for port in galera {
        signal(port, "STOP");
    }
    let resume = Resume(galera.to_vec());
    for p in [&a, &b] {
        wait_for(Duration::from_secs(15), "the sync sees the outage", || {
            metric(p, "sluice_cluster_sync_failing") == Some(1.0)
        });
    }
    let serves_reads = |p: &Proxy| {
        for _ in 0..4 {
            let mut c = RawClient::login(p.port, "app", "app").unwrap();
            let port = c.query_column("SELECT @@port")[0].clone();
            assert!(port == "13309" || port == "13310", "read from {port}");
        }
    };
    for p in [&a, &b] {
        serves_reads(p);
        assert!(has_rule(p, "a rule from before the outage"));
    }
    let refused = admin(
        &a,
        "UPDATE mysql_query_rules SET error_msg = 'lost' WHERE rule_id = 55; \
         LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    assert!(
        !refused.status.success(),
        "a change must reach every proxy or none"
    );
    assert!(
        stderr(&refused).contains("unreachable"),
        "{}",
        stderr(&refused)
    );
    assert!(
        has_rule(&a, "a rule from before the outage"),
        "nothing half-applied"
    );

    // B restarted during the outage starts from what it synced last, not its TOML file
    b.restart();
    assert!(b.log_shows("starting from the last synced configuration"));
    assert!(has_rule(&b, "a rule from before the outage"));
    assert_eq!(version(&b), before);
    serves_reads(&b);

    drop(resume);
    for p in [&a, &b] {
        wait_for(Duration::from_secs(30), "the sync recovers", || {
            metric(p, "sluice_cluster_sync_failing") == Some(0.0)
        });
    }
    admin_ok(
        &a,
        "UPDATE mysql_query_rules SET error_msg = 'a rule from after the outage' \
         WHERE rule_id = 55; LOAD MYSQL QUERY RULES TO RUNTIME",
    );
    wait_for(
        2 * INTERVAL + Duration::from_millis(300),
        "B converges",
        || has_rule(&b, "a rule from after the outage"),
    );
    assert_eq!(version(&a), before + 1);
    assert_eq!(version(&b), before + 1);
    cluster_up();
}

/// The writer hangs again and again (SIGSTOP for 2.5 s, then SIGCONT for 1.5 s, ten
/// times) under a write load: each hang outlasts the monitor's check timeout (1 s, so
/// its checks fail) but not Galera's own suspicion (5 s, so the cluster keeps the node).
/// An overloaded writer looks like this. The writer keeps its role throughout — no
/// writer change, no client error — because the cluster vouches for it; a hang Galera
/// does evict still moves the writer (the hung-writer test above).
#[test]
fn a_writer_whose_checks_time_out_but_that_galera_keeps_keeps_its_role() {
    let proxy = Proxy::start();
    assert_eq!(writer_port(&proxy), "13306");
    on_node(
        13306,
        "CREATE TABLE IF NOT EXISTS sbtest.failover_steady (id INT AUTO_INCREMENT PRIMARY KEY, port INT)",
    );
    let changes_before = stat(&proxy, "Writer_changes");
    let writing = Arc::new(AtomicBool::new(true));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let writing = writing.clone();
            let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
            thread::spawn(move || {
                let (mut ok, mut errors) = (0u64, Vec::new());
                while writing.load(Ordering::Relaxed) {
                    let packets =
                        c.query("INSERT INTO sbtest.failover_steady (port) VALUES (@@port)");
                    if packets[0].payload[0] == sluice::protocol::constants::header::ERR {
                        errors.push(common::expect_err(&packets[0]).to_string());
                    } else {
                        ok += 1;
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    // a minute of it
    let hangs = std::panic::catch_unwind(|| {
        for _ in 0..15 {
            signal(13306, "STOP");
            thread::sleep(Duration::from_millis(2500));
            signal(13306, "CONT");
            thread::sleep(Duration::from_millis(1500));
        }
    });
    signal(13306, "CONT");
    writing.store(false, Ordering::Relaxed);
    let results: Vec<(u64, Vec<String>)> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    hangs.unwrap();
    let written: u64 = results.iter().map(|r| r.0).sum();
    let errors: Vec<&String> = results.iter().flat_map(|r| &r.1).collect();
    eprintln!("steady writer: {written} writes, errors {errors:?}");
    assert_eq!(
        stat(&proxy, "Writer_changes") - changes_before,
        0,
        "the writer moved; proxy log:\n{}",
        proxy.log()
    );
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert!(written > 100, "{written} writes");
    assert!(
        proxy
            .log()
            .contains("the Galera cluster still counts the node in"),
        "the checks never timed out: the test did not test anything"
    );
    assert_eq!(writer_port(&proxy), "13306");
}

#[test]
fn a_proxy_started_beside_a_peer_that_failed_over_takes_the_peers_writer() {
    let section = common::cluster::cluster_section("agree");
    let a = Proxy::start_with(|c| c + &section);
    assert_eq!(writer_port(&a), "13306");
    // a moves to node2 and keeps it when node1 returns (no failback)
    on_node(13306, "SET GLOBAL wsrep_desync = ON");
    eventually(Duration::from_secs(10), "a's new writer", || {
        writer_port(&a) == "13307"
    });
    on_node(13306, "SET GLOBAL wsrep_desync = OFF");
    eventually(
        Duration::from_secs(10),
        "node1 back in service on a",
        || {
            a.log()
                .lines()
                .any(|l| l.contains("back in service") && l.contains("server=127.0.0.1:13306"))
        },
    );
    assert_eq!(writer_port(&a), "13307");
    // b, started now, would prefer node1 alone: it takes a's writer, at its first
    // election, so no write of it ever reaches node1
    let b = Proxy::start_with(|c| c + &section);
    assert_eq!(writer_port(&b), "13307");
    assert_eq!(stat(&b, "Writer_changes"), 0, "b elected node2 at once");
    assert!(
        !b.log().contains("127.0.0.1:13306\"]"),
        "b never named node1 its writer:\n{}",
        b.log()
    );
    // and a, whose writer is the older one, keeps it
    thread::sleep(Duration::from_secs(2));
    assert_eq!(writer_port(&a), "13307");
    assert_eq!(stat(&a, "Writer_changes"), 1);
}
