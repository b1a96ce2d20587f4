//! Status that describes the client's own link is answered for that link. A backend's
//! `SHOW STATUS` reports the per-connection `Ssl_%` values of the proxy's connection to it
//! — plaintext, or the backend TLS — not of the client's TLS, which the proxy terminated,
//! and its `Compression` is that of the uncompressed backend link; so a session-status
//! read runs on the backend as usual and those rows are rewritten with the client link's
//! values before the client gets them.

use bytes::Bytes;

use crate::protocol::constants::command;
use crate::protocol::text::replace_values;

use super::{Failure, Session};

/// The columns a status read names its rows and values by: `SHOW STATUS`, and the
/// `SESSION_STATUS` tables.
const NAME_COLUMNS: &[&str] = &["Variable_name"];
const VALUE_COLUMNS: &[&str] = &["Value", "Variable_value"];

/// What OpenSSL reports as an unlimited verification depth.
const UNLIMITED_DEPTH: &str = "18446744073709551615";

impl Session {
    /// Sends a status read's withheld answer with the client link's `Ssl_%` values in
    /// place of the backend link's (unchanged when it is no single result set).
    pub(super) async fn send_link_status(&mut self, answer: Bytes) -> Result<(), Failure> {
        let patched = replace_values(&answer, NAME_COLUMNS, VALUE_COLUMNS, |name| {
            self.link_value(name).map(String::into_bytes)
        });
        let wire = patched.map_or(answer, |p| p.freeze());
        let wire = self.client_form(command::QUERY, wire);
        self.client
            .write_wire(&wire)
            .await
            .map_err(|_| Failure::Client)?;
        self.client.flush().await.map_err(|_| Failure::Client)
    }

    /// The value a server would show for per-connection status variable `name` on this
    /// client's link (`None`: not a per-connection TLS or compression value; the
    /// backend's row stands).
    /// `Ssl_default_timeout` is left as the backend reports it: rustls has no such setting.
    fn link_value(&self, name: &[u8]) -> Option<String> {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        if name == "compression" {
            return Some(
                if self.client.is_compressed() {
                    "ON"
                } else {
                    "OFF"
                }
                .into(),
            );
        }
        let runtime = self.frontend.shared.peek();
        let facts = runtime.frontend_link.as_deref();
        let Some((tls, facts)) = self.tls.as_ref().zip(facts) else {
            return match name.as_str() {
                "ssl_cipher"
                | "ssl_cipher_list"
                | "ssl_version"
                | "ssl_server_not_after"
                | "ssl_server_not_before" => Some(String::new()),
                "ssl_sessions_reused" | "ssl_verify_depth" | "ssl_verify_mode" => Some("0".into()),
                _ => None,
            };
        };
        let verifying = facts.verifies_clients;
        Some(match name.as_str() {
            "ssl_cipher" => tls.cipher.clone(),
            "ssl_cipher_list" => facts.cipher_list.clone(),
            "ssl_version" => tls.version.clone(),
            "ssl_server_not_after" => facts.not_after.clone(),
            "ssl_server_not_before" => facts.not_before.clone(),
            "ssl_sessions_reused" => u8::from(tls.resumed).to_string(),
            "ssl_verify_depth" => if verifying { UNLIMITED_DEPTH } else { "0" }.into(),
            "ssl_verify_mode" => if verifying { "5" } else { "0" }.into(),
            _ => return None,
        })
    }
}
