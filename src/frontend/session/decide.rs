//! Where a statement runs. The router decides (`SessionRouting::wish`, then `settle`,
//! plain values in and out); this step only makes its wish real: it finds a connection of
//! the hostgroup wished for, asks whether that server has applied what the session must
//! see (read-your-writes), reports what it found, and tells the client when the answer is
//! that the statement runs nowhere.

use crate::protocol::constants::error;
use crate::protocol::packets::ErrPacket;
use crate::router::{Ask, Found, Placement, Statement, Target, Wish};

use super::request::Request;
use super::{Failure, Session};

impl Session {
    /// The connection the request runs on, there and in step with the session. `None`
    /// when the client was already told why there is none.
    pub(super) async fn decide(
        &mut self,
        request: &Request,
    ) -> Result<Option<(Target, u32)>, Failure> {
        if let Some(at) = self.routing.diagnostics_at {
            if !self.has_connection(at) {
                self.routing.diagnostics_at = None; // lost with its connection
            }
        }
        let wish = self.routing.wish(Ask {
            statement: request.statement,
            ruled: request.plan().decision.hostgroup,
            held: request.home,
        });
        let primary_before = self.primary.as_ref().map(|p| p.thread_id);
        let mut why_not = None;
        let found = match wish {
            Wish::Primary | Wish::Held(Target::Primary, _) => Found::Ready,
            Wish::Held(Target::Reader, hostgroup) => {
                match self.reader.as_ref().map(|(_, r)| r.hostgroup) {
                    Some(held) if held == hostgroup => Found::Ready,
                    _ => {
                        why_not = Some(ErrPacket::new(
                            error::LOST_BACKEND,
                            format!("Lost the connection to hostgroup {hostgroup} that the statement must run on (its cursor, transaction or warnings are there)"),
                        ));
                        Found::Unavailable
                    }
                }
            }
            Wish::Elsewhere { hostgroup, .. } => match self.ensure_reader(hostgroup).await {
                Ok(()) if self.reader_has_our_writes().await => Found::Ready,
                Ok(()) => Found::Behind,
                Err(err) => {
                    why_not = Some(err);
                    Found::Unavailable
                }
            },
        };
        match self.routing.settle(wish, found) {
            Placement::Run(Target::Reader, hostgroup) => Ok(Some((Target::Reader, hostgroup))),
            Placement::Run(Target::Primary, hostgroup) => match self.ensure_primary().await {
                Ok(()) => {
                    if self.routing.wants_clean_diagnostics(request.statement)
                        || (request.statement == Statement::Diagnostics
                            && self.routing.diagnostics_at.is_some()
                            && self.primary.as_ref().map(|p| p.thread_id) != primary_before)
                    {
                        self.clean_diagnostics().await;
                    }
                    Ok(Some((Target::Primary, hostgroup)))
                }
                Err(Failure::Client) => Err(Failure::Client),
                Err(_) => Ok(None),
            },
            Placement::Refused => {
                let err = match (wish, why_not) {
                    (
                        Wish::Elsewhere {
                            by_rule: false,
                            hostgroup,
                        },
                        _,
                    ) => ErrPacket::new(
                        error::NO_BACKEND,
                        format!("no reader of hostgroup {hostgroup} can serve this read"),
                    ),
                    (_, Some(err)) => err,
                    (_, None) => ErrPacket::new(error::NO_BACKEND, "no backend for this statement"),
                };
                self.send_packet_err(1, &err).await?;
                Ok(None)
            }
        }
    }

    /// Empties the diagnostics area of the primary connection before a statement that
    /// asks what the session's statement before it left, when that statement left
    /// nothing: the connection may hold what an older statement (maybe another
    /// session's) left. Only a statement that opens a table clears the server's list.
    async fn clean_diagnostics(&mut self) {
        let Some(primary) = self.primary.as_mut() else {
            return;
        };
        match primary.query_text(CLEAN_DIAGNOSTICS).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(peer = %self.peer, error = %err, "cannot empty the diagnostics area")
            }
            Err(why) => {
                tracing::warn!(peer = %self.peer, error = %why, "cannot empty the diagnostics area")
            }
        }
    }
}

/// A statement that opens a table (only those clear the server's list of warnings), reads
/// nothing, leaves no warning, and sets what a read sets: `ROW_COUNT()` -1, `FOUND_ROWS()`
/// 0.
const CLEAN_DIAGNOSTICS: &str = "SELECT 1 FROM information_schema.COLLATIONS WHERE 0";
