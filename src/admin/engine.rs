//! The admin port's SQL: an in-memory SQLite database with ProxySQL's layout. `main` holds
//! the editable configuration tables (ProxySQL's "memory" layer); `runtime_*` tables and
//! the `stats` and `monitor` schemas are refilled from the live state right before a
//! statement that reads them, so the live state stays the truth and SQLite only answers.
//! `LOAD`/`SAVE` move a module between memory, runtime and the TOML file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

use super::functions::{self, SessionContext};
use super::live::{self, Live};
use super::module::Module;
use super::refresh;
use super::tables::{self, Table, CONFIG_TABLES};
use super::variables;
use crate::config::Config;
use crate::protocol::text::TextResult;

const READ_ONLY: &str =
    "the admin port is read-only (PROXYSQL READONLY); PROXYSQL READWRITE allows changes again";

/// What a statement gave back.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Rows(TextResult),
    Done { affected: u64 },
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
    /// The admin session the current statement runs for (read by `CONNECTION_ID()`…).
    session: Arc<Mutex<SessionContext>>,
    /// `PROXYSQL READONLY`: statements that write admin tables are refused.
    read_only: bool,
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
            for (schema, table) in refresh::LIVE_TABLES {
                db.execute(&table.create(schema, table.name), [])?;
            }
            super::inert::create(&db)
        };
        setup().map_err(|e| e.to_string())?;
        let session = Arc::new(Mutex::new(SessionContext::default()));
        functions::register(&db, session.clone()).map_err(|e| e.to_string())?;
        let admin = AdminDb {
            db,
            config_path: config_path.to_owned(),
            session,
            read_only: false,
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
            Module::Variables | Module::AdminVariables => {
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
            Module::Variables => next = variables::apply(&next, &self.variable_rows()?)?,
            Module::AdminVariables => variables::check_admin(&next, &self.variable_rows()?)?,
        }
        next.check().map_err(|e| e.to_string())?;
        Ok(next)
    }

    /// The rows of `main.global_variables`.
    fn variable_rows(&self) -> Result<Vec<(String, String)>, String> {
        let mut stmt = self
            .db
            .prepare("SELECT variable_name, variable_value FROM main.global_variables")
            .map_err(|e| e.to_string())?;
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())
    }

    /// Runs one statement for the admin session `session`.
    pub fn execute(
        &mut self,
        sql: &str,
        live: &Live<'_>,
        session: SessionContext,
    ) -> Result<Reply, String> {
        *self.session.lock().expect("admin session") = session;
        let sql = sql.trim().trim_end_matches(';').trim();
        let substituted;
        let sql = if sql.contains("@@") && !sql.to_ascii_uppercase().starts_with("SET") {
            substituted = self.substitute_variables(sql);
            substituted.as_str()
        } else {
            sql
        };
        if let Some(reply) = self.command(sql, live)? {
            return Ok(reply);
        }
        let lower = sql.to_ascii_lowercase();
        refresh::refresh(&self.db, live, &lower).map_err(|e| e.to_string())?;
        let mut stmt = self.db.prepare(sql).map_err(|e| e.to_string())?;
        if !stmt.readonly() && self.read_only {
            return Err(READ_ONLY.into());
        }
        if !stmt.readonly() && refresh::writes_live_table(sql) {
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
            "SET" => self.set(sql, live).map(Some),
            "KILL" => live::kill(live, &words).map(|affected| Some(Reply::Done { affected })),
            "PROXYSQL" if words[1..] == ["FLUSH", "MYSQL", "CLIENT", "HOSTS"] => {
                live.frontend.forget_client_hosts();
                Ok(Some(Reply::Done { affected: 0 }))
            }
            "PROXYSQL" if words[1..] == ["FLUSH", "QUERY", "CACHE"] => {
                let flushed = live.frontend.query_cache.flush();
                Ok(Some(Reply::Done {
                    affected: flushed as u64,
                }))
            }
            "PROXYSQL" => self.proxysql(&words[1..], live).map(Some),
            "SHOW" if matches!(word(1), "MYSQL" | "ADMIN") => {
                self.show_proxysql(sql, &words, live).map(Some)
            }
            "SHOW" => self.show(sql, &words).map(Some),
            _ => Ok(None),
        }
    }

    /// `SET admin-…` / `SET mysql-…` / `SET monitor-…` change `global_variables` (in force
    /// after `LOAD … VARIABLES TO RUNTIME`, as in ProxySQL); any other SET (what drivers
    /// send when they connect: NAMES, autocommit…) is accepted and changes nothing.
    fn set(&mut self, sql: &str, live: &Live<'_>) -> Result<Reply, String> {
        let assignment = sql[3..].trim();
        let Some((name, value)) = assignment.split_once('=') else {
            return Ok(Reply::Done { affected: 0 });
        };
        let name = name.trim().trim_matches('`').to_ascii_lowercase();
        if !["admin-", "mysql-", "monitor-"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            return Ok(Reply::Done { affected: 0 });
        }
        if self.read_only {
            return Err(READ_ONLY.into());
        }
        let value = unquote(value.trim());
        if let Some(refusal) = variables::refuse_read_only(&live.runtime().config, &name, value) {
            return Err(refusal);
        }
        let changed = self
            .db
            .execute(
                "UPDATE main.global_variables SET variable_value = ?1 WHERE variable_name = ?2",
                [value, name.as_str()],
            )
            .map_err(|e| e.to_string())?;
        if changed == 0 {
            return Err(format!("{name}: unknown variable"));
        }
        Ok(Reply::Done { affected: 0 })
    }

    /// The `PROXYSQL …` commands beyond the two FLUSHes: PAUSE/RESUME (new client
    /// connections refused / accepted again; sessions go on), READONLY/READWRITE (SQL that
    /// writes admin tables refused / allowed; LOAD and SAVE still run, as in ProxySQL),
    /// SHUTDOWN (as SIGTERM: sessions are drained).
    fn proxysql(&mut self, words: &[String], live: &Live<'_>) -> Result<Reply, String> {
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["PAUSE"] => live.frontend.set_paused(true),
            ["RESUME"] => live.frontend.set_paused(false),
            ["READONLY"] => self.read_only = true,
            ["READWRITE"] => self.read_only = false,
            ["SHUTDOWN"] | ["SHUTDOWN", "SLOW"] => live.frontend.stop_requested.notify_one(),
            _ => {
                return Err(format!(
                    "not supported on the admin port: PROXYSQL {}",
                    words.join(" ")
                ))
            }
        }
        tracing::info!(command = %words.join(" "), "admin: PROXYSQL command");
        Ok(Reply::Done { affected: 0 })
    }

    /// ProxySQL's shortcuts: `SHOW MYSQL STATUS` (`stats_mysql_global`), `SHOW MYSQL
    /// VARIABLES` and `SHOW ADMIN VARIABLES` (their rows of `global_variables`), each with
    /// an optional `LIKE`.
    fn show_proxysql(&self, sql: &str, words: &[String], live: &Live<'_>) -> Result<Reply, String> {
        let like = like_pattern(sql).map_or(String::new(), |p| {
            format!(" AND variable_name LIKE {}", quote(&p))
        });
        match (words[1].as_str(), words.get(2).map(String::as_str)) {
            ("MYSQL", Some("STATUS")) => {
                refresh::refresh(&self.db, live, "stats_mysql_global")
                    .map_err(|e| e.to_string())?;
                self.rows(&format!(
                    "SELECT Variable_Name AS Variable_name, Variable_Value AS Value \
                     FROM stats.stats_mysql_global WHERE 1{like} ORDER BY Variable_Name"
                ))
            }
            (scope @ ("MYSQL" | "ADMIN"), Some("VARIABLES")) => {
                let prefix = scope.to_ascii_lowercase();
                let monitor = if scope == "MYSQL" {
                    " OR variable_name LIKE 'monitor-%'"
                } else {
                    ""
                };
                self.rows(&format!(
                    "SELECT variable_name AS Variable_name, variable_value AS Value \
                     FROM main.global_variables \
                     WHERE (variable_name LIKE '{prefix}-%'{monitor}){like} ORDER BY variable_name"
                ))
            }
            _ => Err(format!("not supported on the admin port: {sql}")),
        }
    }

    /// SHOW TABLES [FROM|IN schema] [LIKE …], SHOW DATABASES, SHOW CREATE TABLE,
    /// SHOW [GLOBAL|SESSION] VARIABLES [LIKE …].
    fn show(&self, sql: &str, words: &[String]) -> Result<Reply, String> {
        let word = |i: usize| words.get(i).map(String::as_str).unwrap_or_default();
        let like = like_pattern(sql);
        match word(1) {
            "TABLES" => {
                let schema = match word(2) {
                    "FROM" | "IN" => Some(word(3).to_ascii_lowercase()),
                    _ => None,
                };
                let mut parts = Vec::new();
                for (s, prefix) in [("main", ""), ("stats", ""), ("monitor", "monitor.")] {
                    if schema.as_deref().is_none_or(|wanted| wanted == s) {
                        let shown = if schema.is_some() { "" } else { prefix };
                        parts.push(format!(
                            "SELECT '{shown}' || name AS name FROM {s}.sqlite_master WHERE type = 'table'"
                        ));
                    }
                }
                if parts.is_empty() {
                    return Err(format!("unknown database '{}'", word(3)));
                }
                let filter =
                    like.map_or(String::new(), |p| format!(" AND name LIKE {}", quote(&p)));
                self.rows(&format!(
                    "SELECT name AS tables FROM ({}) WHERE name NOT LIKE 'sqlite_%'{filter} ORDER BY name",
                    parts.join(" UNION ALL ")
                ))
            }
            "DATABASES" | "SCHEMAS" => {
                self.rows("SELECT seq, name, file FROM pragma_database_list")
            }
            "CREATE" if word(2) == "TABLE" => {
                let name = sql
                    .split_whitespace()
                    .nth(3)
                    .unwrap_or_default()
                    .trim_matches('`');
                let (schema, table) = name.split_once('.').unwrap_or(("", name));
                self.show_create(schema, table)
            }
            "VARIABLES" | "GLOBAL" | "SESSION" if words.contains(&"VARIABLES".to_string()) => {
                let filter = like.map_or(String::new(), |p| {
                    format!(" WHERE variable_name LIKE {}", quote(&p))
                });
                self.rows(&format!(
                    "SELECT variable_name AS Variable_name, variable_value AS Value \
                     FROM main.global_variables{filter} ORDER BY variable_name"
                ))
            }
            _ => Err(format!("not supported on the admin port: {sql}")),
        }
    }

    /// `@@name` as a value: `admin-…`/`mysql-…`/`monitor-…` names from `global_variables`,
    /// the few server variables clients ask for when they connect, NULL for others.
    fn system_variable(&self, name: &str) -> Option<String> {
        let bare = name
            .trim_start_matches("session.")
            .trim_start_matches("global.");
        match bare {
            "version" => Some(functions::version()),
            "version_comment" => Some("Sluice admin".to_string()),
            "max_allowed_packet" => Some("67108864".to_string()),
            "autocommit" => Some("1".to_string()),
            name if name.contains('-') => self
                .db
                .query_row(
                    "SELECT variable_value FROM main.global_variables WHERE variable_name = ?1",
                    [name.to_ascii_lowercase()],
                    |r| r.get(0),
                )
                .ok(),
            _ => None,
        }
    }

    /// `sql` with each `@@name` replaced by its value as an SQLite literal, so that SQLite
    /// evaluates the rest (`SELECT @@version_comment LIMIT 1`, `@@admin-version` beside a
    /// function…); a select item that is only the variable is named `@@name`, as MySQL
    /// names it.
    fn substitute_variables(&self, sql: &str) -> String {
        let mut out = String::with_capacity(sql.len());
        let mut quote_char: Option<char> = None;
        let mut chars = sql.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match quote_char {
                Some(q) => {
                    out.push(c);
                    if c == q {
                        quote_char = None;
                    }
                    continue;
                }
                None if matches!(c, '\'' | '"' | '`') => {
                    quote_char = Some(c);
                    out.push(c);
                    continue;
                }
                None if c == '@' && sql[at..].starts_with("@@") => {}
                None => {
                    out.push(c);
                    continue;
                }
            }
            let name: String = sql[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                .collect();
            for _ in 0..1 + name.chars().count() {
                chars.next();
            }
            let rest = &sql[at + 2 + name.len()..];
            let before_item = out.trim_end().to_ascii_uppercase();
            out.push_str(
                &self
                    .system_variable(&name)
                    .map_or("NULL".into(), |v| quote(&v)),
            );
            let after_item = rest.trim_start();
            let next_word = after_item
                .split(|c: char| c.is_whitespace() || c == ',')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let whole_item = (before_item.ends_with("SELECT") || before_item.ends_with(','))
                && (after_item.is_empty()
                    || after_item.starts_with(',')
                    || matches!(next_word.as_str(), "LIMIT" | "FROM"));
            if whole_item {
                out.push_str(&format!(" AS \"@@{name}\""));
            }
        }
        out
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
            "expected LOAD|SAVE MYSQL SERVERS|USERS|QUERY RULES|VARIABLES or ADMIN VARIABLES TO|FROM RUNTIME|MEMORY|DISK".to_string()
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
        ["ADMIN", "VARIABLES", ..] => Some((Module::AdminVariables, &words[2..])),
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

/// The pattern of a `LIKE '…'` at the end of a SHOW statement.
fn like_pattern(sql: &str) -> Option<String> {
    let upper = sql.to_ascii_uppercase();
    let at = upper.rfind(" LIKE ")?;
    Some(unquote(sql[at + 6..].trim()).to_string())
}

/// A value as written in SET or LIKE: quotes taken off.
fn unquote(value: &str) -> &str {
    let v = value.trim();
    for q in ['\'', '"', '`'] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// A string as an SQLite literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
