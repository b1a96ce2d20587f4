//! Read-your-writes: the GTID of each write the session commits, and whether a reader has
//! applied what a read must see before the read goes there.

use crate::config::Consistency;
use crate::frontend::registry::Registry;
use crate::protocol::constants::command;
use crate::router::gtid::GtidPosition;
use crate::router::Statement;

use super::Session;

impl Session {
    /// Remembers the GTID the server reported in a commit's OK packet (the value of
    /// `last_gtid`, which the proxy added to the tracked variables).
    pub(super) fn note_reported_gtid(&mut self, value: &[u8]) {
        match std::str::from_utf8(value)
            .ok()
            .and_then(GtidPosition::parse)
        {
            Some(position) => self.remember_write_gtid(position),
            None => {
                tracing::warn!(peer = %self.peer, value = %String::from_utf8_lossy(value), "unreadable last_gtid in an OK packet")
            }
        }
    }

    /// After a write that committed (autocommit, or the COMMIT itself) without reporting
    /// its GTID, reads it from the connection that wrote (`@@last_gtid` is that
    /// connection's) and remembers it for read-your-writes, the session's and the
    /// proxy's. Inside a transaction nothing is committed yet. The read is a statement: it
    /// resets what the write left for `ROW_COUNT()` and the like, which is why a connection
    /// that reports GTIDs in its OK packets is never asked.
    pub(super) async fn note_write_gtid(&mut self) {
        if self.routing.in_transaction {
            return;
        }
        let Some(primary) = self.primary.as_mut() else {
            return;
        };
        let read = match primary.query_text("SELECT @@last_gtid").await {
            Ok(Ok(result)) => result
                .rows
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|text| GtidPosition::parse(&text)),
            _ => None,
        };
        match read {
            Some(position) => self.remember_write_gtid(position),
            None => tracing::warn!(peer = %self.peer, "cannot read @@last_gtid"),
        }
    }

    /// The session's last write is at `position` (nothing when binary logging is off).
    fn remember_write_gtid(&mut self, position: GtidPosition) {
        if !position.is_empty() {
            Registry::count(&self.frontend.counters.gtids_collected);
            self.frontend.gtids.acknowledge(&position);
            self.last_write_gtid = position;
        }
    }

    /// Whether this session tracks its writes' GTIDs (`consistency` other than `none`).
    pub(super) fn reads_own_writes(&self) -> bool {
        self.user.config.consistency != Consistency::None
    }

    /// For read-your-writes: whether the reader has applied what this session's read must
    /// see — its own last write (`session`), or everything committed through the proxy so
    /// far (`global`) — waiting up to `causal_read_wait_ms` for it. Always true for
    /// `none`. A reader known to have applied it (by any session's wait) is not asked.
    pub(super) async fn reader_has_our_writes(&mut self) -> bool {
        let wanted = match self.user.config.consistency {
            Consistency::None => return true,
            Consistency::Session => self.last_write_gtid.clone(),
            Consistency::Global => self.frontend.gtids.acknowledged(),
        };
        let Some((reader, _)) = self.reader.as_mut() else {
            return false;
        };
        let address = reader.server.address().to_owned();
        if self.frontend.gtids.has_applied(&address, &wanted) {
            Registry::count(&self.frontend.counters.gtid_consistent_queries);
            return true;
        }
        let wait = self.frontend.shared.load().proxy.causal_read_wait_ms as f64 / 1000.0;
        // a parsed position prints as digits, dashes and commas: safe to inline
        let sql = format!("SELECT MASTER_GTID_WAIT('{wanted}', {wait})");
        match reader.query_text(&sql).await {
            Ok(Ok(result))
                if result
                    .rows
                    .first()
                    .and_then(|r| r.first().cloned().flatten())
                    .as_deref()
                    == Some("0") =>
            {
                self.frontend.gtids.applied(&address, &wanted);
                Registry::count(&self.frontend.counters.gtid_consistent_queries);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "reader failed during a causal wait");
                self.reader = None;
                false
            }
        }
    }
}

/// Whether a command may have written (and so moves the session's last write GTID).
pub(super) fn writes(cmd: u8, statement: Statement) -> bool {
    match cmd {
        // a prepared statement's meaning comes from its text, as a query's does
        command::QUERY | command::STMT_EXECUTE => !matches!(
            statement,
            Statement::Read
                | Statement::Diagnostics
                | Statement::SetNames
                | Statement::SetVariables
                | Statement::ReadOnlyTransaction
                | Statement::ReadOnlyNext
        ),
        _ => false,
    }
}
