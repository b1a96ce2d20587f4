//! The prepared-statement commands' payloads, as far as a proxy that renumbers statements
//! must read and change them: the statement id every COM_STMT_* command carries after its
//! command byte, the PREPARE_OK header, and COM_STMT_EXECUTE's parameter block, whose
//! types a client may leave out when it sent them with an earlier execute
//! (`new_params_bound_flag` = 0) — the server remembers them per statement, so a statement
//! prepared anew on another connection must get them again.

use super::codec::{DecodeError, Reader};
use super::constants::header;

/// The id MariaDB reads as "the statement prepared last on this connection" (used to send
/// PREPARE and EXECUTE in one go).
pub const LAST_PREPARED: u32 = u32::MAX;

/// COM_STMT_EXECUTE's flag asking for a read-only cursor.
pub const CURSOR_TYPE_READ_ONLY: u8 = 0x01;

/// Where every COM_STMT_* command payload keeps its statement id.
const ID_AT: std::ops::Range<usize> = 1..5;

/// The statement id of a COM_STMT_EXECUTE/FETCH/RESET/CLOSE/SEND_LONG_DATA payload
/// (command byte included).
pub fn statement_id(payload: &[u8]) -> Option<u32> {
    let id = payload.get(ID_AT)?;
    Some(u32::from_le_bytes(id.try_into().expect("4 bytes")))
}

/// Writes `id` over the statement id of such a payload; false when it is too short.
pub fn set_statement_id(payload: &mut [u8], id: u32) -> bool {
    match payload.get_mut(ID_AT) {
        Some(at) => {
            at.copy_from_slice(&id.to_le_bytes());
            true
        }
        None => false,
    }
}

/// The header of COM_STMT_PREPARE_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrepareOk {
    pub statement_id: u32,
    pub columns: u16,
    pub params: u16,
    pub warnings: u16,
}

impl PrepareOk {
    pub fn decode(payload: &[u8]) -> Result<PrepareOk, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("prepare OK header")? != header::OK {
            return Err(DecodeError::Invalid("prepare OK header"));
        }
        let statement_id = r.u32("statement id")?;
        let columns = r.u16("column count")?;
        let params = r.u16("parameter count")?;
        // a filler byte, then the warning count (absent from some old servers)
        let warnings = match r.skip(1, "filler") {
            Ok(()) => r.u16("warnings").unwrap_or(0),
            Err(_) => 0,
        };
        Ok(PrepareOk {
            statement_id,
            columns,
            params,
            warnings,
        })
    }
}

/// What a COM_STMT_EXECUTE payload says about its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteLayout {
    /// The cursor flags (`CURSOR_TYPE_*`).
    pub flags: u8,
    /// Where `new_params_bound_flag` is, when the statement has parameters.
    pub bound_flag_at: Option<usize>,
    /// Where the parameter types are, when the execute sends them.
    pub types: Option<std::ops::Range<usize>>,
}

impl ExecuteLayout {
    /// Reads the layout of an execute of a statement with `params` parameters.
    pub fn parse(payload: &[u8], params: u16) -> Result<ExecuteLayout, DecodeError> {
        let mut r = Reader::new(payload);
        r.skip(5, "command and statement id")?;
        let flags = r.u8("cursor flags")?;
        r.skip(4, "iteration count")?;
        if params == 0 {
            return Ok(ExecuteLayout {
                flags,
                bound_flag_at: None,
                types: None,
            });
        }
        let bitmap = usize::from(params).div_ceil(8);
        r.skip(bitmap, "NULL bitmap")?;
        let bound_flag_at = payload.len() - r.remaining();
        let bound = r.u8("new_params_bound_flag")?;
        let types = if bound == 1 {
            let start = bound_flag_at + 1;
            r.skip(2 * usize::from(params), "parameter types")?;
            Some(start..start + 2 * usize::from(params))
        } else {
            None
        };
        Ok(ExecuteLayout {
            flags,
            bound_flag_at: Some(bound_flag_at),
            types,
        })
    }

    /// The payload with `types` bound into it (`new_params_bound_flag` = 1), for a
    /// connection that has not seen the types the client bound earlier.
    pub fn with_types(&self, payload: &[u8], types: &[u8]) -> Option<Vec<u8>> {
        let at = self.bound_flag_at?;
        if self.types.is_some() {
            return None;
        }
        let mut out = Vec::with_capacity(payload.len() + types.len());
        out.extend_from_slice(&payload[..at]);
        out.push(1);
        out.extend_from_slice(types);
        out.extend_from_slice(&payload[at + 1..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An execute of a 3-parameter statement, id 7, NULL bitmap 0b010, with or without
    /// types (LONGLONG, VAR_STRING, LONGLONG) and two values.
    fn execute(with_types: bool) -> Vec<u8> {
        let mut p = vec![0x17, 7, 0, 0, 0, 0x00, 1, 0, 0, 0, 0b010];
        if with_types {
            p.extend_from_slice(&[1, 0x08, 0x00, 0xfd, 0x00, 0x08, 0x00]);
        } else {
            p.push(0);
        }
        p.extend_from_slice(&5u64.to_le_bytes());
        p.extend_from_slice(&9u64.to_le_bytes());
        p
    }

    #[test]
    fn statement_ids_are_read_and_replaced_in_place() {
        let mut p = execute(true);
        assert_eq!(statement_id(&p), Some(7));
        assert!(set_statement_id(&mut p, 0x0102_0304));
        assert_eq!(&p[1..5], &[4, 3, 2, 1]);
        assert_eq!(statement_id(&[0x19, 1, 2]), None);
        assert!(!set_statement_id(&mut [0x19, 1], 3));
    }

    #[test]
    fn prepare_ok_header() {
        let ok = [0, 9, 0, 0, 0, 2, 0, 3, 0, 0, 1, 0];
        assert_eq!(
            PrepareOk::decode(&ok).unwrap(),
            PrepareOk {
                statement_id: 9,
                columns: 2,
                params: 3,
                warnings: 1
            }
        );
        assert_eq!(PrepareOk::decode(&ok[..9]).unwrap().warnings, 0);
        assert!(PrepareOk::decode(&ok[..6]).is_err());
        assert!(PrepareOk::decode(&[0xff, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
    }

    #[test]
    fn execute_layout_finds_the_types() {
        let with = execute(true);
        let layout = ExecuteLayout::parse(&with, 3).unwrap();
        assert_eq!(layout.flags, 0);
        assert_eq!(layout.bound_flag_at, Some(11));
        assert_eq!(layout.types, Some(12..18));
        assert_eq!(&with[12..18], &[0x08, 0x00, 0xfd, 0x00, 0x08, 0x00]);
        assert_eq!(
            layout.with_types(&with, &with[12..18]),
            None,
            "already bound"
        );

        let without = execute(false);
        let layout = ExecuteLayout::parse(&without, 3).unwrap();
        assert_eq!(layout.types, None);
        let bound = layout.with_types(&without, &with[12..18]).unwrap();
        assert_eq!(bound, with, "types inserted, flag set, values kept");
    }

    #[test]
    fn execute_without_parameters_and_with_a_cursor() {
        let p = [0x17, 1, 0, 0, 0, CURSOR_TYPE_READ_ONLY, 1, 0, 0, 0];
        let layout = ExecuteLayout::parse(&p, 0).unwrap();
        assert_eq!(layout.flags, CURSOR_TYPE_READ_ONLY);
        assert_eq!(layout.bound_flag_at, None);
        assert_eq!(layout.with_types(&p, &[]), None);
    }

    #[test]
    fn truncated_executes_are_errors() {
        let with = execute(true);
        for len in [0, 4, 9, 10, 11, 13] {
            assert!(ExecuteLayout::parse(&with[..len], 3).is_err(), "{len}");
        }
        // a lying parameter count runs past the end instead of past the buffer
        assert!(ExecuteLayout::parse(&with, 400).is_err());
    }
}
