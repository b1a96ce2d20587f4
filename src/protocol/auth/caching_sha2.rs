//! `caching_sha2_password`, the server's side, as MySQL 8 does it.
//!
//! The verifier is what MySQL keeps in `mysql.user.authentication_string`: `$A$`, the
//! iteration count in thousands as three hex digits, `$`, a 20-byte salt and the 43
//! characters of a SHA-256 crypt of the password with that salt (Drepper's algorithm, with
//! MySQL's 20-byte salt). Checking a password against it takes thousands of hashes, so a
//! client proves it only once over a secure link, in cleartext ("full authentication").
//! After that the server keeps `SHA256(SHA256(password))` in memory, and later logins take
//! the fast path: the client sends `SHA256(password) XOR SHA256(SHA256(SHA256(password)) ‖
//! nonce)`, which that cached value checks in two hashes.

use ring::digest::{Context, SHA256};

/// The iteration count MySQL uses by default (`caching_sha2_password_digest_rounds`).
pub const DEFAULT_ROUNDS: u32 = 5000;
/// Bytes of salt in a verifier.
pub const SALT_LEN: usize = 20;
/// Characters of the encoded digest.
const DIGEST_CHARS: usize = 43;
const PREFIX: &[u8] = b"$A$";
/// The alphabet of crypt's base-64 encoding.
const CRYPT_B64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A `caching_sha2_password` verifier, as MySQL stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha2Verifier {
    rounds: u32,
    salt: [u8; SALT_LEN],
    digest: [u8; DIGEST_CHARS],
}

/// `SHA256(SHA256(password))`: what the fast path checks proofs against. Learnt from a
/// full authentication and kept in memory only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FastKey([u8; 32]);

impl std::fmt::Debug for Sha2Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha2Verifier({self})")
    }
}

impl std::fmt::Debug for FastKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastKey(..)")
    }
}

/// Shown as MySQL shows it: as is when every salt byte prints, else `0x` and hex (as
/// `SHOW CREATE USER` does with `print_identified_with_as_hex`).
impl std::fmt::Display for Sha2Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.to_bytes();
        match bytes.iter().all(|b| (0x20..0x7F).contains(b)) {
            true => f.write_str(std::str::from_utf8(&bytes).expect("ASCII")),
            false => {
                f.write_str("0x")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02X}"))
            }
        }
    }
}

impl Sha2Verifier {
    /// Parses a verifier written as MySQL stores it (`$A$005$…`, 70 bytes) or as `0x` and
    /// those bytes in hex. None when it is neither.
    pub fn parse(text: &str) -> Option<Sha2Verifier> {
        match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => Self::from_bytes(&decode_hex(hex)?),
            None => Self::from_bytes(text.as_bytes()),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Option<Sha2Verifier> {
        let rest = bytes.strip_prefix(PREFIX)?;
        let (count, rest) = (rest.get(..3)?, rest.get(3..)?);
        let rest = rest.strip_prefix(b"$")?;
        let thousands = u32::from_str_radix(std::str::from_utf8(count).ok()?, 16).ok()?;
        if thousands == 0 || rest.len() != SALT_LEN + DIGEST_CHARS {
            return None;
        }
        let (salt, encoded) = rest.split_at(SALT_LEN);
        if salt.iter().any(|&b| b == 0 || b == b'$')
            || !encoded.iter().all(|b| CRYPT_B64.contains(b))
        {
            return None;
        }
        Some(Sha2Verifier {
            rounds: thousands * 1000,
            salt: salt.try_into().expect("length checked"),
            digest: encoded.try_into().expect("length checked"),
        })
    }

    /// The verifier of `password` with `salt` (which must hold neither NUL nor `$`, as
    /// MySQL's salts do not) and `rounds` (a multiple of 1000).
    pub fn new(password: &[u8], salt: [u8; SALT_LEN], rounds: u32) -> Sha2Verifier {
        Sha2Verifier {
            rounds,
            salt,
            digest: encode_digest(&sha256_crypt(password, &salt, rounds)),
        }
    }

    /// The verifier of `password` with a fresh random salt of crypt's 64 characters
    /// (120 bits; MySQL draws from more, but these need no quoting in TOML or SQL).
    pub fn of_password(password: &[u8]) -> Sha2Verifier {
        use ring::rand::SecureRandom;
        let mut raw = [0u8; SALT_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .expect("the operating system's random source failed");
        let salt = raw.map(|b| CRYPT_B64[usize::from(b % 64)]);
        Sha2Verifier::new(password, salt, DEFAULT_ROUNDS)
    }

    /// Whether `password` is the one this verifier was made from. Thousands of hashes:
    /// run it off the async workers. Compares in time independent of where it differs.
    pub fn check(&self, password: &[u8]) -> bool {
        let digest = encode_digest(&sha256_crypt(password, &self.salt, self.rounds));
        digest
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("$A${:03X}$", self.rounds / 1000).into_bytes();
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.digest);
        out
    }
}

impl FastKey {
    /// The fast-path key of a password a full authentication revealed.
    pub fn of_password(password: &[u8]) -> FastKey {
        FastKey(sha256(&sha256(password)))
    }
}

/// Checks a fast-path proof (32 bytes) for `nonce` against the cached key.
pub fn verify_fast(key: &FastKey, nonce: &[u8], proof: &[u8]) -> bool {
    if proof.len() != 32 {
        return false;
    }
    let mask = sha256_concat(&key.0, nonce);
    let mut stage1 = [0u8; 32];
    for i in 0..32 {
        stage1[i] = proof[i] ^ mask[i];
    }
    sha256(&stage1)
        .iter()
        .zip(key.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The fast-path proof of `password` for `nonce`, as a client computes it (for tests and
/// tools).
pub fn fast_proof(password: &[u8], nonce: &[u8]) -> [u8; 32] {
    let stage1 = sha256(password);
    let mask = sha256_concat(&sha256(&stage1), nonce);
    let mut proof = [0u8; 32];
    for i in 0..32 {
        proof[i] = stage1[i] ^ mask[i];
    }
    proof
}

/// SHA-256 crypt (Drepper's "Unix crypt using SHA-256"), the raw 32 bytes. The salt is
/// taken whole: MySQL's is 20 bytes, where the original stops at 16.
fn sha256_crypt(password: &[u8], salt: &[u8], rounds: u32) -> [u8; 32] {
    let alternate = sha256_all(&[password, salt, password]);
    let mut ctx = Context::new(&SHA256);
    ctx.update(password);
    ctx.update(salt);
    let mut left = password.len();
    while left > 32 {
        ctx.update(&alternate);
        left -= 32;
    }
    ctx.update(&alternate[..left]);
    let mut bits = password.len();
    while bits > 0 {
        match bits & 1 {
            1 => ctx.update(&alternate),
            _ => ctx.update(password),
        }
        bits >>= 1;
    }
    let mut c = finish(ctx);

    let mut ctx = Context::new(&SHA256);
    for _ in 0..password.len() {
        ctx.update(password);
    }
    let p = repeat_to(&finish(ctx), password.len());
    let mut ctx = Context::new(&SHA256);
    for _ in 0..16 + usize::from(c[0]) {
        ctx.update(salt);
    }
    let s = repeat_to(&finish(ctx), salt.len());

    for round in 0..rounds {
        let mut ctx = Context::new(&SHA256);
        let odd = round % 2 == 1;
        ctx.update(if odd { &p } else { &c });
        if round % 3 != 0 {
            ctx.update(&s);
        }
        if round % 7 != 0 {
            ctx.update(&p);
        }
        ctx.update(if odd { &c } else { &p });
        c = finish(ctx);
    }
    c
}

/// The 43 characters of crypt's encoding of a SHA-256 crypt digest (its own byte order).
fn encode_digest(raw: &[u8; 32]) -> [u8; DIGEST_CHARS] {
    const GROUPS: [(usize, usize, usize); 10] = [
        (0, 10, 20),
        (21, 1, 11),
        (12, 22, 2),
        (3, 13, 23),
        (24, 4, 14),
        (15, 25, 5),
        (6, 16, 26),
        (27, 7, 17),
        (18, 28, 8),
        (9, 19, 29),
    ];
    let mut out = [0u8; DIGEST_CHARS];
    let mut at = 0;
    let mut put = |word: u32, chars: usize| {
        for i in 0..chars {
            out[at] = CRYPT_B64[((word >> (6 * i)) & 0x3F) as usize];
            at += 1;
        }
    };
    for (a, b, c) in GROUPS {
        put(
            u32::from(raw[a]) << 16 | u32::from(raw[b]) << 8 | u32::from(raw[c]),
            4,
        );
    }
    put(u32::from(raw[31]) << 8 | u32::from(raw[30]), 3);
    out
}

fn repeat_to(block: &[u8; 32], len: usize) -> Vec<u8> {
    block.iter().copied().cycle().take(len).collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    sha256_all(&[data])
}

fn sha256_concat(a: &[u8], b: &[u8]) -> [u8; 32] {
    sha256_all(&[a, b])
}

fn sha256_all(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    parts.iter().for_each(|p| ctx.update(p));
    finish(ctx)
}

fn finish(ctx: Context) -> [u8; 32] {
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drepper's own test vectors (salts of 16 bytes at most, where both variants agree).
    #[test]
    fn sha256_crypt_matches_the_reference_vectors() {
        let cases: [(&[u8], &[u8], u32, &str); 3] = [
            (
                b"Hello world!",
                b"saltstring",
                5000,
                "5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5",
            ),
            (
                b"Hello world!",
                b"saltstringsaltst",
                10000,
                "3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA",
            ),
            (
                b"we have a short salt string but not a short password",
                b"short",
                77777,
                "JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/",
            ),
        ];
        for (password, salt, rounds, want) in cases {
            let got = encode_digest(&sha256_crypt(password, salt, rounds));
            assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        }
    }

    /// A verifier MySQL 8 made for the password "foobar" (its salt does not print).
    const FOOBAR: &str = "0x24412430303524031A69251C34295C4B35167C7F1E5A7B63091349503974624D34504B5A424679354856336868686F52485A736E4A733368786E427575516C73446469496537";

    #[test]
    fn checks_a_verifier_mysql_made() {
        let verifier = Sha2Verifier::parse(FOOBAR).expect("parses");
        assert!(verifier.check(b"foobar"));
        assert!(!verifier.check(b"not_foobar"));
        assert!(!verifier.check(b""));
        assert_eq!(verifier.to_string(), FOOBAR, "shown as it was written");
    }

    #[test]
    fn a_made_verifier_prints_and_parses_back() {
        let made = Sha2Verifier::of_password(b"app");
        let text = made.to_string();
        assert!(text.starts_with("$A$005$") && text.len() == 70, "{text}");
        let parsed = Sha2Verifier::parse(&text).expect("parses");
        assert_eq!(parsed, made);
        assert!(parsed.check(b"app") && !parsed.check(b"App"));
    }

    #[test]
    fn malformed_verifiers_are_refused() {
        let good = Sha2Verifier::of_password(b"x").to_string();
        for bad in [
            "",
            "$A$005$",
            &good[..69],
            &format!("{good}x"),
            &good.replacen("$A$", "$B$", 1),
            &good.replacen("$A$005", "$A$000", 1),
            &good.replacen("$A$005", "$A$0G5", 1),
            &format!("{}!", &good[..69]),
            "0x2441",
            "0xZZ",
        ] {
            assert_eq!(Sha2Verifier::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_fast_path_checks_a_clients_proof() {
        let key = FastKey::of_password(b"secret");
        let nonce = crate::protocol::auth::new_scramble();
        assert!(verify_fast(&key, &nonce, &fast_proof(b"secret", &nonce)));
        assert!(!verify_fast(&key, &nonce, &fast_proof(b"Secret", &nonce)));
        let other = crate::protocol::auth::new_scramble();
        assert!(!verify_fast(&key, &other, &fast_proof(b"secret", &nonce)));
        assert!(!verify_fast(&key, &nonce, &[]));
    }
}
