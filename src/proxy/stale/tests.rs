use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use super::*;

fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn keeps(request: &[(&str, &str)], status: u16, response: &[(&str, &str)]) -> bool {
    let now = SystemTime::now();
    storable(&fields(request), StatusCode::from_u16(status).unwrap(), &fields(response), now).is_some()
}

#[test]
fn a_shared_cache_keeps_only_what_it_may_serve_to_others() {
    assert!(keeps(&[], 200, &[]));
    assert!(keeps(&[], 200, &[("cache-control", "max-age=60")]));
    assert!(!keeps(&[], 404, &[]), "errors are not good copies");
    assert!(!keeps(&[], 206, &[]), "a part is not the whole");
    for cc in [
        "no-store",
        "private",
        "private=\"x\", max-age=60",
        "no-cache",
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage=60",
    ] {
        assert!(!keeps(&[], 200, &[("cache-control", cc)]), "{cc}");
    }
    // RFC 5861: the origin's stale-if-error allows it whatever the other directives say,
    // except no-store and private.
    assert!(keeps(&[], 200, &[("cache-control", "s-maxage=60, must-revalidate, stale-if-error=30")]));
    assert!(!keeps(&[], 200, &[("cache-control", "no-store, stale-if-error=30")]));
    assert!(keeps(&[], 200, &[("cache-control", "no-cache=\"set-cookie2\"")]), "qualified no-cache");
    assert!(!keeps(&[], 200, &[("set-cookie", "s=1")]));
    assert!(!keeps(&[("cache-control", "no-store")], 200, &[]));
    assert!(!keeps(&[("authorization", "Basic eDp5")], 200, &[]));
    assert!(!keeps(&[("cookie", "s=1")], 200, &[]));
    assert!(keeps(&[("authorization", "Basic eDp5")], 200, &[("cache-control", "public, max-age=5")]));
    assert!(!keeps(&[], 200, &[("vary", "*")]));
    assert!(!keeps(&[], 200, &[("vary", "accept, *")]));
    assert!(keeps(&[], 200, &[("vary", "accept-encoding, accept")]));
    assert!(!keeps(&[], 200, &[("vary", "a, b, c, d, e, f, g, h, i")]), "too many to key by");
}

#[test]
fn freshness_and_age_follow_rfc_9111() {
    let now = SystemTime::now();
    let date = httpdate::fmt_http_date(now - Duration::from_secs(30));
    let f = storable(
        &HeaderMap::new(),
        StatusCode::OK,
        &fields(&[("cache-control", "max-age=100, stale-if-error=20"), ("date", &date), ("age", "5")]),
        now,
    )
    .unwrap();
    assert_eq!((f.lifetime, f.initial_age, f.origin_allows), (100, 30, Some(20)));
    let expires = httpdate::fmt_http_date(now + Duration::from_secs(50));
    let now_date = httpdate::fmt_http_date(now);
    let f = storable(
        &HeaderMap::new(),
        StatusCode::OK,
        &fields(&[("expires", &expires), ("date", &now_date)]),
        now,
    )
    .unwrap();
    assert!((49..=50).contains(&f.lifetime), "{}", f.lifetime);
    assert_eq!(f.initial_age, 0);
    let f =
        storable(&HeaderMap::new(), StatusCode::OK, &fields(&[("vary", "Accept-Encoding")]), now).unwrap();
    assert_eq!((f.lifetime, f.vary), (0, vec![header::ACCEPT_ENCODING]));
}

#[test]
fn validators_decide_a_304() {
    let copy = fields(&[("etag", "W/\"v1\""), ("last-modified", "Sun, 06 Dec 2026 10:00:00 GMT")]);
    assert!(not_modified(&fields(&[("if-none-match", "\"v1\"")]), &copy), "weak comparison");
    assert!(not_modified(&fields(&[("if-none-match", "\"v0\", W/\"v1\"")]), &copy));
    assert!(!not_modified(&fields(&[("if-none-match", "\"v2\"")]), &copy));
    assert!(not_modified(&fields(&[("if-none-match", "*")]), &copy));
    assert!(not_modified(&fields(&[("if-modified-since", "Sun, 06 Dec 2026 10:00:00 GMT")]), &copy));
    assert!(!not_modified(&fields(&[("if-modified-since", "Sun, 06 Dec 2026 09:59:59 GMT")]), &copy));
    // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    let both = fields(&[("if-none-match", "\"v2\""), ("if-modified-since", "Sun, 06 Dec 2026 10:00:00 GMT")]);
    assert!(!not_modified(&both, &copy));
    assert!(!not_modified(&fields(&[("if-none-match", "\"v1\"")]), &HeaderMap::new()), "no etag kept");
    assert!(!not_modified(&HeaderMap::new(), &copy));
}

fn copy(vary: &[(&str, Option<&str>)], body: &'static str) -> StaleCopy {
    StaleCopy {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        body: Bytes::from_static(body.as_bytes()),
        vary: vary
            .iter()
            .map(|(n, v)| {
                (HeaderName::from_bytes(n.as_bytes()).unwrap(), v.map(|v| HeaderValue::from_str(v).unwrap()))
            })
            .collect(),
        stored_at: Instant::now(),
        initial_age: 0,
        lifetime: 0,
        origin_allows: None,
        weight: 100,
    }
}

#[test]
fn copies_are_kept_per_vary_values_and_dropped_by_an_unsafe_request() {
    let registry = prometheus::Registry::new();
    let metrics = crate::metrics::ProxyMetrics::register(&registry).unwrap().stale;
    let store = StaleStore::new(1 << 20, Arc::new(crate::proxy::cache::SystemClock), metrics);
    let url = || Url { host: "a.example".into(), path_and_query: "/p?q=1".into() };
    let key = store.key("a.example", "/p", Some("q=1"));
    store.keep(key, url(), copy(&[("accept-encoding", Some("gzip"))], "gz"));
    store.keep(key, url(), copy(&[("accept-encoding", None)], "plain"));
    store.keep(key, url(), copy(&[("accept-encoding", Some("gzip"))], "gz2"));
    let find = |h: &[(&str, &str)]| {
        store.find(key, "a.example", "/p", Some("q=1"), &fields(h)).map(|c| c.body.clone())
    };
    assert_eq!(find(&[("accept-encoding", "gzip")]).as_deref(), Some(&b"gz2"[..]), "replaced");
    assert_eq!(find(&[]).as_deref(), Some(&b"plain"[..]));
    assert_eq!(find(&[("accept-encoding", "br")]), None, "another Vary value");
    // The URL is compared, not only its hash: another URL under the same key finds nothing.
    assert!(store.find(key, "a.example", "/p", Some("q=2"), &HeaderMap::new()).is_none());
    assert!(store.find(key, "b.example", "/p", Some("q=1"), &HeaderMap::new()).is_none());
    assert_ne!(key, store.key("a.example", "/p", Some("q=2")));
    assert_ne!(key, store.key("a.example", "/p", None));
    for i in 0..6 {
        store.keep(key, url(), copy(&[("accept-language", Some(["a", "b", "c", "d", "e", "f"][i]))], "l"));
    }
    assert_eq!(store.copies.get(&key).unwrap().copies.len(), MAX_VARIANTS);
    // A colliding URL replaces the copies rather than mixing with them.
    store.keep(key, Url { host: "b.example".into(), path_and_query: "/".into() }, copy(&[], "b"));
    assert_eq!(store.copies.get(&key).unwrap().copies.len(), 1);
    assert_eq!(find(&[]), None);
    store.keep(key, url(), copy(&[], "plain"));
    assert!(find(&[]).is_some());
    store.invalidate(key);
    assert_eq!(find(&[]), None);
}

#[test]
fn a_url_is_copied_at_most_once_a_second() {
    let registry = prometheus::Registry::new();
    let metrics = crate::metrics::ProxyMetrics::register(&registry).unwrap().stale;
    let clock = Arc::new(crate::proxy::cache::ManualClock::default());
    let store = StaleStore::new(1 << 20, clock.clone(), metrics);
    let (a, b) = (store.key("a.example", "/", None), store.key("b.example", "/", None));
    assert!(store.due(a), "never copied");
    assert!(!store.due(a), "copied this second");
    assert!(store.due(b), "another URL");
    clock.advance(Duration::from_millis(1000));
    assert!(store.due(a) && !store.due(a));
    // With Vary, each set of values is its own copy.
    let vary = fields(&[("vary", "accept-language")]);
    let en = store.variant(a, &vary, &fields(&[("accept-language", "en")]));
    let fr = store.variant(a, &vary, &fields(&[("accept-language", "fr")]));
    assert!(en != fr && en != a);
    assert_eq!(store.variant(a, &HeaderMap::new(), &fields(&[("accept-language", "en")])), a);
    assert!(store.due(en) && store.due(fr) && !store.due(en));
}
