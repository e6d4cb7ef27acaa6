//! gRPC errors: what a gRPC client gets when erratum fails its request, or when an upstream
//! answers with an HTTP error and no gRPC status. Part of [`decide`](super::decide): its
//! decision, whatever made it (a policy's rule or the built-in answer), is turned into a
//! trailers-only gRPC response (HTTP 200, `grpc-status`, `grpc-message`, no body) — never a
//! page a gRPC client cannot read. A policy's `setHeaders` can set `grpc-message`; a policy's
//! `responseCode` picks the gRPC status through the HTTP-to-gRPC mapping.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use percent_encoding::{AsciiSet, CONTROLS};

use super::{Decision, Outcome, ProxyError, Reply};

/// `grpc-status`.
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC status codes erratum answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// 2
    Unknown = 2,
    /// 4
    DeadlineExceeded = 4,
    /// 7
    PermissionDenied = 7,
    /// 8
    ResourceExhausted = 8,
    /// 12
    Unimplemented = 12,
    /// 13
    Internal = 13,
    /// 14
    Unavailable = 14,
    /// 16
    Unauthenticated = 16,
}

/// gRPC's mapping of an HTTP status without a gRPC status (grpc/doc/http-grpc-status-mapping.md).
pub fn from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The finer status of an error erratum made itself.
pub fn from_error(err: &ProxyError) -> Code {
    match err {
        ProxyError::UpstreamTimeout { .. } => Code::DeadlineExceeded,
        ProxyError::BodyTooLarge { .. } | ProxyError::HeadTooLarge { .. } | ProxyError::UriTooLong { .. } => {
            Code::ResourceExhausted
        }
        ProxyError::NoRoute { .. } => Code::Unimplemented,
        ProxyError::Forbidden { .. } => Code::PermissionDenied,
        ProxyError::RateLimited { .. } => Code::ResourceExhausted,
        ProxyError::AuthRefused { status, .. } => from_http(*status),
        ProxyError::AuthFailed { .. }
        | ProxyError::AuthUnavailable { .. }
        | ProxyError::Maintenance { .. } => Code::Unavailable,
        ProxyError::BadRequest { .. } => Code::Internal,
        ProxyError::NotReady
        | ProxyError::NoEndpoints { .. }
        | ProxyError::UpstreamConnect { .. }
        | ProxyError::UpstreamReset { .. } => Code::Unavailable,
    }
}

/// `decision` for a gRPC request (see the module header).
pub(super) fn apply(decision: Decision, outcome: &Outcome<'_>) -> Decision {
    let (http_status, err) = match outcome {
        Outcome::Redirect { .. } | Outcome::Preflight => return decision,
        // A gRPC answer — a status in its head, or a 200 whose trailers will carry it — is
        // the client's as it is.
        Outcome::Upstream { headers, .. } if headers.contains_key(&GRPC_STATUS) => return decision,
        Outcome::Upstream { status, .. } if *status == StatusCode::OK => return decision,
        Outcome::Upstream { status, .. } => (*status, None),
        Outcome::Proxy(err) => (err.status(), Some(*err)),
    };
    let (served, set, applied) = match decision {
        Decision::PassThrough => (http_status, None, None),
        Decision::Report(applied) => (http_status, None, Some(applied)),
        Decision::Rewrite { status, headers, applied } => (status, Some(headers), Some(applied)),
        Decision::Replace { reply, applied } => (reply.status, Some(reply.headers), applied),
    };
    // erratum's own failure keeps its finer status unless a policy chose another code.
    let code = match err {
        Some(err) if served == http_status => from_error(err),
        _ => from_http(served),
    };
    let message = set
        .as_ref()
        .and_then(|h| h.get(&GRPC_MESSAGE).cloned())
        .unwrap_or_else(|| default_message(served, err));
    Decision::Replace { reply: trailers_only(code, message), applied }
}

/// `erratum: Bad Gateway (upstream_connect)`: says what happened without naming addresses.
fn default_message(status: StatusCode, err: Option<&ProxyError>) -> HeaderValue {
    let reason = status.canonical_reason().unwrap_or("error");
    let text = match err {
        Some(err) => format!("erratum: {reason} ({})", err.reason()),
        None => format!("erratum: upstream answered HTTP {} {reason}", status.as_u16()),
    };
    encode_message(&text)
}

/// Percent-encoding of `grpc-message` (gRPC over HTTP/2: everything outside printable ASCII,
/// and `%`).
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// `text` as a `grpc-message` value.
pub fn encode_message(text: &str) -> HeaderValue {
    let encoded = percent_encoding::utf8_percent_encode(text, MESSAGE).to_string();
    HeaderValue::try_from(encoded).unwrap_or_else(|_| HeaderValue::from_static("erratum"))
}

/// A trailers-only response: the status in the head, which ends the stream.
fn trailers_only(code: Code, message: HeaderValue) -> Reply {
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(GRPC_STATUS.clone(), HeaderValue::from(code as u16));
    headers.insert(GRPC_MESSAGE.clone(), message);
    Reply { status: StatusCode::OK, headers, body: Bytes::new(), fetch: None }
}

/// Whether a request is a gRPC call (`content-type: application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
