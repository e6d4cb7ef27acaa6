//! ingress-nginx's error-backend protocol: the page of an error that an Ingress's
//! `custom-http-errors` covers is asked of its `default-backend` Service, per request.
//!
//! Data flow: `decide()` picks the implicit policy's rule like any other and returns a reply
//! with the original status whose body is to be fetched; [`respond`](super::respond) notes an
//! [`ErrorPageFetch`] on that response, and the connection's `answer` (the one async step
//! every response passes) calls `Proxy::ask_error_backend`, which fills in the body. A
//! backend that fails gives the built-in page with the original status, counted as a page
//! fallback (rule 47).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};

use super::intercept::{self, ProxyError};
use super::respond::Scope;
use super::{Body, BoxError, Proxy};
use crate::table::policy::error_backend::ErrorBackend;
use crate::table::{LoadBalance, MAX_PAGE_BYTES};

/// Longest an error backend has to answer (its head and its body).
pub const ERROR_BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

/// What the error backend is told about the request (ingress-nginx's headers).
#[derive(Clone)]
pub struct ErrorPageFetch {
    backend: Arc<ErrorBackend>,
    headers: Vec<(HeaderName, HeaderValue)>,
    accept: Option<String>,
    host: HeaderValue,
    status: http::StatusCode,
    /// For the built-in page of a fallback.
    request_id: String,
    /// `namespace/policy` of the implicit policy, for the fallback counter.
    policy: (String, String),
}

impl ErrorPageFetch {
    /// The fetch for a reply of `backend`, decided for the request of `scope` under `policy`.
    pub(super) fn new(
        backend: Arc<ErrorBackend>,
        scope: &Scope<'_>,
        status: http::StatusCode,
        policy: (String, String),
    ) -> Self {
        let info = scope.info;
        let route = scope.route;
        let value = |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""));
        let ingress = route.and_then(|r| r.ingress.as_ref());
        let mut headers = vec![
            (HeaderName::from_static("x-code"), HeaderValue::from(status.as_u16())),
            (HeaderName::from_static("x-format"), value(info.accept.unwrap_or("text/html"))),
            (HeaderName::from_static("x-original-uri"), value(info.path)),
            (HeaderName::from_static("x-namespace"), value(ingress.map_or("", |k| k.namespace.as_str()))),
            (HeaderName::from_static("x-ingress-name"), value(ingress.map_or("", |k| k.name.as_str()))),
            (HeaderName::from_static("x-request-id"), scope.request_id.clone()),
        ];
        if let Some(route) = route {
            headers.push((HeaderName::from_static("x-service-name"), value(&route.backend.service.name)));
            headers.push((HeaderName::from_static("x-service-port"), value(&route.backend.port.to_string())));
        }
        Self {
            backend,
            headers,
            accept: info.accept.map(str::to_string),
            host: value(if info.host.is_empty() { "localhost" } else { info.host }),
            status,
            request_id: info.request_id.to_string(),
            policy,
        }
    }
}

impl Proxy {
    /// Fills in the body (and type) of a response whose page an error backend renders.
    pub(super) async fn ask_error_backend(&self, mut resp: Response<Body>) -> Response<Body> {
        let Some(fetch) = resp.extensions_mut().remove::<ErrorPageFetch>() else { return resp };
        let (body, content_type) = match self.error_page(&fetch).await {
            Ok(page) => page,
            Err(e) => {
                tracing::debug!(service = %fetch.backend.backend.service, "error backend failed: {e}");
                let (ns, name) = &fetch.policy;
                self.metrics.page_fallbacks.with_label_values(&[ns.as_str(), name.as_str()]).inc();
                // Rule 47: a page that cannot be had never changes the status (a rule's
                // `responseCode` applies to its page only).
                *resp.status_mut() = fetch.status;
                let builtin = intercept::builtin(fetch.status, fetch.accept.as_deref(), &fetch.request_id);
                (builtin.body, builtin.headers.get(header::CONTENT_TYPE).cloned())
            }
        };
        let headers = resp.headers_mut();
        match content_type {
            Some(ct) => headers.insert(header::CONTENT_TYPE, ct),
            None => headers.remove(header::CONTENT_TYPE),
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        *resp.body_mut() = Full::new(body).map_err(|never| match never {}).boxed();
        resp
    }

    async fn error_page(&self, fetch: &ErrorPageFetch) -> Result<(Bytes, Option<HeaderValue>), BoxError> {
        let picked =
            self.balancer.pick(&fetch.backend.backend, LoadBalance::RoundRobin, &[]).map_err(|reason| {
                ProxyError::NoEndpoints {
                    service: fetch.backend.backend.service.to_string(),
                    reason: reason.into(),
                }
            })?;
        let mut req =
            Request::builder().method(Method::GET).uri("/").header(header::HOST, fetch.host.clone());
        if let Some(accept) = &fetch.accept {
            req = req.header(header::ACCEPT, accept.as_str());
        }
        for (name, value) in &fetch.headers {
            req = req.header(name, value);
        }
        let req = req.body(super::upstream::empty())?;
        let exchange = async {
            let resp = self
                .client
                .send(picked.authority.as_str(), &mut Some(req), &[], self.config.connect_timeout, None)
                .await?;
            // The stock images answer with the status X-Code names; another 5xx is the error
            // backend's own failure.
            if resp.status().is_server_error() && resp.status() != fetch.status {
                return Err(format!("the error backend answered {}", resp.status()).into());
            }
            let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
            let body = Limited::new(resp.into_body(), MAX_PAGE_BYTES).collect().await?.to_bytes();
            Ok::<_, BoxError>((body, content_type))
        };
        tokio::time::timeout(ERROR_BACKEND_TIMEOUT, exchange).await.map_err(|_| "timed out")?
    }
}
