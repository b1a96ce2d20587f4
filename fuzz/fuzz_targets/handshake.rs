//! The connection-phase decoders, both directions: the client's HandshakeResponse (the
//! first thing an unauthenticated stranger controls), COM_CHANGE_USER, the server greeting
//! and AuthSwitchRequest. What decodes must re-encode into something that decodes again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::handshake::{
    is_ssl_request, AuthSwitchRequest, ChangeUser, HandshakeResponse, InitialHandshake,
};
use sluice::protocol::packets::{ErrPacket, OkPacket};

fuzz_target!(|data: &[u8]| {
    let _ = is_ssl_request(data);
    if let Ok(resp) = HandshakeResponse::decode(data) {
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        let _ = HandshakeResponse::decode(&out);
    }
    if let Some((&caps, body)) = data.split_first() {
        let _ = ChangeUser::decode(body, u32::from(caps) << 8 | 0x200);
    }
    if let Ok(hs) = InitialHandshake::decode(data) {
        if hs.scramble.len() < 240 {
            let mut out = BytesMut::new();
            hs.encode(&mut out);
            InitialHandshake::decode(&out).expect("re-encoded greeting decodes");
        }
    }
    let _ = AuthSwitchRequest::decode(data);
    let _ = OkPacket::decode(data);
    let _ = ErrPacket::decode(data);
});
