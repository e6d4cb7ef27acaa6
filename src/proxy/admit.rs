//! Admission and routing: the first phase of every request.
//!
//! Data flow: a connection's server side (erratum's HTTP/1.1 loop or hyper) -> [`Proxy::handle`]:
//! request id, host and path normalised, the checks that refuse a request before it is
//! routed (target too long, bad path, ambiguous framing, no table yet), the table lookup ->
//! the error-cache path ([`cache_path`](super::cache_path)) or straight to
//! [`forward`](super::forward). Refusals go through [`respond`](super::respond) like every
//! other status. The table is loaded once per request (one atomic load, never a lock).

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};

use super::cache_path::CacheFirst;
use super::headers::{ClientChain, arrived_over_https, request_id};
use super::intercept::{ProxyError, RequestInfo, grpc};
use super::respond::{Answer, RouteMetrics, Scope};
use super::{Body, ConnInfo, Proxy, RequestBody};
use crate::table::ResolvedPolicy;
use crate::table::annotations::limits::Refused;
use crate::table::annotations::{ResponseHeaders, Rewrite, routing};
use crate::table::{Backend, Route, route};

/// What one routed request carries through the later phases. The request facts, its id and
/// its policies are in `scope` (what `respond` needs); `route` is the same route, unwrapped.
pub(super) struct Ctx<'a> {
    pub route: &'a Arc<Route>,
    /// Where the request goes: the route's backend, or its canary's.
    pub backend: &'a Arc<Backend>,
    pub scope: Scope<'a>,
    pub raw_host: &'a RawHost,
    /// The normalised path and the query: what the route matched is what the backend gets.
    pub path_and_query: &'a http::uri::PathAndQuery,
    /// The request carries credentials (Authorization or Cookie).
    pub credentials: bool,
    pub conn: ConnInfo,
}

impl Proxy {
    /// Handles one request end to end. Never fails: every error becomes a response.
    pub async fn handle(&self, mut req: Request<RequestBody>, conn: ConnInfo) -> Response<Body> {
        let request_id = request_id(req.headers());
        let view = self.views.current(&self.table);
        let table = &view.table;
        let raw_host = RawHost::of(&req);
        let host = route::normalize_host(raw_host.as_str());
        let method = req.method().clone();
        let accept = req.headers().get(header::ACCEPT).cloned();
        let request_uri = req.uri().clone();
        let (path, invalid_path) = match route::normalize_path(request_uri.path()) {
            Ok(path) => (path, None),
            Err(e) => (Cow::Borrowed(request_uri.path()), Some(e)),
        };
        let info = RequestInfo {
            method: &method,
            host: &host,
            path: &path,
            query: request_uri.query(),
            https: arrived_over_https(req.headers(), &conn),
            accept: accept.as_ref().and_then(|a| a.to_str().ok()),
            request_id: request_id.to_str().unwrap_or(""),
            grpc: false,
        };
        let unrouted =
            Scope { policies: &[], route: None, metrics: None, info: &info, request_id: &request_id };
        if request_uri.path_and_query().map_or(0, |pq| pq.as_str().len()) > self.config.max_uri_bytes {
            return self.fail(&ProxyError::UriTooLong { limit: self.config.max_uri_bytes }, &unrouted);
        }
        if let Some(e) = invalid_path {
            return self.fail(&ProxyError::BadRequest { reason: e.to_string() }, &unrouted);
        }
        if let Some(reason) = ambiguous(&req) {
            // Never forwarded: a request two parsers could read two ways is how smuggling starts.
            let mut resp = self.fail(&ProxyError::BadRequest { reason }, &unrouted);
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        if !table.is_ready() {
            return self.fail(&ProxyError::NotReady, &unrouted);
        }
        let found = table.lookup(&host, info.path);
        let Some(route) = found.route else {
            let err =
                ProxyError::NoRoute { host: raw_host.as_str().to_string(), path: info.path.to_string() };
            return self.fail(&err, &Scope { policies: found.policies, ..unrouted });
        };
        let metrics: Option<&RouteMetrics> = view.route_metrics(route, &self.metrics);
        // nginx's rewrite phase: the annotations' redirects (`return`), then HTTPS.
        if let Some(rewrite) = &route.rewrite {
            let https = info.https;
            let target = request_uri.path_and_query().map_or("/", |pq| pq.as_str());
            if let Some((status, location)) =
                annotated_redirect(rewrite, https, raw_host.as_str(), info.path, target)
            {
                let scope = Scope { policies: &route.policies, route: Some(route), metrics, ..unrouted };
                return self.render(Answer::Redirect(status, &location), &scope);
            }
        }
        // CORS and `custom-headers`: every answer from here on gets them; a preflight is
        // answered here (nginx's `return 204` in the same phase).
        let decoration =
            route.response_headers.as_deref().map(|d| (d, req.headers().get(header::ORIGIN).cloned()));
        if let Some((d, origin)) = &decoration
            && d.preflight(&method, origin.as_ref())
        {
            let scope = Scope { policies: &route.policies, route: Some(route), metrics, ..unrouted };
            return decorate(self.render(Answer::Preflight, &scope), decoration.as_ref(), true);
        }
        if route.edge.https_redirect && !info.https && !is_acme_challenge(info.path) {
            let scope = Scope { policies: &route.policies, route: Some(route), metrics, ..unrouted };
            let target = request_uri.path_and_query().map_or("/", |pq| pq.as_str());
            let resp = match https_location(&host, self.config.https_port, target) {
                Some(location) => {
                    self.render(Answer::Redirect(StatusCode::PERMANENT_REDIRECT, &location), &scope)
                }
                None => {
                    let reason = format!("host {:?} cannot be redirected to https", raw_host.as_str());
                    self.fail(&ProxyError::BadRequest { reason }, &scope)
                }
            };
            return decorate(resp, decoration.as_ref(), false);
        }
        // Maintenance, after the redirects and before anything asks a backend (rate limits
        // and authentication included): a switch the user turned on answers first.
        if let Some(on) = &route.maintenance
            && let Some(policy) = self.under_maintenance(on, &req, &conn, &info)
        {
            let scope = Scope { policies: &route.policies, route: Some(route), metrics, ..unrouted };
            let resp = self.fail(&ProxyError::Maintenance { policy }, &scope);
            return decorate(resp, decoration.as_ref(), false);
        }
        // After the redirects: nginx's preaccess phase (rate limits), then its access phase
        // (source ranges, then authentication). The limit on concurrent requests holds until
        // the response head.
        let mut _admitted = None;
        // Authentication's future is made in this block and awaited after it: nothing of
        // the checks' state (the client chain, its address) is kept across the await.
        let authenticating = {
            let mut asking = None;
            if route.limits.is_some() || route.access.is_some() || route.auth.is_some() {
                let chain =
                    conn.trusted.then(|| ClientChain::of(req.headers(), &conn, &self.config.trusted_proxies));
                let client = chain.as_ref().map_or_else(|| conn.client_ip.clone(), |c| c.client_ip.clone());
                let ip = client.to_str().ok().and_then(|c| c.parse::<std::net::IpAddr>().ok());
                let scope = Scope { policies: &route.policies, route: Some(route), metrics, ..unrouted };
                let text = || client.to_str().unwrap_or("").to_string();
                if let (Some(limits), Some(ip)) = (&route.limits, ip) {
                    match limits.admit(ip) {
                        Ok(admitted) => _admitted = Some(admitted),
                        Err(refused) => {
                            let resp = self.fail(&rate_limited(refused, text()), &scope);
                            return decorate(resp, decoration.as_ref(), false);
                        }
                    }
                }
                if let Some(ranges) = &route.access
                    && !ip.is_some_and(|ip| ranges.permits(ip))
                {
                    let resp = self.fail(&ProxyError::Forbidden { client: text() }, &scope);
                    return decorate(resp, decoration.as_ref(), false);
                }
                if route.auth.is_some() {
                    asking = Some(super::auth::Facts {
                        host: &host,
                        http_host: raw_host.as_str(),
                        https: info.https,
                        request_uri: request_uri.path_and_query().map_or("/", |pq| pq.as_str()),
                        forwarded_for: chain.map_or_else(|| conn.client_ip.clone(), |c| c.forwarded_for),
                        client,
                    });
                }
            }
            match (&route.auth, asking) {
                (Some(auth), Some(facts)) => {
                    let scope = Scope { policies: &route.policies, route: Some(route), metrics, ..unrouted };
                    Some(Box::pin(self.authenticate(auth, &mut req, facts, scope)))
                }
                _ => None,
            }
        };
        // Authentication, the last of the access phase, in its own boxed future: routes
        // without it carry none of its state in theirs.
        #[allow(
            clippy::blocks_in_conditions,
            reason = "the block moves the future out, ending its borrow of the request here"
        )]
        let granted = match { authenticating } {
            Some(authenticating) => match authenticating.await {
                Ok(granted) => granted,
                Err(resp) => return decorate(resp, decoration.as_ref(), false),
            },
            None => None,
        };
        // Every answer from here on: the `auth-url` answer's cookies, then the route's headers.
        let finish = |mut resp: Response<Body>| {
            if let Some(granted) = granted {
                granted.apply(&mut resp);
            }
            decorate(resp, decoration.as_ref(), false)
        };
        let path_and_query = match (&path, request_uri.path_and_query()) {
            (Cow::Borrowed(_), Some(pq)) => pq.clone(),
            _ => {
                let query = request_uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                match http::uri::PathAndQuery::try_from(format!("{path}{query}")) {
                    Ok(pq) => pq,
                    Err(e) => {
                        return self
                            .fail(&ProxyError::BadRequest { reason: format!("path: {e}") }, &unrouted);
                    }
                }
            }
        };
        // `rewrite-target`: the backend gets the rewritten path; the route matched the original.
        let path_and_query = match route.rewrite.as_ref().and_then(|r| r.target.as_ref()) {
            Some(target) => match target.apply(info.path, request_uri.query()) {
                Some(rewritten) => match http::uri::PathAndQuery::try_from(rewritten) {
                    Ok(pq) => pq,
                    Err(e) => {
                        let reason = format!("rewritten path: {e}");
                        return self.fail(&ProxyError::BadRequest { reason }, &unrouted);
                    }
                },
                None => path_and_query,
            },
            None => path_and_query,
        };
        // A gRPC route's gRPC calls get gRPC errors; other routes pay one check.
        let info = match &route.protocol {
            Some(p) if p.protocol.grpc() => RequestInfo { grpc: grpc::is_grpc(req.headers()), ..info },
            _ => info,
        };
        // A canary Ingress's share of the route (header, cookie, weight).
        let backend = match &route.canary {
            Some(c) if c.chosen(req.headers()) => &c.backend,
            _ => &route.backend,
        };
        let ctx = Ctx {
            route,
            backend,
            scope: Scope {
                policies: &route.policies,
                route: Some(route),
                metrics,
                info: &info,
                request_id: &request_id,
            },
            raw_host: &raw_host,
            path_and_query: &path_and_query,
            credentials: has_credentials(req.headers()),
            conn,
        };
        if let Some(limit) = route.edge.max_body_bytes
            && http_body::Body::size_hint(req.body()).lower() > limit
        {
            // Before anything goes upstream, and before hyper sends `100 Continue` (it does
            // when the body is first read): the client is told not to send it.
            let mut resp = self.fail(&ProxyError::BodyTooLarge { limit }, &ctx.scope);
            close_http1(&mut resp, req.version() <= Version::HTTP_11);
            return finish(resp);
        }
        // A canary's errors are not the main backend's: never cached for the route.
        let cacheable = match Arc::ptr_eq(backend, &route.backend) {
            true => self.cacheable(route, &info, ctx.credentials, &path_and_query),
            false => None,
        };
        let Some(cacheable) = cacheable else {
            let resp = self.forward(req, &ctx, None).await.0;
            return finish(resp);
        };
        // The request goes to `forward` from here, not through another future: it is moved
        // (copied) once per future it passes through.
        let resp = match self.cache_first(&ctx, &cacheable).await {
            CacheFirst::Answered(resp) => resp,
            CacheFirst::Forward => self.forward(req, &ctx, Some(&cacheable)).await.0,
            CacheFirst::Coalesce(marker) => Box::pin(self.coalesced(req, &ctx, &cacheable, marker)).await,
        };
        finish(resp)
    }

    /// The first policy of `on` (the route's policies whose maintenance is on, in precedence
    /// order) that covers the request and whose bypass does not let it through.
    fn under_maintenance(
        &self,
        on: &[Arc<ResolvedPolicy>],
        req: &Request<RequestBody>,
        conn: &ConnInfo,
        info: &RequestInfo<'_>,
    ) -> Option<Arc<ResolvedPolicy>> {
        let policy = on.iter().find(|p| p.covers(info.host, info.path))?;
        let m = policy.maintenance.as_ref()?;
        let chain = conn.trusted.then(|| ClientChain::of(req.headers(), conn, &self.config.trusted_proxies));
        let client = chain.as_ref().map_or(&conn.client_ip, |c| &c.client_ip);
        let ip = client.to_str().ok().and_then(|c| c.parse::<std::net::IpAddr>().ok());
        if m.lets_through(ip, req.headers()) {
            let key = &policy.key;
            self.metrics
                .maintenance
                .with_label_values(&[key.namespace.as_str(), key.name.as_str(), "bypassed"])
                .inc();
            return None;
        }
        Some(policy.clone())
    }

    /// Answers a request head the HTTP/1.1 server refused before it became a request (too
    /// large, malformed): the same decision as every other error, with the policies that
    /// apply where no host is known (the default policy), a request id, and the built-in page
    /// unless a policy says otherwise. The connection closes after it.
    pub fn refuse_head(&self, err: &ProxyError) -> Response<Body> {
        let request_id = request_id(&HeaderMap::new());
        let table = self.table.load();
        let info = RequestInfo {
            method: &Method::GET,
            host: "",
            path: "/",
            query: None,
            https: false,
            accept: None,
            request_id: request_id.to_str().unwrap_or(""),
            grpc: false,
        };
        let scope = Scope {
            policies: table.unmatched_policies(),
            route: None,
            metrics: None,
            info: &info,
            request_id: &request_id,
        };
        let mut resp = self.fail(err, &scope);
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// Why a request is ambiguous, if it is: hosts two parsers could disagree on (RFC 9112
/// §3.2). Framing is hyper's: it rejects conflicting `Content-Length`s, a `Transfer-Encoding`
/// without final `chunked`, obsolete line folding and malformed chunks with 400, and for
/// `Transfer-Encoding` + `Content-Length` it drops the length, reads chunked and closes the
/// connection after the response (RFC 9112 §6.3), so nothing behind the body is ever read.
fn ambiguous<B>(req: &Request<B>) -> Option<String> {
    let headers = req.headers();
    if headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Some("more than one Host header".into());
    }
    if req.version() == Version::HTTP_11
        && req.uri().authority().is_none()
        && !headers.contains_key(header::HOST)
    {
        return Some("HTTP/1.1 request without Host".into());
    }
    None
}

/// Ends an HTTP/1.x connection after `resp`: the request's unread body must not be taken for
/// the next request. (HTTP/2 streams are reset by hyper instead; `Connection` is not HTTP/2.)
pub(super) fn close_http1(resp: &mut Response<Body>, http1: bool) {
    if http1 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// ACME HTTP-01 challenges are answered over plain HTTP, never redirected (cert-manager and
/// every ACME client need them; ingress-nginx exempts them too).
fn is_acme_challenge(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}

/// Adds a route's response headers (CORS, `custom-headers`) to an answer, for the request's
/// `Origin`. Routes without them pay one check.
fn decorate(
    mut resp: Response<Body>,
    decoration: Option<&(&ResponseHeaders, Option<HeaderValue>)>,
    preflight: bool,
) -> Response<Body> {
    if let Some((d, origin)) = decoration {
        d.apply(origin.as_ref(), preflight, resp.headers_mut());
    }
    resp
}

/// The 429 for a refused request.
fn rate_limited(refused: Refused, client: String) -> ProxyError {
    match refused {
        Refused::Connections => {
            ProxyError::RateLimited { client, limit: "limit-connections", retry_after: None }
        }
        Refused::Rate(wait) => {
            ProxyError::RateLimited { client, limit: "limit-rps/rpm", retry_after: Some(wait) }
        }
    }
}

/// The redirect an Ingress's annotations make of a request, if any, in nginx's order:
/// `from-to-www-redirect` (its own server), `app-root` (for `/` only), then
/// `permanent-redirect` / `temporal-redirect`. The scheme is the one the client used; the
/// host is the client's, with its port, and only when it is a plain host (never a way to
/// another site).
fn annotated_redirect(
    rewrite: &Rewrite,
    https: bool,
    raw_host: &str,
    path: &str,
    target: &str,
) -> Option<(StatusCode, HeaderValue)> {
    let scheme = if https { "https://" } else { "http://" };
    let plain = |h: &str| {
        !h.is_empty()
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']'))
    };
    if let Some(to) = &rewrite.www {
        let port = raw_host.rsplit_once(':').map(|(_, p)| p);
        let port = port.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let mut location = format!("{scheme}{to}");
        if let Some(p) = port {
            location.push(':');
            location.push_str(p);
        }
        location.push_str(target);
        let status = StatusCode::from_u16(routing::WWW_REDIRECT_CODE).ok()?;
        return HeaderValue::try_from(location).ok().map(|l| (status, l));
    }
    if let Some(root) = &rewrite.app_root
        && path == "/"
        && plain(raw_host)
    {
        let location = format!("{scheme}{raw_host}{}", root.to_str().unwrap_or("/"));
        return HeaderValue::try_from(location).ok().map(|l| (StatusCode::FOUND, l));
    }
    let (code, location) = rewrite.redirect.as_ref()?;
    Some((StatusCode::from_u16(*code).ok()?, location.clone()))
}

/// `https://HOST[:PORT]TARGET` for a redirect, when the host is a name or an address (the
/// host is the client's: anything else could turn the redirect into one to another site).
fn https_location(host: &str, port: u16, target: &str) -> Option<HeaderValue> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'.';
    let ipv6 = host.contains(':');
    if host.is_empty() || !host.bytes().all(|b| plain(b) || (ipv6 && b == b':')) {
        return None;
    }
    let mut location = String::with_capacity(16 + host.len() + target.len());
    location.push_str("https://");
    if ipv6 {
        location.push('[');
        location.push_str(host);
        location.push(']');
    } else {
        location.push_str(host);
    }
    if port != 443 {
        location.push(':');
        location.push_str(itoa::Buffer::new().format(port));
    }
    location.push_str(target);
    HeaderValue::try_from(location).ok()
}

fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

/// The host as the client sent it (HTTP/2 `:authority`, else `Host`), held as the request's
/// own bytes: no copy per request.
pub(super) enum RawHost {
    Authority(http::uri::Authority),
    Header(HeaderValue),
    Missing,
}

impl RawHost {
    fn of<B>(req: &Request<B>) -> Self {
        if let Some(authority) = req.uri().authority() {
            return Self::Authority(authority.clone());
        }
        match req.headers().get(header::HOST) {
            Some(h) if h.to_str().is_ok() => Self::Header(h.clone()),
            _ => Self::Missing,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Authority(a) => a.as_str(),
            Self::Header(h) => h.to_str().unwrap_or(""),
            Self::Missing => "",
        }
    }

    /// The host as a header value (for `Host` on HTTP/2 requests and `X-Forwarded-Host`).
    pub(super) fn header_value(&self) -> Option<Cow<'_, HeaderValue>> {
        match self {
            Self::Authority(a) => HeaderValue::from_str(a.as_str()).ok().map(Cow::Owned),
            Self::Header(h) => Some(Cow::Borrowed(h)),
            Self::Missing => Some(Cow::Owned(HeaderValue::from_static(""))),
        }
    }
}
