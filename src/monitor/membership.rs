//! Which server is in which hostgroup now: what the monitor publishes for the pool and
//! the sessions to use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::runtime::{Members, Runtime, ServerTarget};

/// Hostgroup membership at one moment.
#[derive(Debug, Default)]
pub struct Membership {
    pub hostgroups: HashMap<u32, Members>,
    /// Per Galera writer hostgroup, the elected writers' addresses (kept across rounds).
    pub writers: HashMap<u32, Vec<String>>,
    /// Per hostgroup, why configured servers are not in it: for the error a client gets
    /// when a hostgroup is empty.
    pub unavailable: HashMap<u32, Vec<String>>,
    /// Servers whose verdict is "down" because checks could not reach them (dead or hung).
    pub unreachable: HashSet<String>,
    /// Replicas out of service for their replication (stopped or too far behind): what
    /// ProxySQL shows as `SHUNNED_REPLICATION_LAG`.
    pub lagging: HashSet<String>,
}

impl Membership {
    /// The same placement with each server replaced by its entry in `runtime` (the one
    /// configured in that hostgroup if there is one, else any with the same address);
    /// servers no longer configured are dropped.
    pub fn with_servers_of(&self, runtime: &Runtime) -> Membership {
        let find = |hostgroup: u32, address: &str| {
            let same: Vec<&Arc<ServerTarget>> = runtime
                .servers()
                .filter(|s| s.address() == address)
                .collect();
            same.iter()
                .find(|s| s.hostgroup == hostgroup)
                .or(same.first())
                .map(|s| Arc::clone(s))
        };
        let hostgroups = self
            .hostgroups
            .iter()
            .map(|(id, members)| {
                let servers = members
                    .servers
                    .iter()
                    .filter_map(|s| find(*id, s.address()))
                    .collect();
                (*id, Members::new(servers))
            })
            .collect();
        Membership {
            hostgroups,
            writers: self.writers.clone(),
            unavailable: self.unavailable.clone(),
            lagging: self.lagging.clone(),
            unreachable: self.unreachable.clone(),
        }
    }
}
