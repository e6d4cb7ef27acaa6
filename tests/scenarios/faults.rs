//! Faults: origins and clients that misbehave on real sockets. For each, the status the client
//! gets, that no connection or task outlives the fault, and that nothing truncated is cached.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What a scripted origin does after it has read a request head.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Closes the connection without a byte.
    CloseBeforeHeaders,
    /// Answers something that is not HTTP.
    InvalidHttp,
    /// Never answers.
    StallBeforeHeaders,
    /// Sends the head and 10 of 1000 promised bytes, then resets (RST).
    ResetMidBody(u16),
    /// Sends the head and 10 of 1000 promised bytes, then goes silent.
    StallMidBody(u16),
    /// Sends 5 of 100 promised bytes and closes.
    ShortBody(u16),
    /// Promises 5 bytes and sends a whole second response after them.
    LongBody(u16),
    /// `100 Continue` and `103 Early Hints`, then the final status.
    InformationalThen(u16),
}

/// A raw TCP origin playing one [`Fault`] on every connection.
struct Scripted {
    addr: SocketAddr,
    /// Requests read.
    hits: Arc<AtomicU64>,
    /// Connections whose far end (erratum) has not closed yet.
    open: Arc<AtomicI64>,
}

async fn read_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// Waits until the peer closes (reads to EOF or error).
async fn until_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn scripted(fault: Fault) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicI64::new(0));
    let (h, o) = (hits.clone(), open.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (hits, open) = (h.clone(), o.clone());
            open.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_head(&mut s).await {
                    hits.fetch_add(1, Ordering::SeqCst);
                    play(fault, &mut s, &hits).await;
                }
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Scripted { addr, hits, open }
}

fn head(status: u16, len: usize) -> String {
    format!("HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\r\n")
}

async fn play(fault: Fault, s: &mut TcpStream, hits: &AtomicU64) {
    match fault {
        Fault::CloseBeforeHeaders => {}
        Fault::InvalidHttp => {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
        }
        Fault::StallBeforeHeaders => until_closed(s).await,
        Fault::ResetMidBody(status) => {
            let _ = s.write_all(format!("{}{}", head(status, 1000), "0123456789").as_bytes()).await;
            // Long enough for erratum to have read the head (a reset discards unread data).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = s.set_zero_linger();
        }
        Fault::StallMidBody(status) => {
            let _ = s.write_all(format!("{}{}", head(status, 1000), "0123456789").as_bytes()).await;
            until_closed(s).await;
        }
        Fault::ShortBody(status) => {
            let _ = s.write_all(format!("{}short", head(status, 100)).as_bytes()).await;
        }
        Fault::LongBody(status) => {
            let smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned";
            let _ = s.write_all(format!("{}hello{smuggled}", head(status, 5)).as_bytes()).await;
            // A later request on this connection gets an honest answer, so a test can tell
            // the smuggled response from a real one.
            while read_head(s).await {
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(format!("{}fine", head(200, 4)).as_bytes()).await;
            }
        }
        Fault::InformationalThen(status) => {
            let reply = format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n{}fail",
                head(status, 4)
            );
            let _ = s.write_all(reply.as_bytes()).await;
            until_closed(s).await;
        }
    }
}

/// erratum in front of a well-behaved origin at `c.example/`, for the client-side faults.
async fn client_side(
    adjust: impl FnOnce(&mut erratum::runtime::RunConfig),
) -> (Harness, erratum::origin::Origin) {
    let o = origin().await;
    let manifests =
        [backend("ns", "o", &[o.addr]), ingress("ns", "i", &[("c.example", "/", "Prefix", "o")])].concat();
    (Harness::start_with(&manifests, adjust).await, o)
}

/// A client without a pool: every request its own connection, closed when done.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(20)).build().unwrap()
}

/// erratum in front of a scripted origin; `f.example/` goes to it, with a policy that caches
/// errors by the defaults (404 for 10 s) and replaces 503 with a page.
async fn in_front_of(fault: Fault) -> (Harness, Scripted) {
    let o = scripted(fault).await;
    let manifests = [
        backend("ns", "bad", &[o.addr]),
        ingress("ns", "i", &[("f.example", "/", "Prefix", "bad")]),
        policy("ns", "p", "errorResponses:\n- codes: ['503']\n  page: {inline: 'custom 503'}\n"),
    ]
    .concat();
    let h = Harness::start_with(&manifests, |c| {
        c.proxy.response_timeout = Duration::from_millis(500);
    })
    .await;
    (h, o)
}

/// The open-connection gauge of the HTTP listener.
async fn open_connections(h: &Harness) -> i64 {
    let metrics = h.metrics().await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("erratum_connections_open{listener=\"http\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `probe` holds (5 s at most): the system settles after a fault.
async fn settles<F: std::future::Future<Output = bool>>(what: &str, mut probe: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !probe().await {
        assert!(Instant::now() < deadline, "did not settle: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The live tasks once the fault has played out once: lazily started parts (the upstream
/// pool's reaper, the page fetcher) are running by then, so later growth is a leak.
async fn baseline(h: &Harness, o: &Scripted, pooled: bool) -> usize {
    settles("client connections closed", || async { open_connections(h).await == 0 }).await;
    if !pooled {
        settles("upstream connections closed", || async { o.open.load(Ordering::SeqCst) == 0 }).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    tasks()
}

/// Nothing outlives the faults since [`baseline`]: no client connection, no upstream
/// connection (unless `pooled`), no task.
async fn no_leaks(h: &Harness, o: &Scripted, baseline: usize, pooled: bool) {
    settles("client connections closed", || async { open_connections(h).await == 0 }).await;
    if !pooled {
        settles("upstream connections closed", || async { o.open.load(Ordering::SeqCst) == 0 }).await;
    }
    settles(&format!("tasks back to {baseline}"), || async { tasks() <= baseline }).await;
}

fn tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// GET `f.example/x` on a new connection: the status (0 when the connection failed before a
/// response head), the body or why it failed, and X-Cache.
async fn fetch(h: &Harness) -> (u16, Result<String, String>, String) {
    let r = match fresh_client().get(h.url("/x")).header("host", "f.example").send().await {
        Ok(r) => r,
        Err(e) => return (0, Err(e.to_string()), String::new()),
    };
    let status = r.status().as_u16();
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, r.text().await.map_err(|e| e.to_string()), cache)
}

/// Rounds of each fault after the warm-up one: a leak grows with them.
const ROUNDS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_fails_before_its_head_gets_502_or_504() {
    for (fault, want) in
        [(Fault::CloseBeforeHeaders, 502), (Fault::InvalidHttp, 502), (Fault::StallBeforeHeaders, 504)]
    {
        let (h, o) = in_front_of(fault).await;
        let _warm_up = fetch(&h).await;
        let before = baseline(&h, &o, false).await;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let (status, body, _) = fetch(&h).await;
            assert_eq!(status, want, "{fault:?}");
            let body = body.unwrap();
            assert!(body.contains(&want.to_string()), "{fault:?}: a built-in page: {body}");
            assert!(started.elapsed() < Duration::from_secs(3), "{fault:?} answered within the timeout");
        }
        no_leaks(&h, &o, before, false).await;
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_reaches_the_client_as_an_error_and_is_never_cached() {
    for fault in [Fault::ResetMidBody(200), Fault::ShortBody(200), Fault::StallMidBody(200)] {
        let (h, o) = in_front_of(fault).await;
        let _warm_up = fetch(&h).await;
        let before = baseline(&h, &o, false).await;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let (status, body, _) = fetch(&h).await;
            // The head is usually on its way when the body breaks (200, then a failed body);
            // when the break comes before hyper flushed the head, the connection just closes.
            // Either way the client sees a failure, never a short success.
            assert!(status == 200 || status == 0, "{fault:?}: {status}");
            assert!(body.is_err(), "{fault:?}: the client sees the body fail, not a short success");
            assert!(started.elapsed() < Duration::from_secs(3), "{fault:?}: no hang past the idle timeout");
        }
        no_leaks(&h, &o, before, false).await;
        h.shutdown().await;
    }
    // The same faults on an error the cache would keep (404, cached 10 s by the policy):
    // erratum reads it whole before storing, sees it incomplete, answers 502 and stores nothing.
    for fault in [Fault::ResetMidBody(404), Fault::ShortBody(404), Fault::StallMidBody(404)] {
        let (h, o) = in_front_of(fault).await;
        let _warm_up = fetch(&h).await;
        let before = baseline(&h, &o, false).await;
        for _ in 0..ROUNDS {
            let (status, body, cache) = fetch(&h).await;
            assert_eq!(status, 502, "{fault:?}");
            assert!(body.is_ok(), "{fault:?}: erratum's own answer is whole");
            assert_ne!(cache, "ErrorHit from erratum", "{fault:?}");
        }
        assert_eq!(
            o.hits.load(Ordering::SeqCst),
            1 + ROUNDS as u64,
            "{fault:?}: never served from the cache"
        );
        no_leaks(&h, &o, before, false).await;
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_error_is_complete_even_when_the_origin_body_breaks() {
    for fault in [Fault::ResetMidBody(503), Fault::StallMidBody(503), Fault::ShortBody(503)] {
        let (h, o) = in_front_of(fault).await;
        let _warm_up = fetch(&h).await;
        let before = baseline(&h, &o, false).await;
        for _ in 0..ROUNDS {
            let (status, body, cache) = fetch(&h).await;
            assert_eq!(status, 503, "{fault:?}");
            assert_eq!(body.unwrap(), "custom 503", "{fault:?}");
            assert_ne!(cache, "ErrorHit from erratum", "{fault:?}: the broken response was not stored");
        }
        assert_eq!(o.hits.load(Ordering::SeqCst), 1 + ROUNDS as u64, "{fault:?}");
        no_leaks(&h, &o, before, false).await;
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_content_length_never_become_the_next_response() {
    let (h, o) = in_front_of(Fault::LongBody(200)).await;
    // One client connection, several requests: the pooled upstream connection carries the
    // smuggled bytes after the first response.
    let client = reqwest::Client::new();
    for i in 0..5 {
        let r = client.get(h.url(&format!("/r{i}"))).header("host", "f.example").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(body == "hello" || body == "fine", "request {i}: got {body:?}");
        assert_ne!(body, "poisoned");
    }
    drop(client);
    assert!(o.hits.load(Ordering::SeqCst) >= 5, "every request reached the origin");
    settles("client connections closed", || async { open_connections(&h).await == 0 }).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_responses_before_an_error_are_skipped() {
    let (h, o) = in_front_of(Fault::InformationalThen(503)).await;
    let _warm_up = fetch(&h).await;
    let before = baseline(&h, &o, true).await;
    for _ in 0..ROUNDS {
        let (status, body, _) = fetch(&h).await;
        assert_eq!(status, 503, "the final status decides");
        assert_eq!(body.unwrap(), "custom 503", "and the policy replaces it");
    }
    no_leaks(&h, &o, before, true).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_mid_request_or_mid_response_leave_nothing_behind() {
    let (h, _origin) = client_side(|_| {}).await;
    assert_eq!(
        fresh_client().get(h.url("/ok")).header("host", "c.example").send().await.unwrap().status(),
        200
    );
    settles("client connections closed", || async { open_connections(&h).await == 0 }).await;
    let before = tasks();
    // Mid-request: a head promising 1000 bytes of body, 10 sent, then gone.
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: c.example\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    // Mid-response: 64 MiB requested, a few KiB read, then gone.
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"GET /bytes/67108864 HTTP/1.1\r\nHost: c.example\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    s.read_exact(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"));
    drop(s);
    settles("client connections closed", || async { open_connections(&h).await == 0 }).await;
    settles("tasks back to the baseline", || async { tasks() <= before }).await;
    // And the proxy still serves.
    assert_eq!(h.status("c.example", "/ok").await, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_body_that_stalls_is_cut_after_the_body_timeout() {
    let (h, _origin) = client_side(|c| c.proxy.client_body_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: c.example\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection is not held open by a stalled upload");
    let text = String::from_utf8_lossy(&out);
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout");
    assert!(!text.contains("received"), "an incomplete body is never answered as complete: {text}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_closed_by_the_header_timeout() {
    let (h, o) = client_side(|c| c.proxy.header_read_timeout = Duration::from_millis(500)).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        slow.push(TcpStream::connect(h.running().http_addr).await.unwrap());
    }
    let started = Instant::now();
    // A byte every 100 ms: never a whole head.
    let head = b"GET / HTTP/1.1\r\nHost: c.example\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let total = slow.len();
    'bytes: for b in head.iter() {
        let mut closed = 0;
        for s in &mut slow {
            if s.write_all(&[*b]).await.is_err() {
                closed += 1;
            }
        }
        if closed == total {
            break 'bytes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    for s in &mut slow {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "closed by erratum");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "within the header timeout, not the trickle");
    settles("client connections closed", || async { open_connections(&h).await == 0 }).await;
    assert_eq!(o.hits(), 0, "nothing half-read went upstream");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_cannot_lock_out_real_clients() {
    let (h, _origin) = client_side(|c| c.proxy.max_connections = 200).await;
    // 2,000 connections that send nothing (each one also a socket in this process: two
    // descriptors per connection).
    let mut idle = Vec::new();
    for _ in 0..2000 {
        match TcpStream::connect(h.running().http_addr).await {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect failed after {}: {e}", idle.len()),
        }
    }
    let open = open_connections(&h).await;
    assert!(open <= 200, "the limit holds: {open} open");
    // Real clients are served while the idle flood is still connected.
    let client = fresh_client();
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            client.get(h.url("/ok")).header("host", "c.example").send(),
        )
        .await
        .expect("served within 5 s")
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    let metrics = h.metrics().await;
    let shed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("erratum_connections_shed_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(shed > 0, "idle connections were shed to make room");
    assert!(open_connections(&h).await <= 200);
    drop(idle);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_tunnels_count_against_the_connection_limit() {
    let (h, _origin) = client_side(|c| c.proxy.max_connections = 2).await;
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: c.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 101", "{}", String::from_utf8_lossy(&head));
        assert!(read_head(&mut s).await);
        s.write_all(b"ping").await.unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ping", "the tunnel is up");
        tunnels.push(s);
    }
    // Both slots are held by busy tunnels: nothing idle to shed, so a third client waits.
    let client = fresh_client();
    let third = client.get(h.url("/ok")).header("host", "c.example").send();
    let mut third = Box::pin(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut third).await.is_err(),
        "a third connection was served while two tunnels held the limit of 2"
    );
    drop(tunnels.pop());
    let r = tokio::time::timeout(Duration::from_secs(5), third).await.expect("served once a tunnel closed");
    assert_eq!(r.unwrap().status(), 200);
    drop(tunnels);
    h.shutdown().await;
}
