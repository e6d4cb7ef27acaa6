//! erratum's own HTTP/1.1 server side, seen from raw client sockets: pipelining, HTTP/1.0,
//! HEAD and bodiless statuses, response framing, the handover to hyper at the first request
//! with a body, and a client that leaves while its request is upstream.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One response read off `stream`: status, header fields (lower-case names), body.
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response (framed by Content-Length, chunked, or the end of the connection) from
/// `stream`, keeping bytes past it in `buf`. `head_request`: the response has no body.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>, head_request: bool) -> Answer {
    let (status, fields, len) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = resp.parse(buf).unwrap() {
            let fields = resp
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect::<Vec<_>>();
            break (resp.code.unwrap(), fields, len);
        }
        assert!(more(stream, buf).await > 0, "connection closed before a whole head");
    };
    buf.drain(..len);
    let mut answer = Answer { status, fields, body: Vec::new() };
    if head_request || status == 204 || status == 304 {
        return answer;
    }
    if let Some(length) = answer.field("content-length") {
        let length: usize = length.parse().unwrap();
        while buf.len() < length {
            assert!(more(stream, buf).await > 0, "body cut short");
        }
        answer.body = buf.drain(..length).collect();
    } else if answer.field("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(more(stream, buf).await > 0, "chunk cut short");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                assert!(more(stream, buf).await > 0, "chunk cut short");
            }
            answer.body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    } else {
        while more(stream, buf).await > 0 {}
        answer.body = std::mem::take(buf);
    }
    answer
}

/// Reads what arrives next into `buf`; 0 at the end of the connection.
async fn more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
    buf.extend_from_slice(&chunk[..n]);
    n
}

/// Whether the peer closes `stream` (after anything still unread) within five seconds.
async fn closes(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    matches!(tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await, Ok(Ok(_)))
}

async fn proxy_to_origin() -> (Harness, erratum::origin::Origin) {
    let o = origin().await;
    let manifests =
        [backend("ns", "o", &[o.addr]), ingress("ns", "i", &[("c.example", "/", "Prefix", "o")])].concat();
    (Harness::start(&manifests).await, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_then_hyper_takes_over_at_a_body() {
    let (h, o) = proxy_to_origin().await;
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    // Three requests in one write: erratum's own loop answers them in order.
    s.write_all(
        b"GET /echo?n=1 HTTP/1.1\r\nHost: c.example\r\n\r\n\
          HEAD /bytes/10 HTTP/1.1\r\nHost: c.example\r\n\r\n\
          GET /status/204 HTTP/1.1\r\nHost: c.example\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let first = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(first.status, 200);
    assert!(String::from_utf8_lossy(&first.body).contains("n=1"), "the first request's answer first");
    assert!(first.field("date").is_some(), "a Date field on every answer");
    let head = read_answer(&mut s, &mut buf, true).await;
    assert_eq!((head.status, head.field("content-length")), (200, Some("10")), "HEAD keeps the length");
    let empty = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(empty.status, 204);
    assert_eq!(empty.field("content-length"), None, "a 204 has no length field");

    // A request with a body: hyper serves the connection from here, on the same socket.
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: c.example\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
    let upload = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(upload.status, 200);
    assert!(String::from_utf8_lossy(&upload.body).contains('5'), "the body went upstream whole");
    s.write_all(b"GET /echo?n=2 HTTP/1.1\r\nHost: c.example\r\n\r\n").await.unwrap();
    let after = read_answer(&mut s, &mut buf, false).await;
    assert_eq!(after.status, 200);
    assert!(String::from_utf8_lossy(&after.body).contains("n=2"));
    assert_eq!(o.hits(), 5);

    // `Connection: close` is honoured: answered, then closed.
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: c.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let last = read_answer(&mut s, &mut buf, false).await;
    assert_eq!((last.status, last.field("connection")), (200, Some("close")));
    assert!(closes(&mut s).await);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_keep_alive_only_when_they_ask() {
    let (h, _o) = proxy_to_origin().await;
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    let mut buf = Vec::new();
    s.write_all(b"GET /bytes/3 HTTP/1.0\r\nHost: c.example\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let kept = read_answer(&mut s, &mut buf, false).await;
    assert_eq!((kept.status, kept.field("connection")), (200, Some("keep-alive")));
    assert_eq!(kept.body.len(), 3);
    s.write_all(b"GET /bytes/4 HTTP/1.0\r\nHost: c.example\r\n\r\n").await.unwrap();
    let last = read_answer(&mut s, &mut buf, false).await;
    assert_eq!((last.status, last.field("connection"), last.body.len()), (200, Some("close"), 4));
    assert!(closes(&mut s).await, "HTTP/1.0 without keep-alive: closed after the answer");
    h.shutdown().await;
}

/// An origin that answers every request with a chunked body of unknown length.
async fn chunked_origin() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_unknown_length_are_chunked_for_http11_and_end_the_connection_for_http10() {
    let a = chunked_origin().await;
    let manifests =
        [backend("ns", "a", &[a]), ingress("ns", "i", &[("k.example", "/", "Prefix", "a")])].concat();
    let h = Harness::start(&manifests).await;
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    let mut buf = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: k.example\r\n\r\n").await.unwrap();
        let answer = read_answer(&mut s, &mut buf, false).await;
        assert_eq!(answer.field("transfer-encoding"), Some("chunked"));
        assert_eq!(answer.field("content-length"), None);
        assert_eq!(answer.body, b"hello world");
    }
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: k.example\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
    let answer = read_answer(&mut s, &mut Vec::new(), false).await;
    assert_eq!(answer.field("transfer-encoding"), None, "HTTP/1.0 has no chunked coding");
    assert_eq!(answer.field("connection"), Some("close"));
    assert_eq!(answer.body, b"hello world", "the body runs until the connection closes");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_upstream_request() {
    // The origin reads a request and never answers; it reports when erratum closes the
    // connection it was waiting on.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        let _ = closed_tx.send(());
    });
    let manifests =
        [backend("ns", "a", &[addr]), ingress("ns", "i", &[("w.example", "/", "Prefix", "a")])].concat();
    // Long enough that only the client's leaving can end the upstream request in time.
    let h = Harness::start_with(&manifests, |c| c.proxy.response_timeout = Duration::from_secs(60)).await;
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"GET /wait HTTP/1.1\r\nHost: w.example\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the upstream request is dropped with its client")
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_handover_hyper_still_closes_a_head_that_never_completes() {
    let o = origin().await;
    let manifests =
        [backend("ns", "o", &[o.addr]), ingress("ns", "i", &[("c.example", "/", "Prefix", "o")])].concat();
    let h =
        Harness::start_with(&manifests, |c| c.proxy.header_read_timeout = Duration::from_millis(500)).await;
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    let mut buf = Vec::new();
    // A body: hyper serves this connection from here on, with the connection's head deadline.
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: c.example\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
    assert_eq!(read_answer(&mut s, &mut buf, false).await.status, 200);
    let started = std::time::Instant::now();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: c.exa").await.unwrap();
    assert!(closes(&mut s).await, "closed by the header timeout");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(450) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(o.hits(), 1, "the half head never went upstream");
    h.shutdown().await;
}
