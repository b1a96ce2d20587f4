//! What the proxy knows about a statement's text and what it does about it: the tokenizer
//! and analysis (digest, kind, tables), query rules, the digest firewall, injection shapes
//! and the query log.

pub mod analysis;
pub mod command;
pub mod engine;
pub mod firewall;
pub mod injection;
pub mod keywords;
pub mod querylog;
pub mod stats;
pub mod tokens;
pub mod variables;

pub use analysis::{Analysis, Analyzer, Features, Kind};
pub use command::Command;
pub use engine::{format_digest, parse_digest, Decision, MirrorTo, Query, QueryRules};
pub use firewall::{Firewall, Verdict};
pub use injection::Suspicion;
pub use querylog::QueryLog;
pub use stats::DigestStats;
