//! Password methods other than `mysql_native_password`, with the clients that speak them:
//! `caching_sha2_password` through the `mariadb` client (libmariadb's plugin) and MySQL
//! Connector/Python, MariaDB's `ed25519` through the `mariadb` client. The demo's `app` is
//! given a verifier made by `sluice verifier`; its backend account stays native, with the
//! same password.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{admin, admin_ok, mariadb, python, repo, stat, stderr, stdout, succeeds, Proxy};

/// `sluice verifier --method <method>` of `password`.
fn verifier(method: &str, password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["verifier", "--method", method])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The demo's setting of `app`'s password.
const NATIVE_APP: &str = "password = \"*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3\"";

/// A proxy whose `app` logs in with `caching_sha2_password`.
fn sha2_proxy() -> Proxy {
    let verifier = verifier("caching_sha2_password", "app");
    assert!(verifier.starts_with("$A$005$"), "{verifier}");
    Proxy::start_with(|config| config.replace(NATIVE_APP, &format!("password = '{verifier}'")))
}

/// A proxy whose `app` logs in with MariaDB's `ed25519`; the password of its backend
/// account is in a file.
fn ed25519_proxy() -> Proxy {
    let key = verifier("ed25519", "app");
    let file = std::env::temp_dir().join(format!("sluice-app-backend-{}", std::process::id()));
    std::fs::write(&file, "app\n").unwrap();
    let setting = format!(
        "password = \"{key}\"\nbackend_password_file = \"{}\"",
        file.display()
    );
    Proxy::start_with(|config| config.replace(NATIVE_APP, &setting))
}

/// `mariadb` as `app` with `password`, over verified TLS or not; its output or its error.
fn app(proxy: &Proxy, password: &str, tls: bool) -> Result<String, String> {
    let ca = format!("--ssl-ca={}", repo().join("certs/ca.pem").display());
    let password = format!("-p{password}");
    let mut args = vec!["-uapp", &password];
    match tls {
        true => args.extend(["--ssl", &ca, "--ssl-verify-server-cert"]),
        false => args.push("--skip-ssl"),
    }
    args.extend(["-e", "SELECT CURRENT_USER(), @@port > 0"]);
    let out = mariadb(proxy.port, &args);
    match out.status.success() {
        true => Ok(stdout(&out)),
        false => Err(stderr(&out)),
    }
}

fn refused(answer: Result<String, String>) {
    refused_with(answer, "ERROR 1045");
}

fn refused_with(answer: Result<String, String>, error: &str) {
    let err = answer.expect_err("refused");
    assert!(err.contains(error), "{err}");
}

/// What libmariadb says when the full authentication would need the RSA key exchange:
/// it asks for the key, and the proxy refuses instead of sending one.
const NO_RSA_KEY: &str = "ERROR 2061 (HY000): Couldn't read RSA public key from server";

/// The full authentication needs TLS; once done, the fast path serves any link, and the
/// backend connections log in with the key of the password the client revealed.
#[test]
fn caching_sha2_logs_in_in_full_over_tls_then_on_the_fast_path() {
    let proxy = sha2_proxy();
    // nothing remembered yet: without TLS, only the RSA key exchange could carry the
    // password
    refused_with(app(&proxy, "app", false), NO_RSA_KEY);
    let denied = stat(&proxy, "Access_Denied_Wrong_Password");
    refused(app(&proxy, "wrong", true));
    assert_eq!(
        stat(&proxy, "Access_Denied_Wrong_Password"),
        denied + 1,
        "a wrong password counts as one"
    );
    assert_eq!(app(&proxy, "app", true).unwrap(), "app@127.0.0.1\t1\n");
    // the fast path: no TLS needed now
    assert_eq!(app(&proxy, "app", false).unwrap(), "app@127.0.0.1\t1\n");
    // a wrong proof on the fast path asks for the password in full, which needs TLS
    refused_with(app(&proxy, "wrong", false), NO_RSA_KEY);
    refused(app(&proxy, "wrong", true));
    assert_eq!(app(&proxy, "app", true).unwrap(), "app@127.0.0.1\t1\n");
}

/// A client that begins with `caching_sha2_password` (MySQL 8 connectors do) is not
/// switched: full authentication over TLS, then the fast path without it.
#[test]
fn a_client_that_begins_with_caching_sha2_logs_in_with_it() {
    let proxy = sha2_proxy();
    let script = r#"
import sys, mysql.connector
port, ca = int(sys.argv[1]), sys.argv[2]
def login(password, **tls):
    c = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password=password,
                                auth_plugin="caching_sha2_password", use_pure=True, **tls)
    cur = c.cursor()
    cur.execute("SELECT CURRENT_USER()")
    user = cur.fetchone()[0]
    c.close()
    return user
def refused(password, **tls):
    try:
        login(password, **tls)
    except mysql.connector.Error as e:
        return e.errno
    return None
print(refused("wrong", ssl_ca=ca))
print(login("app", ssl_ca=ca))
print(login("app", ssl_disabled=True))
print(refused("wrong", ssl_disabled=True) is not None)
c = mysql.connector.connect(host="127.0.0.1", port=port, user="app", password="app",
                            auth_plugin="caching_sha2_password", use_pure=True, ssl_disabled=True)
c.cmd_change_user(username="app", password="app", database="mysql")
cur = c.cursor()
cur.execute("SELECT CURRENT_USER(), DATABASE()")
print(*cur.fetchone())
try:
    c.cmd_change_user(username="app", password="wrong")
except mysql.connector.Error as e:
    print(e.errno)
"#;
    let mut connector = Command::new(python());
    connector
        .args(["-c", script, &proxy.port.to_string()])
        .arg(repo().join("certs/ca.pem"));
    assert_eq!(
        succeeds(connector, "Connector/Python", &proxy),
        "1045\napp@127.0.0.1\napp@127.0.0.1\nTrue\napp@127.0.0.1 mysql\n1045\n"
    );
}

/// The `mariadb` client is switched to `client_ed25519` and signs the proxy's nonce; the
/// backend connections log in with the password from the file.
#[test]
fn the_mariadb_client_logs_in_with_ed25519() {
    let proxy = ed25519_proxy();
    assert_eq!(app(&proxy, "app", false).unwrap(), "app@127.0.0.1\t1\n");
    assert_eq!(app(&proxy, "app", true).unwrap(), "app@127.0.0.1\t1\n");
    let denied = stat(&proxy, "Access_Denied_Wrong_Password");
    refused(app(&proxy, "wrong", false));
    refused(app(&proxy, "", false));
    assert_eq!(stat(&proxy, "Access_Denied_Wrong_Password"), denied + 2);
}

/// The admin port's `mysql_users` takes a caching_sha2_password verifier as a password, as
/// ProxySQL's does: loaded to runtime, the user logs in with that method; a cleartext
/// password is refused at LOAD, the message naming the forms it takes.
#[test]
fn the_admin_port_takes_a_caching_sha2_verifier_and_refuses_cleartext() {
    let proxy = Proxy::start();
    let sha2 = verifier("caching_sha2_password", "app");
    admin_ok(
        &proxy,
        &format!(
            "UPDATE mysql_users SET password = '{sha2}' WHERE username = 'app'; \
             LOAD MYSQL USERS TO RUNTIME"
        ),
    );
    refused_with(app(&proxy, "app", false), NO_RSA_KEY);
    assert_eq!(app(&proxy, "app", true).unwrap(), "app@127.0.0.1\t1\n");
    let shown = admin_ok(
        &proxy,
        "SELECT password FROM runtime_mysql_users WHERE username = 'app'",
    );
    assert_eq!(shown.trim(), sha2);
    let out = admin(
        &proxy,
        "UPDATE mysql_users SET password = 'app' WHERE username = 'app'; \
         LOAD MYSQL USERS TO RUNTIME",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("caching_sha2_password"),
        "{}",
        stderr(&out)
    );
}
