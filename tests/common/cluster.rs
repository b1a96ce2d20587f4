//! Proxies of one `[cluster] name`: the section, a started pair, and the peers table.

use std::time::{Duration, Instant};

use super::{mariadb, mariadb_ok, repo, Proxy};

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

pub fn admin_ok(proxy: &Proxy, sql: &str) -> String {
    mariadb_ok(proxy, proxy.admin_port, "admin", sql)
}

pub fn admin(proxy: &Proxy, sql: &str) -> std::process::Output {
    mariadb(proxy.admin_port, &["-uadmin", "-padmin", "-e", sql])
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

pub fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}
