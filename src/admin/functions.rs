//! MySQL functions that tools send to ProxySQL's admin port and the admin's SQLite lacks:
//! `CONNECTION_ID()`, `USER()`, `CURRENT_USER()`, `VERSION()`, `NOW()`,
//! `UNIX_TIMESTAMP([datetime])`, `FROM_UNIXTIME(seconds)`. Registered once on the admin
//! database; what depends on the admin session (its id, its user) is read from a
//! [`SessionContext`] the engine sets before each statement.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::Connection;

/// The admin session a statement runs for.
#[derive(Debug, Clone, Default)]
pub struct SessionContext {
    pub id: u32,
    pub user: String,
}

/// Registers the functions on `db`; they read the session from `session`.
pub fn register(db: &Connection, session: Arc<Mutex<SessionContext>>) -> rusqlite::Result<()> {
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let plain = FunctionFlags::SQLITE_UTF8;
    let s = session.clone();
    db.create_scalar_function("connection_id", 0, plain, move |_| {
        Ok(i64::from(s.lock().expect("admin session").id))
    })?;
    for name in ["user", "current_user"] {
        let s = session.clone();
        db.create_scalar_function(name, 0, plain, move |_| {
            Ok(format!(
                "{}@localhost",
                s.lock().expect("admin session").user
            ))
        })?;
    }
    db.create_scalar_function("version", 0, pure, |_| Ok(version()))?;
    db.create_scalar_function("now", 0, plain, |_| Ok(format_datetime(unix_now())))?;
    db.create_scalar_function("unix_timestamp", 0, plain, |_| Ok(unix_now()))?;
    db.create_scalar_function("unix_timestamp", 1, pure, unix_timestamp_of)?;
    db.create_scalar_function("from_unixtime", 1, pure, |ctx| {
        Ok(ctx.get::<Option<i64>>(0)?.map(format_datetime))
    })?;
    Ok(())
}

/// What `VERSION()` and `@@version` answer on the admin port.
pub fn version() -> String {
    format!("{}-sluice-admin", env!("CARGO_PKG_VERSION"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DD hh:mm:ss` in UTC (the admin port's time zone).
fn format_datetime(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `UNIX_TIMESTAMP('YYYY-MM-DD[ hh:mm:ss]')`, UTC; NULL for anything else.
fn unix_timestamp_of(ctx: &Context<'_>) -> rusqlite::Result<Option<i64>> {
    let Some(text) = ctx.get::<Option<String>>(0)? else {
        return Ok(None);
    };
    Ok(parse_datetime(&text))
}

fn parse_datetime(text: &str) -> Option<i64> {
    let (date, time) = text
        .trim()
        .split_once(' ')
        .unwrap_or((text.trim(), "00:00:00"));
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time
        .split(':')
        .map(|p| p.split('.').next()?.parse::<i64>().ok());
    let (h, min, s) = (
        t.next()??,
        t.next().flatten().unwrap_or(0),
        t.next().flatten().unwrap_or(0),
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 59 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + h * 3600 + min * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_unix_seconds() {
        for (text, unix) in [
            ("1970-01-01 00:00:00", 0),
            ("2000-02-29 12:34:56", 951_827_696),
            ("2026-12-02 19:41:14", 1_796_240_474),
            ("1969-12-31 23:59:59", -1),
        ] {
            assert_eq!(parse_datetime(text), Some(unix), "{text}");
            assert_eq!(format_datetime(unix), text);
        }
        assert_eq!(
            parse_datetime("2026-12-02"),
            parse_datetime("2026-12-02 00:00:00")
        );
        assert_eq!(parse_datetime("2026-13-02"), None);
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn the_functions_answer_in_sqlite() {
        let db = Connection::open_in_memory().unwrap();
        let session = Arc::new(Mutex::new(SessionContext {
            id: 42,
            user: "admin".into(),
        }));
        register(&db, session).unwrap();
        let row: (i64, String, String, Option<String>) = db
            .query_row(
                "SELECT CONNECTION_ID(), USER(), FROM_UNIXTIME(86400), FROM_UNIXTIME(NULL)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            row,
            (
                42,
                "admin@localhost".into(),
                "1970-01-02 00:00:00".into(),
                None
            )
        );
        let ok: i64 = db
            .query_row(
                "SELECT UNIX_TIMESTAMP(NOW()) - UNIX_TIMESTAMP() BETWEEN -1 AND 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ok, 1);
    }
}
