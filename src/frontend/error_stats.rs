//! Errors the backends answered statements with, per hostgroup, server, user, client
//! address, schema and error number (ProxySQL's `stats_mysql_errors`): how often, first
//! and last seen, the last message. Bounded: beyond `MAX_ROWS` distinct rows new ones are
//! counted as dropped. Errors the proxy sends itself are not here (they are in
//! `sluice_errors_total{code}`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const MAX_ROWS: usize = 10_000;

/// Where an error came from and who got it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorKey {
    pub hostgroup: u32,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub client_address: String,
    pub schema: String,
    pub errno: u16,
}

/// How often an error was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorCount {
    pub count: u64,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
    pub last_message: String,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct ErrorStats {
    rows: Mutex<HashMap<ErrorKey, ErrorCount>>,
    /// Errors not recorded because the table was full.
    pub dropped: AtomicU64,
}

impl ErrorStats {
    /// Counts one error.
    pub fn record(&self, key: ErrorKey, message: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut rows = self.rows.lock().expect("error stats lock");
        if let Some(row) = rows.get_mut(&key) {
            row.count += 1;
            row.last_seen = now;
            if row.last_message != message {
                row.last_message = message.to_owned();
            }
            return;
        }
        if rows.len() >= MAX_ROWS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        rows.insert(
            key,
            ErrorCount {
                count: 1,
                first_seen: now,
                last_seen: now,
                last_message: message.to_owned(),
            },
        );
    }

    /// Every row, in key order.
    pub fn snapshot(&self) -> Vec<(ErrorKey, ErrorCount)> {
        let rows = self.rows.lock().expect("error stats lock");
        let mut out: Vec<_> = rows.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Forgets every row (`stats_mysql_errors_reset` is read).
    pub fn reset(&self) {
        self.rows.lock().expect("error stats lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(errno: u16) -> ErrorKey {
        ErrorKey {
            hostgroup: 10,
            host: "db1".into(),
            port: 3306,
            user: "app".into(),
            client_address: "10.0.0.1".into(),
            schema: "shop".into(),
            errno,
        }
    }

    #[test]
    fn errors_are_counted_per_key_with_their_last_message() {
        let stats = ErrorStats::default();
        stats.record(key(1146), "Table 'shop.a' doesn't exist");
        stats.record(key(1146), "Table 'shop.b' doesn't exist");
        stats.record(key(1062), "Duplicate entry");
        let rows = stats.snapshot();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.errno, 1062);
        assert_eq!(
            (rows[1].1.count, rows[1].1.last_message.as_str()),
            (2, "Table 'shop.b' doesn't exist")
        );
        stats.reset();
        assert!(stats.snapshot().is_empty());
    }
}
