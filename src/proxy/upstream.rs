//! Upstream connections: a pooled keep-alive HTTP/1.1 client and error classification.
//!
//! Data flow: the service picks an endpoint from the route's backend, sends through this
//! client, and classifies failures into [`ProxyError`]s for `intercept::decide`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::BoxError;
use super::intercept::ProxyError;

/// Body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// The pooled upstream client.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// How long an unused upstream connection stays in the pool. Below the common 60–75 s
/// keep-alive of servers, so erratum closes first and rarely sends into a closing socket.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Builds the client: TCP_NODELAY, connect timeout, idle pooling, HTTP/1.1.
pub fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(30)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// `http://AUTHORITY/PATH?QUERY` for an upstream request.
pub fn upstream_uri(authority: &str, path_and_query: &str) -> Result<http::Uri, http::Error> {
    http::Uri::builder().scheme("http").authority(authority).path_and_query(path_and_query).build()
}

/// Classifies a client error into the error erratum reports (error-semantics rule 42:
/// refused/reset/DNS -> 502, connect timeout -> 504).
pub fn classify(
    err: &hyper_util::client::legacy::Error,
    upstream: &str,
    connect_timeout: Duration,
) -> ProxyError {
    let reason = source_chain(err);
    if has_source::<ClientBody>(err) {
        // The request body broke off (malformed chunks, stalled, client gone): the client's
        // fault, and the upstream connection it was streaming into is closed, not reused.
        return ProxyError::BadRequest { reason };
    }
    if err.is_connect() {
        if has_timed_out(err) {
            return ProxyError::UpstreamTimeout { upstream: upstream.to_string(), after: connect_timeout };
        }
        return ProxyError::UpstreamConnect { upstream: upstream.to_string(), reason };
    }
    ProxyError::UpstreamReset { upstream: upstream.to_string(), reason }
}

/// An error of the client's request body on its way upstream.
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub struct ClientBody(pub BoxError);

fn has_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    find_source(err, |e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

fn has_source<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    find_source(err, |e| e.is::<E>())
}

fn find_source(
    err: &(dyn std::error::Error + 'static),
    found: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if found(e) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// `a: b: c` from an error and its sources, for logs.
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

pin_project_lite::pin_project! {
    /// A body that fails when no frame arrives for `idle` (nginx's `proxy_read_timeout` and
    /// `client_body_timeout`): a peer that stalls mid-body would otherwise hold the
    /// connection, and the client's, forever.
    ///
    /// The timer is armed only when the inner body is not ready, so a body that arrives with
    /// its head (the common small response) never touches the timer wheel.
    pub struct IdleTimeout<B> {
        idle: Duration,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        #[pin]
        body: B,
    }
}

impl<B> IdleTimeout<B> {
    /// Wraps `body`.
    pub fn new(body: B, idle: Duration) -> Self {
        Self { idle, sleep: None, body }
    }
}

/// The error of a body that stalled.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {0:?}")]
pub struct Stalled(pub Duration);

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::future::Future;
        use std::task::Poll;
        let mut this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            this.sleep.set(None);
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(*this.idle)));
        }
        let expired = this.sleep.as_pin_mut().is_some_and(|sleep| sleep.poll(cx).is_ready());
        if expired { Poll::Ready(Some(Err(Stalled(*this.idle).into()))) } else { Poll::Pending }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
