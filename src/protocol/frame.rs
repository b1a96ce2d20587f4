//! Packet framing: the 4-byte header (`u24` payload length, `u8` sequence id) and payloads
//! of 16 MiB and more, which travel as a chain of maximal frames ended by a shorter one.
//!
//! Decoding is check-then-take: [`check_packet`] answers "does this buffer start with a whole
//! logical packet, and how long is it?" from the headers alone, without copying or
//! allocating. Only then does the caller split the bytes off its buffer.

use bytes::{BufMut, BytesMut};

/// Length of a frame header.
pub const HEADER_LEN: usize = 4;
/// Largest payload of one frame; a frame this long is continued by the next one.
pub const MAX_FRAME_PAYLOAD: usize = 0xFF_FFFF;

/// The header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: usize,
    pub seq: u8,
}

impl FrameHeader {
    /// Reads a header from the start of `buf`, or `None` when fewer than 4 bytes are there.
    pub fn parse(buf: &[u8]) -> Option<FrameHeader> {
        let h = buf.get(..HEADER_LEN)?;
        Some(FrameHeader {
            payload_len: usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
            seq: h[3],
        })
    }

    /// Whether the logical packet goes on in the next frame.
    pub fn is_continued(&self) -> bool {
        self.payload_len == MAX_FRAME_PAYLOAD
    }

    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
}

/// Why a frame sequence cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("packet out of order: expected sequence id {expected}, got {got}")]
    OutOfOrder { expected: u8, got: u8 },
}

/// Where a complete logical packet lies at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketSpan {
    /// Bytes of all frames, headers included.
    pub wire_len: usize,
    /// Bytes of the reassembled payload.
    pub payload_len: usize,
    /// Sequence id of the first frame.
    pub first_seq: u8,
    /// Sequence id of the last frame; the next packet of the exchange uses this plus one.
    pub last_seq: u8,
    /// Number of frames (more than one for payloads of 16 MiB and more).
    pub frames: usize,
}

/// Checks whether `buf` starts with a whole logical packet.
///
/// Returns `Ok(None)` when more bytes are needed: that is the normal state of a socket
/// buffer, not an error. The payload limit is enforced as soon as the headers announce too
/// much, before the bytes arrive, so a peer cannot make the caller buffer more than `max`.
pub fn check_packet(buf: &[u8], max_payload: usize) -> Result<Option<PacketSpan>, FrameError> {
    let mut pos = 0;
    let mut payload_len = 0usize;
    let mut frames = 0;
    let mut first_seq = 0;
    let mut last_seq = 0u8;
    loop {
        let Some(h) = FrameHeader::parse(&buf[pos..]) else {
            return Ok(None);
        };
        if frames == 0 {
            first_seq = h.seq;
        } else if h.seq != last_seq.wrapping_add(1) {
            return Err(FrameError::OutOfOrder {
                expected: last_seq.wrapping_add(1),
                got: h.seq,
            });
        }
        last_seq = h.seq;
        frames += 1;
        payload_len += h.payload_len;
        if payload_len > max_payload {
            return Err(FrameError::TooLarge {
                len: payload_len,
                max: max_payload,
            });
        }
        if buf.len() < pos + h.frame_len() {
            return Ok(None);
        }
        pos += h.frame_len();
        if !h.is_continued() {
            return Ok(Some(PacketSpan {
                wire_len: pos,
                payload_len,
                first_seq,
                last_seq,
                frames,
            }));
        }
    }
}

/// Copies the payload of a checked packet out of its frames (`wire` starts at the packet).
pub fn reassemble(wire: &[u8], span: &PacketSpan) -> Vec<u8> {
    let mut payload = Vec::with_capacity(span.payload_len);
    let mut pos = 0;
    while pos < span.wire_len {
        let h = FrameHeader::parse(&wire[pos..]).expect("span was checked");
        payload.extend_from_slice(&wire[pos + HEADER_LEN..pos + h.frame_len()]);
        pos += h.frame_len();
    }
    payload
}

/// Appends `payload` as one logical packet starting at sequence id `seq`, split into frames
/// as the protocol requires, and returns the sequence id that follows it.
pub fn encode_packet(out: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    let mut seq = seq;
    let mut chunks = payload.chunks(MAX_FRAME_PAYLOAD);
    let mut last_len = 0;
    out.reserve(payload.len() + HEADER_LEN);
    for chunk in chunks.by_ref() {
        put_header(out, chunk.len(), seq);
        out.put_slice(chunk);
        seq = seq.wrapping_add(1);
        last_len = chunk.len();
    }
    // An empty payload, or one that is an exact multiple of the frame size, ends with an
    // empty frame so the reader knows the packet is over.
    if payload.is_empty() || last_len == MAX_FRAME_PAYLOAD {
        put_header(out, 0, seq);
        seq = seq.wrapping_add(1);
    }
    seq
}

fn put_header(out: &mut BytesMut, len: usize, seq: u8) {
    out.put_uint_le(len as u64, 3);
    out.put_u8(seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_header(&mut out, payload.len(), seq);
        out.put_slice(payload);
        out.to_vec()
    }

    #[test]
    fn a_whole_packet_is_found_and_a_partial_one_is_not() {
        let wire = frame(3, b"hello");
        let span = check_packet(&wire, 1 << 20).unwrap().unwrap();
        assert_eq!(span.wire_len, 9);
        assert_eq!(span.payload_len, 5);
        assert_eq!((span.first_seq, span.last_seq, span.frames), (3, 3, 1));
        for cut in 0..wire.len() {
            assert_eq!(
                check_packet(&wire[..cut], 1 << 20),
                Ok(None),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn large_payloads_round_trip_through_several_frames() {
        for len in [
            MAX_FRAME_PAYLOAD - 1,
            MAX_FRAME_PAYLOAD,
            MAX_FRAME_PAYLOAD + 1,
            2 * MAX_FRAME_PAYLOAD,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = BytesMut::new();
            let next = encode_packet(&mut out, 0, &payload);
            let span = check_packet(&out, 64 << 20).unwrap().unwrap();
            assert_eq!(span.wire_len, out.len());
            assert_eq!(span.payload_len, len);
            assert_eq!(next, span.last_seq + 1);
            assert_eq!(reassemble(&out, &span), payload);
        }
    }

    #[test]
    fn an_empty_payload_is_one_empty_frame() {
        let mut out = BytesMut::new();
        assert_eq!(encode_packet(&mut out, 7, b""), 8);
        assert_eq!(&out[..], &[0, 0, 0, 7]);
    }

    #[test]
    fn oversized_packets_are_refused_from_the_header_alone() {
        // only the header of a 1 MiB frame has arrived
        let header = [0x00, 0x00, 0x10, 0x00];
        assert_eq!(
            check_packet(&header, 1000),
            Err(FrameError::TooLarge {
                len: 1 << 20,
                max: 1000
            })
        );
    }

    #[test]
    fn continuation_frames_must_be_in_sequence() {
        let mut wire = Vec::new();
        put_header_vec(&mut wire, MAX_FRAME_PAYLOAD, 0);
        wire.resize(HEADER_LEN + MAX_FRAME_PAYLOAD, 0);
        wire.extend_from_slice(&frame(5, b"x"));
        assert_eq!(
            check_packet(&wire, 64 << 20),
            Err(FrameError::OutOfOrder {
                expected: 1,
                got: 5
            })
        );
    }

    fn put_header_vec(out: &mut Vec<u8>, len: usize, seq: u8) {
        let mut b = BytesMut::new();
        put_header(&mut b, len, seq);
        out.extend_from_slice(&b);
    }
}
