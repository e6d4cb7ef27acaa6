//! Per-request handling: table lookup -> upstream -> `intercept::decide` -> response.
//!
//! The table is loaded once per request (one atomic load, never a lock). Request and response
//! bodies stream through; only erratum-made replies are whole in memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::Either;
use futures::{FutureExt, StreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

use super::cache::{CacheKey, CachedError, ErrorCache, Lookup, MAX_ENTRY_BODY, NotCacheable};
use super::intercept::{self, Applied, Decision, Outcome, ProxyError, Reply, RequestInfo};
use super::pages::PageStore;
use super::ttl;
use super::upstream::{self, Upstreams};
use super::{Body, BoxError, RequestBody};
use crate::crd::Mode;
use crate::metrics::{ProxyMetrics, STATUS_CLASSES, status_class_index};
use crate::table::accept;
use crate::table::{ResolvedPolicy, Route, TableReader, route};

/// `X-Request-ID`: kept when the client sends a sane one, generated otherwise.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Longest client-sent request id that is kept.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Timeouts and limits of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// TCP connect timeout to an upstream (-> 504 when it fires, rule 42).
    pub connect_timeout: Duration,
    /// Time from sending a request to the upstream's response headers (-> 504).
    pub response_timeout: Duration,
    /// Time a client has to send its request headers (slowloris guard); also the idle
    /// keep-alive timeout of HTTP/1.1 connections.
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body from the client (-> the upstream
    /// request is aborted). The upstream response body gets `response_timeout` likewise.
    pub client_body_timeout: Duration,
    /// Largest request head (request line + headers) accepted, in bytes (-> 431).
    pub max_header_bytes: usize,
    /// Most request headers accepted (-> 431).
    pub max_headers: usize,
    /// Longest request target (path and query) accepted, in bytes (-> 414).
    pub max_uri_bytes: usize,
    /// Most open client connections, all listeners together (idle ones are shed at the limit).
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8192,
            max_connections: super::conns::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// What the proxy knows about the client connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// The client IP as a header value, made once per connection (`X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// The connection's place under `--max-connections`: an upgraded connection (WebSocket)
    /// outlives hyper's connection future and keeps it until the tunnel closes.
    pub slot: Option<Arc<super::conns::Slot>>,
    /// Requests run one at a time, on the connection's own task (erratum's HTTP/1.1 loop):
    /// per-request deadlines can live in the slot.
    pub one_at_a_time: bool,
}

impl ConnInfo {
    /// Connection facts for a client.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        // An IP address is always a valid header value; the fallback only keeps this total.
        let client_ip = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { peer, tls, client_ip, slot: None, one_at_a_time: false }
    }

    /// The same, holding `slot` for upgrades.
    pub fn with_slot(mut self, slot: Arc<super::conns::Slot>) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The same, for a connection whose requests run one at a time on its own task.
    pub fn one_at_a_time(mut self) -> Self {
        self.one_at_a_time = true;
        self
    }
}

/// The request handler shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    table: TableReader,
    client: Upstreams,
    metrics: ProxyMetrics,
    config: ProxyConfig,
    pages: PageStore,
    cache: Option<ErrorCache>,
}

/// Most bytes of a replaced upstream body read so its connection can go back to the pool;
/// beyond it (or after [`DRAIN_TIMEOUT`]) the connection is closed instead.
pub const DRAIN_LIMIT: usize = 256 * 1024;
/// Longest a replaced upstream body is drained.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A request the error cache may answer: its key and the policy that owns the entry.
type Cacheable = (CacheKey, Arc<ResolvedPolicy>);

impl Proxy {
    /// Creates the handler and starts its page fetcher (stopped by `shutdown`).
    pub fn new(
        table: TableReader,
        metrics: ProxyMetrics,
        config: ProxyConfig,
        cache: Option<ErrorCache>,
        shutdown: CancellationToken,
    ) -> Self {
        let client = Upstreams::new(config.connect_timeout);
        let pages = PageStore::spawn(table.clone(), client.clone(), metrics.clone(), shutdown);
        Self { client, table, metrics, config, pages, cache }
    }

    /// The data-plane configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The pinned error pages.
    pub fn pages(&self) -> &PageStore {
        &self.pages
    }

    /// Whether the connection must close after answering `req`: a chunked HTTP/1 request may
    /// have carried a Content-Length that hyper dropped (RFC 9112 §6.3: chunked wins), so
    /// whatever follows its body on the connection is suspect. Checked by the connection's
    /// service before [`Proxy::handle`] (no extra future layer on the request path).
    pub fn must_close_after<B>(req: &Request<B>) -> bool {
        req.version() != Version::HTTP_2 && req.headers().contains_key(header::TRANSFER_ENCODING)
    }

    /// Handles one request end to end. Never fails: every error becomes a response.
    pub async fn handle(&self, req: Request<RequestBody>, conn: ConnInfo) -> Response<Body> {
        let request_id = request_id(req.headers());
        let table = self.table.load();
        let raw_host = RawHost::of(&req);
        let host = route::normalize_host(raw_host.as_str());
        let method = req.method().clone();
        let accept = req.headers().get(header::ACCEPT).cloned();
        let request_uri = req.uri().clone();
        let (path, invalid_path) = match route::normalize_path(request_uri.path()) {
            Ok(path) => (path, None),
            Err(e) => (std::borrow::Cow::Borrowed(request_uri.path()), Some(e)),
        };
        let info = RequestInfo {
            method: &method,
            host: &host,
            path: &path,
            accept: accept.as_ref().and_then(|a| a.to_str().ok()),
            request_id: request_id.to_str().unwrap_or(""),
        };
        if request_uri.path_and_query().map_or(0, |pq| pq.as_str().len()) > self.config.max_uri_bytes {
            let err = ProxyError::UriTooLong { limit: self.config.max_uri_bytes };
            return self.fail(&[], None, &info, &err, &request_id);
        }
        if let Some(e) = invalid_path {
            return self.fail(
                &[],
                None,
                &info,
                &ProxyError::BadRequest { reason: e.to_string() },
                &request_id,
            );
        }
        if let Some(reason) = ambiguous(&req) {
            // Never forwarded: a request two parsers could read two ways is how smuggling starts.
            let mut resp = self.fail(&[], None, &info, &ProxyError::BadRequest { reason }, &request_id);
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        if !table.is_ready() {
            return self.fail(&[], None, &info, &ProxyError::NotReady, &request_id);
        }
        let lookup = table.lookup(&host, info.path);
        let Some(route) = lookup.route else {
            let err =
                ProxyError::NoRoute { host: raw_host.as_str().to_string(), path: info.path.to_string() };
            return self.fail(lookup.policies, None, &info, &err, &request_id);
        };
        let path_and_query = match (&path, request_uri.path_and_query()) {
            (std::borrow::Cow::Borrowed(_), Some(pq)) => pq.clone(),
            _ => {
                let query = request_uri.query().map(|q| format!("?{q}")).unwrap_or_default();
                match http::uri::PathAndQuery::try_from(format!("{path}{query}")) {
                    Ok(pq) => pq,
                    Err(e) => {
                        let err = ProxyError::BadRequest { reason: format!("path: {e}") };
                        return self.fail(&[], None, &info, &err, &request_id);
                    }
                }
            }
        };
        let ctx = Ctx {
            route,
            info: &info,
            request_id: &request_id,
            raw_host: &raw_host,
            path_and_query: &path_and_query,
            credentials: has_credentials(req.headers()),
            conn,
        };

        let cacheable = self.cacheable(route, &info, ctx.credentials, &path_and_query);
        let (Some((key, owner)), Some(cache)) = (&cacheable, &self.cache) else {
            return self.forward(req, &ctx, None).await.0;
        };
        let mut req = req;
        match cache.lookup(key, owner).await {
            Lookup::Hit(entry) => return self.serve_entry(&entry, true, &ctx),
            Lookup::Miss { coalesce: Some(marker) } => {
                // A key that was an error recently: concurrent misses share one upstream
                // request (above all the herd that arrives when a popular entry expires).
                let mut leader_response = None;
                let mut pending = Some(req);
                // Boxed: the flight holds a whole `forward` plus moka's machinery; inline it
                // would make every request's future that much larger (see `ErrorCache::lookup`).
                let shared = Box::pin(cache.flight(key, marker, &owner.key, async {
                    // A flight runs its init once; should that ever change, the caller
                    // forwards its own request below.
                    let Some(req) = pending.take() else { return Err(NotCacheable) };
                    let (resp, entry) = self.forward(req, &ctx, cacheable.as_ref()).await;
                    leader_response = Some(resp);
                    entry.ok_or(NotCacheable)
                }))
                .await;
                if let Some(resp) = leader_response {
                    return resp;
                }
                match (shared, pending.take()) {
                    (Ok(entry), _) => return self.serve_entry(&entry, true, &ctx),
                    (Err(_), Some(own)) => req = own,
                    (Err(_), None) => {
                        let err =
                            ProxyError::UpstreamReset { upstream: "coalesced".into(), reason: "lost".into() };
                        return self.fail(&route.policies, Some(route), &info, &err, &request_id);
                    }
                }
            }
            Lookup::Miss { coalesce: None } => {}
        }
        self.forward(req, &ctx, cacheable.as_ref()).await.0
    }

    /// The cache key of a request, when the error cache may answer it: GET/HEAD, a route
    /// covered by a policy in Enforce mode, and no credentials unless a rule opts in.
    fn cacheable(
        &self,
        route: &Route,
        info: &RequestInfo<'_>,
        credentials: bool,
        path_and_query: &http::uri::PathAndQuery,
    ) -> Option<Cacheable> {
        self.cache.as_ref()?;
        if info.method != Method::GET && info.method != Method::HEAD {
            return None;
        }
        let owner =
            route.policies.iter().find(|p| p.mode == Mode::Enforce && p.covers(info.host, info.path))?;
        if credentials && !route.policies.iter().any(|p| p.caches_with_credentials()) {
            return None;
        }
        let policies = route.policies.iter().fold(0u64, |acc, p| acc.rotate_left(7) ^ p.fingerprint);
        let format =
            u8::try_from(accept::choose(info.accept, ["text/html", "application/json"])).unwrap_or(0);
        let path_and_query = path_and_query.as_str().to_string();
        Some((CacheKey { policies, host: info.host.to_string(), path_and_query, format }, owner.clone()))
    }

    /// The cache TTL of an error, or `None` when it is not cached.
    fn error_ttl(
        &self,
        ctx: &Ctx<'_>,
        owner: &ResolvedPolicy,
        status: StatusCode,
        headers: &HeaderMap,
        from_proxy: bool,
        credentials: bool,
    ) -> Option<Duration> {
        let cache = self.cache.as_ref()?;
        let code = status.as_u16();
        let deciding = intercept::select(&ctx.route.policies, ctx.info, code, from_proxy)
            .filter(|(p, _)| p.mode == Mode::Enforce);
        let rule = deciding.map(|(_, r)| r);
        if credentials && !rule.is_some_and(|r| r.cache_with_credentials) {
            return None;
        }
        let default = deciding.map_or(owner.default_min_ttl, |(p, _)| p.default_min_ttl);
        let ttl_rule = ttl::TtlRule::new(code, rule, default);
        ttl::error_ttl(ctx.info.method, code, headers, ttl_rule, cache.clock().system_now())
    }

    /// Sends the request upstream and answers it. With a cache key, a cacheable error is
    /// stored and returned as well.
    async fn forward(
        &self,
        mut req: Request<RequestBody>,
        ctx: &Ctx<'_>,
        cacheable: Option<&Cacheable>,
    ) -> (Response<Body>, Option<Arc<CachedError>>) {
        let route = ctx.route;
        let info = ctx.info;
        let authority = match route.backend.pick_authority() {
            Ok(a) => a,
            Err(reason) => {
                let err = ProxyError::NoEndpoints {
                    service: route.backend.service.to_string(),
                    reason: reason.to_string(),
                };
                return (self.fail(&route.policies, Some(route), info, &err, ctx.request_id), None);
            }
        };
        // Origin-form: the request's normalised path and query, no URI parsing per request.
        let uri = http::Uri::from(ctx.path_and_query.clone());
        let credentials = ctx.credentials;
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        let host = ctx.raw_host.header_value();
        let forwarded =
            upstream_fields(&mut parts.headers, host.as_deref(), &ctx.conn, ctx.request_id, upgrade);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let body = upstream::IdleTimeout::new(body, self.config.client_body_timeout)
            .map_err(|e| BoxError::from(upstream::ClientBody(e)));
        let upstream_req = Request::from_parts(parts, body.boxed());

        let started = Instant::now();
        // Pinned here so that the timeout wrappers move a pointer, not the exchange's state
        // (~2 KiB, copied twice per request otherwise).
        let send = std::pin::pin!(self.client.send(authority.as_str(), upstream_req, forwarded.as_slice()));
        let timeout = self.config.response_timeout;
        let result = match ctx.conn.slot.as_deref().filter(|_| ctx.conn.one_at_a_time) {
            Some(slot) => Either::Left(slot.within(timeout, send)),
            None => Either::Right(tokio::time::timeout(timeout, send).map(Result::ok)),
        }
        .await;
        let seconds = started.elapsed().as_secs_f64();
        match self.route_metrics(route) {
            Some(m) => m.upstream_seconds.observe(seconds),
            None => {
                let (ns, ing) = labels_of(Some(route));
                self.metrics.upstream_seconds.with_label_values(&[ns, ing]).observe(seconds);
            }
        }

        let mut resp = match result {
            None => {
                let err = ProxyError::UpstreamTimeout {
                    upstream: authority.to_string(),
                    after: self.config.response_timeout,
                };
                return Box::pin(self.proxy_error(err, ctx, cacheable, credentials)).await;
            }
            Some(Err(e)) => {
                let err = upstream::classify(&e, authority.as_str());
                return Box::pin(self.proxy_error(err, ctx, cacheable, credentials)).await;
            }
            Some(Ok(resp)) => resp,
        };

        let upstream_status = resp.status();
        if upstream_status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            // The tunnel counts as a busy connection until it closes: under the limit, never
            // shed as idle.
            let busy = ctx.conn.slot.as_ref().map(|slot| slot.busy());
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(e) => tracing::debug!("upgrade failed: {e}"),
                }
                drop(busy);
            });
        }

        let (parts, body) = resp.into_parts();
        // Between two pieces of the body the upstream gets the same time as for its head.
        let mut body: Body = upstream::IdleTimeout::new(body, self.config.response_timeout).boxed();
        if let Some((key, owner)) = cacheable
            && let Some(cache) = &self.cache
            && upstream_status.as_u16() >= 400
        {
            let ttl = if parts.headers.contains_key(header::CONTENT_ENCODING) {
                None // an encoded body would need the request's Accept-Encoding in the key
            } else {
                self.error_ttl(ctx, owner, upstream_status, &parts.headers, false, credentials)
            };
            if let Some(ttl) = ttl {
                match Box::pin(read_bounded(body, MAX_ENTRY_BODY, self.config.response_timeout)).await {
                    Bounded::Whole(bytes) => {
                        let service = Some(route.backend.service.clone());
                        let entry = cache.entry(
                            upstream_status,
                            &parts.headers,
                            bytes,
                            None,
                            owner.key.clone(),
                            service,
                            ttl,
                        );
                        cache.insert(key.clone(), entry.clone()).await;
                        return (self.serve_entry(&entry, false, ctx), Some(entry));
                    }
                    Bounded::TooLarge(rest) => body = rest,
                    Bounded::Failed(reason) => {
                        // Rule 15: an incomplete response is never cached. When a policy
                        // replaces this status anyway, the broken body does not matter: the
                        // client gets the replacement (uncached); otherwise a 502.
                        let outcome = Outcome::Upstream { status: upstream_status, headers: &parts.headers };
                        if let Decision::Replace { .. } =
                            intercept::decide(&route.policies, info, outcome, &self.pages)
                        {
                            return (self.respond(parts, whole(Bytes::new()), ctx), None);
                        }
                        let err = ProxyError::UpstreamReset { upstream: authority.to_string(), reason };
                        return (self.fail(&route.policies, Some(route), info, &err, ctx.request_id), None);
                    }
                }
            }
        }
        let mut response = self.respond(parts, body, ctx);
        if cacheable.is_some() && upstream_status.as_u16() >= 400 {
            response.headers_mut().insert(X_CACHE.clone(), HeaderValue::from_static("Error from erratum"));
        }
        (response, None)
    }

    /// An erratum-made error on the way upstream. Connect failures and timeouts (502/504) count
    /// as origin 5xx for caching (rule 41).
    async fn proxy_error(
        &self,
        err: ProxyError,
        ctx: &Ctx<'_>,
        cacheable: Option<&Cacheable>,
        credentials: bool,
    ) -> (Response<Body>, Option<Arc<CachedError>>) {
        if let Some((key, owner)) = cacheable
            && let Some(cache) = &self.cache
            && matches!(err, ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamTimeout { .. })
            && let Some(ttl) = self.error_ttl(ctx, owner, err.status(), &HeaderMap::new(), true, credentials)
        {
            self.note(&err, ctx.info);
            let service = Some(ctx.route.backend.service.clone());
            let entry = cache.entry(
                err.status(),
                &HeaderMap::new(),
                Bytes::new(),
                Some(err),
                owner.key.clone(),
                service,
                ttl,
            );
            cache.insert(key.clone(), entry.clone()).await;
            return (self.serve_entry(&entry, false, ctx), Some(entry));
        }
        (self.fail(&ctx.route.policies, Some(ctx.route), ctx.info, &err, ctx.request_id), None)
    }

    /// Answers an upstream response that is not served from the cache.
    fn respond(&self, mut parts: http::response::Parts, body: Body, ctx: &Ctx<'_>) -> Response<Body> {
        let upstream_status = parts.status;
        let route = Some(ctx.route);
        let outcome = Outcome::Upstream { status: upstream_status, headers: &parts.headers };
        match intercept::decide(&ctx.route.policies, ctx.info, outcome, &self.pages) {
            Decision::PassThrough => {
                strip_hop_by_hop(&mut parts.headers, upstream_status == StatusCode::SWITCHING_PROTOCOLS);
                self.count(route, parts.status, Some(upstream_status));
                Response::from_parts(parts, body)
            }
            Decision::Report(applied) => {
                self.record(&applied, true);
                strip_hop_by_hop(&mut parts.headers, false);
                self.count(route, parts.status, Some(upstream_status));
                Response::from_parts(parts, body)
            }
            Decision::Rewrite { status, headers, applied } => {
                self.record(&applied, false);
                strip_hop_by_hop(&mut parts.headers, false);
                for (name, value) in &headers {
                    parts.headers.insert(name.clone(), value.clone());
                }
                parts.status = status;
                self.count(route, status, Some(upstream_status));
                Response::from_parts(parts, body)
            }
            Decision::Replace { reply, applied } => {
                if let Some(applied) = &applied {
                    self.record(applied, false);
                }
                drain(body);
                self.count(route, reply.status, Some(upstream_status));
                into_response(reply, ctx.request_id)
            }
        }
    }

    /// Answers from a cache entry; the page substitution runs now, not when it was stored.
    fn serve_entry(&self, entry: &CachedError, hit: bool, ctx: &Ctx<'_>) -> Response<Body> {
        let outcome = match &entry.proxy_error {
            Some(err) => Outcome::Proxy(err),
            None => Outcome::Upstream { status: entry.status, headers: &entry.headers },
        };
        let from_entry = |status: StatusCode| {
            let mut resp = Response::new(whole(entry.body.clone()));
            *resp.status_mut() = status;
            *resp.headers_mut() = entry.headers.clone();
            resp
        };
        let mut resp = match intercept::decide(&ctx.route.policies, ctx.info, outcome, &self.pages) {
            Decision::PassThrough => from_entry(entry.status),
            Decision::Report(applied) => {
                self.record(&applied, true);
                from_entry(entry.status)
            }
            Decision::Rewrite { status, headers, applied } => {
                self.record(&applied, false);
                let mut resp = from_entry(status);
                for (name, value) in &headers {
                    resp.headers_mut().insert(name.clone(), value.clone());
                }
                resp
            }
            Decision::Replace { reply, applied } => {
                if let Some(applied) = &applied {
                    self.record(applied, applied.policy.mode == Mode::ReportOnly);
                }
                into_response(reply, ctx.request_id)
            }
        };
        let headers = resp.headers_mut();
        headers.insert(
            X_CACHE.clone(),
            HeaderValue::from_static(if hit { "ErrorHit from erratum" } else { "Error from erratum" }),
        );
        if hit && let Some(cache) = &self.cache {
            let age = cache.clock().now().saturating_duration_since(entry.stored_at).as_secs();
            headers.insert(header::AGE, HeaderValue::from(age));
        }
        let upstream = entry.proxy_error.is_none().then_some(entry.status);
        self.count(Some(ctx.route), resp.status(), upstream);
        resp
    }

    fn fail(
        &self,
        policies: &[Arc<ResolvedPolicy>],
        route: Option<&Arc<Route>>,
        info: &RequestInfo<'_>,
        err: &ProxyError,
        request_id: &HeaderValue,
    ) -> Response<Body> {
        self.note(err, info);
        let reply = match intercept::decide(policies, info, Outcome::Proxy(err), &self.pages) {
            Decision::Replace { reply, applied } => {
                if let Some(applied) = &applied {
                    self.record(applied, applied.policy.mode == Mode::ReportOnly);
                }
                reply
            }
            // Proxy errors always get a reply; these arms cannot occur but must not panic.
            Decision::PassThrough | Decision::Report(_) | Decision::Rewrite { .. } => {
                intercept::builtin(err.status(), info.accept)
            }
        };
        self.count(route, reply.status, None);
        into_response(reply, request_id)
    }

    /// Counts an error erratum made and logs it at debug level: under an outage every request
    /// fails, and a log line each would cost more than the request; the
    /// `erratum_proxy_errors_total{reason}` counter is the signal to alert on.
    fn note(&self, err: &ProxyError, info: &RequestInfo<'_>) {
        tracing::debug!(request_id = info.request_id, "{err}");
        self.metrics.proxy_errors.with_label_values(&[err.reason()]).inc();
    }

    fn record(&self, applied: &Applied, report_only: bool) {
        let key = &applied.policy.key;
        let code = applied.code.as_str();
        let counter =
            if report_only { &self.metrics.error_pages_report_only } else { &self.metrics.error_pages };
        counter.with_label_values(&[key.namespace.as_str(), key.name.as_str(), code, applied.source()]).inc();
        if applied.page_missing {
            self.metrics.page_fallbacks.with_label_values(&[key.namespace.as_str(), key.name.as_str()]).inc();
        }
    }

    fn count(&self, route: Option<&Arc<Route>>, served: StatusCode, upstream: Option<StatusCode>) {
        let served = status_class_index(Some(served.as_u16()));
        let upstream = status_class_index(upstream.map(|s| s.as_u16()));
        let labels = |(ns, ing)| [ns, ing, STATUS_CLASSES[served], STATUS_CLASSES[upstream]];
        match route.and_then(|r| self.route_metrics(r)) {
            Some(m) => m.requests[served][upstream]
                .get_or_init(|| {
                    self.metrics.requests.with_label_values(&labels(labels_of(route.map(|r| &**r))))
                })
                .inc(),
            None => self.metrics.requests.with_label_values(&labels(labels_of(route.map(|r| &**r)))).inc(),
        }
    }

    /// The metric handles of `route`'s Ingress, looked up on its first request in this table.
    /// (`None` only if something else were attached to routes; nothing else is.)
    fn route_metrics<'r>(&self, route: &'r Route) -> Option<&'r RouteMetrics> {
        crate::table::attached(&route.attached, || {
            let (ns, ing) = labels_of(Some(route));
            RouteMetrics {
                upstream_seconds: self.metrics.upstream_seconds.with_label_values(&[ns, ing]),
                requests: Default::default(),
            }
        })
    }
}

/// Metric handles of one Ingress's routes. Prometheus finds a labelled child by hashing every
/// label value on each call: 0.37 µs of a proxied request's ~12 µs for its three lookups
/// (BENCHMARKS.md). These are found once per table and Ingress.
struct RouteMetrics {
    upstream_seconds: prometheus::Histogram,
    /// `requests` children by (served, upstream) status class, made on first use so that
    /// combinations never seen export no series.
    requests: [[std::sync::OnceLock<prometheus::IntCounter>; STATUS_CLASSES.len()]; STATUS_CLASSES.len()],
}

/// What one request carries through the proxy.
struct Ctx<'a> {
    route: &'a Arc<Route>,
    info: &'a RequestInfo<'a>,
    request_id: &'a HeaderValue,
    raw_host: &'a RawHost,
    /// The normalised path and the query: what the route matched is what the backend gets.
    path_and_query: &'a http::uri::PathAndQuery,
    /// The request carries credentials (Authorization or Cookie).
    credentials: bool,
    conn: ConnInfo,
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

fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

/// A body read up to a bound.
enum Bounded {
    /// All of it.
    Whole(Bytes),
    /// Over the bound: what was read followed by the rest, to stream on uncached.
    TooLarge(Body),
    /// The body failed (reset, wrong length, timeout): the response is incomplete.
    Failed(String),
}

async fn read_bounded(mut body: Body, limit: usize, timeout: Duration) -> Bounded {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let read = tokio::time::timeout(timeout, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        total += data.len();
                        chunks.push(data);
                        if total > limit {
                            return Ok(false);
                        }
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(true)
    })
    .await;
    match read {
        Err(_) => Bounded::Failed(format!("body not complete within {timeout:?}")),
        Ok(Err(e)) => Bounded::Failed(e),
        Ok(Ok(true)) => {
            let mut whole = bytes::BytesMut::with_capacity(total);
            for c in chunks {
                whole.extend_from_slice(&c);
            }
            Bounded::Whole(whole.freeze())
        }
        Ok(Ok(false)) => {
            let head = futures::stream::iter(chunks.into_iter().map(|c| Ok::<_, BoxError>(Frame::data(c))));
            let rest = http_body_util::BodyStream::new(body);
            Bounded::TooLarge(BodyExt::boxed(StreamBody::new(head.chain(rest))))
        }
    }
}

/// Reads and discards a replaced upstream body (bounded in size and time) so its keep-alive
/// connection returns to the pool; nginx closes it instead.
fn drain(mut body: Body) {
    use futures::FutureExt;
    // Most error bodies arrive with their head: read in place what is there, without a task
    // or a box; only a body still on its way gets a task.
    let mut seen = 0usize;
    loop {
        match body.frame().now_or_never() {
            Some(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_LIMIT {
                    return;
                }
            }
            Some(None | Some(Err(_))) => return,
            None => break,
        }
    }
    tokio::spawn(async move {
        let rest = async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_LIMIT {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, rest).await;
    });
}

fn labels_of(route: Option<&Route>) -> (&str, &str) {
    match route.and_then(|r| r.ingress.as_ref()) {
        Some(k) => (k.namespace.as_str(), k.name.as_str()),
        None => ("", ""),
    }
}

/// A body erratum holds whole in memory (pages, cache entries).
fn whole(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn into_response(reply: Reply, request_id: &HeaderValue) -> Response<Body> {
    let mut resp = Response::new(whole(reply.body));
    *resp.status_mut() = reply.status;
    *resp.headers_mut() = reply.headers;
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    resp
}

/// The host as the client sent it (HTTP/2 `:authority`, else `Host`), held as the request's
/// own bytes: no copy per request.
enum RawHost {
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
    fn header_value(&self) -> Option<std::borrow::Cow<'_, HeaderValue>> {
        use std::borrow::Cow;
        match self {
            Self::Authority(a) => HeaderValue::from_str(a.as_str()).ok().map(Cow::Owned),
            Self::Header(h) => Some(Cow::Borrowed(h)),
            Self::Missing => Some(Cow::Owned(HeaderValue::from_static(""))),
        }
    }
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        let b = id.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| c.is_ascii_graphic()) {
            return id.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (pair, byte) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are always a valid header value; the fallback only keeps this total.
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy; with `keep_upgrade` the
/// `Upgrade` handshake is kept so WebSocket and friends pass through.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most requests carry none of these, and a remove is a
    // hash and a probe per name.
    let (mut connection, mut fixed, mut upgrade) = (false, false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        } else if HOP_BY_HOP.contains(name) {
            fixed = true;
        }
    }
    if connection {
        // Vec::new does not allocate: only a Connection header naming other headers does.
        let mut listed: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue; // not header names (keep-alive is removed below anyway)
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
        for name in listed {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    if fixed {
        for name in HOP_BY_HOP.iter() {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Hop-by-hop headers besides `Connection` and `Upgrade` (RFC 9110 §7.6.1), never forwarded.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The fields erratum sets on a request going upstream, replacing any of the same name the
/// client sent: without a configured list of trusted proxies a client-sent X-Forwarded-For is
/// a spoofing vector. `Host` is among them only when the request has none (HTTP/2 sends the
/// host as `:authority`). Borrowed from the request's context: no copy per request.
fn forwarded_fields<'a>(
    host: Option<&'a HeaderValue>,
    add_host: bool,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
) -> Forwarded<'a> {
    let mut fields = Forwarded::default();
    if add_host && let Some(h) = host {
        fields.push(&header::HOST, h);
    }
    fields.push(&X_FORWARDED_FOR, &conn.client_ip);
    fields.push(&X_REAL_IP, &conn.client_ip);
    fields.push(&X_FORWARDED_PROTO, if conn.tls { &HTTPS } else { &HTTP });
    if let Some(h) = host {
        fields.push(&X_FORWARDED_HOST, h);
    }
    fields.push(&X_REQUEST_ID, request_id);
    fields
}

/// Up to six borrowed header fields, on the stack.
struct Forwarded<'a> {
    fields: [(&'a HeaderName, &'a HeaderValue); 6],
    len: usize,
}

impl Default for Forwarded<'_> {
    fn default() -> Self {
        Self { fields: [(&header::HOST, &HTTP); 6], len: 0 }
    }
}

impl<'a> Forwarded<'a> {
    fn push(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        self.fields[self.len] = (name, value);
        self.len += 1;
    }

    fn as_slice(&self) -> &[(&'a HeaderName, &'a HeaderValue)] {
        &self.fields[..self.len]
    }
}

/// What goes upstream besides the request's own fields: edits `headers` only where they must
/// change (hop-by-hop fields removed, split cookies joined; most requests have neither) and
/// returns the [`forwarded_fields`], which the upstream client sets as it sends (erratum's own
/// exchange writes them with the head: no header-map insert or value clone per request).
fn upstream_fields<'a>(
    headers: &mut HeaderMap,
    host: Option<&'a HeaderValue>,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
    upgrade: bool,
) -> Forwarded<'a> {
    strip_hop_by_hop(headers, upgrade);
    // HTTP/2 clients may split cookies (RFC 9113 §8.2.3); HTTP/1.1 upstreams need one.
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, v);
        }
    }
    forwarded_fields(host, !headers.contains_key(header::HOST), conn, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn upgrades_keep_their_handshake() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn request_ids_are_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert_ne!(generated, request_id(&HeaderMap::new()), "generated ids differ");
    }

    #[test]
    fn forwarded_headers_are_set_not_trusted() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let conn = ConnInfo::new("192.0.2.7:5000".parse().unwrap(), true);
        let (host, id) = (HeaderValue::from_static("shop.example.com"), HeaderValue::from_static("id"));
        // As the upstream client applies them: the set fields replace the client's.
        for (name, value) in upstream_fields(&mut h, Some(&host), &conn, &id, false).as_slice() {
            h.insert((*name).clone(), (*value).clone());
        }
        assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "shop.example.com");
        assert_eq!(h[header::HOST], "shop.example.com");
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }
}
