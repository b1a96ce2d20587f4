//! Proxies of one `[cluster] name`: the section, a started pair, and the peers table.

use std::time::Duration;

use super::{admin_ok, mariadb, repo, wait_for, Proxy};

/// The sync interval these tests run with.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// The `[cluster]` section for a cluster name of its own per test.
pub fn cluster_section(name: &str) -> String {
    format!(
        "\n[cluster]\nname = \"{name}_{}\"\nsync = true\nuser = \"sluice_cluster\"\npassword_file = \"{}/config/cluster.secret\"\ninterval_ms = {}\n",
        std::process::id(),
        repo().display(),
        INTERVAL.as_millis()
    )
}

/// Two proxies of one cluster name (`edit` applies to both configurations, which end with
/// the `[cluster]` section).
pub fn pair(name: &str, edit: impl Fn(String) -> String) -> (Proxy, Proxy) {
    let section = cluster_section(name);
    let a = Proxy::start_with(|c| edit(c + &section));
    let b = Proxy::start_with(|c| edit(c + &section));
    wait_for(
        Duration::from_secs(10),
        "both proxies on one version",
        || {
            let (va, vb) = (version(&a), version(&b));
            va > 0 && va == vb
        },
    );
    (a, b)
}

pub fn app(proxy: &Proxy, sql: &str) -> std::process::Output {
    mariadb(proxy.port, &["-uapp", "-papp", "-e", sql])
}

/// The configuration version a proxy runs, from its own row of the peers table.
pub fn version(proxy: &Proxy) -> u64 {
    admin_ok(
        proxy,
        "SELECT version FROM stats_sluice_cluster_peers WHERE is_self = 1",
    )
    .trim()
    .parse()
    .unwrap_or(0)
}
