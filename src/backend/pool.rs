//! Choosing a server of a hostgroup and getting a logged-in connection to it.

use crate::protocol::constants::error;
use crate::protocol::packets::ErrPacket;
use crate::runtime::Shared;

use super::conn::{BackendConn, BackendError, Login, Slot};

/// Why no backend connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("hostgroup {0} has no servers")]
    NoServers(u32),
    #[error("no server of hostgroup {hostgroup} is available; {}", reasons.join("; "))]
    Unavailable {
        hostgroup: u32,
        reasons: Vec<String>,
    },
    #[error("every server of hostgroup {0} is at its max_connections")]
    Full(u32),
    #[error("no server of hostgroup {hostgroup} could be reached; last error: {last}")]
    Unreachable { hostgroup: u32, last: BackendError },
    /// A server answered the login with an error, which the client should see as is.
    #[error("{0}")]
    Refused(ErrPacket),
}

impl AcquireError {
    /// The ERR packet a client gets for this failure.
    pub fn to_err_packet(&self) -> ErrPacket {
        match self {
            AcquireError::Refused(err) => err.clone(),
            AcquireError::Full(_) => ErrPacket::new(error::TOO_MANY_CONNECTIONS, self.to_string()),
            _ => ErrPacket::new(error::NO_BACKEND, self.to_string()),
        }
    }
}

/// See the module documentation of [`crate::backend`].
#[derive(Debug, Default)]
pub struct Pool;

impl Pool {
    pub fn new() -> Pool {
        Pool
    }

    /// A backend connection to a server of `hostgroup`, logged in per `login`. Servers are
    /// tried in weighted order; one that cannot be reached is skipped, one that refuses the
    /// login ends the attempt (another server of the group would refuse it too).
    pub async fn acquire(
        &self,
        shared: &Shared,
        hostgroup: u32,
        login: &Login,
    ) -> Result<BackendConn, AcquireError> {
        let runtime = shared.load();
        let candidates = shared.candidates(hostgroup);
        if candidates.is_empty() {
            let reasons = shared
                .membership()
                .and_then(|m| m.unavailable.get(&hostgroup).cloned())
                .unwrap_or_default();
            return Err(if reasons.is_empty() {
                AcquireError::NoServers(hostgroup)
            } else {
                AcquireError::Unavailable { hostgroup, reasons }
            });
        }
        let timeout = std::time::Duration::from_millis(runtime.proxy.connect_timeout_ms);
        let mut last = None;
        for server in candidates {
            let (slot, open) = Slot::take(&server);
            if open >= server.max_connections {
                continue;
            }
            match BackendConn::open(slot, login, runtime.backend_tls.as_ref(), timeout).await {
                Ok(conn) => return Ok(conn),
                Err(BackendError::Refused(_, err)) => return Err(AcquireError::Refused(err)),
                Err(e) => {
                    tracing::warn!(server = %server.address(), hostgroup, error = %e, "backend connection failed");
                    last = Some(e);
                }
            }
        }
        match last {
            Some(last) => Err(AcquireError::Unreachable { hostgroup, last }),
            None => Err(AcquireError::Full(hostgroup)),
        }
    }

    /// Gives a connection back. Without pooling yet, that closes it.
    pub fn release(&self, conn: BackendConn) {
        drop(conn);
    }
}
