//! The one place that decides what the client gets when something goes wrong.
//!
//! Data flow: the proxy calls [`decide`] with an [`Outcome`] — an upstream status and headers
//! before any body byte is forwarded, or a [`ProxyError`] erratum hit itself — and sends what
//! it returns (applied by [`respond`](super::respond); the error-cache path also asks it
//! whether a status would be replaced). A policy's rule for the
//! status decides; without one, erratum-made errors get the built-in page and upstream
//! responses pass through untouched.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use crate::table::Mode;
use crate::table::ResolvedPolicy;
use crate::table::accept;
use crate::table::policy::error_backend::ErrorBackend;
use crate::table::policy::{HeaderSetting, PageBody, Rule};
use crate::table::template::Values;

/// An error erratum itself produced while handling a request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    /// No routing table has been published yet.
    #[error("not ready: no routing table published yet")]
    NotReady,
    /// No rule and no default backend matched.
    #[error("no route for host {host:?} path {path:?}")]
    NoRoute {
        /// Request host.
        host: String,
        /// Request path.
        path: String,
    },
    /// The backend has no ready endpoint, or its Service could not be resolved.
    #[error("no ready endpoint for service {service}: {reason}")]
    NoEndpoints {
        /// `namespace/name` of the Service.
        service: String,
        /// Why.
        reason: String,
    },
    /// Connecting to the upstream failed (refused, unreachable, DNS).
    #[error("cannot connect to upstream {upstream}: {reason}")]
    UpstreamConnect {
        /// Address or name.
        upstream: String,
        /// Cause.
        reason: String,
    },
    /// The upstream did not answer in time (connect or response timeout).
    #[error("upstream {upstream} timed out after {after:?}")]
    UpstreamTimeout {
        /// Address or name.
        upstream: String,
        /// The timeout that fired.
        after: std::time::Duration,
    },
    /// The connection failed after it was made and before a response arrived (reset, closed,
    /// invalid HTTP).
    #[error("upstream {upstream} failed before responding: {reason}")]
    UpstreamReset {
        /// Address or name.
        upstream: String,
        /// Cause.
        reason: String,
    },
    /// The request target is longer than `--max-uri-bytes`.
    #[error("request target longer than {limit} bytes")]
    UriTooLong {
        /// The limit.
        limit: usize,
    },
    /// The request head is larger than `--max-header-bytes` or has more than
    /// `--max-headers` fields.
    #[error("request head over {limit} bytes or {fields} fields")]
    HeadTooLarge {
        /// The size limit.
        limit: usize,
        /// The field limit.
        fields: usize,
    },
    /// The request body is larger than the route's limit (`--max-body-size`, the
    /// `proxy-body-size` annotation): by its `Content-Length`, or counted as it streamed.
    #[error("request body over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client's address is not allowed on the route (`allowlist-`/`denylist-source-range`).
    #[error("client {client} is not allowed on this route")]
    Forbidden {
        /// The client address.
        client: String,
    },
    /// The client is over a rate limit of the route's Ingress (`limit-rps`, `limit-rpm`,
    /// `limit-connections`): 429, counted apart from errors.
    #[error("client {client} is over the {limit} limit")]
    RateLimited {
        /// The client address.
        client: String,
        /// Which limit (the annotation's name).
        limit: &'static str,
        /// When a request would be allowed again (`Retry-After`), for the rate limits.
        retry_after: Option<std::time::Duration>,
    },
    /// Authentication refused the request: `auth-type: basic` without valid credentials
    /// (401), or `auth-url` answered 401 or 403.
    #[error("authentication refused the request ({status})")]
    AuthRefused {
        /// 401 or 403.
        status: StatusCode,
        /// `WWW-Authenticate` of a 401: the basic realm, or `auth-url`'s own.
        challenge: Option<HeaderValue>,
    },
    /// `auth-url` could not be asked, or answered other than 2xx, 401 or 403 (500, as nginx's
    /// `auth_request` answers).
    #[error("auth-url {url} failed: {reason}")]
    AuthFailed {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The route asks for authentication erratum cannot set up (a missing Secret, a bad
    /// `auth-url`): 503, never served unauthenticated.
    #[error("authentication is not available: {reason}")]
    AuthUnavailable {
        /// Why.
        reason: String,
    },
    /// The request is malformed or ambiguous (or its body broke off); never forwarded whole.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong.
        reason: String,
    },
    /// The route is under maintenance (`spec.maintenance` of a policy covering it): answered
    /// with that policy's page and status, counted apart from errors.
    #[error("under maintenance ({})", .policy.key)]
    Maintenance {
        /// The policy whose switch is on.
        policy: Arc<ResolvedPolicy>,
    },
}

impl ProxyError {
    /// The status erratum answers with (docs/error-semantics.md §G: refused/reset -> 502,
    /// timeouts -> 504).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotReady | ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamReset { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::AuthRefused { status, .. } => *status,
            ProxyError::AuthFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::AuthUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Maintenance { policy } => {
                policy.maintenance.as_ref().map_or(StatusCode::SERVICE_UNAVAILABLE, |m| m.status())
            }
        }
    }

    /// `reason` label of `erratum_proxy_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::NotReady => "not_ready",
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::NoEndpoints { .. } => "no_endpoints",
            ProxyError::UpstreamConnect { .. } => "upstream_connect",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::UpstreamReset { .. } => "upstream_reset",
            ProxyError::BadRequest { .. } => "bad_request",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::HeadTooLarge { .. } => "head_too_large",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::Forbidden { .. } => "forbidden",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::AuthRefused { status, .. } if *status == StatusCode::UNAUTHORIZED => "unauthorized",
            ProxyError::AuthRefused { .. } => "auth_forbidden",
            ProxyError::AuthFailed { .. } => "auth_failed",
            ProxyError::AuthUnavailable { .. } => "auth_unavailable",
            ProxyError::Maintenance { .. } => "maintenance",
        }
    }
}

/// What happened to a request, as far as error handling is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// The upstream answered; its body has not been forwarded yet.
    Upstream {
        /// Upstream status.
        status: StatusCode,
        /// Upstream headers.
        headers: &'a HeaderMap,
    },
    /// erratum could not get an upstream answer.
    Proxy(&'a ProxyError),
    /// A CORS preflight erratum answers itself (204): not an error either.
    Preflight,
    /// erratum redirects the request (plain HTTP to HTTPS): not an error, so no policy
    /// pages it, but it is decided here like every status erratum makes.
    Redirect {
        /// A 3xx status.
        status: StatusCode,
        /// Where to.
        location: &'a HeaderValue,
    },
}

/// The request facts the decision needs.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Method.
    pub method: &'a Method,
    /// Host, normalised (no port, lower case).
    pub host: &'a str,
    /// Path (no query).
    pub path: &'a str,
    /// The query, as sent (templates' `{{url}}`).
    pub query: Option<&'a str>,
    /// The client used HTTPS (directly, or as a trusted proxy says).
    pub https: bool,
    /// `Accept` header.
    pub accept: Option<&'a str>,
    /// `X-Request-ID` in effect.
    pub request_id: &'a str,
    /// A gRPC call to a gRPC route: errors are answered as gRPC statuses ([`grpc`]).
    pub grpc: bool,
}

/// A page fetched by path (CloudFront ResponsePagePath), pinned in memory by the proxy.
#[derive(Debug, Clone)]
pub struct FetchedPage {
    /// Body.
    pub body: Bytes,
    /// The page origin's `Content-Type`.
    pub content_type: Option<HeaderValue>,
}

/// Source of fetched pages. A miss means the page is not (yet) available; the implementation
/// may start fetching it.
pub trait Pages {
    /// The page at `path` for `host`.
    fn get(&self, host: &str, path: &str) -> Option<FetchedPage>;
}

/// No fetched pages at all (tests, and requests before the store starts).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPages;

impl Pages for NoPages {
    fn get(&self, _: &str, _: &str) -> Option<FetchedPage> {
        None
    }
}

/// A complete response erratum sends instead of the upstream's.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status line.
    pub status: StatusCode,
    /// Headers (content type and length included).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The body (and its type) is to be asked of this error backend, per request.
    pub fetch: Option<Arc<ErrorBackend>>,
}

/// Which policy rule acted, for metrics and logs.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The policy.
    pub policy: Arc<ResolvedPolicy>,
    /// The original status.
    pub code: StatusCode,
    /// Whether the error was made by erratum (`source` label `proxy`) or the upstream.
    pub from_proxy: bool,
    /// The page could not be fetched: the original status and a built-in body were sent.
    pub page_missing: bool,
    /// The policy's maintenance answered (`source` label `maintenance`).
    pub maintenance: bool,
}

impl Applied {
    /// The `source` metric label.
    pub fn source(&self) -> &'static str {
        match (self.maintenance, self.from_proxy) {
            (true, _) => "maintenance",
            (false, true) => "proxy",
            (false, false) => "upstream",
        }
    }
}

/// What to send.
#[derive(Debug)]
pub enum Decision {
    /// Forward the upstream response as it is.
    PassThrough,
    /// `mode: ReportOnly`: forward the upstream response; count what the policy would do.
    Report(Applied),
    /// Forward the upstream body with another status and these extra headers (a rule with
    /// `responseCode` and no page).
    Rewrite {
        /// New status.
        status: StatusCode,
        /// Headers to set.
        headers: HeaderMap,
        /// The rule that acted.
        applied: Applied,
    },
    /// Send this instead. `applied` is `None` for erratum's built-in pages.
    Replace {
        /// The response.
        reply: Reply,
        /// The rule that acted, if any.
        applied: Option<Applied>,
    },
}

static X_ERROR_ORIGIN_STATUS: HeaderName = HeaderName::from_static("x-error-origin-status");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");

/// `code` as a header value; the common ones made once (a `HeaderValue` from a number is
/// an allocation).
fn code_value(code: StatusCode) -> HeaderValue {
    static CODES: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (100..600u16).map(HeaderValue::from).collect());
    CODES
        .get(usize::from(code.as_u16()).wrapping_sub(100))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(code.as_u16()))
}

/// Decides the response for an outcome — the one function behind every error erratum sends
/// or replaces. `policies` are the request's, highest precedence first; for each status code
/// the first policy that covers the request, handles the source, and has a rule for the code
/// whose method and `Accept` conditions hold, decides.
pub fn decide(
    policies: &[Arc<ResolvedPolicy>],
    req: &RequestInfo<'_>,
    outcome: Outcome<'_>,
    pages: &dyn Pages,
) -> Decision {
    let mut decision = decide_http(policies, req, outcome, pages);
    // A rate limit says when to come back, whatever page answers it (a rule's own
    // `Retry-After` stays).
    if let Outcome::Proxy(ProxyError::RateLimited { retry_after: Some(wait), .. }) = outcome
        && let Decision::Replace { reply, .. } = &mut decision
        && !reply.headers.contains_key(header::RETRY_AFTER)
    {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        reply.headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    // A 401 says how to authenticate, whatever page answers it (RFC 9110 §11.6.1).
    if let Outcome::Proxy(ProxyError::AuthRefused { challenge: Some(challenge), .. }) = outcome
        && let Decision::Replace { reply, .. } = &mut decision
        && !reply.headers.contains_key(header::WWW_AUTHENTICATE)
    {
        reply.headers.insert(header::WWW_AUTHENTICATE, challenge.clone());
    }
    if req.grpc { grpc::apply(decision, &outcome) } else { decision }
}

/// [`decide`] for any client: pages, rewrites, pass-through.
fn decide_http(
    policies: &[Arc<ResolvedPolicy>],
    req: &RequestInfo<'_>,
    outcome: Outcome<'_>,
    pages: &dyn Pages,
) -> Decision {
    let (code, from_proxy, origin) = match outcome {
        Outcome::Upstream { status, headers } => (status, false, Some(headers)),
        Outcome::Proxy(err) => (err.status(), true, None),
        Outcome::Redirect { status, location } => {
            return Decision::Replace { reply: redirect(status, location), applied: None };
        }
        Outcome::Preflight => {
            let mut headers = HeaderMap::with_capacity(1);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            let reply = Reply { status: StatusCode::NO_CONTENT, headers, body: Bytes::new(), fetch: None };
            return Decision::Replace { reply, applied: None };
        }
    };
    let builtin_reply =
        || Decision::Replace { reply: builtin(code, req.accept, req.request_id), applied: None };
    // A maintenance answer is its policy's own rule, whatever the mode or status: it is a
    // switch the user turned on, not an error to report.
    let maintenance = match outcome {
        Outcome::Proxy(ProxyError::Maintenance { policy }) => {
            policy.maintenance.as_ref().map(|m| (policy, &m.rule))
        }
        _ => None,
    };
    if maintenance.is_none() && (code.as_u16() < 400 || policies.is_empty()) {
        return if from_proxy { builtin_reply() } else { Decision::PassThrough };
    }
    let code_u16 = code.as_u16();
    let Some((policy, rule)) = maintenance.or_else(|| select(policies, req, code_u16, from_proxy)) else {
        return if from_proxy { builtin_reply() } else { Decision::PassThrough };
    };
    let mut applied = Applied {
        policy: policy.clone(),
        code,
        from_proxy,
        page_missing: false,
        maintenance: maintenance.is_some(),
    };
    if policy.mode == Mode::ReportOnly && maintenance.is_none() {
        return if from_proxy {
            Decision::Replace { reply: builtin(code, req.accept, req.request_id), applied: Some(applied) }
        } else {
            Decision::Report(applied)
        };
    }

    let Some(page) = rule.page.as_ref() else {
        return match rule.response_code {
            // A caching-only rule (CloudFront: no ResponsePagePath): the response is unchanged.
            None if from_proxy => builtin_reply(),
            None => Decision::PassThrough,
            Some(status) => {
                let mut headers = HeaderMap::new();
                finish_headers(&mut headers, req, rule, code, status, origin, false);
                if from_proxy {
                    let mut reply = builtin(code, req.accept, req.request_id);
                    reply.status = status;
                    reply.headers.extend(headers);
                    Decision::Replace { reply, applied: Some(applied) }
                } else {
                    Decision::Rewrite { status, headers, applied }
                }
            }
        };
    };

    let format = page.negotiate(req.accept);
    let (body, content_type) = match &format.body {
        PageBody::Backend(backend) => {
            // The rule's status (the original one unless overridden); the body comes from the
            // error backend once this returns (the proxy asks it, telling it the original
            // code, or falls back to the built-in page).
            let status = rule.response_code.unwrap_or(code);
            let mut headers = HeaderMap::with_capacity(4);
            finish_headers(&mut headers, req, rule, code, status, origin, false);
            let reply = Reply { status, headers, body: Bytes::new(), fetch: Some(backend.clone()) };
            return Decision::Replace { reply, applied: Some(applied) };
        }
        PageBody::Static(template) => (template.render(&values(req, code)), format.content_type.clone()),
        PageBody::Path(path) => match pages.get(req.host, path) {
            Some(fetched) => (fetched.body, format.content_type.clone().or(fetched.content_type)),
            None => {
                // Rule 47: a page that cannot be fetched never changes the status and never
                // leaks the page origin's error; the built-in body stands in.
                applied.page_missing = true;
                let mut reply = builtin(code, req.accept, req.request_id);
                finish_headers(&mut reply.headers, req, rule, code, code, origin, false);
                return Decision::Replace { reply, applied: Some(applied) };
            }
        },
    };
    let status = rule.response_code.unwrap_or(code);
    let mut headers = HeaderMap::with_capacity(8);
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    finish_headers(&mut headers, req, rule, code, status, origin, page.varies());
    Decision::Replace { reply: Reply { status, headers, body, fetch: None }, applied: Some(applied) }
}

/// The policy and rule that decide `code` for a request: the first policy in precedence order
/// that handles the source, covers the request, and has a rule for the code whose method and
/// `whenAccepts` conditions hold.
pub fn select<'p>(
    policies: &'p [Arc<ResolvedPolicy>],
    req: &RequestInfo<'_>,
    code: u16,
    from_proxy: bool,
) -> Option<(&'p Arc<ResolvedPolicy>, &'p Rule)> {
    policies.iter().find_map(|p| {
        if !p.handles(from_proxy) || !p.covers(req.host, req.path) {
            return None;
        }
        let rule = p.rule_for(code)?;
        if !rule.methods.contains(req.method) {
            return None;
        }
        if !rule.when_accepts.is_empty() && !accept::lists_explicitly(req.accept, &rule.when_accepts) {
            return None;
        }
        Some((p, rule))
    })
}

/// What templates may insert, for the request and its original status.
fn values<'a>(req: &RequestInfo<'a>, code: StatusCode) -> Values<'a> {
    Values {
        status: code.as_u16(),
        request_id: req.request_id,
        host: req.host,
        path: req.path,
        scheme: if req.https { "https" } else { "http" },
        query: req.query,
    }
}

/// Headers every policy-made response carries (docs/error-semantics.md rule 46).
fn finish_headers(
    headers: &mut HeaderMap,
    req: &RequestInfo<'_>,
    rule: &Rule,
    code: StatusCode,
    served: StatusCode,
    origin: Option<&HeaderMap>,
    varies: bool,
) {
    if let Some(origin) = origin {
        for name in &rule.copy_headers {
            for v in origin.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
    }
    for (name, value) in &rule.set_headers {
        match value {
            HeaderSetting::Fixed(v) => {
                headers.insert(name.clone(), v.clone());
            }
            // Percent-encoded request values: always a header value (the literal text was
            // checked when the table was built).
            HeaderSetting::Template(t) => {
                if let Ok(v) = HeaderValue::from_maybe_shared(t.render(&values(req, code))) {
                    headers.insert(name.clone(), v);
                }
            }
        }
    }
    headers.insert(X_ERROR_ORIGIN_STATUS.clone(), code_value(code));
    let cache_control = match (&rule.cache_control, origin.and_then(|o| o.get(header::CACHE_CONTROL))) {
        (Some(cc), _) => Some(cc.clone()),
        // A success or redirect status must not let a long max-age stick to arbitrary URLs.
        _ if served.is_success() || served.is_redirection() => Some(HeaderValue::from_static("no-store")),
        // Rule 19: otherwise the viewer sees the origin's Cache-Control.
        (None, Some(cc)) => Some(cc.clone()),
        (None, None) if origin.is_none() => Some(HeaderValue::from_static("no-store")),
        (None, None) => None,
    };
    if let Some(cc) = cache_control {
        headers.insert(header::CACHE_CONTROL, cc);
    }
    if varies {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
}

/// A redirect erratum makes: `Location` and an empty body (as ingress-nginx's, it is not
/// cached by default: no `Cache-Control` is added).
fn redirect(status: StatusCode, location: &HeaderValue) -> Reply {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(header::LOCATION, location.clone());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    Reply { status, headers, body: Bytes::new(), fetch: None }
}

mod builtin;
pub mod grpc;

pub use builtin::{builtin, sentence};

#[cfg(test)]
mod tests;
