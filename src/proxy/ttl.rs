//! Error Caching TTL (error-semantics §B and §C): which error responses become cache entries
//! and for how long. Pure: the current time comes in as an argument.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, header};

use crate::crd::MAX_TTL_SECONDS;
use crate::table::policy::{ALWAYS_CACHED, CACHED_WITH_MAX_AGE, DEFAULT_MIN_TTL_SECONDS, NEVER_CACHED, Rule};

/// The caching directives of a `Cache-Control` header that matter for errors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `s-maxage=N`.
    pub s_maxage: Option<u64>,
    /// `max-age=N`.
    pub max_age: Option<u64>,
    /// `no-store`, `no-cache` or `private`: the header gives no TTL (rule 17).
    pub forbids: bool,
}

/// Parses every `Cache-Control` header. Unknown directives are ignored; a malformed number
/// counts as absent.
pub fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "s-maxage" => d.s_maxage = d.s_maxage.or_else(seconds),
                "max-age" => d.max_age = d.max_age.or_else(seconds),
                "no-store" | "no-cache" | "private" => d.forbids = true,
                _ => {}
            }
        }
    }
    d
}

/// Seconds an `Expires` header leaves, relative to the origin's `Date` (or `now`).
fn expires_in(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let expires = httpdate::parse_http_date(headers.get(header::EXPIRES)?.to_str().ok()?).ok()?;
    let date = headers
        .get(header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);
    Some(expires.duration_since(date).map(|d| d.as_secs()).unwrap_or(0))
}

/// What the policy says about one error code.
#[derive(Clone, Copy, Debug)]
pub struct TtlRule {
    /// Error Caching Minimum TTL in effect (rule or policy default).
    pub min: u32,
    /// Error Caching Maximum TTL, if any.
    pub max: Option<u32>,
    /// Whether a rule names the code exactly (other codes are cached only then, rule 13).
    pub named: bool,
}

impl TtlRule {
    /// The TTL rule for `code` from the deciding rule (if any) and the policy default.
    pub fn new(code: u16, rule: Option<&Rule>, policy_default: u32) -> Self {
        Self {
            min: rule.and_then(|r| r.min_ttl).unwrap_or(policy_default),
            max: rule.and_then(|r| r.max_ttl),
            named: rule.is_some_and(|r| r.codes.iter().any(|c| c.parse::<u16>() == Ok(code))),
        }
    }
}

impl Default for TtlRule {
    fn default() -> Self {
        Self { min: DEFAULT_MIN_TTL_SECONDS, max: None, named: false }
    }
}

/// How long an origin error is cached, or `None` when it is not (rules 9–18):
///
/// - GET only (HEAD reads GET's entries but a HEAD response has no body to store).
/// - 404 414 500 501 502 503 504: always; 400 403 405 412 415: only with `s-maxage`/`max-age`;
///   416: never; other codes: only when a rule names them.
/// - TTL = max(min TTL, `s-maxage` › `max-age` › `Expires`), the header part capped by the
///   rule's max TTL (or a year); `no-store`/`no-cache`/`private` give the min TTL; a zero TTL
///   caches nothing.
pub fn error_ttl(
    method: &Method,
    code: u16,
    headers: &HeaderMap,
    rule: TtlRule,
    now: SystemTime,
) -> Option<Duration> {
    if method != Method::GET || code == NEVER_CACHED || !(400..=599).contains(&code) {
        return None;
    }
    let d = directives(headers);
    let conditional = CACHED_WITH_MAX_AGE.contains(&code);
    if conditional && (d.forbids || (d.s_maxage.is_none() && d.max_age.is_none())) {
        return None; // rule 10 (and rule 17 for conditional codes)
    }
    if !ALWAYS_CACHED.contains(&code) && !conditional && !rule.named {
        return None; // rule 13
    }
    let header_ttl =
        if d.forbids { None } else { d.s_maxage.or(d.max_age).or_else(|| expires_in(headers, now)) };
    let cap = u64::from(rule.max.unwrap_or(MAX_TTL_SECONDS));
    let ttl = header_ttl.map(|h| h.min(cap)).unwrap_or(0).max(u64::from(rule.min)).min(cap);
    (ttl > 0).then(|| Duration::from_secs(ttl))
}

#[cfg(test)]
mod tests {
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
}
