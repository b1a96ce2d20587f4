//! sysbench's OLTP read/write workload (prepared statements, transactions) through Sluice.

mod common;

use common::{stderr, stdout, Proxy};

fn sysbench(port: u16, args: &[&str]) -> std::process::Output {
    common::sysbench(port, "oltp_read_write", "sbtest", args)
}

#[test]
fn oltp_read_write_runs_without_errors() {
    let proxy = Proxy::start();
    // a previous interrupted run may have left tables behind
    let _ = sysbench(proxy.port, &["cleanup"]);
    let out = sysbench(proxy.port, &["prepare"]);
    assert!(
        out.status.success(),
        "prepare: {}{}",
        stdout(&out),
        stderr(&out)
    );
    // One thread: with several, InnoDB/Galera deadlocks are possible and would be the
    // database's errors, not the proxy's. Any error at all fails the run.
    let out = sysbench(
        proxy.port,
        &[
            "--threads=1",
            "--time=10",
            "--mysql-ignore-errors=none",
            "run",
        ],
    );
    let report = stdout(&out);
    assert!(
        out.status.success(),
        "run: {report}{}\n{}",
        stderr(&out),
        proxy.log()
    );
    assert!(
        report.contains("ignored errors:                      0"),
        "{report}"
    );
    let transactions: u64 = report
        .lines()
        .find(|l| l.trim_start().starts_with("transactions:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("a transactions line");
    assert!(
        transactions > 100,
        "only {transactions} transactions in 10 s:\n{report}"
    );
    let out = sysbench(proxy.port, &["cleanup"]);
    assert!(out.status.success(), "cleanup: {}", stderr(&out));
}
