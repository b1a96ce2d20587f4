//! ServerStream against a real rustls client over loopback TCP, on a test certificate.

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

#[tokio::test]
async fn a_client_hello_read_before_the_upgrade_starts_the_handshake() {
    // A client may send its ClientHello right behind the SSLRequest: the proxy then holds
    // the start of it when the TLS begins. Here the first half is handed over as already
    // read, the second half comes over the socket.
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = rustls::ClientConnection::new(client_config(&[&rustls::version::TLS13]), name)
        .expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("ClientHello");
    let (read_already, rest) = hello.split_at(hello.len() / 2);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let rest = rest.to_vec();
    let peer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(address).expect("connect");
        tcp.write_all(&rest).expect("the rest of the ClientHello");
        while client.is_handshaking() {
            client.complete_io(&mut tcp).expect("handshake");
        }
        let mut tls = rustls::Stream::new(&mut client, &mut tcp);
        tls.write_all(b"ping").expect("write");
        let mut answer = [0u8; 4];
        tls.read_exact(&mut answer).expect("read");
        answer
    });
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut server = ServerStream::accept(server_config(), BytesMut::from(read_already), tcp)
        .await
        .expect("server handshake");
    let mut ping = [0u8; 4];
    server.read_exact(&mut ping).await.expect("read");
    assert_eq!(&ping, b"ping");
    server.write_all(b"pong").await.expect("write");
    server.flush().await.expect("flush");
    assert_eq!(&peer.await.expect("client thread"), b"pong");
}
