//! Proxies of one `[cluster] name` sharing one configuration through the Galera cluster
//! they front: no daemon and no store of their own, the synchronously replicated cluster
//! is the store. See the README's "Two proxies".

pub mod document;
pub mod store;
mod sync;

pub use sync::{Cluster, PeerView, SyncCounters, SyncStatus};
