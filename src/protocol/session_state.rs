//! The session state an OK packet carries when the connection negotiated
//! `CLIENT_SESSION_TRACK` and the statement changed something tracked
//! (`SERVER_SESSION_STATE_CHANGED`): after the warning count, the info text as a
//! length-encoded string, then the changes as one length-encoded string of entries, each a
//! type byte and its length-encoded data. A tracked system variable's data is its
//! length-encoded name and value.
//!
//! A proxy that adds a variable to the tracked list for its own use (MariaDB's
//! `last_gtid`: the GTID of the write the OK acknowledges, without a statement after it)
//! takes it out again here, so that the client gets the OK the server would have sent it.

use bytes::BytesMut;

use super::codec::{put_lenenc_bytes, put_lenenc_int, DecodeError, Reader};
use super::constants::{header, status};

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
    let info = r.lenenc_bytes("info")?;
    let state = r.lenenc_bytes("session state")?;

    let mut value = None;
    let mut kept = BytesMut::with_capacity(state.len());
    let mut entries = Reader::new(state);
    while !entries.is_empty() {
        let start = state.len() - entries.remaining();
        let kind = entries.u8("session state type")?;
        let data = entries.lenenc_bytes("session state data")?;
        let end = state.len() - entries.remaining();
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
        kept.extend_from_slice(&state[start..end]);
    }
    let Some(value) = value else {
        return Ok(None);
    };

    let mut out = BytesMut::with_capacity(payload.len());
    out.extend_from_slice(&payload[..fixed_end]);
    if kept.is_empty() {
        let cleared = flags & !status::SESSION_STATE_CHANGED;
        out[status_at..status_at + 2].copy_from_slice(&cleared.to_le_bytes());
        // the server writes the info only when there is some, or a state after it
        if !info.is_empty() {
            put_lenenc_bytes(&mut out, info);
        }
    } else {
        put_lenenc_bytes(&mut out, info);
        put_lenenc_int(&mut out, kept.len() as u64);
        out.extend_from_slice(&kept);
    }
    Ok(Some(Taken {
        value,
        payload: out,
    }))
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
    fn truncated_state_is_not_an_error_the_client_sees() {
        let packet = ok(CHANGED, "", &[variable("last_gtid", "0-1-45")]);
        for cut in 0..packet.len() {
            assert_eq!(take_system_variable(&packet[..cut], b"last_gtid"), None);
        }
    }
}
