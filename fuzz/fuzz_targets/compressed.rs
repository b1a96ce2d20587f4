//! The compressed protocol's frame decoder on arbitrary bytes from a client, zlib and
//! zstd alike: no panic, no loop, never more inflated than a frame declared; and whatever
//! is encoded decodes back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::compressed::{decode_frame, encode, Codec, HEADER_LEN, MAX_CONTENT};

fuzz_target!(|data: &[u8]| {
    let first = data.first().copied().unwrap_or(0);
    // the first byte picks the codec and its level
    let codec = match first % 2 {
        0 => Codec::Zlib(1 + u32::from(first % 9)),
        _ => Codec::Zstd(1 + i32::from(first % 19)),
    };
    let mut input = BytesMut::from(data);
    let mut out = BytesMut::new();
    while let Ok(Some(frame)) = decode_frame(&mut input, &mut out, codec) {
        assert!(frame.wire_len >= HEADER_LEN);
    }
    assert!(out.len() <= MAX_CONTENT * (data.len() / HEADER_LEN + 1));

    let mut seq = first;
    let mut wire = BytesMut::new();
    encode(data, codec, &mut seq, &mut wire);
    let mut back = BytesMut::new();
    while decode_frame(&mut wire, &mut back, codec)
        .expect("our own frames decode")
        .is_some()
    {}
    assert!(wire.is_empty());
    assert_eq!(&back[..], data);
});
