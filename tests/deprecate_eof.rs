//! CLIENT_DEPRECATE_EOF: a client that negotiates it gets through Sluice the bytes MariaDB
//! itself sends such a client — results, an empty one, multi-statement and procedure
//! results, COM_FIELD_LIST, prepares, a cursor and its fetches, a cached answer, a
//! status read the proxy rewrites, and a LOCAL INFILE after a result whose EOFs were
//! dropped. The responses are read here by the protocol's rules for such clients, not by
//! the proxy's own tracker.

mod common;

use common::{direct_ok, Proxy, RawClient, RawPacket};
use sluice::protocol::codec::Reader;
use sluice::protocol::constants::{capability, command, header, status};

const FLAGS: u32 = capability::DEPRECATE_EOF
    | capability::MULTI_STATEMENTS
    | capability::PS_MULTI_RESULTS
    | capability::LOCAL_FILES;

/// The status flags of an OK packet (either header).
fn ok_status(payload: &[u8]) -> u16 {
    let mut r = Reader::new(&payload[1..]);
    r.lenenc_int("affected rows").unwrap();
    r.lenenc_int("last insert id").unwrap();
    r.u16("status").unwrap()
}

/// The packet that ends rows for a DEPRECATE_EOF client: an OK with the EOF header.
fn is_terminator(p: &RawPacket) -> bool {
    p.payload.first() == Some(&header::EOF) && p.payload.len() < 0xFF_FFFF
}

/// Reads the next packet into `packets`; its payload.
fn next(c: &mut RawClient, packets: &mut Vec<RawPacket>) -> Vec<u8> {
    let p = c.read().expect("a response packet");
    let payload = p.payload.clone();
    packets.push(p);
    payload
}

/// Reads one response to `cmd` as a DEPRECATE_EOF client must: no EOF after column
/// definitions, an OK (header FE) after rows; `cursor` when an execute asked for one.
/// A LOCAL INFILE request is answered with `file`.
fn response(c: &mut RawClient, cmd: u8, cursor: bool, file: &[u8]) -> Vec<RawPacket> {
    let mut packets = Vec::new();
    match cmd {
        command::FIELD_LIST | command::STMT_FETCH => loop {
            let p = next(c, &mut packets);
            if p[0] == header::ERR || (p[0] == header::EOF && p.len() < 0xFF_FFFF) {
                return packets;
            }
        },
        command::STMT_PREPARE => {
            let ok = next(c, &mut packets);
            if ok[0] == header::OK {
                let columns = u16::from_le_bytes([ok[5], ok[6]]);
                let params = u16::from_le_bytes([ok[7], ok[8]]);
                for _ in 0..columns + params {
                    next(c, &mut packets);
                }
            }
            return packets;
        }
        _ => {}
    }
    loop {
        let first = next(c, &mut packets);
        let more = match first[0] {
            header::OK => ok_status(&first) & status::MORE_RESULTS_EXISTS != 0,
            header::ERR => false,
            header::LOCAL_INFILE => {
                let seq = packets.last().unwrap().seq;
                c.write(seq.wrapping_add(1), file);
                c.write(seq.wrapping_add(2), &[]);
                continue;
            }
            _ => {
                let columns = Reader::new(&first).lenenc_int("column count").unwrap();
                for _ in 0..columns {
                    next(c, &mut packets);
                }
                loop {
                    let p = next(c, &mut packets);
                    if p[0] == header::ERR {
                        return packets;
                    }
                    if is_terminator(packets.last().unwrap()) {
                        break;
                    }
                    assert!(!cursor || p[0] == 0, "binary rows only");
                }
                ok_status(&packets.last().unwrap().payload) & status::MORE_RESULTS_EXISTS != 0
            }
        };
        if !more {
            return packets;
        }
    }
}

/// Sends `body` as `cmd` and reads its response; the wire as (sequence id, payload)
/// pairs, a prepare's statement id blanked (each server numbers its own).
fn exchange(c: &mut RawClient, cmd: u8, body: &[u8], cursor: bool) -> Vec<(u8, Vec<u8>)> {
    c.write(0, &[&[cmd], body].concat());
    let mut packets = response(c, cmd, cursor, b"7\tfile\n8\tfile\n");
    if cmd == command::STMT_PREPARE && packets[0].payload[0] == header::OK {
        packets[0].payload[1..5].fill(0);
    }
    packets.into_iter().map(|p| (p.seq, p.payload)).collect()
}

fn statement_id(c: &mut RawClient, sql: &str) -> [u8; 4] {
    c.write(0, &[&[command::STMT_PREPARE], sql.as_bytes()].concat());
    let packets = response(c, command::STMT_PREPARE, false, b"");
    packets[0].payload[1..5].try_into().unwrap()
}

/// COM_STMT_EXECUTE of `id` with one integer parameter; `flags` 1 asks for a cursor.
fn execute_body(id: [u8; 4], flags: u8, value: i64) -> Vec<u8> {
    let mut body = id.to_vec();
    body.push(flags);
    body.extend_from_slice(&1u32.to_le_bytes());
    body.extend_from_slice(&[0, 1, 0x08, 0]);
    body.extend_from_slice(&value.to_le_bytes());
    body
}

/// A command on a prepared statement: its code, whether it opens a cursor, its body for a
/// statement id.
type Step = (u8, bool, fn([u8; 4]) -> Vec<u8>);

fn fetch_body(id: [u8; 4], rows: u32) -> Vec<u8> {
    [&id[..], &rows.to_le_bytes()].concat()
}

#[test]
fn a_deprecate_eof_client_gets_what_mariadb_sends_it() {
    direct_ok(
        "CREATE TABLE IF NOT EXISTS sbtest.deprecate_eof_t (id INT PRIMARY KEY, v VARCHAR(20)); \
         REPLACE INTO sbtest.deprecate_eof_t VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'); \
         CREATE TABLE IF NOT EXISTS sbtest.deprecate_eof_file (n INT, v VARCHAR(20))",
    );
    let procedure = common::direct(&[
        "--delimiter=//",
        "-e",
        "CREATE OR REPLACE PROCEDURE sbtest.deprecate_eof_p(IN n INT) \
         BEGIN SELECT id FROM sbtest.deprecate_eof_t WHERE id <= n ORDER BY id; SELECT n AS n; END",
    ]);
    assert!(procedure.status.success(), "{}", common::stderr(&procedure));
    common::replicas_caught_up();
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 1
match_pattern = "cached_by_the_proxy"
cache_ttl = 600000
"#
    });
    let login = |port| RawClient::login_with(port, "app", "app", FLAGS).unwrap();
    let (mut server, mut client) = (login(common::WRITER_PORT), login(proxy.port));
    let text = |c: &mut RawClient, sql: &str| exchange(c, command::QUERY, sql.as_bytes(), false);
    for sql in [
        // the second comes from the proxy's cache (before the CALL: a procedure may leave
        // state on its connection, and a session holding state is not served from it)
        "SELECT v, 'cached_by_the_proxy' FROM sbtest.deprecate_eof_t ORDER BY id",
        "SELECT v, 'cached_by_the_proxy' FROM sbtest.deprecate_eof_t ORDER BY id",
        "SELECT id, v FROM sbtest.deprecate_eof_t ORDER BY id",
        "SELECT id FROM sbtest.deprecate_eof_t WHERE id < 0",
        "SELECT 1 AS a; DO 1; SELECT v FROM sbtest.deprecate_eof_t WHERE id = 2",
        "CALL sbtest.deprecate_eof_p(3)",
        // the proxy rewrites this status read for the client's own link
        "SHOW SESSION STATUS LIKE 'Ssl_cipher'",
        // the file is sent after a result whose column EOF the client never saw
        "SELECT 1 AS before_the_file; LOAD DATA LOCAL INFILE 'rows.txt' INTO TABLE sbtest.deprecate_eof_file",
    ] {
        assert_eq!(text(&mut client, sql), text(&mut server, sql), "{sql}");
    }
    let field_list = b"deprecate_eof_t\0";
    assert_eq!(
        exchange(&mut client, command::FIELD_LIST, field_list, false),
        exchange(&mut server, command::FIELD_LIST, field_list, false),
    );

    let sql = "SELECT id, v FROM sbtest.deprecate_eof_t WHERE id > ? ORDER BY id";
    assert_eq!(
        exchange(&mut client, command::STMT_PREPARE, sql.as_bytes(), false),
        exchange(&mut server, command::STMT_PREPARE, sql.as_bytes(), false),
    );
    let ids = [
        statement_id(&mut client, sql),
        statement_id(&mut server, sql),
    ];
    // without a cursor; with one, then fetches of part of the rows and of the rest
    let steps: [Step; 4] = [
        (command::STMT_EXECUTE, false, |id| execute_body(id, 0, 1)),
        (command::STMT_EXECUTE, true, |id| execute_body(id, 1, 0)),
        (command::STMT_FETCH, false, |id| fetch_body(id, 2)),
        (command::STMT_FETCH, false, |id| fetch_body(id, 10)),
    ];
    for (cmd, cursor, body) in steps {
        let through = exchange(&mut client, cmd, &body(ids[0]), cursor);
        let direct = exchange(&mut server, cmd, &body(ids[1]), cursor);
        assert_eq!(through, direct, "command {cmd:#x}, cursor {cursor}");
    }
    let hits = common::stat(&proxy, "Query_Cache_count_GET_OK");
    let (lookups, stores) = (
        common::stat(&proxy, "Query_Cache_count_GET"),
        common::stat(&proxy, "Query_Cache_count_SET"),
    );
    assert!(
        hits >= 1,
        "the cached answer was served: {hits} hits, {lookups} lookups, {stores} stores"
    );
    direct_ok("DELETE FROM sbtest.deprecate_eof_file");
}
