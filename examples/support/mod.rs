//! What the load examples share: their command line, the login their clients send and the
//! text of an error a server answers.

use sluice::protocol::auth::{native_proof, ProvenKey, NATIVE_PASSWORD};
use sluice::protocol::constants::capability;
use sluice::protocol::handshake::{HandshakeResponse, InitialHandshake};
use sluice::protocol::packets::ErrPacket;

/// The `--flag value` pairs of the command line, in order.
pub fn flags() -> Result<Vec<(String, String)>, String> {
    let mut args = std::env::args().skip(1);
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// `value` of `flag` as a number.
pub fn number(flag: &str, value: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("{flag}: not a number"))
}

/// A `mysql_native_password` login as `user` answering `greeting`, asking for what a
/// driver asks for, `extra` capabilities (such as SSL), and `database` when there is one.
pub fn native_login(
    user: &str,
    password: &str,
    greeting: &InitialHandshake,
    database: Option<&str>,
    extra: u32,
) -> HandshakeResponse {
    let mut capabilities = capability::LONG_PASSWORD
        | capability::PROTOCOL_41
        | capability::SECURE_CONNECTION
        | capability::PLUGIN_AUTH
        | capability::TRANSACTIONS
        | capability::MULTI_RESULTS
        | extra;
    if database.is_some() {
        capabilities |= capability::CONNECT_WITH_DB;
    }
    let key = ProvenKey::of_password(password.as_bytes());
    HandshakeResponse {
        capabilities,
        max_packet: 1 << 24,
        charset: 45,
        username: user.to_string(),
        auth_response: native_proof(&key, &greeting.scramble).to_vec(),
        database: database.map(str::to_string),
        auth_plugin: Some(NATIVE_PASSWORD.into()),
        connect_attrs: None,
        zstd_level: None,
    }
}

/// An ERR packet's code and message.
pub fn error_text(payload: &[u8]) -> String {
    ErrPacket::decode(payload)
        .map(|e| format!("{} {}", e.code, e.message))
        .unwrap_or_else(|_| "unreadable reply".into())
}
