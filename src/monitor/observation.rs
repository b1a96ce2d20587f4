//! What a check of a server found, and what that says about the server: whether it may
//! serve, and why not. Plain values, shared with the check log the admin port and
//! `/metrics` read.

/// What one check of a server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Connect, login or a query failed or timed out.
    Unreachable(String),
    Galera(GaleraStatus),
    Replica(ReplicaStatus),
    /// A server that is neither a Galera node nor a replica.
    Plain {
        read_only: bool,
    },
}

/// The Galera state of a node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GaleraStatus {
    /// `wsrep_local_state`: 4 is Synced.
    pub local_state: u32,
    /// `wsrep_cluster_status` is Primary.
    pub primary: bool,
    pub ready: bool,
    pub desync: bool,
    /// `wsrep_reject_queries` is not NONE.
    pub reject_queries: bool,
    /// `wsrep_sst_donor_rejects_queries`: a donor refuses queries during SST. Recorded for
    /// the log; a donor is not Synced, so it serves nothing either way.
    pub donor_rejects_queries: bool,
    pub read_only: bool,
    /// `wsrep_local_recv_queue`: writesets received and not yet applied.
    pub recv_queue: u64,
    /// `wsrep_cluster_conf_id`: changes whenever the primary component's membership does
    /// (a node evicted or joined); equal on every member of one component.
    pub conf_id: u64,
}

/// The replication state of an asynchronous replica.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicaStatus {
    pub io_running: bool,
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; `None` when the server does not know (threads stopped).
    pub lag: Option<u64>,
    pub read_only: bool,
}

pub const GALERA_SYNCED: u32 = 4;

impl Observation {
    /// Whether the server may serve at all. `max_lag` is the server's
    /// `max_replication_lag` (0: not checked).
    pub fn is_healthy(&self, max_lag: u64) -> bool {
        match self {
            Observation::Unreachable(_) => false,
            Observation::Galera(g) => {
                g.local_state == GALERA_SYNCED
                    && g.primary
                    && g.ready
                    && !g.desync
                    && !g.reject_queries
            }
            Observation::Replica(r) => {
                r.io_running
                    && r.sql_running
                    && r.lag.is_some_and(|lag| max_lag == 0 || lag <= max_lag)
            }
            Observation::Plain { .. } => true,
        }
    }
}

impl Observation {
    /// Why this observation does not qualify, in words for an error message.
    pub fn problem(&self, max_lag: u64) -> String {
        match self {
            Observation::Unreachable(why) => why.clone(),
            Observation::Galera(g) => {
                let mut p = Vec::new();
                if g.local_state != GALERA_SYNCED {
                    let donor = if g.local_state == 2 && g.donor_rejects_queries {
                        " (donor, rejecting queries)"
                    } else {
                        ""
                    };
                    p.push(format!("wsrep_local_state={}{donor}", g.local_state));
                }
                if !g.primary {
                    p.push("not in the Primary component".into());
                }
                if !g.ready {
                    p.push("wsrep_ready=OFF".into());
                }
                if g.desync {
                    p.push("wsrep_desync=ON".into());
                }
                if g.reject_queries {
                    p.push("wsrep_reject_queries set".into());
                }
                if p.is_empty() && g.read_only {
                    p.push("read_only=ON".into());
                }
                p.join(", ")
            }
            Observation::Replica(r) => {
                if !r.io_running || !r.sql_running {
                    format!(
                        "replication stopped (IO {}, SQL {})",
                        yes_no(r.io_running),
                        yes_no(r.sql_running)
                    )
                } else {
                    match r.lag {
                        Some(lag) => format!("{lag} s behind, limit {max_lag} s"),
                        None => "lag unknown".into(),
                    }
                }
            }
            Observation::Plain { .. } => String::new(),
        }
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "running"
    } else {
        "stopped"
    }
}
