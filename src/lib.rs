//! Sluice: a MySQL-protocol proxy for MariaDB Galera clusters and their replicas.

pub mod admin;
pub mod allocator;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod connlog;
pub mod frontend;
pub mod metrics;
pub mod monitor;
pub mod protocol;
pub mod query_cache;
pub mod router;
pub mod rules;
pub mod runtime;
pub mod server;
pub mod shared;
pub mod tls;
