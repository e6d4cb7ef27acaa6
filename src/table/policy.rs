//! ErrorPagePolicy resolution: validate a policy, load its pages, and produce the immutable
//! [`ResolvedPolicy`] the proxy consults on the error path.
//!
//! Pure: everything the schema cannot see (ConfigMap keys, page sizes, templates) is checked
//! here, and everything the schema does see is checked again, because file mode has no API
//! server to reject bad objects at admission.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method, StatusCode};

use super::accept;
use super::route::{self, PathKind};
use super::template::{Escape, Template};
use crate::crd::{self, ErrorPagePolicy, HttpMethod, MAX_TTL_SECONDS, Mode, Source};
use crate::index::{Index, ObjectKey};

mod effective;
pub mod error_backend;
mod maintenance;
mod page;
mod stale;

pub use effective::{cacheability, effective_rules};

pub use maintenance::Maintenance;
pub use stale::StaleIfError;

pub use page::{Backends, rebind};

/// CloudFront's default Error Caching Minimum TTL (rule 7).
pub const DEFAULT_MIN_TTL_SECONDS: u32 = 10;
/// Content type of pages that do not name one.
pub const DEFAULT_CONTENT_TYPE: &str = "text/html; charset=utf-8";

/// Codes CloudFront always caches (rule 9).
pub const ALWAYS_CACHED: [u16; 7] = [404, 414, 500, 501, 502, 503, 504];
/// Codes CloudFront caches only with origin `max-age`/`s-maxage` (rule 10).
pub const CACHED_WITH_MAX_AGE: [u16; 5] = [400, 403, 405, 412, 415];
/// Never cached (rule 11).
pub const NEVER_CACHED: u16 = 416;

/// A set of request methods, as a bit set (checked on every replaced response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSet(u16);

impl MethodSet {
    /// Every method, including extension methods.
    pub const ALL: MethodSet = MethodSet(u16::MAX);
    /// GET and HEAD.
    pub const SAFE: MethodSet = MethodSet(0b11);

    fn bit(m: &Method) -> u16 {
        match *m {
            Method::GET => 1,
            Method::HEAD => 1 << 1,
            Method::POST => 1 << 2,
            Method::PUT => 1 << 3,
            Method::PATCH => 1 << 4,
            Method::DELETE => 1 << 5,
            Method::OPTIONS => 1 << 6,
            Method::CONNECT => 1 << 7,
            Method::TRACE => 1 << 8,
            _ => 1 << 15,
        }
    }

    fn from_crd(methods: &[HttpMethod]) -> Self {
        MethodSet(methods.iter().map(|m| Self::bit(&to_http(*m))).fold(0, |a, b| a | b))
    }

    /// Whether `m` is in the set.
    pub fn contains(self, m: &Method) -> bool {
        self.0 & Self::bit(m) != 0
    }

    /// The methods, for status.
    pub fn to_crd(self) -> Vec<HttpMethod> {
        use HttpMethod::*;
        [GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT, TRACE]
            .into_iter()
            .filter(|m| self.contains(&to_http(*m)))
            .collect()
    }
}

fn to_http(m: HttpMethod) -> Method {
    match m {
        HttpMethod::GET => Method::GET,
        HttpMethod::HEAD => Method::HEAD,
        HttpMethod::POST => Method::POST,
        HttpMethod::PUT => Method::PUT,
        HttpMethod::PATCH => Method::PATCH,
        HttpMethod::DELETE => Method::DELETE,
        HttpMethod::OPTIONS => Method::OPTIONS,
        HttpMethod::CONNECT => Method::CONNECT,
        HttpMethod::TRACE => Method::TRACE,
    }
}

/// Where one representation's body comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageBody {
    /// Inline or ConfigMap text, parsed as a template.
    Static(Template),
    /// Fetched through the routing table on the request's host, pinned by the proxy.
    Path(String),
    /// Asked of an error backend per request (ingress-nginx's `custom-http-errors`).
    Backend(Arc<error_backend::ErrorBackend>),
}

/// One representation of a page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    /// `type/subtype`, lower case, for negotiation.
    pub media: String,
    /// The `Content-Type` sent; `None` for a path page that takes the page origin's.
    pub content_type: Option<HeaderValue>,
    /// The body.
    pub body: PageBody,
}

/// A page: one or more representations, the first being the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// In preference order.
    pub formats: Vec<Format>,
}

impl Page {
    /// Picks the representation for an `Accept` header.
    pub fn negotiate(&self, accept: Option<&str>) -> &Format {
        &self.formats[accept::choose(accept, self.formats.iter().map(|f| f.media.as_str()))]
    }

    /// Whether there is a choice (then responses carry `Vary: Accept`).
    pub fn varies(&self) -> bool {
        self.formats.len() > 1
    }

    /// Every page path this page fetches.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.formats.iter().filter_map(|f| match &f.body {
            PageBody::Path(p) => Some(p.as_str()),
            PageBody::Static(_) | PageBody::Backend(_) => None,
        })
    }

    fn describe(&self) -> String {
        self.formats
            .iter()
            .map(|f| match &f.body {
                PageBody::Path(p) => format!("path {p}"),
                PageBody::Backend(b) => format!("backend {}:{}", b.backend.service, b.backend.port),
                PageBody::Static(t) => format!("{} ({} bytes)", f.media, t.literal_len()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A `setHeaders` value: fixed, or a template of the request's values, percent-encoded (a 401
/// becomes `302 Location: https://login.example.com/?rd={{url}}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderSetting {
    /// No variable: sent as is.
    Fixed(HeaderValue),
    /// Rendered per response with [`Escape::Header`].
    Template(Template),
}

/// One validated `errorResponses` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Codes and classes, as written.
    pub codes: Vec<String>,
    /// Status override.
    pub response_code: Option<StatusCode>,
    /// Body.
    pub page: Option<Arc<Page>>,
    /// Error Caching Minimum TTL, if set on the rule.
    pub min_ttl: Option<u32>,
    /// Error Caching Maximum TTL.
    pub max_ttl: Option<u32>,
    /// Methods it applies to.
    pub methods: MethodSet,
    /// Media types the request must list explicitly (empty: no condition).
    pub when_accepts: Vec<String>,
    /// Headers copied from the original response.
    pub copy_headers: Vec<HeaderName>,
    /// Headers set on the page.
    pub set_headers: Vec<(HeaderName, HeaderSetting)>,
    /// Viewer `Cache-Control`.
    pub cache_control: Option<HeaderValue>,
    /// Whether errors for requests with credentials may be cached.
    pub cache_with_credentials: bool,
}

/// A host condition of `match.hosts`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Wildcard(String),
}

/// A validated policy, as the proxy uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPolicy {
    /// `namespace/name`.
    pub key: ObjectKey,
    /// `metadata.uid` (cache keys use it with the generation).
    pub uid: String,
    /// `metadata.generation` this was built from.
    pub generation: i64,
    /// Which errors.
    pub source: Source,
    /// Enforce or report only.
    pub mode: Mode,
    /// Default Error Caching Minimum TTL.
    pub default_min_ttl: u32,
    /// Rules in spec order.
    pub rules: Vec<Rule>,
    /// Targeted Ingress names; empty for the whole namespace.
    pub targets: Vec<String>,
    /// Hash of uid and generation: part of every error-cache key, so editing a policy
    /// invalidates its entries.
    pub fingerprint: u64,
    /// `spec.maintenance`, on or off.
    pub maintenance: Option<Arc<Maintenance>>,
    /// `spec.staleIfError`.
    pub stale_if_error: Option<StaleIfError>,
    hosts: Vec<HostPattern>,
    paths: Vec<(PathKind, String)>,
    /// Exact codes to their rule (a B-tree: a handful of small keys, looked up on every
    /// error without hashing).
    by_code: BTreeMap<u16, usize>,
    class4: Option<usize>,
    class5: Option<usize>,
}

impl ResolvedPolicy {
    /// Whether the policy's `match` covers a request (host already normalised).
    pub fn covers(&self, host: &str, path: &str) -> bool {
        let host_ok = self.hosts.is_empty()
            || self.hosts.iter().any(|h| match h {
                HostPattern::Exact(e) => e == host,
                HostPattern::Wildcard(s) => route::wildcard_suffix(host) == Some(s.as_str()),
            });
        host_ok
            && (self.paths.is_empty()
                || self.paths.iter().any(|(kind, p)| match kind {
                    PathKind::Exact => p == path,
                    PathKind::Prefix => {
                        p == "/"
                            || path
                                .strip_prefix(p.as_str())
                                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                    }
                }))
    }

    /// Whether the policy handles errors from this source.
    pub fn handles(&self, from_proxy: bool) -> bool {
        matches!(
            (self.source, from_proxy),
            (Source::Any, _) | (Source::Upstream, false) | (Source::Proxy, true)
        )
    }

    /// The rule for a status code: an exact code beats its class.
    pub fn rule_for(&self, code: u16) -> Option<&Rule> {
        let i = self.by_code.get(&code).copied().or(match code {
            400..=499 => self.class4,
            500..=599 => self.class5,
            _ => None,
        })?;
        self.rules.get(i)
    }

    /// Whether any rule lets errors of requests with credentials be cached.
    pub fn caches_with_credentials(&self) -> bool {
        self.rules.iter().any(|r| r.cache_with_credentials)
    }

    /// Every code key (exact codes and classes) the policy defines.
    pub fn code_keys(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().flat_map(|r| r.codes.iter().map(String::as_str))
    }

    /// Precedence among policies covering the same request, highest first: targeted beats
    /// namespace-wide beats the default policy; then the narrower match; the caller breaks
    /// ties by age and name.
    pub(crate) fn specificity(&self, level: u8) -> (u8, usize, u8) {
        let path = self.paths.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
        let host = match self.hosts.as_slice() {
            [] => 0,
            hs if hs.iter().all(|h| matches!(h, HostPattern::Exact(_))) => 2,
            _ => 1,
        };
        (level, path, host)
    }
}

/// Why a policy is not in effect as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Spec errors (condition `Accepted=False`, reason `Invalid`).
    pub invalid: Vec<String>,
    /// Unresolvable references (condition `ResolvedRefs=False`).
    pub refs: Vec<String>,
}

impl Problems {
    /// Whether there is nothing wrong.
    pub fn is_empty(&self) -> bool {
        self.invalid.is_empty() && self.refs.is_empty()
    }
}

/// Validates and resolves one policy against the Index alone, outside a table build (tests,
/// tools): `backend` pages get backends of their own, without endpoints.
pub fn resolve_alone(index: &Index, policy: &ErrorPagePolicy) -> Result<ResolvedPolicy, Problems> {
    let no_slices = std::collections::HashMap::new();
    let mut backends = |service: &ObjectKey, port| {
        Arc::new(super::backend::resolve(index, &no_slices, service.clone(), port, false))
    };
    resolve(index, policy, &mut backends)
}

/// Validates and resolves one policy against the Index; `backend` pages take their Service
/// port's backend from `backends`.
pub fn resolve(
    index: &Index,
    policy: &ErrorPagePolicy,
    backends: &mut Backends<'_>,
) -> Result<ResolvedPolicy, Problems> {
    let key = ObjectKey::of(&policy.metadata);
    let spec = &policy.spec;
    let mut p = Problems::default();

    let mut targets = Vec::new();
    for (i, t) in spec.target_refs.iter().enumerate() {
        if t.group != "networking.k8s.io" || t.kind != "Ingress" {
            p.invalid.push(format!(
                "targetRefs[{i}]: only networking.k8s.io Ingress is supported, not {}/{}",
                t.group, t.kind
            ));
        } else if t.name.is_empty() {
            p.invalid.push(format!("targetRefs[{i}]: name is empty"));
        } else {
            targets.push(t.name.clone());
        }
    }

    let mut hosts = Vec::new();
    let mut paths = Vec::new();
    if let Some(m) = &spec.match_ {
        for h in &m.hosts {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix("*.") {
                Some(s) if super::route::is_dns_name(s) => hosts.push(HostPattern::Wildcard(s.to_string())),
                None if super::route::is_dns_name(&h) => hosts.push(HostPattern::Exact(h)),
                _ => p.invalid.push(format!("match.hosts: {h:?} is not a host name")),
            }
        }
        for pm in &m.paths {
            if !pm.value.starts_with('/') {
                p.invalid.push(format!("match.paths: {:?} must start with '/'", pm.value));
                continue;
            }
            match pm.type_ {
                crd::PathMatchType::Exact => paths.push((PathKind::Exact, pm.value.clone())),
                crd::PathMatchType::Prefix => {
                    paths.push((PathKind::Prefix, route::prefix_key(&pm.value).to_string()))
                }
            }
        }
    }

    let default_min_ttl = spec.default_error_caching_min_ttl_seconds.unwrap_or(DEFAULT_MIN_TTL_SECONDS);
    if default_min_ttl > MAX_TTL_SECONDS {
        p.invalid.push(format!("defaultErrorCachingMinTTLSeconds: at most {MAX_TTL_SECONDS}"));
    }

    let mut rules = Vec::new();
    let mut by_code = BTreeMap::new();
    let (mut class4, mut class5) = (None, None);
    let mut seen = BTreeSet::new();
    for (i, r) in spec.error_responses.iter().enumerate() {
        let at = format!("errorResponses[{i}]");
        if r.codes.is_empty() {
            p.invalid.push(format!("{at}.codes: at least one code"));
        }
        for code in &r.codes {
            if !seen.insert(code.clone()) {
                p.invalid.push(format!("{at}.codes: {code} appears in more than one entry"));
                continue;
            }
            match code.as_str() {
                "4xx" => class4 = Some(i),
                "5xx" => class5 = Some(i),
                c => match c.parse::<u16>() {
                    Ok(n) if (400..=599).contains(&n) && c.len() == 3 => {
                        by_code.insert(n, i);
                    }
                    _ => p
                        .invalid
                        .push(format!("{at}.codes: {code:?} is not a 4xx/5xx code or the class 4xx/5xx")),
                },
            }
        }
        match resolve_rule(index, &key.namespace, r, backends, &at, &mut p) {
            Some(rule) => rules.push(rule),
            None => rules.push(Rule {
                codes: r.codes.clone(),
                response_code: None,
                page: None,
                min_ttl: None,
                max_ttl: None,
                methods: MethodSet::ALL,
                when_accepts: Vec::new(),
                copy_headers: Vec::new(),
                set_headers: Vec::new(),
                cache_control: None,
                cache_with_credentials: false,
            }),
        }
    }

    let maintenance = spec
        .maintenance
        .as_ref()
        .and_then(|m| maintenance::resolve(index, &key.namespace, m, backends, &mut p))
        .map(Arc::new);
    let stale_if_error = spec.stale_if_error.as_ref().and_then(|s| stale::resolve(s, &mut p));

    if !p.is_empty() {
        return Err(p);
    }
    let uid = policy.metadata.uid.clone().unwrap_or_else(|| format!("file:{key}"));
    let generation = policy.metadata.generation.unwrap_or(0);
    // File mode has no uid or generation: the spec itself stands in, so an edit still
    // invalidates the policy's cache entries.
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&uid, generation).hash(&mut h);
        if policy.metadata.uid.is_none() {
            serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
        }
        h.finish()
    };
    Ok(ResolvedPolicy {
        uid,
        generation,
        fingerprint,
        key,
        source: spec.source,
        mode: spec.mode,
        default_min_ttl,
        rules,
        targets,
        maintenance,
        stale_if_error,
        hosts,
        paths,
        by_code,
        class4,
        class5,
    })
}

fn resolve_rule(
    index: &Index,
    namespace: &str,
    r: &crd::ErrorResponse,
    backends: &mut Backends<'_>,
    at: &str,
    p: &mut Problems,
) -> Option<Rule> {
    let before = p.invalid.len() + p.refs.len();
    let response_code = r.response_code.and_then(|c| response_code(c, at, p));
    for (name, v) in [
        ("errorCachingMinTTLSeconds", r.error_caching_min_ttl_seconds),
        ("errorCachingMaxTTLSeconds", r.error_caching_max_ttl_seconds),
    ] {
        if v.is_some_and(|v| v > MAX_TTL_SECONDS) {
            p.invalid.push(format!("{at}.{name}: at most {MAX_TTL_SECONDS}"));
        }
    }
    if let (Some(min), Some(max)) = (r.error_caching_min_ttl_seconds, r.error_caching_max_ttl_seconds)
        && max < min
    {
        p.invalid.push(format!(
            "{at}: errorCachingMaxTTLSeconds ({max}) is below errorCachingMinTTLSeconds ({min})"
        ));
    }
    let methods = if !r.methods.is_empty() {
        MethodSet::from_crd(&r.methods)
    } else if response_code.is_some_and(|s| s.is_success() || s.is_redirection()) {
        // A success status on a page must not answer a POST/PUT/DELETE (peers §3 item 3).
        MethodSet::SAFE
    } else {
        MethodSet::ALL
    };
    let mut when_accepts = Vec::new();
    for m in &r.when_accepts {
        let e = accept::essence(m);
        if !e.contains('/') || e.contains('*') {
            p.invalid
                .push(format!("{at}.whenAccepts: {m:?} is not a media type (type/subtype, no wildcard)"));
        }
        when_accepts.push(e);
    }
    let mut copy_headers = Vec::new();
    for h in &r.copy_headers {
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => copy_headers.push(n),
            Err(_) => p.invalid.push(format!("{at}.copyHeaders: {h:?} is not a header name")),
        }
    }
    let mut set_headers = Vec::new();
    for (k, v) in &r.set_headers {
        match (HeaderName::from_bytes(k.as_bytes()), header_setting(v)) {
            (Ok(n), Ok(v)) => set_headers.push((n, v)),
            (Err(_), _) => p.invalid.push(format!("{at}.setHeaders: {k:?} is not a header name")),
            (_, Err(e)) => p.invalid.push(format!("{at}.setHeaders.{k}: {e}")),
        }
    }
    let cache_control = match &r.cache_control {
        None => None,
        Some(v) => match HeaderValue::from_str(v) {
            Ok(v) => Some(v),
            Err(_) => {
                p.invalid.push(format!("{at}.cacheControl: {v:?} is not a header value"));
                None
            }
        },
    };
    let page = r
        .page
        .as_ref()
        .and_then(|page| page::resolve_page(index, namespace, page, backends, &format!("{at}.page"), p));
    if p.invalid.len() + p.refs.len() > before {
        return None;
    }
    Some(Rule {
        codes: r.codes.clone(),
        response_code,
        page: page.map(Arc::new),
        min_ttl: r.error_caching_min_ttl_seconds,
        max_ttl: r.error_caching_max_ttl_seconds,
        methods,
        when_accepts,
        copy_headers,
        set_headers,
        cache_control,
        cache_with_credentials: r.cache_requests_with_credentials,
    })
}

/// A `responseCode` (of a rule or of the maintenance switch at `at`): 200 to 599.
fn response_code(c: u16, at: &str, p: &mut Problems) -> Option<StatusCode> {
    match StatusCode::from_u16(c) {
        Ok(s) if (200..=599).contains(&c) => Some(s),
        _ => {
            p.invalid.push(format!("{at}.responseCode: {c} is not between 200 and 599"));
            None
        }
    }
}

/// A `setHeaders` value: its literal text must be a header value, its variables known.
fn header_setting(v: &str) -> Result<HeaderSetting, String> {
    let template = Template::parse(v, Escape::Header).map_err(|e| format!("template: {e}"))?;
    // Percent-encoded values cannot add anything a header value refuses: the literal text
    // decides (checked with a sample of every variable).
    let sample = template.render(&super::template::Values::sample(503));
    let value = HeaderValue::from_maybe_shared(sample)
        .map_err(|_| format!("{v:?} is not a header value (no CR, LF or control characters)"))?;
    Ok(if template.is_fixed() { HeaderSetting::Fixed(value) } else { HeaderSetting::Template(template) })
}
