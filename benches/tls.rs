//! The client link's TLS on the proxy's side: one request read and one response written
//! over loopback TCP, the client a rustls client in the same thread. The proxy's
//! `tls::ServerStream` (rustls' unbuffered API, buffers released while the link waits)
//! runs beside tokio-rustls' server stream (rustls' buffered API, which it replaced), so
//! the two are compared in one run: a point select's sizes, and a 64 KiB result.
//!
//! `cargo bench --bench tls`

use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sluice::config::FrontendTls;
use sluice::tls::ServerStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::{client, TlsAcceptor, TlsConnector};

/// sysbench's point select as a COM_QUERY packet's size.
const REQUEST: usize = 44;
/// Its one-row result set, roughly.
const POINT_RESPONSE: usize = 200;
const LARGE_RESPONSE: usize = 64 * 1024;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/tls/testdata")
        .join(name)
}

fn server_config() -> Arc<ServerConfig> {
    sluice::tls::server_config(&FrontendTls {
        cert: testdata("localhost.pem"),
        key: testdata("localhost-key.pem"),
        client_ca: None,
        ciphers: None,
    })
    .expect("the test certificate loads")
}

fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(testdata("localhost.pem")).expect("cert");
    roots.add(cert).expect("a trust anchor");
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connected TCP sockets, client first.
async fn sockets() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("address"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    (client, server)
}

async fn connect(tcp: TcpStream) -> client::TlsStream<TcpStream> {
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(client_config())
        .connect(name, tcp)
        .await
        .expect("client handshake")
}

fn unbuffered_pair(runtime: &Runtime) -> (client::TlsStream<TcpStream>, ServerStream) {
    runtime.block_on(async {
        let (client, server) = sockets().await;
        tokio::join!(connect(client), async {
            ServerStream::accept(server_config(), BytesMut::new(), server)
                .await
                .expect("server handshake")
        })
    })
}

fn buffered_pair(
    runtime: &Runtime,
) -> (
    client::TlsStream<TcpStream>,
    tokio_rustls::server::TlsStream<TcpStream>,
) {
    runtime.block_on(async {
        let (client, server) = sockets().await;
        tokio::join!(connect(client), async {
            TlsAcceptor::from(server_config())
                .accept(server)
                .await
                .expect("server handshake")
        })
    })
}

/// The client sends a request; the proxy's side reads it and answers `response` bytes,
/// which the client reads whole (at the same time: a large answer fills the socket).
async fn round_trip(
    client: &mut client::TlsStream<TcpStream>,
    server: &mut (impl AsyncRead + AsyncWrite + Unpin),
    response: &[u8],
    received: &mut [u8],
) {
    client.write_all(&response[..REQUEST]).await.expect("send");
    client.flush().await.expect("flush");
    let serve = async {
        let mut request = [0u8; REQUEST];
        let mut read = 0;
        while read < REQUEST {
            read += server.read(&mut request[read..]).await.expect("read");
        }
        server.write_all(response).await.expect("answer");
        server.flush().await.expect("flush");
    };
    let receive = async {
        client
            .read_exact(&mut received[..response.len()])
            .await
            .expect("receive");
    };
    tokio::join!(serve, receive);
}

/// Round trips of `response` over one connected pair, as the benchmark `name`.
fn bench_round_trip(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    runtime: &Runtime,
    (mut client, mut server): (
        client::TlsStream<TcpStream>,
        impl AsyncRead + AsyncWrite + Unpin,
    ),
    response: &[u8],
    scratch: &mut [u8],
) {
    group.bench_function(name, |b| {
        b.iter(|| runtime.block_on(round_trip(&mut client, &mut server, response, scratch)))
    });
}

fn round_trips(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut scratch = vec![0u8; LARGE_RESPONSE];
    for (size, label) in [
        (POINT_RESPONSE, "point_select"),
        (LARGE_RESPONSE, "64k_result"),
    ] {
        let response: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut group = c.benchmark_group(format!("tls/{label}"));
        let pair = unbuffered_pair(&runtime);
        bench_round_trip(
            &mut group,
            "server_stream",
            &runtime,
            pair,
            &response,
            &mut scratch,
        );
        let pair = buffered_pair(&runtime);
        bench_round_trip(
            &mut group,
            "tokio_rustls",
            &runtime,
            pair,
            &response,
            &mut scratch,
        );
        group.finish();
    }
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
