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
mod tests;
