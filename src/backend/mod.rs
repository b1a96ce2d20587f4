//! The client side of the proxy: connections to MariaDB servers and the single door
//! through which sessions get them.
//!
//! Sessions never open backend connections themselves; they ask [`Pool::acquire`] for one
//! and give it back with [`Pool::release`]. Today the pool opens a connection per request;
//! pooling and multiplexing change what happens behind that door, not its callers.

mod conn;
mod pool;
pub mod statements;

pub use conn::{read_response, BackendConn, BackendError, Login};
pub use pool::{AcquireError, IdleConnection, Pool};

/// Adds one to a statistics counter.
fn count(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}
