//! Where a statement runs. The router decides (`SessionRouting::wish`, then `settle`,
//! plain values in and out); this step only makes its wish real: it finds a connection of
//! the hostgroup wished for, asks whether that server has applied what the session must
//! see (read-your-writes), reports what it found, and tells the client when the answer is
//! that the statement runs nowhere.

use crate::protocol::constants::error;
use crate::protocol::packets::ErrPacket;
use crate::router::{Ask, Found, Placement, Target, Wish};

use super::request::Request;
use super::{Failure, Session};

impl Session {
    /// The connection the request runs on, there and in step with the session. `None`
    /// when the client was already told why there is none.
    pub(super) async fn decide(
        &mut self,
        request: &Request,
    ) -> Result<Option<(Target, u32)>, Failure> {
        let wish = self.routing.wish(Ask {
            statement: request.statement,
            ruled: request.plan().decision.hostgroup,
            held: request.home,
        });
        let mut why_not = None;
        let found = match wish {
            Wish::Primary | Wish::Held(Target::Primary, _) => Found::Ready,
            Wish::Held(Target::Reader, hostgroup) => {
                match self.reader.as_ref().map(|(_, r)| r.hostgroup) {
                    Some(held) if held == hostgroup => Found::Ready,
                    _ => {
                        why_not = Some(ErrPacket::new(
                            error::LOST_BACKEND,
                            format!("Lost the connection to hostgroup {hostgroup} that held the statement's cursor"),
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
                Ok(()) => Ok(Some((Target::Primary, hostgroup))),
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
}
