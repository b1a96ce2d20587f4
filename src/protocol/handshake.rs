//! The connection phase: the server's greeting (Handshake v10), the client's SSLRequest and
//! HandshakeResponse41, AuthSwitchRequest, and COM_CHANGE_USER, which re-runs the login.
//!
//! The proxy plays both roles, so every message here has both a decoder and an encoder.

use bytes::{BufMut, BytesMut};

use super::codec::{put_lenenc_bytes, put_null_terminated, utf8, DecodeError, Reader};
use super::constants::{capability, header};

/// Length of the scramble (nonce) in the greeting.
pub const SCRAMBLE_LEN: usize = 20;

/// Protocol::HandshakeV10, the first packet of every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialHandshake {
    pub server_version: String,
    pub connection_id: u32,
    pub scramble: Vec<u8>,
    pub capabilities: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: String,
}

impl InitialHandshake {
    pub fn decode(payload: &[u8]) -> Result<InitialHandshake, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("protocol version")? != 10 {
            return Err(DecodeError::Invalid(
                "protocol version (only v10 is spoken)",
            ));
        }
        let server_version = utf8(r.null_terminated("server version")?, "server version")?;
        let connection_id = r.u32("connection id")?;
        let mut scramble = r.take(8, "scramble")?.to_vec();
        r.skip(1, "filler")?;
        let mut capabilities = u32::from(r.u16("capabilities")?);
        let mut hs = InitialHandshake {
            server_version,
            connection_id,
            scramble: Vec::new(),
            capabilities,
            charset: 0,
            status: 0,
            auth_plugin: String::new(),
        };
        if r.is_empty() {
            hs.scramble = scramble;
            return Ok(hs);
        }
        hs.charset = r.u8("charset")?;
        hs.status = r.u16("status")?;
        capabilities |= u32::from(r.u16("capabilities")?) << 16;
        let auth_data_len = usize::from(r.u8("auth data length")?);
        r.skip(10, "reserved")?;
        if capabilities & capability::SECURE_CONNECTION != 0 {
            let len = auth_data_len.saturating_sub(8).max(13);
            let part2 = r.take(len, "scramble")?;
            // the last byte is a NUL terminator, not part of the nonce
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            scramble.extend_from_slice(part2);
        }
        if capabilities & capability::PLUGIN_AUTH != 0 {
            hs.auth_plugin = utf8(r.null_terminated_or_rest(), "auth plugin")?;
        }
        hs.capabilities = capabilities;
        hs.scramble = scramble;
        Ok(hs)
    }

    /// Encodes the greeting. The nonce travels as 8 bytes, then at least 12 more and a NUL
    /// (the protocol's minimum of 13); a shorter nonce is padded with zeros.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut part1 = [0u8; 8];
        let head = self.scramble.len().min(8);
        part1[..head].copy_from_slice(&self.scramble[..head]);
        let part2 = &self.scramble[head..];
        out.put_u8(10);
        put_null_terminated(out, self.server_version.as_bytes());
        out.put_u32_le(self.connection_id);
        out.put_slice(&part1);
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.charset);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8((8 + part2.len().max(12) + 1).min(255) as u8);
        out.put_bytes(0, 10);
        out.put_slice(part2);
        out.put_bytes(0, 12usize.saturating_sub(part2.len()));
        out.put_u8(0);
        put_null_terminated(out, self.auth_plugin.as_bytes());
    }
}

/// Whether the first client packet is an SSLRequest (a HandshakeResponse cut after the
/// fixed part, with CLIENT_SSL set), after which the client starts TLS.
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & capability::SSL
            != 0
}

/// Encodes an SSLRequest: the fixed part of a HandshakeResponse41.
pub fn encode_ssl_request(out: &mut BytesMut, capabilities: u32, max_packet: u32, charset: u8) {
    out.put_u32_le(capabilities | capability::SSL);
    out.put_u32_le(max_packet);
    out.put_u8(charset);
    out.put_bytes(0, 23);
}

/// Protocol::HandshakeResponse41.
#[derive(Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub username: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub auth_plugin: Option<String>,
    /// The connection attributes as sent (a length-encoded block), kept opaque.
    pub connect_attrs: Option<Vec<u8>>,
    /// The zstd level a client asking for zstd compression wants.
    pub zstd_level: Option<u8>,
}

impl std::fmt::Debug for HandshakeResponse {
    /// Auth data stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeResponse")
            .field("capabilities", &format_args!("{:#x}", self.capabilities))
            .field("username", &self.username)
            .field("database", &self.database)
            .field("auth_plugin", &self.auth_plugin)
            .finish_non_exhaustive()
    }
}

impl HandshakeResponse {
    pub fn decode(payload: &[u8]) -> Result<HandshakeResponse, DecodeError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32("capabilities")?;
        if capabilities & capability::PROTOCOL_41 == 0 {
            return Err(DecodeError::Invalid(
                "handshake response (pre-4.1 clients are not supported)",
            ));
        }
        let max_packet = r.u32("max packet size")?;
        let charset = r.u8("charset")?;
        r.skip(23, "reserved")?;
        let username = utf8(r.null_terminated("user name")?, "user name")?;
        let auth_response = if capabilities & capability::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?
        } else if capabilities & capability::SECURE_CONNECTION != 0 {
            let len = usize::from(r.u8("auth response length")?);
            r.take(len, "auth response")?
        } else {
            r.null_terminated("auth response")?
        }
        .to_vec();
        let mut database = None;
        if capabilities & capability::CONNECT_WITH_DB != 0 && !r.is_empty() {
            let db = r.null_terminated_or_rest();
            if !db.is_empty() {
                database = Some(utf8(db, "database")?);
            }
        }
        let mut auth_plugin = None;
        if capabilities & capability::PLUGIN_AUTH != 0 && !r.is_empty() {
            auth_plugin = Some(utf8(r.null_terminated_or_rest(), "auth plugin")?);
        }
        let mut connect_attrs = None;
        if capabilities & capability::CONNECT_ATTRS != 0 && !r.is_empty() {
            let before = r.clone();
            let attrs = r.lenenc_bytes("connection attributes")?;
            let header_len = before.remaining() - r.remaining() - attrs.len();
            let mut raw = before;
            connect_attrs = Some(raw.take(header_len + attrs.len(), "attributes")?.to_vec());
        }
        let mut zstd_level = None;
        if capabilities & capability::ZSTD_COMPRESSION_ALGORITHM != 0 && !r.is_empty() {
            zstd_level = Some(r.u8("zstd compression level")?);
        }
        Ok(HandshakeResponse {
            capabilities,
            max_packet,
            charset,
            username,
            auth_response,
            database,
            auth_plugin,
            connect_attrs,
            zstd_level,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let mut caps = self.capabilities | capability::PROTOCOL_41;
        caps &= !capability::CONNECT_WITH_DB;
        if self.database.is_some() {
            caps |= capability::CONNECT_WITH_DB;
        }
        if self.connect_attrs.is_none() {
            caps &= !capability::CONNECT_ATTRS;
        }
        out.put_u32_le(caps);
        out.put_u32_le(self.max_packet);
        out.put_u8(self.charset);
        out.put_bytes(0, 23);
        put_null_terminated(out, self.username.as_bytes());
        if caps & capability::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(out, &self.auth_response);
        } else {
            out.put_u8(self.auth_response.len() as u8);
            out.put_slice(&self.auth_response);
        }
        if let Some(db) = &self.database {
            put_null_terminated(out, db.as_bytes());
        }
        if caps & capability::PLUGIN_AUTH != 0 {
            put_null_terminated(out, self.auth_plugin.as_deref().unwrap_or("").as_bytes());
        }
        if let Some(attrs) = &self.connect_attrs {
            out.put_slice(attrs);
        }
        if let Some(level) = self
            .zstd_level
            .filter(|_| caps & capability::ZSTD_COMPRESSION_ALGORITHM != 0)
        {
            out.put_u8(level);
        }
    }
}

/// AuthSwitchRequest: the server asks the client to authenticate with another plugin and
/// a (possibly new) nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    pub plugin: String,
    pub data: Vec<u8>,
}

impl AuthSwitchRequest {
    pub fn decode(payload: &[u8]) -> Result<AuthSwitchRequest, DecodeError> {
        let mut r = Reader::new(payload);
        if r.u8("auth switch header")? != header::AUTH_SWITCH {
            return Err(DecodeError::Invalid("auth switch header"));
        }
        let plugin = utf8(r.null_terminated_or_rest(), "auth plugin")?;
        let data = r.rest();
        let data = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
        Ok(AuthSwitchRequest { plugin, data })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(header::AUTH_SWITCH);
        put_null_terminated(out, self.plugin.as_bytes());
        put_null_terminated(out, &self.data);
    }
}

/// COM_CHANGE_USER: log in again as another (or the same) user on an open connection.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangeUser {
    pub username: String,
    pub auth_response: Vec<u8>,
    pub database: Option<String>,
    pub charset: Option<u16>,
    pub auth_plugin: Option<String>,
}

impl std::fmt::Debug for ChangeUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeUser")
            .field("username", &self.username)
            .field("database", &self.database)
            .field("auth_plugin", &self.auth_plugin)
            .finish_non_exhaustive()
    }
}

impl ChangeUser {
    /// Decodes the payload after the command byte, as negotiated by `capabilities`.
    pub fn decode(body: &[u8], capabilities: u32) -> Result<ChangeUser, DecodeError> {
        let mut r = Reader::new(body);
        let username = utf8(r.null_terminated("user name")?, "user name")?;
        let auth_response = if capabilities & capability::SECURE_CONNECTION != 0 {
            let len = usize::from(r.u8("auth response length")?);
            r.take(len, "auth response")?
        } else {
            r.null_terminated("auth response")?
        }
        .to_vec();
        let db = r.null_terminated_or_rest();
        let database = if db.is_empty() {
            None
        } else {
            Some(utf8(db, "database")?)
        };
        let mut cu = ChangeUser {
            username,
            auth_response,
            database,
            charset: None,
            auth_plugin: None,
        };
        if r.remaining() >= 2 {
            cu.charset = Some(r.u16("charset")?);
        }
        if capabilities & capability::PLUGIN_AUTH != 0 && !r.is_empty() {
            cu.auth_plugin = Some(utf8(r.null_terminated_or_rest(), "auth plugin")?);
        }
        Ok(cu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::auth::NATIVE_PASSWORD;

    fn greeting() -> InitialHandshake {
        InitialHandshake {
            server_version: "10.11.6-MariaDB".into(),
            connection_id: 42,
            scramble: (1..=20).collect(),
            capabilities: capability::PROTOCOL_41
                | capability::SECURE_CONNECTION
                | capability::PLUGIN_AUTH
                | capability::SSL,
            charset: 45,
            status: 2,
            auth_plugin: NATIVE_PASSWORD.into(),
        }
    }

    #[test]
    fn greeting_round_trips() {
        let hs = greeting();
        let mut out = BytesMut::new();
        hs.encode(&mut out);
        assert_eq!(InitialHandshake::decode(&out).unwrap(), hs);
    }

    #[test]
    fn every_truncation_of_a_greeting_is_an_error_not_a_panic() {
        let mut out = BytesMut::new();
        greeting().encode(&mut out);
        // the last byte is the plugin name's NUL, which decoders tolerate missing
        for cut in 0..out.len() - 1 {
            let decoded = InitialHandshake::decode(&out[..cut]);
            if let Ok(hs) = decoded {
                assert_ne!(hs, greeting(), "cut at {cut} decoded as the whole greeting");
            }
        }
    }

    #[test]
    fn garbage_is_not_a_greeting() {
        assert!(InitialHandshake::decode(b"GET / HTTP/1.1\r\n").is_err());
        assert!(InitialHandshake::decode(&[]).is_err());
    }

    fn response(caps: u32) -> HandshakeResponse {
        HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 24,
            charset: 45,
            username: "app".into(),
            auth_response: vec![7; 20],
            database: Some("sbtest".into()),
            auth_plugin: Some(NATIVE_PASSWORD.into()),
            connect_attrs: Some(vec![4, 1, b'a', 1, b'b']),
            zstd_level: None,
        }
    }

    #[test]
    fn handshake_response_round_trips_in_both_auth_encodings() {
        let base = capability::PROTOCOL_41
            | capability::SECURE_CONNECTION
            | capability::PLUGIN_AUTH
            | capability::CONNECT_WITH_DB
            | capability::CONNECT_ATTRS;
        for caps in [base, base | capability::PLUGIN_AUTH_LENENC_CLIENT_DATA] {
            let resp = response(caps);
            let mut out = BytesMut::new();
            resp.encode(&mut out);
            assert_eq!(HandshakeResponse::decode(&out).unwrap(), resp);
        }
    }

    #[test]
    fn a_zstd_clients_level_follows_its_attributes() {
        let caps = capability::PROTOCOL_41
            | capability::SECURE_CONNECTION
            | capability::PLUGIN_AUTH
            | capability::CONNECT_ATTRS
            | capability::ZSTD_COMPRESSION_ALGORITHM;
        let mut resp = response(caps);
        resp.zstd_level = Some(7);
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        assert_eq!(out.last(), Some(&7));
        let decoded = HandshakeResponse::decode(&out).unwrap();
        assert_eq!(decoded.zstd_level, Some(7));
        assert_eq!(decoded.connect_attrs, resp.connect_attrs);
        // without the flag, a byte there is not a level
        let mut plain = response(caps & !capability::ZSTD_COMPRESSION_ALGORITHM);
        plain.zstd_level = Some(7);
        let mut out = BytesMut::new();
        plain.encode(&mut out);
        assert_eq!(HandshakeResponse::decode(&out).unwrap().zstd_level, None);
    }

    #[test]
    fn handshake_response_with_lying_lengths_is_an_error() {
        let caps = capability::PROTOCOL_41
            | capability::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | capability::PLUGIN_AUTH;
        let mut out = BytesMut::new();
        out.put_u32_le(caps);
        out.put_u32_le(0);
        out.put_u8(45);
        out.put_bytes(0, 23);
        out.put_slice(b"app\0");
        out.put_u8(200); // 200 bytes of auth data announced, 3 present
        out.put_slice(b"abc");
        assert_eq!(
            HandshakeResponse::decode(&out),
            Err(DecodeError::Truncated("auth response"))
        );
    }

    #[test]
    fn pre_41_clients_are_refused() {
        let mut out = BytesMut::new();
        out.put_u16_le(0x0001);
        out.put_slice(&[0, 0, 0]);
        out.put_slice(b"old\0");
        assert!(HandshakeResponse::decode(&out).is_err());
    }

    #[test]
    fn ssl_request_is_recognised() {
        let mut out = BytesMut::new();
        encode_ssl_request(&mut out, capability::PROTOCOL_41, 1 << 24, 45);
        assert!(is_ssl_request(&out));
        let mut full = BytesMut::new();
        response(capability::PROTOCOL_41 | capability::SSL).encode(&mut full);
        assert!(!is_ssl_request(&full));
    }

    #[test]
    fn auth_switch_round_trips() {
        let sw = AuthSwitchRequest {
            plugin: NATIVE_PASSWORD.into(),
            data: vec![9; 20],
        };
        let mut out = BytesMut::new();
        sw.encode(&mut out);
        assert_eq!(AuthSwitchRequest::decode(&out).unwrap(), sw);
    }

    #[test]
    fn change_user_decodes() {
        let caps =
            capability::PROTOCOL_41 | capability::SECURE_CONNECTION | capability::PLUGIN_AUTH;
        let mut body = BytesMut::new();
        body.put_slice(b"app_tls\0");
        body.put_u8(20);
        body.put_bytes(3, 20);
        body.put_slice(b"sbtest\0");
        body.put_u16_le(45);
        body.put_slice(b"mysql_native_password\0");
        let cu = ChangeUser::decode(&body, caps).unwrap();
        assert_eq!(cu.username, "app_tls");
        assert_eq!(cu.auth_response, vec![3; 20]);
        assert_eq!(cu.database.as_deref(), Some("sbtest"));
        assert_eq!(cu.charset, Some(45));
        assert_eq!(cu.auth_plugin.as_deref(), Some(NATIVE_PASSWORD));
        assert!(ChangeUser::decode(b"app\0\x14ab", caps).is_err());
    }
}
