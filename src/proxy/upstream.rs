//! Upstream connections: keep-alive HTTP/1.1 connection pools and error classification.
//!
//! Data flow: the service picks an endpoint from the route's backend, sends through
//! [`Upstreams::send`], and classifies failures into [`ProxyError`]s for `intercept::decide`.
//!
//! The pools are erratum's own. Requests without a body (nearly all traffic) go over
//! connections erratum reads and writes itself ([`client`], on the request's task); requests with
//! a body and upgrades over hyper's connection API (`hyper::client::conn::http1`, a driver
//! task per connection), which streams request bodies while reading the response. Neither is
//! hyper-util's generic `legacy::Client`: it hashes a (scheme, authority) key with SipHash
//! twice per request, clones the connector and the URI, inserts connection info into every
//! response, and spawns a task per request to wait for the connection to become idle again
//! (about a fifth of erratum's user CPU on the pass-through benchmark). Here the key is the
//! endpoint's `host:port` string, and a connection goes back to its pool when its response
//! body is finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::BoxError;
use super::http1::client;
use super::intercept::ProxyError;
use crate::table::{BackendProtocol, UpstreamTls};

/// Body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// The body of a request erratum makes itself without one (page fetches, error backends,
/// `auth-url`).
pub fn empty() -> UpstreamBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

/// How long an unused upstream connection stays in the pool at least; it is closed within
/// `REAP_EVERY` after. Below the common 60–75 s keep-alive of servers, so erratum closes
/// first and rarely sends into a closing socket.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per endpoint; more are closed when they finish. Bounds the file
/// descriptors a burst can leave behind.
pub const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// TCP keep-alive probes on upstream sockets: a peer that vanished is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// How often idle connections past [`POOL_IDLE_TIMEOUT`] are closed.
const REAP_EVERY: Duration = Duration::from_secs(5);
/// [`POOL_IDLE_TIMEOUT`] in reaper ticks: idle time is counted in ticks, not read from the
/// clock on every checkout and return (two clock reads per request otherwise).
const IDLE_TICKS: u32 = (POOL_IDLE_TIMEOUT.as_secs() / REAP_EVERY.as_secs()) as u32;

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made (refused, unreachable, name not resolved).
    #[error("connect to {authority}: {source}")]
    Connect {
        /// `host:port` dialled.
        authority: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TCP connection was not made within the connect timeout.
    #[error("connect to {authority}: timed out after {after:?}")]
    ConnectTimeout {
        /// `host:port` dialled.
        authority: String,
        /// The connect timeout.
        after: Duration,
    },
    /// The HTTP exchange failed on hyper's connection (a request with a body, an upgrade).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The HTTP/2 exchange failed (h2c, gRPC, GRPCS endpoints).
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    /// The client's request body failed while it streamed to an HTTP/2 endpoint (before the
    /// response head).
    #[error("request body: {0}")]
    RequestBody(BoxError),
    /// The HTTP exchange failed on erratum's own connection (a request without a body).
    #[error(transparent)]
    H1(#[from] client::Error),
    /// The request was already sent (its body streamed): it cannot be sent again.
    #[error("the request was already sent")]
    Spent,
    /// TLS to the endpoint failed (handshake, certificate not verified, wrong name), or the
    /// route's TLS settings are broken.
    #[error("TLS to {authority}: {reason}")]
    Tls {
        /// `host:port` dialled.
        authority: String,
        /// Why.
        reason: String,
    },
}

/// The upstream connection pool; clones share it.
#[derive(Clone)]
pub struct Upstreams {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").field("idle", &self.idle()).finish()
    }
}

struct Inner {
    connect_timeout: Duration,
    /// Connections erratum reads and writes itself (requests without a body).
    own: Pool<client::Conn>,
    /// Connections driven by hyper (requests with a body, upgrades, HTTPS endpoints).
    hyper: Pool<SendRequest<UpstreamBody>>,
    /// HTTP/2 connections, shared by every request to an endpoint (h2c, gRPC).
    h2: Mutex<HashMap<String, http2::Conn>>,
    reaper: std::sync::Once,
}

impl Upstreams {
    /// An empty pool; `connect_timeout` bounds every new connection.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                connect_timeout,
                own: Pool::new(),
                hyper: Pool::new(),
                h2: Mutex::new(HashMap::new()),
                reaper: std::sync::Once::new(),
            }),
        }
    }

    /// Sends the request in `req` (origin-form URI, Host set by the caller) to `authority`
    /// (`host:port`) on an idle pooled connection, or a new one made within `connect_timeout`.
    ///
    /// A request without a body that is not an upgrade (nearly all traffic) goes over
    /// erratum's own HTTP/1.1 code ([`client`]) and stays in `req`, whatever happens: the
    /// caller may send it again, elsewhere. Others go over hyper's client connection, which
    /// takes the request (its body streams) once a connection is made: after a failed
    /// connect it is still in `req`. A pooled connection can be closed by the origin just as
    /// a request goes out; then:
    /// - on hyper's, a request it had not sent yet is sent once more on a new connection;
    /// - on erratum's, a request of an idempotent method (RFC 9110 §9.2.2) that got no byte
    ///   of answer is sent once more on a new connection (RFC 9112 §9.3.1 allows it).
    ///
    /// `set` are header fields that replace any of the same name in the request.
    pub async fn send(
        &self,
        authority: &str,
        req: &mut Option<Request<UpstreamBody>>,
        set: &[(&HeaderName, &HeaderValue)],
        connect_timeout: Duration,
        protocol: Option<&BackendProtocol>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let Some(r) = req.as_mut() else { return Err(UpstreamError::Spent) };
        if let Some(protocol) = protocol {
            for (name, value) in set {
                r.headers_mut().insert((*name).clone(), (*value).clone());
            }
            return Box::pin(self.send_via(authority, req, connect_timeout, protocol)).await;
        }
        if keeps_request(r, protocol) {
            return self.send_own(authority, r, set, connect_timeout).await;
        }
        for (name, value) in set {
            r.headers_mut().insert((*name).clone(), (*value).clone());
        }
        // Boxed: the rarer path keeps its state out of every request's future.
        Box::pin(self.send_hyper(authority, authority, req, connect_timeout, None)).await
    }

    /// Sends on a pooled hyper HTTP/1.1 connection (`key` names the pool: the endpoint, and
    /// the TLS settings when `tls`).
    async fn send_hyper(
        &self,
        key: &str,
        authority: &str,
        slot: &mut Option<Request<UpstreamBody>>,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let (key, reused) = self.inner.hyper.checkout(key);
        let mut sender = match reused {
            Some(mut sender) => {
                let Some(req) = slot.take() else { return Err(UpstreamError::Spent) };
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok(self.lease(key, sender, resp)),
                    Err(mut e) => match e.take_message() {
                        // Not sent: back in the slot for a new connection (or another endpoint).
                        Some(req) => {
                            *slot = Some(req);
                            self.connect_hyper(authority, connect_timeout, tls).await?
                        }
                        None => return Err(e.into_error().into()),
                    },
                }
            }
            None => self.connect_hyper(authority, connect_timeout, tls).await?,
        };
        let Some(req) = slot.take() else { return Err(UpstreamError::Spent) };
        let resp = sender.send_request(req).await?;
        Ok(self.lease(key, sender, resp))
    }

    async fn send_own(
        &self,
        authority: &str,
        req: &Request<UpstreamBody>,
        set: &[(&HeaderName, &HeaderValue)],
        connect_timeout: Duration,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let (key, reused) = self.inner.own.checkout(authority);
        let release = OwnLease { pool: Arc::downgrade(&self.inner), key };
        let (conn, retry) = match reused {
            Some(conn) => (conn, req.method().is_idempotent()),
            None => (client::Conn::new(self.dial(authority, connect_timeout).await?), false),
        };
        let resp = match client::send(conn, req, set, release.clone()).await {
            Err(client::Error::NoResponse(_)) if retry => {
                let conn = client::Conn::new(self.dial(authority, connect_timeout).await?);
                client::send(conn, req, set, release).await?
            }
            other => other?,
        };
        Ok(resp.map(ResponseBody::Own))
    }

    /// The connect timeout of requests whose route sets none (`--upstream-connect-timeout`).
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// Idle connections in the pool (all endpoints), for tests and debugging.
    pub fn idle(&self) -> usize {
        self.inner.own.idle() + self.inner.hyper.idle()
    }

    /// A new TCP connection to `authority` (no delay, keep-alive probes), within `after`.
    async fn dial(&self, authority: &str, after: Duration) -> Result<TcpStream, UpstreamError> {
        let stream = match tokio::time::timeout(after, TcpStream::connect(authority)).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout { authority: authority.to_string(), after }),
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect { authority: authority.to_string(), source });
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        self.inner.reaper.call_once(|| {
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        });
        Ok(stream)
    }

    /// A new hyper connection to `authority`, its HTTP/1.1 driver spawned (with upgrades, for
    /// WebSocket tunnels).
    async fn connect_hyper(
        &self,
        authority: &str,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        match tls {
            None => drive_h1(self.dial(authority, connect_timeout).await?).await,
            Some(tls) => drive_h1(self.dial_tls(authority, connect_timeout, tls).await?).await,
        }
    }

    fn h2_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, http2::Conn>> {
        self.inner.h2.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(
        &self,
        key: Arc<str>,
        sender: SendRequest<UpstreamBody>,
        resp: Response<Incoming>,
    ) -> Response<ResponseBody> {
        // A 101 hands the connection to the tunnel; it never comes back.
        let lease = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: Arc::downgrade(&self.inner),
            key,
            sender,
        });
        resp.map(|body| ResponseBody::Hyper(PooledBody { body, done: false, lease }))
    }
}

/// An HTTP/1.1 connection over `io`, its driver spawned (with upgrades, for WebSocket tunnels).
async fn drive_h1<I>(io: I) -> Result<SendRequest<UpstreamBody>, UpstreamError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::trace!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// Closes idle connections past [`POOL_IDLE_TIMEOUT`] until the pool is gone.
async fn reap(pool: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        inner.own.reap();
        inner.hyper.reap();
        inner.h2.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, conn| !conn.is_closed());
    }
}

/// Where an [`client::UpstreamBody`] puts its connection back (the pool of erratum's own connections).
#[derive(Clone)]
pub struct OwnLease {
    pool: Weak<Inner>,
    key: Arc<str>,
}

impl client::Release for OwnLease {
    fn release(self, conn: client::Conn) {
        if let Some(inner) = self.pool.upgrade() {
            inner.own.give_back(self.key, conn);
        }
    }
}

/// A hyper connection on loan to one response.
struct Lease {
    pool: Weak<Inner>,
    key: Arc<str>,
    sender: SendRequest<UpstreamBody>,
}

impl Lease {
    fn give_back(self) {
        let Some(inner) = self.pool.upgrade() else { return };
        if !self.sender.is_closed() {
            inner.hyper.give_back(self.key, self.sender);
        }
    }
}

/// An upstream response body, from either kind of connection.
pub enum ResponseBody {
    /// Read by erratum's own HTTP/1.1 code.
    Own(client::UpstreamBody<OwnLease>),
    /// Read by hyper.
    Hyper(PooledBody),
    /// A stream of a shared HTTP/2 connection (nothing to give back).
    H2(http2::Body),
}

/// Why an upstream response body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// On hyper's connection.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// On erratum's own connection.
    #[error(transparent)]
    H1(#[from] client::Error),
    /// On an HTTP/2 stream.
    #[error(transparent)]
    H2(#[from] h2::Error),
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Own(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::Hyper(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Self::H2(body) => std::pin::Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Own(body) => body.is_end_stream(),
            Self::Hyper(body) => body.is_end_stream(),
            Self::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Own(body) => body.size_hint(),
            Self::Hyper(body) => body.size_hint(),
            Self::H2(body) => body.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body read by hyper. When it is dropped after its end, its
    /// connection goes back to the pool; dropped earlier, the connection is closed (the rest
    /// of the body is not read just to save the connection).
    pub struct PooledBody {
        #[pin]
        body: Incoming,
        done: bool,
        lease: Option<Lease>,
    }

    impl PinnedDrop for PooledBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if (*this.done || http_body::Body::is_end_stream(&*this.body))
                && let Some(lease) = this.lease.take()
            {
                lease.give_back();
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        match &frame {
            None => *this.done = true,
            Some(Err(_)) => *this.lease = None,
            Some(Ok(_)) => {}
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Classifies a failed exchange into the error erratum reports (docs/error-semantics.md rule 42:
/// refused/reset/DNS -> 502, connect timeout -> 504).
/// `body_limit` is the request's body limit, if its body was counted against one.
pub fn classify(err: &UpstreamError, upstream: &str, body_limit: Option<u64>) -> ProxyError {
    match err {
        UpstreamError::ConnectTimeout { after, .. } => {
            ProxyError::UpstreamTimeout { upstream: upstream.to_string(), after: *after }
        }
        UpstreamError::Connect { source, .. } => {
            ProxyError::UpstreamConnect { upstream: upstream.to_string(), reason: connect_reason(source) }
        }
        UpstreamError::H1(e) => {
            ProxyError::UpstreamReset { upstream: upstream.to_string(), reason: source_chain(e) }
        }
        UpstreamError::Spent => {
            ProxyError::UpstreamReset { upstream: upstream.to_string(), reason: err.to_string() }
        }
        UpstreamError::Tls { reason, .. } => {
            ProxyError::UpstreamConnect { upstream: upstream.to_string(), reason: reason.clone() }
        }
        UpstreamError::Http(e) => classify_exchange(e, upstream, body_limit),
        UpstreamError::RequestBody(e) => classify_exchange(&**e, upstream, body_limit),
        UpstreamError::H2(e) => {
            ProxyError::UpstreamReset { upstream: upstream.to_string(), reason: source_chain(e) }
        }
    }
}

/// A failed exchange whose request body may be the cause.
fn classify_exchange(
    e: &(dyn std::error::Error + 'static),
    upstream: &str,
    body_limit: Option<u64>,
) -> ProxyError {
    if let Some(limit) = body_limit
        && has_source::<http_body_util::LengthLimitError>(e)
    {
        // The body grew past the limit before any response: the upstream request is
        // abandoned (its connection closed, not reused) and the client gets 413.
        return ProxyError::BodyTooLarge { limit };
    }
    let reason = source_chain(e);
    if has_source::<ClientBody>(e) {
        // The request body broke off (malformed chunks, stalled, client gone): the client's
        // fault, and the upstream connection it was streaming into is closed, not reused.
        ProxyError::BadRequest { reason }
    } else {
        ProxyError::UpstreamReset { upstream: upstream.to_string(), reason }
    }
}

/// Why a connect failed, cheaply: formatting an OS error (strerror plus the formatter) was a
/// tenth of the CPU of a request to a refused upstream; the error kind names the usual causes.
fn connect_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        kind @ (ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable
        | AddrNotAvailable | TimedOut) => kind.to_string(),
        _ => e.to_string(),
    }
}

/// An error of the client's request body on its way upstream.
#[derive(Debug, thiserror::Error)]
#[error("request body: {0}")]
pub struct ClientBody(pub BoxError);

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

mod http2;
mod idle;
mod pool;
mod protocols;

pub use idle::{IdleTimeout, Stalled};
use pool::Pool;
/// Whether [`Upstreams::send`] sends `req` on erratum's own HTTP/1.1 exchange, which leaves
/// it in the caller's slot (a bodiless plaintext request, no upgrade): its fields can still be
/// read once the answer comes.
pub fn keeps_request<B: http_body::Body>(req: &Request<B>, protocol: Option<&BackendProtocol>) -> bool {
    protocol.is_none()
        && req.body().is_end_stream()
        && req.method() != http::Method::CONNECT
        && !req.headers().contains_key(http::header::UPGRADE)
}

#[cfg(test)]
mod tests;
