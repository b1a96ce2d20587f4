//! The read path of a client's next request on loopback TCP, through
//! `Connection::read_request`: once with the request sent before the read starts, once
//! with the read waiting for it — the idle path, on which the read buffer is released
//! while the connection waits and taken again when the socket turns readable. Each
//! iteration is one request of sysbench's point-select size; the figure includes the
//! syscalls and the wake-up, which are most of it.
//!
//! `cargo bench --bench connection`

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use sluice::connection::{Connection, Request, Stream};
use sluice::protocol::frame::encode_packet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const MAX_PACKET: usize = 1 << 20;

fn point_select() -> Vec<u8> {
    let mut wire = BytesMut::new();
    encode_packet(&mut wire, 0, b"\x03SELECT c FROM sbtest1 WHERE id=4242");
    wire.to_vec()
}

/// A client socket and the proxy's side of it.
fn pair(runtime: &Runtime) -> (TcpStream, Connection) {
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address"))
            .await
            .expect("connect");
        client.set_nodelay(true).expect("nodelay");
        let (server, _) = listener.accept().await.expect("accept");
        (client, Connection::new(Stream::Tcp(server)))
    })
}

fn expect_whole(read: Option<Request>) {
    match read {
        Some(Request::Whole(packet)) => {
            black_box(packet);
        }
        other => panic!("expected a whole request, got {other:?}"),
    }
}

fn reads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wire = point_select();
    let (mut client, mut conn) = pair(&runtime);

    c.bench_function("connection/request_sent_before_the_read", |b| {
        b.iter(|| {
            runtime.block_on(async {
                client.write_all(&wire).await.expect("write");
                expect_whole(conn.read_request(MAX_PACKET).await.expect("read"));
            })
        })
    });

    c.bench_function("connection/request_waited_for", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let send = async {
                    tokio::task::yield_now().await;
                    client.write_all(&wire).await.expect("write");
                };
                let (read, ()) = tokio::join!(conn.read_request(MAX_PACKET), send);
                expect_whole(read.expect("read"));
            })
        })
    });
}

criterion_group!(benches, reads);
criterion_main!(benches);
