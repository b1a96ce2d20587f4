//! A client's session after its login, and the life of each statement in it.
//!
//! [`Session::forward`] is the pipeline every statement takes, a COM_QUERY's text and a
//! prepared statement's COM_STMT_EXECUTE alike: inspect (analysis, rules, firewall),
//! answer from the query cache, decide where it runs (the router's choice, made real),
//! run it (send, relay, retry), account for it (statistics, query log, cache, mirror),
//! and let its connection go back to the pool when nothing holds it. Each step is a
//! child module named after it; the other children hold what the steps share: the
//! session's backend connections, its prepared statements, what it learns from answers.
//!
//! Before the pipeline: `start` (login to the first backend, the final OK) and `commands`
//! (the command loop).

mod account;
mod cached;
mod causal;
mod change_user;
mod client_link;
mod commands;
mod connections;
mod deadlock;
mod decide;
mod inspect;
mod large;
mod learn;
mod mirror;
mod prepare;
mod replay;
mod request;
mod run;
mod start;
mod statements;
mod transaction_log;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::backend::{BackendConn, Login};
use crate::connection::{Connection, RawPacket};
use crate::protocol::constants::{capability, command, error};
use crate::protocol::packets::{ErrPacket, OkPacket};
use crate::protocol::response::{Outcome, ResponseTracker, RowCounts};
use crate::protocol::statement::CURSOR_TYPE_READ_ONLY;
use crate::router::gtid::GtidPosition;
use crate::router::{SessionRouting, Statement, Target};
use crate::rules::variables::Values;
use crate::rules::Analyzer;
use crate::runtime::{Runtime, UserEntry};

use super::admission::AddressSlot;
use super::handshake::{send_err, TlsInfo};
use super::registry::{Listed, Registry};
use super::relay::Capture;
use super::Frontend;
use account::Ran;
use inspect::Inspected;
use request::{Effects, Request};
use start::UserSlot;
use statements::ClientStatements;

pub(in crate::frontend) use start::{refuse_paused, refuse_too_many, run};

pub(super) struct Session {
    frontend: Arc<Frontend>,
    client: Connection,
    peer: SocketAddr,
    user: Arc<UserEntry>,
    user_slot: UserSlot,
    login: Login,
    capabilities: u32,
    scramble: [u8; 20],
    /// The connection to the user's default hostgroup (the writer, for split users).
    primary: Option<BackendConn>,
    /// The connection to the readers, with the session state replayed on it so far.
    reader: Option<(BackendConn, Replayed)>,
    routing: SessionRouting,
    /// The last `SET NAMES` that succeeded, to replay on other connections.
    names: Option<Vec<u8>>,
    /// The followed session variables the session set, to replay on other connections.
    variables: Values,
    /// For read-your-writes: the GTID of this session's last committed write.
    last_write_gtid: GtidPosition,
    tls: Option<TlsInfo>,
    /// Analyses statements; its buffer is reused from one statement to the next.
    analyzer: Analyzer,
    /// This session's line in the processlist.
    listed: Listed,
    /// The session left state on its primary connection: it is not multiplexed.
    bound: bool,
    /// The last statement wrote: its connection serves the next statement too.
    hold_next: bool,
    /// The open transaction's record, for replaying it on another writer connection.
    transaction: transaction_log::TransactionLog,
    /// A Galera node that just answered it is out of the primary component: the next
    /// primary connection is not taken there, while the monitor has yet to see it.
    not_serving: Option<String>,
    /// The client's prepared statements.
    statements: ClientStatements,
    /// The status flags of the primary's last reply (for answers the proxy gives itself).
    server_status: u16,
    /// Status flags to add to the EOFs of the next response (what the proxy knows and the
    /// server answering it cannot: SERVER_STATUS_METADATA_CHANGED after a re-prepare).
    added_status: u16,
    /// How the last relayed response ended.
    last_outcome: Option<Outcome>,
    /// The rows the last relayed response carried and changed.
    last_counts: RowCounts,
    /// Latency histograms of the hostgroups this session used.
    histograms: Vec<(u32, prometheus::Histogram)>,
    /// This connection's share of its address's connection cap.
    _address_slot: AddressSlot,
}

/// Session state applied to a reader connection (its schema is on the connection itself).
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// The hostgroup the connection was taken for.
    hostgroup: u32,
}

/// Why a command could not be completed.
pub(super) enum Failure {
    /// The client is gone or broke the protocol: the session ends.
    Client,
    /// The backend connection failed; the client was told, the session goes on.
    Backend,
    /// The backend connection failed with state only it held (session variables, a
    /// transaction…): the client was told, and its connection is closed, as the server's
    /// would be, so that its driver starts over knowing the state is gone.
    StateLost,
    /// A reader failed before answering a read (the reason): nothing reached the client
    /// yet, the caller sends the read again or tells the client.
    Unanswered(String),
    /// A deadlock rolled back the transaction of a statement that may run again (see
    /// `Session::rerun_after_deadlock`); the server's answer, not yet relayed.
    RolledBack(bytes::BytesMut),
}

impl Session {
    /// The life of one statement, whichever protocol carried it (see the module
    /// documentation).
    pub(super) async fn forward(&mut self, cmd: u8, packet: RawPacket) -> Result<(), Failure> {
        let runtime = self.frontend.shared.load();
        self.count_request(cmd, &packet);
        if cmd == command::PING && self.nothing_open_on_primary() {
            return self.pong().await;
        }
        // inspect
        let Some(mut request) = self.request(&runtime, cmd, packet).await? else {
            return Ok(());
        };
        if let Some(refusal) = request.plan().refusal(&runtime, &self.user.config.name) {
            self.account(&runtime, &request, Ran::refused(&request));
            return self.send_packet_err(1, &refusal).await;
        }
        // a read of session status has rows that describe the client's own link
        let link_status = cmd == command::QUERY && request.plan().analysis.features.session_status;
        let cacheable = (!link_status)
            .then(|| self.cacheable(&runtime, &request))
            .flatten();
        if let Some(cacheable) = &cacheable {
            if self.answer_from_cache(&request, cacheable).await? {
                self.account(&runtime, &request, Ran::from_cache(&request));
                self.multiplex(&runtime, None, request.effects);
                return Ok(());
            }
        }
        let mut capture = match link_status {
            true => Some(Capture::withheld()),
            false => cacheable.as_ref().map(|_| self.capture_for_cache(&runtime)),
        };
        // decide
        let Some(placement) = self.decide(&request).await? else {
            if request.accounted {
                self.account(&runtime, &request, Ran::refused(&request));
            }
            return Ok(());
        };
        // run
        let was_in_transaction = self.routing.in_transaction;
        let finished = self.run(&mut request, placement, capture.as_mut()).await;
        // account
        let answered = !matches!(finished.result, Err(Failure::Client));
        match (cacheable, capture) {
            (_, Some(withheld)) if link_status => {
                if let (Ok(_), Some(answer)) = (&finished.result, withheld.into_bytes()) {
                    self.send_link_status(answer).await?;
                }
            }
            (Some(cacheable), Some(capture)) if matches!(finished.result, Ok(true)) => {
                self.keep_in_cache(&runtime, cacheable, &request, capture.into_bytes());
            }
            _ => {}
        }
        if matches!(cmd, command::QUERY | command::STMT_EXECUTE) && answered {
            self.mirror(&runtime, &request, was_in_transaction);
        }
        let in_transaction = self.routing.in_transaction;
        self.listed.entry.set(|a| {
            a.command = "Sleep";
            a.since = None;
            a.info.clear();
            a.in_transaction = in_transaction;
        });
        if request.accounted {
            let ran = Ran {
                hostgroup: Some(finished.hostgroup),
                from_cache: false,
                server: finished.server.as_ref().map(|s| s.address()),
                duration: request.started.elapsed(),
                error: !matches!(finished.result, Ok(true)),
                rows: self.last_counts,
            };
            self.account(&runtime, &request, ran);
        }
        if let (Some(id), true) = (request.prepared, answered) {
            // also after a lost backend: its cursor or long data went with it
            let at = (finished.target, finished.hostgroup);
            self.after_statement_command(cmd, id, at);
        }
        match finished.result {
            Ok(_) => {
                let ran = finished
                    .server
                    .is_some()
                    .then_some((finished.target, finished.hostgroup));
                self.multiplex(&runtime, ran, request.effects);
                Ok(())
            }
            Err(failure) => Err(failure),
        }
    }

    /// Counts a command in the proxy's statistics as it arrives.
    fn count_request(&self, cmd: u8, packet: &RawPacket) {
        let counters = &self.frontend.counters;
        Registry::count(&counters.questions);
        Registry::count(&counters.commands[usize::from(cmd) % counters.commands.len()]);
        counters
            .bytes_from_clients
            .fetch_add(packet.wire.len() as u64, Ordering::Relaxed);
    }

    /// The first step: what the command is. A COM_QUERY's text is inspected now, as is a
    /// COM_STMT_PREPARE's (for the statement's executes); a COM_STMT_EXECUTE takes its
    /// statement's inspection (walked anew when a reload brought other rules). `None`
    /// when the command was answered here (an unknown statement, a CLOSE…).
    async fn request(
        &mut self,
        runtime: &Runtime,
        cmd: u8,
        packet: RawPacket,
    ) -> Result<Option<Request>, Failure> {
        let mut request = Request {
            cmd,
            started: Instant::now(),
            prepared: None,
            inspected: Inspected::Nothing,
            statement: Statement::Write,
            effects: Effects::of_command(cmd),
            accounted: cmd == command::QUERY,
            cursor: false,
            home: None,
            packet,
        };
        match cmd {
            command::QUERY => {
                let plan = self.inspect(runtime, request.body());
                request.statement = Statement::of(&plan.analysis);
                request.effects = Effects::of(&plan.analysis, request.statement);
                request.inspected = Inspected::Now(plan);
            }
            command::STMT_PREPARE => {
                let plan = self.inspect_for_executes(runtime, request.body());
                request.inspected = Inspected::Prepared(Arc::new(plan));
            }
            command::STMT_EXECUTE
            | command::STMT_FETCH
            | command::STMT_RESET
            | command::STMT_CLOSE
            | command::STMT_SEND_LONG_DATA => {
                let Some(id) = self.statement_command(cmd, &request.packet).await? else {
                    return Ok(None);
                };
                let route = self.statements.route(id);
                request.prepared = Some(id);
                request.home = route.home;
                if cmd == command::STMT_EXECUTE {
                    self.statements
                        .remember_types(id, request.packet.first_frame());
                    let mut plan = route.plan;
                    if !Arc::ptr_eq(&plan.rules, &runtime.rules) {
                        let text = self.statements.by_id[&id].prepared.text.clone();
                        plan = Arc::new(self.inspect_for_executes(runtime, &text));
                        self.statements.replan(id, plan.clone());
                    }
                    request.inspected = Inspected::Prepared(plan);
                    request.statement = route.statement;
                    request.effects = route.effects;
                    request.accounted = true;
                    request.cursor = request
                        .body()
                        .get(4)
                        .is_some_and(|f| f & CURSOR_TYPE_READ_ONLY != 0);
                } else if cmd == command::STMT_SEND_LONG_DATA && route.home.is_none() {
                    // long data waits on the primary until its execute
                    request.home = Some((Target::Primary, self.routing.primary_hostgroup));
                }
            }
            _ => {}
        }
        Ok(Some(request))
    }

    /// Hands a backend connection back to the pool (which resets it for the next user).
    pub(super) async fn release(&self, conn: BackendConn) {
        let settings = self.frontend.shared.load().pool.clone();
        self.frontend.pool.release(conn, &settings).await;
    }

    /// Answers a COM_PING itself, as ProxySQL does, for a session that holds nothing on a
    /// backend connection (autocommit off, as Connector/Python sets it, counts as nothing
    /// until a transaction opens): whatever server the next statement needs, the proxy
    /// finds one, so the client's connection is usable. (A ping sent to a writer that just
    /// died would fail, and drivers that check a connection with a ping before each use
    /// would drop a perfectly good one.) A session with a transaction or state on its
    /// connection pings that connection's server.
    async fn pong(&mut self) -> Result<(), Failure> {
        let ok = OkPacket {
            affected_rows: 0,
            last_insert_id: 0,
            status: self.server_status,
            warnings: 0,
        };
        ok.encode(self.client.write_buffer(), 1);
        self.client.flush().await.map_err(|_| Failure::Client)
    }

    /// Whether the client negotiated CLIENT_DEPRECATE_EOF: its responses are rewritten
    /// (see `protocol::deprecate_eof`).
    pub(super) fn deprecates_eof(&self) -> bool {
        self.capabilities & capability::DEPRECATE_EOF != 0
    }

    /// A whole response the proxy kept in the backend's form (a cached answer, a withheld
    /// one), as this client is to see it.
    pub(super) fn client_form(&self, cmd: u8, wire: Bytes) -> Bytes {
        if !self.deprecates_eof() {
            return wire;
        }
        match ResponseTracker::deprecate_eofs_whole(cmd, &wire) {
            Some(rewritten) => rewritten.freeze(),
            None => wire,
        }
    }

    pub(super) async fn send_error(&mut self, seq: u8, code: error::Code, message: &str) {
        self.frontend.counters.error(code.0);
        send_err(&mut self.client, seq, self.capabilities, code, message).await;
    }

    pub(super) async fn send_packet_err(
        &mut self,
        seq: u8,
        err: &ErrPacket,
    ) -> Result<(), Failure> {
        self.frontend.counters.error(err.code);
        err.encode(self.client.write_buffer(), seq, self.capabilities);
        self.client.flush().await.map_err(|_| Failure::Client)
    }

    async fn close(mut self) {
        if let Some(backend) = self.primary.take() {
            self.release(backend).await;
        }
        if let Some((backend, _)) = self.reader.take() {
            self.release(backend).await;
        }
        self.client.shutdown().await;
    }
}

/// The routing state a fresh session of `user` starts with.
pub(super) fn routing_for(frontend: &Frontend, user: &UserEntry) -> SessionRouting {
    SessionRouting::for_user(
        &frontend.shared.load().galera,
        user.config.default_hostgroup,
        user.config.split_reads,
        user.config.transaction_persistent,
    )
}

/// Commands that must not pass through a proxy: replication streams, server shutdown,
/// and the obsolete internal ones.
pub(super) fn is_refused(cmd: u8) -> bool {
    matches!(
        cmd,
        command::SLEEP
            | command::SHUTDOWN
            | command::CONNECT
            | command::TIME
            | command::DELAYED_INSERT
            | command::BINLOG_DUMP
            | command::TABLE_DUMP
            | command::CONNECT_OUT
            | command::REGISTER_SLAVE
            | command::DAEMON
            | command::BINLOG_DUMP_GTID
    ) || cmd > command::RESET_CONNECTION
}
