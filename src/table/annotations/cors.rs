//! ingress-nginx's CORS (`enable-cors`, `cors-*`) and `custom-headers`: the headers erratum
//! adds to every response of a route, whoever made it (the backend, the error engine, a
//! redirect), as nginx's `more_set_headers` does.
//!
//! Data flow: [`read`](super::read) fills an [`IngressCors`] and the `custom-headers`
//! reference; the build resolves them (the ConfigMap from the Index) into one
//! [`ResponseHeaders`] per Ingress, carried by its routes (`None` when neither is set). The
//! proxy asks [`ResponseHeaders::preflight`] in `admit` (a CORS preflight is answered 204
//! without the backend) and calls [`ResponseHeaders::apply`] on the response. Pure.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `enable-cors`.
pub const ENABLE_CORS: &str = "enable-cors";
/// `cors-allow-origin`: `*`, or origins (`https://*.example.com` allows one label).
pub const CORS_ALLOW_ORIGIN: &str = "cors-allow-origin";
/// `cors-allow-methods`.
pub const CORS_ALLOW_METHODS: &str = "cors-allow-methods";
/// `cors-allow-headers`.
pub const CORS_ALLOW_HEADERS: &str = "cors-allow-headers";
/// `cors-expose-headers`.
pub const CORS_EXPOSE_HEADERS: &str = "cors-expose-headers";
/// `cors-allow-credentials`.
pub const CORS_ALLOW_CREDENTIALS: &str = "cors-allow-credentials";
/// `cors-max-age`.
pub const CORS_MAX_AGE: &str = "cors-max-age";
/// `custom-headers`: `namespace/name` (or `name`) of a ConfigMap of response headers.
pub const CUSTOM_HEADERS: &str = "custom-headers";

/// The annotations this module reads.
pub const READ: [&str; 8] = [
    ENABLE_CORS,
    CORS_ALLOW_ORIGIN,
    CORS_ALLOW_METHODS,
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    CORS_ALLOW_CREDENTIALS,
    CORS_MAX_AGE,
    CUSTOM_HEADERS,
];

const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
const DEFAULT_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
const DEFAULT_MAX_AGE: u32 = 1_728_000;

/// What one Ingress says about CORS and custom headers, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressCors {
    /// `enable-cors`.
    pub enabled: bool,
    /// `cors-allow-origin`, split.
    pub origins: Option<Vec<String>>,
    /// `cors-allow-methods`.
    pub methods: Option<String>,
    /// `cors-allow-headers`.
    pub headers: Option<String>,
    /// `cors-expose-headers`.
    pub expose: Option<String>,
    /// `cors-allow-credentials`.
    pub credentials: Option<bool>,
    /// `cors-max-age`.
    pub max_age: Option<u32>,
    /// `custom-headers`.
    pub custom_headers: Option<String>,
}

impl IngressCors {
    /// Reads `name` (without the prefix) if it is one of [`READ`]; `false` if it is not.
    pub fn read(&mut self, name: &str, key: &str, value: &str, report: &mut impl FnMut(String)) -> bool {
        let v = value.trim();
        let list_ok = |extra: &[u8]| {
            v.split(',').map(str::trim).all(|item| {
                !item.is_empty() && item.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
            })
        };
        let mut bad = |why: &str| report(format!("annotation {key}: {v:?} {why}; the default applies"));
        match name {
            ENABLE_CORS => match super::parse_bool(v) {
                Ok(b) => self.enabled = b,
                Err(why) => bad(&why),
            },
            CORS_ALLOW_ORIGIN => {
                let origins: Vec<String> =
                    v.split(',').map(str::trim).filter(|o| !o.is_empty()).map(str::to_string).collect();
                if origins.iter().all(|o| o == "*" || origin_pattern(o).is_some()) && !origins.is_empty() {
                    self.origins = Some(origins);
                } else {
                    bad("is not `*` or a list of origins like https://example.com:8443");
                }
            }
            CORS_ALLOW_METHODS if list_ok(b"") => self.methods = Some(v.to_string()),
            CORS_ALLOW_HEADERS if list_ok(b"_-") => self.headers = Some(v.to_string()),
            CORS_EXPOSE_HEADERS if list_ok(b"_-*") => self.expose = Some(v.to_string()),
            CORS_ALLOW_METHODS | CORS_ALLOW_HEADERS | CORS_EXPOSE_HEADERS => {
                bad("is not a comma-separated list of names")
            }
            CORS_ALLOW_CREDENTIALS => match super::parse_bool(v) {
                Ok(b) => self.credentials = Some(b),
                Err(why) => bad(&why),
            },
            CORS_MAX_AGE => match v.parse::<u32>() {
                Ok(n) => self.max_age = Some(n),
                Err(_) => bad("is not a whole number of seconds"),
            },
            CUSTOM_HEADERS => self.custom_headers = Some(v.to_string()),
            _ => return false,
        }
        true
    }
}

/// `scheme://host[:port]` with an optional `*.` first label, as a case-insensitive pattern
/// (`None` when it is not an origin).
fn origin_pattern(origin: &str) -> Option<OriginPattern> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return None;
    }
    let (wildcard, host) = match rest.strip_prefix("*.") {
        Some(h) => (true, h),
        None => (false, rest),
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => (n, Some(p)),
        _ => (host, None),
    };
    if !crate::table::route::is_dns_name(name) {
        return None;
    }
    let suffix = match port {
        Some(p) => format!("{}:{p}", name.to_ascii_lowercase()),
        None => name.to_ascii_lowercase(),
    };
    Some(OriginPattern { scheme: scheme.to_ascii_lowercase(), wildcard, suffix })
}

/// One allowed origin.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OriginPattern {
    scheme: String,
    /// `*.`: exactly one more label before `suffix`.
    wildcard: bool,
    /// `host[:port]`, lower case.
    suffix: String,
}

impl OriginPattern {
    fn matches(&self, origin: &str) -> bool {
        let Some((scheme, rest)) = origin.split_once("://") else { return false };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        if !self.wildcard {
            return rest.eq_ignore_ascii_case(&self.suffix);
        }
        match rest.split_once('.') {
            Some((label, tail)) => {
                !label.is_empty()
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && tail.eq_ignore_ascii_case(&self.suffix)
            }
            None => false,
        }
    }
}

/// Who gets CORS headers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origins {
    /// `*`: every request, `Access-Control-Allow-Origin: *`.
    Any,
    /// These: requests whose `Origin` matches, which is echoed.
    Listed(Vec<OriginPattern>),
}

/// The headers erratum adds to every response of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHeaders {
    cors: Option<(Origins, Vec<(HeaderName, HeaderValue)>)>,
    /// `custom-headers`.
    custom: Vec<(HeaderName, HeaderValue)>,
}

/// The headers a response never takes from a ConfigMap: framing and hop-by-hop fields.
const FORBIDDEN: [&str; 7] =
    ["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"];

impl ResponseHeaders {
    /// Resolves CORS and the custom headers (`custom`: the ConfigMap's data, if found).
    /// `None` when neither applies. Problems go to `report`.
    pub fn resolve(
        cors: &IngressCors,
        custom: Option<&std::collections::BTreeMap<String, String>>,
        report: &mut impl FnMut(String),
    ) -> Option<Self> {
        let cors_headers = cors.enabled.then(|| {
            let origins = match cors.origins.as_deref() {
                None => Origins::Any,
                Some(list) if list.iter().any(|o| o == "*") => Origins::Any,
                Some(list) => Origins::Listed(list.iter().filter_map(|o| origin_pattern(o)).collect()),
            };
            let mut h = Vec::new();
            let mut push = |name: &'static str, value: &str| {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.push((HeaderName::from_static(name), v));
                }
            };
            // ingress-nginx's default is `true`.
            if cors.credentials.unwrap_or(true) {
                push("access-control-allow-credentials", "true");
            }
            push("access-control-allow-methods", cors.methods.as_deref().unwrap_or(DEFAULT_METHODS));
            push("access-control-allow-headers", cors.headers.as_deref().unwrap_or(DEFAULT_HEADERS));
            if let Some(e) = &cors.expose {
                push("access-control-expose-headers", e);
            }
            push("access-control-max-age", &cors.max_age.unwrap_or(DEFAULT_MAX_AGE).to_string());
            (origins, h)
        });
        let mut custom_headers = Vec::new();
        for (name, value) in custom.into_iter().flatten() {
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.trim())) {
                (Ok(n), Ok(v)) if !FORBIDDEN.contains(&n.as_str()) => custom_headers.push((n, v)),
                _ => report(format!(
                    "custom-headers: {name:?}: {value:?} is not a response header erratum sets; skipped"
                )),
            }
        }
        (cors_headers.is_some() || !custom_headers.is_empty())
            .then_some(Self { cors: cors_headers, custom: custom_headers })
    }

    /// The CORS headers for a request with this `Origin` (`None`: no CORS for it).
    fn cors_for(&self, origin: Option<&HeaderValue>) -> Option<(HeaderValue, &[(HeaderName, HeaderValue)])> {
        let (origins, headers) = self.cors.as_ref()?;
        let allow = match origins {
            Origins::Any => HeaderValue::from_static("*"),
            Origins::Listed(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter().any(|p| p.matches(text)).then(|| origin.clone())?
            }
        };
        Some((allow, headers))
    }

    /// Whether this request is answered 204 here: an `OPTIONS` that gets CORS headers (as
    /// ingress-nginx: any such `OPTIONS`, not only those with `Access-Control-Request-Method`).
    pub fn preflight(&self, method: &http::Method, origin: Option<&HeaderValue>) -> bool {
        method == http::Method::OPTIONS && self.cors_for(origin).is_some()
    }

    /// Sets the headers on a response (replacing the backend's of the same name), for a
    /// request with this `Origin`. A preflight's 204 also gets ingress-nginx's
    /// `Content-Type: text/plain charset=UTF-8`.
    pub fn apply(&self, origin: Option<&HeaderValue>, preflight: bool, headers: &mut HeaderMap) {
        for (n, v) in &self.custom {
            headers.insert(n.clone(), v.clone());
        }
        let Some((allow, cors)) = self.cors_for(origin) else { return };
        // Room for all of them at once: one growth of the map instead of several.
        headers.reserve(cors.len() + 4);
        let echoed = allow != "*";
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        for (n, v) in cors {
            headers.insert(n.clone(), v.clone());
        }
        if echoed {
            // The answer depends on the Origin: a shared cache must know.
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if preflight {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain charset=UTF-8"));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(pairs: &[(&str, &str)]) -> ResponseHeaders {
        let mut cors = IngressCors::default();
        let mut reports = Vec::new();
        for (k, v) in pairs {
            assert!(cors.read(k, k, v, &mut |m| reports.push(m)));
        }
        assert!(reports.is_empty(), "{reports:?}");
        ResponseHeaders::resolve(&cors, None, &mut |m| reports.push(m)).unwrap()
    }

    #[test]
    fn origins_follow_ingress_nginx() {
        let h = resolved(&[
            (ENABLE_CORS, "true"),
            (CORS_ALLOW_ORIGIN, "https://*.example.com, http://a.test:8080"),
        ]);
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(h.cors_for(Some(&v("https://app.example.com"))).is_some());
        assert!(h.cors_for(Some(&v("HTTPS://App.Example.com"))).is_some(), "case-insensitive");
        assert!(h.cors_for(Some(&v("https://a.b.example.com"))).is_none(), "one label only");
        assert!(h.cors_for(Some(&v("https://example.com"))).is_none());
        assert!(h.cors_for(Some(&v("http://a.test:8080"))).is_some());
        assert!(h.cors_for(Some(&v("http://a.test"))).is_none(), "the port is part of the origin");
        assert!(h.cors_for(None).is_none());
        let any = resolved(&[(ENABLE_CORS, "true")]);
        let mut headers = HeaderMap::new();
        any.apply(None, false, &mut headers);
        assert_eq!(
            headers["access-control-allow-origin"], "*",
            "the default origin is *, without an Origin too"
        );
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(headers["access-control-max-age"], "1728000");
        assert!(headers.get(header::VARY).is_none());
    }

    #[test]
    fn bad_values_are_reported() {
        let mut cors = IngressCors::default();
        let mut reports = Vec::new();
        for (k, v) in
            [(CORS_ALLOW_ORIGIN, "example.com"), (CORS_ALLOW_METHODS, "GET;POST"), (CORS_MAX_AGE, "-1")]
        {
            cors.read(k, k, v, &mut |m| reports.push(m));
        }
        assert_eq!(reports.len(), 3, "{reports:?}");
        let data =
            [("X-Frame-Options".to_string(), "DENY".to_string()), ("Content-Length".into(), "1".into())];
        let custom: std::collections::BTreeMap<String, String> = data.into_iter().collect();
        let h = ResponseHeaders::resolve(&IngressCors::default(), Some(&custom), &mut |m| reports.push(m))
            .unwrap();
        assert_eq!(reports.len(), 4, "framing headers are refused: {reports:?}");
        let mut headers = HeaderMap::new();
        h.apply(None, false, &mut headers);
        assert_eq!(headers["x-frame-options"], "DENY");
    }
}
