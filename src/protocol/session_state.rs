//! The session state an OK packet carries when the connection negotiated
//! `CLIENT_SESSION_TRACK` and the statement changed something tracked
//! (`SERVER_SESSION_STATE_CHANGED`): after the warning count, the info text as a
//! length-encoded string, then the changes as one length-encoded string of entries, each a
//! type byte and its length-encoded data. A tracked system variable's data is its
//! length-encoded name and value.
//!
//! A proxy that adds a variable to the tracked list for its own use (MariaDB's
//! `last_gtid`: the GTID of the write the OK acknowledges, without a statement after it)
//! takes it out again here, so that the client gets the OK the server would have sent it;
//! and where its backend connection negotiated session tracking for that reason but the
//! client did not, it turns each OK into the form such a client reads.

use bytes::BytesMut;

use super::codec::{put_lenenc_bytes, put_lenenc_int, DecodeError, Reader};
use super::constants::{header, status};
use super::frame::{encode_packet, FrameHeader, HEADER_LEN};
use super::packets::OkPacket;

/// `SESSION_TRACK_SYSTEM_VARIABLES`: the entry type of a tracked system variable.
const SYSTEM_VARIABLE: u8 = 0;

/// A tracked system variable taken out of an OK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Its value, as the server reported it.
    pub value: Vec<u8>,
    /// The OK packet's payload without that entry; when no other change remains, without
    /// the state-changed flag and the state, as the server sends an OK that changed nothing.
    pub payload: BytesMut,
}

/// Takes the system variable `name` out of the session state of the OK packet `payload`
/// (of a connection with session tracking). `None` when the packet is not such an OK or
/// reports no change of that variable: the payload is then left as it is.
pub fn take_system_variable(payload: &[u8], name: &[u8]) -> Option<Taken> {
    take(payload, name).ok().flatten()
}

fn take(payload: &[u8], name: &[u8]) -> Result<Option<Taken>, DecodeError> {
    let Some(ok) = ChangedOk::parse(payload)? else {
        return Ok(None);
    };
    let mut value = None;
    let mut kept = BytesMut::with_capacity(ok.state.len());
    let mut entries = Reader::new(ok.state);
    while !entries.is_empty() {
        let start = ok.state.len() - entries.remaining();
        let kind = entries.u8("session state type")?;
        let data = entries.lenenc_bytes("session state data")?;
        let end = ok.state.len() - entries.remaining();
        if kind == SYSTEM_VARIABLE && value.is_none() {
            let mut variable = Reader::new(data);
            if variable
                .lenenc_bytes("variable name")?
                .eq_ignore_ascii_case(name)
            {
                value = Some(variable.lenenc_bytes("variable value")?.to_vec());
                continue;
            }
        }
        kept.extend_from_slice(&ok.state[start..end]);
    }
    let Some(value) = value else {
        return Ok(None);
    };
    let payload = match kept.is_empty() {
        true => ok.without_state(),
        false => ok.with_state(&kept),
    };
    Ok(Some(Taken { value, payload }))
}

/// The OK packet `payload` (of a connection with session tracking) as MariaDB sends it to
/// a client without: the info text (length-encoded, as MariaDB writes it either way; only
/// when there is some), no session state, no state-changed flag. `None` when it is that
/// already, or is no such OK.
pub fn without_session_state(payload: &[u8]) -> Option<BytesMut> {
    // without a state change, the info alone is the same in both forms
    Some(ChangedOk::parse(payload).ok()??.without_state())
}

/// An OK packet that reports session state changes, in its parts.
struct ChangedOk<'a> {
    payload: &'a [u8],
    /// Where the status flags are.
    status_at: usize,
    flags: u16,
    /// Where the fixed fields (through the warning count) end.
    fixed_end: usize,
    info: &'a [u8],
    /// The entries of the session state.
    state: &'a [u8],
}

impl<'a> ChangedOk<'a> {
    /// `None` when `payload` is no OK packet, or one without state changes.
    fn parse(payload: &'a [u8]) -> Result<Option<ChangedOk<'a>>, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("OK header")? != header::OK {
            return Ok(None);
        }
        r.lenenc_int("affected rows")?;
        r.lenenc_int("last insert id")?;
        let status_at = payload.len() - r.remaining();
        let flags = r.u16("status flags")?;
        r.u16("warnings")?;
        if flags & status::SESSION_STATE_CHANGED == 0 {
            return Ok(None);
        }
        let fixed_end = payload.len() - r.remaining();
        // a server sends both after the flag; read what is there
        let mut next = |what| match r.is_empty() {
            true => Ok(&[][..]),
            false => r.lenenc_bytes(what),
        };
        let info = next("info")?;
        let state = next("session state")?;
        Ok(Some(ChangedOk {
            payload,
            status_at,
            flags,
            fixed_end,
            info,
            state,
        }))
    }

    /// The OK as the server sends one that changed nothing: no state-changed flag, no
    /// state, the info only when there is some.
    fn without_state(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.payload.len());
        out.extend_from_slice(&self.payload[..self.fixed_end]);
        let cleared = self.flags & !status::SESSION_STATE_CHANGED;
        out[self.status_at..self.status_at + 2].copy_from_slice(&cleared.to_le_bytes());
        if !self.info.is_empty() {
            put_lenenc_bytes(&mut out, self.info);
        }
        out
    }

    /// The OK with `state` (entries) in place of its own.
    fn with_state(&self, state: &[u8]) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.payload.len());
        out.extend_from_slice(&self.payload[..self.fixed_end]);
        put_lenenc_bytes(&mut out, self.info);
        put_lenenc_int(&mut out, state.len() as u64);
        out.extend_from_slice(state);
        out
    }
}

/// What the proxy changes in the OK packets of a response on their way to the client.
#[derive(Debug, Clone, Default)]
pub struct OkEdits {
    /// Take the tracked `last_gtid` out of each OK (the proxy asked for it).
    pub take_gtid: bool,
    /// The client did not negotiate session tracking; its backend connection did.
    pub plain: bool,
    /// The last `last_gtid` taken: the GTID of the response's last commit.
    pub gtid: Option<Vec<u8>>,
    /// Status flags of the response's final packet when it was an OK the edits changed.
    pub final_status: Option<u16>,
}

impl OkEdits {
    /// Whether there is anything to change.
    pub fn any(&self) -> bool {
        self.take_gtid || self.plain
    }

    /// Edits the OK frames at `oks` (offsets of their headers in `batch`, in order; each a
    /// whole packet); `final_at`, where the response's final frame starts if `batch` holds
    /// it. Returns the batch unchanged when nothing changed.
    pub fn apply(&mut self, batch: BytesMut, oks: &[usize], final_at: Option<usize>) -> BytesMut {
        let mut out: Option<BytesMut> = None;
        let mut copied = 0;
        for &at in oks {
            let Some(h) = FrameHeader::parse(&batch[at..]) else {
                continue;
            };
            let frame = &batch[at..at + h.frame_len()];
            let Some(payload) = self.edit(&frame[HEADER_LEN..]) else {
                continue;
            };
            if Some(at) == final_at {
                self.final_status = OkPacket::decode(&payload).ok().map(|ok| ok.status);
            }
            let out = out.get_or_insert_with(|| BytesMut::with_capacity(batch.len()));
            out.extend_from_slice(&batch[copied..at]);
            encode_packet(out, h.seq, &payload);
            copied = at + h.frame_len();
        }
        match out {
            Some(mut out) => {
                out.extend_from_slice(&batch[copied..]);
                out
            }
            None => batch,
        }
    }

    /// One OK's new payload, or `None` to leave it.
    fn edit(&mut self, payload: &[u8]) -> Option<BytesMut> {
        let mut edited = None;
        if self.take_gtid {
            if let Some(taken) = take_system_variable(payload, b"last_gtid") {
                self.gtid = Some(taken.value);
                edited = Some(taken.payload);
            }
        }
        if self.plain {
            if let Some(plain) = without_session_state(edited.as_deref().unwrap_or(payload)) {
                edited = Some(plain);
            }
        }
        edited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(name: &str, value: &str) -> Vec<u8> {
        let mut data = BytesMut::new();
        put_lenenc_bytes(&mut data, name.as_bytes());
        put_lenenc_bytes(&mut data, value.as_bytes());
        let mut entry = BytesMut::new();
        entry.extend_from_slice(&[SYSTEM_VARIABLE]);
        put_lenenc_bytes(&mut entry, &data);
        entry.to_vec()
    }

    fn ok(flags: u16, info: &str, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[header::OK, 1, 0]);
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        if flags & status::SESSION_STATE_CHANGED != 0 {
            put_lenenc_bytes(&mut out, info.as_bytes());
            put_lenenc_bytes(&mut out, &entries.concat());
        } else if !info.is_empty() {
            put_lenenc_bytes(&mut out, info.as_bytes());
        }
        out.to_vec()
    }

    const CHANGED: u16 = status::AUTOCOMMIT | status::SESSION_STATE_CHANGED;

    #[test]
    fn the_only_change_leaves_an_ok_that_changed_nothing() {
        let packet = ok(CHANGED, "", &[variable("last_gtid", "0-1-42")]);
        let taken = take_system_variable(&packet, b"last_gtid").unwrap();
        assert_eq!(taken.value, b"0-1-42");
        assert_eq!(&taken.payload[..], &ok(status::AUTOCOMMIT, "", &[])[..]);
    }

    #[test]
    fn an_info_text_stays() {
        let info = "Records: 3  Duplicates: 0  Warnings: 0";
        let packet = ok(CHANGED, info, &[variable("last_gtid", "0-1-43")]);
        let taken = take_system_variable(&packet, b"last_gtid").unwrap();
        assert_eq!(&taken.payload[..], &ok(status::AUTOCOMMIT, info, &[])[..]);
    }

    #[test]
    fn other_changes_stay_in_their_order() {
        let autocommit = variable("autocommit", "OFF");
        let zone = variable("time_zone", "+01:00");
        let packet = ok(
            CHANGED,
            "",
            &[
                autocommit.clone(),
                variable("LAST_GTID", "0-1-44"),
                zone.clone(),
            ],
        );
        let taken = take_system_variable(&packet, b"last_gtid").unwrap();
        assert_eq!(taken.value, b"0-1-44");
        assert_eq!(
            &taken.payload[..],
            &ok(CHANGED, "", &[autocommit, zone])[..]
        );
    }

    #[test]
    fn packets_without_the_variable_are_left_alone() {
        let other = ok(CHANGED, "", &[variable("autocommit", "ON")]);
        assert_eq!(take_system_variable(&other, b"last_gtid"), None);
        let unchanged = ok(status::AUTOCOMMIT, "", &[]);
        assert_eq!(take_system_variable(&unchanged, b"last_gtid"), None);
        let eof = [header::EOF, 0, 0, 2, 0];
        assert_eq!(take_system_variable(&eof, b"last_gtid"), None);
    }

    #[test]
    fn a_client_without_tracking_gets_the_info_and_no_state() {
        let info = "Rows matched: 1  Changed: 1  Warnings: 0";
        let packet = ok(CHANGED, info, &[variable("autocommit", "OFF")]);
        let plain = without_session_state(&packet).unwrap();
        assert_eq!(&plain[..], &ok(status::AUTOCOMMIT, info, &[])[..]);
        let packet = ok(CHANGED, "", &[variable("autocommit", "OFF")]);
        let plain = without_session_state(&packet).unwrap();
        assert_eq!(&plain[..], &ok(status::AUTOCOMMIT, "", &[])[..]);
        // nothing to change
        assert_eq!(
            without_session_state(&ok(status::AUTOCOMMIT, info, &[])),
            None
        );
        assert_eq!(
            without_session_state(&ok(status::AUTOCOMMIT, "", &[])),
            None
        );
    }

    #[test]
    fn edits_rewrite_the_ok_frames_of_a_batch_and_leave_the_rest() {
        let mut batch = BytesMut::new();
        let eof = [header::EOF, 0, 0, 2, 0];
        encode_packet(&mut batch, 1, &eof);
        let first_ok = batch.len();
        let ok1 = ok(CHANGED, "", &[variable("last_gtid", "0-1-7")]);
        encode_packet(&mut batch, 2, &ok1);
        let second_ok = batch.len();
        let ok2 = ok(
            CHANGED,
            "",
            &[variable("last_gtid", "0-1-8"), variable("autocommit", "ON")],
        );
        encode_packet(&mut batch, 3, &ok2);
        let mut edits = OkEdits {
            take_gtid: true,
            plain: true,
            ..OkEdits::default()
        };
        let out = edits.apply(batch, &[first_ok, second_ok], Some(second_ok));
        let mut expected = BytesMut::new();
        encode_packet(&mut expected, 1, &eof);
        encode_packet(&mut expected, 2, &ok(status::AUTOCOMMIT, "", &[]));
        encode_packet(&mut expected, 3, &ok(status::AUTOCOMMIT, "", &[]));
        assert_eq!(out, expected);
        assert_eq!(edits.gtid.as_deref(), Some(&b"0-1-8"[..]));
        assert_eq!(edits.final_status, Some(status::AUTOCOMMIT));
    }

    #[test]
    fn truncated_state_is_not_an_error_the_client_sees() {
        let packet = ok(CHANGED, "", &[variable("last_gtid", "0-1-45")]);
        for cut in 0..packet.len() {
            assert_eq!(take_system_variable(&packet[..cut], b"last_gtid"), None);
        }
    }
}
