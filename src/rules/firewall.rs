//! The digest firewall: per user, the statement shapes (digests) the application is known
//! to send. In detect mode new shapes are learned and logged; in protect mode only learned
//! shapes pass. The allow list lives in a plain text file next to the config so operators
//! can read, review and edit it; it is written atomically (temporary file, then rename).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::engine::{format_digest, parse_digest};
use crate::config::FirewallMode;

/// What the firewall says about one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known, or the firewall is off for this user.
    Pass,
    /// New, learned now (detect mode): protect mode would have refused it.
    Learned,
    /// Not on the allow list (protect mode).
    Blocked,
}

/// Digest text kept per entry, at most (the hash covers the whole text).
const TEXT_KEPT: usize = 1024;

/// Learned digests waiting to be shared with the other proxies of a cluster, at most.
const OUTBOX_LIMIT: usize = 100_000;

/// A statement shape learned for a user, as proxies of a cluster share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedDigest {
    pub user: String,
    pub digest: u64,
    pub text: String,
}

/// Digests learned here that the other proxies of the cluster have not been told of. It
/// outlives a reload's new [`Firewall`].
#[derive(Debug, Default)]
pub struct Outbox {
    /// Filled only while a cluster sync drains it.
    pub enabled: AtomicBool,
    learned: Mutex<Vec<LearnedDigest>>,
}

impl Outbox {
    /// Takes what waits to be shared.
    pub fn take(&self) -> Vec<LearnedDigest> {
        std::mem::take(&mut *self.learned.lock().expect("outbox lock"))
    }

    /// Puts back what could not be shared (the cluster did not answer).
    pub fn put_back(&self, mut learned: Vec<LearnedDigest>) {
        let mut waiting = self.learned.lock().expect("outbox lock");
        learned.append(&mut waiting);
        learned.truncate(OUTBOX_LIMIT);
        *waiting = learned;
    }

    fn push(&self, user: &str, digest: u64, text: &str) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut waiting = self.learned.lock().expect("outbox lock");
        if waiting.len() < OUTBOX_LIMIT {
            waiting.push(LearnedDigest {
                user: user.to_owned(),
                digest,
                text: text.to_owned(),
            });
        }
    }
}

/// The allow list of every user, and whether it changed since it was last written.
#[derive(Debug)]
pub struct Firewall {
    path: PathBuf,
    allowed: RwLock<HashMap<String, HashMap<u64, String>>>,
    dirty: AtomicBool,
    outbox: Arc<Outbox>,
}

impl Firewall {
    /// Reads the allow list at `path` (a missing file is an empty list); what it learns
    /// goes to `outbox` too.
    pub fn load(path: &Path, outbox: Arc<Outbox>) -> Result<Firewall, String> {
        let allowed = match std::fs::read_to_string(path) {
            Ok(text) => parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e.to_string()),
        };
        Ok(Firewall {
            path: path.to_owned(),
            allowed: RwLock::new(allowed),
            dirty: AtomicBool::new(false),
            outbox,
        })
    }

    /// Where digests learned here wait to be shared.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Adds digests another proxy learned (not shared again); returns how many were new.
    pub fn adopt(&self, learned: impl IntoIterator<Item = LearnedDigest>) -> usize {
        let mut allowed = self.allowed.write().expect("firewall lock");
        let mut added = 0;
        for LearnedDigest { user, digest, text } in learned {
            let digests = allowed.entry(user).or_default();
            if let std::collections::hash_map::Entry::Vacant(e) = digests.entry(digest) {
                e.insert(text);
                added += 1;
            }
        }
        if added > 0 {
            self.dirty.store(true, Ordering::Release);
        }
        added
    }

    /// Where the allow list is kept.
    /// Memory the allow list holds: users, digests and their texts (ProxySQL's
    /// `mysql_firewall_*` memory rows).
    pub fn memory_bytes(&self) -> usize {
        let allowed = self.allowed.read().expect("firewall lock");
        allowed
            .iter()
            .map(|(user, digests)| {
                user.capacity()
                    + digests
                        .values()
                        .map(|text| std::mem::size_of::<u64>() + text.capacity())
                        .sum::<usize>()
            })
            .sum()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks (and in detect mode, learns) one statement's digest for `user`.
    pub fn check(&self, mode: FirewallMode, user: &str, digest: u64, text: &[u8]) -> Verdict {
        if mode == FirewallMode::Off {
            return Verdict::Pass;
        }
        let known = self
            .allowed
            .read()
            .expect("firewall lock")
            .get(user)
            .is_some_and(|digests| digests.contains_key(&digest));
        match (known, mode) {
            (true, _) => Verdict::Pass,
            (false, FirewallMode::Protect) => Verdict::Blocked,
            (false, _) => {
                self.learn(user, digest, text);
                Verdict::Learned
            }
        }
    }

    fn learn(&self, user: &str, digest: u64, text: &[u8]) {
        let kept = &text[..text.len().min(TEXT_KEPT)];
        let text: String = String::from_utf8_lossy(kept)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.outbox.push(user, digest, &text);
        let mut allowed = self.allowed.write().expect("firewall lock");
        allowed
            .entry(user.to_owned())
            .or_default()
            .insert(digest, text);
        self.dirty.store(true, Ordering::Release);
    }

    /// How many digests are allowed for `user`.
    pub fn allowed_count(&self, user: &str) -> usize {
        self.allowed
            .read()
            .expect("firewall lock")
            .get(user)
            .map_or(0, HashMap::len)
    }

    /// Writes the allow list out if something was learned since the last write.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let text = render(&self.allowed.read().expect("firewall lock"));
        let result = write_atomically(&self.path, text.as_bytes());
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result
    }
}

/// `user<TAB>0xDIGEST<TAB>digest text` per line; `#` starts a comment line.
fn parse(text: &str) -> Result<HashMap<String, HashMap<u64, String>>, String> {
    let mut allowed: HashMap<String, HashMap<u64, String>> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (user, digest) = (fields.next().unwrap_or_default(), fields.next());
        let digest = digest.and_then(parse_digest).ok_or_else(|| {
            format!(
                "line {}: expected user, a tab and a digest such as 0x1F2E3D4C5B6A7988",
                n + 1
            )
        })?;
        let text = fields.next().unwrap_or_default().to_owned();
        allowed
            .entry(user.to_owned())
            .or_default()
            .insert(digest, text);
    }
    Ok(allowed)
}

fn render(allowed: &HashMap<String, HashMap<u64, String>>) -> String {
    let mut lines: Vec<String> = allowed
        .iter()
        .flat_map(|(user, digests)| {
            digests
                .iter()
                .map(move |(d, text)| format!("{user}\t{}\t{text}\n", format_digest(*d)))
        })
        .collect();
    lines.sort();
    let mut out = String::from("# Sluice firewall allow list: user<TAB>digest<TAB>digest text\n");
    out.extend(lines);
    out
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`:
/// a reader sees the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-fw-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("allow.tsv")
    }

    #[test]
    fn detect_learns_protect_blocks_and_the_list_survives_a_restart() {
        let path = scratch("cycle");
        let _ = std::fs::remove_file(&path);
        let fw = Firewall::load(&path, Default::default()).unwrap();
        let text = b"SELECT c FROM t WHERE id = ?";
        assert_eq!(fw.check(FirewallMode::Off, "app", 1, text), Verdict::Pass);
        assert_eq!(
            fw.check(FirewallMode::Protect, "app", 1, text),
            Verdict::Blocked
        );
        assert_eq!(
            fw.check(FirewallMode::Detect, "app", 1, text),
            Verdict::Learned
        );
        assert_eq!(
            fw.check(FirewallMode::Detect, "app", 1, text),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(FirewallMode::Protect, "app", 1, text),
            Verdict::Pass
        );
        assert_eq!(
            fw.check(FirewallMode::Protect, "other", 1, text),
            Verdict::Blocked
        );
        fw.flush().unwrap();
        let again = Firewall::load(&path, Default::default()).unwrap();
        assert_eq!(
            again.check(FirewallMode::Protect, "app", 1, text),
            Verdict::Pass
        );
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.contains("app\t0x0000000000000001\tSELECT c FROM t WHERE id = ?"));
    }

    #[test]
    fn a_broken_list_is_refused_with_its_line() {
        let path = scratch("broken");
        std::fs::write(&path, "# header\napp\t0x12\tSELECT ?\napp\tnot-a-digest\n").unwrap();
        let err = Firewall::load(&path, Default::default()).unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }
}
