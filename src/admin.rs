//! The admin server on `--admin-addr`: `/healthz` (and `/livez`), `/readyz`, `/metrics`,
//! `/table` (routes, diagnostics), `/policies` (each policy's report), `/pages` (pinned error
//! pages), and `/cache` (`GET` stats, `DELETE` purge).
//!
//! Data flow: reads the published table and the metrics registry; writes nothing. It keeps
//! serving while the proxy drains so that `/readyz` can report the shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod preview;

use crate::metrics::Metrics;
use crate::proxy::balance::Balancer;
use crate::proxy::cache::{ErrorCache, Purge};
use crate::proxy::pages::PageStore;
use crate::table::TableReader;
use crate::table::status::status;

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Metrics registry.
    pub metrics: Metrics,
    /// Current routing table.
    pub table: TableReader,
    /// Set when shutdown begins: `/readyz` turns 503 so load balancers stop sending.
    pub draining: Arc<AtomicBool>,
    /// Pinned error pages (fetched by path).
    pub pages: Option<PageStore>,
    /// The error cache, if on.
    pub cache: Option<ErrorCache>,
    /// Endpoint health (ejections), when a proxy runs.
    pub balancer: Option<Arc<Balancer>>,
}

/// Serves the admin endpoints until `shutdown`.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: CancellationToken) {
    let state = Arc::new(state);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, &req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

async fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/cache" {
        return cache(state, req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" | "/livez" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            } else if state.table.load().is_ready() {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "no routing table published yet\n")
            }
        }
        "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", state.metrics.render()),
        "/table" => {
            let t = state.table.load();
            let body = serde_json::json!({
                "ready": t.is_ready(),
                "generation": t.generation(),
                "ingresses": t.ingress_count(),
                "hosts": t.host_count(),
                "routes": t.route_count(),
                "edge": t.edges().iter().map(|e| serde_json::json!({
                    "ingress": e.key.to_string(),
                    "maxBodyBytes": e.max_body_bytes,
                    "httpsRedirect": e.https_redirect,
                    "upstream": {
                        "connectTimeoutSeconds": e.upstream.connect_timeout.map(|d| d.as_secs()),
                        "readTimeoutSeconds": e.upstream.read_timeout.map(|d| d.as_secs()),
                        "sendTimeoutSeconds": e.upstream.send_timeout.map(|d| d.as_secs()),
                        "nextUpstream": e.upstream.next.names(),
                        "nextUpstreamTries": e.upstream.tries,
                        "nextUpstreamTimeoutSeconds": e.upstream.next_timeout.map(|d| d.as_secs()),
                        "loadBalance": e.upstream.load_balance.as_str(),
                    },
                    "protocols": e.protocols.iter().map(|(service, p)| {
                        let mut shown = p.describe();
                        shown["service"] = serde_json::Value::from(service.to_string());
                        shown
                    }).collect::<Vec<_>>(),
                    "routing": routing_json(&e.routing),
                    "auth": e.auth.as_ref().map(|a| a.describe()),
                })).collect::<Vec<_>>(),
                "rateLimits": t.rate_limits().iter().map(|(ingress, l)| serde_json::json!({
                    "ingress": ingress.to_string(),
                    "rps": l.settings.rps,
                    "rpm": l.settings.rpm,
                    "connections": l.settings.connections,
                    "burstMultiplier": l.settings.burst_multiplier.map_or(crate::table::annotations::limits::DEFAULT_BURST_MULTIPLIER, |m| m.get()),
                    "exempt": l.settings.exempt.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "trackedClients": l.tracked(),
                    "status": 429,
                })).collect::<Vec<_>>(),
                "outliers": state.balancer.as_ref().map(|b| b.outliers()).unwrap_or_default().iter().map(|o| serde_json::json!({
                    "endpoint": o.endpoint.to_string(),
                    "ejected": o.ejected_for.is_some(),
                    "ejectedForSeconds": o.ejected_for.map(|d| d.as_secs_f64()),
                    "consecutiveConnectFailures": o.connect_failures,
                    "consecutive5xx": o.server_errors,
                    "ejections": o.ejections,
                })).collect::<Vec<_>>(),
                "problems": t.diagnostics().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "unsupportedAnnotations": t.unsupported_annotations(),
            });
            text(StatusCode::OK, "application/json", format!("{body:#}\n"))
        }
        "/policies" => {
            // File mode's view of what the controller writes to each policy's status.
            let t = state.table.load();
            let now =
                t.published_at().cloned().unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
            let policies: Vec<serde_json::Value> = t
                .policy_reports()
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "namespace": r.key.namespace,
                        "name": r.key.name,
                        "status": status(r, &now),
                    })
                })
                .collect();
            text(StatusCode::OK, "application/json", format!("{:#}\n", serde_json::Value::from(policies)))
        }
        "/pages/preview" => preview::index(&state.table.load(), state.pages.as_ref()),
        "/pages/preview/page" => {
            preview::page(&state.table.load(), state.pages.as_ref(), req.uri().query().unwrap_or(""))
        }
        "/pages" => {
            let pages = state.pages.as_ref().map(PageStore::states).unwrap_or_default();
            text(StatusCode::OK, "application/json", format!("{:#}\n", serde_json::json!(pages)))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz /readyz /metrics /table /policies /pages /cache\n",
        ),
    }
}

/// `GET /cache`: entries, bytes, hit ratio. `DELETE /cache?policy=NS/NAME&host=H&prefix=/p`:
/// purge what matches every given filter.
async fn cache(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(cache) = &state.cache else {
        return text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the error cache is off (--error-cache-max-bytes 0)\n",
        );
    };
    match *req.method() {
        Method::GET | Method::HEAD => text(
            StatusCode::OK,
            "application/json",
            format!("{:#}\n", serde_json::json!(cache.stats().await)),
        ),
        Method::DELETE => {
            let mut purge = Purge::default();
            for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned();
                match k {
                    "policy" => match crate::index::ObjectKey::parse(&v) {
                        Ok(key) => purge.policy = Some(key),
                        Err(_) => {
                            return text(StatusCode::BAD_REQUEST, "text/plain", "policy=NAMESPACE/NAME\n");
                        }
                    },
                    "host" => purge.host = Some(v),
                    "prefix" if v.starts_with('/') => purge.prefix = Some(v),
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            "text/plain",
                            format!("unknown or invalid filter {pair:?}\n"),
                        );
                    }
                }
            }
            if purge.policy.is_none() && purge.host.is_none() && purge.prefix.is_none() {
                return text(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "give at least one of policy=NS/NAME, host=H, prefix=/p (prefix=/ purges everything)\n",
                );
            }
            let purged = cache.purge(&purge).await;
            text(StatusCode::OK, "application/json", format!("{}\n", serde_json::json!({ "purged": purged })))
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET or DELETE\n"),
    }
}

/// An Ingress's routing annotations as `/table` shows them.
fn routing_json(r: &crate::table::annotations::IngressRouting) -> serde_json::Value {
    let text = |h: &Option<http::HeaderValue>| h.as_ref().and_then(|h| h.to_str().ok()).map(str::to_string);
    let redirect = |r: &Option<(String, u16)>| {
        r.as_ref().map(|(url, code)| serde_json::json!({"url": url, "code": code}))
    };
    serde_json::json!({
        "rewriteTarget": r.rewrite_target,
        "useRegex": r.use_regex,
        "appRoot": r.app_root,
        "permanentRedirect": redirect(&r.permanent),
        "temporalRedirect": redirect(&r.temporal),
        "fromToWwwRedirect": r.from_to_www,
        "upstreamVhost": text(&r.upstream_vhost),
        "xForwardedPrefix": text(&r.forwarded_prefix),
        "serviceUpstream": r.service_upstream,
    })
}
