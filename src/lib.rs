//! Sluice: a MySQL-protocol proxy for MariaDB Galera clusters and their replicas.

pub mod protocol;
