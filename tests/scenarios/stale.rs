//! Serve stale on error (`spec.staleIfError`, issue 21): the last good copy of a GET answers
//! when the backend fails — a listed 5xx, a timeout, a reset, a refused connection, no ready
//! endpoint — with `Age` and `X-Cache: StaleHit from erratum`, and not past its allowed staleness; never
//! for POST, `no-store`, `Set-Cookie`, credentials or another `Vary` value; 304 when the
//! client's validators match the copy. Time moves on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use erratum::proxy::cache::ManualClock;

use crate::support::*;

/// The shop with `examples/policies/stale-if-error.yaml` (an hour of staleness), a 1 s read
/// timeout, and a manual clock.
async fn stale_shop() -> (Harness, erratum::origin::Origin, Arc<ManualClock>) {
    let o = origin().await;
    let clock = Arc::new(ManualClock::default());
    let c = clock.clone();
    let ingress = annotated_ingress("storefront", "shop.example", "web", &[("proxy-read-timeout", "1")])
        .replace("namespace: ns", "namespace: shop");
    let manifests = [ingress, example("policies/stale-if-error.yaml")].concat();
    let h = Harness::start_with(&manifests, move |cfg| cfg.clock = c).await;
    // The Service in a file of its own, which a test rewrites.
    h.write_and_wait("web.yaml", &backend("shop", "web", &[o.addr])).await;
    (h, o, clock)
}

async fn get(h: &Harness, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut req = h.client.get(h.url(path)).header("host", "shop.example");
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    req.send().await.unwrap()
}

/// Request fields of a case.
type Fields = &'static [(&'static str, &'static str)];

const STALE: &str = "StaleHit from erratum";

fn x_cache(r: &reqwest::Response) -> &str {
    r.headers().get("x-cache").map_or("", |v| v.to_str().unwrap())
}

fn age(r: &reqwest::Response) -> u64 {
    r.headers()["age"].to_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_copy_answers_each_kind_of_failure_until_its_limit() {
    let (h, o, clock) = stale_shop().await;
    let paths = ["/a", "/b", "/c", "/d", "/e", "/f?x=1"];
    let mut good = Vec::new();
    for p in paths {
        let r = get(&h, p, &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(x_cache(&r), "", "a good answer passes as it is");
        good.push(r.text().await.unwrap());
    }
    clock.advance(Duration::from_secs(30));

    // A listed status (503, then 500): the copy, with its age; the origin was asked.
    o.fail_with(Some(503));
    let hits = o.hits();
    let r = get(&h, "/a", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&r), STALE);
    assert!((30..=31).contains(&age(&r)), "Age counts from the copy: {:?}", r.headers()["age"]);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8", "the origin's fields");
    assert!(r.headers().get("date").is_some());
    assert_eq!(r.text().await.unwrap(), good[0]);
    assert_eq!(o.hits(), hits + 1, "the backend is asked first, every time");
    o.fail_with(Some(500));
    assert_eq!(x_cache(&get(&h, "/a", &[]).await), STALE);
    // HEAD reads the GET's copy.
    let r = h.client.head(h.url("/a")).header("host", "shop.example").send().await.unwrap();
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, STALE));
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    // A status the policy does not list passes as it is (and is cached as the error cache's
    // rules say: 10 s for a 501, long gone when /e is asked again below).
    o.fail_with(Some(501));
    let r = get(&h, "/e", &[]).await;
    assert_eq!(r.status(), 501);
    assert_ne!(x_cache(&r), STALE);

    // A timeout (the route's 1 s read timeout).
    o.fail_with(None);
    o.delay(Duration::from_millis(1500));
    let r = get(&h, "/b", &[]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, STALE));
    assert_eq!(r.text().await.unwrap(), good[1]);
    o.delay(Duration::ZERO);

    // A reset: the connection closes with no answer.
    o.reset_all(true);
    let r = get(&h, "/a", &[]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, STALE));
    o.reset_all(false);

    // The query is part of the key.
    o.fail_with(Some(502));
    assert_eq!(get(&h, "/f?x=2", &[]).await.status(), 502, "never fetched: no copy");
    assert_eq!(x_cache(&get(&h, "/f?x=1", &[]).await), STALE);
    o.fail_with(None);

    // No ready endpoint.
    h.write_and_wait("web.yaml", &backend_with_readiness("shop", "web", &[(o.addr, false)])).await;
    let r = get(&h, "/c", &[]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, STALE));
    assert_eq!(r.text().await.unwrap(), good[2]);

    // A refused connection (the origin is gone).
    h.write_and_wait("web.yaml", &backend("shop", "web", &[o.addr])).await;
    assert_eq!(get(&h, "/d", &[]).await.status(), 200);
    o.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = get(&h, "/d", &[]).await;
    assert_eq!((r.status().as_u16(), x_cache(&r)), (200, STALE));

    // Not past its limit: an hour past its freshness (none: no Cache-Control) and no longer.
    clock.advance(Duration::from_secs(3600 - 30 - 1));
    let r = get(&h, "/e", &[]).await;
    assert_eq!((r.status().as_u16(), age(&r)), (200, 3599));
    clock.advance(Duration::from_secs(2));
    let r = get(&h, "/e", &[]).await;
    assert_eq!(r.status(), 502, "past the hour: the failure as without the policy");
    assert_ne!(x_cache(&r), STALE);

    let metrics = h.metrics().await;
    let count = |outcome: &str| -> u64 {
        let needle = format!(
            "erratum_stale_responses_total{{namespace=\"shop\",outcome=\"{outcome}\",policy=\"stale-if-error\"}} "
        );
        metrics.lines().find_map(|l| l.strip_prefix(&needle)).map_or(0, |v| v.parse().unwrap())
    };
    assert_eq!(count("served"), 9, "{metrics}");
    assert_eq!(count("expired"), 1);
    assert_eq!(count("missing"), 1);
    // The failures still count as failures.
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"upstream_timeout\"} 1"), "{metrics}");
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"no_endpoints\"} 1"), "{metrics}");
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"upstream_reset\"} 1"), "{metrics}");
    assert!(metrics.contains("upstream_status_class=\"5xx\""));
    assert!(metrics.lines().any(|l| l.starts_with("erratum_stale_cache_entries ")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_a_shared_cache_may_reuse_is_served_stale() {
    let (h, o, _clock) = stale_shop().await;
    // Asked once while the origin is well, then again while it fails with 503.
    // (path, the first request's fields, the second's, served stale)
    let cases: [(&str, Fields, Fields, bool); 7] = [
        ("/plain", &[], &[], true),
        ("/nostore?set-header=cache-control:no-store", &[], &[], false),
        ("/private?set-header=cache-control:private,max-age=60", &[], &[], false),
        ("/cookie?set-header=set-cookie:session=1", &[], &[], false),
        ("/auth", &[("authorization", "Basic eDp5")], &[("authorization", "Basic eDp5")], false),
        ("/public?set-header=cache-control:public,max-age=60", &[("authorization", "Basic eDp5")], &[], true),
        ("/revalidate?set-header=cache-control:max-age=0,must-revalidate", &[], &[], false),
    ];
    for (path, first, _, _) in &cases {
        assert_eq!(get(&h, path, first).await.status(), 200, "{path}");
    }
    o.fail_with(Some(503));
    for (path, _, then, served) in &cases {
        let r = get(&h, path, then).await;
        let stale = x_cache(&r) == STALE;
        assert_eq!((r.status().as_u16(), stale), if *served { (200, true) } else { (503, false) }, "{path}");
    }

    // Vary: a copy per value; another value has none.
    o.fail_with(None);
    let vary = "/vary?set-header=vary:accept-language";
    let en = get(&h, vary, &[("accept-language", "en")]).await.text().await.unwrap();
    let fr = get(&h, vary, &[("accept-language", "fr")]).await.text().await.unwrap();
    o.fail_with(Some(503));
    for (lang, body) in [("en", &en), ("fr", &fr)] {
        let r = get(&h, vary, &[("accept-language", lang)]).await;
        assert_eq!(x_cache(&r), STALE, "{lang}");
        assert_eq!(&r.text().await.unwrap(), body);
    }
    assert_eq!(get(&h, vary, &[("accept-language", "de")]).await.status(), 503, "another Vary value");
    assert_eq!(get(&h, vary, &[]).await.status(), 503, "no value is another value");
    o.fail_with(None);
    assert_eq!(get(&h, "/star?set-header=vary:*", &[]).await.status(), 200);

    // POST: never answered with a copy; its success drops the URL's copies (RFC 9111 §4.4).
    let post =
        |path: &'static str| h.client.post(h.url(path)).header("host", "shop.example").body("x").send();
    assert_eq!(get(&h, "/cart", &[]).await.status(), 200);
    o.fail_with(Some(503));
    assert_eq!(get(&h, "/star?set-header=vary:*", &[]).await.status(), 503, "Vary: * is never kept");
    assert_eq!(post("/cart").await.unwrap().status(), 503, "POST gets the failure");
    assert_eq!(x_cache(&get(&h, "/cart", &[]).await), STALE);
    o.fail_with(None);
    assert_eq!(post("/cart").await.unwrap().status(), 200);
    o.fail_with(Some(503));
    assert_eq!(get(&h, "/cart", &[]).await.status(), 503, "the POST's success dropped the copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_get_a_304_from_a_stale_copy_and_the_origins_stale_if_error_wins() {
    let (h, o, clock) = stale_shop().await;
    let doc = "/doc?etag=v7&set-header=last-modified:Sun,%2006%20Dec%202026%2010:00:00%20GMT";
    let r = get(&h, doc, &[]).await;
    assert_eq!(r.headers()["etag"], "\"v7\"");
    let short = "/short?set-header=cache-control:max-age=10,stale-if-error=5";
    assert_eq!(get(&h, short, &[]).await.status(), 200);
    o.fail_with(Some(503));

    let r = get(&h, doc, &[("if-none-match", "\"v7\"")]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "\"v7\"");
    assert_eq!(x_cache(&r), STALE);
    assert!(r.headers().get("age").is_some());
    assert!(r.headers().get("content-type").is_none(), "a 304 carries no representation metadata");
    let r = get(&h, doc, &[("if-none-match", "\"v6\"")]).await;
    assert_eq!(r.status(), 200, "another version: the whole copy");
    let r = get(&h, doc, &[("if-modified-since", "Sun, 06 Dec 2026 10:00:00 GMT")]).await;
    assert_eq!(r.status(), 304);
    let r = get(&h, doc, &[("if-modified-since", "Sat, 05 Dec 2026 10:00:00 GMT")]).await;
    assert_eq!(r.status(), 200);
    // A real client: curl's conditional GET.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "host: shop.example",
            "-H",
            "if-none-match: W/\"v7\"",
        ])
        .arg(h.url(doc))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "304", "weak comparison");

    // The origin's stale-if-error=5 (past max-age=10) wins over the policy's hour.
    clock.advance(Duration::from_secs(15));
    assert_eq!(x_cache(&get(&h, short, &[]).await), STALE);
    clock.advance(Duration::from_secs(1));
    assert_eq!(get(&h, short, &[]).await.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_the_policy_keep_nothing() {
    let o = origin().await;
    let other =
        policy("shop", "other", "staleIfError: {maxStaleSeconds: 60}\ntargetRefs: [{name: elsewhere}]");
    let h = Harness::start(&[storefront(o.addr), other].concat()).await;
    assert_eq!(get(&h, "/a", &[]).await.status(), 200);
    o.fail_with(Some(503));
    assert_eq!(get(&h, "/a", &[]).await.status(), 503);
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_stale_copies_stored_total 0"), "nothing kept without the policy");
    assert!(!metrics.contains("erratum_stale_responses_total{"), "nothing looked up");
}
