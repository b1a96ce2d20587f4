//! Decoding a text-protocol result set into values. The data path never does this; the
//! monitor does, for the handful of status rows it reads from each backend.

use super::codec::{utf8, DecodeError, Reader};
use super::constants::header;
use super::packets::{is_eof, ErrPacket};

/// A small result set: column names and rows of nullable text values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl TextResult {
    /// The value of `column` in the first row, if both exist and it is not NULL.
    pub fn first(&self, column: &str) -> Option<&str> {
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(column))?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

/// Decodes the packets of one COM_QUERY response (one result, as a list of payloads).
/// An ERR response comes back as `Ok(Err(..))`; a malformed one as `Err`.
pub fn decode_result(packets: &[&[u8]]) -> Result<Result<TextResult, ErrPacket>, DecodeError> {
    let Some(first) = packets.first() else {
        return Err(DecodeError::Truncated("result"));
    };
    match first.first() {
        Some(&header::ERR) => return Ok(Err(ErrPacket::decode(first)?)),
        Some(&header::OK) => return Ok(Ok(TextResult::default())),
        _ => {}
    }
    let count = Reader::new(first).lenenc_int("column count")? as usize;
    let defs = packets
        .get(1..1 + count)
        .ok_or(DecodeError::Truncated("column definitions"))?;
    let mut result = TextResult {
        columns: defs
            .iter()
            .map(|d| column_name(d))
            .collect::<Result<_, _>>()?,
        rows: Vec::new(),
    };
    // skip the EOF after the definitions
    for row in packets.iter().skip(2 + count) {
        if row.first() == Some(&header::ERR) {
            return Ok(Err(ErrPacket::decode(row)?));
        }
        if is_eof(row.first().copied(), row.len()) {
            break;
        }
        let mut r = Reader::new(row);
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            if r.clone().u8("value")? == 0xFB {
                r.skip(1, "NULL")?;
                values.push(None);
            } else {
                values.push(Some(
                    String::from_utf8_lossy(r.lenenc_bytes("value")?).into_owned(),
                ));
            }
        }
        result.rows.push(values);
    }
    Ok(Ok(result))
}

/// The `name` field of a ColumnDefinition41 (catalog, schema, table, org_table, name, …).
fn column_name(def: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(def);
    for _ in 0..4 {
        r.lenenc_bytes("column definition")?;
    }
    utf8(r.lenenc_bytes("column name")?, "column name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::put_lenenc_bytes;
    use bytes::BytesMut;

    fn def(name: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in ["def", "", "", "", name, name] {
            put_lenenc_bytes(&mut out, f.as_bytes());
        }
        out.extend_from_slice(&[0x0C, 0x21, 0, 0, 1, 0, 0xFD, 0, 0, 0, 0, 0, 0]);
        out.to_vec()
    }

    #[test]
    fn rows_with_nulls_decode() {
        let eof = [0xFE, 0, 0, 2, 0];
        let mut row = BytesMut::new();
        put_lenenc_bytes(&mut row, b"4");
        row.extend_from_slice(&[0xFB]);
        let (a, b) = (def("wsrep_local_state"), def("Seconds_Behind_Master"));
        let packets: Vec<&[u8]> = vec![&[2], &a, &b, &eof, &row, &eof];
        let result = decode_result(&packets).unwrap().unwrap();
        assert_eq!(
            result.columns,
            vec!["wsrep_local_state", "Seconds_Behind_Master"]
        );
        assert_eq!(result.first("WSREP_LOCAL_STATE"), Some("4"));
        assert_eq!(result.first("seconds_behind_master"), None);
        assert_eq!(result.rows, vec![vec![Some("4".to_string()), None]]);
    }

    #[test]
    fn errors_and_truncation() {
        let err = [
            0xFF, 0x28, 0x04, b'#', b'4', b'2', b'0', b'0', b'0', b'n', b'o',
        ];
        assert_eq!(decode_result(&[&err]).unwrap().unwrap_err().code, 1064);
        assert!(decode_result(&[]).is_err());
        assert!(decode_result(&[&[3], &def("a")]).is_err());
    }
}
