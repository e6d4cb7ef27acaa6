//! The error-cache path: which requests the cache may answer, coalescing of concurrent
//! misses, and storing the errors that come back (docs/error-semantics.md §B, §C, §J).
//!
//! Data flow: [`admit`](super::admit) -> `Proxy::cacheable` (a key, or pass by) ->
//! `Proxy::cache_first`: a hit is rendered at once; a miss on a key that was an error
//! recently is shared (`Proxy::coalesced`); any other miss goes to
//! [`forward`](super::forward), which hands an upstream error to `Proxy::keep_error` and an
//! erratum-made 502/504 to `Proxy::proxy_error`. Entries hold what the origin sent; the page
//! substitution runs when serving ([`respond`](super::respond)), never when storing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::admit::Ctx;
use super::cache::{CacheKey, CacheLookup, CachedError, MAX_ENTRY_BODY, NotCacheable};
use super::intercept::{self, Decision, Outcome, ProxyError, RequestInfo};
use super::respond::{Answer, whole};
use super::{Body, BoxError, Proxy, RequestBody, ttl};
use crate::table::{Mode, ResolvedPolicy, Route, accept};

/// A request the error cache may answer.
pub struct Cacheable {
    /// Its key.
    pub key: CacheKey,
    /// The policy that owns its entry (purges, metrics).
    pub owner: Arc<ResolvedPolicy>,
    /// The owner's position among the route's policies (its counters in `RouteMetrics`).
    pub slot: usize,
}

/// What the cache said before anything went upstream.
pub(super) enum CacheFirst {
    /// A fresh entry answered.
    Answered(Response<Body>),
    /// A miss: forward the request.
    Forward,
    /// A miss on a key that was an error recently: share one upstream request
    /// (`Proxy::coalesced`), under this flight marker.
    Coalesce(u64),
}

/// What `Proxy::keep_error` did with an upstream error.
pub(super) enum Kept {
    /// Answered: stored (the entry is returned for coalesced followers), or broken and
    /// answered without storing.
    Answered(Response<Body>, Option<Arc<CachedError>>),
    /// Not stored (too large, or not cacheable): the response streams on as it is.
    Not(http::response::Parts, Body),
}

impl Proxy {
    /// The cache key of a request, when the error cache may answer it: GET/HEAD, a route
    /// covered by a policy in Enforce mode, and no credentials unless a rule opts in.
    pub(super) fn cacheable(
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
        let slot =
            route.policies.iter().position(|p| p.mode == Mode::Enforce && p.covers(info.host, info.path))?;
        let owner = &route.policies[slot];
        if credentials && !route.policies.iter().any(|p| p.caches_with_credentials()) {
            return None;
        }
        let policies = route.policies.iter().fold(0u64, |acc, p| acc.rotate_left(7) ^ p.fingerprint);
        let format =
            u8::try_from(accept::choose(info.accept, ["text/html", "application/json"])).unwrap_or(0);
        let path_and_query = path_and_query.as_str().to_string();
        let key = CacheKey { policies, host: info.host.to_string(), path_and_query, format };
        Some(Cacheable { key, owner: owner.clone(), slot })
    }

    /// Looks the request up: a fresh entry answers it at once.
    pub(super) async fn cache_first(&self, ctx: &Ctx<'_>, cacheable: &Cacheable) -> CacheFirst {
        let Some(cache) = &self.cache else { return CacheFirst::Forward };
        let counters = ctx
            .scope
            .metrics
            .and_then(|m| m.owner(cacheable.slot, || cache.owner_counters(&cacheable.owner)));
        match cache.lookup(&cacheable.key, &cacheable.owner, counters).await {
            CacheLookup::Hit(entry) => {
                CacheFirst::Answered(self.render(Answer::Cached { entry: &entry, hit: true }, &ctx.scope))
            }
            CacheLookup::Miss { coalesce: Some(marker) } => CacheFirst::Coalesce(marker),
            CacheLookup::Miss { coalesce: None } => CacheFirst::Forward,
        }
    }

    /// A miss on a key that was an error recently: concurrent misses share one upstream
    /// request (above all the herd that arrives when a popular entry expires).
    pub(super) async fn coalesced(
        &self,
        req: Request<RequestBody>,
        ctx: &Ctx<'_>,
        cacheable: &Cacheable,
        marker: u64,
    ) -> Response<Body> {
        let Some(cache) = &self.cache else { return self.forward(req, ctx, None).await.0 };
        let mut leader_response = None;
        let mut pending = Some(req);
        // Boxed: the flight holds a whole `forward` plus moka's machinery.
        let shared = Box::pin(cache.flight(&cacheable.key, marker, &cacheable.owner.key, async {
            // A flight runs its init once; should that ever change, the caller forwards its
            // own request below.
            let Some(req) = pending.take() else { return Err(NotCacheable) };
            let (resp, entry) = self.forward(req, ctx, Some(cacheable)).await;
            leader_response = Some(resp);
            entry.ok_or(NotCacheable)
        }))
        .await;
        if let Some(resp) = leader_response {
            return resp;
        }
        match (shared, pending.take()) {
            (Ok(entry), _) => self.render(Answer::Cached { entry: &entry, hit: true }, &ctx.scope),
            (Err(_), Some(own)) => self.forward(own, ctx, Some(cacheable)).await.0,
            (Err(_), None) => {
                let err = ProxyError::UpstreamReset { upstream: "coalesced".into(), reason: "lost".into() };
                self.fail(&err, &ctx.scope)
            }
        }
    }

    /// The cache TTL of an error, or `None` when it is not cached.
    fn error_ttl(
        &self,
        ctx: &Ctx<'_>,
        owner: &ResolvedPolicy,
        status: StatusCode,
        headers: &HeaderMap,
        from_proxy: bool,
    ) -> Option<Duration> {
        let cache = self.cache.as_ref()?;
        let code = status.as_u16();
        let deciding = intercept::select(&ctx.route.policies, ctx.scope.info, code, from_proxy)
            .filter(|(p, _)| p.mode == Mode::Enforce);
        let rule = deciding.map(|(_, r)| r);
        if ctx.credentials && !rule.is_some_and(|r| r.cache_with_credentials) {
            return None;
        }
        let default = deciding.map_or(owner.default_min_ttl, |(p, _)| p.default_min_ttl);
        let ttl_rule = ttl::TtlRule::new(code, rule, default);
        ttl::error_ttl(ctx.scope.info.method, code, headers, ttl_rule, cache.clock().system_now())
    }

    /// How long an upstream error of a cacheable request is kept, if it is: checked before
    /// its body is touched, so an error that is not kept streams on with no extra step.
    pub(super) fn keep_for(
        &self,
        parts: &http::response::Parts,
        ctx: &Ctx<'_>,
        cacheable: &Cacheable,
    ) -> Option<Duration> {
        if parts.headers.contains_key(header::CONTENT_ENCODING) {
            return None; // an encoded body would need the request's Accept-Encoding in the key
        }
        self.error_ttl(ctx, &cacheable.owner, parts.status, &parts.headers, false)
    }

    /// An upstream error response kept for `ttl` (`Proxy::keep_for`): stored when its body is
    /// whole and small enough, then answered from the entry.
    pub(super) async fn keep_error(
        &self,
        parts: http::response::Parts,
        body: Body,
        ctx: &Ctx<'_>,
        Cacheable { key, owner, .. }: &Cacheable,
        ttl: Duration,
        upstream: &str,
    ) -> Kept {
        let Some(cache) = &self.cache else { return Kept::Not(parts, body) };
        match Box::pin(read_bounded(body, MAX_ENTRY_BODY, self.config.response_timeout)).await {
            Bounded::Whole(bytes) => {
                let service = Some(ctx.backend.service.clone());
                let entry =
                    cache.entry(parts.status, &parts.headers, bytes, None, owner.key.clone(), service, ttl);
                cache.insert(key.clone(), entry.clone()).await;
                Kept::Answered(
                    self.render(Answer::Cached { entry: &entry, hit: false }, &ctx.scope),
                    Some(entry),
                )
            }
            Bounded::TooLarge(rest) => Kept::Not(parts, rest),
            Bounded::Failed(reason) => {
                // Rule 15: an incomplete response is never cached. When a policy replaces
                // this status anyway, the broken body does not matter: the client gets the
                // replacement (uncached); otherwise a 502.
                let outcome = Outcome::Upstream { status: parts.status, headers: &parts.headers };
                if let Decision::Replace { .. } =
                    intercept::decide(&ctx.route.policies, ctx.scope.info, outcome, &self.pages)
                {
                    return Kept::Answered(
                        self.render(Answer::Upstream(parts, whole(Bytes::new())), &ctx.scope),
                        None,
                    );
                }
                let err = ProxyError::UpstreamReset { upstream: upstream.to_string(), reason };
                Kept::Answered(self.fail(&err, &ctx.scope), None)
            }
        }
    }

    /// An erratum-made error on the way upstream. Connect failures and timeouts (502/504) count
    /// as origin 5xx for caching (rule 41).
    pub(super) async fn proxy_error(
        &self,
        err: ProxyError,
        ctx: &Ctx<'_>,
        cacheable: Option<&Cacheable>,
    ) -> (Response<Body>, Option<Arc<CachedError>>) {
        if let Some(Cacheable { key, owner, .. }) = cacheable
            && let Some(cache) = &self.cache
            && matches!(err, ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamTimeout { .. })
            && let Some(ttl) = self.error_ttl(ctx, owner, err.status(), &HeaderMap::new(), true)
        {
            self.note(&err, ctx.scope.info);
            let service = Some(ctx.backend.service.clone());
            let status = err.status();
            let entry = cache.entry(
                status,
                &HeaderMap::new(),
                Bytes::new(),
                Some(err),
                owner.key.clone(),
                service,
                ttl,
            );
            cache.insert(key.clone(), entry.clone()).await;
            return (self.render(Answer::Cached { entry: &entry, hit: false }, &ctx.scope), Some(entry));
        }
        (self.fail(&err, &ctx.scope), None)
    }
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
