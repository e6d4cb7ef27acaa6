//! ingress-nginx's canaries: an Ingress with `canary: "true"` for the same host and path as
//! a main Ingress sends some of that route's requests to its own Service — by header, by
//! cookie, or by weight, in that order (ingress-nginx's precedence).
//!
//! Data flow: [`read`](super::read) fills an [`IngressCanary`]; the build attaches a
//! [`Canary`] to the main Ingress's route for each of the canary Ingress's paths; the proxy
//! asks [`Canary::chosen`] once per request of such a route (`admit`) and sends the request to
//! the canary's backend when it says so. Routes without a canary pay one pointer check.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

use crate::table::Backend;

/// `canary`.
pub const CANARY: &str = "canary";
/// `canary-by-header`: a header whose `always` / `never` (or `canary-by-header-value`, or a
/// match of `canary-by-header-pattern`) decides.
pub const CANARY_BY_HEADER: &str = "canary-by-header";
/// `canary-by-header-value`.
pub const CANARY_BY_HEADER_VALUE: &str = "canary-by-header-value";
/// `canary-by-header-pattern`.
pub const CANARY_BY_HEADER_PATTERN: &str = "canary-by-header-pattern";
/// `canary-by-cookie`: a cookie whose `always` / `never` decides.
pub const CANARY_BY_COOKIE: &str = "canary-by-cookie";
/// `canary-weight`: the share of the other requests, out of `canary-weight-total`.
pub const CANARY_WEIGHT: &str = "canary-weight";
/// `canary-weight-total` (default 100).
pub const CANARY_WEIGHT_TOTAL: &str = "canary-weight-total";

/// The annotations this module reads.
pub const READ: [&str; 7] = [
    CANARY,
    CANARY_BY_HEADER,
    CANARY_BY_HEADER_VALUE,
    CANARY_BY_HEADER_PATTERN,
    CANARY_BY_COOKIE,
    CANARY_WEIGHT,
    CANARY_WEIGHT_TOTAL,
];

/// What one Ingress says about being a canary, as read.
#[derive(Clone, Debug, Default)]
pub struct IngressCanary {
    /// `canary`.
    pub enabled: bool,
    /// `canary-by-header`.
    pub header: Option<HeaderName>,
    /// `canary-by-header-value`.
    pub header_value: Option<String>,
    /// `canary-by-header-pattern`.
    pub header_pattern: Option<regex::Regex>,
    /// `canary-by-cookie`.
    pub cookie: Option<String>,
    /// `canary-weight`.
    pub weight: u32,
    /// `canary-weight-total`.
    pub total: Option<u32>,
}

impl PartialEq for IngressCanary {
    fn eq(&self, o: &Self) -> bool {
        self.enabled == o.enabled
            && self.header == o.header
            && self.header_value == o.header_value
            && self.header_pattern.as_ref().map(regex::Regex::as_str)
                == o.header_pattern.as_ref().map(regex::Regex::as_str)
            && self.cookie == o.cookie
            && self.weight == o.weight
            && self.total == o.total
    }
}

impl Eq for IngressCanary {}

impl IngressCanary {
    /// Reads `name` (without the prefix) if it is one of [`READ`]; `false` if it is not.
    pub fn read(&mut self, name: &str, key: &str, value: &str, report: &mut impl FnMut(String)) -> bool {
        let v = value.trim();
        let mut bad = |why: &str| report(format!("annotation {key}: {v:?} {why}; ignored"));
        match name {
            CANARY => match super::parse_bool(v) {
                Ok(b) => self.enabled = b,
                Err(why) => bad(&why),
            },
            CANARY_BY_HEADER => match HeaderName::from_bytes(v.as_bytes()) {
                Ok(h) => self.header = Some(h),
                Err(_) => bad("is not a header name"),
            },
            CANARY_BY_HEADER_VALUE => self.header_value = Some(v.to_string()),
            CANARY_BY_HEADER_PATTERN => match regex::Regex::new(v) {
                Ok(r) => self.header_pattern = Some(r),
                Err(_) => bad("is not a regular expression erratum reads"),
            },
            CANARY_BY_COOKIE => self.cookie = Some(v.to_string()),
            CANARY_WEIGHT | CANARY_WEIGHT_TOTAL => match v.parse::<u32>() {
                Ok(n) if name == CANARY_WEIGHT => self.weight = n,
                Ok(n) if n > 0 => self.total = Some(n),
                _ => bad("is not a whole number (the total at least 1)"),
            },
            _ => return false,
        }
        true
    }
}

/// A canary on a main route: where its share goes and how it is chosen.
#[derive(Debug)]
pub struct Canary {
    /// The canary Ingress's backend for this path.
    pub backend: Arc<Backend>,
    /// How requests are chosen.
    pub rule: IngressCanary,
}

impl Canary {
    /// Whether this request goes to the canary: the header (`always`/`never`, or its value or
    /// pattern), else the cookie (`always`/`never`), else the weight — as ingress-nginx.
    pub fn chosen(&self, headers: &HeaderMap) -> bool {
        let r = &self.rule;
        if let Some(name) = &r.header
            && let Some(v) = headers.get(name).and_then(|v| v.to_str().ok())
        {
            match (&r.header_value, &r.header_pattern) {
                (Some(want), _) if v == want => return true,
                (None, Some(p)) if p.is_match(v) => return true,
                (None, None) if v == "always" => return true,
                (None, None) if v == "never" => return false,
                _ => {}
            }
        }
        if let Some(name) = &r.cookie
            && let Some(v) = super::cookie(headers, name)
        {
            match v {
                "always" => return true,
                "never" => return false,
                _ => {}
            }
        }
        let total = r.total.unwrap_or(100);
        r.weight > 0 && (r.weight >= total || fastrand::u32(0..total) < r.weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::ObjectKey;
    use crate::table::{PortRef, Target};

    fn canary(pairs: &[(&str, &str)]) -> Canary {
        let mut rule = IngressCanary::default();
        let mut reports = Vec::new();
        for (k, v) in pairs {
            assert!(rule.read(k, k, v, &mut |m| reports.push(m)));
        }
        assert!(reports.is_empty(), "{reports:?}");
        let backend =
            Arc::new(Backend::new(ObjectKey::new("ns", "c"), PortRef::Number(80), Target::Endpoints(vec![])));
        Canary { backend, rule }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let c = canary(&[
            (CANARY, "true"),
            (CANARY_BY_HEADER, "X-Canary"),
            (CANARY_BY_COOKIE, "canary"),
            (CANARY_WEIGHT, "0"),
        ]);
        assert!(c.chosen(&headers(&[("x-canary", "always")])));
        assert!(
            !c.chosen(&headers(&[("x-canary", "never"), ("cookie", "canary=always")])),
            "the header first"
        );
        assert!(
            c.chosen(&headers(&[("x-canary", "other"), ("cookie", "a=b; canary=always")])),
            "then the cookie"
        );
        assert!(!c.chosen(&headers(&[])), "weight 0");
        let v = canary(&[(CANARY_BY_HEADER, "X-Region"), (CANARY_BY_HEADER_VALUE, "eu")]);
        assert!(v.chosen(&headers(&[("x-region", "eu")])) && !v.chosen(&headers(&[("x-region", "always")])));
        let p = canary(&[(CANARY_BY_HEADER, "X-Region"), (CANARY_BY_HEADER_PATTERN, "^eu-")]);
        assert!(p.chosen(&headers(&[("x-region", "eu-west")])) && !p.chosen(&headers(&[("x-region", "us")])));
        let all = canary(&[(CANARY_WEIGHT, "5"), (CANARY_WEIGHT_TOTAL, "5")]);
        assert!(all.chosen(&headers(&[])));
        let some = canary(&[(CANARY_WEIGHT, "30")]);
        let n = (0..10_000).filter(|_| some.chosen(&headers(&[]))).count();
        assert!((2_500..3_500).contains(&n), "30 of 100: {n}");
    }
}
