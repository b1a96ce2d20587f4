//! Primitive wire types of the MySQL protocol: fixed-width little-endian integers,
//! length-encoded integers and strings, NUL-terminated strings.
//!
//! Decoding goes through [`Reader`], a cursor that never panics: every read that would run
//! past the end of the payload returns [`DecodeError::Truncated`], so a length that lies
//! becomes an error value, not an out-of-bounds slice.

use bytes::{BufMut, BytesMut};

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("packet truncated while reading {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A bounds-checked cursor over one packet payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(n, what).map(|_| ())
    }

    /// Everything left in the payload (`string<EOF>` in the protocol reference).
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(3, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-encoded integer. `0xFB` (NULL) and `0xFF` are not integers and are
    /// reported as invalid; callers that accept NULL check for it first.
    pub fn lenenc_int(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match self.u8(what)? {
            n @ 0..=0xFA => Ok(u64::from(n)),
            0xFC => Ok(u64::from(self.u16(what)?)),
            0xFD => Ok(u64::from(self.u24(what)?)),
            0xFE => {
                let b = self.take(8, what)?;
                let mut raw = [0u8; 8];
                raw.copy_from_slice(b);
                Ok(u64::from_le_bytes(raw))
            }
            _ => Err(DecodeError::Invalid(what)),
        }
    }

    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.lenenc_int(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated(what))?;
        self.take(len, what)
    }

    /// A NUL-terminated string; the NUL is consumed and not returned.
    pub fn null_terminated(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// Like [`Reader::null_terminated`], but a missing NUL at the very end of the payload is
    /// tolerated: several clients omit the terminator of the last field.
    pub fn null_terminated_or_rest(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(end) => {
                let s = &self.buf[..end];
                self.buf = &self.buf[end + 1..];
                s
            }
            None => self.rest(),
        }
    }
}

/// Decodes UTF-8 text from the wire, naming the field when it is not valid UTF-8.
pub fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid(what))
}

pub fn put_lenenc_int(out: &mut BytesMut, n: u64) {
    match n {
        0..=0xFA => out.put_u8(n as u8),
        0xFB..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_uint_le(n, 3);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(n);
        }
    }
}

pub fn put_lenenc_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_lenenc_int(out, bytes.len() as u64);
    out.put_slice(bytes);
}

pub fn put_null_terminated(out: &mut BytesMut, bytes: &[u8]) {
    out.put_slice(bytes);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_int_round_trips_at_every_width() {
        for n in [
            0,
            1,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_lenenc_int(&mut out, n);
            let mut r = Reader::new(&out);
            assert_eq!(r.lenenc_int("n").unwrap(), n);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn lenenc_null_and_ff_are_not_integers() {
        assert_eq!(
            Reader::new(&[0xFB]).lenenc_int("n"),
            Err(DecodeError::Invalid("n"))
        );
        assert_eq!(
            Reader::new(&[0xFF]).lenenc_int("n"),
            Err(DecodeError::Invalid("n"))
        );
    }

    #[test]
    fn lengths_that_lie_are_truncation_errors() {
        // claims 8 bytes of string, carries 2
        assert_eq!(
            Reader::new(&[8, b'a', b'b']).lenenc_bytes("s"),
            Err(DecodeError::Truncated("s"))
        );
        // claims a u64 length, carries 3 bytes of it
        assert_eq!(
            Reader::new(&[0xFE, 1, 2, 3]).lenenc_int("n"),
            Err(DecodeError::Truncated("n"))
        );
        // a huge length must not overflow or allocate
        let mut r = Reader::new(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1]);
        assert_eq!(r.lenenc_bytes("s"), Err(DecodeError::Truncated("s")));
    }

    #[test]
    fn null_terminated_requires_the_nul() {
        let mut r = Reader::new(b"abc\0def");
        assert_eq!(r.null_terminated("a").unwrap(), b"abc");
        assert_eq!(
            r.clone().null_terminated("b"),
            Err(DecodeError::Truncated("b"))
        );
        assert_eq!(r.null_terminated_or_rest(), b"def");
        assert!(r.is_empty());
    }
}
