//! Who may even start a login: failed-login throttling and per-address connection caps.
//! Both are keyed by client IP address and consulted when a connection is accepted, before
//! the proxy spends a greeting, a TLS handshake or a backend connection on it.
//!
//! The tables sit behind plain mutexes: they are touched once or twice per connection
//! (never per query), for a few hundred nanoseconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Throttle;

/// Addresses remembered for throttling beyond this many are pruned (those not blocked go
/// first), so that a spray of source addresses cannot grow the table without bound.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Default)]
struct Failures {
    /// Consecutive failed logins since the last success or block.
    count: u32,
    blocked_until: Option<Instant>,
    /// When the block in force began.
    blocked_at: Option<Instant>,
    /// How many times the address was blocked: each block lasts twice as long.
    blocks: u32,
    /// When its last login failed.
    last_failed: Option<SystemTime>,
}

/// One tracked address, as the admin port shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrackedAddress {
    pub ip: IpAddr,
    /// Consecutive failed logins.
    pub failures: u32,
    /// Times blocked.
    pub blocks: u32,
    /// How much longer it is blocked.
    pub blocked_for: Option<Duration>,
    /// When its last login failed, in Unix microseconds (0: none since a block).
    pub last_failed_unix_us: u64,
}

/// Why a connection is refused before its login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Throttled { remaining: Duration },
    TooManyFromAddress { max: usize },
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Admission {
    failures: Mutex<HashMap<IpAddr, Failures>>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Blocks the proxies of the cluster imposed (this one's too), as last read from it;
    /// replaced whole at each sync, so a block lifted there is lifted here.
    cluster_blocks: Mutex<HashMap<IpAddr, Instant>>,
    /// Blocks imposed here that the cluster has not been told of (filled only while a
    /// cluster sync drains it).
    outbox: Mutex<Vec<(IpAddr, Duration)>>,
    pub sharing: AtomicBool,
}

/// Counts one open connection of an address for as long as it lives.
#[derive(Debug)]
pub struct AddressSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().expect("admission lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// Admits a new connection from `ip`, or says why not. `max_per_address` 0 means no cap.
    pub fn admit(&self, ip: IpAddr, max_per_address: usize) -> Result<AddressSlot, Refusal> {
        if let Some(remaining) = self.blocked_for(ip) {
            return Err(Refusal::Throttled { remaining });
        }
        let mut open = self.open.lock().expect("admission lock");
        let n = open.entry(ip).or_insert(0);
        if max_per_address > 0 && *n >= max_per_address {
            return Err(Refusal::TooManyFromAddress {
                max: max_per_address,
            });
        }
        *n += 1;
        Ok(AddressSlot {
            ip,
            open: self.open.clone(),
        })
    }

    /// How much longer `ip` is blocked, if it is (here or by a peer).
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let own = self
            .failures
            .lock()
            .expect("admission lock")
            .get(&ip)
            .and_then(|f| f.blocked_until);
        let peers = self
            .cluster_blocks
            .lock()
            .expect("admission lock")
            .get(&ip)
            .copied();
        own.max(peers)?.checked_duration_since(now)
    }

    /// The blocks in force across the cluster, `(address, for how much longer)`, read
    /// after every block imposed here before `as_of` was shared: a block of this proxy's
    /// that the cluster no longer holds was lifted there (a flush on a peer), and is
    /// lifted here too.
    pub fn set_cluster_blocks(&self, blocks: &[(IpAddr, Duration)], as_of: Instant) {
        let now = Instant::now();
        let blocks: HashMap<IpAddr, Instant> =
            blocks.iter().map(|(ip, d)| (*ip, now + *d)).collect();
        let mut failures = self.failures.lock().expect("admission lock");
        for (ip, f) in failures.iter_mut() {
            if f.blocked_at.is_some_and(|t| t <= as_of) && !blocks.contains_key(ip) {
                f.blocked_until = None;
                f.blocked_at = None;
            }
        }
        drop(failures);
        *self.cluster_blocks.lock().expect("admission lock") = blocks;
    }

    /// Takes the blocks imposed here since the last call, to be shared.
    pub fn take_new_blocks(&self) -> Vec<(IpAddr, Duration)> {
        std::mem::take(&mut *self.outbox.lock().expect("admission lock"))
    }

    /// Records a failed login; returns how long the address is now blocked, if this
    /// failure tipped it over.
    pub fn login_failed(&self, ip: IpAddr, policy: &Throttle) -> Option<Duration> {
        let mut failures = self.failures.lock().expect("admission lock");
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
            let now = Instant::now();
            failures.retain(|_, f| f.blocked_until.is_some_and(|t| t > now));
            if failures.len() >= MAX_TRACKED {
                return None;
            }
        }
        let f = failures.entry(ip).or_default();
        f.count += 1;
        f.last_failed = Some(SystemTime::now());
        if f.count < policy.max_failures {
            return None;
        }
        let block = Duration::from_millis(policy.block_ms)
            .saturating_mul(1 << f.blocks.min(20))
            .min(Duration::from_millis(
                policy.max_block_ms.max(policy.block_ms),
            ));
        f.count = 0;
        f.blocks += 1;
        let now = Instant::now();
        f.blocked_until = Some(now + block);
        f.blocked_at = Some(now);
        drop(failures);
        if self.sharing.load(Ordering::Relaxed) {
            let mut outbox = self.outbox.lock().expect("admission lock");
            if outbox.len() < MAX_TRACKED {
                outbox.push((ip, block));
            }
        }
        Some(block)
    }

    /// Every tracked address (for the admin port), in address order.
    pub fn tracked(&self) -> Vec<TrackedAddress> {
        let now = Instant::now();
        let mut all: Vec<_> = self
            .failures
            .lock()
            .expect("admission lock")
            .iter()
            .map(|(ip, f)| TrackedAddress {
                ip: *ip,
                failures: f.count,
                blocks: f.blocks,
                blocked_for: f.blocked_until.and_then(|t| t.checked_duration_since(now)),
                last_failed_unix_us: f
                    .last_failed
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_micros() as u64),
            })
            .collect();
        all.sort();
        all
    }

    /// Forgets every failure and block (`PROXYSQL FLUSH MYSQL CLIENT HOSTS`).
    pub fn clear(&self) {
        self.failures.lock().expect("admission lock").clear();
        self.cluster_blocks.lock().expect("admission lock").clear();
    }

    /// A successful login clears the address's failures (its block history stays, so a
    /// guesser who sometimes succeeds still escalates).
    pub fn login_succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("admission lock");
        if let Some(f) = failures.get_mut(&ip) {
            f.count = 0;
            if f.blocks == 0 {
                failures.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Throttle {
        Throttle {
            max_failures: 3,
            block_ms: 1000,
            max_block_ms: 3000,
        }
    }

    #[test]
    fn consecutive_failures_block_an_address_for_growing_periods() {
        let a = Admission::default();
        let ip: IpAddr = "127.0.0.3".parse().unwrap();
        let other: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(a.login_failed(ip, &policy()), None);
        assert_eq!(a.login_failed(ip, &policy()), None);
        assert_eq!(
            a.login_failed(ip, &policy()),
            Some(Duration::from_millis(1000))
        );
        assert!(matches!(a.admit(ip, 0), Err(Refusal::Throttled { .. })));
        assert!(a.admit(other, 0).is_ok(), "other addresses are served");
        for _ in 0..2 {
            a.login_failed(ip, &policy());
        }
        assert_eq!(
            a.login_failed(ip, &policy()),
            Some(Duration::from_millis(2000))
        );
        for _ in 0..5 {
            a.login_failed(ip, &policy());
        }
        assert_eq!(
            a.login_failed(ip, &policy()),
            Some(Duration::from_millis(3000)),
            "capped"
        );
    }

    #[test]
    fn blocks_read_from_the_cluster_refuse_until_lifted_there() {
        let a = Admission::default();
        let ip: IpAddr = "127.0.0.6".parse().unwrap();
        a.set_cluster_blocks(&[(ip, Duration::from_secs(30))], Instant::now());
        assert!(matches!(a.admit(ip, 0), Err(Refusal::Throttled { .. })));
        a.set_cluster_blocks(&[], Instant::now());
        assert!(a.admit(ip, 0).is_ok());
        a.sharing.store(true, Ordering::Relaxed);
        let before = Instant::now();
        for _ in 0..3 {
            a.login_failed(ip, &policy());
        }
        assert_eq!(a.take_new_blocks(), vec![(ip, Duration::from_millis(1000))]);
        assert!(a.take_new_blocks().is_empty());
        a.set_cluster_blocks(&[], before);
        assert!(a.admit(ip, 0).is_err(), "a block newer than the read stays");
        a.set_cluster_blocks(&[], Instant::now());
        assert!(a.admit(ip, 0).is_ok(), "lifted in the cluster: lifted here");
    }

    #[test]
    fn a_success_resets_the_count() {
        let a = Admission::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        a.login_failed(ip, &policy());
        a.login_failed(ip, &policy());
        a.login_succeeded(ip);
        assert_eq!(a.login_failed(ip, &policy()), None);
        assert!(a.admit(ip, 0).is_ok());
    }

    #[test]
    fn per_address_caps_hold_and_release() {
        let a = Admission::default();
        let ip: IpAddr = "127.0.0.4".parse().unwrap();
        let first = a.admit(ip, 2).unwrap();
        let _second = a.admit(ip, 2).unwrap();
        assert_eq!(
            a.admit(ip, 2).unwrap_err(),
            Refusal::TooManyFromAddress { max: 2 }
        );
        assert!(a.admit("127.0.0.5".parse().unwrap(), 2).is_ok());
        drop(first);
        assert!(a.admit(ip, 2).is_ok());
    }
}
