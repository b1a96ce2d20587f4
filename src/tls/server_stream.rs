//! The client link's TLS, on rustls' unbuffered API: the proxy owns the record buffers and
//! lets go of them whenever the link waits with nothing in them. rustls' buffered
//! `ServerConnection` keeps a 4 KiB record buffer for the life of every connection, the
//! largest single part of an idle TLS session; thousands of idle application connections
//! are what a pooling proxy is for.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use rustls::{CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much free space a socket read asks for: a full record and its header.
const READ_SIZE: usize = 17 * 1024;
/// Below this much free space, the incoming buffer grows before the next read.
const MIN_READ: usize = 1024;
/// Ciphertext held while waiting for the rest of a record or handshake flight. rustls
/// refuses handshake messages over 64 KiB and records over 16 KiB; a peer that sends more
/// without completing one is refused here rather than buffered.
const MAX_INCOMING: usize = 96 * 1024;
/// Plaintext encrypted by one write: four full records. Larger writes are taken in parts,
/// so the ciphertext waiting for the socket stays bounded.
const MAX_ENCRYPT: usize = 64 * 1024;
/// Room for the record headers, nonces and tags of an encryption (per 16 KiB record at
/// most 29 bytes under TLS 1.2, 22 under 1.3), asked for up front to avoid a retry.
const RECORD_OVERHEAD: usize = 64;

/// A TLS server session over a TCP socket.
pub struct ServerStream {
    tcp: TcpStream,
    tls: UnbufferedServerConnection,
    /// Ciphertext read and not yet consumed by rustls.
    incoming: BytesMut,
    /// Ciphertext (handshake records, alerts, application data) not yet sent, in order.
    outgoing: Outgoing,
    /// Decrypted bytes that did not fit the reader's buffer.
    plaintext: BytesMut,
    /// The peer sent close_notify or closed its socket: reads return end of stream.
    read_closed: bool,
    /// close_notify is queued (or sent).
    close_queued: bool,
}

/// Where rustls stopped after processing the buffered ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Application data may be sent; more ciphertext is needed for anything else.
    Writable,
    /// The handshake needs more ciphertext from the peer.
    NeedInput,
    /// Both sides have sent close_notify.
    Closed,
}

/// What to do once application data may be sent.
#[derive(Clone, Copy)]
enum Outbound<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl ServerStream {
    /// Runs the TLS handshake on `tcp`; `prefix` is ciphertext already read from it (a
    /// client may send its ClientHello right behind the SSLRequest).
    pub async fn accept(
        config: Arc<ServerConfig>,
        prefix: BytesMut,
        tcp: TcpStream,
    ) -> io::Result<ServerStream> {
        let tls = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
        let mut stream = ServerStream {
            tcp,
            tls,
            incoming: prefix,
            outgoing: Outgoing::default(),
            plaintext: BytesMut::new(),
            read_closed: false,
            close_queued: false,
        };
        loop {
            let stop = match stream.process(None, Outbound::Nothing) {
                Ok((stop, _)) => stop,
                Err(e) => {
                    stream.send_alert_now();
                    return Err(e);
                }
            };
            poll_fn(|cx| stream.poll_send(cx)).await?;
            match stop {
                Stop::Writable if !stream.tls.is_handshaking() => return Ok(stream),
                Stop::Closed => return Err(eof("the client closed the TLS handshake")),
                Stop::Writable | Stop::NeedInput => {
                    if poll_fn(|cx| stream.poll_fill(cx)).await? == 0 {
                        return Err(eof("the client left during the TLS handshake"));
                    }
                }
            }
        }
    }

    /// The negotiated session: version, cipher suite, certificates, resumption.
    pub fn session(&self) -> &CommonState {
        &self.tls
    }

    /// The TCP socket under the TLS.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Runs rustls over the buffered ciphertext until it waits: decrypted bytes go to
    /// `reader` (what does not fit, to `self.plaintext`), handshake records and alerts are
    /// queued to send, and once application data may go, `send` is encrypted behind them.
    /// Returns where it stopped and how many bytes of `send` were taken.
    fn process(
        &mut self,
        mut reader: Option<&mut ReadBuf<'_>>,
        send: Outbound<'_>,
    ) -> io::Result<(Stop, usize)> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(&mut self.incoming);
            let mut taken = 0;
            let stop = match state.map_err(invalid_data)? {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(invalid_data)?;
                        discard += record.discard;
                        deliver(record.payload, reader.as_deref_mut(), &mut self.plaintext);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut record) => {
                    append(&mut self.outgoing, 0, |out| {
                        record.encode(out).map_err(encode_error)
                    })?;
                    None
                }
                // Sending is ordered through `outgoing`: what is queued there now goes out
                // before anything queued later, which is all rustls asks of this step.
                ConnectionState::TransmitTlsData(done) => {
                    done.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Stop::NeedInput),
                ConnectionState::PeerClosed => {
                    self.read_closed = true;
                    None
                }
                ConnectionState::Closed => {
                    self.read_closed = true;
                    Some(Stop::Closed)
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    taken = queue_outbound(&mut self.outgoing, &mut traffic, send)?;
                    Some(Stop::Writable)
                }
                ConnectionState::ReadEarlyData(_) => {
                    return Err(invalid_data("early data, which the proxy does not accept"))
                }
                other => return Err(invalid_data(format!("unexpected TLS state {other:?}"))),
            };
            self.incoming.advance(discard);
            if let Some(stop) = stop {
                return Ok((stop, taken));
            }
        }
    }

    /// Reads more ciphertext from the socket into `incoming`; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(invalid_data(
                "a TLS record or handshake flight too large",
            )));
        }
        if self.incoming.capacity() - self.incoming.len() < MIN_READ {
            self.incoming.reserve(READ_SIZE);
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read_buf(&mut self.incoming) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                read => return Poll::Ready(read),
            }
        }
    }

    /// Sends the queued ciphertext.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, self.outgoing.pending()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// After a TLS error: queues the alert rustls prepared, if any, and sends it if the
    /// socket takes it at once, so the client learns why rather than seeing a reset.
    fn send_alert_now(&mut self) {
        let UnbufferedStatus { state, .. } = self.tls.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut record)) = state {
            let _ = append(&mut self.outgoing, 0, |out| {
                record.encode(out).map_err(encode_error)
            });
            let mut cx = Context::from_waker(std::task::Waker::noop());
            let _ = self.poll_send(&mut cx);
        }
    }

    /// Lets go of the buffers that hold nothing: the link is about to wait for the peer.
    fn release_empty_buffers(&mut self) {
        self.outgoing.release_if_empty();
        for buf in [&mut self.incoming, &mut self.plaintext] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
    }
}

/// Encrypts what `send` asks for behind the ciphertext already queued; returns how many
/// bytes of data it took (at most [`MAX_ENCRYPT`]).
fn queue_outbound(
    outgoing: &mut Outgoing,
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    send: Outbound<'_>,
) -> io::Result<usize> {
    match send {
        Outbound::Nothing => Ok(0),
        Outbound::Data(data) => {
            let data = &data[..data.len().min(MAX_ENCRYPT)];
            let room = data.len() + RECORD_OVERHEAD * (data.len() / 16_384 + 1);
            append(outgoing, room, |out| {
                traffic.encrypt(data, out).map_err(encrypt_error)
            })?;
            Ok(data.len())
        }
        Outbound::CloseNotify => {
            append(outgoing, RECORD_OVERHEAD, |out| {
                traffic.queue_close_notify(out).map_err(encrypt_error)
            })?;
            Ok(0)
        }
    }
}

/// Hands decrypted bytes to the reader, keeping what does not fit.
fn deliver(payload: &[u8], reader: Option<&mut ReadBuf<'_>>, rest: &mut BytesMut) {
    let fits = match reader {
        Some(reader) if rest.is_empty() => {
            let n = payload.len().min(reader.remaining());
            reader.put_slice(&payload[..n]);
            n
        }
        _ => 0,
    };
    rest.extend_from_slice(&payload[fits..]);
}

/// Queues what `write` puts into at least `room` bytes (more if it asks for more).
fn append(
    out: &mut Outgoing,
    room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Needs>,
) -> io::Result<()> {
    let mut room = room;
    loop {
        match write(out.room(room)) {
            Ok(n) => {
                out.commit(n);
                return Ok(());
            }
            Err(Needs::Room(needed)) if needed > room => room = needed,
            Err(Needs::Room(_)) => return Err(invalid_data("TLS record buffer sizing")),
            Err(Needs::Failed(e)) => return Err(e),
        }
    }
}

/// Ciphertext waiting for the socket. rustls encrypts into a `&mut [u8]`, which must be
/// initialised: the buffer keeps the bytes it has once zeroed and reuses them from the
/// start whenever everything queued has been sent, so a long result is not zero-filled
/// write after write. Released whole while the link waits.
#[derive(Default)]
struct Outgoing {
    /// Initialised throughout; its length is the most ever needed at once.
    buf: Vec<u8>,
    /// `buf[sent..end]` is queued and not yet sent.
    sent: usize,
    end: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.sent == self.end
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.sent..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.end {
            (self.sent, self.end) = (0, 0);
        }
    }

    /// At least `room` writable bytes behind what is queued.
    fn room(&mut self, room: usize) -> &mut [u8] {
        if self.buf.len() < self.end + room {
            self.buf.resize(self.end + room, 0);
        }
        &mut self.buf[self.end..]
    }

    fn commit(&mut self, n: usize) {
        self.end += n;
    }

    fn release_if_empty(&mut self) {
        if self.is_empty() {
            *self = Outgoing::default();
        }
    }
}

/// Why writing into the outgoing buffer stopped.
enum Needs {
    Room(usize),
    Failed(io::Error),
}

fn encode_error(e: EncodeError) -> Needs {
    match e {
        EncodeError::InsufficientSize(s) => Needs::Room(s.required_size),
        other => Needs::Failed(invalid_data(other)),
    }
}

fn encrypt_error(e: EncryptError) -> Needs {
    match e {
        EncryptError::InsufficientSize(s) => Needs::Room(s.required_size),
        other => Needs::Failed(invalid_data(other)),
    }
}

fn invalid_data(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn eof(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, why)
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(buf.remaining());
                buf.put_slice(&this.plaintext.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            this.process(Some(buf), Outbound::Nothing)?;
            // A key update's answer, say: rustls may have queued records on a read.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if buf.filled().len() > before || !this.plaintext.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                continue;
            }
            match this.poll_fill(cx) {
                Poll::Ready(Ok(0)) => this.read_closed = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.release_empty_buffers();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was encrypted before leaves first: a slow reader slows the writer.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let (stop, taken) = this.process(None, Outbound::Data(data))?;
        if stop != Stop::Writable {
            return Poll::Ready(Err(invalid_data("TLS session cannot send data")));
        }
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            this.close_queued = true;
            this.process(None, Outbound::CloseNotify)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::{client, TlsConnector};

    use super::*;
    use crate::config::FrontendTls;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/tls/testdata")
            .join(name)
    }

    /// The proxy's own server configuration (tickets, suites), on a test certificate; one
    /// for all tests, as one serves all clients (a ticket is only good with its issuer).
    fn server_config() -> Arc<ServerConfig> {
        static CONFIG: std::sync::LazyLock<Arc<ServerConfig>> = std::sync::LazyLock::new(|| {
            let tls = FrontendTls {
                cert: testdata("localhost.pem"),
                key: testdata("localhost-key.pem"),
                client_ca: None,
                ciphers: None,
            };
            crate::tls::server_config(&tls).expect("the test certificate loads")
        });
        CONFIG.clone()
    }

    fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        let cert = CertificateDer::from_pem_file(testdata("localhost.pem")).expect("cert");
        roots.add(cert).expect("a trust anchor");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// A client connected to a `ServerStream` over loopback, the handshake done.
    async fn pair(client: &Arc<ClientConfig>) -> (client::TlsStream<TcpStream>, ServerStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let name = ServerName::try_from("localhost").expect("name");
        let connector = TlsConnector::from(client.clone());
        let (client, server) = tokio::join!(
            async {
                let tcp = TcpStream::connect(address).await.expect("connect");
                connector
                    .connect(name, tcp)
                    .await
                    .expect("client handshake")
            },
            async {
                let (tcp, _) = listener.accept().await.expect("accept");
                ServerStream::accept(server_config(), BytesMut::new(), tcp)
                    .await
                    .expect("server handshake")
            }
        );
        (client, server)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_whole_under_tls13_and_tls12() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (mut client, mut server) = pair(&client_config(&[version])).await;
            assert_eq!(server.session().protocol_version(), Some(version.version));
            // Larger than a record and than MAX_ENCRYPT, read through a small buffer so
            // that decrypted bytes wait in `plaintext`.
            let upload = pattern(300_000);
            let download = pattern(1_100_000);
            let (received, sent_back) = tokio::join!(
                async {
                    client.write_all(&upload).await.expect("client writes");
                    client.flush().await.expect("client flushes");
                    let mut back = vec![0; download.len()];
                    client.read_exact(&mut back).await.expect("client reads");
                    back
                },
                async {
                    let mut got = Vec::new();
                    let mut small = [0u8; 700];
                    while got.len() < upload.len() {
                        let n = server.read(&mut small).await.expect("server reads");
                        assert!(n > 0, "stream ended early");
                        got.extend_from_slice(&small[..n]);
                    }
                    server.write_all(&download).await.expect("server writes");
                    server.flush().await.expect("server flushes");
                    got
                }
            );
            assert!(received == download, "the client got what the server sent");
            assert!(sent_back == upload, "the server got what the client sent");
        }
    }

    #[tokio::test]
    async fn a_waiting_link_holds_no_buffers() {
        let (mut client, mut server) = pair(&client_config(&[&rustls::version::TLS13])).await;
        client.write_all(b"request").await.expect("write");
        client.flush().await.expect("flush");
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"request");
        server.write_all(b"response").await.expect("write");
        server.flush().await.expect("flush");
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut read_buf = ReadBuf::new(&mut buf);
        let waiting = Pin::new(&mut server).poll_read(&mut cx, &mut read_buf);
        assert!(waiting.is_pending(), "nothing more was sent");
        assert_eq!(
            (
                server.incoming.capacity(),
                server.outgoing.buf.capacity(),
                server.plaintext.capacity()
            ),
            (0, 0, 0)
        );
        // And it carries on after the wait.
        let n = client.read(&mut buf).await.expect("client reads");
        assert_eq!(&buf[..n], b"response");
        client.write_all(b"again").await.expect("write");
        client.flush().await.expect("flush");
        let n = server.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"again");
    }

    #[tokio::test]
    async fn a_returning_client_resumes_with_a_ticket() {
        let config = client_config(&[&rustls::version::TLS13]);
        let (mut client, mut server) = pair(&config).await;
        assert_eq!(
            server.session().handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        // The client takes its ticket in with the first bytes it reads.
        server.write_all(b"hello").await.expect("write");
        server.flush().await.expect("flush");
        let mut buf = [0u8; 8];
        client.read_exact(&mut buf[..5]).await.expect("read");
        let (_client, server) = pair(&config).await;
        assert_eq!(
            server.session().handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
    }

    #[tokio::test]
    async fn close_notify_ends_the_stream_on_both_sides() {
        let (mut client, mut server) = pair(&client_config(&[&rustls::version::TLS13])).await;
        client.shutdown().await.expect("client closes");
        let mut buf = [0u8; 16];
        assert_eq!(server.read(&mut buf).await.expect("end of stream"), 0);
        server.shutdown().await.expect("server closes");
        assert_eq!(client.read(&mut buf).await.expect("end of stream"), 0);
    }

    #[tokio::test]
    async fn garbage_instead_of_a_client_hello_is_refused_with_an_alert() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (mut client, server) = tokio::join!(
            async { TcpStream::connect(address).await.expect("connect") },
            async {
                let (tcp, _) = listener.accept().await.expect("accept");
                ServerStream::accept(
                    server_config(),
                    BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]),
                    tcp,
                )
                .await
            }
        );
        let err = server.err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let mut alert = Vec::new();
        client.read_to_end(&mut alert).await.expect("read");
        assert_eq!(alert.first(), Some(&0x15), "a TLS alert record: {alert:?}");
    }
}
