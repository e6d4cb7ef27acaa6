//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/…`) on the Ingresses erratum serves:
//! one reader for all of them, with ingress-nginx's documented syntax and defaults.
//!
//! Data flow: [`build`](super::build) calls [`read`] once per Ingress; each value that erratum
//! reads becomes part of the routes' [`Edge`]; a value that does not parse, and an annotation
//! of that prefix erratum does not read, becomes a diagnostic (Event, `/table`, log), so a
//! migrated Ingress never behaves differently in silence. Pure functions.

use std::collections::BTreeMap;

/// The prefix of every ingress-nginx annotation.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// `ssl-redirect`: redirect plain HTTP to HTTPS for hosts with a TLS entry (default: the
/// `--ssl-redirect` flag, on as in ingress-nginx).
pub const SSL_REDIRECT: &str = "ssl-redirect";
/// `force-ssl-redirect`: redirect even for hosts without a TLS entry (TLS ends at a load
/// balancer). Default off.
pub const FORCE_SSL_REDIRECT: &str = "force-ssl-redirect";
/// `proxy-body-size`: the largest request body (nginx size syntax; `0` is unlimited).
pub const PROXY_BODY_SIZE: &str = "proxy-body-size";

/// The annotations erratum reads; every other one under [`PREFIX`] is reported as ignored.
pub const READ: [&str; 3] = [SSL_REDIRECT, FORCE_SSL_REDIRECT, PROXY_BODY_SIZE];

/// The cluster-wide defaults the annotations override (flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeDefaults {
    /// `--ssl-redirect`.
    pub ssl_redirect: bool,
    /// `--max-body-bytes`; `None` is unlimited.
    pub max_body_bytes: Option<u64>,
}

impl Default for EdgeDefaults {
    fn default() -> Self {
        Self { ssl_redirect: true, max_body_bytes: Some(DEFAULT_MAX_BODY_BYTES) }
    }
}

/// ingress-nginx's default `proxy-body-size` (nginx's `client_max_body_size`): 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// What one Ingress says about the edge, as read; `None` where it says nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressEdge {
    /// `ssl-redirect`.
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`.
    pub force_ssl_redirect: Option<bool>,
    /// `proxy-body-size`: `Some(None)` is unlimited (`0`).
    pub max_body_bytes: Option<Option<u64>>,
}

/// The edge behaviour of one route, resolved at build time: what the proxy checks per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// A request that did not arrive over HTTPS (by the connection, or a trusted
    /// `X-Forwarded-Proto`) gets a 308 to https, except ACME HTTP-01 challenges.
    pub https_redirect: bool,
    /// Largest request body accepted (413 beyond it); `None` is unlimited.
    pub max_body_bytes: Option<u64>,
}

impl Edge {
    /// A route's edge from its Ingress's annotations and the defaults; `tls_host` says whether
    /// the Ingress has a TLS entry for the route's host.
    pub fn resolve(ingress: &IngressEdge, defaults: &EdgeDefaults, tls_host: bool) -> Self {
        let redirect = ingress.ssl_redirect.unwrap_or(defaults.ssl_redirect) && tls_host;
        Self {
            https_redirect: redirect || ingress.force_ssl_redirect.unwrap_or(false),
            max_body_bytes: ingress.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        }
    }

    /// The edge of a route no Ingress annotates (`--default-backend`): the defaults, no
    /// redirect (no TLS entry names its hosts).
    pub fn defaults(defaults: &EdgeDefaults) -> Self {
        Self::resolve(&IngressEdge::default(), defaults, false)
    }
}

/// Reads an Ingress's annotations; `report` gets one message per value that does not parse
/// (the default applies) and per ingress-nginx annotation erratum does not read.
pub fn read(annotations: Option<&BTreeMap<String, String>>, mut report: impl FnMut(String)) -> IngressEdge {
    let mut edge = IngressEdge::default();
    for (key, value) in annotations.into_iter().flatten() {
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        match name {
            SSL_REDIRECT => edge.ssl_redirect = parse_or_report(key, value, parse_bool, &mut report),
            FORCE_SSL_REDIRECT => {
                edge.force_ssl_redirect = parse_or_report(key, value, parse_bool, &mut report);
            }
            PROXY_BODY_SIZE => edge.max_body_bytes = parse_or_report(key, value, parse_size, &mut report),
            _ => report(format!("annotation {key} is not supported by erratum; ignored")),
        }
    }
    edge
}

fn parse_or_report<T>(
    key: &str,
    value: &str,
    parse: fn(&str) -> Result<T, String>,
    report: &mut impl FnMut(String),
) -> Option<T> {
    match parse(value) {
        Ok(v) => Some(v),
        Err(why) => {
            report(format!("annotation {key}: {value:?} {why}; the default applies"));
            None
        }
    }
}

/// A boolean as ingress-nginx reads it (Go's `strconv.ParseBool`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("is not a boolean (true or false)".into()),
    }
}

/// An nginx size (`client_max_body_size`): bytes, or a number with `k`, `m` or `g` (either
/// case, powers of 1024). `0` means unlimited: `None`.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    const HINT: &str = "is not a size (like 8m, 512k, 1g or 0 for unlimited)";
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HINT.into());
    }
    let n: u64 = digits.parse().map_err(|_| HINT.to_string())?;
    let bytes = n.checked_mul(unit).ok_or_else(|| "is too large".to_string())?;
    Ok((bytes > 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string())).collect()
    }

    #[test]
    fn sizes_follow_nginx_syntax() {
        assert_eq!(parse_size("8m"), Ok(Some(8 << 20)));
        assert_eq!(parse_size("512K"), Ok(Some(512 << 10)));
        assert_eq!(parse_size("1g"), Ok(Some(1 << 30)));
        assert_eq!(parse_size("1000"), Ok(Some(1000)));
        assert_eq!(parse_size("0"), Ok(None));
        assert_eq!(parse_size("0m"), Ok(None));
        for bad in ["", "m", "8mb", "-1", "1.5m", "8 m", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn booleans_follow_go() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn annotations_override_defaults_and_bad_values_are_reported() {
        let defaults = EdgeDefaults::default();
        let mut reports = Vec::new();
        let read = read(
            Some(&annotations(&[
                ("ssl-redirect", "false"),
                ("proxy-body-size", "eight"),
                ("rewrite-target", "/$2"),
            ])),
            |m| reports.push(m),
        );
        assert_eq!(read.ssl_redirect, Some(false));
        assert_eq!(read.max_body_bytes, None, "a bad value leaves the default");
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(reports[0].contains("proxy-body-size") && reports[0].contains("the default applies"));
        assert!(reports[1].contains("rewrite-target") && reports[1].contains("not supported"));
        let edge = Edge::resolve(&read, &defaults, true);
        assert!(!edge.https_redirect, "ssl-redirect: false wins over a TLS entry");
        assert_eq!(edge.max_body_bytes, Some(DEFAULT_MAX_BODY_BYTES));
    }

    #[test]
    fn redirect_needs_a_tls_entry_unless_forced() {
        let defaults = EdgeDefaults::default();
        assert!(Edge::resolve(&IngressEdge::default(), &defaults, true).https_redirect);
        assert!(!Edge::resolve(&IngressEdge::default(), &defaults, false).https_redirect);
        let forced = IngressEdge { force_ssl_redirect: Some(true), ..IngressEdge::default() };
        assert!(Edge::resolve(&forced, &defaults, false).https_redirect);
        let off = EdgeDefaults { ssl_redirect: false, ..defaults };
        assert!(!Edge::resolve(&IngressEdge::default(), &off, true).https_redirect);
        let on = IngressEdge { ssl_redirect: Some(true), ..IngressEdge::default() };
        assert!(Edge::resolve(&on, &off, true).https_redirect, "the annotation overrides the flag");
        let unlimited = IngressEdge { max_body_bytes: Some(None), ..IngressEdge::default() };
        assert_eq!(Edge::resolve(&unlimited, &defaults, false).max_body_bytes, None);
    }
}
