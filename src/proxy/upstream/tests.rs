//! Unit tests of `upstream`.

use super::*;
use http_body_util::{BodyExt, Empty};
use std::sync::atomic::Ordering;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An origin that answers every request on a connection with `200 ok` and reports each
/// connection's end on `closed`. It closes a connection itself after `close_after`.
async fn origin(close_after: Option<Duration>) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (closed, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let read = match close_after {
                        Some(after) => tokio::time::timeout(after, s.read(&mut buf)).await.unwrap_or(Ok(0)),
                        None => s.read(&mut buf).await,
                    };
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap()
                        }
                    }
                }
                let _ = closed.send(());
            });
        }
    });
    (addr, rx)
}

fn get() -> Request<UpstreamBody> {
    Request::get("/").header("host", "o").body(Empty::new().map_err(|n| match n {}).boxed()).unwrap()
}

async fn ok(pool: &Upstreams, addr: &str) {
    let resp = pool.send(addr, &mut Some(get()), &[], pool.connect_timeout(), None).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
}

#[tokio::test]
async fn finished_responses_return_their_connection() {
    let (addr, _closed) = origin(None).await;
    let pool = Upstreams::new(Duration::from_secs(1));
    for _ in 0..5 {
        ok(&pool, &addr).await;
        assert_eq!(pool.idle(), 1);
    }
    // A body dropped before its end takes its connection with it.
    let resp = pool.send(&addr, &mut Some(get()), &[], pool.connect_timeout(), None).await.unwrap();
    assert_eq!(pool.idle(), 0);
    drop(resp);
    assert_eq!(pool.idle(), 0);
}

#[tokio::test]
async fn requests_with_a_body_use_hyper_and_return_their_connection_too() {
    let (addr, _closed) = origin(None).await;
    let pool = Upstreams::new(Duration::from_secs(1));
    for _ in 0..3 {
        let body = http_body_util::Full::new(Bytes::from_static(b"x")).map_err(|n| match n {}).boxed();
        let req = Request::post("/").header("host", "o").body(body).unwrap();
        let resp = pool.send(&addr, &mut Some(req), &[], pool.connect_timeout(), None).await.unwrap();
        assert!(matches!(resp.body(), ResponseBody::Hyper(_)));
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
        // Back when the body is dropped: the driver task may need a turn to see the end.
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.inner.hyper.idle(), 1);
    assert_eq!(pool.inner.own.idle(), 0);
}

/// An origin that answers the first request on each connection and closes the connection
/// on the second one without answering: what a request meets when it is sent just as the
/// origin times the pooled connection out.
async fn origin_closing_on_reuse() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
                }
                let _ = s.read(&mut buf).await;
            });
        }
    });
    (addr, connections)
}

#[tokio::test]
async fn idempotent_requests_the_pooled_connection_lost_are_sent_again() {
    let (addr, connections) = origin_closing_on_reuse().await;
    let pool = Upstreams::new(Duration::from_secs(1));
    ok(&pool, &addr).await;
    // Reuses the pooled connection, which closes without an answer: sent again on a new one.
    ok(&pool, &addr).await;
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // A POST is not idempotent: the origin may have acted on it, so it is not sent again.
    let post = Request::post("/").header("host", "o").body(Empty::new().map_err(|n| match n {}).boxed());
    let Err(err) = pool.send(&addr, &mut Some(post.unwrap()), &[], pool.connect_timeout(), None).await else {
        panic!("answered")
    };
    assert!(matches!(err, UpstreamError::H1(client::Error::NoResponse(_))), "{err:?}");
    assert!(matches!(classify(&err, "o", None), ProxyError::UpstreamReset { .. }));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_the_origin_closed_are_not_used() {
    let (addr, mut closed) = origin(Some(Duration::from_millis(50))).await;
    let pool = Upstreams::new(Duration::from_secs(1));
    ok(&pool, &addr).await;
    closed.recv().await.unwrap();
    // Let the connection's driver see the end of the stream.
    tokio::time::sleep(Duration::from_millis(20)).await;
    ok(&pool, &addr).await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (addr, mut closed) = origin(None).await;
    let pool = Upstreams::new(Duration::from_secs(1));
    ok(&pool, &addr).await;
    assert_eq!(pool.idle(), 1);
    // The reaper's ticks, counted here by hand (paused-time jumps would merge them). Its
    // own first tick came before or after the connection's return: take its age as found.
    tokio::task::yield_now().await;
    let own = &pool.inner.own;
    let age = own.tick.load(Ordering::Relaxed) - own.lock().values().flatten().map(|i| i.since).sum::<u32>();
    for _ in age..IDLE_TICKS {
        own.reap();
    }
    assert_eq!(pool.idle(), 1, "closed too early");
    own.reap();
    assert_eq!(pool.idle(), 0);
    tokio::time::timeout(Duration::from_secs(5), closed.recv()).await.unwrap().unwrap();
}

#[tokio::test]
async fn connect_failures_are_classified() {
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let pool = Upstreams::new(Duration::from_secs(1));
    let Err(err) =
        pool.send(&format!("127.0.0.1:{port}"), &mut Some(get()), &[], pool.connect_timeout(), None).await
    else {
        panic!("connected")
    };
    match classify(&err, "o", None) {
        ProxyError::UpstreamConnect { reason, .. } => assert_eq!(reason, "connection refused"),
        other => panic!("{other}"),
    }
}

/// An HTTP/2 server on a free port whose connection is polled (pings answered) or, when
/// `answer_pings` is false, held without being polled after its handshake.
async fn h2_server(answer_pings: bool) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(sock).await.unwrap();
        if answer_pings {
            while conn.accept().await.is_some() {}
        } else {
            // Held open, never read again: a peer that hangs without closing.
            std::future::pending::<()>().await;
        }
    });
    addr
}

/// A peer that stops answering pings has its connection closed after one ping interval and
/// the pong timeout (so the next request makes a new one); a peer that answers keeps it.
/// Short intervals in real time: paused time jumps past a pong still on its way.
#[tokio::test]
async fn http2_connections_whose_peer_stops_answering_pings_are_closed() {
    let ms = Duration::from_millis;
    let keep_alive = http2::KeepAlive { every: ms(200), timeout: ms(300) };
    let connect = |addr| async move {
        http2::Conn::handshake(tokio::net::TcpStream::connect(addr).await.unwrap(), keep_alive).await.unwrap()
    };
    let silent = connect(h2_server(false).await).await;
    let live = connect(h2_server(true).await).await;
    tokio::time::sleep(ms(100)).await;
    assert!(!silent.is_closed() && !live.is_closed(), "no ping sent yet");
    tokio::time::sleep(ms(900)).await;
    assert!(silent.is_closed(), "200 ms to the ping, 300 ms without a pong");
    assert!(!live.is_closed(), "pings answered, five of them");
}
