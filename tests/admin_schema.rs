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

fn text_row(payload: &[u8]) -> Vec<String> {
    common::row_values(payload)
        .into_iter()
        .map(|v| {
            v.map_or("NULL".to_string(), |b| {
                String::from_utf8_lossy(&b).into_owned()
            })
        })
        .collect()
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

/// The column names of a result.
fn column_names(c: &mut RawClient, sql: &str) -> Vec<String> {
    let packets = c.query(sql);
    assert_ne!(
        packets[0].payload[0],
        header::ERR,
        "{sql}: {}",
        common::expect_err(&packets[0])
    );
    let columns = packets[0].payload[0] as usize;
    packets[1..=columns]
        .iter()
        .map(|p| {
            // catalog, schema, table, org_table, then the name
            let mut at = 0;
            for _ in 0..4 {
                at += 1 + p.payload[at] as usize;
            }
            let len = p.payload[at] as usize;
            String::from_utf8_lossy(&p.payload[at + 1..at + 1 + len]).into_owned()
        })
        .collect()
}

#[test]
fn show_statements_variables_and_functions_answer_as_in_proxysql() {
    let proxy = Proxy::start();
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let one = |admin: &mut RawClient, sql: &str| {
        rows(admin, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    // SHOW TABLES, with and without a schema and a pattern
    let all: Vec<String> = one(&mut admin, "SHOW TABLES")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert!(
        all.contains(&"mysql_servers".to_string())
            && all.contains(&"stats_mysql_errors".to_string())
    );
    let stats = one(&mut admin, "SHOW TABLES FROM stats");
    assert!(
        stats.iter().all(|r| r[0].starts_with("stats_")),
        "{stats:?}"
    );
    assert_eq!(
        one(&mut admin, "SHOW TABLES LIKE 'mysql_query_rules%'"),
        [["mysql_query_rules"], ["mysql_query_rules_fast_routing"]]
    );
    let monitor = one(&mut admin, "SHOW TABLES IN monitor");
    assert!(
        monitor.iter().any(|r| r[0] == "mysql_server_ping_log"),
        "{monitor:?}"
    );
    // SHOW DATABASES as ProxySQL: seq, name, file
    assert_eq!(
        column_names(&mut admin, "SHOW DATABASES"),
        ["seq", "name", "file"]
    );
    let names: Vec<String> = one(&mut admin, "SHOW DATABASES")
        .into_iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(names, ["main", "stats", "monitor"]);
    let create = one(&mut admin, "SHOW CREATE TABLE stats_mysql_errors");
    assert!(create[0][1].contains("last_error"), "{create:?}");
    // SHOW VARIABLES
    assert_eq!(
        column_names(&mut admin, "SHOW VARIABLES"),
        ["Variable_name", "Value"]
    );
    let version = one(&mut admin, "SHOW GLOBAL VARIABLES LIKE 'admin-version'");
    assert_eq!(version.len(), 1);
    assert!(version[0][1].contains("sluice"), "{version:?}");
    assert_eq!(
        one(&mut admin, "SELECT @@admin-version"),
        [[version[0][1].clone()]]
    );
    assert!(one(&mut admin, "SHOW VARIABLES LIKE 'mysql-pool%'").len() > 5);
    // SET, then LOAD … TO RUNTIME, as in ProxySQL
    one(&mut admin, "SET mysql-idle_timeout_ms = 123456");
    assert_eq!(
        one(&mut admin, "SELECT @@mysql-idle_timeout_ms"),
        [["123456"]]
    );
    one(&mut admin, "LOAD MYSQL VARIABLES TO RUNTIME");
    assert_eq!(
        one(&mut admin, "SELECT variable_value FROM runtime_global_variables WHERE variable_name = 'mysql-idle_timeout_ms'"),
        [["123456"]]
    );
    assert!(rows(&mut admin, "SET mysql-no_such_setting = 1")
        .unwrap_err()
        .contains("unknown variable"));
    one(&mut admin, "SET NAMES utf8mb4");
    one(&mut admin, "SET autocommit = 1");
    // admin- variables are read-only
    one(&mut admin, "LOAD ADMIN VARIABLES TO RUNTIME");
    assert!(rows(&mut admin, "SET admin-version = 'forged'")
        .unwrap_err()
        .contains("read-only"));
    one(
        &mut admin,
        "UPDATE global_variables SET variable_value = 'forged' WHERE variable_name = 'admin-version'",
    );
    assert!(rows(&mut admin, "LOAD ADMIN VARIABLES TO RUNTIME")
        .unwrap_err()
        .contains("read-only"));
    one(&mut admin, "SAVE ADMIN VARIABLES TO MEMORY");
    one(&mut admin, "LOAD ADMIN VARIABLES TO RUNTIME");
    // functions the tools use
    let row = &one(&mut admin, "SELECT CONNECTION_ID(), USER(), @@version_comment, FROM_UNIXTIME(0), UNIX_TIMESTAMP() > 1700000000")[0];
    assert!(row[0].parse::<u32>().unwrap() > 0);
    assert_eq!(
        &row[1..],
        [
            "admin@localhost",
            "Sluice admin",
            "1970-01-01 00:00:00",
            "1"
        ]
    );
    let other = RawClient::login(proxy.admin_port, "admin", "admin")
        .map(|mut c| one(&mut c, "SELECT CONNECTION_ID()"));
    assert_ne!(
        other.unwrap()[0][0],
        row[0],
        "each admin session has its own id"
    );
}

/// The exporter's statements, one per `-- collect` block.
fn exporter_queries() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo().join("tests/data/proxysql_exporter_queries.sql")).unwrap();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(option) = line.strip_prefix("-- collect") {
            out.push((format!("collect{option}"), String::new()));
        } else if !line.starts_with("--") {
            if let Some((_, sql)) = out.last_mut() {
                sql.push_str(line);
                sql.push('\n');
            }
        }
    }
    out
}

#[test]
fn percona_proxysql_exporter_queries_all_answer() {
    let proxy = Proxy::start();
    let mut app = RawClient::login(proxy.port, "app", "app").unwrap();
    app.query("SELECT 1 FROM DUAL");
    app.query("SELECT 1 FROM DUAL FOR UPDATE");
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let queries = exporter_queries();
    assert_eq!(queries.len(), 8);
    for (option, sql) in &queries {
        let result = rows(&mut admin, sql).unwrap_or_else(|e| panic!("{option}: {e}"));
        assert!(!result.is_empty(), "{option}: no rows");
        match option.as_str() {
            "collect.mysql_status" | "collect.stats_memory_metrics" => {
                // the exporter turns every value that parses as a number into a series;
                // ProxySQL's mysql_listener_paused (true/false) is the one it skips
                for row in result.iter().filter(|r| r[0] != "mysql_listener_paused") {
                    assert!(row[1].parse::<f64>().is_ok(), "{option}: {row:?}");
                }
                if option == "collect.mysql_status" {
                    let names: Vec<&str> = result.iter().map(|r| r[0].as_str()).collect();
                    // PMM's ProxySQL dashboard picks its instance from this series
                    assert!(names.contains(&"Active_Transactions"), "{names:?}");
                }
            }
            "collect.stats_command_counter" => {
                let commands: Vec<&str> = result.iter().map(|r| r[0].as_str()).collect();
                assert!(
                    commands.contains(&"SELECT") && commands.contains(&"SELECT_FOR_UPDATE"),
                    "{commands:?}"
                );
            }
            "collect.proxysql_info (always on)" => assert!(result[0][0].contains("sluice")),
            _ => {}
        }
    }
}

#[test]
fn proxysql_pause_resume_readonly_and_shutdown() {
    let mut proxy = Proxy::start();
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let mut session = RawClient::login(proxy.port, "app", "app").unwrap();
    rows(&mut admin, "PROXYSQL PAUSE").unwrap();
    let refused = RawClient::login(proxy.port, "app", "app").unwrap_err();
    assert!(
        refused.message.contains("PROXYSQL PAUSE"),
        "{}",
        refused.message
    );
    assert_eq!(
        session.query_column("SELECT 1"),
        ["1"],
        "a session goes on while paused"
    );
    rows(&mut admin, "PROXYSQL RESUME").unwrap();
    assert!(RawClient::login(proxy.port, "app", "app").is_ok());
    // read-only: SQL that writes admin tables is refused, reads and LOAD still run
    rows(&mut admin, "PROXYSQL READONLY").unwrap();
    let err = rows(&mut admin, "UPDATE mysql_servers SET weight = 5").unwrap_err();
    assert!(err.contains("read-only"), "{err}");
    assert!(rows(&mut admin, "SET mysql-idle_timeout_ms = 1")
        .unwrap_err()
        .contains("read-only"));
    assert!(!rows(&mut admin, "SELECT * FROM mysql_servers")
        .unwrap()
        .is_empty());
    rows(&mut admin, "LOAD MYSQL SERVERS TO RUNTIME").unwrap();
    rows(&mut admin, "PROXYSQL READWRITE").unwrap();
    rows(&mut admin, "UPDATE mysql_servers SET weight = 5 WHERE 0").unwrap();
    // SHUTDOWN stops the process as SIGTERM does
    rows(&mut admin, "PROXYSQL SHUTDOWN").unwrap();
    assert_eq!(
        proxy.wait_exit(std::time::Duration::from_secs(40)),
        Some(true)
    );
}

/// The names of a reference list in tests/data (one per line, `#` comments).
fn names(file: &str) -> Vec<String> {
    std::fs::read_to_string(repo().join("tests/data").join(file))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// `Variable_Name → Variable_Value` of a two-column stats table.
fn variables(admin: &mut RawClient, sql: &str) -> std::collections::HashMap<String, String> {
    rows(admin, sql)
        .unwrap()
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

fn number(values: &std::collections::HashMap<String, String>, name: &str) -> u64 {
    values[name]
        .parse()
        .unwrap_or_else(|_| panic!("{name} = {}", values[name]))
}

#[test]
fn proxysqls_status_rows_are_all_there_and_move_under_traffic() {
    let proxy = Proxy::start();
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let global = "SELECT Variable_Name, Variable_Value FROM stats_mysql_global";
    let before = variables(&mut admin, global);
    let missing: Vec<_> = names("proxysql-2.7.2-stats_mysql_global.txt")
        .into_iter()
        .filter(|n| !before.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from stats_mysql_global: {missing:?}"
    );
    for (name, value) in &before {
        // ProxySQL too shows mysql_listener_paused as true/false; the exporter skips it
        if name != "mysql_listener_paused" {
            assert!(value.parse::<f64>().is_ok(), "{name} = {value}");
        }
    }
    assert!(number(&before, "MySQL_Thread_Workers") >= 1);

    // a session holding a transaction open, statements of several commands
    let mut app = RawClient::login(proxy.port, "app", "app").unwrap();
    ok(&mut app, "CREATE TEMPORARY TABLE status_probe (a INT)");
    ok(&mut app, "BEGIN");
    ok(&mut app, "INSERT INTO status_probe VALUES (1)");
    let during = variables(&mut admin, global);
    assert_eq!(number(&during, "Active_Transactions"), 1);
    ok(&mut app, "COMMIT");
    ok(&mut app, "SET NAMES utf8mb4");
    let denied = RawClient::login(proxy.port, "app", "wrong").unwrap_err();
    assert_eq!(denied.code, 1045);
    let after = variables(&mut admin, global);
    assert_eq!(number(&after, "Active_Transactions"), 0);
    let grew = |name: &str, by: u64| {
        assert!(
            number(&after, name) >= number(&before, name) + by,
            "{name}: {} → {}",
            before[name],
            after[name]
        )
    };
    grew("Questions", 5);
    grew("Client_Connections_created", 1);
    grew("Access_Denied_Wrong_Password", 1);
    grew("Com_commit", 1);
    grew("Com_frontend_set_names", 1);
    grew("Queries_frontends_bytes_recv", 50);
    grew("Queries_frontends_bytes_sent", 50);
    grew("Queries_backends_bytes_sent", 50);
    grew("Queries_backends_bytes_recv", 50);
    grew("Backend_query_time_nsec", 1);
    grew("Query_Processor_time_nsec", 1);
    grew("ConnPool_get_conn_success", 1);
    grew("MyHGM_myconnpoll_get", 1);
    grew("Server_Connections_created", 1);
    assert!(number(&after, "MySQL_Monitor_ping_check_OK") > 0);
    assert!(number(&after, "MySQL_Monitor_connect_check_OK") > 0);

    // the command counters: ProxySQL's list, counted by its names
    let commands = rows(
        &mut admin,
        "SELECT Command, Total_cnt FROM stats_mysql_commands_counters",
    )
    .unwrap();
    let listed: Vec<&str> = commands.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(listed, names("proxysql-2.7.2-commands.txt"));
    let count = |name: &str| -> u64 {
        commands.iter().find(|r| r[0] == name).unwrap()[1]
            .parse()
            .unwrap()
    };
    for name in ["CREATE_TEMPORARY", "BEGIN", "INSERT", "COMMIT", "SET"] {
        assert_eq!(count(name), 1, "{name}: {commands:?}");
    }

    // memory: ProxySQL's rows, the allocator's figures real
    let memory = variables(
        &mut admin,
        "SELECT Variable_Name, Variable_Value FROM stats_memory_metrics",
    );
    let missing: Vec<_> = names("proxysql-2.7.2-stats_memory_metrics.txt")
        .into_iter()
        .filter(|n| !memory.contains_key(n))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from stats_memory_metrics: {missing:?}"
    );
    let allocated = number(&memory, "jemalloc_allocated");
    assert!(allocated > 100_000, "{allocated}");
    assert!(number(&memory, "jemalloc_active") >= allocated);
    assert!(number(&memory, "jemalloc_resident") >= number(&memory, "jemalloc_active"));
    assert!(number(&memory, "SQLite3_memory_bytes") > 0);
    assert_eq!(number(&memory, "jemalloc_background_threads"), 1);
    assert!(number(&memory, "query_digest_memory") > 0);
    assert!(number(&memory, "Auth_memory") > 0);

    // the certificates loaded, as ProxySQL 3.0 lists them
    let certificates = rows(
        &mut admin,
        "SELECT cert_type, subject_cn IS NOT NULL, days_until_expiry > 0, \
         length(sha256_fingerprint), not_after LIKE '20__-__-__ __:__:__' \
         FROM stats_tls_certificates WHERE cert_type = 'server'",
    )
    .unwrap();
    assert_eq!(certificates, [["server", "1", "1", "64", "1"]]);

    // the shortcuts print the same rows
    let status = rows(&mut admin, "SHOW MYSQL STATUS LIKE 'Com_commit'").unwrap();
    assert_eq!(
        status,
        [["Com_commit".to_string(), after["Com_commit"].clone()]]
    );
    let mysql = rows(&mut admin, "SHOW MYSQL VARIABLES").unwrap();
    assert!(mysql
        .iter()
        .all(|r| r[0].starts_with("mysql-") || r[0].starts_with("monitor-")));
    assert!(mysql.iter().any(|r| r[0] == "mysql-max_connections"));
    let admin_variables = rows(&mut admin, "SHOW ADMIN VARIABLES LIKE 'admin-version'").unwrap();
    assert_eq!(admin_variables.len(), 1);
}

fn ok(c: &mut RawClient, sql: &str) {
    let packets = c.query(sql);
    assert_eq!(packets[0].payload[0], header::OK, "{sql}");
}

#[test]
fn proxysqls_variable_names_are_all_there_and_the_ones_without_a_setting_are_read_only() {
    let proxy = Proxy::start();
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let present = variables(
        &mut admin,
        "SELECT variable_name, variable_value FROM global_variables",
    );
    let missing: Vec<_> = names("proxysql-2.7.2-global_variables.txt")
        .into_iter()
        .filter(|n| !present.contains_key(n))
        .collect();
    // mysql-monitor_username is an alias of monitor-user, present when [monitor] is
    assert!(
        missing.is_empty(),
        "missing from global_variables: {missing:?}"
    );
    assert_eq!(present["mysql-shun_on_failures"], "5");
    assert_eq!(present["mysql-have_ssl"], "true");

    // a ProxySQL variable without a Sluice setting: refused at SET, and at LOAD when
    // changed behind SET's back
    let refused = rows(&mut admin, "SET mysql-shun_on_failures = 9").unwrap_err();
    assert!(refused.contains("read-only"), "{refused}");
    rows(
        &mut admin,
        "UPDATE global_variables SET variable_value = '9' WHERE variable_name = 'mysql-shun_on_failures'",
    )
    .unwrap();
    let refused = rows(&mut admin, "LOAD MYSQL VARIABLES TO RUNTIME").unwrap_err();
    assert!(refused.contains("mysql-shun_on_failures"), "{refused}");
    rows(
        &mut admin,
        "UPDATE global_variables SET variable_value = '5' WHERE variable_name = 'mysql-shun_on_failures'",
    )
    .unwrap();
    // a mapped one applies
    rows(&mut admin, "SET mysql-long_query_time = 250").unwrap();
    rows(&mut admin, "LOAD MYSQL VARIABLES TO RUNTIME").unwrap();
    let runtime = variables(
        &mut admin,
        "SELECT variable_name, variable_value FROM runtime_global_variables \
         WHERE variable_name LIKE 'mysql-long_query_time%'",
    );
    assert_eq!(runtime["mysql-long_query_time_ms"], "250");
    let refused = rows(&mut admin, "SET admin-web_enabled = 'true'").unwrap_err();
    assert!(refused.contains("read-only"), "{refused}");
    rows(
        &mut admin,
        "UPDATE global_variables SET variable_value = 'true' WHERE variable_name = 'admin-web_enabled'",
    )
    .unwrap();
    let refused = rows(&mut admin, "LOAD ADMIN VARIABLES TO RUNTIME").unwrap_err();
    assert!(refused.contains("admin-web_enabled"), "{refused}");
}

#[test]
fn worker_threads_size_the_runtime_and_mysql_threads_shows_it() {
    let proxy = Proxy::start_with(|c| c.replace("[proxy]\n", "[proxy]\nworker_threads = 1\n"));
    let mut admin = RawClient::login(proxy.admin_port, "admin", "admin").unwrap();
    let status = variables(
        &mut admin,
        "SELECT Variable_Name, Variable_Value FROM stats_mysql_global",
    );
    assert_eq!(number(&status, "MySQL_Thread_Workers"), 1);
    let settings = variables(
        &mut admin,
        "SELECT variable_name, variable_value FROM global_variables WHERE variable_name = 'mysql-threads'",
    );
    assert_eq!(settings["mysql-threads"], "1");
    // and it serves clients on that one worker
    let mut app = RawClient::login(proxy.port, "app", "app").unwrap();
    ok(&mut app, "DO 1");
}
