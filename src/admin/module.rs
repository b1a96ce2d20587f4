//! What `LOAD` and `SAVE` move: ProxySQL's modules.

/// A group of tables that is loaded and saved together, as in ProxySQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// `mysql_servers`, `mysql_galera_hostgroups`, `mysql_replication_hostgroups`.
    Servers,
    Users,
    QueryRules,
    Variables,
    /// The read-only `admin-` rows of `global_variables`.
    AdminVariables,
}
