//! Forwarding: the upstream exchange of a routed request.
//!
//! Data flow: [`admit`](super::admit) or [`cache_path`](super::cache_path) -> `Proxy::forward`:
//! an endpoint from the route's backend, the request's head edited ([`headers`](super::headers)),
//! the exchange on a pooled connection ([`upstream`]) within the response
//! timeout, upgrades tunnelled -> the answer to [`respond`](super::respond) (or, for an error
//! of a cacheable request, to `Proxy::keep_error`). Request and response bodies stream
//! through; nothing here holds a whole body.

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::Either;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;

use super::access_log::{BytesIn, Counted, Facts};
use super::admit::{Ctx, close_http1};
use super::cache::CachedError;
use super::cache_path::{Cacheable, Kept};
use super::headers::{ClientChain, is_upgrade, upstream_fields};
use super::intercept::ProxyError;
use super::respond::{Answer, X_CACHE};
use super::upstream;
use super::{Body, BoxError, Proxy, RequestBody};

impl Proxy {
    /// Sends the request upstream and answers it. With a cache key, a cacheable error is
    /// stored and returned as well.
    pub(super) async fn forward(
        &self,
        mut req: Request<RequestBody>,
        ctx: &Ctx<'_>,
        cacheable: Option<&Cacheable>,
    ) -> (Response<Body>, Option<Arc<CachedError>>) {
        let route = ctx.route;
        let authority = match route.backend.pick_authority() {
            Ok(a) => a,
            Err(reason) => {
                let err = ProxyError::NoEndpoints {
                    service: route.backend.service.to_string(),
                    reason: reason.to_string(),
                };
                return (self.fail(&err, &ctx.scope), None);
            }
        };
        // Origin-form: the request's normalised path and query, no URI parsing per request.
        let uri = http::Uri::from(ctx.path_and_query.clone());
        let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        // Kept as one byte across the exchange: every byte of this future is copied per request.
        let http1 = parts.version <= Version::HTTP_11;
        let host = ctx.raw_host.header_value();
        // Only a request from a `--trusted-proxies` peer reads the client's forwarded fields.
        let chain = ctx
            .conn
            .trusted
            .then(|| ClientChain::of(&parts.headers, &ctx.conn, &self.config.trusted_proxies));
        let forwarded = upstream_fields(
            &mut parts.headers,
            host.as_deref(),
            &ctx.conn,
            ctx.scope.request_id,
            upgrade,
            chain.as_ref(),
            &self.https_port,
        );
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let body = upstream::IdleTimeout::new(body, self.config.client_body_timeout)
            .map_err(|e| BoxError::from(upstream::ClientBody(e)));
        // A body of unstated length is counted as it streams; one whose stated length is
        // within the limit (checked in `admit`) is held to that length by the codec already.
        let body = match route
            .edge
            .max_body_bytes
            .filter(|&l| http_body::Body::size_hint(&body).upper().is_none_or(|u| u > l))
        {
            Some(l) => Limited::new(body, usize::try_from(l).unwrap_or(usize::MAX)).boxed(),
            None => body.boxed(),
        };
        // The access log's count of the request body (only when the log is on).
        let body = match parts.extensions.remove::<BytesIn>() {
            Some(count) => Counted::new(body, count).boxed(),
            None => body,
        };
        let upstream_req = Request::from_parts(parts, body);

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
        self.observe_upstream(&ctx.scope, seconds);

        let mut resp = match result {
            None => {
                let err = ProxyError::UpstreamTimeout {
                    upstream: authority.to_string(),
                    after: self.config.response_timeout,
                };
                return Box::pin(self.proxy_error(err, ctx, cacheable)).await;
            }
            Some(Err(e)) => {
                let err = upstream::classify(&e, authority.as_str(), route.edge.max_body_bytes);
                let too_large = matches!(err, ProxyError::BodyTooLarge { .. });
                let (mut resp, entry) = Box::pin(self.proxy_error(err, ctx, cacheable)).await;
                if too_large {
                    close_http1(&mut resp, http1);
                }
                self.log_upstream(&mut resp, authority.as_str());
                return (resp, entry);
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

        let (mut parts, body) = resp.into_parts();
        // Between two pieces of the body the upstream gets the same time as for its head.
        let mut body: Body = upstream::IdleTimeout::new(body, self.config.response_timeout).boxed();
        if let Some(cacheable) = cacheable
            && upstream_status.as_u16() >= 400
            && let Some(ttl) = self.keep_for(&parts, ctx, cacheable)
        {
            match self.keep_error(parts, body, ctx, cacheable, ttl, authority.as_str()).await {
                Kept::Answered(mut resp, entry) => {
                    self.log_upstream(&mut resp, authority.as_str());
                    return (resp, entry);
                }
                Kept::Not(p, b) => (parts, body) = (p, b),
            }
        }
        let mut response = self.render(Answer::Upstream(parts, body), &ctx.scope);
        if cacheable.is_some() && upstream_status.as_u16() >= 400 {
            response.headers_mut().insert(X_CACHE.clone(), HeaderValue::from_static("Error from erratum"));
        }
        self.log_upstream(&mut response, authority.as_str());
        (response, None)
    }
}

impl Proxy {
    /// The endpoint, on the access log's facts of the response (when the log is on).
    #[inline]
    fn log_upstream(&self, resp: &mut Response<Body>, authority: &str) {
        if self.access_log.is_some()
            && let Some(facts) = resp.extensions_mut().get_mut::<Facts>()
        {
            facts.upstream = Some(authority.to_string());
        }
    }
}
