//! The compressed protocol (`CLIENT_COMPRESS`, zlib; zstd) between clients and Sluice:
//! the `mariadb` client, Connector/Python and libmysqlclient (zstd too) get the same bytes
//! as uncompressed, results and 20 MiB values alike; a client sending a corrupt frame loses its connection and nobody
//! else notices; with `[proxy] compression = false` a client that asks runs uncompressed.

mod common;

use std::io::Write;
use std::process::Command;

use common::{mariadb, python, repo, stderr, stdout, succeeds, Proxy, RawClient};
use sluice::protocol::constants::capability;

/// What the `mariadb` client prints for `sql` on `port`, compressed or not.
fn printed(port: u16, compress: bool, sql: &str) -> String {
    // the client's own limit (16 MiB by default) applies to compressed reads
    let mut args = vec![
        "-uapp",
        "-papp",
        "-Dsbtest",
        "--max-allowed-packet=64M",
        "-e",
        sql,
    ];
    if compress {
        args.push("--compress");
    }
    let out = mariadb(port, &args);
    assert!(out.status.success(), "{sql}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn the_mariadb_client_compressed_sees_what_it_sees_uncompressed() {
    let proxy = Proxy::start();
    let rows = "SELECT seq, REPEAT(CHAR(65 + seq % 26), seq % 300) FROM seq_1_to_10000";
    let direct = printed(13309, false, rows);
    assert_eq!(direct.lines().count(), 10_000);
    assert_eq!(printed(proxy.port, true, rows), direct);
    // a value of 20 MiB: packets of 16 MiB and more inside compressed frames
    let big = "SELECT SHA2(x, 256), LENGTH(x), x FROM (SELECT REPEAT(MD5(seq), 700000) x FROM seq_1_to_1) t";
    let through = printed(proxy.port, true, big);
    assert!(through.len() > 20 << 20, "{} bytes", through.len());
    assert_eq!(through, printed(13309, false, big));
    let status = "SHOW SESSION STATUS LIKE 'Compression'";
    assert_eq!(printed(proxy.port, true, status), "Compression\tON\n");
    assert_eq!(printed(proxy.port, false, status), "Compression\tOFF\n");
}

#[test]
fn connector_python_compressed_round_trips_rows_and_a_20_mib_blob() {
    let proxy = Proxy::start();
    let mut connector = Command::new(python());
    connector
        .arg(repo().join("tests/driver/connector.py"))
        .arg(proxy.port.to_string())
        .arg("compressed");
    let out = succeeds(connector, "Connector/Python", &proxy);
    assert!(out.contains("compressed ok"), "{out}");
}

/// MySQL's own client library (libmysqlclient, as Connector/Python's C extension bundles
/// it), asking for zstd and then zlib: the rows and the 20 MiB value it reads through
/// Sluice are those it reads uncompressed from a server.
#[test]
fn libmysqlclient_with_zstd_or_zlib_reads_what_it_reads_uncompressed() {
    let proxy = Proxy::start();
    let read = |port: u16, algorithm: &str| {
        let out = Command::new(python())
            .arg(repo().join("tests/driver/libmysqlclient.py"))
            .args([&port.to_string(), algorithm, "7"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{algorithm}: {}\n{}",
            stderr(&out),
            proxy.log()
        );
        stdout(&out)
    };
    let direct = read(13309, "uncompressed");
    assert_eq!(direct.lines().count(), 2, "{direct}");
    assert!(direct.starts_with("10000 "), "{direct}");
    assert_eq!(read(proxy.port, "zstd"), direct);
    assert!(
        proxy.log().contains("algorithm=\"zstd\" level=7"),
        "{}",
        proxy.log()
    );
    assert_eq!(read(proxy.port, "zlib"), direct);
    assert!(proxy.log().contains("algorithm=\"zlib\""));
}

#[test]
fn a_corrupt_compressed_frame_ends_that_connection_only() {
    let proxy = Proxy::start();
    let mut bad = RawClient::login_with(proxy.port, "app", "app", capability::COMPRESS).unwrap();
    // a frame claiming 100 bytes of zlib data inflating to 1,000: the data is garbage
    let mut frame = vec![100, 0, 0, 0, 0xE8, 0x03, 0];
    frame.extend_from_slice(&[0x5A; 100]);
    bad.stream.write_all(&frame).unwrap();
    let closed = (0..5).any(|_| bad.read().is_none());
    assert!(closed, "the proxy closes the connection");
    assert!(proxy.log_shows("compressed frame"), "{}", proxy.log());
    // everyone else goes on
    assert_eq!(printed(proxy.port, true, "SELECT 1"), "1\n");
    let mut fine = RawClient::login(proxy.port, "app", "app").unwrap();
    assert_eq!(fine.query("SELECT 1")[0].payload[0], 1);
}

#[test]
fn with_compression_off_a_client_that_asks_runs_uncompressed() {
    let proxy = Proxy::start_with(|c| c.replace("[proxy]\n", "[proxy]\ncompression = false\n"));
    let greeting = RawClient::connect(proxy.port).greeting();
    assert_eq!(greeting.capabilities & capability::COMPRESS, 0);
    assert_eq!(
        printed(proxy.port, true, "SHOW SESSION STATUS LIKE 'Compression'"),
        "Compression\tOFF\n"
    );
}
