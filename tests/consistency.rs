//! Read-your-writes by default (`consistency = "session"`) against the real cluster: a
//! session that writes and reads back at once, in autocommit, sees its write every time,
//! while its reads still go to the replicas; with `consistency = "none"` the same reads
//! can miss it (so the test can fail). With `consistency = "global"` a read sees every
//! write the proxy acknowledged before it, whichever session wrote. Each runs with a
//! client that negotiates session tracking (the write's GTID comes in its OK packet) and
//! one that does not (the proxy reads it after the write).

mod common;

use std::collections::HashMap;

use common::{direct_ok, Proxy, RawClient};
use sluice::protocol::constants::{capability, header};

/// The two kinds of client: without session tracking, and with it.
const CLIENTS: [u32; 2] = [0, capability::SESSION_TRACK];

/// The text values of the first row of a result.
fn first_row(c: &mut RawClient, sql: &str) -> Vec<String> {
    first_row_bytes(c, sql)
        .into_iter()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect()
}

fn ok(c: &mut RawClient, sql: &str) {
    let packets = c.query(sql);
    assert_eq!(packets[0].payload[0], header::OK, "{sql}: {packets:?}");
}

/// One session of `user` of each kind.
fn clients(port: u16, user: &str) -> Vec<RawClient> {
    CLIENTS
        .iter()
        .map(|extra| RawClient::login_with(port, user, user, *extra).unwrap())
        .collect()
}

/// Updates one row and reads it back at once, `n` times, each kind of client in turn: how
/// many reads missed the write, and which servers answered.
fn write_then_read(port: u16, user: &str, id: u32, n: u32) -> (u32, HashMap<String, u32>) {
    let mut clients = clients(port, user);
    let mut stale = 0;
    let mut servers = HashMap::new();
    for i in 1..=n {
        let c = &mut clients[i as usize % CLIENTS.len()];
        ok(
            c,
            &format!("UPDATE sbtest.consistency_rows SET v = {i} WHERE id = {id}"),
        );
        let row = first_row(
            c,
            &format!("SELECT v, @@port FROM sbtest.consistency_rows WHERE id = {id}"),
        );
        if row[0] != i.to_string() {
            stale += 1;
        }
        *servers.entry(row[1].clone()).or_default() += 1;
    }
    (stale, servers)
}

fn replica_reads(servers: &HashMap<String, u32>) -> u32 {
    ["13309", "13310"]
        .iter()
        .filter_map(|p| servers.get(*p))
        .sum()
}

#[test]
fn a_session_reads_its_own_writes_by_default_and_still_reads_from_the_replicas() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.consistency_rows (id INT PRIMARY KEY, v INT); \
         REPLACE INTO sbtest.consistency_rows VALUES (1, 0), (2, 0)",
    );
    // app reads its writes (the default); app_local does not
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "name = \"app_local\"",
            "name = \"app_local\"\nconsistency = \"none\"",
        )
    });
    let (stale, servers) = write_then_read(proxy.port, "app", 1, 1000);
    assert_eq!(
        stale, 0,
        "read-your-writes missed {stale} of 1000 writes ({servers:?})"
    );
    let on_replicas = replica_reads(&servers);
    eprintln!("session: {servers:?}");
    assert!(
        on_replicas > 500,
        "reads still go to the replicas: {servers:?}"
    );
    let (stale, servers) = write_then_read(proxy.port, "app_local", 2, 1000);
    eprintln!("none: {stale} stale, {servers:?}");
    assert!(
        stale > 0,
        "without read-your-writes some reads miss the write ({servers:?})"
    );
}

/// One session updates a row, then another reads it at once, `n` times: how many reads
/// missed the write, and which servers answered.
fn write_here_read_there(
    port: u16,
    (writer, reader): (&str, &str),
    id: u32,
    n: u32,
) -> (u32, HashMap<String, u32>) {
    let mut clients = clients(port, writer);
    let mut r = RawClient::login(port, reader, reader).unwrap();
    let mut stale = 0;
    let mut servers = HashMap::new();
    for i in 1..=n {
        let w = &mut clients[i as usize % CLIENTS.len()];
        ok(
            w,
            &format!("UPDATE sbtest.consistency_rows SET v = {i} WHERE id = {id}"),
        );
        let row = first_row(
            &mut r,
            &format!("SELECT v, @@port FROM sbtest.consistency_rows WHERE id = {id}"),
        );
        if row[0] != i.to_string() {
            stale += 1;
        }
        *servers.entry(row[1].clone()).or_default() += 1;
    }
    (stale, servers)
}

#[test]
fn a_global_session_sees_every_write_the_proxy_acknowledged_before_its_read() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.consistency_rows (id INT PRIMARY KEY, v INT); \
         REPLACE INTO sbtest.consistency_rows VALUES (3, 0), (4, 0)",
    );
    // app writes (tracking its GTIDs, as by default); app_local reads with "global"
    let proxy = Proxy::start_with(|c| {
        c.replace(
            "name = \"app_local\"",
            "name = \"app_local\"\nconsistency = \"global\"",
        )
    });
    let (stale, servers) = write_here_read_there(proxy.port, ("app", "app_local"), 3, 1000);
    eprintln!("global: {stale} stale, {servers:?}");
    assert_eq!(
        stale, 0,
        "global reads missed {stale} of 1000 writes ({servers:?})"
    );
    assert!(
        replica_reads(&servers) > 500,
        "reads still go to the replicas: {servers:?}"
    );
    // a "session" reader does not wait for another session's writes
    let (stale, servers) = write_here_read_there(proxy.port, ("app", "app"), 4, 1000);
    eprintln!("another session's writes, session consistency: {stale} stale, {servers:?}");
    assert!(
        stale > 0,
        "some reads of another session miss its write ({servers:?})"
    );
}

/// The first row's values (NULL as empty), lengths of any size.
fn first_row_bytes(c: &mut RawClient, sql: &str) -> Vec<Vec<u8>> {
    let packets = c.query(sql);
    assert_ne!(
        packets[0].payload[0],
        header::ERR,
        "{sql}: {}",
        common::expect_err(&packets[0])
    );
    let columns = packets[0].payload[0] as usize;
    common::row_values(&packets[columns + 2].payload)
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

#[test]
fn a_20_mib_blob_written_is_read_back_whole_from_a_replica() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.consistency_blobs (id INT PRIMARY KEY, b LONGBLOB); \
         REPLACE INTO sbtest.consistency_blobs VALUES (1, '')",
    );
    // a replica takes longer than the default 100 ms to apply 20 MiB: a read that may not
    // wait that long goes to the writer (also correct); allowed to, it waits
    let proxy =
        Proxy::start_with(|c| c.replacen("[proxy]\n", "[proxy]\ncausal_read_wait_ms = 5000\n", 1));
    let mut c = RawClient::login(proxy.port, "app", "app").unwrap();
    const SIZE: usize = 20 << 20;
    let mut on_replicas = 0;
    for i in 0..10u8 {
        let fill = b'A' + i;
        ok(
            &mut c,
            &format!(
                "UPDATE sbtest.consistency_blobs SET b = REPEAT(CHAR({fill}), {SIZE}) WHERE id = 1"
            ),
        );
        let row = first_row_bytes(
            &mut c,
            "SELECT b, @@port FROM sbtest.consistency_blobs WHERE id = 1",
        );
        assert_eq!(row[0].len(), SIZE, "write {i}: the whole blob");
        assert!(
            row[0].iter().all(|&b| b == fill),
            "write {i}: the blob just written"
        );
        if row[1] == b"13309" || row[1] == b"13310" {
            on_replicas += 1;
        }
    }
    assert!(
        on_replicas >= 5,
        "{on_replicas} of 10 reads on the replicas"
    );
}
