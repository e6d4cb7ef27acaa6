//! Serve stale on error (`spec.staleIfError`, RFC 5861 `stale-if-error`, nginx's
//! `proxy_cache_use_stale`): the last good response of each GET on a covered route is kept,
//! and answers the request when the backend fails.
//!
//! Data flow: [`forward`](super::forward) asks `Proxy::stale_ask` before sending (routes
//! without `Route::stale` skip it: one branch), which finds the request's copy. A good
//! answer that a shared cache may store (RFC 9111 §3) streams on through a `Keeping` tee
//! that stores it whole at its end, at most once a second per copy. A failure — connect
//! error, timeout, reset, no ready endpoint, or a status the policy lists — is answered by
//! `Proxy::stale_answer` with the copy while it is within its allowed staleness, rendered
//! through the one `decide()` as the upstream's 200 (or 304, when the client's validators
//! match it) with `Age` and `X-Cache: StaleHit from erratum`.
//!
//! The store is its own moka cache bounded by `--stale-cache-max-bytes`, beside the error
//! cache: a flood of errors never evicts good copies, nor the reverse.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, LastModified};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Frame;

use super::admit::Ctx;
use super::cache::Clock;
use super::intercept::ProxyError;
use super::respond::Answer;
use super::{Body, BoxError, Proxy, RequestBody, ttl};
use crate::metrics::StaleMetrics;
use crate::table::ResolvedPolicy;
use crate::table::policy::StaleIfError;

/// Default `--stale-cache-max-bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest body kept; larger responses stream through with no copy.
pub const MAX_ENTRY_BODY: usize = 1024 * 1024;
/// Copies kept per URL, one per set of request values of the response's `Vary` fields.
const MAX_VARIANTS: usize = 4;
/// Most `Vary` fields a kept response may name.
const MAX_VARY_FIELDS: usize = 8;
/// Slots of `StaleStore::recent`.
const RECENT_SLOTS: usize = 4096;
/// Bytes charged per copy besides its body and headers (moka's entry, the structs, rounding).
const ENTRY_OVERHEAD: usize = 512;

/// A URL whose good responses are kept: the host and the path and query as requested.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url {
    host: Box<str>,
    path_and_query: Box<str>,
}

/// The copies of one URL. The store is keyed by the URL's hash, so that a request finds its
/// copy without building a key; the URL itself is compared on reading.
#[derive(Debug)]
struct Kept {
    url: Url,
    copies: Box<[Arc<StaleCopy>]>,
}

/// A kept response.
#[derive(Debug)]
pub struct StaleCopy {
    status: StatusCode,
    /// As the origin sent them, hop-by-hop fields and `Age` removed.
    headers: HeaderMap,
    body: Bytes,
    /// The request's values of the response's `Vary` fields.
    vary: Box<[(HeaderName, Option<HeaderValue>)]>,
    /// When it was stored (the store's clock).
    stored_at: Instant,
    /// Its age when stored (RFC 9111 §4.2.3: the origin's `Age`, or the time since its `Date`).
    initial_age: u64,
    /// Its freshness lifetime (`s-maxage`, `max-age`, `Expires`; none: 0).
    lifetime: u64,
    /// The origin's `stale-if-error=N`, which wins over the policy's.
    origin_allows: Option<u64>,
    weight: usize,
}

impl StaleCopy {
    fn age(&self, now: Instant) -> u64 {
        self.initial_age + now.saturating_duration_since(self.stored_at).as_secs()
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, value)| headers.get(name) == value.as_ref())
    }
}

type Variants = Arc<Kept>;

/// The kept copies.
#[derive(Clone)]
pub struct StaleStore {
    copies: moka::sync::Cache<u64, Variants>,
    hasher: foldhash::fast::RandomState,
    /// When each URL was last copied, by its key's low bits: the high half of the key and the
    /// second (since `base`) in one word. Read on every good answer instead of the store (a
    /// moka read costs ~1,100 instructions; this, one load); two URLs in one slot only copy
    /// more often.
    recent: Arc<[std::sync::atomic::AtomicU64]>,
    base: Instant,
    clock: Arc<dyn Clock>,
    metrics: StaleMetrics,
}

impl std::fmt::Debug for StaleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleStore").field("entries", &self.copies.entry_count()).finish()
    }
}

/// Expires a URL's copies when the last of them can no longer be served under any policy
/// (their lifetime and the longest staleness a policy allows, a year).
struct Expiry;

impl moka::Expiry<u64, Variants> for Expiry {
    fn expire_after_create(&self, _: &u64, kept: &Variants, _: Instant) -> Option<Duration> {
        let secs = kept
            .copies
            .iter()
            .map(|c| {
                (c.lifetime + c.origin_allows.unwrap_or(u64::from(crate::table::MAX_TTL_SECONDS)))
                    .saturating_sub(c.initial_age)
            })
            .max()
            .unwrap_or(0);
        Some(Duration::from_secs(secs))
    }

    fn expire_after_update(
        &self,
        key: &u64,
        kept: &Variants,
        at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, kept, at)
    }
}

impl StaleStore {
    /// A store of at most `max_bytes`, on `clock`.
    pub fn new(max_bytes: u64, clock: Arc<dyn Clock>, metrics: StaleMetrics) -> Self {
        let copies = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_: &u64, v: &Variants| {
                let url = v.url.host.len() + v.url.path_and_query.len();
                let bytes = url + v.copies.iter().map(|c| c.weight).sum::<usize>();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(Expiry)
            .build();
        let recent = (0..RECENT_SLOTS).map(|_| std::sync::atomic::AtomicU64::new(0)).collect();
        let base = clock.now();
        Self { copies, hasher: foldhash::fast::RandomState::default(), recent, base, clock, metrics }
    }

    /// The store's key of a URL: its hash, made without building the URL.
    fn key(&self, host: &str, path: &str, query: Option<&str>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = self.hasher.build_hasher();
        h.write(host.as_bytes());
        h.write_u8(0);
        h.write(path.as_bytes());
        if let Some(q) = query {
            h.write_u8(b'?');
            h.write(q.as_bytes());
        }
        h.finish()
    }

    /// Whether a good answer for `key` is to be copied (its copy is over a second old, or
    /// there is none); if so, the URL counts as copied from now.
    fn due(&self, key: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let second = self.clock.now().saturating_duration_since(self.base).as_secs() as u32;
        let word = (key & !0xffff_ffff) | u64::from(second);
        let slot = &self.recent[(key as usize) % RECENT_SLOTS];
        if slot.load(Relaxed) == word {
            return false;
        }
        slot.store(word, Relaxed);
        true
    }

    /// The key of the copy a response is for: its URL's key, and the request's values of the
    /// response's `Vary` fields (the key itself without `Vary`).
    fn variant(&self, key: u64, response: &HeaderMap, request: &HeaderMap) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        if !response.contains_key(header::VARY) {
            return key;
        }
        let mut h = self.hasher.build_hasher();
        h.write_u64(key);
        let names = response.get_all(header::VARY).iter().filter_map(|v| v.to_str().ok());
        for name in names.flat_map(|v| v.split(',')).map(str::trim) {
            h.write(name.as_bytes());
            h.write_u8(0);
            if let Some(value) = request.get(name) {
                h.write(value.as_bytes());
            }
            h.write_u8(0);
        }
        h.finish()
    }

    /// The copy of a URL a request may be answered with (its `Vary` values match).
    fn find(
        &self,
        key: u64,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<Arc<StaleCopy>> {
        let kept = self.copies.get(&key)?;
        let pq = &*kept.url.path_and_query;
        let same = &*kept.url.host == host
            && match query {
                Some(q) => pq.strip_prefix(path).and_then(|r| r.strip_prefix('?')) == Some(q),
                None => pq == path,
            };
        if !same {
            return None; // another URL with the same hash
        }
        kept.copies.iter().find(|c| c.matches(headers)).cloned()
    }

    /// Keeps `copy` of `url`, replacing its copy of the same `Vary` values.
    fn keep(&self, key: u64, url: Url, copy: StaleCopy) {
        let copy = Arc::new(copy);
        self.copies.entry(key).and_upsert_with(|old| {
            let old = old.map(|o| o.into_value()).filter(|o| o.url == url);
            let others = old.iter().flat_map(|o| o.copies.iter()).filter(|c| c.vary != copy.vary).cloned();
            let copies = std::iter::once(copy.clone()).chain(others).take(MAX_VARIANTS).collect();
            Arc::new(Kept { url, copies })
        });
        self.metrics.stored.inc();
        self.gauges();
    }

    /// Drops a URL's copies (an unsafe request changed it, RFC 9111 §4.4).
    fn invalidate(&self, key: u64) {
        if self.copies.remove(&key).is_some() {
            self.gauges();
        }
    }

    fn gauges(&self) {
        self.metrics.bytes.set(i64::try_from(self.copies.weighted_size()).unwrap_or(i64::MAX));
        self.metrics.entries.set(i64::try_from(self.copies.entry_count()).unwrap_or(i64::MAX));
    }

    /// Keeps the gauges true as copies expire (every second, until `stop`).
    pub fn spawn_maintenance(&self, stop: tokio_util::sync::CancellationToken) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        store.copies.run_pending_tasks();
                        store.gauges();
                    }
                }
            }
        });
    }
}

/// What `forward` knows before it sends a request of a route that serves stale copies.
pub(super) struct Ask {
    policy: Arc<ResolvedPolicy>,
    rule: StaleIfError,
    key: u64,
    method: Method,
    /// The request's fields, when the exchange does not leave the request in `forward`'s hands
    /// (HTTPS, HTTP/2, a body): read for `Vary`, validators and whether the answer may be
    /// kept. Otherwise they are read from the request itself, and nothing is copied.
    headers: Option<HeaderMap>,
}

impl Ask {
    /// Whether a backend answer with `status` is answered with the copy instead.
    pub(super) fn serves_for(&self, status: StatusCode) -> bool {
        self.rule.serves_for(status.as_u16())
    }
}

/// How a kept response's freshness is read when it is stored.
struct Freshness {
    lifetime: u64,
    initial_age: u64,
    origin_allows: Option<u64>,
    vary: Vec<HeaderName>,
}

/// Whether a shared cache may store this response and serve it stale (RFC 9111 §3, §3.5,
/// §4.2.4; RFC 5861), and its freshness if so. Only complete `200`s of GETs.
fn storable(
    request: &HeaderMap,
    status: StatusCode,
    response: &HeaderMap,
    now: SystemTime,
) -> Option<Freshness> {
    if status != StatusCode::OK || response.contains_key(header::SET_COOKIE) {
        return None;
    }
    let d = ttl::directives(response);
    if d.no_store || d.private || ttl::directives(request).no_store {
        return None;
    }
    // A request with credentials may get a response meant for that user alone: kept only
    // when the origin says it is public (§3.5, with cookies held to the same rule).
    let credentials = request.contains_key(header::AUTHORIZATION) || request.contains_key(header::COOKIE);
    if credentials && !d.public {
        return None;
    }
    // §4.2.4: these forbid serving the response stale, unless the origin allows it on
    // error (RFC 5861 §4: "regardless of other freshness information").
    if d.stale_if_error.is_none() && (d.no_cache || d.revalidate || d.s_maxage.is_some()) {
        return None;
    }
    let mut vary = Vec::new();
    for value in response.get_all(header::VARY) {
        for name in value.to_str().ok()?.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" || vary.len() == MAX_VARY_FIELDS {
                return None;
            }
            vary.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
        }
    }
    let lifetime = d.s_maxage.or(d.max_age).or_else(|| ttl::expires_in(response, now)).unwrap_or(0);
    let age = response.get(header::AGE).and_then(|a| a.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    let apparent = response
        .get(header::DATE)
        .and_then(|d| httpdate::parse_http_date(d.to_str().ok()?).ok())
        .and_then(|date| now.duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    Some(Freshness { lifetime, initial_age: age.max(apparent), origin_allows: d.stale_if_error, vary })
}

/// Whether the client's validators match the copy (RFC 9110 §13.1.2, §13.1.3): it gets a 304.
fn not_modified(request: &HeaderMap, copy: &HeaderMap) -> bool {
    if let Some(condition) = request.typed_get::<IfNoneMatch>() {
        return match copy.typed_get::<ETag>() {
            Some(etag) => !condition.precondition_passes(&etag),
            None => request.get(header::IF_NONE_MATCH).is_some_and(|v| v == "*"),
        };
    }
    match (request.typed_get::<IfModifiedSince>(), copy.typed_get::<LastModified>()) {
        (Some(since), Some(modified)) => !since.is_modified(SystemTime::from(modified)),
        _ => false,
    }
}

/// The fields a 304 carries (RFC 9110 §15.4.5): those a cache updates its copy with.
const NOT_MODIFIED_FIELDS: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::LAST_MODIFIED,
    header::VARY,
];

/// A copy as served: its head and body, or a 304's.
pub(super) fn response_of(copy: &StaleCopy, not_modified: bool, age: u64) -> Response<Body> {
    let mut resp = if not_modified {
        let mut resp = Response::new(super::respond::whole(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        for name in &NOT_MODIFIED_FIELDS {
            for value in copy.headers.get_all(name) {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        resp
    } else {
        let mut resp = Response::new(super::respond::whole(copy.body.clone()));
        *resp.status_mut() = copy.status;
        *resp.headers_mut() = copy.headers.clone();
        resp
    };
    let headers = resp.headers_mut();
    super::respond::set_age(headers, age);
    headers.insert(super::respond::X_CACHE.clone(), HeaderValue::from_static("StaleHit from erratum"));
    resp
}

/// The copy's status and fields as `decide()` sees them.
pub(super) fn head_of(copy: &StaleCopy, not_modified: bool) -> (StatusCode, &HeaderMap) {
    (if not_modified { StatusCode::NOT_MODIFIED } else { copy.status }, &copy.headers)
}

impl Proxy {
    /// What a request of a route that serves stale copies needs on its way: the covering
    /// policy, its key, and its copy. `None` when no policy covers it, for a canary's
    /// requests, and for methods other than GET and HEAD — except that an unsafe method's
    /// success drops the URL's copies.
    pub(super) fn stale_ask(
        &self,
        on: &[Arc<ResolvedPolicy>],
        req: &Request<RequestBody>,
        ctx: &Ctx<'_>,
    ) -> Option<Box<Ask>> {
        let store = self.stale.as_ref()?;
        if !Arc::ptr_eq(ctx.backend, &ctx.route.backend) {
            return None; // a canary's answers are not the route's
        }
        let info = ctx.scope.info;
        let policy = on.iter().find(|p| p.covers(info.host, info.path))?;
        let rule = policy.stale_if_error?;
        let key = store.key(info.host, info.path, info.query);
        let method = req.method().clone();
        let safe = method == Method::GET || method == Method::HEAD;
        let stays = super::upstream::keeps_request(req, ctx.route.protocol.as_deref());
        let headers = (safe && !stays).then(|| req.headers().clone());
        Some(Box::new(Ask { policy: policy.clone(), rule, key, method, headers }))
    }

    /// The copy's answer to a failed request, when there is one within its allowed staleness
    /// (`None`: the failure is answered as it would be without the policy). The failure is
    /// still counted (`erratum_proxy_errors_total`, the upstream status class).
    /// `request` is the request's fields when `forward` still holds it.
    pub(super) fn stale_answer(
        &self,
        ask: &Ask,
        ctx: &Ctx<'_>,
        failure: Result<StatusCode, &ProxyError>,
        request: Option<&HeaderMap>,
    ) -> Option<Response<Body>> {
        let store = self.stale.as_ref()?;
        if ask.method != Method::GET && ask.method != Method::HEAD {
            return None;
        }
        let headers = ask.headers.as_ref().or(request)?;
        let info = ctx.scope.info;
        let copy = store.find(ask.key, info.host, info.path, info.query, headers);
        let key = &ask.policy.key;
        let count = |outcome: &str| {
            store
                .metrics
                .responses
                .with_label_values(&[key.namespace.as_str(), key.name.as_str(), outcome])
                .inc();
        };
        let Some(copy) = &copy else {
            count("missing");
            return None;
        };
        let age = copy.age(store.clock.now());
        let allowed = copy.origin_allows.unwrap_or(ask.rule.max_stale.as_secs());
        if age > copy.lifetime.saturating_add(allowed) {
            count("expired");
            return None;
        }
        count("served");
        let upstream = match failure {
            Ok(status) => Some(status),
            Err(err) => {
                self.note(err, ctx.scope.info);
                None
            }
        };
        let not_modified = not_modified(headers, &copy.headers);
        Some(self.render(Answer::Stale { copy, not_modified, age, upstream }, &ctx.scope))
    }

    /// The body of a good answer, through a tee that keeps it when a shared cache could (at
    /// most once a second per copy). An unsafe request's success drops the URL's copies.
    pub(super) fn keep_good(
        &self,
        ask: &Ask,
        ctx: &Ctx<'_>,
        parts: &http::response::Parts,
        body: Body,
        request: Option<&HeaderMap>,
    ) -> Body {
        let Some(store) = &self.stale else { return body };
        if ask.method != Method::GET {
            if ask.method != Method::HEAD && (200..400).contains(&parts.status.as_u16()) {
                store.invalidate(ask.key);
            }
            return body;
        }
        let Some(request) = ask.headers.as_ref().or(request) else { return body };
        if parts.status != StatusCode::OK || http_body::Body::size_hint(&body).lower() > MAX_ENTRY_BODY as u64
        {
            return body;
        }
        if !store.due(store.variant(ask.key, &parts.headers, request)) {
            return body;
        }
        let Some(fresh) = storable(request, parts.status, &parts.headers, store.clock.system_now()) else {
            return body;
        };
        let info = ctx.scope.info;
        let path_and_query = match info.query {
            Some(q) => format!("{}?{q}", info.path),
            None => info.path.to_string(),
        };
        let url = Url { host: info.host.into(), path_and_query: path_and_query.into() };
        let mut headers = parts.headers.clone();
        super::headers::strip_hop_by_hop(&mut headers, false);
        headers.remove(header::AGE);
        let vary = fresh.vary.into_iter().map(|name| {
            let value = request.get(&name).cloned();
            (name, value)
        });
        let copy = StaleCopy {
            status: parts.status,
            headers,
            body: Bytes::new(),
            vary: vary.collect(),
            stored_at: store.clock.now(),
            initial_age: fresh.initial_age,
            lifetime: fresh.lifetime,
            origin_allows: fresh.origin_allows,
            weight: 0,
        };
        let mut keeping = Keeping {
            inner: body,
            chunks: Vec::new(),
            len: 0,
            pending: Some((store.clone(), ask.key, url, copy)),
        };
        if http_body::Body::is_end_stream(&keeping.inner) {
            keeping.finish(); // an empty body is never polled
        }
        http_body_util::BodyExt::boxed(keeping)
    }
}

/// A good answer's body on its way to the client, copied as it passes; at its end the copy
/// is stored. Dropped unfinished, over the size bound, or failed: nothing is stored.
struct Keeping {
    inner: Body,
    chunks: Vec<Bytes>,
    len: usize,
    pending: Option<(StaleStore, u64, Url, StaleCopy)>,
}

impl Keeping {
    /// The body is whole: store the copy.
    fn finish(&mut self) {
        let Some((store, key, url, mut copy)) = self.pending.take() else { return };
        let mut body = bytes::BytesMut::with_capacity(self.len);
        for chunk in self.chunks.drain(..) {
            body.extend_from_slice(&chunk);
        }
        copy.body = body.freeze();
        let fields: usize = copy.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 64).sum();
        copy.weight = copy.body.len() + fields + ENTRY_OVERHEAD;
        store.keep(key, url, copy);
    }
}

impl http_body::Body for Keeping {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if this.pending.is_some()
                    && let Some(data) = frame.data_ref()
                {
                    this.len += data.len();
                    if this.len > MAX_ENTRY_BODY {
                        this.pending = None;
                        this.chunks = Vec::new();
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
            }
            Some(Err(_)) => this.pending = None,
            None => this.finish(),
        }
        // The server stops polling once the body says it is over.
        if this.pending.is_some() && this.inner.is_end_stream() {
            this.finish();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
