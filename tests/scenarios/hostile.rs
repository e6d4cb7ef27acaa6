//! Hostile input on raw sockets: request smuggling, oversized heads, path tricks, cache
//! poisoning and reflected values. Each request is written byte for byte as an attacker would.

use tokio::net::TcpStream;

use crate::support::*;

async fn shop() -> (Harness, erratum::origin::Origin) {
    let o = origin().await;
    let manifests = [
        backend("ns", "web", &[o.addr]),
        ingress("ns", "i", &[("h.example", "/", "Prefix", "web")]),
        policy("ns", "p", "errorResponses:\n- codes: ['404']\n  page: {inline: 'not here: {{path}}'}\n"),
    ]
    .concat();
    (Harness::start(&manifests).await, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_are_rejected_with_400_and_the_connection_closed() {
    let (h, o) = shop().await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: h.example\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "two Content-Lengths",
            format!(
                "POST /upload HTTP/1.1\r\nHost: h.example\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{smuggled}",
                5 + smuggled.len()
            ),
        ),
        (
            "Transfer-Encoding that is not chunked last",
            format!(
                "POST /upload HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "obsolete line folding",
            format!("GET / HTTP/1.1\r\nHost: h.example\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}"),
        ),
        (
            "space before the colon",
            format!("POST /upload HTTP/1.1\r\nHost: h.example\r\nContent-Length : 5\r\n\r\nhello{smuggled}"),
        ),
        (
            "two Host headers",
            format!("GET / HTTP/1.1\r\nHost: h.example\r\nHost: other.example\r\n\r\n{smuggled}"),
        ),
        ("no Host at all", format!("GET / HTTP/1.1\r\n\r\n{smuggled}")),
        (
            "a bare LF inside a header value",
            format!("GET / HTTP/1.1\r\nHost: h.example\r\nX-A: a\rSet-Cookie: b\r\n\r\n{smuggled}"),
        ),
    ];
    for (name, raw) in &cases {
        let out = exchange(&h, raw.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{name}: {out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{name}: one response, then closed: {out}");
    }
    assert_eq!(o.hits(), 0, "nothing ambiguous reached the origin");

    // Content-Length with Transfer-Encoding: RFC 9112 §6.3 lets the server either reject it
    // or let chunked win and close the connection after the response. hyper does the latter:
    // the upstream gets a chunked body with no Content-Length (one reading only), and the
    // bytes behind the body are never read as a request.
    let raw = format!(
        "POST /upload HTTP/1.1\r\nHost: h.example\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
    );
    let out = exchange(&h, raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("received 5 bytes"), "read as chunked, the length ignored: {out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "closed after one response: {out}");
    assert_eq!(o.hits(), 1, "the smuggled request never reached the origin");

    // Malformed chunk sizes: the head may already be on its way upstream when the body breaks
    // (bodies stream), but the client gets 400, the connection closes, and the bytes after
    // the bad chunk never become a request.
    // (Chunk extensions are not forwarded at all: the body is re-chunked upstream.)
    for body in ["zz\r\nhello\r\n0\r\n\r\n", "3\r\nhello\r\n0\r\n\r\n", "ffffffffffffffffff\r\n"] {
        let raw = format!(
            "POST /upload HTTP/1.1\r\nHost: h.example\r\nTransfer-Encoding: chunked\r\n\r\n{body}{smuggled}"
        );
        let out = exchange(&h, raw.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "chunk {body:?}: {out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    }
    assert_eq!(h.status("h.example", "/ok").await, 200, "and well-formed requests are served as before");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"bad_request\"}"), "{metrics}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_lines_get_414_and_heads_431() {
    let (h, o) = shop().await;
    let long_uri =
        format!("GET /{} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n", "a".repeat(9000));
    let out = exchange(&h, long_uri.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 414"), "{}", &out[..out.len().min(200)]);
    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: h.example\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(70_000)
    );
    let out = exchange(&h, huge_head.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{}", &out[..out.len().min(200)]);
    assert_eq!(o.hits(), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_cannot_match_one_route_and_mean_another_to_the_backend() {
    let public = origin().await;
    let admin = origin().await;
    let manifests = [
        backend("ns", "public", &[public.addr]),
        backend("ns", "admin", &[admin.addr]),
        ingress(
            "ns",
            "i",
            &[("h.example", "/public", "Prefix", "public"), ("h.example", "/admin", "Prefix", "admin")],
        ),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    // (request target, which backend, the path it receives)
    let cases = [
        ("/public/../admin/x", "admin", "/admin/x"),
        ("/public/%2e%2e/admin/x", "admin", "/admin/x"),
        ("/public/%2E%2E/%2e%2e/admin/x", "admin", "/admin/x"),
        ("/admin/../public/x", "public", "/public/x"),
        ("//public///x", "public", "/public/x"),
        ("/public/./x", "public", "/public/x"),
        ("/public/..%2Fadmin/x", "public", "/public/..%2Fadmin/x"),
        ("/%70ublic/x", "public", "/public/x"),
    ];
    for (target, backend, received) in cases {
        let (p0, a0) = (public.hits(), admin.hits());
        let raw = format!("GET {target} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
        let out = exchange(&h, raw.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{target}: {out}");
        assert!(out.contains(&format!("origin: {received}\n")), "{target}: the backend got {out}");
        let went = if admin.hits() > a0 {
            "admin"
        } else if public.hits() > p0 {
            "public"
        } else {
            "none"
        };
        assert_eq!(went, backend, "{target}");
    }
    // A stray % could pair with a decoded character into an escape a backend would decode
    // again (`%%32e` -> `%2e` -> `.`): such paths are refused, not forwarded.
    let (p0, a0) = (public.hits(), admin.hits());
    for target in ["/public/%%32e%%32e/admin/x", "/public/100%", "/public/%zz"] {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: h.example\r\nConnection: close\r\n\r\n");
        let out = exchange(&h, raw.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{target}: {out}");
    }
    assert_eq!((public.hits(), admin.hits()), (p0, a0));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflected_request_values_are_escaped_and_cannot_add_headers() {
    let (h, _o) = shop().await;
    // The policy page reflects {{path}}; the attacker puts markup and a CRLF in the path.
    let raw = "GET /missing/%3Cscript%3E%22%0D%0ASet-Cookie:%20evil=1 HTTP/1.1\r\nHost: h.example\r\nX-Request-ID: <b>id</b>\r\nConnection: close\r\n\r\n";
    let out = exchange(&h, raw.as_bytes()).await;
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{out}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "no header from the request: {head}");
    assert!(!body.contains("<script>"), "{body}");
    assert!(body.starts_with("not here: /missing/"), "{body}");
    // A request id with markup is kept as a header value (printable ASCII) but never as markup.
    assert!(head.contains("x-request-id: <b>id</b>"), "{head}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_share_one_normalised_cache_entry_and_never_another_keys() {
    let o = origin().await;
    let manifests = [
        backend("shop", "web", &[o.addr]),
        ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "web")]),
        policy("shop", "p", "errorResponses: []\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let fetch = |target: &'static str, host: &'static str| {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let h = &h;
        async move { exchange(h, raw.as_bytes()).await }
    };
    let first = fetch("/missing/a", "shop.example").await;
    assert!(first.contains("x-cache: Error from erratum"), "{first}");
    for (target, host) in [
        ("/missing//a", "shop.example"),
        ("/missing/./a", "shop.example"),
        ("/x/../missing/a", "shop.example"),
        ("/missing/%61", "SHOP.example:8080"),
    ] {
        let out = fetch(target, host).await;
        assert!(out.contains("x-cache: ErrorHit from erratum"), "{target} {host}: {out}");
    }
    // A different path is a different key even when it looks alike.
    let other = fetch("/missing/a%2F", "shop.example").await;
    assert!(other.contains("x-cache: Error from erratum"), "{other}");
    assert_eq!(o.hits(), 2);
    h.shutdown().await;
}

/// Heads refused before they become requests get the same decision as every other status
/// erratum makes (issue 17): a policy's page where one applies (the default policy: no host
/// is known), else the built-in page, with a request id, and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_heads_get_the_one_decision_with_a_page_and_a_request_id() {
    let o = origin().await;
    let manifests = [
        backend("ns", "web", &[o.addr]),
        ingress("ns", "i", &[("h.example", "/", "Prefix", "web")]),
        policy(
            "erratum",
            "default",
            "source: Proxy\nerrorResponses:\n- codes: ['431']\n  page: {inline: 'head too big ({{status}})', contentType: text/plain}\n",
        ),
    ]
    .concat();
    let h = Harness::start_with(&manifests, |c| {
        c.build.default_policy = Some(erratum::table::ObjectKey::new("erratum", "default"));
        c.proxy.max_headers = 20;
    })
    .await;
    let fields: String = (0..30).map(|i| format!("X-F{i}: v\r\n")).collect();
    let too_many = format!("GET / HTTP/1.1\r\nHost: h.example\r\n{fields}\r\n");
    let out = exchange(&h, too_many.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(out.contains("\r\nx-request-id: "), "a request id: {out}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nhead too big (431)"), "the default policy's page: {out}");

    let huge = format!("GET / HTTP/1.1\r\nHost: h.example\r\nX-Big: {}\r\n\r\n", "b".repeat(70_000));
    let out = exchange(&h, huge.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431"), "over the size limit: {}", &out[..out.len().min(300)]);
    assert!(out.ends_with("head too big (431)"), "{out}");

    let out = exchange(&h, b"GET / HTTP/1.1\r\nHost: h.example\r\nBad Name: x\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("\r\nx-request-id: "), "{out}");
    assert!(out.contains("<h1>400 Bad Request</h1>"), "no policy for 400: the built-in page: {out}");

    // A real client sees the same.
    let curl = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5", "-H", "Host: h.example"])
        .args((0..30).flat_map(|i| ["-H".to_string(), format!("X-F{i}: v")]))
        .arg(format!("http://{}/", h.running().http_addr))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&curl.stdout);
    assert!(text.starts_with("HTTP/1.1 431"), "curl: {text} {}", String::from_utf8_lossy(&curl.stderr));
    assert!(text.to_ascii_lowercase().contains("x-request-id: "), "{text}");
    assert!(text.ends_with("head too big (431)"), "{text}");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"head_too_large\"} 3"), "{metrics}");

    // The documented limit: once a request with a body has handed the connection to hyper,
    // hyper answers a later bad head itself, bare (no page, no request id). Asserted so a
    // change of that behaviour is seen and documented.
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: h.example\r\nContent-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\nHost: h.example\r\n{fields}\r\n"
    );
    let out = exchange(&h, raw.as_bytes()).await;
    let second = out.find("HTTP/1.1 431").unwrap_or_else(|| panic!("hyper's 431 after the hand-over: {out}"));
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(!out[second..].contains("x-request-id"), "hyper's own answer: {}", &out[second..]);
    assert_eq!(o.hits(), 1, "only the POST reached the origin");
    h.shutdown().await;
}

/// HTTP/2's limit on a header list is enforced by the h2 codec before a request exists: the
/// client gets h2's own 431, headers only, and the stream ends (documented in
/// docs/error-semantics.md, "The one decision"). Asserted with an HTTP/2 client so a change
/// is seen. (curl, which retries a refused stream, reports "Connection died" instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_header_lists_over_the_limit_get_the_codecs_own_431() {
    use http_body_util::{BodyExt, Empty};
    let (h, o) = shop().await;
    let tcp = TcpStream::connect(h.running().http_addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // 25 copies of one 3,000-byte field: 75 KB decoded, over the 64 KiB default, yet a few KB
    // on the wire (HPACK indexes the repeats), so the codec's size check is what answers.
    let big = "0".repeat(3000);
    let mut req = http::Request::get("http://h.example/");
    for _ in 0..25 {
        req = req.header("x-big", big.as_str());
    }
    let resp = sender.send_request(req.body(Empty::<bytes::Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 431);
    assert!(!resp.headers().contains_key("x-request-id"), "the codec's answer, not erratum's");
    assert!(resp.into_body().collect().await.map(|b| b.to_bytes().is_empty()).unwrap_or(true));
    assert_eq!(o.hits(), 0);
    // The connection's next stream is unaffected.
    let ok = sender
        .send_request(http::Request::get("http://h.example/").body(Empty::<bytes::Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    h.shutdown().await;
}
