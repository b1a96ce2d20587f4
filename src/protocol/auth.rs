//! `mysql_native_password`, done the way a proxy must: without ever knowing the password.
//!
//! The configuration stores the same hash MySQL keeps in `mysql.user`: `SHA1(SHA1(password))`,
//! written `*` and 40 hex digits. A client proves it knows the password by sending
//! `SHA1(password) XOR SHA1(scramble ‖ SHA1(SHA1(password)))`. Checking that proof against
//! the stored hash also recovers `SHA1(password)` — a [`ProvenKey`] — and that key is exactly
//! what it takes to answer any *other* scramble, such as a backend's. So the proxy logs in to
//! the backend as the client, and no cleartext password exists anywhere.
//!
//! Users may also be given a `caching_sha2_password` verifier ([`caching_sha2`]): the
//! client proves its password to the proxy with that method, and the proxy still logs in
//! to the backends natively, with the key of the password the client revealed. Or
//! MariaDB's `ed25519` public key ([`ed25519`]), which reveals nothing of the kind.

pub mod caching_sha2;
pub mod ed25519;

use ring::digest::{digest, Context, SHA1_FOR_LEGACY_USE_ONLY as SHA1};

use caching_sha2::Sha2Verifier;
use ed25519::Ed25519Key;

pub const NATIVE_PASSWORD: &str = "mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
/// The client plugin of MariaDB's `ed25519` method.
pub const CLIENT_ED25519: &str = "client_ed25519";

/// What the configuration holds to check a user's password, never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verifier {
    Native(PasswordHash),
    CachingSha2(Sha2Verifier),
    Ed25519(Ed25519Key),
}

/// Why a configured verifier was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a mysql_native_password hash (\"*\" followed by 40 hex digits, as SELECT PASSWORD('...') prints), a caching_sha2_password verifier as MySQL stores it (\"$A$005$\" and 63 more bytes, or 0x and its 70 bytes in hex), an ed25519 public key as MariaDB stores it (43 base64 characters); `sluice verifier` makes each; or \"\" for no password")]
pub struct BadVerifier;

impl Verifier {
    /// Parses a user's `password` setting; "" is no password (`None`).
    pub fn parse(text: &str) -> Result<Option<Verifier>, BadVerifier> {
        if let Some(sha2) = Sha2Verifier::parse(text) {
            return Ok(Some(Verifier::CachingSha2(sha2)));
        }
        if let Some(key) = Ed25519Key::parse(text) {
            return Ok(Some(Verifier::Ed25519(key)));
        }
        match PasswordHash::parse(text) {
            Ok(hash) => Ok(hash.map(Verifier::Native)),
            Err(BadPasswordHash) => Err(BadVerifier),
        }
    }
}

const HASH_LEN: usize = 20;

/// `SHA1(SHA1(password))`, as stored in the configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PasswordHash([u8; HASH_LEN]);

/// `SHA1(password)`, learnt from a client's successful proof. It is as good as the password
/// for `mysql_native_password`, so it lives only in memory and never prints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProvenKey([u8; HASH_LEN]);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PasswordHash({self})")
    }
}

impl std::fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "*")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl std::fmt::Debug for ProvenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProvenKey(..)")
    }
}

/// Why a configured password hash was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a mysql_native_password hash: \"*\" followed by 40 hex digits (as SELECT PASSWORD('...') prints), or \"\" for no password")]
pub struct BadPasswordHash;

impl PasswordHash {
    /// Parses `*` followed by 40 hex digits. An empty string means "no password" (`None`).
    pub fn parse(text: &str) -> Result<Option<PasswordHash>, BadPasswordHash> {
        if text.is_empty() {
            return Ok(None);
        }
        let hex = text.strip_prefix('*').ok_or(BadPasswordHash)?;
        if hex.len() != 2 * HASH_LEN {
            return Err(BadPasswordHash);
        }
        let mut out = [0u8; HASH_LEN];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or(BadPasswordHash)?, 16)
                .map_err(|_| BadPasswordHash)?;
        }
        Ok(Some(PasswordHash(out)))
    }

    /// The hash of a cleartext password, as MySQL's `PASSWORD()` computes it. For tools and
    /// tests; the proxy itself never sees cleartext.
    pub fn of_password(password: &[u8]) -> PasswordHash {
        PasswordHash(sha1(digest(&SHA1, password).as_ref()))
    }
}

impl ProvenKey {
    /// The key for a cleartext password, for clients written in this crate (tests, tools).
    pub fn of_password(password: &[u8]) -> ProvenKey {
        ProvenKey(sha1(password))
    }
}

/// Checks a client's `mysql_native_password` proof against the stored hash and, when it is
/// right, returns the key it proves. Runs in time independent of where the proof differs.
pub fn verify_native(stored: &PasswordHash, scramble: &[u8], proof: &[u8]) -> Option<ProvenKey> {
    if proof.len() != HASH_LEN {
        return None;
    }
    let mask = sha1_concat(scramble, &stored.0);
    let mut candidate = [0u8; HASH_LEN];
    for i in 0..HASH_LEN {
        candidate[i] = proof[i] ^ mask[i];
    }
    let check = sha1(&candidate);
    let diff = check
        .iter()
        .zip(stored.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(ProvenKey(candidate))
}

/// The `mysql_native_password` proof of `key` for a server's `scramble`.
pub fn native_proof(key: &ProvenKey, scramble: &[u8]) -> [u8; HASH_LEN] {
    let stored = sha1(&key.0);
    let mask = sha1_concat(scramble, &stored);
    let mut proof = [0u8; HASH_LEN];
    for i in 0..HASH_LEN {
        proof[i] = key.0[i] ^ mask[i];
    }
    proof
}

/// Fills a scramble with random printable bytes (no NUL: the greeting NUL-terminates it).
pub fn new_scramble() -> [u8; HASH_LEN] {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; HASH_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .expect("the operating system's random source failed");
    raw.map(|b| 0x21 + b % 94)
}

fn sha1(data: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(digest(&SHA1, data).as_ref());
    out
}

fn sha1_concat(a: &[u8], b: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = Context::new(&SHA1);
    ctx.update(a);
    ctx.update(b);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_mysql_password_function() {
        // SELECT PASSWORD('app') on MariaDB
        assert_eq!(
            PasswordHash::of_password(b"app").to_string(),
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3"
        );
    }

    #[test]
    fn hash_parsing() {
        let h = PasswordHash::parse("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3")
            .unwrap()
            .unwrap();
        assert_eq!(h, PasswordHash::of_password(b"app"));
        assert_eq!(PasswordHash::parse(""), Ok(None));
        for bad in [
            "app",
            "5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3",
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D",
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563DZ",
            "*ééééééééééééééééééééé",
        ] {
            assert_eq!(PasswordHash::parse(bad), Err(BadPasswordHash), "{bad}");
        }
    }

    #[test]
    fn a_client_proof_verifies_and_yields_a_key_that_answers_other_scrambles() {
        let stored = PasswordHash::of_password(b"secret");
        let client_key = ProvenKey::of_password(b"secret");
        let proxy_scramble = new_scramble();
        let proof = native_proof(&client_key, &proxy_scramble);

        let key = verify_native(&stored, &proxy_scramble, &proof).expect("valid proof");
        assert_eq!(key, client_key);

        // the recovered key logs in to a backend with a different scramble
        let backend_scramble = new_scramble();
        let backend_proof = native_proof(&key, &backend_scramble);
        assert!(verify_native(&stored, &backend_scramble, &backend_proof).is_some());
    }

    #[test]
    fn wrong_or_malformed_proofs_fail() {
        let stored = PasswordHash::of_password(b"secret");
        let scramble = new_scramble();
        let wrong = native_proof(&ProvenKey::of_password(b"Secret"), &scramble);
        assert!(verify_native(&stored, &scramble, &wrong).is_none());
        assert!(verify_native(&stored, &scramble, &[]).is_none());
        assert!(verify_native(&stored, &scramble, &[0; 19]).is_none());
    }

    #[test]
    fn scrambles_are_printable_and_differ() {
        let a = new_scramble();
        assert!(a.iter().all(|b| (0x21..0x7F).contains(b)));
        assert_ne!(a, new_scramble());
    }
}
