//! The connection log: one JSON line per accepted or refused client connection (time,
//! client address and port, user, TLS version and cipher, result, reason) — the proxy's
//! answer to VPC flow logs. Never a password or auth data.
//!
//! Lines are handed to a writer task through a bounded channel: a slow disk never stalls
//! a login, and when the channel is full lines are dropped and counted instead.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::mpsc;

const QUEUE: usize = 10_000;

/// One connection's outcome.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    pub client: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<&'a str>,
    /// "accepted" or "refused".
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

impl<'a> Entry<'a> {
    pub fn new(peer: SocketAddr, result: &'static str) -> Entry<'a> {
        Entry {
            client: peer.ip().to_string(),
            port: peer.port(),
            user: None,
            tls_version: None,
            tls_cipher: None,
            result,
            reason: None,
        }
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ConnectionLog {
    sender: Option<mpsc::Sender<String>>,
    dropped: AtomicU64,
}

impl ConnectionLog {
    /// Opens the log per `target`: "off", "stderr" or a file path. Must run inside the
    /// async runtime (it spawns the writer).
    pub fn open(target: &str) -> std::io::Result<ConnectionLog> {
        let mut out: Box<dyn Write + Send> = match target {
            "off" | "" => {
                return Ok(ConnectionLog {
                    sender: None,
                    dropped: AtomicU64::new(0),
                })
            }
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (sender, mut receiver) = mpsc::channel::<String>(QUEUE);
        tokio::task::spawn_blocking(move || {
            while let Some(line) = receiver.blocking_recv() {
                if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                    tracing::error!("connection log write failed");
                }
            }
        });
        Ok(ConnectionLog {
            sender: Some(sender),
            dropped: AtomicU64::new(0),
        })
    }

    pub fn is_on(&self) -> bool {
        self.sender.is_some()
    }

    pub fn record(&self, entry: &Entry<'_>) {
        let Some(sender) = &self.sender else {
            return;
        };
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            entry,
        };
        let Ok(text) = serde_json::to_string(&line) else {
            return;
        };
        if sender.try_send(text).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines lost because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
