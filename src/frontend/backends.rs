//! The session's backend connections: which one serves a statement (the router decides),
//! keeping the reader in step with the session (schema, character set, read-your-writes),
//! following the writer when it changes, relaying the response, and losing a connection
//! cleanly.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::backend::BackendConn;
use crate::config::{Consistency, FirewallMode};
use crate::connection::RawPacket;
use crate::protocol::constants::{command, error, status};
use crate::protocol::frame::encode_packet;
use crate::protocol::packets::ErrPacket;
use crate::protocol::response::{Outcome, ResponseTracker};
use crate::router::gtid::GtidPosition;
use crate::router::{Statement, Target};
use crate::rules::variables;
use crate::rules::variables::Values;
use crate::runtime::Runtime;

use super::error_stats::ErrorKey;
use super::inspect::{Plan, Ran};
use super::prepared::Effects;
use super::registry::Registry;
use super::relay::{relay, stream_packet, Capture, Eviction, RelayError, StreamError};
use super::session::{is_refused, routing_for, Failure, Replayed, Session};

impl Session {
    /// Inspects the statement (rules, firewall), sends it to the backend the rules or the
    /// router pick, relays the response, and accounts for it.
    pub(super) async fn forward(&mut self, cmd: u8, mut packet: RawPacket) -> Result<(), Failure> {
        let started = Instant::now();
        let runtime = self.frontend.shared.load();
        let counters = &self.frontend.counters;
        Registry::count(&counters.questions);
        Registry::count(&counters.commands[usize::from(cmd) % counters.commands.len()]);
        counters
            .bytes_from_clients
            .fetch_add(packet.wire.len() as u64, Ordering::Relaxed);
        // a command naming a prepared statement: the session's statement, or answered here
        let prepared = match cmd {
            command::STMT_EXECUTE
            | command::STMT_FETCH
            | command::STMT_RESET
            | command::STMT_CLOSE
            | command::STMT_SEND_LONG_DATA => match self.statement_command(cmd, &packet).await? {
                Some(id) => Some(id),
                None => return Ok(()),
            },
            _ => None,
        };
        let inspected = matches!(cmd, command::QUERY | command::STMT_PREPARE);
        let plan = if inspected {
            self.inspect(&runtime, &packet.first_frame()[1..])
        } else {
            Plan::default()
        };
        if let Some(refusal) = plan.refusal(&runtime, &self.user.config.name) {
            self.account(&runtime, &plan, refused(started));
            return self.send_packet_err(1, &refusal).await;
        }
        let (statement, effects, ruled) = match (cmd, prepared) {
            (command::QUERY, _) => {
                let statement = Statement::of(&plan.analysis);
                let effects = Effects::of_text(&plan.analysis, statement);
                (statement, effects, plan.decision.hostgroup)
            }
            (command::STMT_EXECUTE, Some(id)) => self.statements.routing(id),
            (command::SET_OPTION, _) => (
                Statement::Write,
                Effects {
                    binds: true,
                    writes: false,
                },
                None,
            ),
            _ => (
                Statement::Write,
                Effects::default(),
                plan.decision.hostgroup,
            ),
        };
        let was_in_transaction = self.routing.in_transaction;
        let cacheable = self.cacheable(&runtime, cmd, &plan, statement, effects);
        let body = &packet.first_frame()[1..];
        let sent_text = plan.decision.rewritten.as_deref().unwrap_or(body);
        if cacheable.is_some() && self.answer_from_cache(sent_text).await? {
            self.account(&runtime, &plan, from_cache(started));
            self.multiplex(&runtime, Target::Primary, effects);
            return Ok(());
        }
        let mut capture = cacheable.map(|_| self.capture_for_cache(&runtime));
        let Some((target, hostgroup)) = self.choose(cmd, statement, ruled).await? else {
            self.account(&runtime, &plan, refused(started));
            return Ok(());
        };
        if let Some(id) = prepared {
            if !self.bind_statement(target, cmd, id, &mut packet).await? {
                self.multiplex(&runtime, target, Effects::default());
                return Ok(());
            }
        }
        let (mut target, mut hostgroup) = (target, hostgroup);
        let mut retried = false;
        let (result, server) = loop {
            let server = connection_for(&mut self.primary, &mut self.reader, target)
                .server
                .clone();
            self.list_running(cmd, hostgroup, &server, started, inspected);
            let result = self
                .run_on(target, cmd, statement, &plan, &packet, capture.as_mut())
                .await;
            let Err(Failure::Unanswered(why)) = result else {
                break (result, server);
            };
            if retried {
                let message = format!("Lost connection to backend {} (hostgroup {hostgroup}) during query, twice: {why}", server.address());
                let err = ErrPacket::new(error::LOST_BACKEND, message);
                break (
                    self.send_packet_err(1, &err)
                        .await
                        .and(Err(Failure::Backend)),
                    server,
                );
            }
            // its reader failed before answering: once more, on whichever server serves
            // reads now
            retried = true;
            Registry::count(&self.frontend.counters.reads_retried);
            match self.choose(cmd, statement, ruled).await? {
                Some(chosen) => (target, hostgroup) = chosen,
                None => break (Err(Failure::Backend), server),
            }
        };
        let body = &packet.first_frame()[1..];
        if let (Some(cacheable), Some(capture), Ok(true)) = (cacheable, capture, &result) {
            let text = plan.decision.rewritten.as_deref().unwrap_or(body);
            self.keep_in_cache(&runtime, cacheable, text, capture.into_bytes());
        }
        if cmd == command::QUERY && !matches!(result, Err(Failure::Client)) {
            self.mirror(&runtime, &plan, effects, body, was_in_transaction);
        }
        self.listed.entry.set(|a| {
            a.command = "Sleep";
            a.since = None;
            a.info.clear();
        });
        let ran = Ran {
            hostgroup: Some(hostgroup),
            from_cache: false,
            server: Some(server.address()),
            duration: started.elapsed(),
            error: !matches!(result, Ok(true)),
        };
        if inspected {
            self.account(&runtime, &plan, ran);
        }
        if let Some(id) = prepared {
            // also after a lost backend: its cursor or long data went with it
            if !matches!(result, Err(Failure::Client)) {
                self.after_statement_command(cmd, id);
            }
        }
        if result.is_ok() {
            self.multiplex(&runtime, target, effects);
        }
        result.map(|_| ())
    }

    /// Shows the statement as running on `server` in the processlist.
    fn list_running(
        &self,
        cmd: u8,
        hostgroup: u32,
        server: &Arc<crate::runtime::ServerTarget>,
        started: Instant,
        inspected: bool,
    ) {
        let digest_text = self.analyzer.digest_text();
        self.listed.entry.set(|a| {
            a.command = command::name(cmd);
            a.hostgroup = Some(hostgroup);
            // the same server as last time, mostly: no new reference to count then
            if !a.server.as_ref().is_some_and(|s| Arc::ptr_eq(s, server)) {
                a.server = Some(server.clone());
            }
            a.since = Some(started);
            a.info.clear();
            if inspected {
                a.info.push_str(&String::from_utf8_lossy(digest_text));
            }
        });
    }

    /// Sends the statement (as the rules rewrote it) to the connection of `target` and
    /// relays its answer, under the rules' timeout if they set one. True when the answer
    /// was not an error.
    async fn run_on(
        &mut self,
        target: Target,
        cmd: u8,
        statement: Statement,
        plan: &Plan,
        packet: &RawPacket,
        capture: Option<&mut Capture>,
    ) -> Result<bool, Failure> {
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        let sent = match &plan.decision.rewritten {
            Some(text) => backend.conn.write_wire(&rewritten(cmd, text)).await,
            None => backend.conn.write_wire(&packet.wire).await,
        };
        if let Err(e) = sent {
            let why = e.to_string();
            if retryable(target, cmd, statement) {
                self.reader_lost_unanswered(&why);
                return Err(Failure::Unanswered(why));
            }
            return self.backend_lost(target, 1, &why).await.map(|_| false);
        }
        let stats = &backend.server.stats;
        stats.queries.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_sent
            .fetch_add(packet.wire.len() as u64, Ordering::Relaxed);
        let watchdog = plan
            .decision
            .timeout_ms
            .map(|ms| self.kill_after(target, Duration::from_millis(ms)));
        let body = &packet.first_frame()[1..];
        let result = if cmd == command::STMT_PREPARE {
            let text = plan.decision.rewritten.as_deref().unwrap_or(body);
            self.relay_prepare(target, text, &plan.analysis, plan.decision.hostgroup)
                .await
        } else {
            self.relay_response(target, cmd, statement, body, capture)
                .await
        };
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        result
    }

    /// Multiplexing: after a statement, gives the connection it ran on back to the pool
    /// when the session left nothing on it that a later statement could depend on. What
    /// binds a session to its connection: an open transaction, session state (user
    /// variables, SET other than NAMES, temporary tables, locks, USE, PREPARE),
    /// connection-bound functions (GET_LOCK, FOUND_ROWS, LAST_INSERT_ID…),
    /// multi-statements, COM_SET_OPTION — and, for as long as they last, a prepared
    /// statement's long data or open cursor. A write holds its connection for one more
    /// statement, so `SELECT LAST_INSERT_ID()` or `ROW_COUNT()` right after it sees it;
    /// so does `SET TRANSACTION …`, for the transaction it shapes.
    fn multiplex(&mut self, runtime: &Runtime, target: Target, effects: Effects) {
        if !runtime.pool.multiplex {
            return;
        }
        if effects.binds {
            self.bound = true;
        }
        let held = std::mem::replace(&mut self.hold_next, effects.writes);
        match target {
            Target::Reader => {
                if let Some((reader, _)) = self.reader.take() {
                    self.frontend.pool.put_back(reader, &runtime.pool);
                }
            }
            Target::Primary => {
                let free = !self.bound
                    && !self.routing.pinned
                    && !self.routing.in_transaction
                    && !self.statements.holds_connection()
                    && !held
                    && !effects.writes;
                if free {
                    if let Some(primary) = self.primary.take() {
                        self.frontend.pool.put_back(primary, &runtime.pool);
                    }
                }
            }
        }
    }

    /// Picks the connection for a statement and makes sure it is there: the rules'
    /// hostgroup if they named one (unless a transaction holds the session), else the
    /// router's choice. `None` when the client was already told why there is none.
    async fn choose(
        &mut self,
        cmd: u8,
        statement: Statement,
        ruled: Option<u32>,
    ) -> Result<Option<(Target, u32)>, Failure> {
        let primary_hostgroup = self.user.config.default_hostgroup;
        let held = self.routing.in_transaction && self.routing.transaction_persistent;
        let wanted = match ruled {
            Some(hg) if hg != primary_hostgroup && !held => Some((hg, true)),
            Some(_) => None,
            None if cmd == command::QUERY && self.routing.route(statement) == Target::Reader => {
                self.routing.reader_hostgroup.map(|hg| (hg, false))
            }
            None => None,
        };
        if let Some((hostgroup, by_rule)) = wanted {
            match self.ensure_reader(hostgroup).await {
                Ok(()) if self.reader_has_our_writes().await => {
                    return Ok(Some((Target::Reader, hostgroup)));
                }
                Ok(()) => {}
                Err(err) if by_rule => {
                    self.send_packet_err(1, &err).await?;
                    return Ok(None);
                }
                Err(_) if !self.routing.fallback_to_writer => {
                    let message = format!("no reader of hostgroup {hostgroup} can serve this read");
                    self.send_packet_err(1, &ErrPacket::new(error::NO_BACKEND, message))
                        .await?;
                    return Ok(None);
                }
                Err(_) => {}
            }
        }
        match self.ensure_primary().await {
            Ok(()) => Ok(Some((Target::Primary, primary_hostgroup))),
            Err(Failure::Client) => Err(Failure::Client),
            Err(_) => Ok(None),
        }
    }

    /// Starts a watchdog that kills the running statement (`KILL QUERY`, from a connection
    /// of the same user) once `limit` has passed; aborted when the statement ends first.
    fn kill_after(&self, target: Target, limit: Duration) -> tokio::task::JoinHandle<()> {
        let backend = match target {
            Target::Primary => self.primary.as_ref(),
            Target::Reader => self.reader.as_ref().map(|(b, _)| b),
        }
        .expect("ensured");
        let (server, thread_id, login) = (
            backend.server.clone(),
            backend.thread_id,
            self.login.clone(),
        );
        let runtime = self.frontend.shared.load();
        let tls = server.tls.then(|| runtime.backend_tls.clone()).flatten();
        let connect_timeout = Duration::from_millis(runtime.proxy.connect_timeout_ms);
        let peer = self.peer;
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            tracing::info!(%peer, server = %server.address(), thread_id, ?limit, "statement over its rule's timeout: killing it");
            let killed = async {
                let mut conn = BackendConn::connect(&server, &login, tls.as_ref(), connect_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.run(command::QUERY, format!("KILL QUERY {thread_id}").as_bytes())
                    .await
            };
            if let Err(e) = killed.await {
                tracing::warn!(%peer, server = %server.address(), error = %e, "cannot kill a statement over its timeout");
            }
        })
    }

    /// A request too large to hold (see `connection::STREAM_ABOVE`): streamed to the
    /// primary as it arrives. Whatever goes wrong midway leaves both connections
    /// mid-packet, so the session ends.
    pub(super) async fn forward_large(&mut self, seq: u8, cmd: u8) -> Result<(), Failure> {
        if seq != 0 {
            self.send_error(
                1,
                error::NET_PACKETS_OUT_OF_ORDER,
                "Got packets out of order",
            )
            .await;
            return Err(Failure::Client);
        }
        if matches!(cmd, command::QUIT | command::CHANGE_USER) || is_refused(cmd) {
            let message = format!("Command {cmd:#04x} with a payload this large is not accepted");
            self.send_error(1, error::UNKNOWN_COMMAND, &message).await;
            return Err(Failure::Client);
        }
        let runtime = self.frontend.shared.load();
        let mode = self
            .user
            .config
            .firewall
            .unwrap_or(runtime.firewall_settings.mode);
        if mode == FirewallMode::Protect {
            // a statement this large is not held in memory, so it cannot be inspected
            let message = format!(
                "Statement refused by the firewall: statements over {} bytes cannot be inspected",
                crate::connection::STREAM_ABOVE
            );
            self.send_error(1, error::NOT_ALLOWED, &message).await;
            return Err(Failure::Client);
        }
        if self.ensure_primary().await.is_err() {
            return Err(Failure::Client);
        }
        let prepared = match cmd {
            command::STMT_EXECUTE | command::STMT_SEND_LONG_DATA => {
                match self.bind_streamed_statement(cmd).await? {
                    Some(id) => Some(id),
                    None => return Err(Failure::Client),
                }
            }
            _ => None,
        };
        let max = runtime.proxy.max_allowed_packet;
        let primary = self.primary.as_mut().expect("ensured");
        match stream_packet(&mut self.client, &mut primary.conn, max).await {
            Ok(_) => {
                let result = self
                    .relay_response(Target::Primary, cmd, Statement::Write, &[], None)
                    .await;
                if let Some(id) = prepared {
                    if !matches!(result, Err(Failure::Client)) {
                        self.after_statement_command(cmd, id);
                    }
                }
                result.map(|_| ())
            }
            Err(e) => {
                // the backend holds part of a packet: it cannot be used again
                self.primary = None;
                match e {
                    StreamError::TooLarge { next_seq } => {
                        let message = "Got a packet bigger than 'max_allowed_packet' bytes";
                        self.send_error(next_seq, error::NET_PACKET_TOO_LARGE, message)
                            .await;
                    }
                    StreamError::Backend(why) => {
                        let message = format!("Lost connection to backend during query: {why}");
                        self.send_error(1, error::LOST_BACKEND, &message).await;
                    }
                    StreamError::Client => {}
                }
                Err(Failure::Client)
            }
        }
    }

    /// Relays the response to a request already sent to `target`, then learns from it.
    /// `body` is the request after its command byte (empty for streamed requests). True
    /// when the response was not an error.
    async fn relay_response(
        &mut self,
        target: Target,
        cmd: u8,
        statement: Statement,
        body: &[u8],
        capture: Option<&mut Capture>,
    ) -> Result<bool, Failure> {
        self.last_outcome = None;
        let Some(mut tracker) = ResponseTracker::for_command(cmd) else {
            return Ok(true);
        };
        tracker.add_status(std::mem::take(&mut self.added_status));
        let shared = &*self.frontend.shared;
        let max = shared.peek().proxy.max_allowed_packet;
        let backend = connection_for(&mut self.primary, &mut self.reader, target);
        let eviction = Eviction::new(shared, backend.server.address(), &backend.eviction.notify);
        let relayed = relay(
            &mut self.client,
            &mut backend.conn,
            &mut tracker,
            max,
            &eviction,
            &backend.server.stats.bytes_received,
            capture,
        )
        .await;
        backend.conn.shrink_buffers();
        if let Some(err) = tracker.error() {
            let key = ErrorKey {
                hostgroup: backend.server.hostgroup,
                host: backend.server.host.clone(),
                port: backend.server.port,
                user: self.user.config.name.clone(),
                client_address: self.peer.ip().to_string(),
                schema: self.login.database.clone().unwrap_or_default(),
                errno: err.code,
            };
            self.frontend.errors.record(key, &err.message);
        }
        match relayed {
            Ok(outcome) => {
                self.last_outcome = Some(outcome);
                let tracked = target == Target::Primary
                    && self.reads_own_writes()
                    && writes(cmd, statement)
                    && !outcome.error;
                // the answer's end waits for the write's GTID only when some user's reads
                // must see every acknowledged write
                let hold = tracked && shared.peek().global_reads;
                if !hold {
                    self.client.flush().await.map_err(|_| Failure::Client)?;
                }
                if target == Target::Primary {
                    if let Some(flags) = outcome.status {
                        self.server_status = flags;
                    }
                    self.after_primary(cmd, statement, body, outcome).await;
                    if tracked {
                        self.note_write_gtid().await;
                    }
                }
                if hold {
                    self.client.flush().await.map_err(|_| Failure::Client)?;
                }
                Ok(!outcome.error)
            }
            Err(RelayError::Client) => Err(Failure::Client),
            Err(RelayError::Unanswered(why)) if retryable(target, cmd, statement) => {
                self.reader_lost_unanswered(&why);
                Err(Failure::Unanswered(why))
            }
            Err(RelayError::Backend(why) | RelayError::Unanswered(why)) => self
                .backend_lost(target, tracker.next_seq(), &why)
                .await
                .map(|_| false),
        }
    }

    /// Learns from a statement that ran on the primary: transaction state, schema,
    /// character set, resets.
    async fn after_primary(
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
            command::QUERY if statement == Statement::SetVariables => {
                self.follow_variables(body).await;
            }
            _ => {}
        }
    }

    /// After a write that committed (autocommit, or the COMMIT itself), remembers its GTID
    /// for read-your-writes, the session's and the proxy's. Inside a transaction nothing
    /// is committed yet.
    async fn note_write_gtid(&mut self) {
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
            Some(position) if !position.is_empty() => {
                self.frontend.gtids.acknowledge(&position);
                self.last_write_gtid = position;
            }
            Some(_) => {}
            None => tracing::warn!(peer = %self.peer, "cannot read @@last_gtid"),
        }
    }

    /// Whether this session tracks its writes' GTIDs (`consistency` other than `none`).
    fn reads_own_writes(&self) -> bool {
        self.user.config.consistency != Consistency::None
    }

    /// For read-your-writes: whether the reader has applied what this session's read must
    /// see — its own last write (`session`), or everything committed through the proxy so
    /// far (`global`) — waiting up to `causal_read_wait_ms` for it. Always true for
    /// `none`. A reader known to have applied it (by any session's wait) is not asked.
    async fn reader_has_our_writes(&mut self) -> bool {
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

    /// After a `SET` of followed variables ran on the primary: reads back what the server
    /// made of them, to replay on other connections. When that fails, the session stays
    /// on its connection instead (as for any other session state).
    async fn follow_variables(&mut self, sql: &[u8]) {
        let Some(primary) = self.primary.as_mut() else {
            return;
        };
        let mut names = variables::replayed_assignments(sql).unwrap_or_default();
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
        if let Some((reader, _)) = self.reader.take() {
            self.release(reader).await;
        }
    }

    /// Makes sure the session has a primary connection to a server that is still in its
    /// hostgroup, connecting anew after a loss or a failover. A failure is reported to the
    /// client.
    pub(super) async fn ensure_primary(&mut self) -> Result<(), Failure> {
        let hostgroup = self.user.config.default_hostgroup;
        if let Some(primary) = &self.primary {
            // Held for the statement after a write, its server closed it meanwhile (it was
            // killed): nothing was sent on it, so the statement can go to the next writer.
            // A session with a transaction or other state there has lost it: it is told
            // when the statement fails on the connection.
            let movable = !self.routing.in_transaction && !self.bound && !self.routing.pinned;
            if movable && primary.conn.peer_closed() {
                tracing::info!(peer = %self.peer, server = %primary.server.address(), "held connection closed by its server: taking another");
                self.primary = None;
                self.hold_next = false;
                return Box::pin(self.ensure_primary()).await;
            }
            let address = primary.server.address();
            // An open transaction finishes where it began (or fails with its server).
            if self.routing.in_transaction || self.frontend.shared.is_member(hostgroup, address) {
                return Ok(());
            }
            // The server left the hostgroup (a new writer was elected): statements must
            // not go on reaching it. Whatever the session set on it stays behind.
            tracing::info!(peer = %self.peer, server = %address, hostgroup, "leaving a server that left the hostgroup");
            let old = self.primary.take().expect("checked");
            self.release(old).await;
        }
        let wait = failover_wait(&self.frontend.shared.peek(), hostgroup);
        let acquired = match self
            .frontend
            .pool
            .acquire_through_failover(&self.frontend.shared, hostgroup, &self.login, wait)
            .await
        {
            Ok(mut b) => match sync(
                &mut b,
                self.login.database.as_deref(),
                self.names.as_deref(),
                &self.variables,
            )
            .await
            {
                Ok(()) => Ok(b),
                Err(why) => Err(crate::backend::AcquireError::Refused(ErrPacket::new(
                    error::LOST_BACKEND,
                    format!(
                        "Lost connection to {} while setting the session up: {why}",
                        b.server.address()
                    ),
                ))),
            },
            Err(e) => Err(e),
        };
        match acquired {
            Ok(b) => {
                self.primary = Some(b);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, hostgroup, error = %e, "no backend");
                self.send_packet_err(1, &e.to_err_packet()).await?;
                Err(Failure::Backend)
            }
        }
    }

    /// Makes sure the session has a connection to `hostgroup` (the readers, or a
    /// hostgroup a rule chose) in step with the session's schema and character set. The
    /// error says why there is none.
    async fn ensure_reader(&mut self, hostgroup: u32) -> Result<(), ErrPacket> {
        let shared = self.frontend.shared.clone();
        if let Some((reader, replayed)) = &self.reader {
            if replayed.hostgroup != hostgroup
                || !shared.is_member(hostgroup, reader.server.address())
            {
                let (old, _) = self.reader.take().expect("checked");
                self.release(old).await;
            }
        }
        if self.reader.is_none() {
            match self
                .frontend
                .pool
                .acquire(&shared, hostgroup, &self.login)
                .await
            {
                Ok(b) => {
                    self.reader = Some((b, Replayed { hostgroup }));
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, hostgroup, error = %e, "no connection to the hostgroup");
                    return Err(e.to_err_packet());
                }
            }
        }
        self.replay_on_reader().await.map_err(|why| {
            tracing::warn!(peer = %self.peer, hostgroup, error = %why, "reader connection failed");
            self.reader = None;
            ErrPacket::new(
                error::LOST_BACKEND,
                format!("Lost connection to hostgroup {hostgroup}: {why}"),
            )
        })
    }

    /// Brings the reader connection's schema and character set in line with the session's.
    async fn replay_on_reader(&mut self) -> Result<(), String> {
        let (reader, _) = self.reader.as_mut().expect("ensured");
        sync(
            reader,
            self.login.database.as_deref(),
            self.names.as_deref(),
            &self.variables,
        )
        .await
    }

    /// A read's reader failed before answering: the connection is dropped without a word
    /// to the client, whose read is sent again (see [`retryable`]).
    fn reader_lost_unanswered(&mut self, why: &str) {
        if let Some((reader, _)) = self.reader.take() {
            tracing::warn!(peer = %self.peer, server = %reader.server.address(), error = why, "reader lost before answering: the read is retried");
            Registry::count(&self.frontend.counters.backends_lost);
        }
    }

    /// Tells the client its statement died with the backend connection, and forgets the
    /// connection; the next command gets a new one.
    pub(super) async fn backend_lost(
        &mut self,
        target: Target,
        seq: u8,
        why: &str,
    ) -> Result<(), Failure> {
        let backend = match target {
            Target::Primary => {
                self.routing.in_transaction = false;
                self.primary.take()
            }
            Target::Reader => self.reader.take().map(|(b, _)| b),
        };
        let Some(backend) = backend else {
            return Err(Failure::Backend);
        };
        let message = format!(
            "Lost connection to backend {} (hostgroup {}) during query: {why}",
            backend.server.address(),
            backend.server.hostgroup
        );
        tracing::warn!(peer = %self.peer, "{message}");
        Registry::count(&self.frontend.counters.backends_lost);
        drop(backend);
        self.send_packet_err(seq, &ErrPacket::new(error::LOST_BACKEND, message))
            .await?;
        Err(Failure::Backend)
    }
}

/// Brings a connection's character set, followed session variables and schema in line
/// with a session's, each only where it differs.
pub(super) async fn sync(
    conn: &mut BackendConn,
    schema: Option<&str>,
    names: Option<&[u8]>,
    variables: &Values,
) -> Result<(), String> {
    if conn.names.as_deref() != names {
        match names {
            Some(names) => conn.run(command::QUERY, names).await?,
            // no statement unsets a SET NAMES: start the connection over
            None => conn.reset().await?,
        }
        conn.names = names.map(<[u8]>::to_vec);
    }
    conn.track_state_changes().await?;
    if let Some(set) = variables::replay(&conn.variables, variables) {
        conn.run(command::QUERY, set.as_bytes()).await?;
        conn.variables = variables.clone();
    }
    if conn.schema.as_deref() != schema {
        if let Some(schema) = schema {
            conn.run(command::INIT_DB, schema.as_bytes()).await?;
            conn.schema = Some(schema.to_owned());
        }
    }
    Ok(())
}

/// How long a statement or login for `hostgroup` waits for a server while it has none:
/// `failover_wait_ms` for a Galera writer hostgroup (the monitor will place the next
/// writer), no wait for other hostgroups (nobody is coming).
pub(super) fn failover_wait(runtime: &Runtime, hostgroup: u32) -> Duration {
    let writer = runtime
        .galera
        .iter()
        .any(|g| g.writer_hostgroup == hostgroup);
    Duration::from_millis(if writer {
        runtime.proxy.failover_wait_ms
    } else {
        0
    })
}

/// The accounting of a statement that never reached a backend.
fn refused(started: Instant) -> Ran<'static> {
    Ran {
        hostgroup: None,
        from_cache: false,
        server: None,
        duration: started.elapsed(),
        error: true,
    }
}

/// The accounting of a statement answered from the query cache.
fn from_cache(started: Instant) -> Ran<'static> {
    Ran {
        hostgroup: None,
        from_cache: true,
        server: None,
        duration: started.elapsed(),
        error: false,
    }
}

/// A command packet carrying `text` in place of what the client sent.
fn rewritten(cmd: u8, text: &[u8]) -> BytesMut {
    let mut payload = Vec::with_capacity(text.len() + 1);
    payload.push(cmd);
    payload.extend_from_slice(text);
    let mut wire = BytesMut::with_capacity(payload.len() + 8);
    encode_packet(&mut wire, 0, &payload);
    wire
}

/// Whether a command may have written (and so moves the session's last write GTID).
fn writes(cmd: u8, statement: Statement) -> bool {
    match cmd {
        // a prepared statement's meaning comes from its text, as a query's does
        command::QUERY | command::STMT_EXECUTE => !matches!(
            statement,
            Statement::Read | Statement::SetNames | Statement::SetVariables
        ),
        _ => false,
    }
}

/// The session's connection for `target`, which must be there. A function of the two
/// fields rather than a method, so the client connection can be borrowed beside it.
/// Whether a request whose backend failed before answering may run again elsewhere: an
/// autocommit read in text on a reader. It changed nothing (the router sends nothing else
/// there), and the client has seen nothing of its answer. A prepared execute is not
/// retried: its statement would have to be prepared anew on the next reader first.
fn retryable(target: Target, cmd: u8, statement: Statement) -> bool {
    target == Target::Reader && cmd == command::QUERY && statement == Statement::Read
}

pub(super) fn connection_for<'a>(
    primary: &'a mut Option<BackendConn>,
    reader: &'a mut Option<(BackendConn, Replayed)>,
    target: Target,
) -> &'a mut BackendConn {
    match target {
        Target::Primary => primary.as_mut(),
        Target::Reader => reader.as_mut().map(|(b, _)| b),
    }
    .expect("ensured")
}
