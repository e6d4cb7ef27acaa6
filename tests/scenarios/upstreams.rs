//! Upstreams that fail well (issue 19): retries on another endpoint, the retry budget,
//! passive outlier ejection, power-of-two-choices balancing and per-Ingress timeouts, with
//! ingress-nginx's annotations. Real origins on loopback addresses that refuse, reset, answer
//! 503 or answer late on demand; reqwest and raw sockets as clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use erratum::origin::Origin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// `n` loopback addresses (127.0.0.1, .2, …) on one free port: an EndpointSlice names one
/// port for all its endpoints. Nothing listens on them yet.
fn endpoints(n: u8) -> Vec<SocketAddr> {
    let port = closed_port().port();
    (1..=n).map(|i| SocketAddr::from(([127, 0, 0, i], port))).collect()
}

async fn origin_at(addr: SocketAddr) -> Origin {
    Origin::start(addr).await.expect("origin starts")
}

/// Service `a` on `addrs` and an Ingress per `(host, annotations)` routing `/` to it.
fn manifests(addrs: &[SocketAddr], ingresses: &[(&str, &[(&str, &str)])]) -> String {
    let mut out = backend("ns", "a", addrs);
    for (i, (host, annotations)) in ingresses.iter().enumerate() {
        out.push_str(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: ing{i}\n  namespace: ns\n  annotations:\n    erratum.dev/test: \"true\"\n"
        ));
        for (k, v) in *annotations {
            out.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
        }
        out.push_str(&format!(
            "spec:\n  ingressClassName: erratum\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]}}\n---\n"
        ));
    }
    out
}

/// The sum of a metric's samples whose line starts with `prefix` (name and labels).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn outliers(h: &Harness) -> Vec<serde_json::Value> {
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    table["outliers"].as_array().cloned().unwrap_or_default()
}

/// `n` GETs of `path` on `host`, `parallel` at a time; their statuses.
async fn burst(
    h: &Arc<Harness>,
    host: &'static str,
    path: &'static str,
    n: usize,
    parallel: usize,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n.div_ceil(parallel) {
        let round: Vec<_> = (0..parallel)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.status(host, path).await })
            })
            .collect();
        for r in round {
            statuses.push(r.await.unwrap());
        }
    }
    statuses.truncate(n);
    statuses
}

fn short_ejections(config: &mut erratum::runtime::RunConfig) {
    config.proxy.balance.base_ejection = Duration::from_millis(800);
}

/// One endpoint of three refuses connections: no client sees an error, the dead endpoint is
/// ejected (and shown at `/table`), and it takes traffic again once it listens.
#[tokio::test]
async fn a_dead_endpoint_is_retried_ejected_and_comes_back() {
    let addrs = endpoints(3);
    let (a, b) = (origin_at(addrs[0]).await, origin_at(addrs[1]).await);
    let h = Arc::new(Harness::start_with(&manifests(&addrs, &[("app.test", &[])]), short_ejections).await);

    let statuses = burst(&h, "app.test", "/", 60, 6).await;
    assert!(statuses.iter().all(|&s| s == 200), "every request answered: {statuses:?}");
    let m = h.metrics().await;
    let retries = metric(&m, "erratum_upstream_retries_total{reason=\"connect\"}");
    assert!((1.0..=12.0).contains(&retries), "refused connects retried elsewhere: {retries}");
    assert_eq!(metric(&m, "erratum_upstream_ejections_total"), 1.0);
    assert_eq!(metric(&m, "erratum_upstream_ejected_endpoints"), 1.0);
    let out = outliers(&h).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["endpoint"], addrs[2].to_string());
    assert_eq!(out[0]["ejected"], true);
    assert_eq!(a.hits() + b.hits(), 60, "no request reached an endpoint twice");

    // It recovers: after the ejection it gets traffic again, and its record is cleared.
    let c = origin_at(addrs[2]).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let statuses = burst(&h, "app.test", "/", 30, 3).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(c.hits() >= 5, "the returned endpoint takes its share: {}", c.hits());
    assert!(outliers(&h).await.is_empty(), "a success clears the record");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "erratum_upstream_ejection_returns_total"), 1.0);
    assert_eq!(metric(&m, "erratum_upstream_ejected_endpoints"), 0.0);
    Arc::into_inner(h).unwrap().shutdown().await;
}

/// A request that reached an endpoint is repeated only when it may be: an idempotent GET
/// goes to the other endpoint after a reset, a POST never; a refused connect sent nothing,
/// so a POST with a body goes elsewhere whole.
#[tokio::test]
async fn a_request_that_was_sent_is_repeated_only_if_idempotent() {
    let addrs = endpoints(2);
    let (a, b) = (origin_at(addrs[0]).await, origin_at(addrs[1]).await);
    let h = Harness::start(&manifests(&addrs, &[("app.test", &[])])).await;

    assert_eq!(h.status("app.test", "/reset").await, 502);
    assert_eq!((a.hits(), b.hits()), (1, 1), "the GET went to each endpoint once");
    let m = h.metrics().await;
    assert_eq!(metric(&m, "erratum_upstream_retries_total{reason=\"reset\"}"), 1.0);
    assert_eq!(metric(&m, "erratum_upstream_retries_denied_total{reason=\"no_endpoint\"}"), 1.0);

    for body in ["", "a body that streams upstream"] {
        let before = a.hits() + b.hits();
        let resp = h.client.post(h.url("/reset")).header("host", "app.test").body(body).send().await.unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(a.hits() + b.hits(), before + 1, "a POST ({} body) is sent once", body.len());
    }

    // One endpoint refuses: POSTs with bodies all arrive whole at the other.
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = "x".repeat(100_000);
    for _ in 0..6 {
        let resp = h
            .client
            .post(h.url("/upload"))
            .header("host", "app.test")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "received 100000 bytes\n");
    }
    h.shutdown().await;
}

/// Every endpoint refuses: each request fails, and retries stay within the budget (a share
/// of requests plus a few per second) instead of tripling the load.
#[tokio::test]
async fn the_retry_budget_holds_under_a_total_outage() {
    let addrs = endpoints(3);
    let h = Arc::new(Harness::start(&manifests(&addrs, &[("app.test", &[])])).await);
    let started = Instant::now();
    let statuses = burst(&h, "app.test", "/", 300, 10).await;
    let seconds = started.elapsed().as_secs_f64().ceil();
    assert!(statuses.iter().all(|&s| s == 502), "{statuses:?}");
    let m = h.metrics().await;
    let retries = metric(&m, "erratum_upstream_retries_total");
    // 20 % of 300, the 100 saved up, 10 a second: far below the 600 of unbudgeted retries.
    let bound = 300.0 * 0.2 + 100.0 + 10.0 * (seconds + 1.0);
    assert!(retries <= bound, "{retries} retries, bound {bound}");
    assert!(metric(&m, "erratum_upstream_retries_denied_total{reason=\"budget\"}") > 0.0);
    let ejected = outliers(&h).await.iter().filter(|o| o["ejected"] == true).count();
    assert!(ejected <= 1, "never more than half of the endpoints ejected: {ejected}");
    Arc::into_inner(h).unwrap().shutdown().await;
}

/// `proxy-next-upstream: ... http_503` retries an idempotent request answered 503 on another
/// endpoint; without it the 503 passes through; a POST is never repeated for a status.
#[tokio::test]
async fn statuses_are_retried_only_where_the_ingress_asks() {
    let addrs = endpoints(2);
    let (a, _b) = (origin_at(addrs[0]).await, origin_at(addrs[1]).await);
    a.fail_with(Some(503));
    let retrying: &[(&str, &str)] = &[("proxy-next-upstream", "error timeout http_503")];
    let h =
        Arc::new(Harness::start(&manifests(&addrs, &[("retry.test", retrying), ("plain.test", &[])])).await);
    let retried = burst(&h, "retry.test", "/", 20, 1).await;
    assert!(retried.iter().all(|&s| s == 200), "{retried:?}");
    let plain = burst(&h, "plain.test", "/", 20, 1).await;
    assert_eq!(plain.iter().filter(|&&s| s == 503).count(), 10, "round robin, no retry: {plain:?}");
    let m = h.metrics().await;
    // Each 503 of the retrying host was retried (the plain host's 10 hit `a` too).
    let retries = metric(&m, "erratum_upstream_retries_total{reason=\"http_503\"}");
    assert!(retries >= 10.0, "{retries}");
    assert_eq!(retries, (a.hits() - 10) as f64);
    let mut posts = Vec::new();
    for _ in 0..4 {
        let resp = h.client.post(h.url("/")).header("host", "retry.test").send().await.unwrap();
        posts.push(resp.status().as_u16());
    }
    assert_eq!(posts.iter().filter(|&&s| s == 503).count(), 2, "POSTs are not repeated: {posts:?}");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let edge = table["edge"].as_array().unwrap();
    let shown = edge.iter().find(|e| e["ingress"] == "ns/ing0").unwrap();
    assert_eq!(shown["upstream"]["nextUpstream"], serde_json::json!(["error", "timeout", "http_503"]));
    assert_eq!(shown["upstream"]["nextUpstreamTries"], 3);
    Arc::into_inner(h).unwrap().shutdown().await;
}

/// With `load-balance: ewma` (erratum: power of two choices on requests in flight) a slow
/// endpoint gets few requests; round robin gives it half. The difference from ingress-nginx
/// is reported.
#[tokio::test]
async fn power_of_two_choices_avoids_a_slow_endpoint() {
    let addrs = endpoints(2);
    let (slow, fast) = (origin_at(addrs[0]).await, origin_at(addrs[1]).await);
    // Far slower than a fast answer on a busy machine (150 ms left it at "slow 16, fast 64"
    // once while the whole suite ran on two cores).
    slow.delay(Duration::from_millis(400));
    let h = Arc::new(
        Harness::start(&manifests(
            &addrs,
            &[("p2c.test", &[("load-balance", "ewma")]), ("rr.test", &[("load-balance", "round_robin")])],
        ))
        .await,
    );
    // Eight clients, each sending its next request when its last one is answered.
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    assert_eq!(h.status("p2c.test", "/").await, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let (s, f) = (slow.hits(), fast.hits());
    assert!(s * 4 < f, "p2c sends most requests to the fast endpoint: slow {s}, fast {f}");
    let statuses = burst(&h, "rr.test", "/", 40, 8).await;
    assert!(statuses.iter().all(|&s| s == 200));
    assert_eq!(slow.hits() - s, 20, "round robin: half each");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let problems = table["problems"].to_string();
    assert!(problems.contains("power of two choices"), "{problems}");
    Arc::into_inner(h).unwrap().shutdown().await;
}

/// `proxy-read-timeout` and `proxy-send-timeout` bound one Ingress's exchanges below the
/// flags; a value that is not a number of seconds is reported and the flag applies.
#[tokio::test]
async fn per_ingress_timeouts_override_the_flags() {
    let addrs = endpoints(1);
    let _o = origin_at(addrs[0]).await;
    let quick: &[(&str, &str)] = &[("proxy-read-timeout", "2"), ("proxy-send-timeout", "1")];
    let h = Harness::start(&manifests(
        &addrs,
        &[("quick.test", quick), ("bad.test", &[("proxy-read-timeout", "10s")])],
    ))
    .await;

    let started = Instant::now();
    assert_eq!(h.status("quick.test", "/slow/6000").await, 504);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(3500), "the Ingress's 2 s, not the flag's 60 s: {took:?}");
    assert_eq!(h.status("bad.test", "/slow/1500").await, 200, "the flag applies");

    // A request body that stalls for longer than the send timeout is abandoned: 400.
    let mut s = tokio::net::TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: quick.test\r\nContent-Length: 10\r\n\r\nab").await.unwrap();
    let started = Instant::now();
    let mut out = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&out[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the send timeout, 1 s: {:?}",
        started.elapsed()
    );

    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let problems = table["problems"].to_string();
    assert!(
        problems.contains("proxy-read-timeout") && problems.contains("whole number of seconds"),
        "{problems}"
    );
    h.shutdown().await;
}
