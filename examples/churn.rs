//! A light login-churn client: N tasks on one thread, each connecting, upgrading to TLS,
//! logging in, running `SELECT 1` and quitting, over and over for a fixed time, as an
//! application that connects per request does.
//!
//! sysbench with `--mysql-ssl=on` can do the same (benches/churn.lua), but libmariadb
//! builds a fresh OpenSSL context for every connection — it loads the CA file and the
//! client's key each time — and spends about 2 ms of CPU per login, four times what the
//! proxy spends: on a small machine such a run measures the client. The TLS here is rustls
//! with one shared configuration, so what the run shows is the server side.
//!
//! usage: churn --port P [--clients 16] [--time 10] [--user app] [--password app]
//!              [--ca certs/ca.pem] [--resume 0|1] [--tls 0|1]
//!
//! With `--resume 1` clients keep the TLS sessions (tickets) servers give them and resume
//! them on their next connection; with 0 (the default, as libmariadb does) every login is
//! a full handshake. The server certificate is verified against `--ca` for the name
//! "localhost".
//!
//! Prints one line of `key=value` pairs: clients, seconds, logins, per_second, resumed,
//! errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use bytes::BytesMut;
use sluice::protocol::constants::{capability, command, header};
use sluice::protocol::frame::encode_packet;
use sluice::protocol::handshake::{encode_ssl_request, HandshakeResponse, InitialHandshake};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::Resumption;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, HandshakeKind, RootCertStore};
use tokio_rustls::TlsConnector;

struct Options {
    port: u16,
    clients: usize,
    seconds: u64,
    user: String,
    password: String,
    ca: String,
    resume: bool,
    tls: bool,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let mut o = Options {
            port: 0,
            clients: 16,
            seconds: 10,
            user: "app".into(),
            password: "app".into(),
            ca: "certs/ca.pem".into(),
            resume: false,
            tls: true,
        };
        for (flag, value) in support::flags()? {
            let number = |v: &str| support::number(&flag, v);
            match flag.as_str() {
                "--port" => o.port = number(&value)? as u16,
                "--clients" => o.clients = number(&value)? as usize,
                "--time" => o.seconds = number(&value)?,
                "--user" => o.user = value,
                "--password" => o.password = value,
                "--ca" => o.ca = value,
                "--resume" => o.resume = number(&value)? != 0,
                "--tls" => o.tls = number(&value)? != 0,
                _ => return Err(format!("unknown option {flag}")),
            }
        }
        if o.port == 0 {
            return Err("--port is required".into());
        }
        Ok(o)
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(&self.ca).map_err(|e| format!("{}: {e}", self.ca))?
        {
            roots
                .add(cert.map_err(|e| format!("{}: {e}", self.ca))?)
                .map_err(|e| format!("{}: {e}", self.ca))?;
        }
        let mut config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        if !self.resume {
            config.resumption = Resumption::disabled();
        }
        Ok(Arc::new(config))
    }
}

/// Writes one packet.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    seq: u8,
    payload: &[u8],
) -> Result<(), String> {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    encode_packet(&mut out, seq, payload);
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Reads one packet's payload (logins and `SELECT 1` never need more than one frame).
async fn read<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, String> {
    let mut head = [0u8; 4];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let len = usize::from(head[0]) | usize::from(head[1]) << 8 | usize::from(head[2]) << 16;
    let mut payload = vec![0; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if payload.first() == Some(&header::ERR) {
        return Err(support::error_text(&payload));
    }
    Ok(payload)
}

/// Logs in (the greeting already read), runs `SELECT 1` and quits.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    o: &Options,
    response: HandshakeResponse,
    seq: u8,
) -> Result<(), String> {
    let mut payload = BytesMut::new();
    response.encode(&mut payload);
    send(stream, seq, &payload).await?;
    let answer = read(stream).await?;
    if answer.first() != Some(&header::OK) {
        return Err(format!("login as {} not accepted", o.user));
    }
    let mut select = vec![command::QUERY];
    select.extend_from_slice(b"SELECT 1");
    send(stream, 0, &select).await?;
    // column count, column definition, EOF, the row, EOF
    for _ in 0..5 {
        read(stream).await?;
    }
    send(stream, 0, &[command::QUIT]).await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// One login from connect to quit; whether its TLS session was resumed.
async fn login(o: &Options, tls: Option<&TlsConnector>) -> Result<bool, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", o.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let greeting = InitialHandshake::decode(&read(&mut tcp).await?).map_err(|e| e.to_string())?;
    let ssl = if tls.is_some() { capability::SSL } else { 0 };
    let response = support::native_login(&o.user, &o.password, &greeting, None, ssl);
    let Some(connector) = tls else {
        session(&mut tcp, o, response, 1).await?;
        return Ok(false);
    };
    let mut request = BytesMut::with_capacity(32);
    encode_ssl_request(
        &mut request,
        response.capabilities,
        response.max_packet,
        response.charset,
    );
    send(&mut tcp, 1, &request).await?;
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let resumed = stream.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    session(&mut stream, o, response, 2).await?;
    Ok(resumed)
}

#[derive(Default)]
struct Tally {
    logins: u64,
    resumed: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn churn(o: Arc<Options>, tls: Option<TlsConnector>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        match login(&o, tls.as_ref()).await {
            Ok(resumed) => {
                tally.logins += 1;
                tally.resumed += u64::from(resumed);
            }
            Err(e) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

fn main() {
    let o = match Options::parse() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("churn: {e}");
            std::process::exit(2);
        }
    };
    let tls = match o.tls.then(|| o.tls_config()).transpose() {
        Ok(config) => config.map(TlsConnector::from),
        Err(e) => {
            eprintln!("churn: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let total = runtime.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(o.seconds);
        let tasks: Vec<_> = (0..o.clients)
            .map(|_| tokio::spawn(churn(o.clone(), tls.clone(), deadline)))
            .collect();
        let mut total = Tally::default();
        for task in tasks {
            let t = task.await.expect("client task");
            total.logins += t.logins;
            total.resumed += t.resumed;
            total.errors += t.errors;
            if total.first_error.is_none() {
                total.first_error = t.first_error;
            }
        }
        (total, o.clients, o.seconds)
    });
    let (total, clients, seconds) = total;
    if let Some(e) = &total.first_error {
        eprintln!("churn: first error: {e}");
    }
    println!(
        "clients={clients} seconds={seconds} logins={} per_second={:.1} resumed={} errors={}",
        total.logins,
        total.logins as f64 / seconds as f64,
        total.resumed,
        total.errors,
    );
    std::process::exit(i32::from(total.errors > 0));
}
