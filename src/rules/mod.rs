//! What the proxy knows about a statement's text and what it does about it: the tokenizer,
//! digests and classification.

pub mod analysis;
pub mod keywords;
pub mod tokens;

pub use analysis::{Analysis, Analyzer, Features, Kind};
