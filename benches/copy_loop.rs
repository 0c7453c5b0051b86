//! The copy loop against tokio's `copy_bidirectional` (the reference), on real
//! loopback sockets driven by one single-threaded runtime, as a data-plane thread runs
//! them: client ⇄ [proxy client leg | proxy backend leg] ⇄ server.
//!
//! - `ping_pong_128B`: one 128-byte request and one 128-byte answer through the copy,
//!   the round trip of a small query (per-message syscalls and wake-ups).
//! - `bulk_16MiB`: 16 MiB one way (on Linux switchyard's loop splices these).
//!
//! Run: `cargo bench --bench copy_loop`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchyard::config::TcpOptions;
use switchyard::pipe::{self, Traffic};
use switchyard::stream::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const OPTIONS: TcpOptions = TcpOptions {
    keepalive: Duration::from_secs(30),
    user_timeout: Duration::from_secs(30),
};

#[derive(Clone, Copy, Debug)]
enum Copier {
    Switchyard,
    CopyBidirectional,
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (accepted, connected) = tokio::join!(listener.accept(), TcpStream::connect(listener.local_addr().unwrap()));
    let (connected, accepted) = (connected.unwrap(), accepted.unwrap().0);
    connected.set_nodelay(true).unwrap();
    accepted.set_nodelay(true).unwrap();
    (connected, accepted)
}

/// The two ends of a proxied connection; the copy runs as a task on the runtime.
async fn proxied(copier: Copier) -> (TcpStream, TcpStream) {
    let (client, proxy_client) = pair().await;
    let (proxy_upstream, server) = pair().await;
    tokio::spawn(async move {
        match copier {
            Copier::Switchyard => {
                let traffic = Traffic::default();
                let _ = pipe::copy(
                    Stream::Plain(proxy_client),
                    Stream::Plain(proxy_upstream),
                    &traffic,
                    &OPTIONS,
                    pipe::Follow::Bytes,
                )
                .await;
            }
            Copier::CopyBidirectional => {
                let (mut a, mut b) = (proxy_client, proxy_upstream);
                let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
            }
        }
    });
    (client, server)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn copy_loop(c: &mut Criterion) {
    let rt = runtime();
    let copiers = [Copier::Switchyard, Copier::CopyBidirectional];

    let mut group = c.benchmark_group("ping_pong_128B");
    for copier in copiers {
        let (mut client, mut server) = rt.block_on(proxied(copier));
        group.bench_function(BenchmarkId::from_parameter(format!("{copier:?}")), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let (mut request, mut answer) = ([7u8; 128], [0u8; 128]);
                    let started = Instant::now();
                    for _ in 0..iters {
                        client.write_all(&request).await.unwrap();
                        server.read_exact(&mut answer).await.unwrap();
                        server.write_all(&answer).await.unwrap();
                        client.read_exact(&mut request).await.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();

    const BULK: usize = 16 * 1024 * 1024;
    let mut group = c.benchmark_group("bulk_16MiB");
    group.throughput(Throughput::Bytes(BULK as u64)).sample_size(20);
    for copier in copiers {
        let (mut client, mut server) = rt.block_on(proxied(copier));
        let (data, mut sink) = (vec![1u8; BULK], vec![0u8; BULK]);
        group.bench_function(BenchmarkId::from_parameter(format!("{copier:?}")), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let (sent, received) = tokio::join!(client.write_all(&data), server.read_exact(&mut sink));
                        sent.unwrap();
                        received.unwrap();
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, copy_loop);
criterion_main!(benches);
