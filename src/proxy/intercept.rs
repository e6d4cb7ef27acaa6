//! The one place that decides what the client gets when something goes wrong.
//!
//! Data flow: the proxy calls [`decide`] with an [`Outcome`] — an upstream status and headers
//! before any body byte is forwarded, or a [`ProxyError`] erratum hit itself — and sends what
//! it returns. Error pages from `ErrorPagePolicy` plug in here; until then erratum-made errors
//! get a small built-in page and upstream responses pass through untouched.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::table::Route;

/// An error erratum itself produced while handling a request.
#[derive(Debug, thiserror::Error)]
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
}

impl ProxyError {
    /// The status erratum answers with (error-semantics §G: refused/reset -> 502,
    /// timeouts -> 504).
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotReady | ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect { .. } | ProxyError::UpstreamReset { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
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
        }
    }
}

/// What happened to a request, as far as error handling is concerned.
#[derive(Debug)]
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
}

/// What to send.
#[derive(Debug)]
pub enum Decision {
    /// Forward the upstream response as it is.
    PassThrough,
    /// Send this instead.
    Replace(Reply),
}

/// Decides the response for an outcome. `route` is the matched route, if any.
pub fn decide(_route: Option<&Route>, outcome: Outcome<'_>) -> Decision {
    match outcome {
        Outcome::Upstream { .. } => Decision::PassThrough,
        Outcome::Proxy(err) => Decision::Replace(builtin(err.status())),
    }
}

/// erratum's own minimal page for a status. Static text: nothing from the request is
/// reflected, so there is nothing to escape.
pub fn builtin(status: StatusCode) -> Reply {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let body = Bytes::from(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n\
         <body><h1>{code} {reason}</h1><hr><p>erratum</p></body></html>\n"
    ));
    let mut headers = HeaderMap::with_capacity(3);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Reply { status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_errors_map_to_semantics_rule_42() {
        let up = || "10.0.0.1:80".to_string();
        assert_eq!(
            ProxyError::UpstreamConnect { upstream: up(), reason: "refused".into() }.status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ProxyError::UpstreamTimeout { upstream: up(), after: std::time::Duration::from_secs(1) }.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::UpstreamReset { upstream: up(), reason: "reset".into() }.status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ProxyError::NoRoute { host: "h".into(), path: "/".into() }.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ProxyError::NoEndpoints { service: "a/b".into(), reason: "none".into() }.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn upstream_responses_pass_through_without_a_policy() {
        let headers = HeaderMap::new();
        let d =
            decide(None, Outcome::Upstream { status: StatusCode::SERVICE_UNAVAILABLE, headers: &headers });
        assert!(matches!(d, Decision::PassThrough));
    }

    #[test]
    fn builtin_pages_carry_their_length() {
        let r = builtin(StatusCode::BAD_GATEWAY);
        assert_eq!(r.headers[header::CONTENT_LENGTH], r.body.len().to_string().as_str());
        assert!(std::str::from_utf8(&r.body).unwrap().contains("502 Bad Gateway"));
    }
}
