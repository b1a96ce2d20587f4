//! The binary protocol from the client's side: preparing, executing with parameters,
//! reading a binary result set.

use sluice::protocol::constants::{command, header};

use super::{RawClient, RawPacket};

/// A parameter value as the binary protocol sends it.
#[derive(Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    Text(&'a str),
}

pub fn prepare(c: &mut RawClient, sql: &str) -> [u8; 4] {
    let reply = c.command(command::STMT_PREPARE, sql.as_bytes());
    assert_eq!(
        reply[0].payload[0],
        header::OK,
        "{sql}: {:?}",
        reply[0].payload
    );
    reply[0].payload[1..5].try_into().unwrap()
}

/// COM_STMT_EXECUTE's body for `params`, with their types or relying on the ones bound
/// by an earlier execute (as libmariadb and mysqlnd do).
pub fn execute_body(id: [u8; 4], params: &[Param], send_types: bool) -> Vec<u8> {
    let mut p = id.to_vec();
    p.push(0);
    p.extend_from_slice(&1u32.to_le_bytes());
    if params.is_empty() {
        return p;
    }
    p.extend(std::iter::repeat_n(0, params.len().div_ceil(8)));
    p.push(u8::from(send_types));
    if send_types {
        for v in params {
            p.extend_from_slice(match v {
                Param::Int(_) => &[0x08, 0x00],
                Param::Text(_) => &[0xfd, 0x00],
            });
        }
    }
    for v in params {
        match v {
            Param::Int(i) => p.extend_from_slice(&i.to_le_bytes()),
            Param::Text(t) => {
                p.push(t.len() as u8);
                p.extend_from_slice(t.as_bytes());
            }
        }
    }
    p
}

pub fn execute(
    c: &mut RawClient,
    id: [u8; 4],
    params: &[Param],
    send_types: bool,
) -> Vec<RawPacket> {
    c.command(command::STMT_EXECUTE, &execute_body(id, params, send_types))
}

/// The column count and the rows' first column (strings) of a binary result set.
pub fn binary_result(packets: &[RawPacket]) -> (usize, Vec<String>) {
    let first = &packets[0].payload;
    assert_ne!(
        first[0],
        header::ERR,
        "{:?}",
        String::from_utf8_lossy(first)
    );
    let columns = first[0] as usize;
    let null_bitmap = (columns + 7 + 2) / 8;
    let rows = packets[columns + 2..packets.len() - 1]
        .iter()
        .map(|p| {
            let at = 1 + null_bitmap;
            let len = p.payload[at] as usize;
            String::from_utf8_lossy(&p.payload[at + 1..at + 1 + len]).into_owned()
        })
        .collect();
    (columns, rows)
}
