//! MySQL Connector/Python (a driver in another language, speaking the protocol itself)
//! through Sluice. The checks live in `tests/driver/connector.py`; each test runs one.

mod common;

use common::{python, repo, stderr, stdout, Proxy};
use std::process::Command;

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
