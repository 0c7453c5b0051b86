use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const OPTIONS: TcpOptions = TcpOptions {
    keepalive: std::time::Duration::from_secs(17),
    user_timeout: std::time::Duration::from_secs(23),
};

/// The copy between two plain legs, as a session runs it.
fn plain_copy(client: TcpStream, upstream: TcpStream, traffic: &Traffic) -> Transfer<'_> {
    copy(
        Stream::Plain(client),
        Stream::Plain(upstream),
        traffic,
        &OPTIONS,
        Follow::Bytes,
    )
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connect = TcpStream::connect(listener.local_addr().unwrap());
    let (accepted, connected) = tokio::join!(listener.accept(), connect);
    (connected.unwrap(), accepted.unwrap().0)
}

/// client_end <-> [proxy_client | proxy_upstream] <-> server_end, through the
/// plain path or the one TLS legs take (here over plain streams).
async fn copies_both_ways_keeping_half_close(stream_path: bool) {
    let (mut client_end, proxy_client) = pair().await;
    let (proxy_upstream, mut server_end) = pair().await;
    let traffic = Traffic::default();
    let copying = copy_on(stream_path, proxy_client, proxy_upstream, &traffic);
    assert_eq!(matches!(copying, Transfer::Streams(_)), stream_path);
    let big = vec![7u8; 300 * 1024];
    let talking = async {
        client_end.write_all(&big).await.unwrap();
        client_end.shutdown().await.unwrap();
        let mut got = Vec::new();
        server_end.read_to_end(&mut got).await.unwrap();
        assert!(got == big, "every byte, then the FIN");
        // The other direction still works after the client's half-close.
        server_end.write_all(b"world").await.unwrap();
        server_end.shutdown().await.unwrap();
        let mut back = Vec::new();
        client_end.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world");
    };
    let (copied, ()) = tokio::join!(copying, talking);
    copied.unwrap();
    assert_eq!(traffic.upstream.load(Ordering::Relaxed), big.len() as u64);
    assert_eq!(traffic.downstream.load(Ordering::Relaxed), 5);
    assert_eq!(
        traffic.first_end.load(Ordering::Relaxed),
        CLIENT_FIRST,
        "the client ended first"
    );
}

/// The copy between two plain legs, through the plain path or the one TLS legs take.
fn copy_on(stream_path: bool, client: TcpStream, upstream: TcpStream, traffic: &Traffic) -> Transfer<'_> {
    let (client, upstream) = (Stream::Plain(client), Stream::Plain(upstream));
    if stream_path {
        Transfer::Streams(Duplex::new(client, upstream, traffic, &OPTIONS, None, None))
    } else {
        copy(client, upstream, traffic, &OPTIONS, Follow::Bytes)
    }
}

/// The backend ends first, then the client: the copy says so, on either path.
async fn backend_ends_first(stream_path: bool) {
    let (mut client_end, proxy_client) = pair().await;
    let (proxy_upstream, mut server_end) = pair().await;
    let traffic = Traffic::default();
    let copying = copy_on(stream_path, proxy_client, proxy_upstream, &traffic);
    let talking = async {
        server_end.write_all(b"bye").await.unwrap();
        server_end.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_end.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        client_end.shutdown().await.unwrap();
    };
    let (copied, ()) = tokio::join!(copying, talking);
    copied.unwrap();
    assert_eq!(traffic.first_end.load(Ordering::Relaxed), BACKEND_FIRST);
}

#[tokio::test]
async fn a_backend_that_ends_first_is_recorded_on_both_paths() {
    backend_ends_first(false).await;
    backend_ends_first(true).await;
}

#[tokio::test]
async fn the_plain_path_copies_both_ways_and_keeps_half_close() {
    copies_both_ways_keeping_half_close(false).await;
}

#[tokio::test]
async fn the_stream_path_copies_both_ways_and_keeps_half_close() {
    copies_both_ways_keeping_half_close(true).await;
}

/// A bulk transfer (more than fits in socket buffers) followed by small exchanges
/// on the same session: every byte arrives in order, in bulk through splice(2) on
/// Linux, and the small messages after it still get through both ways.
#[tokio::test]
async fn bulk_then_small_messages_arrive_intact() {
    let (mut client_end, proxy_client) = pair().await;
    let (proxy_upstream, mut server_end) = pair().await;
    let traffic = Traffic::default();
    let copying = plain_copy(proxy_client, proxy_upstream, &traffic);
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let talking = async {
        let (sent, got) = tokio::join!(client_end.write_all(&big), async {
            let mut got = vec![0u8; big.len()];
            server_end.read_exact(&mut got).await.map(|_| got)
        });
        sent.unwrap();
        assert!(got.unwrap() == big, "8 MiB arrive in order");
        for round in 0..50u8 {
            client_end.write_all(&[round; 100]).await.unwrap();
            let mut request = [0u8; 100];
            server_end.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [round; 100]);
            server_end.write_all(&[round; 7]).await.unwrap();
            let mut response = [0u8; 7];
            client_end.read_exact(&mut response).await.unwrap();
            assert_eq!(response, [round; 7]);
        }
        client_end.shutdown().await.unwrap();
        server_end.shutdown().await.unwrap();
        assert_eq!(server_end.read(&mut [0u8; 1]).await.unwrap(), 0, "the FIN follows");
        assert_eq!(client_end.read(&mut [0u8; 1]).await.unwrap(), 0);
    };
    let (copied, ()) = tokio::join!(copying, talking);
    copied.unwrap();
    assert_eq!(traffic.upstream.load(Ordering::Relaxed), big.len() as u64 + 5000);
    assert_eq!(traffic.downstream.load(Ordering::Relaxed), 350);
    let spliced = traffic.spliced.load(Ordering::Relaxed);
    if cfg!(target_os = "linux") {
        assert!(spliced > 0, "the bulk went through splice(2)");
    }
    assert!(spliced < big.len() as u64 + 5000, "not the first buffer's worth");
}

/// A TCP urgent byte in the middle of a bulk transfer: a splice stops at the mark
/// for good, so the copy must step over it with a read instead of stalling or
/// ending the stream there. (Without `SO_OOBINLINE` the urgent byte itself is not
/// part of the stream.)
#[tokio::test]
async fn an_urgent_byte_in_a_bulk_transfer_neither_stalls_nor_truncates() {
    let (mut client_end, proxy_client) = pair().await;
    let (proxy_upstream, mut server_end) = pair().await;
    let traffic = Traffic::default();
    let copying = plain_copy(proxy_client, proxy_upstream, &traffic);
    let half: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let talking = async {
        let sending = async {
            client_end.write_all(&half).await.unwrap();
            SockRef::from(&client_end).send_out_of_band(b"!").unwrap();
            client_end.write_all(&half).await.unwrap();
            client_end.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let (_, read) = tokio::join!(sending, server_end.read_to_end(&mut got));
        read.unwrap();
        assert_eq!(got.len(), 2 * half.len(), "every byte but the urgent one");
        assert!(got[..half.len()] == half[..] && got[half.len()..] == half[..]);
        drop(server_end);
    };
    let (_, ()) = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        tokio::join!(copying, talking)
    })
    .await
    .expect("the copy went past the urgent mark");
    if cfg!(target_os = "linux") {
        assert!(traffic.spliced.load(Ordering::Relaxed) > 0, "the bulk was spliced");
    }
}

/// Polls `copying` once.
async fn poll_once(copying: &mut Transfer<'_>) -> Poll<io::Result<()>> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *copying).poll(cx))).await
}

/// A request the client sent before its session started reaches the backend in the
/// copy's first poll, with no readiness event: tokio knows nothing yet of sockets
/// it registered a moment ago, so only the eager first read and write get it there.
#[tokio::test]
async fn a_waiting_request_goes_through_on_the_first_poll() {
    let std_pair = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (connected, listener.accept().unwrap().0)
    };
    let (mut client_end, proxy_client) = std_pair();
    let (proxy_upstream, mut server_end) = std_pair();
    std::io::Write::write_all(&mut client_end, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    // At the proxy's socket before its session starts (loopback usually delivers
    // inside the write; a busy kernel may defer it a little).
    proxy_client
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    proxy_client.peek(&mut [0u8; 1]).expect("the request arrives");
    let fresh = |socket: std::net::TcpStream| {
        socket.set_nonblocking(true).unwrap();
        TcpStream::from_std(socket).unwrap()
    };
    let traffic = Traffic::default();
    let mut copying = plain_copy(fresh(proxy_client), fresh(proxy_upstream), &traffic);
    assert!(poll_once(&mut copying).await.is_pending());
    server_end.set_nonblocking(true).unwrap();
    let mut got = [0u8; 64];
    let n = std::io::Read::read(&mut server_end, &mut got).expect("the request is at the backend already");
    assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(traffic.upstream.load(Ordering::Relaxed), n as u64);
}

#[tokio::test]
async fn the_backend_socket_gets_keepalive_once_due() {
    let (_client_end, proxy_client) = pair().await;
    let (proxy_upstream, _server_end) = pair().await;
    // The same socket, through a second descriptor.
    let probe = SockRef::from(&proxy_upstream).try_clone().unwrap();
    let traffic = Traffic::default();
    let mut copying = plain_copy(proxy_client, proxy_upstream, &traffic);
    assert!(poll_once(&mut copying).await.is_pending());
    assert!(!probe.keepalive().unwrap(), "not before it is due");
    traffic.liveness_due.store(true, Ordering::Relaxed);
    assert!(poll_once(&mut copying).await.is_pending());
    assert!(probe.keepalive().unwrap());
    assert_eq!(probe.tcp_keepalive_time().unwrap(), OPTIONS.keepalive);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    assert_eq!(probe.tcp_user_timeout().unwrap(), Some(OPTIONS.user_timeout));
}

/// Two directions are what an idle session holds beside its sockets.
#[test]
fn a_direction_stays_small() {
    assert!(
        std::mem::size_of::<Direction>() <= 40,
        "{}",
        std::mem::size_of::<Direction>()
    );
}

#[test]
fn the_pool_is_bounded() {
    for _ in 0..POOLED + 10 {
        give_back(vec![0u8; BUFFER].into_boxed_slice());
    }
    assert_eq!(POOL.with(|p| p.borrow().len()), POOLED);
    assert_eq!(take().len(), BUFFER);
}

#[tokio::test]
async fn a_not_primary_reply_ends_a_mongo_session_instead_of_reaching_the_client() {
    use crate::protocol::mongo::encode_op_msg;
    let (mut client_end, proxy_client) = pair().await;
    let (proxy_upstream, mut server_end) = pair().await;
    let traffic = Traffic::default();
    let copying = copy(
        Stream::Plain(proxy_client),
        Stream::Plain(proxy_upstream),
        &traffic,
        &OPTIONS,
        Follow::Mongo(Box::default()),
    );
    let fine = encode_op_msg(1, &bson::doc! { "ok": 1.0, "n": 1 });
    let refused = encode_op_msg(
        2,
        &bson::doc! { "ok": 0.0, "code": 10107, "codeName": "NotWritablePrimary" },
    );
    let talking = async {
        server_end.write_all(&fine).await.unwrap();
        let mut got = vec![0u8; fine.len()];
        client_end.read_exact(&mut got).await.unwrap();
        assert_eq!(got, fine, "an ordinary reply passes");
        server_end.write_all(&refused).await.unwrap();
        let mut rest = Vec::new();
        client_end.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the client sees the end, not the reply");
    };
    let (copied, ()) = tokio::join!(copying, talking);
    copied.unwrap();
    assert!(traffic.not_primary.load(Ordering::Relaxed));
}
