//! Responses for a client that negotiated CLIENT_DEPRECATE_EOF.
//!
//! Backend connections are shared by clients that asked for the flag and clients that did
//! not, so they never negotiate it: their responses carry EOF packets, and each one is
//! rewritten on its way to a client that asked, as MariaDB itself answers such a client.
//! An EOF that ends a result, a COM_FIELD_LIST, a COM_STMT_FETCH or a cursor's opening
//! becomes an OK packet with the EOF header (`FE`, no affected rows, no insert id, the
//! EOF's status and warnings); an EOF that only separates the column definitions from the
//! rows, or closes a prepare's parameter or column definitions, is dropped, and every
//! frame after it takes the sequence id one lower.
//!
//! The response tracker (the `response` module) decides each EOF's fate while
//! it scans (it alone knows where it is in the response); [`EofRewriter`] applies those
//! fates to the bytes scanned, batch after batch.

use bytes::{BufMut, BytesMut};

use super::constants::header;
use super::frame::{encode_packet, FrameHeader, HEADER_LEN};
use super::packets::is_eof;

/// What becomes of one EOF packet of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EofFate {
    /// It separates parts of the response: gone.
    Drop,
    /// It ends a result (or the response): an OK packet with the EOF header instead.
    End,
}

/// Rewrites a response batch by batch for a DEPRECATE_EOF client. See the module
/// documentation.
#[derive(Debug, Default, Clone)]
pub struct EofRewriter {
    /// Fates of the EOF packets in the batch scanned last, in order.
    fates: Vec<EofFate>,
    /// EOF packets dropped so far: what later sequence ids are lowered by.
    dropped: u8,
    /// The batch rewritten last ended inside a packet of 16 MiB or more.
    continuing: bool,
}

impl EofRewriter {
    /// Notes the fate of the next EOF packet of the batch being scanned.
    pub fn note(&mut self, fate: EofFate) {
        self.fates.push(fate);
    }

    /// Forgets the fates noted for a batch that is scanned again from its start.
    pub fn rescan(&mut self) {
        self.fates.clear();
    }

    /// What a sequence id of the backend's numbering is in the client's.
    pub fn client_seq(&self, seq: u8) -> u8 {
        seq.wrapping_sub(self.dropped)
    }

    /// How many packets were dropped so far: what the client's numbering lags the
    /// backend's by (a LOCAL INFILE file coming back is renumbered by as much).
    pub fn dropped(&self) -> u8 {
        self.dropped
    }

    /// The batch (whole frames, exactly the bytes last scanned) as the client is to see
    /// it. Without an EOF in it, only sequence ids change, in place, once one was dropped.
    pub fn rewrite(&mut self, mut batch: BytesMut) -> BytesMut {
        if self.fates.is_empty() {
            self.renumber(&mut batch);
            return batch;
        }
        let mut out = BytesMut::with_capacity(batch.len());
        let mut fates = std::mem::take(&mut self.fates).into_iter();
        let mut pos = 0;
        while let Some(h) = FrameHeader::parse(&batch[pos..]) {
            let frame = &batch[pos..pos + h.frame_len()];
            let payload = &frame[HEADER_LEN..];
            let first_of_packet = !self.continuing;
            self.continuing = h.is_continued();
            pos += h.frame_len();
            let seq = self.client_seq(h.seq);
            if first_of_packet && is_eof(payload.first().copied(), h.payload_len) {
                match fates.next() {
                    Some(EofFate::Drop) => {
                        self.dropped = self.dropped.wrapping_add(1);
                        continue;
                    }
                    Some(EofFate::End) => {
                        encode_packet(&mut out, seq, &ok_terminator(payload));
                        continue;
                    }
                    None => {}
                }
            }
            out.extend_from_slice(&frame[..HEADER_LEN - 1]);
            out.put_u8(seq);
            out.extend_from_slice(payload);
        }
        out
    }

    /// Lowers the sequence id of every frame of `batch` by the packets dropped so far.
    fn renumber(&mut self, batch: &mut [u8]) {
        let mut pos = 0;
        while let Some(h) = FrameHeader::parse(&batch[pos..]) {
            self.continuing = h.is_continued();
            if self.dropped != 0 {
                batch[pos + HEADER_LEN - 1] = self.client_seq(h.seq);
            }
            pos += h.frame_len();
        }
    }
}

/// The OK packet a DEPRECATE_EOF client gets in place of `eof` (its payload): the EOF
/// header, no affected rows, no insert id, then the EOF's status and warnings (an OK
/// packet has them in that order; an EOF, the other way round).
pub fn ok_terminator(eof: &[u8]) -> [u8; 7] {
    let field = |at: usize| [eof.get(at).copied(), eof.get(at + 1).copied()];
    let [w0, w1] = field(1).map(|b| b.unwrap_or(0));
    let [s0, s1] = field(3).map(|b| b.unwrap_or(0));
    [header::EOF, 0, 0, s0, s1, w0, w1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(packets: &[(u8, &[u8])]) -> BytesMut {
        let mut out = BytesMut::new();
        for (seq, payload) in packets {
            encode_packet(&mut out, *seq, payload);
        }
        out
    }

    const EOF: &[u8] = &[0xFE, 3, 0, 0x22, 0];

    #[test]
    fn a_result_loses_its_column_eof_and_ends_with_an_ok() {
        let mut rewriter = EofRewriter::default();
        let batch = frames(&[
            (1, &[1]),
            (2, b"\x03def"),
            (3, EOF),
            (4, b"\x011"),
            (5, EOF),
        ]);
        rewriter.note(EofFate::Drop);
        rewriter.note(EofFate::End);
        let out = rewriter.rewrite(batch);
        let expected = frames(&[
            (1, &[1]),
            (2, b"\x03def"),
            (3, b"\x011"),
            (4, &[0xFE, 0, 0, 0x22, 0, 3, 0]),
        ]);
        assert_eq!(out, expected);
    }

    #[test]
    fn later_batches_are_renumbered_in_place() {
        let mut rewriter = EofRewriter::default();
        rewriter.note(EofFate::Drop);
        rewriter.rewrite(frames(&[(1, &[1]), (2, b"\x03def"), (3, EOF)]));
        let out = rewriter.rewrite(frames(&[(4, b"\x011"), (5, b"\x012")]));
        assert_eq!(out, frames(&[(3, b"\x011"), (4, b"\x012")]));
        assert_eq!((rewriter.dropped(), rewriter.client_seq(6)), (1, 5));
    }

    #[test]
    fn a_short_continuation_frame_that_looks_like_an_eof_is_left_alone() {
        let mut rewriter = EofRewriter::default();
        // the first frame of a packet of 16 MiB or more, alone in its batch
        let mut big = BytesMut::from(&[0xFF, 0xFF, 0xFF, 4][..]);
        big.resize(HEADER_LEN + 0xFF_FFFF, 0xFB);
        rewriter.rewrite(big);
        rewriter.note(EofFate::End);
        let out = rewriter.rewrite(frames(&[(5, EOF), (6, EOF)]));
        assert_eq!(out, frames(&[(5, EOF), (6, &[0xFE, 0, 0, 0x22, 0, 3, 0])]));
    }

    #[test]
    fn the_terminator_swaps_status_and_warnings() {
        assert_eq!(ok_terminator(&[0xFE, 1, 2, 3, 4]), [0xFE, 0, 0, 3, 4, 1, 2]);
    }
}
