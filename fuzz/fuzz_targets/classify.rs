//! The statement classifier (the router's tokenizer) on arbitrary text: no panic, no loop.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice::router::classify(data);
});
