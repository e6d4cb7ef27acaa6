//! `spec.maintenance`: a switch that makes the routes a policy covers answer with its page,
//! without contacting their backends, except for the requests its bypass lets through.
//!
//! Data flow: [`resolve`](super::resolve) validates it into a [`Maintenance`] on the resolved
//! policy; the table build gives each route the policies whose maintenance is on
//! (`Route::maintenance`, `None` for every other route: one branch per request); the proxy's
//! admission asks [`Maintenance::lets_through`] and otherwise answers
//! `ProxyError::Maintenance`, which `decide()` pages with [`Maintenance::rule`] like any rule.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::page::{Backends, resolve_page};
use super::{MethodSet, Problems, Rule};
use crate::crd;
use crate::index::Index;
use crate::table::annotations::parse_range;

/// A validated `spec.maintenance`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maintenance {
    /// On or off (an off switch is kept for status).
    pub enabled: bool,
    /// How the answer is made: the status, the page, `Retry-After`, never cached.
    pub rule: Rule,
    ranges: Vec<ipnet::IpNet>,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<(String, String)>,
}

impl Maintenance {
    /// The status sent.
    pub fn status(&self) -> StatusCode {
        self.rule.response_code.unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// Whether the bypass lets this request reach the backend: any one condition suffices.
    pub fn lets_through(&self, client: Option<IpAddr>, headers: &HeaderMap) -> bool {
        if client.is_some_and(|ip| self.ranges.iter().any(|r| r.contains(&ip))) {
            return true;
        }
        if self.headers.iter().any(|(name, value)| headers.get_all(name).iter().any(|v| v == value)) {
            return true;
        }
        !self.cookies.is_empty()
            && headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(n, v)| self.cookies.iter().any(|(name, value)| name == n && value == v))
    }
}

/// Validates `spec.maintenance` (reporting into `p`).
pub(super) fn resolve(
    index: &Index,
    namespace: &str,
    m: &crd::Maintenance,
    backends: &mut Backends<'_>,
    p: &mut Problems,
) -> Option<Maintenance> {
    let before = p.invalid.len() + p.refs.len();
    let at = "maintenance";
    let status = m
        .response_code
        .and_then(|c| super::response_code(c, at, p))
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let page = m
        .page
        .as_ref()
        .and_then(|page| resolve_page(index, namespace, page, backends, "maintenance.page", p));
    let mut set_headers = Vec::new();
    if let Some(secs) = m.retry_after_seconds {
        set_headers.push((header::RETRY_AFTER, super::HeaderSetting::Fixed(HeaderValue::from(secs))));
    }
    let bypass = m.bypass.clone().unwrap_or_default();
    let mut ranges = Vec::new();
    for r in &bypass.source_ranges {
        match parse_range(r) {
            Ok(net) => ranges.push(net),
            Err(e) => p.invalid.push(format!("{at}.bypass.sourceRanges: {e}")),
        }
    }
    let mut headers = Vec::new();
    for h in &bypass.headers {
        match (HeaderName::from_bytes(h.name.as_bytes()), HeaderValue::from_str(&h.value)) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => p
                .invalid
                .push(format!("{at}.bypass.headers: {:?}: {:?} is not a valid header", h.name, h.value)),
        }
    }
    let mut cookies = Vec::new();
    for c in &bypass.cookies {
        let token =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b";=,\"\\".contains(&b));
        if token(&c.name) && token(&c.value) {
            cookies.push((c.name.clone(), c.value.clone()));
        } else {
            p.invalid.push(format!("{at}.bypass.cookies: {:?}={:?} is not a cookie", c.name, c.value));
        }
    }
    if p.invalid.len() + p.refs.len() > before {
        return None;
    }
    let rule = Rule {
        codes: vec!["maintenance".into()],
        response_code: Some(status),
        page: page.map(std::sync::Arc::new),
        min_ttl: Some(0),
        max_ttl: Some(0),
        methods: MethodSet::ALL,
        when_accepts: Vec::new(),
        copy_headers: Vec::new(),
        set_headers,
        // A planned answer: no cache may keep it past the switch.
        cache_control: Some(HeaderValue::from_static("no-store")),
        cache_with_credentials: false,
    };
    Some(Maintenance { enabled: m.enabled, rule, ranges, headers, cookies })
}
