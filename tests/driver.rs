//! Drivers in other languages, each speaking the protocol itself, through Sluice: MySQL
//! Connector/Python (its checks in `tests/driver/connector.py`, each test runs one),
//! MariaDB Connector/J and Node's mysqljs (their programs in `tests/driver/`).

mod common;

use common::{python, repo, stderr, stdout, succeeds, Proxy};
use std::process::Command;

/// Java's source launcher on `program` (in tests/driver/), MariaDB Connector/J (Debian's
/// libmariadb-java) on its class path.
fn connector_j(program: &str) -> Command {
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg("/usr/share/java/mariadb-java-client.jar")
        .arg(repo().join("tests/driver").join(program));
    java
}

/// Runs Connector/J program `program` against `proxy` (see [`succeeds`]).
fn run_connector_j(proxy: &Proxy, program: &str) -> String {
    let mut java = connector_j(program);
    java.arg(proxy.port.to_string());
    succeeds(java, "Connector/J", proxy)
}

fn run_check(check: &str) -> String {
    let proxy = Proxy::start();
    let out = Command::new(python())
        .arg(repo().join("tests/driver/connector.py"))
        .arg(proxy.port.to_string())
        .arg(check)
        .env("SLUICE_TEST_CA", repo().join("certs/ca.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{check} failed:\n{}\nproxy log:\n{}",
        stderr(&out),
        proxy.log()
    );
    stdout(&out)
}

#[test]
fn prepared_statements_run_server_side() {
    assert!(run_check("prepared").contains("prepared statements ok"));
}

#[test]
fn prepared_reads_see_the_prepared_writes_before_them_and_run_on_the_replicas() {
    assert!(run_check("prepared_reads").contains("prepared reads ok"));
}

#[test]
fn multi_statement_query_returns_every_result_set() {
    assert!(run_check("multi_statement").contains("4 result sets"));
}

#[test]
fn blob_of_20_mib_round_trips_byte_identical() {
    assert!(run_check("blob").contains("20971520 bytes"));
}

#[test]
fn load_data_local_infile() {
    assert!(run_check("load_data_local").contains("20000 rows"));
}

#[test]
fn change_user_switches_identity_and_refuses_bad_passwords() {
    assert!(run_check("change_user").contains("change user ok"));
}

#[test]
fn caching_sha2_client_logs_in_through_auth_switch() {
    assert!(run_check("caching_sha2").contains("ok"));
}

#[test]
fn tls_with_certificate_verification() {
    assert!(run_check("tls").contains("tls ok"));
}

#[test]
fn a_bound_session_losing_its_backend_gets_an_error_the_driver_reads_then_a_closed_connection() {
    let out = run_check("lost_backend");
    eprintln!("{out}");
    assert!(out.contains("lost backend ok: 1152 (08S01)"), "{out}");
}

/// Runs a driver's lost-backend program (`program`, ending with the program's file) against
/// a proxy and the writer, and returns its line of facts; fails the test with the proxy's
/// log when the program fails.
fn lost_backend_through(mut program: Command, driver: &str) -> String {
    let proxy = Proxy::start();
    program
        .arg(proxy.port.to_string())
        .arg(common::WRITER_PORT.to_string());
    let out = succeeds(program, driver, &proxy);
    eprintln!("{out}");
    out
}

/// The same with MariaDB Connector/J.
#[test]
fn connector_j_reads_the_lost_backend_error_then_knows_the_connection_is_gone() {
    let out = lost_backend_through(connector_j("LostBackend.java"), "Connector/J");
    assert!(
        out.contains("connector/j lost backend ok: 1152 (08S01)"),
        "{out}"
    );
}

/// The same with Node's mysqljs driver (Debian's node-mysql).
#[test]
fn node_mysql_reads_the_lost_backend_error_then_knows_the_connection_is_gone() {
    let mut node = Command::new("node");
    node.env("NODE_PATH", "/usr/share/nodejs")
        .arg(repo().join("tests/driver/lost_backend.js"));
    let out = lost_backend_through(node, "node mysql");
    assert!(
        out.contains("node mysql lost backend ok: 1152 (08S01)"),
        "{out}"
    );
}

/// MariaDB Connector/J (Debian's libmariadb-java) with server-side prepared statements.
#[test]
fn connector_j_with_server_side_prepared_statements_reads_from_the_replicas() {
    let proxy = Proxy::start();
    let out = run_connector_j(&proxy, "ConnectorJ.java");
    eprintln!("{out}");
    assert!(out.contains("connector/j ok"));
    let executes = common::admin_ok(
        &proxy,
        "SELECT Variable_Value FROM stats_mysql_global WHERE Variable_Name = 'Com_frontend_stmt_execute'",
    );
    assert!(
        executes.trim().parse::<u64>().unwrap() >= 201,
        "the driver prepared server-side: {executes}"
    );
}

/// MariaDB Connector/J negotiates CLIENT_DEPRECATE_EOF with a server that offers it, as
/// Sluice now does: every shape of result read through the proxy (tests/driver/DeprecateEof.java).
#[test]
fn connector_j_negotiating_deprecate_eof_reads_results_multi_results_and_prepared_statements() {
    let proxy = Proxy::start();
    let out = run_connector_j(&proxy, "DeprecateEof.java");
    assert!(out.contains("deprecate_eof ok"), "{out}");
}
