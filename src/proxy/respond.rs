//! The one place where a [`Decision`] becomes a response, whatever the status was made by.
//!
//! Data flow: every phase that has an answer — an upstream response ([`forward`](super::forward)),
//! a cached error ([`cache_path`](super::cache_path)), an error erratum made itself
//! ([`admit`](super::admit), [`forward`](super::forward), the HTTP/1.1 server's head checks)
//! — hands it here as an [`Answer`]; `Proxy::render` asks [`intercept::decide`] what to
//! send, applies it, and counts the request. `decide()` stays pure; this is its only caller
//! on the request path.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::access_log::Facts;
use super::cache::{CachedError, OwnerCounters};
use super::error_backend::ErrorPageFetch;
use super::headers::{X_REQUEST_ID, strip_hop_by_hop};
use super::intercept::{self, Applied, Decision, Outcome, ProxyError, Reply, RequestInfo};
use super::{Body, Proxy};
use crate::metrics::{MAINTENANCE_CLASS, ProxyMetrics, STATUS_CLASSES, status_class_index};
use crate::table::{Mode, ResolvedPolicy, Route, RoutingTable, TableReader};

/// Most bytes of a replaced upstream body read so its connection can go back to the pool;
/// beyond it (or after [`DRAIN_TIMEOUT`]) the connection is closed instead.
pub const DRAIN_LIMIT: usize = 256 * 1024;
/// Longest a replaced upstream body is drained.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What a decision is applied to.
pub enum Answer<'a> {
    /// An upstream response: its head, and its body (streamed on, or drained when replaced).
    Upstream(http::response::Parts, Body),
    /// A cached error; `hit` when it was stored before this request.
    Cached {
        /// The entry.
        entry: &'a CachedError,
        /// Served from an earlier request's entry (`X-Cache: ErrorHit`, `Age`).
        hit: bool,
    },
    /// erratum failed the request itself (routing, upstream connect, timeout, bad request).
    Failed(&'a ProxyError),
    /// erratum redirects the request to `Location` with a 3xx status.
    Redirect(StatusCode, &'a HeaderValue),
    /// erratum answers a CORS preflight itself: 204.
    Preflight,
    /// The backend failed and a kept copy answers (`spec.staleIfError`): its 200, or a 304
    /// when the client's validators match it.
    Stale {
        /// The copy.
        copy: &'a super::stale::StaleCopy,
        /// Answered with 304.
        not_modified: bool,
        /// Its current age in seconds (`Age`).
        age: u64,
        /// The backend's status, when it answered (the request's upstream status class).
        upstream: Option<StatusCode>,
    },
}

/// The request an answer is for.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// Policies for the request's errors, highest precedence first.
    pub policies: &'a [Arc<ResolvedPolicy>],
    /// The route, when the request matched one (metric labels).
    pub route: Option<&'a Arc<Route>>,
    /// The route's metric handles, when found.
    pub metrics: Option<&'a RouteMetrics>,
    /// The request facts `decide()` reads.
    pub info: &'a RequestInfo<'a>,
    /// `X-Request-ID` in effect.
    pub request_id: &'a HeaderValue,
}

impl Proxy {
    /// Applies `decide()` to `answer` and counts the request: the response erratum sends.
    pub(super) fn render(&self, answer: Answer<'_>, scope: &Scope<'_>) -> Response<Body> {
        let outcome = match &answer {
            Answer::Upstream(parts, _) => Outcome::Upstream { status: parts.status, headers: &parts.headers },
            Answer::Cached { entry, .. } => match &entry.proxy_error {
                Some(err) => Outcome::Proxy(err),
                None => Outcome::Upstream { status: entry.status, headers: &entry.headers },
            },
            // A maintenance answer is planned, not an error: counted by `record`.
            Answer::Failed(err @ ProxyError::Maintenance { .. }) => Outcome::Proxy(err),
            Answer::Failed(err) => {
                self.note(err, scope.info);
                Outcome::Proxy(err)
            }
            Answer::Redirect(status, location) => Outcome::Redirect { status: *status, location },
            Answer::Preflight => Outcome::Preflight,
            Answer::Stale { copy, not_modified, .. } => {
                let (status, headers) = super::stale::head_of(copy, *not_modified);
                Outcome::Upstream { status, headers }
            }
        };
        let decision = intercept::decide(scope.policies, scope.info, outcome, &self.pages);
        // What the access log says the decision did; nothing when the log is off.
        let logged = self.access_log.is_some().then(|| match (&answer, &decision) {
            (Answer::Redirect(..), _) => ("redirected", None),
            (Answer::Preflight, _) => ("preflight", None),
            (Answer::Stale { .. }, _) => ("stale", None),
            (_, Decision::PassThrough) => ("passed", None),
            (_, Decision::Report(a)) => ("report-only", Some(a.policy.key.to_string())),
            (_, Decision::Rewrite { applied, .. }) => ("rewritten", Some(applied.policy.key.to_string())),
            (_, Decision::Replace { applied, .. }) => {
                ("replaced", applied.as_ref().map(|a| a.policy.key.to_string()))
            }
        });
        let upstream = match &answer {
            Answer::Upstream(parts, _) => Some(parts.status),
            Answer::Cached { entry, .. } => entry.proxy_error.is_none().then_some(entry.status),
            Answer::Stale { upstream, .. } => *upstream,
            Answer::Failed(_) | Answer::Redirect(..) | Answer::Preflight => None,
        };
        let cached = match &answer {
            Answer::Cached { entry, hit } => Some((entry.stored_at, *hit)),
            _ => None,
        };
        // The status and extra fields on the answer's own head, unless it is replaced.
        let (rewrite, pass_101) = match decision {
            Decision::Replace { reply, applied } => {
                if let Some(applied) = &applied {
                    self.record(applied, applied.policy.mode == Mode::ReportOnly);
                }
                if let Answer::Upstream(_, body) = answer {
                    drain(body);
                }
                let fetch = reply.fetch.clone();
                let mut resp = into_response(reply, scope.request_id);
                if let (Some(backend), Some(applied)) = (fetch, &applied) {
                    let policy = (applied.policy.key.namespace.clone(), applied.policy.key.name.clone());
                    let fetch = ErrorPageFetch::new(backend, scope, applied.code, policy);
                    resp.extensions_mut().insert(fetch);
                }
                let class = match &applied {
                    Some(a) if a.maintenance => Some(MAINTENANCE_CLASS),
                    _ => None,
                };
                self.finish(&mut resp, cached, upstream, scope, logged, class);
                return resp;
            }
            Decision::PassThrough => (None, true),
            Decision::Report(applied) => {
                self.record(&applied, true);
                (None, false)
            }
            Decision::Rewrite { status, headers, applied } => {
                self.record(&applied, false);
                (Some((status, headers)), false)
            }
        };
        let mut resp = match answer {
            Answer::Upstream(mut parts, body) => {
                let keep_upgrade = pass_101 && parts.status == StatusCode::SWITCHING_PROTOCOLS;
                strip_hop_by_hop(&mut parts.headers, keep_upgrade);
                Response::from_parts(parts, body)
            }
            Answer::Cached { entry, .. } => {
                let mut resp = Response::new(whole(entry.body.clone()));
                *resp.status_mut() = entry.status;
                *resp.headers_mut() = entry.headers.clone();
                resp
            }
            // `decide()` replaces every error erratum made; should that ever change, the
            // built-in page still answers (never a panic on the request path).
            Answer::Failed(err) => into_response(
                intercept::builtin(err.status(), scope.info.accept, scope.info.request_id),
                scope.request_id,
            ),
            Answer::Redirect(status, _) => {
                into_response(intercept::builtin(status, None, scope.info.request_id), scope.request_id)
            }
            Answer::Preflight => into_response(
                intercept::builtin(StatusCode::NO_CONTENT, None, scope.info.request_id),
                scope.request_id,
            ),
            Answer::Stale { copy, not_modified, age, .. } => {
                super::stale::response_of(copy, not_modified, age)
            }
        };
        if let Some((status, headers)) = rewrite {
            *resp.status_mut() = status;
            for (name, value) in &headers {
                resp.headers_mut().insert(name.clone(), value.clone());
            }
        }
        self.finish(&mut resp, cached, upstream, scope, logged, None);
        resp
    }

    /// What every rendered response gets last: the cache fields, the request count, and
    /// with the access log on, the facts of its line.
    fn finish(
        &self,
        resp: &mut Response<Body>,
        cached: Option<(std::time::Instant, bool)>,
        upstream: Option<StatusCode>,
        scope: &Scope<'_>,
        logged: Option<(&'static str, Option<String>)>,
        class: Option<usize>,
    ) {
        if let Some((action, policy)) = logged {
            let ingress = scope.route.and_then(|r| r.ingress.as_ref());
            resp.extensions_mut().insert(Facts {
                ingress: ingress.map(|k| (k.namespace.clone(), k.name.clone())),
                upstream_status: upstream.map(|s| s.as_u16()),
                upstream: None,
                action,
                policy,
                cache: match (cached, action) {
                    (Some((_, true)), _) => "hit",
                    (Some((_, false)), _) => "miss",
                    (None, "stale") => "stale",
                    (None, _) => "bypass",
                },
                request_id: scope.request_id.to_str().unwrap_or("").to_string(),
            });
        }
        if let Some((stored_at, hit)) = cached {
            let headers = resp.headers_mut();
            let x_cache = if hit { "ErrorHit from erratum" } else { "Error from erratum" };
            headers.insert(X_CACHE.clone(), HeaderValue::from_static(x_cache));
            if hit && let Some(cache) = &self.cache {
                set_age(headers, cache.clock().now().saturating_duration_since(stored_at).as_secs());
            }
        }
        self.count(scope, resp.status(), upstream, class);
    }

    /// An error erratum made, answered through the one decision (routing and admission
    /// errors, upstream failures, and the HTTP/1.1 server's head checks).
    pub(super) fn fail(&self, err: &ProxyError, scope: &Scope<'_>) -> Response<Body> {
        self.render(Answer::Failed(err), scope)
    }

    /// Counts an error erratum made and logs it at debug level: under an outage every request
    /// fails, and a log line each would cost more than the request; the
    /// `erratum_proxy_errors_total{reason}` counter is the signal to alert on.
    pub(super) fn note(&self, err: &ProxyError, info: &RequestInfo<'_>) {
        tracing::debug!(request_id = info.request_id, "{err}");
        self.metrics.proxy_errors.with_label_values(&[err.reason()]).inc();
    }

    fn record(&self, applied: &Applied, report_only: bool) {
        let key = &applied.policy.key;
        let code = applied.code.as_str();
        let counter =
            if report_only { &self.metrics.error_pages_report_only } else { &self.metrics.error_pages };
        counter.with_label_values(&[key.namespace.as_str(), key.name.as_str(), code, applied.source()]).inc();
        if applied.maintenance {
            self.metrics
                .maintenance
                .with_label_values(&[key.namespace.as_str(), key.name.as_str(), "served"])
                .inc();
        }
        if applied.page_missing {
            self.metrics.page_fallbacks.with_label_values(&[key.namespace.as_str(), key.name.as_str()]).inc();
        }
    }

    /// Counts a request by the class of the status served (or `class`, for a maintenance
    /// answer) and of the upstream's.
    fn count(
        &self,
        scope: &Scope<'_>,
        served: StatusCode,
        upstream: Option<StatusCode>,
        class: Option<usize>,
    ) {
        let served = class.unwrap_or_else(|| status_class_index(Some(served.as_u16())));
        let upstream = status_class_index(upstream.map(|s| s.as_u16()));
        let route = scope.route.map(|r| &**r);
        let labels = |(ns, ing)| [ns, ing, STATUS_CLASSES[served], STATUS_CLASSES[upstream]];
        match scope.metrics {
            Some(m) => m.requests[served][upstream]
                .get_or_init(|| self.metrics.requests.with_label_values(&labels(labels_of(route))))
                .inc(),
            None => self.metrics.requests.with_label_values(&labels(labels_of(route))).inc(),
        }
    }

    /// Records an upstream's time to answer for `route`.
    pub(super) fn observe_upstream(&self, scope: &Scope<'_>, seconds: f64) {
        match scope.metrics {
            Some(m) => m.upstream_seconds.observe(seconds),
            None => {
                let (ns, ing) = labels_of(scope.route.map(|r| &**r));
                self.metrics.upstream_seconds.with_label_values(&[ns, ing]).observe(seconds);
            }
        }
    }
}

/// Metric handles of one Ingress's routes. Prometheus finds a labelled child by hashing every
/// label value on each call: 0.37 µs of a proxied request's ~12 µs for its three lookups
/// (BENCHMARKS.md). These are found once per table and Ingress.
#[derive(Debug)]
pub struct RouteMetrics {
    upstream_seconds: prometheus::Histogram,
    /// `requests` children by (served, upstream) status class, made on first use so that
    /// combinations never seen export no series.
    requests: [[OnceLock<prometheus::IntCounter>; STATUS_CLASSES.len()]; STATUS_CLASSES.len()],
    /// The error cache's counters of each of the routes' policies, by position.
    owners: Box<[OnceLock<OwnerCounters>]>,
}

impl RouteMetrics {
    /// The error-cache counters of the route's `slot`-th policy, made by `make` on first use.
    pub fn owner(&self, slot: usize, make: impl FnOnce() -> OwnerCounters) -> Option<&OwnerCounters> {
        self.owners.get(slot).map(|c| c.get_or_init(make))
    }
}

/// The proxy's view of the current table: the table, and the proxy's own state for it (metric
/// handles per Ingress, by the dense [`Route::ingress_slot`]). Replaced whole when a table is
/// published: the table itself carries no proxy state.
#[derive(Debug)]
pub struct View {
    publishes: u64,
    /// The table.
    pub table: Arc<RoutingTable>,
    per_ingress: Box<[OnceLock<RouteMetrics>]>,
}

impl View {
    fn of(publishes: u64, table: Arc<RoutingTable>) -> Self {
        let per_ingress = (0..table.ingress_count()).map(|_| OnceLock::new()).collect();
        Self { publishes, table, per_ingress }
    }

    /// The metric handles of `route`'s Ingress (a route of this view's table), made on first
    /// use; `None` for the default backend's route (the caller finds handles by label).
    pub fn route_metrics(&self, route: &Route, metrics: &ProxyMetrics) -> Option<&RouteMetrics> {
        let slot = self.per_ingress.get(route.ingress_slot?)?;
        Some(slot.get_or_init(|| {
            let (ns, ing) = labels_of(Some(route));
            RouteMetrics {
                upstream_seconds: metrics.upstream_seconds.with_label_values(&[ns, ing]),
                requests: Default::default(),
                owners: (0..route.policies.len()).map(|_| OnceLock::new()).collect(),
            }
        }))
    }
}

/// The current [`View`].
#[derive(Debug)]
pub struct Views(ArcSwap<View>);

impl Views {
    /// A view of `reader`'s current table.
    pub fn new(reader: &TableReader) -> Self {
        Self(ArcSwap::from_pointee(View::of(reader.publishes(), reader.load())))
    }

    /// The view of the current table: one atomic load says whether a table was published
    /// since, then one load of the view (what loading the table cost before). A new view is
    /// made once per published table.
    pub fn current(&self, reader: &TableReader) -> Arc<View> {
        let publishes = reader.publishes();
        let view = self.0.load_full();
        if view.publishes == publishes {
            return view;
        }
        let fresh = Arc::new(View::of(publishes, reader.load()));
        self.0.store(fresh.clone());
        fresh
    }
}

/// Reads and discards a replaced upstream body (bounded in size and time) so its keep-alive
/// connection returns to the pool; nginx closes it instead.
pub(super) fn drain(mut body: Body) {
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
    tokio::spawn(super::linger::discard(
        body,
        DRAIN_LIMIT.saturating_sub(seen),
        DRAIN_TIMEOUT,
        DRAIN_TIMEOUT,
    ));
}

pub(super) fn labels_of(route: Option<&Route>) -> (&str, &str) {
    match route.and_then(|r| r.ingress.as_ref()) {
        Some(k) => (k.namespace.as_str(), k.name.as_str()),
        None => ("", ""),
    }
}

/// Sets `Age` on an answer from a store, placed before `Date`: a client that reads fields in
/// order (REDbot's linter does) checks `Date` against its clock knowing the answer's age, and
/// does not take a copy kept for a while for a server clock running behind.
pub(super) fn set_age(headers: &mut http::HeaderMap, age: u64) {
    let date = headers.remove(header::DATE);
    headers.insert(header::AGE, HeaderValue::from(age));
    if let Some(date) = date {
        headers.insert(header::DATE, date);
    }
}

/// A body erratum holds whole in memory (pages, cache entries).
pub(super) fn whole(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn into_response(reply: Reply, request_id: &HeaderValue) -> Response<Body> {
    let mut resp = Response::new(whole(reply.body));
    *resp.status_mut() = reply.status;
    *resp.headers_mut() = reply.headers;
    resp.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    resp
}

#[cfg(test)]
mod tests {
    use http::header::{AGE, CONTENT_TYPE, DATE};

    #[test]
    fn age_goes_before_date_and_replaces_an_older_age() {
        let mut headers = http::HeaderMap::new();
        headers.insert(DATE, "Sun, 06 Dec 2026 13:59:22 GMT".parse().unwrap());
        headers.insert(AGE, "3".parse().unwrap());
        headers.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        super::set_age(&mut headers, 7);
        let names: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        let at = |name: &str| names.iter().position(|n| *n == name).unwrap();
        assert!(at("age") < at("date"), "{names:?}");
        assert_eq!(headers.get_all(AGE).iter().collect::<Vec<_>>(), ["7"]);
        assert_eq!(headers[DATE], "Sun, 06 Dec 2026 13:59:22 GMT");
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn without_a_date_only_age_is_set() {
        let mut headers = http::HeaderMap::new();
        super::set_age(&mut headers, 0);
        assert_eq!(headers[AGE], "0");
        assert!(!headers.contains_key(DATE));
    }
}
