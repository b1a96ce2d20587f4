//! ProxySQL's statement commands: the finer classification `stats_mysql_commands_counters`
//! counts by (`CREATE_TEMPORARY`, `LOCK_TABLE`, `SHOW_TABLE_STATUS`, …), which tools built
//! for ProxySQL read by name. Routing keeps using [`super::Kind`]; this is for counting.

use super::tokens::{TokenKind, Tokens};

macro_rules! commands {
    ($($variant:ident => $name:literal,)*) => {
        /// One of ProxySQL's command names (ProxySQL 2.7's list, in its order).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Command {
            $($variant,)*
            #[default]
            Unknown,
        }

        impl Command {
            /// Every command, `Unknown` last; `Command as usize` indexes it.
            pub const ALL: [Command; commands!(@count $($variant)*) + 1] =
                [$(Command::$variant,)* Command::Unknown];

            /// The name ProxySQL shows in `stats_mysql_commands_counters.Command`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Command::$variant => $name,)*
                    Command::Unknown => "UNKNOWN",
                }
            }
        }
    };
    (@count) => { 0 };
    (@count $head:ident $($tail:ident)*) => { 1 + commands!(@count $($tail)*) };
}

commands! {
    AlterTable => "ALTER_TABLE",
    AlterView => "ALTER_VIEW",
    AnalyzeTable => "ANALYZE_TABLE",
    Begin => "BEGIN",
    Call => "CALL",
    ChangeMaster => "CHANGE_MASTER",
    Commit => "COMMIT",
    CreateDatabase => "CREATE_DATABASE",
    CreateIndex => "CREATE_INDEX",
    CreateTable => "CREATE_TABLE",
    CreateTemporary => "CREATE_TEMPORARY",
    CreateTrigger => "CREATE_TRIGGER",
    CreateUser => "CREATE_USER",
    CreateView => "CREATE_VIEW",
    Deallocate => "DEALLOCATE",
    Delete => "DELETE",
    Describe => "DESCRIBE",
    DropDatabase => "DROP_DATABASE",
    DropIndex => "DROP_INDEX",
    DropTable => "DROP_TABLE",
    DropTrigger => "DROP_TRIGGER",
    DropUser => "DROP_USER",
    DropView => "DROP_VIEW",
    Execute => "EXECUTE",
    Explain => "EXPLAIN",
    Flush => "FLUSH",
    Grant => "GRANT",
    Insert => "INSERT",
    Kill => "KILL",
    Load => "LOAD",
    LockTable => "LOCK_TABLE",
    Optimize => "OPTIMIZE",
    Prepare => "PREPARE",
    Purge => "PURGE",
    ReleaseSavepoint => "RELEASE_SAVEPOINT",
    RenameTable => "RENAME_TABLE",
    ResetMaster => "RESET_MASTER",
    ResetSlave => "RESET_SLAVE",
    Replace => "REPLACE",
    Revoke => "REVOKE",
    Rollback => "ROLLBACK",
    RollbackSavepoint => "ROLLBACK_SAVEPOINT",
    Savepoint => "SAVEPOINT",
    Select => "SELECT",
    SelectForUpdate => "SELECT_FOR_UPDATE",
    Set => "SET",
    ShowTableStatus => "SHOW_TABLE_STATUS",
    Show => "SHOW",
    StartTransaction => "START_TRANSACTION",
    TruncateTable => "TRUNCATE_TABLE",
    UnlockTables => "UNLOCK_TABLES",
    Update => "UPDATE",
    Use => "USE",
}

/// How far into a `CREATE`/`ALTER`/`DROP` the object word is looked for
/// (`CREATE OR REPLACE ALGORITHM = MERGE DEFINER = u@h SQL SECURITY INVOKER VIEW`).
const OBJECT_WINDOW: usize = 24;

/// The command of a statement whose leading keyword is `keyword` (upper-cased, as the
/// analysis already has it: nothing is allocated for the common statements), `rest`
/// standing just after it. A `SELECT … FOR UPDATE` is found later by the analysis, not
/// here.
pub fn of(keyword: &[u8], rest: &Tokens<'_>, sql: &[u8]) -> Command {
    let mut words = rest
        .clone()
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| t.text(sql));
    let mut next = || words.next().unwrap_or_default();
    let is = |word: &[u8], k: &str| word.eq_ignore_ascii_case(k.as_bytes());
    match keyword {
        b"SELECT" | b"VALUES" | b"TABLE" | b"WITH" => Command::Select,
        b"INSERT" => Command::Insert,
        b"UPDATE" => Command::Update,
        b"DELETE" => Command::Delete,
        b"REPLACE" => Command::Replace,
        b"LOAD" => Command::Load,
        b"CALL" => Command::Call,
        b"SET" => Command::Set,
        b"USE" => Command::Use,
        b"BEGIN" => Command::Begin,
        b"START" => Command::StartTransaction,
        b"COMMIT" => Command::Commit,
        b"ROLLBACK" => rollback(rest, sql),
        b"SAVEPOINT" => Command::Savepoint,
        b"RELEASE" => Command::ReleaseSavepoint,
        b"DESCRIBE" | b"DESC" => Command::Describe,
        b"EXPLAIN" => Command::Explain,
        b"SHOW" => show(rest, sql),
        b"CREATE" => created(rest, sql),
        b"ALTER" => altered(rest, sql),
        b"DROP" => dropped(rest, sql),
        b"TRUNCATE" => Command::TruncateTable,
        b"RENAME" if is(next(), "TABLE") => Command::RenameTable,
        b"GRANT" => Command::Grant,
        b"REVOKE" => Command::Revoke,
        b"ANALYZE" => Command::AnalyzeTable,
        b"OPTIMIZE" => Command::Optimize,
        b"LOCK" => Command::LockTable,
        b"UNLOCK" => Command::UnlockTables,
        b"PREPARE" => Command::Prepare,
        b"EXECUTE" => Command::Execute,
        b"DEALLOCATE" => Command::Deallocate,
        b"FLUSH" => Command::Flush,
        b"KILL" => Command::Kill,
        b"PURGE" => Command::Purge,
        b"CHANGE" if is(next(), "MASTER") => Command::ChangeMaster,
        b"RESET" => {
            let what = next();
            if is(what, "MASTER") {
                Command::ResetMaster
            } else if is(what, "SLAVE") || is(what, "REPLICA") {
                Command::ResetSlave
            } else {
                Command::Unknown
            }
        }
        _ => Command::Unknown,
    }
}

fn upper(word: &[u8]) -> String {
    String::from_utf8_lossy(word).to_ascii_uppercase()
}

/// The words after the leading keyword, upper-cased, at most [`OBJECT_WINDOW`].
fn words_after(rest: &Tokens<'_>, sql: &[u8]) -> Vec<String> {
    rest.clone()
        .take(OBJECT_WINDOW)
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| upper(t.text(sql)))
        .collect()
}

/// `ROLLBACK [WORK] TO [SAVEPOINT] name` undoes to a savepoint; anything else ends the
/// transaction.
fn rollback(rest: &Tokens<'_>, sql: &[u8]) -> Command {
    let words = words_after(rest, sql);
    let to = words.iter().take(2).any(|w| w == "TO");
    if to {
        Command::RollbackSavepoint
    } else {
        Command::Rollback
    }
}

/// `SHOW TABLE STATUS` has its own counter; every other `SHOW` shares one.
fn show(rest: &Tokens<'_>, sql: &[u8]) -> Command {
    let words = words_after(rest, sql);
    match words.as_slice() {
        [table, status, ..] if table == "TABLE" && status == "STATUS" => Command::ShowTableStatus,
        _ => Command::Show,
    }
}

/// The first object word of a `CREATE`: what is created.
fn created(rest: &Tokens<'_>, sql: &[u8]) -> Command {
    object(rest, sql, |word| match word {
        "TEMPORARY" => Some(Command::CreateTemporary),
        "TABLE" => Some(Command::CreateTable),
        "DATABASE" | "SCHEMA" => Some(Command::CreateDatabase),
        "INDEX" => Some(Command::CreateIndex),
        "TRIGGER" => Some(Command::CreateTrigger),
        "USER" => Some(Command::CreateUser),
        "VIEW" => Some(Command::CreateView),
        "PROCEDURE" | "FUNCTION" | "EVENT" | "ROLE" | "SEQUENCE" | "SERVER" => {
            Some(Command::Unknown)
        }
        _ => None,
    })
}

fn altered(rest: &Tokens<'_>, sql: &[u8]) -> Command {
    object(rest, sql, |word| match word {
        "TABLE" => Some(Command::AlterTable),
        "VIEW" => Some(Command::AlterView),
        "DATABASE" | "SCHEMA" | "USER" | "PROCEDURE" | "FUNCTION" | "EVENT" | "SEQUENCE"
        | "SERVER" | "TABLESPACE" => Some(Command::Unknown),
        _ => None,
    })
}

fn dropped(rest: &Tokens<'_>, sql: &[u8]) -> Command {
    object(rest, sql, |word| match word {
        "TABLE" => Some(Command::DropTable),
        "DATABASE" | "SCHEMA" => Some(Command::DropDatabase),
        "INDEX" => Some(Command::DropIndex),
        "TRIGGER" => Some(Command::DropTrigger),
        "USER" => Some(Command::DropUser),
        "VIEW" => Some(Command::DropView),
        "TEMPORARY" => None,
        _ => Some(Command::Unknown),
    })
}

/// The command the first word `decide` knows makes; words it returns `None` for (options
/// such as `OR REPLACE`, `ONLINE`, `DEFINER = …`) are passed over.
fn object(rest: &Tokens<'_>, sql: &[u8], decide: impl Fn(&str) -> Option<Command>) -> Command {
    words_after(rest, sql)
        .iter()
        .find_map(|w| decide(w))
        .unwrap_or(Command::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Analyzer;

    fn command(sql: &str) -> &'static str {
        Analyzer::default().analyze(sql.as_bytes()).command.name()
    }

    #[test]
    fn statements_get_proxysqls_command_names() {
        let cases = [
            ("select 1", "SELECT"),
            ("/* c */ SELECT * FROM t FOR UPDATE", "SELECT_FOR_UPDATE"),
            ("SELECT * FROM t LOCK IN SHARE MODE", "SELECT_FOR_UPDATE"),
            ("WITH x AS (SELECT 1) SELECT * FROM x", "SELECT"),
            ("insert into t values (1)", "INSERT"),
            ("LOAD DATA LOCAL INFILE 'f' INTO TABLE t", "LOAD"),
            ("create temporary table t (a int)", "CREATE_TEMPORARY"),
            ("CREATE TABLE IF NOT EXISTS t (a int)", "CREATE_TABLE"),
            ("CREATE UNIQUE INDEX i ON t (a)", "CREATE_INDEX"),
            ("CREATE OR REPLACE ALGORITHM = MERGE VIEW v AS SELECT 1", "CREATE_VIEW"),
            ("CREATE DEFINER = CURRENT_USER TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET @a = 1", "CREATE_TRIGGER"),
            ("CREATE PROCEDURE p() SELECT 1", "UNKNOWN"),
            ("CREATE SCHEMA s", "CREATE_DATABASE"),
            ("DROP TEMPORARY TABLE IF EXISTS t", "DROP_TABLE"),
            ("DROP VIEW v", "DROP_VIEW"),
            ("ALTER ONLINE TABLE t ADD c INT", "ALTER_TABLE"),
            ("LOCK TABLES t WRITE", "LOCK_TABLE"),
            ("UNLOCK TABLES", "UNLOCK_TABLES"),
            ("START TRANSACTION READ ONLY", "START_TRANSACTION"),
            ("BEGIN", "BEGIN"),
            ("COMMIT", "COMMIT"),
            ("ROLLBACK", "ROLLBACK"),
            ("ROLLBACK WORK TO SAVEPOINT s", "ROLLBACK_SAVEPOINT"),
            ("ROLLBACK TO s", "ROLLBACK_SAVEPOINT"),
            ("SAVEPOINT s", "SAVEPOINT"),
            ("RELEASE SAVEPOINT s", "RELEASE_SAVEPOINT"),
            ("SET autocommit = 0", "SET"),
            ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "SET"),
            ("show table status like 't'", "SHOW_TABLE_STATUS"),
            ("SHOW TABLES", "SHOW"),
            ("DESC t", "DESCRIBE"),
            ("EXPLAIN SELECT 1", "EXPLAIN"),
            ("TRUNCATE TABLE t", "TRUNCATE_TABLE"),
            ("RENAME TABLE a TO b", "RENAME_TABLE"),
            ("CHANGE MASTER TO MASTER_HOST = 'h'", "CHANGE_MASTER"),
            ("RESET SLAVE ALL", "RESET_SLAVE"),
            ("PREPARE s FROM 'SELECT 1'", "PREPARE"),
            ("DEALLOCATE PREPARE s", "DEALLOCATE"),
            ("KILL QUERY 5", "KILL"),
            ("DO 1", "UNKNOWN"),
            ("", "UNKNOWN"),
        ];
        for (sql, name) in cases {
            assert_eq!(command(sql), name, "{sql}");
        }
    }

    #[test]
    fn every_command_has_its_index_and_a_distinct_name() {
        for (i, c) in Command::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        let mut names: Vec<_> = Command::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Command::ALL.len());
    }
}
