//! MariaDB's `ed25519` authentication (the client plugin is `client_ed25519`): the
//! password is the seed of an Ed25519 key pair, and the server keeps only the public key,
//! written in base64 without padding (43 characters: the `authentication_string` of a user
//! `IDENTIFIED VIA ed25519 USING PASSWORD('…')`). The server sends a 32-byte nonce; the client signs it with the private key
//! its password gives; the server verifies the signature. Nothing the proxy sees in that
//! exchange lets it log in to a backend as the user, so such a user's backend connections
//! log in with a password from a file (`backend_password_file`).
//!
//! The key pair is Ed25519's with one difference: the 64 bytes hashed to make the secret
//! scalar and the signing prefix are `SHA512(password)`, of any length, where standard
//! Ed25519 hashes a 32-byte seed. Signatures are standard, and so is their verification.

use data_encoding::BASE64_NOPAD;
use ring::digest::{digest, SHA512};
use ring::signature::{UnparsedPublicKey, ED25519};

/// The length of the nonce the server signs.
pub const NONCE_LEN: usize = 32;
/// The length of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// A user's `ed25519` public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ed25519Key([u8; 32]);

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Key({self})")
    }
}

impl std::fmt::Display for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&BASE64_NOPAD.encode(&self.0))
    }
}

impl Ed25519Key {
    /// Parses the 43 base64 characters MariaDB stores; None when it is not that.
    pub fn parse(text: &str) -> Option<Ed25519Key> {
        if text.len() != 43 {
            return None;
        }
        let bytes = BASE64_NOPAD.decode(text.as_bytes()).ok()?;
        Some(Ed25519Key(bytes.try_into().ok()?))
    }

    /// The public key of `password`, as MariaDB computes it.
    pub fn of_password(password: &[u8]) -> Ed25519Key {
        let expanded = digest(&SHA512, password);
        let secret: [u8; 32] = expanded.as_ref()[..32].try_into().expect("64 bytes");
        let public = curve25519_dalek::EdwardsPoint::mul_base_clamped(secret);
        Ed25519Key(public.compress().to_bytes())
    }

    /// Whether `signature` is this key's signature of `nonce`.
    pub fn verify(&self, nonce: &[u8], signature: &[u8]) -> bool {
        signature.len() == SIGNATURE_LEN
            && UnparsedPublicKey::new(&ED25519, &self.0)
                .verify(nonce, signature)
                .is_ok()
    }
}

/// A fresh nonce for the client to sign.
pub fn new_nonce() -> [u8; NONCE_LEN] {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; NONCE_LEN];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .expect("the operating system's random source failed");
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::{EdwardsPoint, Scalar};
    use ring::digest::Context;

    /// Signs `message` the way `client_ed25519` does (for the tests: the proxy never
    /// signs).
    fn sign(password: &[u8], message: &[u8]) -> [u8; 64] {
        let expanded = digest(&SHA512, password);
        let (secret, prefix) = expanded.as_ref().split_at(32);
        let mut clamped: [u8; 32] = secret.try_into().unwrap();
        clamped[0] &= 248;
        clamped[31] &= 127;
        clamped[31] |= 64;
        let a = Scalar::from_bytes_mod_order(clamped);
        let public = Ed25519Key::of_password(password).0;
        let wide = |parts: &[&[u8]]| {
            let mut ctx = Context::new(&SHA512);
            parts.iter().for_each(|p| ctx.update(p));
            let hash: [u8; 64] = ctx.finish().as_ref().try_into().unwrap();
            Scalar::from_bytes_mod_order_wide(&hash)
        };
        let r = wide(&[prefix, message]);
        let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
        let k = wide(&[&big_r, &public, message]);
        let s = r + k * a;
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&big_r);
        signature[32..].copy_from_slice(s.as_bytes());
        signature
    }

    #[test]
    fn a_signature_made_from_the_password_verifies_against_its_public_key() {
        let key = Ed25519Key::of_password(b"secret");
        let nonce = new_nonce();
        assert!(key.verify(&nonce, &sign(b"secret", &nonce)));
        assert!(!key.verify(&nonce, &sign(b"Secret", &nonce)));
        assert!(!key.verify(&new_nonce(), &sign(b"secret", &nonce)));
        assert!(!key.verify(&nonce, &[]));
    }

    #[test]
    fn the_public_key_is_the_one_mariadb_derives() {
        // MariaDB 10.11's authentication_string for IDENTIFIED VIA ed25519 USING
        // PASSWORD('secret')
        assert_eq!(
            Ed25519Key::of_password(b"secret").to_string(),
            "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY"
        );
    }

    #[test]
    fn keys_print_and_parse_as_mariadb_writes_them() {
        let key = Ed25519Key::of_password(b"app");
        let text = key.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(Ed25519Key::parse(&text), Some(key));
        for bad in [
            "",
            &text[..42],
            &format!("{text}="),
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3",
        ] {
            assert_eq!(Ed25519Key::parse(bad), None, "{bad}");
        }
    }
}
