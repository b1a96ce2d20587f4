//! The packet decoder: framing of a socket buffer and the response tracker that scans
//! backend bytes for the end of a response (fingerprinting them, for half the inputs). Arbitrary bytes must never panic, loop, or
//! claim more bytes than the buffer holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::protocol::constants::command;
use sluice::protocol::frame::{check_packet, reassemble};
use sluice::protocol::response::ResponseTracker;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(span)) = check_packet(data, 1 << 20) {
        assert!(span.wire_len <= data.len());
        assert_eq!(reassemble(data, &span).len(), span.payload_len);
    }
    let Some((&cmd, rest)) = data.split_first() else {
        return;
    };
    // one past the commands: an execute that asked for a cursor
    let cmd = cmd % (command::RESET_CONNECTION + 2);
    let tracker = match cmd {
        c if c > command::RESET_CONNECTION => Some(ResponseTracker::for_execute(true)),
        c => ResponseTracker::for_command(c),
    };
    if let Some(mut tracker) = tracker {
        if rest.len() % 2 == 1 {
            // the fingerprint a transaction's replay compares, on half the inputs
            tracker.fingerprint_results();
        }
        // the rest as raw wire bytes, fed in two pieces like two socket reads
        let cut = rest.len() / 2;
        if let Ok(scan) = tracker.scan(&rest[..cut]) {
            assert!(scan.complete <= cut);
            if scan.end.is_none() && !tracker.is_finished() {
                if let Ok(next) = tracker.scan(&rest[scan.complete..]) {
                    assert!(scan.complete + next.complete <= rest.len());
                }
            }
        }
    }
});
