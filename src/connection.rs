//! A MySQL connection on a socket: bytes ↔ packets, for either side of the proxy.
//!
//! A [`Connection`] owns one read buffer and one write buffer. Packets are found in the
//! read buffer with [`frame::check_packet`] (check, then take), and split off it as
//! `BytesMut` without copying, so forwarding code can hand the very bytes it read to the
//! other socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client;

use crate::protocol::compressed;
use crate::protocol::frame::{self, encode_packet, FrameError, PacketSpan};
use crate::tls::ServerStream;

/// Initial read buffer size: small, so that idle connections stay cheap; it grows with
/// the packets that need it.
const INITIAL_BUFFER: usize = 4 * 1024;
/// How much free space a read asks for when the buffer is nearly full.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much free space, the buffer grows before the next read.
const MIN_READ: usize = 1024;

/// A socket, before or after a TLS upgrade.
pub enum Stream {
    Tcp(TcpStream),
    /// A client's link, its TLS terminated by the proxy.
    TlsServer(Box<ServerStream>),
    /// A link to a backend under TLS.
    TlsClient(Box<client::TlsStream<TcpStream>>),
}

impl Stream {
    fn is_tls(&self) -> bool {
        !matches!(self, Stream::Tcp(_))
    }

    /// The TCP socket under any TLS.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(tcp) => tcp,
            Stream::TlsServer(tls) => tls.tcp(),
            Stream::TlsClient(tls) => tls.get_ref().0,
        }
    }

    /// The socket's file descriptor (what ProxySQL's admin tables show as `fd`).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.tcp().as_raw_fd()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why reading a packet failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("connection closed in the middle of a packet")]
    Truncated,
}

/// One logical packet, reassembled.
#[derive(Debug)]
pub struct Packet {
    pub seq: u8,
    /// The sequence id of its last frame; a reply uses this plus one.
    pub last_seq: u8,
    pub payload: Bytes,
}

/// Packets with a first frame this large or larger are not buffered whole: the proxy
/// streams them through, so a client cannot make it hold more than a read buffer.
pub const STREAM_ABOVE: usize = 1 << 20;

/// The next request of a client.
#[derive(Debug)]
pub enum Request {
    /// A packet small enough to hold, complete.
    Whole(RawPacket),
    /// A large packet of which only the header and command byte have been looked at; they
    /// and the rest are still in the read buffer, to be streamed.
    Large { seq: u8, command: u8 },
}

/// One logical packet still in wire format (headers included), ready to forward.
#[derive(Debug)]
pub struct RawPacket {
    pub wire: BytesMut,
    pub span: PacketSpan,
}

impl RawPacket {
    /// The payload of the first frame: all of it, unless the packet is 16 MiB or more.
    pub fn first_frame(&self) -> &[u8] {
        let len = self.span.payload_len.min(frame::MAX_FRAME_PAYLOAD);
        &self.wire[frame::HEADER_LEN..frame::HEADER_LEN + len]
    }

    pub fn into_packet(self) -> Packet {
        let payload = if self.span.frames == 1 {
            self.wire.freeze().split_off(frame::HEADER_LEN)
        } else {
            Bytes::from(frame::reassemble(&self.wire, &self.span))
        };
        Packet {
            seq: self.span.first_seq,
            last_seq: self.span.last_seq,
            payload,
        }
    }
}

/// See the module documentation.
pub struct Connection {
    stream: Stream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// Bytes written since [`Connection::take_written`] last asked.
    written: u64,
    /// Set once the peer and the proxy agreed on the compressed protocol.
    compressed: Option<Box<Compressed>>,
}

/// The compressed protocol on a connection (see `protocol::compressed`): the read buffer
/// holds the packet stream inflated, the write buffer the stream before compression.
struct Compressed {
    /// Frames read and not inflated yet.
    raw: BytesMut,
    /// The sequence id of the next frame this side sends: one past the last frame the
    /// peer sent (its command starts again at 0), then counting up.
    seq: u8,
    codec: compressed::Codec,
}

impl Connection {
    /// Whether the peer has closed the connection, seen without waiting: for a connection
    /// that sat idle in the pool. On plain TCP, bytes nobody asked for (a server's goodbye
    /// error) count as closed too; under TLS they may be the protocol's own records, so only
    /// the end of the stream does. Costs a syscall only when the socket was last seen
    /// readable.
    pub fn peer_closed(&self) -> bool {
        let raw = self.compressed.as_ref().is_some_and(|c| !c.raw.is_empty());
        if !self.read_buf.is_empty() || raw {
            return true;
        }
        let (tcp, tls) = (self.stream.tcp(), self.stream.is_tls());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_peek(&mut cx, &mut buf) {
            Poll::Pending => false,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(_)) => !tls,
        }
    }

    /// The socket's file descriptor.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.raw_fd()
    }

    pub fn new(stream: Stream) -> Connection {
        Connection::with_buffer(stream, BytesMut::new())
    }

    /// Continues on a stream with bytes already read from it.
    pub fn with_buffer(stream: Stream, mut read_buf: BytesMut) -> Connection {
        if read_buf.capacity() == 0 {
            read_buf.reserve(INITIAL_BUFFER);
        }
        Connection {
            stream,
            read_buf,
            write_buf: BytesMut::new(),
            written: 0,
            compressed: None,
        }
    }

    /// Switches both directions to the compressed protocol (the login's final OK has
    /// gone out uncompressed), by `codec`.
    pub fn enable_compression(&mut self, codec: compressed::Codec) {
        self.compressed = Some(Box::new(Compressed {
            raw: BytesMut::new(),
            seq: 0,
            codec,
        }));
    }

    /// How the connection's frames are compressed, if they are.
    pub fn compression(&self) -> Option<compressed::Codec> {
        self.compressed.as_ref().map(|c| c.codec)
    }

    pub fn is_compressed(&self) -> bool {
        self.compressed.is_some()
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Hands back the socket and whatever was read but not consumed (for a TLS upgrade,
    /// which requires that nothing is pending).
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// The bytes read and not yet consumed.
    pub fn buffered(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Reads more bytes into the buffer; returns 0 at end of stream. The buffer grows only
    /// when it is nearly full, so a connection that only ever sees small packets keeps its
    /// small buffer.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.compressed.is_some() {
            return self.fill_inflated().await;
        }
        self.make_room();
        self.stream.read_buf(&mut self.read_buf).await
    }

    /// Gives the read buffer room for a read: its first allocation after
    /// [`Connection::fill_unbuffered`] released it, or more when it is nearly full.
    fn make_room(&mut self) {
        if self.read_buf.capacity() == 0 {
            self.read_buf.reserve(INITIAL_BUFFER);
        } else if self.read_buf.capacity() - self.read_buf.len() < MIN_READ {
            self.read_buf.reserve(READ_CHUNK);
        }
    }

    /// [`Connection::fill`] for a read that may wait a long time (a client's next
    /// request): when nothing has arrived yet, the read buffer is released while the
    /// connection waits for the socket to turn readable, so that an idle connection holds
    /// no buffer of its own. The syscalls are those of a plain read: the first try is the
    /// read itself, and readiness comes from the same event that would wake that read.
    async fn fill_unbuffered(&mut self) -> io::Result<usize> {
        if self.compressed.is_some() || !self.read_buf.is_empty() {
            return self.fill().await;
        }
        self.make_room();
        let tried = {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            std::pin::pin!(self.stream.read_buf(&mut self.read_buf)).poll(&mut cx)
        };
        if let Poll::Ready(read) = tried {
            return read;
        }
        self.read_buf = BytesMut::new();
        self.stream.tcp().readable().await?;
        self.fill().await
    }

    /// [`Connection::fill`] under the compressed protocol: inflates the next whole frame
    /// into the read buffer, reading until there is one. A bad frame is an error of the
    /// connection (`InvalidData`).
    async fn fill_inflated(&mut self) -> io::Result<usize> {
        let Connection {
            stream,
            read_buf,
            compressed,
            ..
        } = self;
        let c = compressed.as_mut().expect("checked by the caller");
        loop {
            let before = read_buf.len();
            match compressed::decode_frame(&mut c.raw, read_buf, c.codec) {
                Ok(Some(frame)) => {
                    c.seq = frame.seq.wrapping_add(1);
                    if read_buf.len() > before {
                        return Ok(read_buf.len() - before);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            if c.raw.capacity() - c.raw.len() < MIN_READ {
                c.raw.reserve(READ_CHUNK);
            }
            if stream.read_buf(&mut c.raw).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Reads one logical packet in wire form. `Ok(None)` is a clean close between packets.
    pub async fn read_raw(&mut self, max_payload: usize) -> Result<Option<RawPacket>, ReadError> {
        loop {
            if let Some(span) = frame::check_packet(&self.read_buf, max_payload)? {
                let wire = self.read_buf.split_to(span.wire_len);
                return Ok(Some(RawPacket { wire, span }));
            }
            if self.fill().await? == 0 {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Reads the next request: whole when it is small, otherwise just far enough to know
    /// its command (see [`STREAM_ABOVE`]). Limits are enforced from the headers.
    pub async fn read_request(&mut self, max_payload: usize) -> Result<Option<Request>, ReadError> {
        loop {
            if let Some(h) = frame::FrameHeader::parse(&self.read_buf) {
                if h.payload_len >= STREAM_ABOVE {
                    if h.payload_len > max_payload {
                        return Err(FrameError::TooLarge {
                            len: h.payload_len,
                            max: max_payload,
                        }
                        .into());
                    }
                    if let Some(&command) = self.read_buf.get(frame::HEADER_LEN) {
                        return Ok(Some(Request::Large {
                            seq: h.seq,
                            command,
                        }));
                    }
                } else if let Some(span) = frame::check_packet(&self.read_buf, max_payload)? {
                    let wire = self.read_buf.split_to(span.wire_len);
                    return Ok(Some(Request::Whole(RawPacket { wire, span })));
                }
            }
            if self.fill_unbuffered().await? == 0 {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Reads one logical packet and reassembles its payload.
    pub async fn read_packet(&mut self, max_payload: usize) -> Result<Option<Packet>, ReadError> {
        Ok(self
            .read_raw(max_payload)
            .await?
            .map(RawPacket::into_packet))
    }

    /// Queues `payload` as a packet with sequence id `seq`; returns the next sequence id.
    pub fn queue_packet(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode_packet(&mut self.write_buf, seq, payload)
    }

    /// The write buffer, for encoders that append whole packets themselves.
    pub fn write_buffer(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.write_buf.is_empty() {
            match self.compressed.as_mut() {
                Some(c) => {
                    let mut frames = BytesMut::with_capacity(self.write_buf.len() / 2 + 64);
                    compressed::encode(&self.write_buf, c.codec, &mut c.seq, &mut frames);
                    self.stream.write_all(&frames).await?;
                    self.written += frames.len() as u64;
                }
                None => {
                    self.stream.write_all(&self.write_buf).await?;
                    self.written += self.write_buf.len() as u64;
                }
            }
            self.write_buf.clear();
        }
        self.stream.flush().await
    }

    /// The bytes written since the last call, for the proxy's traffic counters.
    pub fn take_written(&mut self) -> u64 {
        std::mem::take(&mut self.written)
    }

    /// Queues bytes already in wire format, for the next write or [`Connection::flush`].
    pub fn queue_wire(&mut self, wire: &[u8]) {
        self.write_buf.extend_from_slice(wire);
    }

    /// Writes bytes that are already in wire format (forwarded packets), after anything
    /// queued.
    pub async fn write_wire(&mut self, wire: &[u8]) -> io::Result<()> {
        if self.compressed.is_some() {
            self.write_buf.extend_from_slice(wire);
            return self.flush().await;
        }
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).await?;
            self.written += self.write_buf.len() as u64;
            self.write_buf.clear();
        }
        self.stream.write_all(wire).await?;
        self.written += wire.len() as u64;
        self.stream.flush().await
    }

    /// Bytes its read and write buffers hold (allocated, not only filled).
    pub fn buffer_capacity(&self) -> usize {
        let raw = self.compressed.as_ref().map_or(0, |c| c.raw.capacity());
        self.read_buf.capacity() + self.write_buf.capacity() + raw
    }

    /// Releases buffer memory grown by a large packet, so an idle connection stays small.
    pub fn shrink_buffers(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 4 * READ_CHUNK {
            self.read_buf = BytesMut::with_capacity(INITIAL_BUFFER);
        }
        if self.write_buf.capacity() > 4 * READ_CHUNK {
            self.write_buf = BytesMut::new();
        }
        if let Some(c) = self.compressed.as_mut() {
            if c.raw.is_empty() && c.raw.capacity() > 4 * READ_CHUNK {
                c.raw = BytesMut::new();
            }
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}
