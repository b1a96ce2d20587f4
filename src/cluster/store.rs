//! The shared tables in the Galera cluster and the statements that read and write them,
//! over one connection of the proxy's own (as the monitor's: never client traffic).
//!
//! - `<table>`: one row per configuration version of a cluster name; a version is written
//!   once, by one `INSERT`, and its primary key is the optimistic check: of two proxies
//!   writing the same next version, one gets a duplicate key (same node) or a certification
//!   conflict (other node) and loses.
//! - `<table>_peers`: each proxy's heartbeat, the version it runs and its last error.
//! - `<table>_allowlist`: digests the firewall learned on any proxy.
//! - `<table>_blocks`: client addresses a proxy blocked after failed logins, until when.
//!
//! Every value reaches SQL as a hex literal, so no text needs escaping. Times are the
//! database's (`NOW(6)` in UTC on this connection), so proxies' clocks never meet.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::document::SharedConfig;
use crate::backend::{BackendConn, Login};
use crate::config::ClusterSettings;
use crate::protocol::text::TextResult;
use crate::rules::firewall::LearnedDigest;
use crate::runtime::ServerTarget;

/// ER_DUP_ENTRY and ER_LOCK_DEADLOCK (Galera's certification failure): another proxy
/// wrote that version first.
const CONFLICT_CODES: [u16; 2] = [1062, 1213];
/// Versions kept per cluster name; older ones are deleted when a new one is written.
const VERSIONS_KEPT: u64 = 100;
/// Rows per multi-row INSERT when sharing learned digests or blocks.
const BATCH: usize = 200;

/// The fully quoted names of the shared tables.
#[derive(Debug, Clone)]
pub struct Tables {
    /// The schema and configuration table's names as configured (unquoted).
    schema_name: String,
    table_name: String,
    schema: String,
    config: String,
    peers: String,
    allowlist: String,
    blocks: String,
}

impl Tables {
    pub fn new(settings: &ClusterSettings) -> Tables {
        let (s, t) = (&settings.schema, &settings.table);
        Tables {
            schema_name: s.clone(),
            table_name: t.clone(),
            schema: format!("`{s}`"),
            config: format!("`{s}`.`{t}`"),
            peers: format!("`{s}`.`{t}_peers`"),
            allowlist: format!("`{s}`.`{t}_allowlist`"),
            blocks: format!("`{s}`.`{t}_blocks`"),
        }
    }

    fn create(&self) -> [String; 6] {
        [
            format!("CREATE DATABASE IF NOT EXISTS {}", self.schema),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (cluster VARCHAR(64) NOT NULL, \
                 version BIGINT UNSIGNED NOT NULL, written_by VARCHAR(255) NOT NULL, \
                 written_at DATETIME(6) NOT NULL, checksum BIGINT UNSIGNED NOT NULL, \
                 config LONGTEXT NOT NULL, PRIMARY KEY (cluster, version)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.config
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (cluster VARCHAR(64) NOT NULL, \
                 proxy VARCHAR(255) NOT NULL, version BIGINT UNSIGNED NOT NULL, \
                 applied_at DATETIME(6) NULL, last_seen DATETIME(6) NOT NULL, \
                 refused_version BIGINT UNSIGNED NOT NULL DEFAULT 0, last_error TEXT NULL, \
                 writers TEXT NULL, writer_since DATETIME(6) NULL, \
                 PRIMARY KEY (cluster, proxy)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.peers
            ),
            // a peers table of an earlier release
            format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS writers TEXT NULL, \
                 ADD COLUMN IF NOT EXISTS writer_since DATETIME(6) NULL",
                self.peers
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (cluster VARCHAR(64) NOT NULL, \
                 username VARCHAR(255) NOT NULL, digest BIGINT UNSIGNED NOT NULL, \
                 digest_text TEXT NOT NULL, learned_by VARCHAR(255) NOT NULL, \
                 learned_at DATETIME(6) NOT NULL, PRIMARY KEY (cluster, username, digest), \
                 KEY by_time (cluster, learned_at)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.allowlist
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (cluster VARCHAR(64) NOT NULL, \
                 address VARCHAR(45) NOT NULL, blocked_until DATETIME(6) NOT NULL, \
                 blocked_by VARCHAR(255) NOT NULL, PRIMARY KEY (cluster, address)) \
                 ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                self.blocks
            ),
        ]
    }
}

/// One configuration version as stored.
#[derive(Debug, Clone)]
pub struct StoredConfig {
    pub written_by: String,
    pub text: String,
}

/// How writing a new version went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Written,
    /// Another proxy wrote that version first.
    Conflict(String),
}

/// What a proxy tells its peers about itself.
#[derive(Debug, Clone)]
pub struct Heartbeat<'a> {
    pub version: u64,
    pub applied_unix_ms: u64,
    pub refused_version: u64,
    pub last_error: Option<&'a str>,
    /// The Galera writers this proxy sends writes to (`monitor::agreement::encode`).
    pub writers: &'a str,
}

/// One peer as the shared table shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerRow {
    pub proxy: String,
    pub version: u64,
    pub applied_unix_ms: u64,
    pub last_seen_unix_ms: u64,
    /// How long ago the peer's last heartbeat was written, by the database's clock.
    pub silent_ms: u64,
    pub refused_version: u64,
    pub last_error: Option<String>,
    /// The Galera writers the peer sends writes to (`monitor::agreement::encode`).
    pub writers: String,
    /// How long the peer has sent writes to them, by the database's clock.
    pub writers_held_ms: u64,
}

/// See the module documentation.
pub struct Store {
    conn: BackendConn,
    tables: Arc<Tables>,
    cluster: String,
}

/// `text` as a hex literal of utf8mb4 characters: nothing to escape, whatever it holds.
fn lit(text: &str) -> String {
    if text.is_empty() {
        return "''".into();
    }
    let mut out = String::with_capacity(12 + text.len() * 2);
    out.push_str("_utf8mb4 X'");
    for b in text.as_bytes() {
        out.push_str(&format!("{b:02X}"));
    }
    out.push('\'');
    out
}

fn number(result: &TextResult, row: usize, column: usize) -> u64 {
    result
        .rows
        .get(row)
        .and_then(|r| r.get(column))
        .and_then(|v| v.as_deref())
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn text(result: &TextResult, row: usize, column: usize) -> Option<String> {
    result.rows.get(row)?.get(column)?.clone()
}

/// A decimal `UNIX_TIMESTAMP(…)` in milliseconds.
fn unix_ms(result: &TextResult, row: usize, column: usize) -> u64 {
    text(result, row, column)
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}

impl Store {
    /// Logs in to `server`, makes the session's times UTC and its reads causal
    /// (`wsrep_sync_wait`: a read sees every write the cluster committed before it), and
    /// creates the shared tables when they are missing.
    pub async fn open(
        server: &Arc<ServerTarget>,
        login: &Login,
        tls: Option<&Arc<ClientConfig>>,
        timeout: Duration,
        tables: Arc<Tables>,
        cluster: &str,
    ) -> Result<Store, String> {
        let conn = BackendConn::connect(server, login, tls, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let mut store = Store {
            conn,
            tables,
            cluster: cluster.to_owned(),
        };
        store.run("SET SESSION time_zone = '+00:00'").await?;
        store.run("SET SESSION wsrep_sync_wait = 1").await?;
        store.run("SET SESSION autocommit = 1").await?;
        let peers = format!("{}_peers", store.tables.table_name);
        let present = store
            .query(&format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = {0} \
                 AND table_name IN ({1}, {2}, {3}, {4})) + (SELECT COUNT(*) FROM \
                 information_schema.columns WHERE table_schema = {0} AND table_name = {2} \
                 AND column_name = 'writer_since')",
                lit(&store.tables.schema_name),
                lit(&store.tables.table_name),
                lit(&peers),
                lit(&format!("{}_allowlist", store.tables.table_name)),
                lit(&format!("{}_blocks", store.tables.table_name)),
            ))
            .await?;
        // DDL is a cluster-wide barrier in Galera: only when something is missing
        if number(&present, 0, 0) < 5 {
            for statement in store.tables.create() {
                store.run(&statement).await?;
            }
        }
        Ok(store)
    }

    async fn query(&mut self, sql: &str) -> Result<TextResult, String> {
        match self.conn.query_text(sql).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(err)) => Err(format!("{} (error {})", err.message, err.code)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn run(&mut self, sql: &str) -> Result<(), String> {
        self.query(sql).await.map(|_| ())
    }

    /// The newest version written for this cluster name (0: none yet).
    pub async fn latest_version(&mut self) -> Result<u64, String> {
        let sql = format!(
            "SELECT COALESCE(MAX(version), 0) FROM {} WHERE cluster = {}",
            self.tables.config,
            lit(&self.cluster)
        );
        Ok(number(&self.query(&sql).await?, 0, 0))
    }

    /// One version, whole.
    pub async fn fetch(&mut self, version: u64) -> Result<Option<StoredConfig>, String> {
        let sql = format!(
            "SELECT written_by, config FROM {} WHERE cluster = {} AND version = {version}",
            self.tables.config,
            lit(&self.cluster)
        );
        let result = self.query(&sql).await?;
        if result.rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(StoredConfig {
            written_by: text(&result, 0, 0).unwrap_or_default(),
            text: text(&result, 0, 1).unwrap_or_default(),
        }))
    }

    /// Writes `version` (one more than the version the change was made on); a peer that
    /// wrote it first makes this a [`Published::Conflict`] and nothing is written.
    pub async fn publish(
        &mut self,
        version: u64,
        by: &str,
        doc: &SharedConfig,
    ) -> Result<Published, String> {
        let text = doc.to_text();
        let checksum = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        let sql = format!(
            "INSERT INTO {} (cluster, version, written_by, written_at, checksum, config) \
             VALUES ({}, {version}, {}, NOW(6), {checksum}, {})",
            self.tables.config,
            lit(&self.cluster),
            lit(by),
            lit(&text)
        );
        match self.conn.query_text(&sql).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) if CONFLICT_CODES.contains(&err.code) => {
                return Ok(Published::Conflict(err.message))
            }
            Ok(Err(err)) => return Err(format!("{} (error {})", err.message, err.code)),
            Err(e) => return Err(e.to_string()),
        }
        if version > VERSIONS_KEPT {
            let prune = format!(
                "DELETE FROM {} WHERE cluster = {} AND version <= {}",
                self.tables.config,
                lit(&self.cluster),
                version - VERSIONS_KEPT
            );
            self.run(&prune).await?;
        }
        Ok(Published::Written)
    }

    /// Records this proxy's state for its peers.
    pub async fn heartbeat(&mut self, proxy: &str, beat: &Heartbeat<'_>) -> Result<(), String> {
        let applied = if beat.applied_unix_ms == 0 {
            "NULL".to_string()
        } else {
            format!("FROM_UNIXTIME({:.3})", beat.applied_unix_ms as f64 / 1000.0)
        };
        let error = beat.last_error.map_or("NULL".to_string(), lit);
        // writer_since is assigned before writers: it compares the old value
        let sql = format!(
            "INSERT INTO {} (cluster, proxy, version, applied_at, last_seen, refused_version, \
             last_error, writers, writer_since) VALUES ({}, {}, {}, {applied}, NOW(6), {}, \
             {error}, {}, NOW(6)) \
             ON DUPLICATE KEY UPDATE version = VALUES(version), applied_at = VALUES(applied_at), \
             last_seen = VALUES(last_seen), refused_version = VALUES(refused_version), \
             last_error = VALUES(last_error), \
             writer_since = IF(writers <=> VALUES(writers), writer_since, NOW(6)), \
             writers = VALUES(writers)",
            self.tables.peers,
            lit(&self.cluster),
            lit(proxy),
            beat.version,
            beat.refused_version,
            lit(beat.writers),
        );
        self.run(&sql).await
    }

    /// Every proxy of this cluster name that ever wrote a heartbeat.
    pub async fn peers(&mut self) -> Result<Vec<PeerRow>, String> {
        let sql = format!(
            "SELECT proxy, version, UNIX_TIMESTAMP(applied_at), UNIX_TIMESTAMP(last_seen), \
             GREATEST(TIMESTAMPDIFF(MICROSECOND, last_seen, NOW(6)), 0) DIV 1000, \
             refused_version, last_error, writers, \
             GREATEST(TIMESTAMPDIFF(MICROSECOND, writer_since, NOW(6)), 0) DIV 1000 \
             FROM {} WHERE cluster = {} ORDER BY proxy",
            self.tables.peers,
            lit(&self.cluster)
        );
        let result = self.query(&sql).await?;
        Ok((0..result.rows.len())
            .map(|i| PeerRow {
                proxy: text(&result, i, 0).unwrap_or_default(),
                version: number(&result, i, 1),
                applied_unix_ms: unix_ms(&result, i, 2),
                last_seen_unix_ms: unix_ms(&result, i, 3),
                silent_ms: number(&result, i, 4),
                refused_version: number(&result, i, 5),
                last_error: text(&result, i, 6),
                writers: text(&result, i, 7).unwrap_or_default(),
                writers_held_ms: number(&result, i, 8),
            })
            .collect())
    }

    /// Shares digests learned here (ones already shared are left as they are).
    pub async fn share_digests(
        &mut self,
        by: &str,
        learned: &[LearnedDigest],
    ) -> Result<(), String> {
        for batch in learned.chunks(BATCH) {
            let values: Vec<String> = batch
                .iter()
                .map(|d| {
                    format!(
                        "({}, {}, {}, {}, {}, NOW(6))",
                        lit(&self.cluster),
                        lit(&d.user),
                        d.digest,
                        lit(&d.text),
                        lit(by)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT IGNORE INTO {} (cluster, username, digest, digest_text, learned_by, \
                 learned_at) VALUES {}",
                self.tables.allowlist,
                values.join(", ")
            );
            self.run(&sql).await?;
        }
        Ok(())
    }

    /// Digests learned since `since` (a database time as returned before; `None`: all),
    /// with the newest time seen. A digest whose insert was still committing when the
    /// cursor moved past its time is read again: reads overlap by ten seconds.
    pub async fn digests_since(
        &mut self,
        since: Option<&str>,
    ) -> Result<(Vec<LearnedDigest>, Option<String>), String> {
        let after = since.map_or(String::new(), |t| {
            format!(" AND learned_at >= {} - INTERVAL 10 SECOND", lit(t))
        });
        let sql = format!(
            "SELECT username, digest, digest_text, learned_at FROM {} WHERE cluster = {}{after}",
            self.tables.allowlist,
            lit(&self.cluster)
        );
        let result = self.query(&sql).await?;
        let mut newest = since.map(str::to_owned);
        let mut out = Vec::with_capacity(result.rows.len());
        for i in 0..result.rows.len() {
            let at = text(&result, i, 3);
            if at.as_deref() > newest.as_deref() {
                newest = at;
            }
            out.push(LearnedDigest {
                user: text(&result, i, 0).unwrap_or_default(),
                digest: number(&result, i, 1),
                text: text(&result, i, 2).unwrap_or_default(),
            });
        }
        Ok((out, newest))
    }

    /// Shares blocks this proxy imposed; a longer block already shared stays.
    pub async fn share_blocks(
        &mut self,
        by: &str,
        blocks: &[(IpAddr, Duration)],
    ) -> Result<(), String> {
        for batch in blocks.chunks(BATCH) {
            let values: Vec<String> = batch
                .iter()
                .map(|(ip, d)| {
                    format!(
                        "({}, {}, NOW(6) + INTERVAL {} MICROSECOND, {})",
                        lit(&self.cluster),
                        lit(&ip.to_string()),
                        d.as_micros(),
                        lit(by)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO {} (cluster, address, blocked_until, blocked_by) VALUES {} \
                 ON DUPLICATE KEY UPDATE blocked_until = GREATEST(blocked_until, \
                 VALUES(blocked_until)), blocked_by = VALUES(blocked_by)",
                self.tables.blocks,
                values.join(", ")
            );
            self.run(&sql).await?;
        }
        Ok(())
    }

    /// Addresses blocked right now by any proxy, with how much longer.
    pub async fn active_blocks(&mut self) -> Result<Vec<(IpAddr, Duration)>, String> {
        let sql = format!(
            "SELECT address, TIMESTAMPDIFF(MICROSECOND, NOW(6), blocked_until) FROM {} \
             WHERE cluster = {} AND blocked_until > NOW(6)",
            self.tables.blocks,
            lit(&self.cluster)
        );
        let result = self.query(&sql).await?;
        Ok((0..result.rows.len())
            .filter_map(|i| {
                let ip = text(&result, i, 0)?.parse().ok()?;
                Some((ip, Duration::from_micros(number(&result, i, 1))))
            })
            .collect())
    }

    /// Forgets every block of this cluster name (`PROXYSQL FLUSH MYSQL CLIENT HOSTS`) and
    /// blocks long expired.
    pub async fn clear_blocks(&mut self, all: bool) -> Result<(), String> {
        let which = if all {
            String::new()
        } else {
            " AND blocked_until < NOW(6) - INTERVAL 1 HOUR".to_string()
        };
        let sql = format!(
            "DELETE FROM {} WHERE cluster = {}{which}",
            self.tables.blocks,
            lit(&self.cluster)
        );
        self.run(&sql).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_hex_so_nothing_needs_escaping() {
        assert_eq!(lit(""), "''");
        assert_eq!(lit("a'b"), "_utf8mb4 X'612762'");
        assert_eq!(lit("é"), "_utf8mb4 X'C3A9'");
    }
}
