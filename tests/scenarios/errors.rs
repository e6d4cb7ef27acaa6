//! Errors erratum makes itself: 404 no route, 503 no endpoint, 502 refused/reset, 504 timeout.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_get_their_status_and_a_builtin_page() {
    let live = origin().await;
    let refused = closed_port();
    let manifests = [
        backend("ns", "live", &[live.addr]),
        backend("ns", "refused", &[refused]),
        backend_with_readiness("ns", "unready", &[(live.addr, false)]),
        backend("ns", "empty", &[]),
        ingress(
            "ns",
            "i",
            &[
                ("h.example", "/", "Prefix", "live"),
                ("h.example", "/refused", "Prefix", "refused"),
                ("h.example", "/unready", "Prefix", "unready"),
                ("h.example", "/empty", "Prefix", "empty"),
                ("h.example", "/ghost", "Prefix", "no-such-service"),
            ],
        ),
    ]
    .concat();
    let h = Harness::start_with(&manifests, |c| c.proxy.response_timeout = Duration::from_millis(300)).await;

    // (path, status, what)
    let cases = [
        ("/refused", 502, "connection refused"),
        ("/reset", 502, "origin closed the connection without a response"),
        ("/unready", 503, "no ready endpoint"),
        ("/empty", 503, "EndpointSlice without endpoints"),
        ("/ghost", 503, "Service missing"),
        ("/slow/2000", 504, "response timeout"),
        ("/boom", 500, "origin 500 passes through"),
        ("/unavailable", 503, "origin 503 passes through"),
    ];
    for (path, status, what) in cases {
        let started = Instant::now();
        let resp = h.get("h.example", path).await;
        assert_eq!(resp.status().as_u16(), status, "{path}: {what}");
        assert!(started.elapsed() < Duration::from_secs(2), "{path} answered in time");
        let from_origin = path == "/boom" || path == "/unavailable";
        let request_id = resp.headers().get("x-request-id").cloned();
        let body = resp.text().await.unwrap();
        if from_origin {
            assert!(body.starts_with("origin:"), "{path}: origin body passes through: {body}");
        } else {
            assert!(body.contains(&format!("<h1>{status} ")), "{path}: built-in page: {body}");
            assert!(request_id.is_some(), "{path}: erratum-made errors carry the request id");
        }
    }
    assert_eq!(h.status("nobody.example", "/").await, 404);

    let metrics = h.metrics().await;
    for reason in ["upstream_connect", "upstream_reset", "upstream_timeout", "no_endpoints", "no_route"] {
        assert!(
            metrics.contains(&format!("erratum_proxy_errors_total{{reason=\"{reason}\"}}")),
            "{reason}\n{metrics}"
        );
    }
    // Served and upstream status are both counted: a 502 made by erratum has no upstream status.
    assert!(
        metrics.contains(
            "erratum_requests_total{ingress=\"i\",namespace=\"ns\",status_class=\"5xx\",upstream_status_class=\"none\"}"
        ),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_get_no_body() {
    let live = origin().await;
    let manifests =
        [backend("ns", "live", &[live.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "live")])]
            .concat();
    let h = Harness::start(&manifests).await;
    let resp = h.client.head(h.url("/")).header("host", "nobody.example").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.bytes().await.unwrap().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_rejected() {
    let live = origin().await;
    let manifests =
        [backend("ns", "live", &[live.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "live")])]
            .concat();
    let h = Harness::start_with(&manifests, |c| {
        c.proxy.max_header_bytes = 8 * 1024;
        c.proxy.max_headers = 20;
    })
    .await;
    // Too many headers.
    let mut req = h.client.get(h.url("/")).header("host", "h.example");
    for i in 0..30 {
        req = req.header(format!("x-h{i}"), "v");
    }
    assert_eq!(req.send().await.unwrap().status(), 431);
    // One huge header.
    let resp = h
        .client
        .get(h.url("/"))
        .header("host", "h.example")
        .header("x-big", "a".repeat(32 * 1024))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect(), "connection closed on an oversized head: {e:?}"),
    }
    assert_eq!(live.hits(), 0, "nothing oversized reached the origin");
    assert_eq!(h.status("h.example", "/").await, 200, "normal requests still served");
    h.shutdown().await;
}
