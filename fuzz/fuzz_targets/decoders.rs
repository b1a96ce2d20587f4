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
use sluice::protocol::response::{summarize_result, ResponseTracker};
use sluice::protocol::statement::{statement_id, ExecuteLayout, PrepareOk};

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

    // prepared statements: a client's execute, a server's PREPARE_OK
    let _ = statement_id(data);
    let _ = PrepareOk::decode(data);
    if let Some((&params, execute)) = data.split_first() {
        if let Ok(layout) = ExecuteLayout::parse(execute, u16::from(params)) {
            if let Some(types) = &layout.types {
                assert!(types.end <= execute.len());
            }
            let types = vec![0x08; 2 * usize::from(params)];
            if let Some(bound) = layout.with_types(execute, &types) {
                let again = ExecuteLayout::parse(&bound, u16::from(params)).expect("bound decodes");
                assert_eq!(&bound[again.types.expect("now bound")], &types[..]);
            }
        }
    }

    // responses
    let _ = OkPacket::decode(data);
    let _ = ErrPacket::decode(data);
    // what the query cache would keep: one complete result set, as the tracker sees it too
    if let Some(summary) = summarize_result(data) {
        let mut tracker = ResponseTracker::for_command(command::QUERY).expect("query");
        let scan = tracker.scan(data).expect("a summarized result scans");
        assert_eq!(scan.complete, data.len(), "{summary:?}: the result ends where it ends");
        assert!(scan.end.is_some());
    }
    if let Some((&cmd, rest)) = data.split_first() {
        let cmd = cmd % (command::RESET_CONNECTION + 1);
        if let Some(mut tracker) = ResponseTracker::for_command(cmd) {
            // the rest as wire bytes, with flags added to its EOFs: lengths stay as they were
            let mut marked = tracker.clone();
            marked.add_status(0x0400);
            let mut wire = rest.to_vec();
            if let Ok(scan) = marked.scan(&wire) {
                marked.mark(&mut wire[..scan.complete]);
                assert_eq!(wire.len(), rest.len());
            }
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
