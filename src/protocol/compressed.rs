//! MySQL's compressed protocol (`CLIENT_COMPRESS`): once the login is done, the packet
//! stream in each direction travels cut into frames, each with a 7-byte header — the
//! frame's length on the wire (3 bytes), its sequence id, and the length of its content
//! once inflated (3 bytes; 0 when the content is sent as is) — and zlib data after it.
//!
//! A frame holds any stretch of the packet stream (several packets, or part of one), at
//! most 16 MiB - 1 of it, so packets of 16 MiB and more need no special case here.
//! Decoding never trusts the header: inflating stops at the length it declared, and a
//! frame that inflates to anything else is an error.

use std::io::{Read, Write};

use bytes::{Buf, BufMut, BytesMut};
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

/// Bytes before a frame's content.
pub const HEADER_LEN: usize = 7;
/// The most content one frame holds (its lengths are 3 bytes).
pub const MAX_CONTENT: usize = 0xFF_FFFF;
/// Content shorter than this goes uncompressed: zlib's own overhead would make it longer
/// (the server's threshold).
const MIN_COMPRESSED: usize = 50;

/// Why a compressed frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressedError {
    #[error("compressed frame: corrupt zlib data")]
    Corrupt,
    #[error("compressed frame: declared {declared} bytes, inflated to {actual}")]
    Length { declared: usize, actual: usize },
}

/// One frame read off the wire.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its bytes on the wire, header included.
    pub wire_len: usize,
    pub seq: u8,
}

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
}

/// Takes the whole frame at the start of `input`, if there is one, and appends its
/// content, inflated, to `out`. `Ok(None)`: the frame is not all there yet.
pub fn decode_frame(
    input: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<Option<Frame>, CompressedError> {
    if input.len() < HEADER_LEN {
        return Ok(None);
    }
    let wire = u24(&input[0..3]);
    let seq = input[3];
    let inflated = u24(&input[4..7]);
    if input.len() < HEADER_LEN + wire {
        return Ok(None);
    }
    let content = &input[HEADER_LEN..HEADER_LEN + wire];
    if inflated == 0 {
        out.extend_from_slice(content);
    } else {
        let start = out.len();
        out.reserve(inflated);
        // one byte more than declared: a frame that inflates to more is caught, never
        // followed further
        let mut reader = ZlibDecoder::new(content).take(inflated as u64 + 1);
        let read = std::io::copy(&mut reader, &mut (&mut *out).writer());
        let actual = out.len() - start;
        if read.is_err() {
            out.truncate(start);
            return Err(CompressedError::Corrupt);
        }
        if actual != inflated {
            out.truncate(start);
            return Err(CompressedError::Length {
                declared: inflated,
                actual,
            });
        }
    }
    input.advance(HEADER_LEN + wire);
    Ok(Some(Frame {
        wire_len: HEADER_LEN + wire,
        seq,
    }))
}

/// Appends `data` to `out` as compressed frames at zlib `level` (0–9), numbered from
/// `*seq` on; `*seq` ends after the last one.
pub fn encode(data: &[u8], level: u32, seq: &mut u8, out: &mut BytesMut) {
    for chunk in data.chunks(MAX_CONTENT) {
        let at = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let inflated = if chunk.len() < MIN_COMPRESSED {
            out.extend_from_slice(chunk);
            0
        } else {
            let mut encoder = ZlibEncoder::new((&mut *out).writer(), Compression::new(level));
            encoder.write_all(chunk).expect("writes to memory");
            encoder.finish().expect("writes to memory");
            if out.len() - at - HEADER_LEN < chunk.len() {
                chunk.len()
            } else {
                // incompressible: as is
                out.truncate(at + HEADER_LEN);
                out.extend_from_slice(chunk);
                0
            }
        };
        let wire = out.len() - at - HEADER_LEN;
        let header = &mut out[at..at + HEADER_LEN];
        header[0..3].copy_from_slice(&(wire as u32).to_le_bytes()[..3]);
        header[3] = *seq;
        header[4..7].copy_from_slice(&(inflated as u32).to_le_bytes()[..3]);
        *seq = seq.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8]) -> (Vec<u8>, usize) {
        let mut seq = 5;
        let mut wire = BytesMut::new();
        encode(data, 6, &mut seq, &mut wire);
        let mut out = BytesMut::new();
        let mut frames = 0;
        let mut expected_seq = 5u8;
        while let Some(frame) = decode_frame(&mut wire, &mut out).unwrap() {
            assert_eq!(frame.seq, expected_seq);
            expected_seq = expected_seq.wrapping_add(1);
            frames += 1;
        }
        assert!(wire.is_empty());
        assert_eq!(seq, expected_seq);
        (out.to_vec(), frames)
    }

    #[test]
    fn the_stream_comes_back_as_it_went_whatever_its_size() {
        assert_eq!(
            round_trip(b"\x01\x00\x00\x00\x0e"),
            (b"\x01\x00\x00\x00\x0e".to_vec(), 1)
        );
        let rows: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        assert_eq!(round_trip(&rows), (rows.clone(), 1));
        // past one frame's content: several frames
        let big: Vec<u8> = (0..(MAX_CONTENT + 1000)).map(|i| (i % 7) as u8).collect();
        assert_eq!(round_trip(&big), (big.clone(), 2));
    }

    #[test]
    fn small_or_incompressible_content_goes_as_is() {
        let mut seq = 0;
        let mut wire = BytesMut::new();
        encode(b"short", 6, &mut seq, &mut wire);
        assert_eq!(&wire[..], b"\x05\x00\x00\x00\x00\x00\x00short");
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let mut wire = BytesMut::new();
        encode(&noise, 9, &mut seq, &mut wire);
        assert_eq!(&wire[4..7], &[0, 0, 0], "sent as is");
        assert_eq!(wire.len(), HEADER_LEN + noise.len());
    }

    #[test]
    fn a_partial_frame_waits_and_a_lying_one_is_refused() {
        let mut wire = BytesMut::new();
        encode(&[b'x'; 1000], 6, &mut 0, &mut wire);
        let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
        let mut out = BytesMut::new();
        assert_eq!(decode_frame(&mut partial, &mut out), Ok(None));
        assert!(out.is_empty() && partial.len() == wire.len() - 1);

        // the header claims less than the content inflates to
        let mut lying = wire.clone();
        lying[4..7].copy_from_slice(&[10, 0, 0]);
        assert_eq!(
            decode_frame(&mut lying, &mut out),
            Err(CompressedError::Length {
                declared: 10,
                actual: 11
            })
        );
        // and more
        let mut lying = wire.clone();
        lying[4..7].copy_from_slice(&[0xFF, 0xFF, 0x0F]);
        assert!(matches!(
            decode_frame(&mut lying, &mut out),
            Err(CompressedError::Length { actual: 1000, .. })
        ));
        let mut corrupt = wire.clone();
        corrupt[HEADER_LEN + 3] ^= 0xFF;
        assert!(decode_frame(&mut corrupt, &mut out).is_err());
        assert!(out.is_empty(), "nothing of a bad frame is kept");
    }
}
