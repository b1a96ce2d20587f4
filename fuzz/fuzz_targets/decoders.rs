//! Every decoder the proxy runs on bytes from the network, fed arbitrary input: none may
//! panic, loop or allocate beyond the input, and what decodes must re-encode to something
//! that decodes to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::constants::command;
use sluice::protocol::frame::{check_packet, reassemble};
use sluice::protocol::handshake::{
    is_ssl_request, AuthSwitchRequest, ChangeUser, HandshakeResponse, InitialHandshake,
};
use sluice::protocol::packets::{ErrPacket, OkPacket};
use sluice::protocol::response::ResponseTracker;

fuzz_target!(|data: &[u8]| {
    // framing: the first bytes of a buffer, as a socket would deliver them
    if let Ok(Some(span)) = check_packet(data, 1 << 20) {
        assert!(span.wire_len <= data.len());
        assert_eq!(reassemble(data, &span).len(), span.payload_len);
    }

    // connection phase, both directions
    if let Ok(hs) = InitialHandshake::decode(data) {
        if hs.scramble.len() < 240 {
            let mut out = BytesMut::new();
            hs.encode(&mut out);
            InitialHandshake::decode(&out).expect("re-encoded greeting decodes");
        }
    }
    let _ = is_ssl_request(data);
    if let Ok(resp) = HandshakeResponse::decode(data) {
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        let _ = HandshakeResponse::decode(&out);
    }
    let _ = AuthSwitchRequest::decode(data);
    if let Some((&caps, body)) = data.split_first() {
        let _ = ChangeUser::decode(body, u32::from(caps) << 8 | 0x200);
    }

    // responses
    let _ = OkPacket::decode(data);
    let _ = ErrPacket::decode(data);
    if let Some((&cmd, rest)) = data.split_first() {
        let cmd = cmd % (command::RESET_CONNECTION + 1);
        if let Some(mut tracker) = ResponseTracker::for_command(cmd) {
            // the rest as a sequence of length-prefixed packets
            let mut input = rest;
            while let Some((&len, tail)) = input.split_first() {
                let len = usize::from(len).min(tail.len());
                let (packet, tail) = tail.split_at(len);
                if tracker.feed(packet, packet.len()).is_err() || tracker.is_finished() {
                    break;
                }
                input = tail;
            }
        }
    }
});
