//! Unit tests of `ttl`.

use super::*;
use http::HeaderValue;

fn h(cache_control: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if !cache_control.is_empty() {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_str(cache_control).unwrap());
    }
    h
}

fn ttl(code: u16, cc: &str, rule: TtlRule) -> Option<u64> {
    error_ttl(&Method::GET, code, &h(cc), rule, SystemTime::UNIX_EPOCH).map(|d| d.as_secs())
}

const DEFAULT: TtlRule = TtlRule { min: 10, max: None, named: false };

#[test]
fn rule_9_always_cached_codes_without_headers() {
    for code in [404, 414, 500, 501, 502, 503, 504] {
        assert_eq!(ttl(code, "", DEFAULT), Some(10), "{code}");
    }
}

#[test]
fn rule_10_conditional_codes_need_max_age() {
    for code in [400, 403, 405, 412, 415] {
        assert_eq!(ttl(code, "", DEFAULT), None, "{code}");
        assert_eq!(ttl(code, "max-age=60", DEFAULT), Some(60), "{code}");
        assert_eq!(ttl(code, "s-maxage=5", DEFAULT), Some(10), "{code}: max(5, min 10)");
    }
}

#[test]
fn rule_11_416_is_never_cached() {
    assert_eq!(ttl(416, "max-age=600", TtlRule { named: true, ..DEFAULT }), None);
}

#[test]
fn rule_12_only_get_creates_entries() {
    for m in [Method::HEAD, Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        assert_eq!(error_ttl(&m, 404, &HeaderMap::new(), DEFAULT, SystemTime::UNIX_EPOCH), None, "{m}");
    }
}

#[test]
fn rule_13_other_codes_only_when_named() {
    assert_eq!(ttl(410, "max-age=60", DEFAULT), None);
    assert_eq!(ttl(429, "", DEFAULT), None);
    assert_eq!(ttl(410, "", TtlRule { named: true, ..DEFAULT }), Some(10));
}

#[test]
fn rule_16_ttl_is_max_of_min_ttl_and_the_header() {
    assert_eq!(ttl(500, "", DEFAULT), Some(10));
    assert_eq!(ttl(500, "max-age=2", DEFAULT), Some(10));
    assert_eq!(ttl(500, "max-age=300", DEFAULT), Some(300));
    assert_eq!(ttl(404, "s-maxage=2678400", DEFAULT), Some(2_678_400));
    assert_eq!(ttl(404, "max-age=60, s-maxage=120", DEFAULT), Some(120), "s-maxage wins over max-age");
    assert_eq!(ttl(404, "max-age=999999999", DEFAULT), Some(31_536_000), "capped at a year");
    assert_eq!(
        ttl(404, "max-age=600", TtlRule { max: Some(60), ..DEFAULT }),
        Some(60),
        "the rule's max TTL caps"
    );
}

#[test]
fn rule_16_expires_relative_to_date() {
    let mut headers = HeaderMap::new();
    headers.insert(header::DATE, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
    headers.insert(header::EXPIRES, HeaderValue::from_static("Wed, 21 Oct 2015 07:38:00 GMT"));
    assert_eq!(
        error_ttl(&Method::GET, 503, &headers, DEFAULT, SystemTime::UNIX_EPOCH).map(|d| d.as_secs()),
        Some(600)
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=30"));
    assert_eq!(
        error_ttl(&Method::GET, 503, &headers, DEFAULT, SystemTime::UNIX_EPOCH).map(|d| d.as_secs()),
        Some(30),
        "max-age beats Expires"
    );
}

#[test]
fn rule_17_other_directives_give_the_minimum() {
    for cc in ["no-cache", "no-store", "private", "private, max-age=600", "must-revalidate"] {
        assert_eq!(ttl(503, cc, DEFAULT), Some(10), "{cc}");
    }
    assert_eq!(ttl(403, "no-store, max-age=60", DEFAULT), None, "a conditional code is not cached");
}

#[test]
fn rule_18_zero_min_ttl_without_header_caches_nothing() {
    let zero = TtlRule { min: 0, ..DEFAULT };
    assert_eq!(ttl(503, "", zero), None);
    assert_eq!(ttl(503, "max-age=7", zero), Some(7));
}

#[test]
fn malformed_directives_are_ignored() {
    assert_eq!(ttl(404, "max-age=abc", DEFAULT), Some(10));
    assert_eq!(ttl(404, "max-age=\"120\"", DEFAULT), Some(120));
}
