//! How much does decoding a health-check response cost? (The HTTP response head
//! decoder the HTTP probe runs on every check, on a complete and a truncated
//! response.)
//!
//! Run: `cargo bench --bench probe_decode`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::protocol::http::decode_response_head;

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 10:00:00 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{\"status\":\"ok\"}";

fn decode(c: &mut Criterion) {
    c.bench_function("http_head_complete", |b| {
        b.iter(|| black_box(decode_response_head(black_box(RESPONSE))))
    });
    let truncated = &RESPONSE[..RESPONSE.len() / 2];
    c.bench_function("http_head_incomplete", |b| {
        b.iter(|| black_box(decode_response_head(black_box(truncated))))
    });
}

criterion_group!(benches, decode);
criterion_main!(benches);
