//! The proxy's own CPU work per query and per login, without I/O: finding the end of a
//! result set in the bytes read from a backend (what the relay does for every batch), framing
//! a client command, decoding a login and checking a password proof (native, and
//! caching_sha2_password's full check and fast path).
//!
//! `cargo bench --bench protocol`

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::protocol::auth::caching_sha2::{fast_proof, verify_fast, FastKey, Sha2Verifier};
use sluice::protocol::auth::{native_proof, new_scramble, verify_native, PasswordHash, ProvenKey};
use sluice::protocol::codec::put_lenenc_bytes;
use sluice::protocol::constants::{capability, command};
use sluice::protocol::frame::{check_packet, encode_packet};
use sluice::protocol::handshake::HandshakeResponse;
use sluice::protocol::response::ResponseTracker;

/// The wire bytes of a text result set: `rows` rows of three columns, about `row_len`
/// bytes each.
fn result_set(rows: usize, row_len: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut seq = 1;
    seq = encode_packet(&mut out, seq, &[3]);
    for name in ["id", "k", "c"] {
        let mut def = BytesMut::new();
        for field in ["def", "sbtest", "sbtest1", "sbtest1", name, name] {
            put_lenenc_bytes(&mut def, field.as_bytes());
        }
        def.extend_from_slice(&[0x0C, 0x2D, 0, 0xFF, 0, 0, 0, 0xFE, 0, 0, 0, 0, 0]);
        seq = encode_packet(&mut out, seq, &def);
    }
    let eof = [0xFE, 0, 0, 0x02, 0];
    seq = encode_packet(&mut out, seq, &eof);
    let value = vec![b'7'; row_len.saturating_sub(20)];
    for i in 0..rows {
        let mut row = BytesMut::new();
        put_lenenc_bytes(&mut row, i.to_string().as_bytes());
        put_lenenc_bytes(&mut row, b"4993");
        put_lenenc_bytes(&mut row, &value);
        seq = encode_packet(&mut out, seq, &row);
    }
    encode_packet(&mut out, seq, &eof);
    out.to_vec()
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan_result_set");
    for (rows, row_len) in [(1, 120), (100, 120), (10_000, 120), (100, 16 * 1024)] {
        let wire = result_set(rows, row_len);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{rows}x{row_len}B")),
            &wire,
            |b, wire| {
                b.iter(|| {
                    let mut tracker = ResponseTracker::for_command(command::QUERY).unwrap();
                    let scan = tracker.scan(black_box(wire)).unwrap();
                    assert_eq!(scan.complete, wire.len());
                    scan
                })
            },
        );
    }
    group.finish();
}

fn framing(c: &mut Criterion) {
    let mut query = BytesMut::new();
    encode_packet(&mut query, 0, b"\x03SELECT c FROM sbtest1 WHERE id=4993");
    c.bench_function("check_packet/point_select", |b| {
        b.iter(|| check_packet(black_box(&query), 64 << 20).unwrap().unwrap())
    });
}

fn login(c: &mut Criterion) {
    let scramble = new_scramble();
    let response = HandshakeResponse {
        capabilities: capability::PROTOCOL_41
            | capability::SECURE_CONNECTION
            | capability::PLUGIN_AUTH
            | capability::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | capability::CONNECT_WITH_DB,
        max_packet: 1 << 24,
        charset: 45,
        username: "app".into(),
        auth_response: native_proof(&ProvenKey::of_password(b"app"), &scramble).to_vec(),
        database: Some("sbtest".into()),
        auth_plugin: Some("mysql_native_password".into()),
        connect_attrs: None,
        zstd_level: None,
    };
    let mut wire = BytesMut::new();
    response.encode(&mut wire);
    c.bench_function("login/decode_handshake_response", |b| {
        b.iter(|| HandshakeResponse::decode(black_box(&wire)).unwrap())
    });
    let stored = PasswordHash::of_password(b"app");
    c.bench_function("login/verify_native_and_derive_backend_proof", |b| {
        b.iter(|| {
            let key =
                verify_native(&stored, &scramble, black_box(&response.auth_response)).unwrap();
            native_proof(&key, black_box(&scramble))
        })
    });
    // caching_sha2_password: a full authentication's check (once per user and proxy
    // start), then the fast path every later login takes
    let verifier = Sha2Verifier::of_password(b"app");
    c.bench_function("login/caching_sha2_full_check", |b| {
        b.iter(|| assert!(verifier.check(black_box(b"app"))))
    });
    let fast = FastKey::of_password(b"app");
    let proof = fast_proof(b"app", &scramble);
    c.bench_function("login/caching_sha2_fast_path", |b| {
        b.iter(|| assert!(verify_fast(&fast, &scramble, black_box(&proof))))
    });
}

criterion_group!(benches, scan, framing, login);
criterion_main!(benches);
