//! The admin port's SQL: an in-memory SQLite database with ProxySQL's layout. `main` holds
//! the editable configuration tables (ProxySQL's "memory" layer); `runtime_*` tables and
//! the `stats` and `monitor` schemas are refilled from the live state right before a
//! statement that reads them, so the live state stays the truth and SQLite only answers.
//! `LOAD`/`SAVE` move a module between memory, runtime and the TOML file.

use std::path::{Path, PathBuf};

use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

use super::live::{self, Live};
use super::tables::{self, Table, CONFIG_TABLES};
use super::variables;
use crate::config::Config;
use crate::protocol::text::TextResult;

/// What a statement gave back.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Rows(TextResult),
    Done { affected: u64 },
}

/// A group of tables that is loaded and saved together, as in ProxySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// `mysql_servers`, `mysql_galera_hostgroups`, `mysql_replication_hostgroups`.
    Servers,
    Users,
    QueryRules,
    Variables,
}

/// Where a `LOAD`/`SAVE` moves a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    MemoryToRuntime,
    RuntimeToMemory,
    MemoryToDisk,
    DiskToMemory,
}

/// The admin database and the file `SAVE … TO DISK` writes.
pub struct AdminDb {
    db: Connection,
    config_path: PathBuf,
}

impl AdminDb {
    /// Creates the schemas and fills memory from `config` (what the proxy started with).
    pub fn new(config: &Config, config_path: &Path) -> Result<AdminDb, String> {
        let db = Connection::open_in_memory().map_err(|e| e.to_string())?;
        let setup = || -> rusqlite::Result<()> {
            db.execute_batch(
                "ATTACH DATABASE ':memory:' AS stats; ATTACH DATABASE ':memory:' AS monitor;",
            )?;
            for table in CONFIG_TABLES {
                db.execute(&table.create("main", table.name), [])?;
                db.execute(
                    &table.create("main", &format!("runtime_{}", table.name)),
                    [],
                )?;
            }
            for (schema, table) in live::LIVE_TABLES {
                db.execute(&table.create(schema, table.name), [])?;
            }
            super::inert::create(&db)
        };
        setup().map_err(|e| e.to_string())?;
        let admin = AdminDb {
            db,
            config_path: config_path.to_owned(),
        };
        admin.fill_memory(config).map_err(|e| e.to_string())?;
        Ok(admin)
    }

    /// Memory becomes `config` for every module (at start, and after SIGHUP).
    pub fn fill_memory(&self, config: &Config) -> rusqlite::Result<()> {
        for module in [
            Module::Servers,
            Module::Users,
            Module::QueryRules,
            Module::Variables,
        ] {
            self.fill_module(config, "main", "", module)?;
        }
        Ok(())
    }

    fn fill_module(
        &self,
        config: &Config,
        schema: &str,
        prefix: &str,
        module: Module,
    ) -> rusqlite::Result<()> {
        let name = |t: &Table| format!("{prefix}{}", t.name);
        match module {
            Module::Servers => {
                tables::fill(
                    &self.db,
                    schema,
                    &name(&tables::SERVERS),
                    &tables::server_rows(config),
                )?;
                tables::fill(
                    &self.db,
                    schema,
                    &name(&tables::GALERA),
                    &tables::galera_rows(config),
                )?;
                tables::fill(&self.db, schema, &name(&tables::REPLICATION), &[])
            }
            Module::Users => tables::fill(
                &self.db,
                schema,
                &name(&tables::USERS),
                &tables::user_rows(config),
            ),
            Module::QueryRules => tables::fill(
                &self.db,
                schema,
                &name(&tables::QUERY_RULES),
                &tables::rule_rows(config),
            ),
            Module::Variables => {
                let rows: Vec<Vec<Value>> = variables::rows(config)
                    .into_iter()
                    .map(|(n, v)| vec![Value::Text(n), Value::Text(v)])
                    .collect();
                tables::fill(&self.db, schema, &name(&tables::VARIABLES), &rows)
            }
        }
    }

    /// `base` with `module` replaced by what memory holds.
    fn config_from_memory(&self, base: &Config, module: Module) -> Result<Config, String> {
        let mut next = base.clone();
        super::inert::check_empty(&self.db, module)?;
        match module {
            Module::Servers => {
                tables::check_replication(&self.db, "main")?;
                next.servers = tables::read_servers(&self.db, "main")?;
                next.galera_hostgroups = tables::read_galera(&self.db, "main")?;
            }
            Module::Users => next.users = tables::read_users(&self.db, "main")?,
            Module::QueryRules => next.query_rules = tables::read_rules(&self.db, "main")?,
            Module::Variables => {
                let mut stmt = self
                    .db
                    .prepare("SELECT variable_name, variable_value FROM main.global_variables")
                    .map_err(|e| e.to_string())?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| e.to_string())?;
                next = variables::apply(&next, &rows)?;
            }
        }
        next.check().map_err(|e| e.to_string())?;
        Ok(next)
    }

    /// Runs one statement.
    pub fn execute(&mut self, sql: &str, live: &Live<'_>) -> Result<Reply, String> {
        let sql = sql.trim().trim_end_matches(';').trim();
        if let Some(reply) = self.command(sql, live)? {
            return Ok(reply);
        }
        let lower = sql.to_ascii_lowercase();
        live::refresh(&self.db, live, &lower).map_err(|e| e.to_string())?;
        let mut stmt = self.db.prepare(sql).map_err(|e| e.to_string())?;
        if !stmt.readonly() && live::writes_live_table(sql) {
            return Err("runtime_*, stats and monitor tables are read-only: change the main tables and LOAD … TO RUNTIME".into());
        }
        if stmt.column_count() == 0 {
            let affected = stmt.execute([]).map_err(|e| e.to_string())?;
            return Ok(Reply::Done {
                affected: affected as u64,
            });
        }
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
            let values = (0..columns.len())
                .map(|i| row.get_ref(i).map(text_of))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            out.push(values);
        }
        if lower.contains("stats_mysql_query_digest_reset") {
            live.frontend.digests.reset();
        }
        Ok(Reply::Rows(TextResult { columns, rows: out }))
    }

    /// Statements that are not SQL for SQLite: LOAD/SAVE, SHOW, SET, SELECT @@…, KILL.
    fn command(&mut self, sql: &str, live: &Live<'_>) -> Result<Option<Reply>, String> {
        let words: Vec<String> = sql
            .split_whitespace()
            .map(|w| w.to_ascii_uppercase())
            .collect();
        let word = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
        match word(0) {
            "LOAD" | "SAVE" => self.load_or_save(&words, live).map(Some),
            "SET" => Ok(Some(Reply::Done { affected: 0 })),
            "KILL" => live::kill(live, &words).map(Some),
            "PROXYSQL" if words[1..] == ["FLUSH", "MYSQL", "CLIENT", "HOSTS"] => {
                live.frontend.admission.clear();
                Ok(Some(Reply::Done { affected: 0 }))
            }
            "PROXYSQL" if words[1..] == ["FLUSH", "QUERY", "CACHE"] => {
                let flushed = live.frontend.query_cache.flush();
                Ok(Some(Reply::Done {
                    affected: flushed as u64,
                }))
            }
            "SHOW" if word(1) == "TABLES" => self
                .rows("SELECT name AS tables FROM (SELECT name FROM main.sqlite_master UNION ALL SELECT name FROM stats.sqlite_master UNION ALL SELECT 'monitor.' || name FROM monitor.sqlite_master) WHERE name NOT LIKE 'sqlite_%' ORDER BY name")
                .map(Some),
            "SHOW" if word(1) == "DATABASES" => Ok(Some(Reply::Rows(TextResult {
                columns: vec!["name".into()],
                rows: ["main", "stats", "monitor"].iter().map(|s| vec![Some(s.to_string())]).collect(),
            }))),
            "SHOW" if word(1) == "CREATE" && word(2) == "TABLE" => {
                let name = sql.split_whitespace().nth(3).unwrap_or_default().trim_matches('`');
                let (schema, table) = name.split_once('.').unwrap_or(("", name));
                self.show_create(schema, table).map(Some)
            }
            "SELECT" if sql.contains("@@") => Ok(Some(system_variables(sql))),
            _ => Ok(None),
        }
    }

    fn rows(&self, sql: &str) -> Result<Reply, String> {
        let mut stmt = self.db.prepare(sql).map_err(|e| e.to_string())?;
        let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
        let rows = stmt
            .query_map([], |r| {
                (0..columns.len())
                    .map(|i| r.get_ref(i).map(text_of))
                    .collect::<Result<Vec<_>, _>>()
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())?;
        Ok(Reply::Rows(TextResult { columns, rows }))
    }

    fn show_create(&self, schema: &str, table: &str) -> Result<Reply, String> {
        let schemas: &[&str] = if schema.is_empty() {
            &["main", "stats", "monitor"]
        } else {
            &[schema]
        };
        for schema in schemas {
            let found: Option<String> = self
                .db
                .query_row(
                    &format!(
                        "SELECT sql FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?1"
                    ),
                    [table],
                    |r| r.get(0),
                )
                .ok();
            if let Some(sql) = found {
                return Ok(Reply::Rows(TextResult {
                    columns: vec!["table".into(), "Create Table".into()],
                    rows: vec![vec![Some(table.to_string()), Some(sql)]],
                }));
            }
        }
        Err(format!("no such table: {table}"))
    }

    fn load_or_save(&mut self, words: &[String], live: &Live<'_>) -> Result<Reply, String> {
        let (module, rest) = parse_module(&words[1..]).ok_or_else(|| {
            "expected LOAD|SAVE MYSQL SERVERS|USERS|QUERY RULES|VARIABLES TO|FROM RUNTIME|MEMORY|DISK".to_string()
        })?;
        let movement = parse_move(&words[0], rest)
            .ok_or_else(|| format!("cannot {} in that direction", words.join(" ")))?;
        let running = live.runtime().config.clone();
        match movement {
            Move::MemoryToRuntime => {
                let next = self.config_from_memory(&running, module)?;
                live.apply(&next)?;
                tracing::info!(
                    ?module,
                    "admin: loaded to runtime (SAVE … TO DISK keeps it across restarts)"
                );
            }
            Move::RuntimeToMemory => self
                .fill_module(&running, "main", "", module)
                .map_err(|e| e.to_string())?,
            Move::DiskToMemory => {
                let disk = Config::load(&self.config_path).map_err(|e| e.to_string())?;
                self.fill_module(&disk, "main", "", module)
                    .map_err(|e| e.to_string())?;
            }
            Move::MemoryToDisk => {
                let disk = Config::load(&self.config_path).map_err(|e| e.to_string())?;
                let next = self.config_from_memory(&disk, module)?;
                super::disk::save(&self.config_path, &disk, &next, module)?;
                tracing::info!(?module, file = %self.config_path.display(), "admin: saved to disk");
            }
        }
        Ok(Reply::Done { affected: 0 })
    }
}

fn parse_module(words: &[String]) -> Option<(Module, &[String])> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["MYSQL", "SERVERS", ..] => Some((Module::Servers, &words[2..])),
        ["MYSQL", "USERS", ..] => Some((Module::Users, &words[2..])),
        ["MYSQL", "QUERY", "RULES", ..] => Some((Module::QueryRules, &words[3..])),
        ["MYSQL", "VARIABLES", ..] => Some((Module::Variables, &words[2..])),
        _ => None,
    }
}

fn parse_move(verb: &str, rest: &[String]) -> Option<Move> {
    let place = |w: &str| match w {
        "RUNTIME" | "RUN" => Some("runtime"),
        "MEMORY" | "MEM" => Some("memory"),
        "DISK" => Some("disk"),
        _ => None,
    };
    let (direction, place) = match rest {
        [d, p] => (d.as_str(), place(p)?),
        _ => return None,
    };
    match (verb, direction, place) {
        ("LOAD", "TO", "runtime") | ("LOAD", "FROM", "memory") => Some(Move::MemoryToRuntime),
        ("SAVE", "TO", "memory") | ("SAVE", "FROM", "runtime") => Some(Move::RuntimeToMemory),
        ("SAVE", "TO", "disk") | ("SAVE", "FROM", "memory") => Some(Move::MemoryToDisk),
        ("LOAD", "FROM", "disk") | ("LOAD", "TO", "memory") => Some(Move::DiskToMemory),
        _ => None,
    }
}

fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// `SELECT @@version`, `SELECT @@version_comment LIMIT 1` and the like, which clients send
/// on their own: each `@@name` becomes a column.
fn system_variables(sql: &str) -> Reply {
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for part in sql.split("@@").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .collect();
        let value = match name
            .trim_start_matches("session.")
            .trim_start_matches("global.")
        {
            "version" => Some(format!("{}-sluice-admin", env!("CARGO_PKG_VERSION"))),
            "version_comment" => Some("Sluice admin".to_string()),
            "max_allowed_packet" => Some("67108864".to_string()),
            "autocommit" => Some("1".to_string()),
            _ => None,
        };
        columns.push(format!("@@{name}"));
        values.push(value);
    }
    Reply::Rows(TextResult {
        columns,
        rows: vec![values],
    })
}
