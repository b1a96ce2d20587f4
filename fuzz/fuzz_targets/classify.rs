//! The rule engine's tokenizer and statement analysis on arbitrary bytes: no panic, no
//! loop, and the routing meaning derived from it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut analyzer = sluice::rules::Analyzer::default();
    let analysis = analyzer.analyze(data);
    let _ = sluice::router::Statement::of(&analysis);
    assert!(analysis.tables.names(data).count() <= sluice::rules::analysis::Tables::MAX);
});
