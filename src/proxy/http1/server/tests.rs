//! Unit tests of the server loop: parsing, framing, the hand-over.

use super::*;
use http::HeaderValue;
use http_body_util::BodyExt;

fn parse_str(text: &str) -> (Next, BytesMut) {
    let mut buf = BytesMut::from(text);
    (parse(&mut buf, 1024, 10), buf)
}

fn request(text: &str) -> Parsed {
    match parse_str(text).0 {
        Next::Request(parsed) => parsed,
        _ => panic!("not answered here: {text:?}"),
    }
}

#[test]
fn simple_requests_are_parsed_and_taken_off_the_buffer() {
    let (next, rest) = parse_str("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 2\r\n\r\nGET /next");
    let Next::Request(parsed) = next else { panic!("a request") };
    assert_eq!(parsed.req.method(), Method::GET);
    assert_eq!(parsed.req.uri(), "/a?b=1");
    assert_eq!(parsed.req.headers()["x-two"], "2");
    assert!(parsed.keep_alive);
    assert_eq!(&rest[..], b"GET /next", "the next request stays");
    assert!(matches!(parse_str("GET / HTTP/1.1\r\nHost: x\r\n").0, Next::More));
}

#[test]
fn keep_alive_follows_the_version_and_connection_tokens() {
    assert!(!request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!request("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(request("HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").keep_alive, "an empty body is no body");
}

#[test]
fn anything_else_goes_to_hyper_with_the_buffer_untouched() {
    for text in [
        "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        "CONNECT h:443 HTTP/1.1\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let (next, rest) = parse_str(text);
        assert!(matches!(next, Next::Handover(None)), "{text:?}");
        assert_eq!(&rest[..], text.as_bytes(), "{text:?}");
    }
}

#[test]
fn part_of_the_http2_preface_waits_for_the_rest() {
    assert!(matches!(parse_str("PRI * HTTP/2.0\r\n").0, Next::More));
    let (next, _) = parse_str("PRI * HTTP/2\tGET / HTTP/1.1\r\n\r\n");
    assert!(matches!(next, Next::Refuse(Refusal::Malformed("version"))), "not a preface after all");
}

#[test]
fn heads_that_cannot_be_requests_are_refused_here_not_by_hyper() {
    for (text, part) in [
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "field name"),
        ("GET / HTTP/3.0\r\n\r\n", "version"),
        ("GET / HTTP/1.1\rHost: a\r\n\r\n", "line ending"),
        ("GET\x01 / HTTP/1.1\r\n\r\n", "token"),
    ] {
        let (next, _) = parse_str(text);
        assert!(matches!(next, Next::Refuse(Refusal::Malformed(p)) if p == part), "{text:?}");
    }
    let fields: String = (0..11).map(|i| format!("X-{i}: 1\r\n")).collect();
    let (next, _) = parse_str(&format!("GET / HTTP/1.1\r\n{fields}\r\n"));
    assert!(matches!(next, Next::Refuse(Refusal::TooLarge)), "more fields than allowed: 431");
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(1100));
    assert!(matches!(parse_str(&long).0, Next::Refuse(Refusal::TooLarge)), "a head past the limit: 431");
    let fields: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
    let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{fields}\r\n").as_str());
    let next = parse(&mut buf, 64 * 1024, 1000);
    assert!(matches!(next, Next::Refuse(Refusal::TooLarge)), "more fields than the parser holds: 431");
}

fn head_of(
    status: u16,
    fields: &[(&str, &str)],
    body: Body,
    head_only: bool,
    version: Version,
) -> (String, Framing, bool) {
    let mut headers = HeaderMap::new();
    for (n, v) in fields {
        headers.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let mut out = Vec::new();
    let status = StatusCode::from_u16(status).unwrap();
    let (framing, keep) = encode_head(&mut out, status, &headers, &body, head_only, version, true);
    (String::from_utf8(out).unwrap(), framing, keep)
}

fn full(text: &'static str) -> Body {
    http_body_util::Full::new(Bytes::from_static(text.as_bytes())).map_err(|e| match e {}).boxed()
}

fn streamed() -> Body {
    let frames = futures::stream::iter([Ok::<_, crate::proxy::BoxError>(http_body::Frame::data(
        Bytes::from_static(b"x"),
    ))]);
    http_body_util::StreamBody::new(frames).boxed()
}

#[test]
fn framing_follows_the_body_not_the_handlers_fields() {
    let (head, framing, keep) =
        head_of(200, &[("content-length", "99"), ("x-a", "1")], full("hello"), false, Version::HTTP_11);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(head.contains("content-length: 5\r\n") && !head.contains("99"), "{head}");
    assert!(head.contains("x-a: 1\r\n") && head.contains("date: ") && head.ends_with("\r\n\r\n"));
    assert_eq!((framing, keep), (Framing::Length(5), true));

    let (head, framing, _) = head_of(200, &[], streamed(), false, Version::HTTP_11);
    assert!(head.contains("transfer-encoding: chunked\r\n"));
    assert_eq!(framing, Framing::Chunked);
    let (head, framing, keep) = head_of(200, &[], streamed(), false, Version::HTTP_10);
    assert!(head.contains("connection: close\r\n") && !head.contains("chunked"));
    assert_eq!((framing, keep), (Framing::UntilClose, false));
    let (_, framing, _) = head_of(200, &[("content-length", "1")], streamed(), false, Version::HTTP_11);
    assert_eq!(framing, Framing::Length(1), "a stated length serves a body that does not know its own");
}

#[test]
fn bodiless_answers_keep_or_drop_their_length_fields() {
    let (head, framing, _) = head_of(200, &[("content-length", "10")], full(""), true, Version::HTTP_11);
    assert!(head.contains("content-length: 10\r\n"), "HEAD describes the GET: {head}");
    assert_eq!(framing, Framing::None);
    let (head, _, _) = head_of(304, &[("content-length", "10")], full(""), false, Version::HTTP_11);
    assert!(head.contains("content-length: 10\r\n"));
    let (head, framing, _) = head_of(204, &[("content-length", "0")], full(""), false, Version::HTTP_11);
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(framing, Framing::None);
}

#[test]
fn connection_fields_are_erratums() {
    let (head, _, keep) = head_of(400, &[("connection", "close")], full("no"), false, Version::HTTP_11);
    assert!(!keep && head.matches("connection").count() == 1 && head.contains("connection: close\r\n"));
    let (head, _, keep) = head_of(200, &[("connection", "x-private")], full("ok"), false, Version::HTTP_10);
    assert!(keep && head.contains("connection: keep-alive\r\n") && !head.contains("x-private"));
    let (_, _, keep) = head_of(200, &[], full("ok"), false, Version::HTTP_11);
    assert!(keep);
}

#[tokio::test]
async fn bodies_go_out_in_their_framing_and_a_wrong_length_fails() {
    let mut out = b"HEAD\r\n".to_vec();
    let mut wire = Vec::new();
    write_body(&mut wire, &mut out, &mut streamed(), Framing::Chunked).await.unwrap();
    assert_eq!(wire, b"HEAD\r\n1\r\nx\r\n0\r\n\r\n");
    let mut wire = Vec::new();
    write_body(&mut wire, &mut Vec::new(), &mut full("hello"), Framing::Length(5)).await.unwrap();
    assert_eq!(wire, b"hello");
    assert!(
        write_body(&mut Vec::new(), &mut Vec::new(), &mut full("hello"), Framing::Length(4)).await.is_err()
    );
    assert!(
        write_body(&mut Vec::new(), &mut Vec::new(), &mut full("hello"), Framing::Length(6)).await.is_err()
    );
}

/// Handler slots: a connection that has asked more than once keeps its slot from one request
/// to the next while its thread holds at most `HANDLERS_KEPT`; past that, or after a first
/// request, a connection going idle frees it, and a closed connection always does.
#[tokio::test(flavor = "current_thread")]
async fn idle_connections_past_the_kept_number_free_their_handler_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let held = || HANDLERS.with(|n| n.get());
    let shed = prometheus::IntCounter::new("shed", "shed").expect("valid metric");
    let conns = crate::proxy::Connections::new(
        10_000,
        tokio_util::sync::CancellationToken::new(),
        shed,
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    );
    let ok = || Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
    let mut clients = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let before = held();
    for _ in 0..HANDLERS_KEPT + 40 {
        let (client, server) = tokio::io::duplex(4096);
        let slot = Arc::new(conns.acquire().await.expect("slot"));
        tasks.spawn(async move {
            let front = Front {
                handle: |_req| async { ok() },
                refuse: |_| ok(),
                slot: &slot,
                max_head: 1024,
                max_headers: 10,
            };
            serve(front, server).await.map(|_| ())
        });
        clients.push(client);
    }
    let ask = async |client: &mut tokio::io::DuplexStream| {
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let mut got = [0u8; 256];
        let n = client.read(&mut got).await.expect("read");
        assert!(got[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&got[..n]));
    };
    for client in clients.iter_mut() {
        ask(client).await;
    }
    // Every connection answered one request and sits idle: a client that asked once keeps none.
    tokio::task::yield_now().await;
    assert_eq!(held() - before, 0);
    for client in clients.iter_mut() {
        ask(client).await;
    }
    // Twice each: only the kept number hold a slot.
    tokio::task::yield_now().await;
    assert_eq!(held() - before, HANDLERS_KEPT);
    // An idle connection that had freed its slot takes one again for its next request.
    ask(clients.last_mut().expect("a client")).await;
    tokio::task::yield_now().await;
    assert_eq!(held() - before, HANDLERS_KEPT);
    drop(clients);
    while let Some(ended) = tasks.join_next().await {
        ended.expect("task").expect("served");
    }
    assert_eq!(held(), before, "closed connections free their slots");
}
