//! The configuration as ProxySQL's admin tables: the same names and columns where a
//! ProxySQL tool reads them, Sluice's own settings in `attributes` (JSON) or extra columns
//! at the end. Rows go both ways: configuration → rows to show it, rows → configuration to
//! load what an operator edited. A row that cannot become configuration is refused naming
//! the table, the row and the column.

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};
use serde_json::json;

use crate::config::{Config, Consistency, GaleraHostgroups, QueryRule, Server, ServerStatus, User};
use crate::rules::Kind;

/// A table: its name and its columns with their SQLite types.
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str)],
    pub key: &'static str,
}

/// A table without a primary key: the live and the always-empty ones.
pub const fn unkeyed(
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
) -> Table {
    Table {
        name,
        columns,
        key: "",
    }
}

impl Table {
    /// `CREATE TABLE` for this table in `schema`.
    pub fn create(&self, schema: &str, name: &str) -> String {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|(c, t)| format!("\"{c}\" {t}"))
            .collect();
        let key = if self.key.is_empty() {
            String::new()
        } else {
            format!(", PRIMARY KEY ({})", self.key)
        };
        format!("CREATE TABLE {schema}.{name} ({}{key})", columns.join(", "))
    }
}

pub const SERVERS: Table = Table {
    name: "mysql_servers",
    columns: &[
        ("hostgroup_id", "INT NOT NULL DEFAULT 0"),
        ("hostname", "VARCHAR NOT NULL"),
        ("port", "INT NOT NULL DEFAULT 3306"),
        ("gtid_port", "INT NOT NULL DEFAULT 0"),
        ("status", "VARCHAR NOT NULL DEFAULT 'ONLINE'"),
        ("weight", "INT NOT NULL DEFAULT 1"),
        ("compression", "INT NOT NULL DEFAULT 0"),
        ("max_connections", "INT NOT NULL DEFAULT 1000"),
        ("max_replication_lag", "INT NOT NULL DEFAULT 0"),
        ("use_ssl", "INT NOT NULL DEFAULT 0"),
        ("max_latency_ms", "INT UNSIGNED NOT NULL DEFAULT 0"),
        ("comment", "VARCHAR NOT NULL DEFAULT ''"),
        ("priority", "INT NOT NULL DEFAULT 0"),
    ],
    key: "hostgroup_id, hostname, port",
};

pub const USERS: Table = Table {
    name: "mysql_users",
    columns: &[
        ("username", "VARCHAR NOT NULL"),
        ("password", "VARCHAR NOT NULL DEFAULT ''"),
        ("active", "INT NOT NULL DEFAULT 1"),
        ("use_ssl", "INT NOT NULL DEFAULT 0"),
        ("default_hostgroup", "INT NOT NULL DEFAULT 0"),
        ("default_schema", "VARCHAR"),
        ("schema_locked", "INT NOT NULL DEFAULT 0"),
        ("transaction_persistent", "INT NOT NULL DEFAULT 1"),
        ("fast_forward", "INT NOT NULL DEFAULT 0"),
        ("backend", "INT NOT NULL DEFAULT 1"),
        ("frontend", "INT NOT NULL DEFAULT 1"),
        ("max_connections", "INT NOT NULL DEFAULT 10000"),
        ("attributes", "VARCHAR NOT NULL DEFAULT ''"),
        ("comment", "VARCHAR NOT NULL DEFAULT ''"),
    ],
    key: "username",
};

/// ProxySQL's columns in ProxySQL's order. Those of features Sluice does not have
/// (`proxy_addr`, `proxy_port`, `cache_timeout`, `reconnect`, `retries`, `delay`,
/// `next_query_flagIN`, `OK_msg`, `sticky_conn`, `multiplex`, `gtid_from_hostgroup`) are
/// always NULL, and a rule that sets one is refused at LOAD rather than half-applied.
pub const QUERY_RULES: Table = Table {
    name: "mysql_query_rules",
    columns: &[
        ("rule_id", "INTEGER NOT NULL"),
        ("active", "INT NOT NULL DEFAULT 0"),
        ("username", "VARCHAR"),
        ("schemaname", "VARCHAR"),
        ("flagIN", "INT NOT NULL DEFAULT 0"),
        ("client_addr", "VARCHAR"),
        ("proxy_addr", "VARCHAR"),
        ("proxy_port", "INT"),
        ("digest", "VARCHAR"),
        ("match_digest", "VARCHAR"),
        ("match_pattern", "VARCHAR"),
        ("negate_match_pattern", "INT NOT NULL DEFAULT 0"),
        ("re_modifiers", "VARCHAR DEFAULT 'CASELESS'"),
        ("flagOUT", "INT"),
        ("replace_pattern", "VARCHAR"),
        ("destination_hostgroup", "INT"),
        ("cache_ttl", "INT CHECK(cache_ttl > 0)"),
        (
            "cache_empty_result",
            "INT CHECK (cache_empty_result IN (0,1))",
        ),
        ("cache_timeout", "INT"),
        ("reconnect", "INT"),
        ("timeout", "INT UNSIGNED"),
        ("retries", "INT"),
        ("delay", "INT UNSIGNED"),
        ("next_query_flagIN", "INT UNSIGNED"),
        ("mirror_flagOUT", "INT UNSIGNED"),
        ("mirror_hostgroup", "INT UNSIGNED"),
        ("error_msg", "VARCHAR"),
        ("OK_msg", "VARCHAR"),
        ("sticky_conn", "INT"),
        ("multiplex", "INT"),
        ("gtid_from_hostgroup", "INT UNSIGNED"),
        ("log", "INT"),
        ("apply", "INT NOT NULL DEFAULT 0"),
        ("attributes", "VARCHAR NOT NULL DEFAULT ''"),
        ("comment", "VARCHAR"),
    ],
    key: "rule_id",
};

/// The columns of [`QUERY_RULES`] Sluice has no feature behind.
const INERT_RULE_COLUMNS: [&str; 11] = [
    "proxy_addr",
    "proxy_port",
    "cache_timeout",
    "reconnect",
    "retries",
    "delay",
    "next_query_flagIN",
    "OK_msg",
    "sticky_conn",
    "multiplex",
    "gtid_from_hostgroup",
];

pub const GALERA: Table = Table {
    name: "mysql_galera_hostgroups",
    columns: &[
        ("writer_hostgroup", "INT NOT NULL"),
        ("backup_writer_hostgroup", "INT NOT NULL"),
        ("reader_hostgroup", "INT NOT NULL"),
        ("offline_hostgroup", "INT NOT NULL"),
        ("active", "INT NOT NULL DEFAULT 1"),
        ("max_writers", "INT NOT NULL DEFAULT 1"),
        ("writer_is_also_reader", "INT NOT NULL DEFAULT 0"),
        ("max_transactions_behind", "INT NOT NULL DEFAULT 0"),
        ("comment", "VARCHAR"),
        ("fallback_to_writer", "INT NOT NULL DEFAULT 1"),
    ],
    key: "writer_hostgroup",
};

/// Present for tools that read it; Sluice manages async replicas per server
/// (`max_replication_lag`) instead, so it is always empty and cannot be loaded.
pub const REPLICATION: Table = Table {
    name: "mysql_replication_hostgroups",
    columns: &[
        ("writer_hostgroup", "INT NOT NULL"),
        ("reader_hostgroup", "INT NOT NULL"),
        ("check_type", "VARCHAR NOT NULL DEFAULT 'read_only'"),
        ("comment", "VARCHAR NOT NULL DEFAULT ''"),
    ],
    key: "writer_hostgroup",
};

pub const VARIABLES: Table = Table {
    name: "global_variables",
    columns: &[
        ("variable_name", "VARCHAR NOT NULL"),
        ("variable_value", "VARCHAR NOT NULL"),
    ],
    key: "variable_name",
};

/// The configuration tables: editable (`main`) and their `runtime_` twins.
pub const CONFIG_TABLES: [&Table; 6] = [
    &SERVERS,
    &USERS,
    &QUERY_RULES,
    &GALERA,
    &REPLICATION,
    &VARIABLES,
];

fn int(v: impl Into<i64>) -> Value {
    Value::Integer(v.into())
}

fn text(v: impl Into<String>) -> Value {
    Value::Text(v.into())
}

fn opt_text(v: Option<&str>) -> Value {
    v.map_or(Value::Null, |s| Value::Text(s.to_owned()))
}

fn opt_int(v: Option<impl Into<i64>>) -> Value {
    v.map_or(Value::Null, |n| Value::Integer(n.into()))
}

/// Replaces the rows of `schema.table` with `rows`.
pub fn fill(
    db: &Connection,
    schema: &str,
    table: &str,
    rows: &[Vec<Value>],
) -> rusqlite::Result<()> {
    db.execute(&format!("DELETE FROM {schema}.{table}"), [])?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let marks = vec!["?"; first.len()].join(", ");
    let mut insert = db.prepare(&format!("INSERT INTO {schema}.{table} VALUES ({marks})"))?;
    for row in rows {
        insert.execute(params_from_iter(row.iter()))?;
    }
    Ok(())
}

pub fn server_rows(config: &Config) -> Vec<Vec<Value>> {
    config
        .servers
        .iter()
        .map(|s| {
            vec![
                int(s.hostgroup),
                text(&s.host),
                int(s.port),
                int(0),
                text(status_name(s.status)),
                int(s.weight),
                int(0),
                int(s.max_connections),
                int(s.max_replication_lag as i64),
                int(s.tls),
                int(0),
                text(""),
                int(s.priority),
            ]
        })
        .collect()
}

pub fn status_name(status: ServerStatus) -> &'static str {
    match status {
        ServerStatus::Online => "ONLINE",
        ServerStatus::OfflineSoft => "OFFLINE_SOFT",
        ServerStatus::OfflineHard => "OFFLINE_HARD",
    }
}

pub fn user_rows(config: &Config) -> Vec<Vec<Value>> {
    config
        .users
        .iter()
        .map(|u| {
            let attributes = json!({
                "split_reads": u.split_reads,
                "consistency": u.consistency,
                "transaction_replay": u.transaction_replay,
                "allowed_networks": u.allowed_networks,
                "require_client_cert": u.require_client_cert,
                "cert_subject": u.cert_subject,
                "cert_issuer": u.cert_issuer,
                "firewall": u.firewall.map(|m| format!("{m:?}").to_lowercase()),
                "backend_password_file": u.backend_password_file,
            });
            vec![
                text(&u.name),
                text(&u.password),
                int(1),
                int(u.require_tls),
                int(u.default_hostgroup),
                opt_text(u.default_schema.as_deref()),
                int(0),
                int(u.transaction_persistent),
                int(0),
                int(1),
                int(1),
                int(u.max_connections),
                text(attributes.to_string()),
                text(""),
            ]
        })
        .collect()
}

pub fn rule_rows(config: &Config) -> Vec<Vec<Value>> {
    config
        .query_rules
        .iter()
        .map(|r| {
            let attributes = json!({
                "statement_kind": r.statement_kind,
                "sql_injection": r.sql_injection,
                "error_code": r.error_code,
            });
            vec![
                int(r.rule_id),
                int(r.active),
                opt_text(r.username.as_deref()),
                opt_text(r.schemaname.as_deref()),
                int(r.flag_in),
                opt_text(r.client_addr.as_deref()),
                Value::Null, // proxy_addr
                Value::Null, // proxy_port
                opt_text(r.digest.as_deref()),
                opt_text(r.match_digest.as_deref()),
                opt_text(r.match_pattern.as_deref()),
                int(r.negate_match_pattern),
                text(if r.case_sensitive { "" } else { "CASELESS" }),
                opt_int(r.flag_out),
                opt_text(r.replace_pattern.as_deref()),
                opt_int(r.destination_hostgroup),
                opt_int(r.cache_ttl.map(|t| t as i64)),
                opt_int(r.cache_empty_result.map(i64::from)),
                Value::Null, // cache_timeout
                Value::Null, // reconnect
                opt_int(r.timeout_ms.map(|t| t as i64)),
                Value::Null, // retries
                Value::Null, // delay
                Value::Null, // next_query_flagIN
                opt_int(r.mirror_flag_out),
                opt_int(r.mirror_hostgroup),
                opt_text(r.error_msg.as_deref()),
                Value::Null, // OK_msg
                Value::Null, // sticky_conn
                Value::Null, // multiplex
                Value::Null, // gtid_from_hostgroup
                int(r.log),
                int(r.apply),
                text(attributes.to_string()),
                opt_text(r.comment.as_deref()),
            ]
        })
        .collect()
}

pub fn galera_rows(config: &Config) -> Vec<Vec<Value>> {
    config
        .galera_hostgroups
        .iter()
        .map(|g| {
            vec![
                int(g.writer_hostgroup),
                int(g.backup_writer_hostgroup),
                int(g.reader_hostgroup),
                int(g.offline_hostgroup),
                int(1),
                int(g.max_writers),
                int(g.writer_is_also_reader),
                int(g.max_transactions_behind as i64),
                Value::Null,
                int(g.fallback_to_writer),
            ]
        })
        .collect()
}

/// A row read back from an editable table, with what is needed to say where it failed.
pub struct Row<'a> {
    table: &'static str,
    index: usize,
    row: &'a rusqlite::Row<'a>,
}

impl Row<'_> {
    fn fail(&self, column: &str, problem: impl std::fmt::Display) -> String {
        format!("{} row {}: {column}: {problem}", self.table, self.index + 1)
    }

    fn int<T: TryFrom<i64>>(&self, column: &str) -> Result<T, String> {
        let v: Option<i64> = self.row.get(column).map_err(|e| self.fail(column, e))?;
        let v = v.ok_or_else(|| self.fail(column, "must not be NULL"))?;
        T::try_from(v).map_err(|_| self.fail(column, format!("{v} is out of range")))
    }

    fn opt_int<T: TryFrom<i64>>(&self, column: &str) -> Result<Option<T>, String> {
        let v: Option<i64> = self.row.get(column).map_err(|e| self.fail(column, e))?;
        v.map(|v| T::try_from(v).map_err(|_| self.fail(column, format!("{v} is out of range"))))
            .transpose()
    }

    fn flag(&self, column: &str) -> Result<bool, String> {
        match self.int::<i64>(column)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.fail(column, format!("{v} is not 0 or 1"))),
        }
    }

    fn text(&self, column: &str) -> Result<Option<String>, String> {
        let v: Option<String> = self.row.get(column).map_err(|e| self.fail(column, e))?;
        Ok(v.filter(|s| !s.is_empty()))
    }

    /// Whether the column holds anything but NULL, whatever its type.
    fn is_set(&self, column: &str) -> Result<bool, String> {
        let v: rusqlite::types::Value = self.row.get(column).map_err(|e| self.fail(column, e))?;
        Ok(v != rusqlite::types::Value::Null)
    }

    fn required(&self, column: &str) -> Result<String, String> {
        self.text(column)?
            .ok_or_else(|| self.fail(column, "must not be empty"))
    }

    fn attributes(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        match self.text("attributes")? {
            None => Ok(serde_json::Map::new()),
            Some(text) => match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(map)) => Ok(map),
                _ => Err(self.fail("attributes", "must be a JSON object")),
            },
        }
    }

    fn unsupported(&self, column: &str, wanted: i64) -> Result<(), String> {
        match self.int::<i64>(column)? {
            v if v == wanted => Ok(()),
            v => Err(self.fail(column, format!("{v} is not supported (only {wanted})"))),
        }
    }
}

/// Reads every row of `schema.table` through `convert`.
fn read<T>(
    db: &Connection,
    schema: &str,
    table: &'static Table,
    convert: impl Fn(&Row<'_>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let sql = format!("SELECT * FROM {schema}.{} ORDER BY rowid", table.name);
    let mut stmt = db.prepare(&sql).map_err(|e| e.to_string())?;
    let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        out.push(convert(&Row {
            table: table.name,
            index: out.len(),
            row,
        })?);
    }
    Ok(out)
}

pub fn read_servers(db: &Connection, schema: &str) -> Result<Vec<Server>, String> {
    read(db, schema, &SERVERS, |r| {
        r.unsupported("gtid_port", 0)?;
        r.unsupported("compression", 0)?;
        r.unsupported("max_latency_ms", 0)?;
        let status = match r.required("status")?.to_ascii_uppercase().as_str() {
            "ONLINE" => ServerStatus::Online,
            "OFFLINE_SOFT" => ServerStatus::OfflineSoft,
            "OFFLINE_HARD" => ServerStatus::OfflineHard,
            other => {
                return Err(r.fail(
                    "status",
                    format!("{other:?} is not ONLINE, OFFLINE_SOFT or OFFLINE_HARD"),
                ))
            }
        };
        Ok(Server {
            host: r.required("hostname")?,
            port: r.int("port")?,
            hostgroup: r.int("hostgroup_id")?,
            weight: r.int("weight")?,
            max_connections: r.int("max_connections")?,
            tls: r.flag("use_ssl")?,
            max_replication_lag: r.int("max_replication_lag")?,
            priority: r.int("priority")?,
            status,
        })
    })
}

pub fn read_users(db: &Connection, schema: &str) -> Result<Vec<User>, String> {
    read(db, schema, &USERS, |r| {
        r.unsupported("active", 1)?;
        r.unsupported("fast_forward", 0)?;
        r.unsupported("schema_locked", 0)?;
        let attributes = r.attributes()?;
        let bool_attr = |name: &str, default: bool| match attributes.get(name) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(r.fail("attributes", format!("{name} must be true or false"))),
        };
        let text_attr = |name: &str| match attributes.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(r.fail("attributes", format!("{name} must be a string"))),
        };
        let networks = match attributes.get("allowed_networks") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|_| r.fail("attributes", "allowed_networks must be a list of CIDRs"))?,
        };
        let firewall = match text_attr("firewall")? {
            None => None,
            Some(mode) => Some(
                serde_json::from_value(serde_json::Value::String(mode.clone())).map_err(|_| {
                    r.fail(
                        "attributes",
                        format!("firewall {mode:?} is not off, detect or protect"),
                    )
                })?,
            ),
        };
        Ok(User {
            name: r.required("username")?,
            password: r.text("password")?.unwrap_or_default(),
            backend_password_file: text_attr("backend_password_file")?.map(Into::into),
            default_hostgroup: r.int("default_hostgroup")?,
            require_tls: r.flag("use_ssl")?,
            require_client_cert: bool_attr("require_client_cert", false)?,
            cert_subject: text_attr("cert_subject")?,
            cert_issuer: text_attr("cert_issuer")?,
            allowed_networks: networks,
            max_connections: r.int("max_connections")?,
            default_schema: r.text("default_schema")?,
            split_reads: bool_attr("split_reads", true)?,
            transaction_persistent: r.flag("transaction_persistent")?,
            transaction_replay: bool_attr("transaction_replay", true)?,
            consistency: match text_attr("consistency")?.as_deref() {
                None | Some("session") => Consistency::Session,
                Some("none") => Consistency::None,
                Some("global") => Consistency::Global,
                Some(other) => {
                    return Err(r.fail(
                        "attributes",
                        format!("consistency {other:?} is not session, global or none"),
                    ))
                }
            },
            firewall,
        })
    })
}

pub fn read_rules(db: &Connection, schema: &str) -> Result<Vec<QueryRule>, String> {
    read(db, schema, &QUERY_RULES, |r| {
        for column in INERT_RULE_COLUMNS {
            if r.is_set(column)? {
                return Err(r.fail(column, "not supported by Sluice: leave it NULL"));
            }
        }
        let attributes = r.attributes()?;
        let statement_kind: Vec<Kind> = match attributes.get("statement_kind") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| r.fail("attributes", format!("statement_kind: {e}")))?,
        };
        let sql_injection = match attributes.get("sql_injection") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Bool(b)) => Some(*b),
            Some(_) => return Err(r.fail("attributes", "sql_injection must be true or false")),
        };
        let error_code = match attributes.get("error_code") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .ok_or_else(|| r.fail("attributes", "error_code must be a number"))?,
            ),
        };
        let case_sensitive = match r.text("re_modifiers")?.as_deref() {
            None => true,
            Some(m) if m.eq_ignore_ascii_case("CASELESS") => false,
            Some(m) => {
                return Err(r.fail("re_modifiers", format!("{m:?} is not CASELESS or empty")))
            }
        };
        Ok(QueryRule {
            rule_id: r.int("rule_id")?,
            active: r.flag("active")?,
            username: r.text("username")?,
            schemaname: r.text("schemaname")?,
            client_addr: r.text("client_addr")?,
            digest: r.text("digest")?,
            match_digest: r.text("match_digest")?,
            match_pattern: r.text("match_pattern")?,
            negate_match_pattern: r.flag("negate_match_pattern")?,
            case_sensitive,
            statement_kind,
            sql_injection,
            flag_in: r.int("flagIN")?,
            flag_out: r.opt_int("flagOUT")?,
            destination_hostgroup: r.opt_int("destination_hostgroup")?,
            replace_pattern: r.text("replace_pattern")?,
            error_msg: r.text("error_msg")?,
            error_code,
            log: r.opt_int::<i64>("log")?.unwrap_or(0) != 0,
            timeout_ms: r.opt_int("timeout")?,
            cache_ttl: r.opt_int("cache_ttl")?,
            cache_empty_result: r.opt_int::<i64>("cache_empty_result")?.map(|v| v != 0),
            mirror_hostgroup: r.opt_int("mirror_hostgroup")?,
            mirror_flag_out: r.opt_int("mirror_flagOUT")?,
            apply: r.flag("apply")?,
            comment: r.text("comment")?,
        })
    })
}

pub fn read_galera(db: &Connection, schema: &str) -> Result<Vec<GaleraHostgroups>, String> {
    read(db, schema, &GALERA, |r| {
        r.unsupported("active", 1)?;
        Ok(GaleraHostgroups {
            writer_hostgroup: r.int("writer_hostgroup")?,
            backup_writer_hostgroup: r.int("backup_writer_hostgroup")?,
            reader_hostgroup: r.int("reader_hostgroup")?,
            offline_hostgroup: r.int("offline_hostgroup")?,
            max_writers: r.int("max_writers")?,
            writer_is_also_reader: r.int("writer_is_also_reader")?,
            max_transactions_behind: r.int("max_transactions_behind")?,
            fallback_to_writer: r.flag("fallback_to_writer")?,
        })
    })
}

/// `mysql_replication_hostgroups` must stay empty (see [`REPLICATION`]).
pub fn check_replication(db: &Connection, schema: &str) -> Result<(), String> {
    let n: i64 = db
        .query_row(
            &format!("SELECT COUNT(*) FROM {schema}.mysql_replication_hostgroups"),
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if n > 0 {
        return Err("mysql_replication_hostgroups: not supported; replicas are servers with max_replication_lag in a reader hostgroup".into());
    }
    Ok(())
}
