//! The admin port against ProxySQL's own admin schema (tests/data/proxysql-2.7.1-admin-
//! schema.txt, written from ProxySQL 2.7.1's table definitions): every table there exists
//! on the admin port with every one of its columns, of the same declared type, in the
//! same order (Sluice's own extra columns may follow). A gap is a failing test, not a
//! tool that gives up in front of an operator.

mod common;

use common::{repo, Proxy, RawClient};
use sluice::protocol::constants::header;

/// (table, [(column, type)]) from the reference file.
fn reference() -> Vec<(String, Vec<(String, String)>)> {
    let path = repo().join("tests/data/proxysql-2.7.1-admin-schema.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let mut words = line.split('\t');
            let table = words.next().unwrap().to_string();
            let columns = words
                .map(|c| {
                    let (name, ty) = c.split_once(':').unwrap();
                    (name.to_string(), ty.to_string())
                })
                .collect();
            (table, columns)
        })
        .collect()
}

/// The rows of a text result, each value as text (NULL as "NULL").
fn rows(c: &mut RawClient, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let packets = c.query(sql);
    if packets[0].payload[0] == header::ERR {
        let err = common::expect_err(&packets[0]);
        return Err(err.message);
    }
    let mut eofs = 0;
    let mut out = Vec::new();
    for p in &packets[1..] {
        if p.payload[0] == header::EOF && p.payload.len() < 9 {
            eofs += 1;
            continue;
        }
        if eofs == 1 {
            out.push(text_row(&p.payload));
        }
    }
    Ok(out)
}

fn text_row(mut payload: &[u8]) -> Vec<String> {
    let mut values = Vec::new();
    while let Some((&first, rest)) = payload.split_first() {
        if first == 0xFB {
            values.push("NULL".to_string());
            payload = rest;
            continue;
        }
        let (len, rest) = match first {
            0xFC => (
                usize::from(u16::from_le_bytes([rest[0], rest[1]])),
                &rest[2..],
            ),
            0xFD => (
                usize::from(rest[0]) | usize::from(rest[1]) << 8 | usize::from(rest[2]) << 16,
                &rest[3..],
            ),
            n => (usize::from(n), rest),
        };
        values.push(String::from_utf8_lossy(&rest[..len]).into_owned());
        payload = &rest[len..];
    }
    values
}

#[test]
fn every_table_and_column_of_proxysqls_admin_schema_exists() {
    let proxy = Proxy::start();
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let mut gaps = Vec::new();
    for (table, columns) in reference() {
        let schema = if table.starts_with("stats_") {
            "stats"
        } else {
            "main"
        };
        let sql = format!("SELECT name, type FROM pragma_table_info('{table}', '{schema}')");
        let found = match rows(&mut admin, &sql) {
            Ok(found) => found,
            Err(e) => {
                gaps.push(format!("{table}: {e}"));
                continue;
            }
        };
        if found.is_empty() {
            gaps.push(format!("{table}: missing"));
            continue;
        }
        for (i, (name, ty)) in columns.iter().enumerate() {
            match found.get(i) {
                Some(f) if f[0] == *name && f[1].eq_ignore_ascii_case(ty) => {}
                Some(f) => gaps.push(format!(
                    "{table}.{name} {ty}: column {i} is {} {}",
                    f[0], f[1]
                )),
                None => gaps.push(format!("{table}.{name} {ty}: missing")),
            }
        }
        // what a tool reads: a SELECT of the table answers (refilled live tables included)
        if let Err(e) = rows(&mut admin, &format!("SELECT * FROM {table} LIMIT 1")) {
            gaps.push(format!("SELECT * FROM {table}: {e}"));
        }
    }
    assert!(gaps.is_empty(), "{} gaps:\n{}", gaps.len(), gaps.join("\n"));
}

#[test]
fn the_added_stats_tables_hold_what_happened() {
    let proxy = Proxy::start_with(|c| {
        c + r#"
[[query_rules]]
rule_id = 3
match_pattern = "admin_schema_probe"
"#
    });
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let mut app = RawClient::login(proxy.port, "app", "app").unwrap();
    for _ in 0..2 {
        let packets = app.query("SELECT * FROM sbtest.no_such_table_here /* admin_schema_probe */");
        assert_eq!(packets[0].payload[0], header::ERR);
    }
    // backend errors, per server (the reads went to the replicas), user, client, schema
    // and errno
    let errors = rows(
        &mut admin,
        "SELECT hostgroup, username, client_address, schemaname, errno, count_star, last_error \
         FROM stats_mysql_errors WHERE errno = 1146",
    )
    .unwrap();
    let total: u64 = errors.iter().map(|e| e[5].parse::<u64>().unwrap()).sum();
    assert_eq!(total, 2, "{errors:?}");
    for e in &errors {
        assert_eq!(&e[..5], ["20", "app", "127.0.0.1", "sbtest", "1146"]);
        assert!(e[6].contains("no_such_table_here"), "{errors:?}");
    }
    let reset = rows(
        &mut admin,
        "SELECT SUM(count_star) FROM stats_mysql_errors_reset",
    )
    .unwrap();
    assert_eq!(reset, [["2"]]);
    assert!(rows(&mut admin, "SELECT * FROM stats_mysql_errors")
        .unwrap()
        .is_empty());
    // rule hits
    assert_eq!(
        rows(
            &mut admin,
            "SELECT rule_id, hits FROM stats_mysql_query_rules"
        )
        .unwrap(),
        [["3", "2"]]
    );
    // the idle connections, with their real sockets
    let free = rows(
        &mut admin,
        "SELECT fd, hostgroup, user, statistics FROM stats_mysql_free_connections",
    )
    .unwrap();
    assert!(
        !free.is_empty(),
        "multiplexed: the connections went back to the pool"
    );
    for row in &free {
        assert!(row[0].parse::<i32>().unwrap() > 2, "{row:?}");
        assert_eq!(row[2], "app");
        let stats: serde_json::Value = serde_json::from_str(&row[3]).unwrap();
        assert!(stats["thread_id"].as_u64().unwrap() > 0);
    }
    // the processlist's extended_info is JSON about the session
    let sessions = rows(
        &mut admin,
        "SELECT SessionID, status_flags, extended_info FROM stats_mysql_processlist",
    )
    .unwrap();
    assert_eq!(sessions.len(), 1);
    let info: serde_json::Value = serde_json::from_str(&sessions[0][2]).unwrap();
    assert_eq!(info["session_id"].to_string(), sessions[0][0]);
    assert_eq!(info["user"], "app");
}

#[test]
fn tables_of_features_sluice_lacks_are_refused_at_load_when_filled() {
    let proxy = Proxy::start();
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let refused = |admin: &mut RawClient, fill: &str, load: &str, says: &str| {
        rows(admin, fill).unwrap();
        let err = rows(admin, load).unwrap_err();
        assert!(err.contains(says), "{load}: {err}");
    };
    refused(
        &mut admin,
        "INSERT INTO mysql_group_replication_hostgroups (writer_hostgroup, backup_writer_hostgroup, \
         reader_hostgroup, offline_hostgroup) VALUES (1, 2, 3, 4)",
        "LOAD MYSQL SERVERS TO RUNTIME",
        "mysql_group_replication_hostgroups: not supported",
    );
    rows(&mut admin, "DELETE FROM mysql_group_replication_hostgroups").unwrap();
    rows(&mut admin, "LOAD MYSQL SERVERS TO RUNTIME").unwrap();
    refused(
        &mut admin,
        "INSERT INTO mysql_query_rules (rule_id, active, match_pattern, multiplex, apply) \
         VALUES (9, 1, 'x', 0, 1)",
        "LOAD MYSQL QUERY RULES TO RUNTIME",
        "multiplex: not supported",
    );
    // the runtime twins exist and are empty
    assert!(rows(
        &mut admin,
        "SELECT * FROM runtime_mysql_query_rules_fast_routing"
    )
    .unwrap()
    .is_empty());
}
