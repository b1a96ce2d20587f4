//! Proving a password, in whichever method the user's verifier is kept: the exchange of
//! packets between the client's first answer and the login's final OK or ERR, for the
//! login and COM_CHANGE_USER alike.
//!
//! - `mysql_native_password`: one proof of the connection's nonce; a client that began with
//!   another plugin is switched to this one first.
//! - `caching_sha2_password`: the client proves `SHA256(password)` against the nonce. When
//!   this proxy saw the password before (a full authentication since it started, the
//!   verifier unchanged) the proof is checked from memory, the fast path. Otherwise the
//!   client sends the password itself, over TLS only, and it is checked against the
//!   verifier (SHA-256 crypt, off the async workers). What a full authentication reveals is
//!   kept in memory, never on disk: the fast path's `SHA256(SHA256(password))`, and the
//!   `mysql_native_password` key `SHA1(password)` with which the proxy logs in to the
//!   backends as this user (MariaDB servers have no `caching_sha2_password`; the backend
//!   account has the same password with the native method).
//! - MariaDB's `ed25519`: the client signs a nonce with the key its password makes; the
//!   proxy checks the signature with the public key it has. The backend login uses the
//!   user's `backend_password_file`.
//!
//! A refusal is only said at the end, as 1045, whatever the reason.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::BytesMut;

use crate::connection::{Connection, Packet, ReadError};
use crate::protocol::auth::caching_sha2::{verify_fast, FastKey, Sha2Verifier};
use crate::protocol::auth::ed25519::{self, Ed25519Key};
use crate::protocol::auth::{
    self, ProvenKey, Verifier, CACHING_SHA2_PASSWORD, CLIENT_ED25519, NATIVE_PASSWORD,
};
use crate::protocol::constants::header;
use crate::protocol::handshake::AuthSwitchRequest;
use crate::runtime::UserEntry;

/// Largest packet accepted before the client is logged in.
const LOGIN_PACKET_LIMIT: usize = 64 * 1024;

/// Why a packet of the login could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoginReadError {
    #[error("client closed the connection during login")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad handshake: {0}")]
    Protocol(String),
}

impl From<ReadError> for LoginReadError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => LoginReadError::Io(e),
            ReadError::Truncated => LoginReadError::Closed,
            ReadError::Frame(e) => LoginReadError::Protocol(e.to_string()),
        }
    }
}

/// The AuthMoreData that tells a `caching_sha2_password` client its fast proof was right.
const FAST_AUTH_SUCCESS: u8 = 3;
/// The AuthMoreData that asks a `caching_sha2_password` client for its password.
const PERFORM_FULL_AUTHENTICATION: u8 = 4;
/// What a client sends to ask for the server's RSA public key.
const REQUEST_PUBLIC_KEY: u8 = 2;

/// What full authentications of `caching_sha2_password` users revealed, by user: the
/// fast path's key and the backend login key. Lives as long as the process, across
/// reloads; an entry whose verifier changed is not used.
#[derive(Default)]
pub struct Sha2Cache {
    entries: Mutex<HashMap<String, Revealed>>,
}

#[derive(Clone)]
struct Revealed {
    verifier: Sha2Verifier,
    fast: FastKey,
    key: ProvenKey,
}

impl Sha2Cache {
    fn get(&self, user: &str, verifier: &Sha2Verifier) -> Option<Revealed> {
        let entries = self.entries.lock().expect("sha2 cache lock");
        entries
            .get(user)
            .filter(|r| r.verifier == *verifier)
            .cloned()
    }

    fn put(&self, user: &str, revealed: Revealed) {
        let mut entries = self.entries.lock().expect("sha2 cache lock");
        entries.insert(user.to_owned(), revealed);
    }
}

/// One password exchange with a client, from its first answer on.
pub struct Exchange<'a> {
    pub conn: &'a mut Connection,
    /// The sequence id of the next packet to the client; after the exchange, that of the
    /// login's final OK or ERR.
    pub seq: u8,
    /// The connection's nonce.
    pub scramble: &'a [u8],
    /// The link is TLS: the client may send its password there.
    pub secure: bool,
    pub cache: &'a Sha2Cache,
}

/// How an exchange ended.
pub struct Proven {
    /// The backend login key proven (None: a user without password), or why the login is
    /// refused (for the log; the client sees 1045).
    pub result: Result<Option<ProvenKey>, &'static str>,
    /// The client sent a password (MySQL's "using password: YES").
    pub with_password: bool,
}

impl Exchange<'_> {
    /// Runs the exchange for `user` (or a refusal decided before it: the exchange is the
    /// native one then, so that a stranger learns nothing), given the plugin the client
    /// began with and what it sent.
    pub async fn prove(
        &mut self,
        user: Result<&UserEntry, &'static str>,
        plugin: Option<&str>,
        first: Vec<u8>,
    ) -> Result<Proven, LoginReadError> {
        let mut proven = self.prove_password(user, plugin, first).await?;
        // a backend password from a file outranks what the login revealed
        if let (Ok(entry), Ok(key)) = (user, &mut proven.result) {
            *key = entry.backend_key.or(*key);
        }
        Ok(proven)
    }

    async fn prove_password(
        &mut self,
        user: Result<&UserEntry, &'static str>,
        plugin: Option<&str>,
        first: Vec<u8>,
    ) -> Result<Proven, LoginReadError> {
        match user {
            Ok(entry) => match &entry.password {
                Some(Verifier::CachingSha2(verifier)) => {
                    let name = entry.config.name.as_str();
                    self.caching_sha2(name, verifier, plugin, first).await
                }
                Some(Verifier::Ed25519(key)) => self.ed25519(key).await,
                Some(Verifier::Native(hash)) => {
                    let proof = self.in_method(NATIVE_PASSWORD, plugin, first).await?;
                    let result = auth::verify_native(hash, self.scramble, &proof)
                        .map(Some)
                        .ok_or("wrong password");
                    Ok(proven(result, &proof))
                }
                None => {
                    let proof = self.in_method(NATIVE_PASSWORD, plugin, first).await?;
                    let result = match proof.is_empty() {
                        true => Ok(None),
                        false => Err("wrong password"),
                    };
                    Ok(proven(result, &proof))
                }
            },
            Err(reason) => {
                let proof = self.in_method(NATIVE_PASSWORD, plugin, first).await?;
                Ok(proven(Err(reason), &proof))
            }
        }
    }

    /// The client's answer in `method`: what it sent first if it began with that plugin,
    /// else its answer to an AuthSwitchRequest to it.
    async fn in_method(
        &mut self,
        method: &str,
        plugin: Option<&str>,
        first: Vec<u8>,
    ) -> Result<Vec<u8>, LoginReadError> {
        // a client without PLUGIN_AUTH speaks the native method
        if plugin.unwrap_or(NATIVE_PASSWORD) == method {
            return Ok(first);
        }
        let switch = AuthSwitchRequest {
            plugin: method.to_string(),
            data: self.scramble.to_vec(),
        };
        let mut payload = BytesMut::with_capacity(64);
        switch.encode(&mut payload);
        self.exchange(&payload).await
    }

    async fn caching_sha2(
        &mut self,
        user: &str,
        verifier: &Sha2Verifier,
        plugin: Option<&str>,
        first: Vec<u8>,
    ) -> Result<Proven, LoginReadError> {
        let proof = self.in_method(CACHING_SHA2_PASSWORD, plugin, first).await?;
        if proof.is_empty() {
            return Ok(proven(Err("wrong password"), &proof));
        }
        if let Some(revealed) = self.cache.get(user, verifier) {
            if verify_fast(&revealed.fast, self.scramble, &proof) {
                self.send(&[header::AUTH_MORE_DATA, FAST_AUTH_SUCCESS])
                    .await?;
                return Ok(proven(Ok(Some(revealed.key)), &proof));
            }
        }
        // as the server does when the proof does not match what it remembers: the
        // password may have changed since, so the client proves it in full
        let mut answer = self
            .exchange(&[header::AUTH_MORE_DATA, PERFORM_FULL_AUTHENTICATION])
            .await?;
        if !self.secure {
            let reason = match answer.as_slice() {
                [REQUEST_PUBLIC_KEY] => {
                    "caching_sha2_password full authentication needs TLS (no RSA key exchange)"
                }
                _ => "caching_sha2_password password sent in cleartext without TLS",
            };
            answer.fill(0);
            return Ok(proven(Err(reason), &proof));
        }
        // the password, NUL-terminated
        if answer.last() == Some(&0) {
            answer.pop();
        }
        let password = answer;
        let (checked, password) = check_off_workers(verifier.clone(), password).await;
        let result = match checked {
            true => {
                let revealed = Revealed {
                    verifier: verifier.clone(),
                    fast: FastKey::of_password(&password),
                    key: ProvenKey::of_password(&password),
                };
                let key = revealed.key;
                self.cache.put(user, revealed);
                Ok(Some(key))
            }
            false => Err("wrong password"),
        };
        let mut password = password;
        password.fill(0);
        Ok(proven(result, &proof))
    }

    /// MariaDB's ed25519: a switch to `client_ed25519` with a fresh 32-byte nonce (sent
    /// as it is, without the NUL a scramble has: the plugin wants exactly 32 bytes), and
    /// the client's signature of it.
    async fn ed25519(&mut self, key: &Ed25519Key) -> Result<Proven, LoginReadError> {
        let nonce = ed25519::new_nonce();
        let mut switch = Vec::with_capacity(2 + CLIENT_ED25519.len() + nonce.len());
        switch.push(header::AUTH_SWITCH);
        switch.extend_from_slice(CLIENT_ED25519.as_bytes());
        switch.push(0);
        switch.extend_from_slice(&nonce);
        let signature = self.exchange(&switch).await?;
        let result = match key.verify(&nonce, &signature) {
            true => Ok(None),
            false => Err("wrong password"),
        };
        Ok(proven(result, &signature))
    }

    /// Sends one packet of the exchange and reads the client's answer to it.
    async fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>, LoginReadError> {
        self.send(payload).await?;
        let reply = read(self.conn).await?;
        expect_seq(&reply, self.seq)?;
        self.seq = reply.last_seq.wrapping_add(1);
        Ok(reply.payload.to_vec())
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), LoginReadError> {
        self.conn.queue_packet(self.seq, payload);
        self.conn.flush().await?;
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }
}

fn proven(result: Result<Option<ProvenKey>, &'static str>, proof: &[u8]) -> Proven {
    Proven {
        result,
        with_password: !proof.is_empty(),
    }
}

/// Checks a cleartext password against a verifier on the blocking pool: thousands of
/// SHA-256 rounds would hold an async worker for milliseconds. The password comes back
/// to be wiped.
async fn check_off_workers(verifier: Sha2Verifier, password: Vec<u8>) -> (bool, Vec<u8>) {
    tokio::task::spawn_blocking(move || (verifier.check(&password), password))
        .await
        .expect("the verifier check does not panic")
}

/// The client's next packet of the login.
pub(super) async fn read(conn: &mut Connection) -> Result<Packet, LoginReadError> {
    conn.read_packet(LOGIN_PACKET_LIMIT)
        .await?
        .ok_or(LoginReadError::Closed)
}

/// Refuses a packet out of the login's sequence.
pub(super) fn expect_seq(packet: &Packet, expected: u8) -> Result<(), LoginReadError> {
    if packet.seq == expected {
        Ok(())
    } else {
        Err(LoginReadError::Protocol(format!(
            "packet out of order: expected sequence id {expected}, got {}",
            packet.seq
        )))
    }
}
