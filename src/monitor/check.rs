//! One check of one server, over the monitor's own connection to it.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::backend::{BackendConn, BackendError, Login};
use crate::protocol::text::TextResult;
use crate::runtime::ServerTarget;

use super::health::{GaleraStatus, Observation, ReplicaStatus};

const GALERA_VARIABLES: &str = "SELECT @@read_only AS read_only, @@wsrep_on AS wsrep_on, \
     @@wsrep_desync AS wsrep_desync, @@wsrep_reject_queries AS wsrep_reject_queries, \
     @@wsrep_sst_donor_rejects_queries AS donor_rejects";
const GALERA_STATUS: &str = "SHOW GLOBAL STATUS WHERE Variable_name IN \
     ('wsrep_local_state', 'wsrep_cluster_status', 'wsrep_ready', 'wsrep_local_recv_queue', \
     'wsrep_cluster_conf_id')";
const REPLICA_STATUS: &str = "SHOW REPLICA STATUS";

/// What one check found, and whether it had to connect first (`None`: it used the
/// connection kept from the check before; else whether connecting worked).
pub struct Checked {
    pub seen: Observation,
    pub connected: Option<bool>,
    /// The server did not answer within the timeout (rather than refusing or failing):
    /// it may be slow or hung, not gone.
    pub timed_out: bool,
}

/// Checks `server`, connecting first when `conn` holds no connection. The whole check is
/// bounded by `timeout`: a hung server is a failed check. On failure the connection is
/// dropped, to be opened afresh next time.
pub async fn check(
    conn: &mut Option<BackendConn>,
    server: &Arc<ServerTarget>,
    login: &Login,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Checked {
    let mut connected = None;
    let mut timed_out = false;
    let observing = observe(
        conn,
        &mut connected,
        &mut timed_out,
        server,
        login,
        tls,
        timeout,
    );
    let seen = match tokio::time::timeout(timeout, observing).await {
        Ok(Ok(seen)) => seen,
        Ok(Err(e)) => {
            *conn = None;
            Observation::Unreachable(e)
        }
        Err(_) => {
            *conn = None;
            timed_out = true;
            Observation::Unreachable(format!("no answer within {timeout:?}"))
        }
    };
    // a connect cut short by the timeout is left at Some(false)
    Checked {
        seen,
        connected,
        timed_out,
    }
}

/// `timed_out` is set when the login did not complete in time (the outer timeout covers
/// the rest).
async fn observe(
    conn: &mut Option<BackendConn>,
    connected: &mut Option<bool>,
    timed_out: &mut bool,
    server: &Arc<ServerTarget>,
    login: &Login,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<Observation, String> {
    if conn.is_none() {
        *connected = Some(false);
        *conn = Some(
            BackendConn::connect(server, login, tls, timeout)
                .await
                .map_err(|e| {
                    *timed_out = matches!(e, BackendError::Timeout(..));
                    e.to_string()
                })?,
        );
        *connected = Some(true);
    }
    let c = conn.as_mut().expect("connected");
    let vars = query(c, GALERA_VARIABLES).await?;
    let read_only = flag(vars.first("read_only"));
    if flag(vars.first("wsrep_on")) {
        let status = query(c, GALERA_STATUS).await?;
        let value = |name: &str| {
            status
                .rows
                .iter()
                .find(|r| {
                    r.first()
                        .and_then(|v| v.as_deref())
                        .is_some_and(|v| v.eq_ignore_ascii_case(name))
                })
                .and_then(|r| r.get(1).cloned().flatten())
        };
        return Ok(Observation::Galera(GaleraStatus {
            local_state: value("wsrep_local_state")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            primary: value("wsrep_cluster_status").as_deref() == Some("Primary"),
            ready: flag(value("wsrep_ready").as_deref()),
            desync: flag(vars.first("wsrep_desync")),
            reject_queries: vars
                .first("wsrep_reject_queries")
                .is_some_and(|v| !v.eq_ignore_ascii_case("NONE")),
            donor_rejects_queries: flag(vars.first("donor_rejects")),
            read_only,
            recv_queue: value("wsrep_local_recv_queue")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            conf_id: value("wsrep_cluster_conf_id")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        }));
    }
    let replica = query(c, REPLICA_STATUS).await?;
    if replica.rows.is_empty() {
        return Ok(Observation::Plain { read_only });
    }
    Ok(Observation::Replica(ReplicaStatus {
        io_running: replica.first("Slave_IO_Running") == Some("Yes"),
        sql_running: replica.first("Slave_SQL_Running") == Some("Yes"),
        lag: replica
            .first("Seconds_Behind_Master")
            .and_then(|v| v.parse().ok()),
        read_only,
    }))
}

async fn query(conn: &mut BackendConn, sql: &str) -> Result<TextResult, String> {
    match conn.query_text(sql).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(err)) => Err(format!("{sql}: {err}")),
        Err(e @ BackendError::Protocol(..)) | Err(e) => Err(e.to_string()),
    }
}

/// MariaDB shows booleans as 1/0 or ON/OFF depending on the variable.
fn flag(value: Option<&str>) -> bool {
    matches!(
        value,
        Some("1") | Some("ON") | Some("on") | Some("YES") | Some("Yes")
    )
}
