//! MySQL's compressed protocol (`CLIENT_COMPRESS`): once the login is done, the packet
//! stream in each direction travels cut into frames, each with a 7-byte header — the
//! frame's length on the wire (3 bytes), its sequence id, and the length of its content
//! once inflated (3 bytes; 0 when the content is sent as is) — and zlib data after it.
//! With `CLIENT_ZSTD_COMPRESSION_ALGORITHM` (MySQL 8.0.18 and later) the frames are the
//! same and each one's content is one zstd frame instead.
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

/// How frames' contents are compressed, at which level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// zlib, levels 1 (fastest) to 9.
    Zlib(u32),
    /// zstd, levels 1 to 22 (MySQL's default: 3).
    Zstd(i32),
}

impl Codec {
    /// The algorithm's name, as MySQL's `Compression_algorithm` status shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Codec::Zlib(_) => "zlib",
            Codec::Zstd(_) => "zstd",
        }
    }

    /// The level, as MySQL's `Compression_level` status shows it.
    pub fn level(&self) -> i32 {
        match *self {
            Codec::Zlib(level) => level as i32,
            Codec::Zstd(level) => level,
        }
    }
}

/// Why a compressed frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressedError {
    #[error("compressed frame: corrupt data")]
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
/// content, inflated by `codec`, to `out`. `Ok(None)`: the frame is not all there yet.
pub fn decode_frame(
    input: &mut BytesMut,
    out: &mut BytesMut,
    codec: Codec,
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
        let inflating = match codec {
            Codec::Zlib(_) => inflate_zlib(content, inflated, out),
            Codec::Zstd(_) => inflate_zstd(content, inflated, out),
        };
        let actual = out.len() - start;
        if let Err(e) = inflating {
            out.truncate(start);
            return Err(e);
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

/// Inflates zlib `content` onto `out`, stopping one byte past `declared`: a frame that
/// inflates to more is caught, never followed further.
fn inflate_zlib(
    content: &[u8],
    declared: usize,
    out: &mut BytesMut,
) -> Result<(), CompressedError> {
    out.reserve(declared);
    let mut reader = ZlibDecoder::new(content).take(declared as u64 + 1);
    std::io::copy(&mut reader, &mut (&mut *out).writer())
        .map(|_| ())
        .map_err(|_| CompressedError::Corrupt)
}

/// Inflates zstd `content` onto `out`, into at most `declared` + 1 bytes of room: a frame
/// that inflates to more fails there.
fn inflate_zstd(
    content: &[u8],
    declared: usize,
    out: &mut BytesMut,
) -> Result<(), CompressedError> {
    let start = out.len();
    out.resize(start + declared + 1, 0);
    match zstd::bulk::decompress_to_buffer(content, &mut out[start..]) {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            // no room left: more than declared, else the data is bad
            match zstd::zstd_safe::get_frame_content_size(content) {
                Ok(Some(size)) if size > declared as u64 => Err(CompressedError::Length {
                    declared,
                    actual: size as usize,
                }),
                _ => Err(CompressedError::Corrupt),
            }
        }
    }
}

/// Appends `data` to `out` as compressed frames by `codec`, numbered from `*seq` on;
/// `*seq` ends after the last one.
pub fn encode(data: &[u8], codec: Codec, seq: &mut u8, out: &mut BytesMut) {
    for chunk in data.chunks(MAX_CONTENT) {
        let at = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let inflated = if chunk.len() < MIN_COMPRESSED {
            out.extend_from_slice(chunk);
            0
        } else {
            match codec {
                Codec::Zlib(level) => {
                    let mut encoder =
                        ZlibEncoder::new((&mut *out).writer(), Compression::new(level));
                    encoder.write_all(chunk).expect("writes to memory");
                    encoder.finish().expect("writes to memory");
                }
                Codec::Zstd(level) => {
                    let compressed =
                        zstd::bulk::compress(chunk, level).expect("compresses to memory");
                    out.extend_from_slice(&compressed);
                }
            }
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

    const CODECS: [Codec; 2] = [Codec::Zlib(6), Codec::Zstd(3)];

    fn round_trip(data: &[u8], codec: Codec) -> (Vec<u8>, usize) {
        let mut seq = 5;
        let mut wire = BytesMut::new();
        encode(data, codec, &mut seq, &mut wire);
        let mut out = BytesMut::new();
        let mut frames = 0;
        let mut expected_seq = 5u8;
        while let Some(frame) = decode_frame(&mut wire, &mut out, codec).unwrap() {
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
        for codec in CODECS {
            assert_eq!(
                round_trip(b"\x01\x00\x00\x00\x0e", codec),
                (b"\x01\x00\x00\x00\x0e".to_vec(), 1)
            );
            let rows: Vec<u8> = (0..100_000u32)
                .flat_map(|i| (i % 251).to_le_bytes())
                .collect();
            assert_eq!(round_trip(&rows, codec), (rows.clone(), 1));
            // past one frame's content: several frames
            let big: Vec<u8> = (0..(MAX_CONTENT + 1000)).map(|i| (i % 7) as u8).collect();
            assert_eq!(round_trip(&big, codec), (big.clone(), 2), "{codec:?}");
        }
    }

    #[test]
    fn small_or_incompressible_content_goes_as_is() {
        for codec in CODECS {
            let mut seq = 0;
            let mut wire = BytesMut::new();
            encode(b"short", codec, &mut seq, &mut wire);
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
            encode(&noise, codec, &mut seq, &mut wire);
            assert_eq!(&wire[4..7], &[0, 0, 0], "sent as is");
            assert_eq!(wire.len(), HEADER_LEN + noise.len());
        }
    }

    #[test]
    fn a_partial_frame_waits_and_a_lying_one_is_refused() {
        for codec in CODECS {
            let mut wire = BytesMut::new();
            encode(&[b'x'; 1000], codec, &mut 0, &mut wire);
            let mut partial = BytesMut::from(&wire[..wire.len() - 1]);
            let mut out = BytesMut::new();
            assert_eq!(decode_frame(&mut partial, &mut out, codec), Ok(None));
            assert!(out.is_empty() && partial.len() == wire.len() - 1);

            // the header claims less than the content inflates to
            let mut lying = wire.clone();
            lying[4..7].copy_from_slice(&[10, 0, 0]);
            assert!(
                matches!(
                    decode_frame(&mut lying, &mut out, codec),
                    Err(CompressedError::Length { declared: 10, .. })
                ),
                "{codec:?}"
            );
            // and more
            let mut lying = wire.clone();
            lying[4..7].copy_from_slice(&[0xFF, 0xFF, 0x0F]);
            assert!(matches!(
                decode_frame(&mut lying, &mut out, codec),
                Err(CompressedError::Length { actual: 1000, .. })
            ));
            let mut corrupt = wire.clone();
            corrupt[HEADER_LEN + 3] ^= 0xFF;
            assert!(decode_frame(&mut corrupt, &mut out, codec).is_err());
            assert!(out.is_empty(), "nothing of a bad frame is kept");
        }
    }

    #[test]
    fn zlib_data_is_not_taken_for_zstd_nor_the_reverse() {
        let data = [b'y'; 500];
        let mut zlib = BytesMut::new();
        encode(&data, Codec::Zlib(6), &mut 0, &mut zlib);
        let mut zstd = BytesMut::new();
        encode(&data, Codec::Zstd(3), &mut 0, &mut zstd);
        let mut out = BytesMut::new();
        assert!(decode_frame(&mut zlib, &mut out, Codec::Zstd(3)).is_err());
        assert!(decode_frame(&mut zstd, &mut out, Codec::Zlib(6)).is_err());
        assert!(out.is_empty());
    }
}
