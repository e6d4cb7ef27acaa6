//! Error Caching TTL (docs/error-semantics.md §B and §C): which error responses become cache entries
//! and for how long. Pure: the current time comes in as an argument.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method, header};

use crate::table::MAX_TTL_SECONDS;
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
    /// `no-store`.
    pub no_store: bool,
    /// `private` (with or without field names: a shared cache stores neither).
    pub private: bool,
    /// `no-cache` without field names.
    pub no_cache: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`.
    pub revalidate: bool,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<u64>,
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
                "no-store" => (d.no_store, d.forbids) = (true, true),
                "private" => (d.private, d.forbids) = (true, true),
                // `no-cache="field"` only asks to revalidate those fields (rule 17 reads both).
                "no-cache" => (d.no_cache, d.forbids) = (d.no_cache || arg.is_none(), true),
                "public" => d.public = true,
                "must-revalidate" | "proxy-revalidate" => d.revalidate = true,
                "stale-if-error" => d.stale_if_error = d.stale_if_error.or_else(seconds),
                _ => {}
            }
        }
    }
    d
}

/// Seconds an `Expires` header leaves, relative to the origin's `Date` (or `now`).
pub(super) fn expires_in(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
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
mod tests;
