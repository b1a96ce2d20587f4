//! The generic response packets: OK, ERR and EOF.
//!
//! The proxy decodes these only where a response ends or state changes (status flags of the
//! last packet of a result, errors of a backend login); everything else is forwarded as
//! bytes.

use bytes::{BufMut, BytesMut};

use super::codec::{put_lenenc_int, DecodeError, Reader};
use super::constants::{capability, error::Code, header};
use super::frame::encode_packet;

/// The fields of an OK packet the proxy acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

impl OkPacket {
    /// Decodes an OK packet (header `0x00`, or `0xFE` where it replaces EOF).
    pub fn decode(payload: &[u8]) -> Result<OkPacket, DecodeError> {
        let mut r = Reader::new(payload);
        match r.u8("OK header")? {
            header::OK | header::EOF => {}
            _ => return Err(DecodeError::Invalid("OK header")),
        }
        Ok(OkPacket {
            affected_rows: r.lenenc_int("affected rows")?,
            last_insert_id: r.lenenc_int("last insert id")?,
            status: r.u16("status flags")?,
            warnings: r.u16("warnings")?,
        })
    }

    /// Appends this OK packet (for a PROTOCOL_41 client) as sequence id `seq`.
    pub fn encode(&self, out: &mut BytesMut, seq: u8) -> u8 {
        let mut payload = BytesMut::with_capacity(16);
        payload.put_u8(header::OK);
        put_lenenc_int(&mut payload, self.affected_rows);
        put_lenenc_int(&mut payload, self.last_insert_id);
        payload.put_u16_le(self.status);
        payload.put_u16_le(self.warnings);
        encode_packet(out, seq, &payload)
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    pub sql_state: String,
    pub message: String,
}

impl ErrPacket {
    pub fn new(code: Code, message: impl Into<String>) -> ErrPacket {
        ErrPacket {
            code: code.0,
            sql_state: code.1.to_string(),
            message: message.into(),
        }
    }

    /// Decodes an ERR packet as sent to a PROTOCOL_41 client (the SQLSTATE marker is
    /// optional: servers omit it for some early errors).
    pub fn decode(payload: &[u8]) -> Result<ErrPacket, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("ERR header")? != header::ERR {
            return Err(DecodeError::Invalid("ERR header"));
        }
        let code = r.u16("error code")?;
        let mut rest = r.rest();
        let mut sql_state = "HY000".to_string();
        if rest.first() == Some(&b'#') && rest.len() >= 6 {
            sql_state = String::from_utf8_lossy(&rest[1..6]).into_owned();
            rest = &rest[6..];
        }
        Ok(ErrPacket {
            code,
            sql_state,
            message: String::from_utf8_lossy(rest).into_owned(),
        })
    }

    /// Appends this ERR packet as sequence id `seq` and returns the next sequence id.
    pub fn encode(&self, out: &mut BytesMut, seq: u8, client_capabilities: u32) -> u8 {
        let mut payload = BytesMut::with_capacity(9 + self.message.len());
        payload.put_u8(header::ERR);
        payload.put_u16_le(self.code);
        if client_capabilities & capability::PROTOCOL_41 != 0 {
            payload.put_u8(b'#');
            let mut state = [b'H', b'Y', b'0', b'0', b'0'];
            for (dst, src) in state.iter_mut().zip(self.sql_state.bytes()) {
                *dst = src;
            }
            payload.put_slice(&state);
        }
        payload.put_slice(self.message.as_bytes());
        encode_packet(out, seq, &payload)
    }
}

impl std::fmt::Display for ErrPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code, self.sql_state, self.message
        )
    }
}

/// Whether a payload is an EOF packet (as opposed to a row that happens to start with
/// `0xFE`, which is a length prefix of a value of 16 MiB or more and so is long).
pub fn is_eof(payload_first_byte: Option<u8>, payload_len: usize) -> bool {
    payload_first_byte == Some(header::EOF) && payload_len < 9
}

/// The warning count of an EOF packet, if it carries one (PROTOCOL_41).
pub fn eof_warnings(payload: &[u8]) -> Option<u16> {
    let mut r = Reader::new(payload);
    r.skip(1, "EOF").ok()?;
    r.u16("EOF warnings").ok()
}

/// Status flags of an EOF packet, if it carries them (PROTOCOL_41).
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    let mut r = Reader::new(payload);
    r.skip(3, "EOF").ok()?;
    r.u16("EOF status").ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::constants::error;
    use crate::protocol::frame::check_packet;

    #[test]
    fn ok_round_trips() {
        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 7,
            status: 2,
            warnings: 1,
        };
        let mut out = BytesMut::new();
        assert_eq!(ok.encode(&mut out, 2), 3);
        assert_eq!(OkPacket::decode(&out[4..]).unwrap(), ok);
    }

    #[test]
    fn err_round_trips_with_sqlstate() {
        let err = ErrPacket::new(error::ACCESS_DENIED, "Access denied for user 'x'");
        let mut out = BytesMut::new();
        err.encode(&mut out, 1, capability::PROTOCOL_41);
        let span = check_packet(&out, 1024).unwrap().unwrap();
        assert_eq!(span.wire_len, out.len());
        assert_eq!(ErrPacket::decode(&out[4..]).unwrap(), err);
    }

    #[test]
    fn err_without_sqlstate_marker_decodes() {
        let payload = [&[0xFF, 0x15, 0x04][..], b"Bad handshake"].concat();
        let err = ErrPacket::decode(&payload).unwrap();
        assert_eq!(err.code, 1045);
        assert_eq!(err.message, "Bad handshake");
    }

    #[test]
    fn truncated_ok_and_err_are_errors() {
        assert!(OkPacket::decode(&[0x00, 0x01]).is_err());
        assert!(OkPacket::decode(&[]).is_err());
        assert!(ErrPacket::decode(&[0xFF, 0x01]).is_err());
        assert!(ErrPacket::decode(&[0x00, 0x01, 0x02]).is_err());
    }

    #[test]
    fn eof_is_told_apart_from_long_rows() {
        assert!(is_eof(Some(0xFE), 5));
        assert!(!is_eof(Some(0xFE), 9 + (1 << 24)));
        assert!(!is_eof(Some(0x00), 5));
        assert_eq!(eof_status(&[0xFE, 0, 0, 0x22, 0]), Some(0x22));
    }
}
