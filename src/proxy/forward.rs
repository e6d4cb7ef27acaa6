//! Forwarding: the upstream exchange of a routed request.
//!
//! Data flow: [`admit`](super::admit) or [`cache_path`](super::cache_path) -> `Proxy::forward`:
//! an endpoint from the route's backend, the request's head edited ([`headers`](super::headers)),
//! the exchange on a pooled connection ([`upstream`]) within the response
//! timeout, upgrades tunnelled -> the answer to [`respond`](super::respond) (or, for an error
//! of a cacheable request, to `Proxy::keep_error`). Request and response bodies stream
//! through; nothing here holds a whole body.

use super::balance::{NO_READY_ENDPOINTS, Picked};
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
use super::balance::{Attempt, InFlight, Retry};
use super::cache::CachedError;
use super::cache_path::{Cacheable, Kept};
use super::headers::{ClientChain, is_upgrade, upstream_fields};
use super::intercept::ProxyError;
use super::respond::{Answer, X_CACHE};
use super::upstream::{self, ResponseBody, UpstreamError};
use super::{Body, BoxError, Proxy, RequestBody};
use crate::table::NextUpstream;
use smallvec::SmallVec;

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
        let settings = &route.upstream;
        // `spec.staleIfError`: its key and policy (and the request's fields, when the exchange
        // will take the request away).
        let stale = match &route.stale {
            Some(on) => self.stale_ask(on, &req, ctx),
            None => None,
        };
        let picked = match route.protocol.as_ref().and_then(|p| p.broken.as_deref()) {
            // The route's TLS settings do not load: nothing is sent in plaintext instead.
            Some(why) => Err(why),
            None => self.balancer.pick(ctx.backend, settings.load_balance, &[]),
        };
        // `affinity: cookie`: back to the endpoint the client's cookie names, while it is ready.
        let sticky = route.affinity.as_deref().map(|a| a.endpoint(req.headers(), ctx.backend.endpoints()));
        let picked = match (picked, sticky.flatten()) {
            (Ok(_), Some(i)) => ctx
                .backend
                .authority(i)
                .map(|authority| Picked { authority: authority.clone(), index: Some(i) })
                .ok_or(NO_READY_ENDPOINTS),
            (picked, _) => picked,
        };
        let mut picked = match picked {
            Ok(p) => p,
            Err(reason) => {
                let reason = match &ctx.backend.target {
                    crate::table::Target::Unresolved(why) => why.clone(),
                    _ => reason.to_string(),
                };
                let err = ProxyError::NoEndpoints { service: ctx.backend.service.to_string(), reason };
                let fields = Some(req.headers());
                if let Some(resp) =
                    stale.as_deref().and_then(|a| self.stale_answer(a, ctx, Err(&err), fields))
                {
                    return (resp, None);
                }
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
        // `upstream-vhost` and `x-forwarded-prefix`: before the forwarded fields, so the
        // backend gets one Host (X-Forwarded-Host stays the client's).
        if let Some(rewrite) = &route.rewrite {
            if let Some(vhost) = &rewrite.upstream_vhost {
                parts.headers.insert(http::header::HOST, vhost.clone());
            }
            if let Some(prefix) = &rewrite.forwarded_prefix {
                parts.headers.insert(http::HeaderName::from_static("x-forwarded-prefix"), prefix.clone());
            }
        }
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
        let send_timeout = settings.send_timeout.unwrap_or(self.config.client_body_timeout);
        let body = upstream::IdleTimeout::new(body, send_timeout)
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
        let retry_any_method = settings.next.has(NextUpstream::NON_IDEMPOTENT);
        let idempotent = retry_any_method || parts.method.is_idempotent();
        // The request stays here between attempts: a bodiless one can be sent again.
        let mut request = Some(Request::from_parts(parts, body));

        let started = Instant::now();
        let mut timeout = settings.read_timeout.unwrap_or(self.config.response_timeout);
        // A gRPC call's own deadline (`grpc-timeout`) bounds the wait too.
        let deadline =
            if ctx.scope.info.grpc { request.as_ref().and_then(|r| grpc_timeout(r.headers())) } else { None };
        if let Some(d) = deadline {
            timeout = timeout.min(d);
        }
        let precise = settings.read_timeout.is_some() || deadline.is_some();
        let connect_timeout = settings.connect_timeout.unwrap_or(self.config.connect_timeout);
        let mut tried: SmallVec<[usize; 4]> = SmallVec::new();
        let result = loop {
            let in_flight = InFlight::start(ctx.backend, &picked, settings.load_balance);
            let result = {
                // Pinned here so that the timeout wrappers move a pointer, not the exchange's
                // state (~2 KiB, copied twice per request otherwise).
                let send = std::pin::pin!(self.client.send(
                    picked.authority.as_str(),
                    &mut request,
                    forwarded.as_slice(),
                    connect_timeout,
                    route.protocol.as_deref(),
                ));
                // The slot's deadline is as late as two watcher periods (up to 2 s, set by the
                // flags' timeouts): fine for the flag's 60 s, not for an Ingress's 1 s, which
                // gets a tokio timer.
                match ctx.conn.slot.as_deref().filter(|_| ctx.conn.one_at_a_time && !precise) {
                    Some(slot) => Either::Left(slot.within(timeout, send)),
                    None => Either::Right(tokio::time::timeout(timeout, send).map(Result::ok)),
                }
                .await
            };
            drop(in_flight);
            let (attempt, retry) = judge(&result, settings.next, idempotent);
            self.balancer.report(ctx.backend, picked.index, attempt);
            // One endpoint (or an ExternalName): there is nowhere else to go.
            let Some(reason) = retry.filter(|_| request.is_some() && ctx.backend.endpoints().len() > 1)
            else {
                break result;
            };
            if (settings.tries > 0 && tried.len() + 1 >= settings.tries as usize)
                || settings.next_timeout.is_some_and(|t| started.elapsed() >= t)
            {
                break result;
            }
            if let Some(i) = picked.index {
                tried.push(i);
            }
            let Some(next) = self.balancer.pick(ctx.backend, settings.load_balance, &tried).ok() else {
                self.balancer.no_other_endpoint();
                break result;
            };
            if !self.balancer.may_retry(reason) {
                break result;
            }
            if let Some(Ok(resp)) = result {
                // A status the route retries: its body is read off so the connection stays pooled.
                super::respond::drain(resp.into_body().map_err(BoxError::from).boxed());
            }
            picked = next;
        };
        let authority = picked.authority;
        // A cookie for a client without a valid one, or (`session-cookie-change-on-failure`)
        // one whose endpoint failed and another answered.
        let new_cookie = match (route.affinity.as_deref(), sticky, picked.index) {
            (Some(a), Some(had), Some(i)) if had.is_none() || (a.change_on_failure && had != Some(i)) => {
                ctx.backend.endpoints().get(i).and_then(|addr| a.set_cookie(addr))
            }
            _ => None,
        };
        let seconds = started.elapsed().as_secs_f64();
        self.observe_upstream(&ctx.scope, seconds);

        let mut resp = match result {
            None => {
                let err = ProxyError::UpstreamTimeout { upstream: authority.to_string(), after: timeout };
                let fields = request.as_ref().map(Request::headers);
                if let Some(resp) =
                    stale.as_deref().and_then(|a| self.stale_answer(a, ctx, Err(&err), fields))
                {
                    return (resp, None);
                }
                return Box::pin(self.proxy_error(err, ctx, cacheable)).await;
            }
            Some(Err(e)) => {
                let err = upstream::classify(&e, authority.as_str(), route.edge.max_body_bytes);
                let fields = request.as_ref().map(Request::headers);
                if let Some(mut resp) =
                    stale.as_deref().and_then(|a| self.stale_answer(a, ctx, Err(&err), fields))
                {
                    self.log_upstream(&mut resp, authority.as_str());
                    return (resp, None);
                }
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
        let mut body: Body = upstream::IdleTimeout::new(body, timeout).boxed();
        if let Some(ask) = stale {
            if ask.serves_for(upstream_status)
                && let Some(mut resp) =
                    self.stale_answer(&ask, ctx, Ok(upstream_status), request.as_ref().map(Request::headers))
            {
                super::respond::drain(body);
                self.log_upstream(&mut resp, authority.as_str());
                return (resp, None);
            }
            body = self.keep_good(&ask, ctx, &parts, body, request.as_ref().map(Request::headers));
        }
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
        if let Some(cookie) = new_cookie {
            response.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
        (response, None)
    }
}

/// How an attempt went for the endpoint's health, and the reason to try another endpoint
/// if the route's `proxy-next-upstream` allows one for it (`idempotent`: the request may be
/// repeated once sent). `None` as the result is a response timeout.
fn judge(
    result: &Option<Result<Response<ResponseBody>, UpstreamError>>,
    next: NextUpstream,
    idempotent: bool,
) -> (Attempt, Option<Retry>) {
    use super::http1::client::Error as H1;
    let sent = |flag: u16, reason: Retry| (next.has(flag) && idempotent).then_some(reason);
    match result {
        Some(Ok(resp)) => {
            let status = resp.status().as_u16();
            let attempt = if status >= 500 { Attempt::ServerError } else { Attempt::Answered };
            // Cheap for the common answer: one shift when the route retries no status.
            let retry = if next.on_status(status) && idempotent { Retry::for_status(status) } else { None };
            (attempt, retry)
        }
        // Nothing was sent: any method goes elsewhere.
        Some(Err(UpstreamError::Connect { .. })) => {
            (Attempt::ConnectFailed, next.has(NextUpstream::ERROR).then_some(Retry::Connect))
        }
        Some(Err(UpstreamError::ConnectTimeout { .. })) => {
            (Attempt::ConnectFailed, next.has(NextUpstream::TIMEOUT).then_some(Retry::ConnectTimeout))
        }
        Some(Err(UpstreamError::H1(H1::Invalid(_) | H1::HeadTooLarge))) => {
            (Attempt::Other, sent(NextUpstream::INVALID_HEADER, Retry::InvalidHeader))
        }
        Some(Err(UpstreamError::H1(_) | UpstreamError::Http(_) | UpstreamError::H2(_))) => {
            (Attempt::Other, sent(NextUpstream::ERROR, Retry::Reset))
        }
        // The client's body failed (or the request was already sent): nothing to try again.
        Some(Err(UpstreamError::Spent | UpstreamError::RequestBody(_))) => (Attempt::Other, None),
        // Nothing was sent; another endpoint may hold a certificate that verifies.
        Some(Err(UpstreamError::Tls { .. })) => {
            (Attempt::Other, next.has(NextUpstream::ERROR).then_some(Retry::Tls))
        }
        None => (Attempt::Other, sent(NextUpstream::TIMEOUT, Retry::Timeout)),
    }
}

/// A gRPC call's `grpc-timeout` (up to 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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
