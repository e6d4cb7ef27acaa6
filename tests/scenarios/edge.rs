//! The edge every ingress has (issue 18): HTTPS redirects, HSTS, request body limits, with
//! ingress-nginx's annotations and defaults. Real sockets, real origins, reqwest, curl and raw
//! bytes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// An Ingress in namespace `ns` with annotations (without the ingress-nginx prefix), TLS hosts
/// (one entry, Secret `cert`) and `host -> service a` rules for `/`.
fn annotated(name: &str, annotations: &[(&str, &str)], tls: &[&str], hosts: &[&str]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  annotations:\n"
    );
    out.push_str("    erratum.dev/test: \"true\"\n");
    for (k, v) in annotations {
        out.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
    }
    out.push_str("spec:\n  ingressClassName: erratum\n");
    if !tls.is_empty() {
        out.push_str(&format!("  tls:\n  - hosts: {tls:?}\n    secretName: cert\n"));
    }
    out.push_str("  rules:\n");
    for host in hosts {
        out.push_str(&format!(
            "  - host: \"{host}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]}}\n"
        ));
    }
    out.push_str("---\n");
    out
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The redirect matrix: TLS entry or not, both annotations, the flag, the ACME path, the
/// query kept, HEAD and POST, a trusted load balancer that ended TLS, `--https-port`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https_as_ingress_nginx_does() {
    let a = origin().await;
    let c = cert(&["secure.example", "forced.example"]);
    let manifests = [
        backend("ns", "a", &[a.addr]),
        secret_yaml("cert", &c),
        annotated("secure", &[], &["secure.example"], &["secure.example", "plain.example"]),
        annotated("optout", &[("ssl-redirect", "false")], &["optout.example"], &["optout.example"]),
        annotated("forced", &[("force-ssl-redirect", "true")], &[], &["forced.example"]),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let client = no_redirects();
    let send = |method: reqwest::Method, host: &str, path: &str| {
        client.request(method, h.url(path)).header("host", host).body("").send()
    };

    let r = send(reqwest::Method::GET, "secure.example", "/a/b?x=1&y=%20").await.unwrap();
    assert_eq!(r.status(), 308, "a host with a TLS entry");
    assert_eq!(r.headers()["location"], "https://secure.example/a/b?x=1&y=%20", "path and query kept");
    assert!(r.headers().get("strict-transport-security").is_none(), "never HSTS over plain HTTP");
    assert!(r.headers().get("x-request-id").is_some());
    for method in [reqwest::Method::HEAD, reqwest::Method::POST, reqwest::Method::DELETE] {
        let r = send(method.clone(), "SECURE.example:8080", "/p").await.unwrap();
        assert_eq!(r.status(), 308, "{method}: 308 keeps the method");
        assert_eq!(r.headers()["location"], "https://secure.example/p");
    }
    let r =
        send(reqwest::Method::GET, "secure.example", "/.well-known/acme-challenge/token-1").await.unwrap();
    assert_eq!(r.status(), 200, "ACME HTTP-01 challenges are never redirected");
    assert_eq!(send(reqwest::Method::GET, "plain.example", "/").await.unwrap().status(), 200, "no TLS entry");
    assert_eq!(
        send(reqwest::Method::GET, "optout.example", "/").await.unwrap().status(),
        200,
        "ssl-redirect: false"
    );
    let r = send(reqwest::Method::GET, "forced.example", "/f").await.unwrap();
    assert_eq!(r.status(), 308, "force-ssl-redirect without a TLS entry");
    assert_eq!(r.headers()["location"], "https://forced.example/f");
    // An untrusted client cannot talk its way out of the redirect.
    let r = client.get(h.url("/f")).header("host", "forced.example").header("x-forwarded-proto", "https");
    assert_eq!(r.send().await.unwrap().status(), 308);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_requests_total{ingress=\"secure\",namespace=\"ns\",status_class=\"3xx\",upstream_status_class=\"none\"} 4"),
        "redirects are counted as the route's 3xx: {metrics}"
    );
    assert!(!metrics.contains("reason=\"redirect\""), "a redirect is not an error");

    // Over HTTPS: served, with HSTS.
    let https = h.running().https_addr.unwrap();
    let tls_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(c.pem.as_bytes()).unwrap())
        .resolve("secure.example", https)
        .build()
        .unwrap();
    let r = tls_client.get(format!("https://secure.example:{}/x", https.port())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
    h.shutdown().await;

    // The flag off, a non-443 public port, and a trusted load balancer that ended TLS.
    let h = Harness::start_with(&manifests, |c| {
        c.build.edge.ssl_redirect = false;
        c.proxy.https_port = 8443;
        c.proxy.hsts = None;
        c.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()].into();
    })
    .await;
    let client = no_redirects();
    let get = |host: &str, proto: Option<&str>| {
        let mut r = client.get(h.url("/q?k=v")).header("host", host);
        if let Some(p) = proto {
            r = r.header("x-forwarded-proto", p);
        }
        r.send()
    };
    assert_eq!(get("secure.example", None).await.unwrap().status(), 200, "--ssl-redirect=false");
    let r = get("forced.example", None).await.unwrap();
    assert_eq!(r.headers()["location"], "https://forced.example:8443/q?k=v", "--https-port");
    let r = get("forced.example", Some("https")).await.unwrap();
    assert_eq!(r.status(), 200, "TLS ended at a trusted load balancer: no redirect loop");
    assert!(r.headers().get("strict-transport-security").is_none(), "HSTS off by flag");
    assert_eq!(get("forced.example", Some("http")).await.unwrap().status(), 308);
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let forced = table["edge"].as_array().unwrap().iter().find(|e| e["ingress"] == "ns/forced").unwrap();
    assert_eq!(forced["httpsRedirect"], serde_json::json!(["forced.example"]), "{table:#}");
    h.shutdown().await;

    // HSTS with a trusted X-Forwarded-Proto: https (the client did see HTTPS).
    let h = Harness::start_with(&manifests, |c| {
        c.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()].into();
    })
    .await;
    let r = no_redirects()
        .get(h.url("/"))
        .header("host", "plain.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000; includeSubDomains");
    h.shutdown().await;
}

/// Reads a response head from a raw connection (up to the blank line).
async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !out.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut byte))
            .await
            .expect("a response head in 5 s")
            .unwrap();
        if n == 0 {
            break;
        }
        out.push(byte[0]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `--max-body-size` (1 MiB by default, as ingress-nginx) and `proxy-body-size`: a stated
/// length over the limit is refused before anything goes upstream, `Expect: 100-continue`
/// gets 413 and never 100, a chunked body that crosses the limit gets 413 and its upstream
/// request is abandoned, and `source: Proxy` policies page the 413.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_over_the_limit_get_413_through_the_one_decision() {
    let a = origin().await;
    let manifests = [
        backend("ns", "a", &[a.addr]),
        annotated("default", &[], &[], &["default.example"]),
        annotated("small", &[("proxy-body-size", "100k")], &[], &["small.example"]),
        annotated("big", &[("proxy-body-size", "8m")], &[], &["big.example"]),
        annotated("unlimited", &[("proxy-body-size", "0")], &[], &["unlimited.example"]),
        annotated("typo", &[("proxy-body-size", "8 megs")], &[], &["typo.example"]),
        policy(
            "ns",
            "p",
            "source: Proxy\nerrorResponses:\n- codes: ['413']\n  page: {inline: 'too big for {{host}}', contentType: text/plain}\n",
        ),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let post = |host: &str, len: usize| {
        h.client.post(h.url("/upload")).header("host", host).body(vec![b'x'; len]).send()
    };
    let two_mib = 2 << 20;

    let hits = a.hits();
    let r = post("default.example", two_mib).await.unwrap();
    assert_eq!(r.status(), 413, "over the 1 MiB default");
    assert!(r.headers().get("x-request-id").is_some());
    assert_eq!(r.text().await.unwrap(), "too big for default.example", "the policy's page");
    assert_eq!(a.hits(), hits, "nothing went upstream");
    let r = post("default.example", 1 << 20).await.unwrap();
    assert_eq!(r.text().await.unwrap(), "received 1048576 bytes\n", "exactly the limit passes");
    assert_eq!(post("big.example", two_mib).await.unwrap().status(), 200, "proxy-body-size: 8m");
    assert_eq!(post("unlimited.example", 9 << 20).await.unwrap().status(), 200, "proxy-body-size: 0");
    assert_eq!(post("small.example", 200_000).await.unwrap().status(), 413, "proxy-body-size: 100k");
    assert_eq!(post("typo.example", two_mib).await.unwrap().status(), 413, "a bad value keeps the default");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let problems = table["problems"].to_string();
    assert!(problems.contains("proxy-body-size") && problems.contains("8 megs"), "reported: {problems}");

    // Expect: 100-continue over the limit: 413, never 100, and the connection closes.
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: small.example\r\nContent-Length: 200000\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // Within the limit, the client is told to go on.
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: small.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 100"));
    s.write_all(b"hello").await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));

    // A client that reads the 413 only after sending its whole body (as most do) gets it: the
    // rest of the body is read and discarded (nginx's lingering close), not answered with a
    // reset that destroys the 413 (a broken pipe in the client, seen in CI).
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: small.example\r\nContent-Length: 2000000\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    tokio::time::sleep(Duration::from_millis(100)).await; // erratum has answered and moved on
    for _ in 0..20 {
        s.write_all(&[b'z'; 100_000]).await.expect("the body is read to its end, not reset");
    }
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed once the body is in")
        .expect("closed, not reset");

    // Chunked: counted as it streams. Under the limit it passes...
    let chunked = |total: usize| {
        let mut req =
            b"POST /upload HTTP/1.1\r\nHost: small.example\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..total / 10_000 {
            req.extend_from_slice(format!("{:x}\r\n", 10_000).as_bytes());
            req.extend_from_slice(&[b'y'; 10_000]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        req
    };
    let out = exchange(
        &h,
        &[chunked(50_000), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()].concat(),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200") && out.contains("received 50000 bytes"), "{out}");
    // ...and over it the client gets 413 and the upstream request is abandoned.
    let mut s = TcpStream::connect(h.running().http_addr).await.unwrap();
    let body = chunked(300_000);
    let (mut rd, mut wr) = s.split();
    let write = async {
        wr.write_all(&body).await.expect("the rest is read and discarded, not reset");
    };
    let read = async {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let ((), out) = tokio::join!(write, read);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("connection: close"), "{out}");
    assert!(out.ends_with("too big for small.example"), "{out}");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"body_too_large\"}"), "{metrics}");
    h.shutdown().await;
}

/// `--proxy-protocol`: v1 and v2 headers name the client (X-Real-IP, X-Forwarded-For), curl's
/// own `--haproxy-protocol` works over HTTP and HTTPS, and missing, malformed and slow headers
/// close the connection unanswered and are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_headers_name_the_client_and_bad_ones_are_counted() {
    let a = origin().await;
    let c = cert(&["pp.example"]);
    let manifests = [
        backend("ns", "a", &[a.addr]),
        secret_yaml("cert", &c),
        annotated("pp", &[("ssl-redirect", "false")], &["pp.example"], &["pp.example"]),
    ]
    .concat();
    let h = Harness::start_with(&manifests, |c| {
        c.proxy.proxy_protocol = true;
        c.proxy.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let echo = b"GET /echo HTTP/1.1\r\nHost: pp.example\r\nConnection: close\r\n\r\n";
    let headers_of = |out: &str| -> serde_json::Value {
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        serde_json::from_str::<serde_json::Value>(body).unwrap_or_default()["headers"].clone()
    };

    let v1 = [&b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 80\r\n"[..], echo].concat();
    let out = exchange(&h, &v1).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert_eq!(headers_of(&out)["x-real-ip"], "203.0.113.9", "{out}");
    assert_eq!(headers_of(&out)["x-forwarded-for"], "203.0.113.9");

    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend([0x21, 0x21, 0, 36]); // PROXY, TCP over IPv6, 36 address bytes
    v2.extend("2001:db8::9".parse::<std::net::Ipv6Addr>().unwrap().octets());
    v2.extend("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    v2.extend([0xC8, 0x1C, 0, 80]);
    let out = exchange(&h, &[&v2[..], echo].concat()).await;
    assert_eq!(headers_of(&out)["x-real-ip"], "2001:db8::9", "{out}");

    // A load balancer's health check (v2 LOCAL): the peer is the client.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend([0x20, 0x00, 0, 0]);
    let out = exchange(&h, &[&local[..], echo].concat()).await;
    assert_eq!(headers_of(&out)["x-real-ip"], "127.0.0.1", "{out}");

    // curl speaks v1 itself, over plain HTTP and before the TLS handshake.
    let https = h.running().https_addr.unwrap();
    let ca = h.dir.path().join("ca.pem");
    std::fs::write(&ca, &c.pem).unwrap();
    for url in [h.url("/echo"), format!("https://pp.example:{}/echo", https.port())] {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--haproxy-protocol", "-H", "Host: pp.example"])
            .arg("--cacert")
            .arg(&ca)
            .args(["--resolve", &format!("pp.example:{}:127.0.0.1", https.port())])
            .arg(&url)
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{url}: {body} {}", String::from_utf8_lossy(&out.stderr));
        let e: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["headers"]["x-real-ip"], "127.0.0.1", "{url}");
    }

    // No header (a client connected directly), a broken one, and one that never ends: closed
    // without an answer, each counted.
    assert_eq!(exchange(&h, echo).await, "", "no PROXY header");
    assert_eq!(exchange(&h, b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n").await, "");
    let mut slow = TcpStream::connect(h.running().http_addr).await.unwrap();
    slow.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut out)).await;
    assert!(read.is_ok() && out.is_empty(), "a slow header is cut off at the header timeout");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_protocol_errors_total{reason=\"malformed\"} 2"), "{metrics}");
    assert!(metrics.contains("erratum_proxy_protocol_errors_total{reason=\"timeout\"} 1"), "{metrics}");
    h.shutdown().await;
}

/// A listener on `[::]` serves IPv6 and IPv4 clients alike (the chart's default), and an IPv6
/// client's address reaches the origin as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_listener_serves_ipv6_and_ipv4_clients() {
    let a = origin().await;
    let manifests = [backend("ns", "a", &[a.addr]), annotated("i", &[], &[], &["ds.example"])].concat();
    let h = Harness::start_with(&manifests, |c| c.http_addr = "[::]:0".parse().unwrap()).await;
    let port = h.running().http_addr.port();
    for (addr, client) in [(format!("[::1]:{port}"), "::1"), (format!("127.0.0.1:{port}"), "127.0.0.1")] {
        let r =
            h.client.get(format!("http://{addr}/echo")).header("host", "ds.example").send().await.unwrap();
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["headers"]["x-real-ip"], client, "over {addr}");
    }
    h.shutdown().await;
}

/// `--access-log FILE`: one JSON line per request with the real client, the route, both
/// statuses, what the decision did, the cache status, bytes and the upstream's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_json_line_per_request_with_what_happened() {
    let a = origin().await;
    let c = cert(&["log.example"]);
    let manifests = [
        backend("ns", "a", &[a.addr]),
        secret_yaml("cert", &c),
        annotated("log", &[], &["log.example"], &["log.example", "open.example"]),
        policy(
            "ns",
            "p",
            "errorResponses:\n- codes: ['503']\n  page: {inline: 'sorry', contentType: text/plain}\n  errorCachingMinTTLSeconds: 30\n",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let log = path.clone();
    let h = Harness::start_with(&manifests, |c| {
        c.proxy.access_log = Some(erratum::proxy::access_log::Target::File(log));
        c.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()].into();
    })
    .await;
    let client = no_redirects();
    let send = |host: &'static str, path: &'static str| {
        client.get(h.url(path)).header("host", host).header("x-forwarded-for", "198.51.100.4").send()
    };
    let hello = send("open.example", "/hello?secret=1").await.unwrap().text().await.unwrap().len();
    assert_eq!(send("open.example", "/status/503").await.unwrap().text().await.unwrap(), "sorry");
    assert_eq!(send("open.example", "/status/503").await.unwrap().text().await.unwrap(), "sorry");
    assert_eq!(send("open.example", "/missing").await.unwrap().status(), 404);
    assert_eq!(send("log.example", "/x").await.unwrap().status(), 308);
    assert_eq!(send("nobody.example", "/").await.unwrap().status(), 404);
    let r = client.post(h.url("/upload")).header("host", "open.example").body(vec![b'z'; 3000]).send();
    assert_eq!(r.await.unwrap().text().await.unwrap(), "received 3000 bytes\n");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.lines().count() >= 7 || tokio::time::Instant::now() > deadline {
            break text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 7, "{lines:#?}");
    let upstream = a.addr.to_string();
    let pass = &lines[0];
    assert_eq!(pass["client"], "198.51.100.4", "the real client, from the trusted chain");
    assert_eq!(
        (pass["method"].as_str(), pass["host"].as_str(), pass["path"].as_str()),
        (Some("GET"), Some("open.example"), Some("/hello"))
    );
    assert!(pass.get("query").is_some_and(|q| q == "secret=1"));
    assert_eq!((pass["status"].as_u64(), pass["upstream_status"].as_u64()), (Some(200), Some(200)));
    assert_eq!(pass["bytes_out"].as_u64(), Some(hello as u64));
    assert_eq!(pass["protocol"], "HTTP/1.1");
    assert_eq!(pass["upstream"], upstream.as_str());
    assert_eq!((pass["namespace"].as_str(), pass["ingress"].as_str()), (Some("ns"), Some("log")));
    assert_eq!((pass["action"].as_str(), pass["cache"].as_str()), (Some("passed"), Some("bypass")));
    assert_eq!(pass["request_id"].as_str().unwrap().len(), 32);
    assert!(pass["time"].as_str().unwrap().ends_with('Z') && pass["duration_ms"].as_f64().unwrap() >= 0.0);
    let replaced = &lines[1];
    assert_eq!((replaced["status"].as_u64(), replaced["upstream_status"].as_u64()), (Some(503), Some(503)));
    assert_eq!((replaced["action"].as_str(), replaced["policy"].as_str()), (Some("replaced"), Some("ns/p")));
    assert_eq!((replaced["cache"].as_str(), replaced["bytes_out"].as_u64()), (Some("miss"), Some(5)));
    assert_eq!(lines[2]["cache"], "hit", "the second 503 came from the error cache");
    assert_eq!(lines[3]["action"], "passed", "no rule for the origin's 404");
    assert_eq!((lines[4]["status"].as_u64(), lines[4]["action"].as_str()), (Some(308), Some("redirected")));
    assert!(lines[4]["upstream"].is_null() && lines[4]["upstream_status"].is_null());
    assert_eq!((lines[5]["status"].as_u64(), lines[5]["action"].as_str()), (Some(404), Some("replaced")));
    assert!(
        lines[5]["ingress"].is_null() && lines[5]["policy"].is_null(),
        "erratum's own 404: {:#}",
        lines[5]
    );
    assert_eq!((lines[6]["method"].as_str(), lines[6]["bytes_in"].as_u64()), (Some("POST"), Some(3000)));
    assert!(h.metrics().await.contains("erratum_access_log_dropped_total 0"));
    h.shutdown().await;
}
