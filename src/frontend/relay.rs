//! Relaying one response from a backend to the client: the bytes as read, in the batches
//! they arrived, until the response tracker says it is complete. A backend that stops
//! answering because the monitor found it unreachable is abandoned, not waited for.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::connection::Connection;
use crate::protocol::frame::{FrameHeader, HEADER_LEN};
use crate::protocol::response::{Outcome, Progress, ResponseTracker, TrackError};
use crate::shared::Shared;

/// Resolves when the monitor declares `address` unreachable (a hung or dead server), so
/// that a statement in flight there ends with an error instead of hanging. It waits on its
/// own connection's wake-up (see `runtime::Evictions`).
pub(super) struct Eviction<'a> {
    shared: &'a Shared,
    address: &'a str,
    notify: &'a Notify,
}

impl<'a> Eviction<'a> {
    pub(super) fn new(shared: &'a Shared, address: &'a str, notify: &'a Notify) -> Self {
        Eviction {
            shared,
            address,
            notify,
        }
    }

    pub(super) async fn wait(&self) {
        loop {
            let woken = self.notify.notified();
            tokio::pin!(woken);
            // listening before looking: a verdict published in between still wakes us
            woken.as_mut().enable();
            if self.shared.is_unreachable(self.address) {
                return;
            }
            woken.await;
        }
    }
}

pub(super) enum RelayError {
    /// Writing to the client failed.
    Client,
    /// The backend failed or broke the protocol (the reason, for the client's error).
    Backend(String),
    /// The backend failed before any byte of its answer reached the client: the request
    /// may be sent elsewhere, if running it twice does no harm.
    Unanswered(String),
    /// A Galera node refused the request because it is out of the primary component:
    /// ERR 1047, "WSREP has not yet prepared node for application use" (it left the
    /// component, or has not joined it yet). That refusal comes before anything runs, so
    /// the request may go to another node whatever it is. (Not so ERR 1180 "… Not
    /// connected to Primary Component" on a commit: the write set may have reached the
    /// other nodes, which commit it; that one is relayed.) The answer (its wire bytes) was
    /// kept from the client, for the caller to relay when it does not send the request
    /// elsewhere.
    NotServing(BytesMut),
    /// ERR 1213 (ER_LOCK_DEADLOCK) was the whole answer: the server rolled the statement's
    /// transaction back, so the statement ran to no effect and may run again. The answer
    /// was kept from the client, for the caller to relay when it does not.
    Deadlock(BytesMut),
}

/// ER_LOCK_DEADLOCK: InnoDB chose the statement's transaction as a deadlock's victim, or
/// Galera aborted it for a conflicting write set (certification, or brute force).
const DEADLOCK: u16 = 1213;

/// Whether `err` is a Galera node refusing a request unrun (see
/// [`RelayError::NotServing`]).
pub(super) fn not_serving(err: &crate::protocol::packets::ErrPacket) -> bool {
    err.code == 1047 && err.message.starts_with("WSREP has not yet prepared node")
}

impl From<TrackError> for RelayError {
    fn from(e: TrackError) -> Self {
        RelayError::Backend(e.to_string())
    }
}

/// A copy of a response taken as it is relayed (for the query cache). It stops copying,
/// and says so, once the response grows past `limit`. A withheld capture takes the
/// response instead of the client, whole, for the session to change before it sends it.
pub(super) struct Capture {
    bytes: BytesMut,
    limit: usize,
    overflowed: bool,
    withheld: bool,
}

impl Capture {
    pub(super) fn new(limit: usize) -> Capture {
        Capture {
            bytes: BytesMut::new(),
            limit,
            overflowed: false,
            withheld: false,
        }
    }

    /// A capture that keeps the whole response from the client (only for small ones).
    pub(super) fn withheld() -> Capture {
        Capture {
            withheld: true,
            ..Capture::new(usize::MAX)
        }
    }

    fn push(&mut self, batch: &[u8]) {
        if self.overflowed || self.bytes.len() + batch.len() > self.limit {
            self.overflowed = true;
            self.bytes = BytesMut::new();
            return;
        }
        self.bytes.extend_from_slice(batch);
    }

    /// The whole response, unless it grew past the limit.
    pub(super) fn into_bytes(self) -> Option<Bytes> {
        (!self.overflowed).then(|| self.bytes.freeze())
    }
}

/// Copies one response from `backend` to `client`, batch by batch as it was read, until
/// `tracker` says it is complete; and into `capture`, if there is one. The batch that ends
/// the response is queued, not sent: the caller flushes the client when it has learnt
/// what it needs from the response (a write's GTID, with `consistency = "global"`).
pub(super) async fn relay(
    client: &mut Connection,
    backend: &mut Connection,
    tracker: &mut ResponseTracker,
    max_packet: usize,
    eviction: &Eviction<'_>,
    received: &AtomicU64,
    mut capture: Option<&mut Capture>,
) -> Result<Outcome, RelayError> {
    let mut answered = false;
    let lost = |answered: bool, why: String| match answered {
        true => RelayError::Backend(why),
        false => RelayError::Unanswered(why),
    };
    loop {
        let buf = backend.buffered();
        let scan = tracker.scan(buf)?;
        buf.reserve(scan.missing);
        if scan.complete > 0 {
            tracker.mark(&mut buf[..scan.complete]);
            received.fetch_add(scan.complete as u64, Ordering::Relaxed);
            let batch = tracker.apply_edits(buf.split_to(scan.complete));
            let refused = matches!(scan.end, Some(Progress::Done(o)) if o.error);
            if !answered && refused {
                match tracker.error() {
                    Some(err) if not_serving(err) => return Err(RelayError::NotServing(batch)),
                    Some(err) if err.code == DEADLOCK => return Err(RelayError::Deadlock(batch)),
                    _ => {}
                }
            }
            // a capture keeps the backend's form: the cache serves clients of either kind
            if let Some(capture) = capture.as_deref_mut() {
                capture.push(&batch);
            }
            let batch = tracker.deprecate_eofs(batch);
            if capture.as_ref().is_some_and(|c| c.withheld) {
                // the session sends it, from the capture
            } else if matches!(scan.end, Some(Progress::Done(_))) {
                client.queue_wire(&batch);
            } else {
                client
                    .write_wire(&batch)
                    .await
                    .map_err(|_| RelayError::Client)?;
            }
            answered = true;
        }
        match scan.end {
            Some(Progress::Done(mut outcome)) => {
                if let Some(flags) = tracker.edits().and_then(|e| e.final_status) {
                    outcome.status = Some(flags);
                }
                return Ok(outcome);
            }
            Some(Progress::LocalInfile) => {
                let lag = tracker.client_seq_lag();
                let next_seq = relay_file(client, backend, max_packet, lag).await?;
                tracker.file_sent(next_seq);
                continue;
            }
            _ => {}
        }
        let filled = tokio::select! {
            filled = backend.fill() => filled,
            _ = eviction.wait() => {
                return Err(lost(answered, "the monitor found the server unreachable".into()));
            }
        };
        match filled {
            Ok(0) => return Err(lost(answered, "connection closed by the server".into())),
            Ok(_) => {}
            Err(e) => return Err(lost(answered, e.to_string())),
        }
    }
}

/// LOAD DATA LOCAL INFILE: forwards the client's file packets to the backend up to and
/// including the empty packet that ends the file, their sequence ids raised by `lag` (the
/// packets a DEPRECATE_EOF client was not sent); returns the backend's sequence id that
/// follows.
async fn relay_file(
    client: &mut Connection,
    backend: &mut Connection,
    max_packet: usize,
    lag: u8,
) -> Result<u8, RelayError> {
    loop {
        let sent = stream_packet(client, backend, max_packet, lag)
            .await
            .map_err(|e| match e {
                StreamError::Backend(why) => RelayError::Backend(why),
                _ => RelayError::Client,
            })?;
        if sent.payload_len == 0 {
            return Ok(sent.last_seq.wrapping_add(1));
        }
    }
}

/// Why streaming a client packet to a backend stopped.
#[derive(Debug)]
pub(super) enum StreamError {
    /// The packet grew past `max_allowed_packet`; part of it already went to the backend.
    /// `next_seq` follows the last frame header seen.
    TooLarge { next_seq: u8 },
    /// The client went away mid-packet.
    Client,
    /// The backend failed mid-packet.
    Backend(String),
}

/// What [`stream_packet`] forwarded.
pub(super) struct Streamed {
    pub payload_len: usize,
    pub last_seq: u8,
}

/// Forwards the client packet at the start of `client`'s buffer to `backend`, bytes as
/// they arrive, frame after frame, holding no more than a read buffer of it, each frame's
/// sequence id raised by `seq_lag` (reported so, too). The running total is checked
/// against `max_packet` at every frame header.
pub(super) async fn stream_packet(
    client: &mut Connection,
    backend: &mut Connection,
    max_packet: usize,
    seq_lag: u8,
) -> Result<Streamed, StreamError> {
    let mut total = 0usize;
    loop {
        while client.buffered().len() < HEADER_LEN {
            fill_client(client).await?;
        }
        let buffered = client.buffered();
        buffered[HEADER_LEN - 1] = buffered[HEADER_LEN - 1].wrapping_add(seq_lag);
        let header = FrameHeader::parse(buffered).expect("4 bytes are buffered");
        total += header.payload_len;
        if total > max_packet {
            return Err(StreamError::TooLarge {
                next_seq: header.seq.wrapping_add(1),
            });
        }
        let mut left = header.frame_len();
        while left > 0 {
            if client.buffered().is_empty() {
                fill_client(client).await?;
            }
            let n = left.min(client.buffered().len());
            let chunk = client.buffered().split_to(n);
            backend
                .write_wire(&chunk)
                .await
                .map_err(|e| StreamError::Backend(e.to_string()))?;
            left -= n;
        }
        if !header.is_continued() {
            return Ok(Streamed {
                payload_len: total,
                last_seq: header.seq,
            });
        }
    }
}

async fn fill_client(client: &mut Connection) -> Result<(), StreamError> {
    match client.fill().await {
        Ok(0) | Err(_) => Err(StreamError::Client),
        Ok(_) => Ok(()),
    }
}
