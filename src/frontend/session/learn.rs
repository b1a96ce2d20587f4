//! What the session learns from a statement that ran: transaction state, schema,
//! character set and followed variables, resets — and whether its connection may go back
//! to the pool (multiplexing).

use crate::frontend::registry::Registry;
use crate::protocol::constants::{command, status};
use crate::protocol::response::Outcome;
use crate::router::{Statement, Target};
use crate::rules::variables;
use crate::runtime::Runtime;

use super::request::Effects;
use super::{routing_for, Session};

impl Session {
    /// Multiplexing: after a statement, gives the connection it ran on back to the pool
    /// when the session left nothing on it that a later statement could depend on. What
    /// binds a session to its connection: an open transaction, session state (user
    /// variables, SET other than NAMES, temporary tables, locks, USE, PREPARE),
    /// connection-bound functions (GET_LOCK, LAST_INSERT_ID…), multi-statements,
    /// COM_SET_OPTION — and, for as long as they last, a prepared statement's long data or
    /// open cursor (which hold a reader connection too). A write holds its connection for
    /// one more statement, so `SELECT LAST_INSERT_ID()` or `ROW_COUNT()` right after it
    /// sees it; so does `SET TRANSACTION …`, for the transaction it shapes; so does a
    /// statement that left warnings or an error, for the `SHOW WARNINGS` after it, on the
    /// reader too (and a diagnostic statement keeps what it read there for the next one).
    /// `ran`: where the statement ran, `None` when no server answered it (the cache did).
    pub(super) fn multiplex(
        &mut self,
        runtime: &Runtime,
        ran: Option<(Target, u32)>,
        effects: Effects,
    ) {
        let previous = self.routing.diagnostics_at.take();
        let left_diagnostics = ran.is_some()
            && (self.last_outcome.is_some_and(|o| o.warnings > 0 || o.error)
                || (effects.keeps_diagnostics && previous == ran));
        if runtime.pool.multiplex {
            self.release_unneeded(ran, previous, effects, left_diagnostics);
        }
        // whatever is still held is where the statement's diagnostics are
        self.routing.diagnostics_at = ran.filter(|&at| self.has_connection(at));
    }

    fn release_unneeded(
        &mut self,
        ran: Option<(Target, u32)>,
        previous: Option<(Target, u32)>,
        effects: Effects,
        left_diagnostics: bool,
    ) {
        let target = ran.map_or(Target::Primary, |(t, _)| t);
        if effects.binds {
            self.bound = true;
        }
        let holds_next = (effects.writes || left_diagnostics) && target == Target::Primary;
        let held = std::mem::replace(&mut self.hold_next, holds_next);
        // a cursor open there, or a read-only transaction, keeps the reader
        let reader_needed = self.statements.holds(Target::Reader)
            || self.routing.held_reader.is_some()
            || (target == Target::Reader && left_diagnostics);
        let reader_done = target == Target::Reader
            // kept only for the diagnostics of the statement before
            || matches!(previous, Some((Target::Reader, _)));
        if reader_done && !reader_needed {
            if let Some((reader, _)) = self.reader.take() {
                self.frontend
                    .pool
                    .put_back(reader, &self.frontend.shared.peek().pool);
            }
        }
        if target == Target::Primary {
            let free = !self.bound
                && !self.routing.pinned
                && !self.routing.in_transaction
                && !self.statements.holds(Target::Primary)
                && !held
                && !holds_next;
            if free {
                if let Some(primary) = self.primary.take() {
                    self.frontend
                        .pool
                        .put_back(primary, &self.frontend.shared.peek().pool);
                }
            }
        }
    }

    /// Whether the session still holds the connection for `target` of `hostgroup`.
    pub(super) fn has_connection(&self, (target, hostgroup): (Target, u32)) -> bool {
        match target {
            Target::Primary => self.primary.is_some(),
            Target::Reader => self
                .reader
                .as_ref()
                .is_some_and(|(_, r)| r.hostgroup == hostgroup),
        }
    }

    /// Learns from a statement that ran on the primary: transaction state, schema,
    /// character set, resets.
    pub(super) async fn after_primary(
        &mut self,
        cmd: u8,
        statement: Statement,
        body: &[u8],
        outcome: Outcome,
    ) {
        if outcome.error {
            return;
        }
        self.routing.after(statement, outcome.status);
        let changed = outcome
            .status
            .is_some_and(|s| s & status::SESSION_STATE_CHANGED != 0);
        let followed = match cmd {
            command::QUERY => matches!(statement, Statement::SetNames | Statement::SetVariables),
            command::INIT_DB | command::RESET_CONNECTION => true,
            _ => false,
        };
        let sets = matches!(statement, Statement::SessionState | Statement::SetVariables);
        if cmd == command::QUERY && sets && sets_tracked_variables(body) {
            // the client's own list replaced the proxy's `last_gtid`, or asks for it
            // itself: either way, what the server reports is now the client's
            if let Some(primary) = self.primary.as_mut() {
                primary.tracks_gtid = false;
            }
        }
        if changed && !followed {
            // state the analysis did not see (a procedure that set a variable, …): the
            // session keeps its connection, as for any session state
            self.bound = true;
            self.routing.pinned = true;
        }
        match cmd {
            command::INIT_DB => {
                let name = String::from_utf8_lossy(body).into_owned();
                let schema = Some(name.clone());
                self.listed.entry.set(|a| a.schema = schema);
                if let Some(primary) = self.primary.as_mut() {
                    primary.schema = Some(name.clone());
                }
                self.login.database = Some(name);
            }
            command::RESET_CONNECTION => {
                if let Some(primary) = self.primary.as_mut() {
                    if let Err(why) = primary.after_reset().await {
                        tracing::warn!(peer = %self.peer, error = %why, "cannot turn state tracking back on");
                        self.primary = None;
                    }
                }
                self.reset_routing().await
            }
            command::QUERY if statement == Statement::SetNames => {
                self.names = Some(body.to_vec());
                if let Some(primary) = self.primary.as_mut() {
                    primary.names = self.names.clone();
                }
            }
            command::QUERY if statement == Statement::SetVariables && outcome.warnings > 0 => {
                // reading the values back would erase the SET's warnings before the
                // client can ask for them: the session keeps its connection instead
                self.bound = true;
                self.routing.pinned = true;
            }
            command::QUERY if statement == Statement::SetVariables => {
                self.follow_variables(body).await;
            }
            _ => {}
        }
    }

    /// After a `SET` of followed variables ran on the primary: reads back what the server
    /// made of them, to replay on other connections. When that fails, the session stays
    /// on its connection instead (as for any other session state).
    async fn follow_variables(&mut self, sql: &[u8]) {
        let Some(primary) = self.primary.as_mut() else {
            return;
        };
        let mut names = variables::replayed_assignments(sql).unwrap_or_default();
        if names.contains(&variables::BY_STATUS) {
            Registry::count(&self.frontend.counters.set_autocommit);
        }
        // autocommit is followed by the status flags of every reply
        names.retain(|n| *n != variables::BY_STATUS);
        if names.is_empty() {
            return;
        }
        let select = names
            .iter()
            .map(|n| format!("@@SESSION.{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let read = match primary.query_text(&format!("SELECT {select}")).await {
            Ok(Ok(result)) => result.rows.into_iter().next().and_then(|row| {
                names
                    .iter()
                    .zip(row)
                    .map(|(n, v)| Some((*n, variables::literal(v.as_deref())?)))
                    .collect::<Option<Vec<_>>>()
            }),
            _ => None,
        };
        match read {
            Some(values) => {
                variables::merge(&mut self.variables, values);
                primary.variables = self.variables.clone();
            }
            _ => {
                tracing::debug!(peer = %self.peer, "session variables not followed: the session keeps its connection");
                self.bound = true;
                self.routing.pinned = true;
            }
        }
    }

    /// Back to a clean session: no pin, no transaction, no replayed state.
    pub(super) async fn reset_routing(&mut self) {
        self.routing = routing_for(&self.frontend, &self.user);
        self.names = None;
        self.variables.clear();
        self.bound = false;
        self.hold_next = false;
        self.statements.clear();
        // the server rolled back any open transaction: nothing is left to replay
        self.transaction.forget();
        if let Some((reader, _)) = self.reader.take() {
            self.release(reader).await;
        }
    }
}

/// Whether a query may set `session_track_system_variables`.
fn sets_tracked_variables(sql: &[u8]) -> bool {
    const NAME: &[u8] = b"session_track_system_variables";
    sql.windows(NAME.len())
        .any(|w| w.eq_ignore_ascii_case(NAME))
}
