//! The error cache: rules §B–C and §J with a manual clock (no sleeps for TTLs), coalescing,
//! byte bound, invalidation, readiness flush, credentials, poisoning, purge.

use std::sync::Arc;
use std::time::Duration;

use erratum::proxy::cache::ManualClock;
use reqwest::Method;

use crate::support::*;

/// A shop whose namespace has an Enforce policy with `spec` (so its routes are cached).
async fn cached_shop(spec: &str) -> (Harness, erratum::origin::Origin, Arc<ManualClock>) {
    let o = origin().await;
    let clock = Arc::new(ManualClock::default());
    let c = clock.clone();
    let h = Harness::start_with(&(storefront(o.addr) + &policy("shop", "p", spec)), move |cfg| cfg.clock = c)
        .await;
    (h, o, clock)
}

fn x_cache(r: &reqwest::Response) -> String {
    r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_9_an_always_cached_404_is_served_from_the_cache_for_its_ttl() {
    let (h, o, clock) = cached_shop("errorResponses: []\n").await;
    let first = h.get("shop.example", "/missing/a").await;
    assert_eq!(first.status(), 404);
    assert_eq!(x_cache(&first), "Error from erratum");
    let hit = h.get("shop.example", "/missing/a").await;
    assert_eq!(hit.status(), 404);
    assert_eq!(x_cache(&hit), "ErrorHit from erratum");
    assert_eq!(hit.headers()["age"], "0");
    assert_eq!(hit.text().await.unwrap(), "origin: not found\n", "the origin's error, as sent");
    assert_eq!(o.hits(), 1);

    clock.advance(Duration::from_secs(9));
    let hit = h.get("shop.example", "/missing/a").await;
    assert_eq!(hit.headers()["age"], "9");
    assert_eq!(o.hits(), 1, "still within the 10 s default (rule 7)");

    // Rule 20: after the TTL the next request goes to the origin and starts a new TTL.
    clock.advance(Duration::from_secs(2));
    assert_eq!(x_cache(&h.get("shop.example", "/missing/a").await), "Error from erratum");
    assert_eq!(o.hits(), 2);
    // Rule 14: the entry belongs to the requested URL; another URL is another entry.
    h.get("shop.example", "/missing/b").await;
    assert_eq!(o.hits(), 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_10_conditional_codes_are_cached_only_with_max_age() {
    let (h, o, _clock) = cached_shop("errorResponses: []\n").await;
    for _ in 0..2 {
        assert_eq!(h.get("shop.example", "/status/403").await.status(), 403);
    }
    assert_eq!(o.hits(), 2, "no Cache-Control: every request reaches the origin");
    for _ in 0..2 {
        h.get("shop.example", "/status/403?set-header=cache-control:max-age=60").await;
    }
    assert_eq!(o.hits(), 3, "with max-age: cached");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_11_a_416_is_never_cached() {
    let (h, o, _clock) =
        cached_shop("errorResponses:\n- {codes: ['416'], errorCachingMinTTLSeconds: 600}\n").await;
    for _ in 0..3 {
        assert_eq!(
            h.get("shop.example", "/status/416?set-header=cache-control:max-age=600").await.status(),
            416
        );
    }
    assert_eq!(o.hits(), 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_12_only_get_creates_entries_and_head_shares_them() {
    let (h, o, _clock) = cached_shop("errorResponses: []\n").await;
    for _ in 0..2 {
        assert_eq!(h.send(Method::POST, "shop.example", "/missing/p", None).await.status(), 404);
    }
    assert_eq!(o.hits(), 2, "POST errors are not cached");
    h.send(Method::HEAD, "shop.example", "/missing/h", None).await;
    h.send(Method::HEAD, "shop.example", "/missing/h", None).await;
    assert_eq!(o.hits(), 4, "a HEAD response has no body to store");
    h.get("shop.example", "/missing/h").await;
    let head = h.send(Method::HEAD, "shop.example", "/missing/h", None).await;
    assert_eq!(x_cache(&head), "ErrorHit from erratum", "HEAD reads GET's entry");
    assert_eq!(head.status(), 404);
    assert!(head.bytes().await.unwrap().is_empty());
    assert_eq!(o.hits(), 5);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_16_the_origins_longer_max_age_wins_capped_by_the_rule() {
    let (h, o, clock) =
        cached_shop("errorResponses:\n- {codes: ['503'], errorCachingMinTTLSeconds: 10, errorCachingMaxTTLSeconds: 120}\n")
            .await;
    h.get("shop.example", "/status/503?set-header=cache-control:max-age=300").await;
    clock.advance(Duration::from_secs(100));
    h.get("shop.example", "/status/503?set-header=cache-control:max-age=300").await;
    assert_eq!(o.hits(), 1, "max(10, 300) capped at 120: still fresh at 100 s");
    clock.advance(Duration::from_secs(21));
    h.get("shop.example", "/status/503?set-header=cache-control:max-age=300").await;
    assert_eq!(o.hits(), 2, "expired at 120 s, not 300 s");

    // Rule 19: the viewer sees the origin's Cache-Control, unchanged.
    let hit = h.get("shop.example", "/status/503?set-header=cache-control:max-age=300").await;
    assert_eq!(hit.headers()["cache-control"], "max-age=300");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_18_a_zero_min_ttl_without_headers_caches_nothing() {
    let (h, o, _clock) = cached_shop("defaultErrorCachingMinTTLSeconds: 0\nerrorResponses: []\n").await;
    h.get("shop.example", "/missing/z").await;
    h.get("shop.example", "/missing/z").await;
    assert_eq!(o.hits(), 2);
    h.get("shop.example", "/missing/z?set-header=cache-control:max-age=7").await;
    h.get("shop.example", "/missing/z?set-header=cache-control:max-age=7").await;
    assert_eq!(o.hits(), 3, "with max-age=7 the TTL is 7");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_41_erratum_made_502_and_504_are_cached_like_origin_5xx() {
    let clock = Arc::new(ManualClock::default());
    let c = clock.clone();
    let manifests = [
        backend("shop", "gone", &[closed_port()]),
        ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "gone")]),
        policy("shop", "p", "errorResponses:\n- codes: ['502']\n  page: {inline: 'down ({{status}})', contentType: text/plain}\n"),
    ]
    .concat();
    let h = Harness::start_with(&manifests, move |cfg| cfg.clock = c).await;
    let first = h.get("shop.example", "/x").await;
    assert_eq!(first.status(), 502);
    assert_eq!(x_cache(&first), "Error from erratum");
    let hit = h.get("shop.example", "/x").await;
    assert_eq!(x_cache(&hit), "ErrorHit from erratum");
    assert_eq!(hit.text().await.unwrap(), "down (502)", "the page is applied when serving the hit");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_proxy_errors_total{reason=\"upstream_connect\"} 1"),
        "one connect attempt\n{metrics}"
    );
    h.shutdown().await;
}

/// An origin that promises 100 bytes and sends 5, then closes: an incomplete response.
async fn truncating_origin() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\nshort")
                    .await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_15_an_incomplete_response_is_never_cached() {
    let (addr, hits) = truncating_origin().await;
    let manifests = [
        backend("shop", "web", &[addr]),
        ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "web")]),
        policy("shop", "p", "errorResponses: []\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    for _ in 0..2 {
        assert_eq!(
            h.get("shop.example", "/").await.status(),
            502,
            "a truncated error is an upstream failure"
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2, "nothing was cached");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_an_expired_entry_sends_one_origin_request() {
    let (h, o, clock) = cached_shop("errorResponses: []\n").await;
    let h = Arc::new(h);
    let path = "/status/503?delay_ms=300";
    h.get("shop.example", path).await;
    assert_eq!(o.hits(), 1);
    clock.advance(Duration::from_secs(11));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.get("shop.example", path).await.status().as_u16() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    assert_eq!(o.hits(), 2, "100 concurrent requests for an expired error entry: one origin request");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_error_cache_coalesced_total{namespace=\"shop\",policy=\"p\"} 99"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_traffic_is_never_coalesced() {
    let (h, o, _clock) = cached_shop("errorResponses: []\n").await;
    let h = Arc::new(h);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.get("shop.example", "/slow/300").await.status().as_u16() }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(o.hits(), 20, "a key that never errored is not collapsed");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "requests ran in parallel, not one after another"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byte_bound_holds_under_a_flood_of_urls() {
    let o = origin().await;
    let max = 64 * 1024;
    let h = Harness::start_with(
        &(storefront(o.addr) + &policy("shop", "p", "errorResponses: []\n")),
        move |cfg| cfg.error_cache_max_bytes = max,
    )
    .await;
    for i in 0..1500 {
        h.get("shop.example", &format!("/missing/{i}?pad=200")).await;
    }
    let stats: serde_json::Value =
        h.client.get(h.admin_url("/cache")).send().await.unwrap().json().await.unwrap();
    assert!(stats["bytes"].as_u64().unwrap() <= max, "{stats}");
    assert!(stats["entries"].as_u64().unwrap() > 10, "{stats}");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_error_cache_evictions_total{namespace=\"shop\",policy=\"p\"}"),
        "{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_policy_invalidates_its_entries() {
    let (h, o, _clock) = cached_shop("errorResponses: []\n").await;
    h.get("shop.example", "/missing/e").await;
    h.get("shop.example", "/missing/e").await;
    assert_eq!(o.hits(), 1);
    h.write_and_wait(
        "main.yaml",
        &(storefront(o.addr)
            + &policy("shop", "p", "defaultErrorCachingMinTTLSeconds: 30\nerrorResponses: []\n")),
    )
    .await;
    h.get("shop.example", "/missing/e").await;
    assert_eq!(o.hits(), 2, "a new policy generation is a new key");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_47_a_page_change_needs_no_purge() {
    let o = origin().await;
    let pages = |text: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: pages, namespace: shop}}\ndata: {{'503': '{text}'}}\n---\n"
        )
    };
    let spec = "errorResponses:\n- codes: ['503']\n  page: {configMapRef: {name: pages, key: '503'}, contentType: text/plain}\n";
    let h = Harness::start(&(storefront(o.addr) + &pages("first") + &policy("shop", "p", spec))).await;
    assert_eq!(h.get("shop.example", "/unavailable").await.text().await.unwrap(), "first");
    h.write_and_wait("main.yaml", &(storefront(o.addr) + &pages("second") + &policy("shop", "p", spec)))
        .await;
    let hit = h.get("shop.example", "/unavailable").await;
    assert_eq!(x_cache(&hit), "ErrorHit from erratum", "the stored origin error is still valid");
    assert_eq!(hit.text().await.unwrap(), "second", "the new page is applied to the cached error");
    assert_eq!(o.hits(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_regained_flushes_the_services_5xx() {
    let o = origin().await;
    let with = |ready: bool| {
        [
            backend_with_readiness("shop", "web", &[(o.addr, ready)]),
            ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "web")]),
            policy("shop", "p", "errorResponses: []\n"),
        ]
        .concat()
    };
    let h = Harness::start(&with(true)).await;
    h.get("shop.example", "/unavailable").await;
    assert_eq!(x_cache(&h.get("shop.example", "/unavailable").await), "ErrorHit from erratum");
    h.write_and_wait("main.yaml", &with(false)).await;
    assert_eq!(
        x_cache(&h.get("shop.example", "/unavailable").await),
        "ErrorHit from erratum",
        "no endpoint: keep serving the cached error"
    );
    h.write_and_wait("main.yaml", &with(true)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats: serde_json::Value =
            h.client.get(h.admin_url("/cache")).send().await.unwrap().json().await.unwrap();
        if stats["entries"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the 503 entry was not flushed: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(x_cache(&h.get("shop.example", "/unavailable").await), "Error from erratum");
    assert_eq!(o.hits(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_credentials_bypass_unless_the_rule_opts_in() {
    let (h, o, _clock) = cached_shop("errorResponses: []\n").await;
    for header in ["authorization", "cookie"] {
        for _ in 0..2 {
            let r = h
                .client
                .get(h.url("/missing/c"))
                .header("host", "shop.example")
                .header(header, "x")
                .send()
                .await
                .unwrap();
            assert_eq!(x_cache(&r), "");
        }
    }
    assert_eq!(o.hits(), 4);
    h.shutdown().await;

    let (h, o, _clock) =
        cached_shop("errorResponses:\n- {codes: ['404'], cacheRequestsWithCredentials: true}\n").await;
    for _ in 0..2 {
        h.client
            .get(h.url("/missing/c"))
            .header("host", "shop.example")
            .header("cookie", "x")
            .send()
            .await
            .unwrap();
    }
    assert_eq!(o.hits(), 1, "opted in");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_headers_cannot_poison_an_entry() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin().await;
    let manifests = [
        backend("shop", "web", &[o.addr]),
        ingress(
            "shop",
            "storefront",
            &[("shop.example", "/", "Prefix", "web"), ("other.example", "/", "Prefix", "web")],
        ),
        policy("shop", "p", "errorResponses: []\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    // The attacker's request: a forged X-Forwarded-Host and X-Original-URL.
    let r = h
        .client
        .get(h.url("/echo?status=404"))
        .header("host", "shop.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-original-url", "/admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(!body.contains("evil.example"), "erratum sets X-Forwarded-Host itself: {body}");
    // A victim's request hits the same entry, which holds nothing the attacker chose.
    let victim = h.get("shop.example", "/echo?status=404").await;
    assert_eq!(x_cache(&victim), "ErrorHit from erratum");
    assert!(!victim.text().await.unwrap().contains("evil"));
    // Another Host, a Host with a port, and an absolute-form target are other keys or the
    // same normalised one — never the attacker's content.
    let other = h.get("other.example", "/echo?status=404").await;
    assert_eq!(x_cache(&other), "Error from erratum", "another host is another entry");
    let mut s = tokio::net::TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(b"GET http://other.example/echo?status=404 HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.contains("ErrorHit from erratum"), "the absolute-form authority is the host: {resp}");
    assert!(resp.contains("\"host\":\"other.example\""), "{resp}");
    assert_eq!(o.hits(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_api_removes_by_host_prefix_and_policy() {
    let (h, o, _clock) = cached_shop("errorResponses: []\n").await;
    for p in ["/missing/a", "/missing/b", "/boom"] {
        h.get("shop.example", p).await;
    }
    let stats: serde_json::Value =
        h.client.get(h.admin_url("/cache")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["entries"], 3, "{stats}");
    let purge = |q: &str| h.client.delete(h.admin_url(&format!("/cache?{q}"))).send();
    let r: serde_json::Value = purge("prefix=/missing/").await.unwrap().json().await.unwrap();
    assert_eq!(r["purged"], 2);
    let r: serde_json::Value = purge("policy=shop/p&host=shop.example").await.unwrap().json().await.unwrap();
    assert_eq!(r["purged"], 1);
    assert_eq!(purge("").await.unwrap().status(), 400, "a filter is required");
    assert_eq!(purge("policy=nonsense").await.unwrap().status(), 400);
    h.get("shop.example", "/boom").await;
    assert_eq!(o.hits(), 4, "purged entries are fetched again");
    let stats: serde_json::Value =
        h.client.get(h.admin_url("/cache")).send().await.unwrap().json().await.unwrap();
    assert!(stats["hit_ratio"].is_number());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_error_cache_purged_total{namespace=\"shop\",policy=\"p\"} 3"),
        "{metrics}"
    );
    h.shutdown().await;
}
