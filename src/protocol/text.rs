//! Text-protocol result sets as values: decoded for the monitor (the handful of status rows
//! it reads from each backend) and encoded for the admin port. The data path does neither,
//! except [`replace_values`] for the few status rows that describe the client's own link.

use bytes::{BufMut, BytesMut};

use super::codec::{put_lenenc_bytes, put_lenenc_int, utf8, DecodeError, Reader};
use super::constants::{header, DEFAULT_CHARSET};
use super::frame::encode_packet;
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

impl TextResult {
    /// Appends this result set (column count, definitions, EOF, rows, EOF) starting at
    /// sequence id `seq`; returns the next sequence id. Every column is a string column.
    pub fn encode(&self, out: &mut BytesMut, mut seq: u8, status: u16) -> u8 {
        let mut payload = BytesMut::new();
        put_lenenc_int(&mut payload, self.columns.len() as u64);
        seq = encode_packet(out, seq, &payload);
        for name in &self.columns {
            payload.clear();
            for field in ["def", "", "", "", name.as_str(), name.as_str()] {
                put_lenenc_bytes(&mut payload, field.as_bytes());
            }
            payload.put_u8(0x0C); // length of the fixed fields
            payload.put_u16_le(u16::from(DEFAULT_CHARSET));
            payload.put_u32_le(1024); // display length
            payload.put_u8(0xFD); // VAR_STRING
            payload.put_u16_le(0); // flags
            payload.put_u8(0); // decimals
            payload.put_u16_le(0); // filler
            seq = encode_packet(out, seq, &payload);
        }
        seq = encode_eof(out, seq, status);
        for row in &self.rows {
            payload.clear();
            for value in row {
                match value {
                    Some(v) => put_lenenc_bytes(&mut payload, v.as_bytes()),
                    None => payload.put_u8(0xFB),
                }
            }
            seq = encode_packet(out, seq, &payload);
        }
        encode_eof(out, seq, status)
    }
}

fn encode_eof(out: &mut BytesMut, seq: u8, status: u16) -> u8 {
    let mut eof = [header::EOF, 0, 0, 0, 0];
    eof[3..5].copy_from_slice(&status.to_le_bytes());
    encode_packet(out, seq, &eof)
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

/// One complete text result set (wire bytes, a single frame per packet) with the value of
/// some rows replaced: in each row whose `name_column` holds a name `replacement` knows,
/// `value_column` gets the replacement (columns found by name, case-insensitively).
/// `None` when the bytes are not one such result set — an error, an OK, several results,
/// a packet of 16 MiB or more, neither column — and then they go to the client unchanged.
/// Sequence ids are kept: the packets stay as many.
pub fn replace_values(
    wire: &[u8],
    name_columns: &[&str],
    value_columns: &[&str],
    replacement: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<BytesMut> {
    let packets = split_packets(wire)?;
    let (_, first) = *packets.first()?;
    if matches!(
        first.first(),
        Some(&header::ERR | &header::OK | &header::LOCAL_INFILE)
    ) {
        return None;
    }
    let count = usize::try_from(Reader::new(first).lenenc_int("column count").ok()?).ok()?;
    let names: Vec<String> = packets
        .get(1..1 + count)?
        .iter()
        .map(|(_, d)| column_name(d))
        .collect::<Result<_, _>>()
        .ok()?;
    let find = |wanted: &[&str]| {
        names
            .iter()
            .position(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)))
    };
    let (name_at, value_at) = (find(name_columns)?, find(value_columns)?);
    let rows_from = 2 + count;
    let last = packets.last()?.1;
    if !is_eof(last.first().copied(), last.len())
        || super::packets::eof_status(last)? & super::constants::status::MORE_RESULTS_EXISTS != 0
    {
        return None;
    }
    let mut out = BytesMut::with_capacity(wire.len() + 64);
    let mut payload = BytesMut::new();
    for (i, (seq, packet)) in packets.iter().enumerate() {
        let is_row = i >= rows_from && i + 1 < packets.len();
        let mut values = if is_row {
            row_values(packet, count)?
        } else {
            Vec::new()
        };
        let new = values
            .get(name_at)
            .copied()
            .flatten()
            .and_then(&replacement);
        match new {
            Some(new) if is_row => {
                values[value_at] = Some(&new);
                payload.clear();
                for value in &values {
                    match value {
                        Some(v) => put_lenenc_bytes(&mut payload, v),
                        None => payload.put_u8(0xFB),
                    }
                }
                encode_packet(&mut out, *seq, &payload);
            }
            _ => {
                encode_packet(&mut out, *seq, packet);
            }
        }
    }
    Some(out)
}

/// The (sequence id, payload) of each packet of `wire`; `None` when a packet is cut short or
/// spans frames.
fn split_packets(mut wire: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut packets = Vec::new();
    while !wire.is_empty() {
        let header = super::frame::FrameHeader::parse(wire)?;
        if header.is_continued() {
            return None;
        }
        let payload = wire.get(super::frame::HEADER_LEN..header.frame_len())?;
        packets.push((header.seq, payload));
        wire = &wire[header.frame_len()..];
    }
    Some(packets)
}

/// The values of a text row of `count` columns (`None` for NULL).
fn row_values(row: &[u8], count: usize) -> Option<Vec<Option<&[u8]>>> {
    let mut r = Reader::new(row);
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        if r.clone().u8("value").ok()? == 0xFB {
            r.skip(1, "NULL").ok()?;
            values.push(None);
        } else {
            values.push(Some(r.lenenc_bytes("value").ok()?));
        }
    }
    Some(values)
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

    fn def(name: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        for f in ["def", "", "", "", name, name] {
            put_lenenc_bytes(&mut out, f.as_bytes());
        }
        out.extend_from_slice(&[0x0C, 0x21, 0, 0, 1, 0, 0xFD, 0, 0, 0, 0, 0, 0]);
        out.to_vec()
    }

    #[test]
    fn an_encoded_result_decodes_to_itself() {
        let result = TextResult {
            columns: vec!["hostgroup".into(), "srv_host".into()],
            rows: vec![
                vec![Some("10".into()), Some("127.0.0.1".into())],
                vec![None, Some(String::new())],
            ],
        };
        let mut wire = BytesMut::new();
        assert_eq!(result.encode(&mut wire, 1, 2), 1 + 1 + 2 + 1 + 2 + 1);
        let mut payloads = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let len = usize::from(rest[0]) | usize::from(rest[1]) << 8 | usize::from(rest[2]) << 16;
            payloads.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        assert_eq!(decode_result(&payloads).unwrap().unwrap(), result);
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
    fn values_of_named_rows_are_replaced_in_place() {
        let result = TextResult {
            columns: vec!["Variable_name".into(), "Value".into()],
            rows: vec![
                vec![Some("Ssl_accepts".into()), Some("7".into())],
                vec![Some("Ssl_cipher".into()), Some(String::new())],
                vec![Some("Ssl_version".into()), None],
            ],
        };
        let mut wire = BytesMut::new();
        result.encode(&mut wire, 1, 2);
        let patched = replace_values(
            &wire,
            &["variable_name"],
            &["value", "variable_value"],
            |name| match name {
                b"Ssl_cipher" => Some(b"TLS_AES_256_GCM_SHA384".to_vec()),
                b"Ssl_version" => Some(b"TLSv1.3".to_vec()),
                _ => None,
            },
        )
        .expect("one result set");
        let mut expected = result.clone();
        expected.rows[1][1] = Some("TLS_AES_256_GCM_SHA384".into());
        expected.rows[2][1] = Some("TLSv1.3".into());
        let mut want = BytesMut::new();
        expected.encode(&mut want, 1, 2);
        assert_eq!(patched, want);

        // untouched: no such column, an OK, a cut packet, several results
        assert!(replace_values(&wire, &["name"], &["value"], |_| None).is_none());
        let mut ok = BytesMut::new();
        encode_packet(&mut ok, 1, &[0, 0, 0, 2, 0, 0, 0]);
        assert!(replace_values(&ok, &["variable_name"], &["value"], |_| None).is_none());
        assert!(replace_values(
            &wire[..wire.len() - 1],
            &["variable_name"],
            &["value"],
            |_| None
        )
        .is_none());
        let mut more = BytesMut::new();
        result.encode(&mut more, 1, 0x000A);
        assert!(replace_values(&more, &["variable_name"], &["value"], |_| None).is_none());
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
