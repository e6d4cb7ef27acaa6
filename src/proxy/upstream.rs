//! Upstream connections: a keep-alive HTTP/1.1 connection pool and error classification.
//!
//! Data flow: the service picks an endpoint from the route's backend, sends through
//! [`Upstreams::send`], and classifies failures into [`ProxyError`]s for `intercept::decide`.
//!
//! The pool is erratum's own, over hyper's connection API (`hyper::client::conn::http1`),
//! rather than hyper-util's generic `legacy::Client`: that client hashes a (scheme,
//! authority) key with SipHash twice per request, clones the connector and the URI, inserts
//! connection info into every response, and spawns a task per request to wait for the
//! connection to become idle again. Measured on the pass-through benchmark it was about a fifth
//! of erratum's user CPU. Here the key is the endpoint's `host:port` string, and a connection
//! goes back to the pool when its response body is finished (or dropped finished).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::BoxError;
use super::intercept::ProxyError;

/// Body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, BoxError>;

/// How long an unused upstream connection stays in the pool. Below the common 60–75 s
/// keep-alive of servers, so erratum closes first and rarely sends into a closing socket.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
/// Idle connections kept per endpoint; more are closed when they finish. Bounds the file
/// descriptors a burst can leave behind.
pub const MAX_IDLE_PER_ENDPOINT: usize = 1024;
/// TCP keep-alive probes on upstream sockets: a peer that vanished is noticed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// How often idle connections past [`POOL_IDLE_TIMEOUT`] are closed.
const REAP_EVERY: Duration = Duration::from_secs(5);

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
    /// The HTTP exchange failed (reset, closed early, malformed response, request body error).
    #[error(transparent)]
    Http(#[from] hyper::Error),
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
    hosts: Mutex<HashMap<Arc<str>, Vec<Idle>, foldhash::fast::RandomState>>,
    reaper: std::sync::Once,
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

impl Upstreams {
    /// An empty pool; `connect_timeout` bounds every new connection.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                connect_timeout,
                hosts: Mutex::new(HashMap::default()),
                reaper: std::sync::Once::new(),
            }),
        }
    }

    /// Sends `req` (origin-form URI, Host set by the caller) to `authority` (`host:port`) on
    /// an idle pooled connection, or a new one. A request that a pooled connection closed
    /// before sending (the origin timed it out meanwhile) is sent once more on a new
    /// connection: nothing of it reached the origin, so this is safe for any method.
    pub async fn send(
        &self,
        authority: &str,
        req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let (key, reused) = self.checkout(authority);
        let (mut sender, req) = match reused {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(key, sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(req) => (self.connect(authority).await?, req),
                    None => return Err(e.into_error().into()),
                },
            },
            None => (self.connect(authority).await?, req),
        };
        let resp = sender.send_request(req).await?;
        Ok(self.lease(key, sender, resp))
    }

    /// Idle connections in the pool (all endpoints), for tests and debugging.
    pub fn idle(&self) -> usize {
        self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner()).values().map(Vec::len).sum()
    }

    /// The pool key for `authority` and the most recently used ready connection to it, if any.
    /// Closed and expired connections met on the way are dropped (which closes them).
    fn checkout(&self, authority: &str) -> (Arc<str>, Option<SendRequest<UpstreamBody>>) {
        let mut hosts = self.inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let key = match hosts.get_key_value(authority) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(authority);
                hosts.insert(key.clone(), Vec::new());
                key
            }
        };
        let now = Instant::now();
        let mut found = None;
        if let Some(idle) = hosts.get_mut(authority) {
            // Most recently used first: the warmest, and the least likely to have been timed
            // out by the origin. A connection that is not ready yet (its driver has not
            // noticed the end of the last exchange, or the origin answered before reading the
            // whole request body) stays for later.
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                let conn = &idle[i];
                if conn.sender.is_closed() || now.duration_since(conn.since) >= POOL_IDLE_TIMEOUT {
                    idle.swap_remove(i);
                } else if conn.sender.is_ready() {
                    found = Some(idle.swap_remove(i).sender);
                    break;
                }
            }
        }
        (key, found)
    }

    /// A new connection to `authority`, its HTTP/1.1 driver spawned (with upgrades, for
    /// WebSocket tunnels).
    async fn connect(&self, authority: &str) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let after = self.inner.connect_timeout;
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
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::trace!("upstream connection ended: {e}");
            }
        });
        self.inner.reaper.call_once(|| {
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        });
        Ok(sender)
    }

    fn lease(
        &self,
        key: Arc<str>,
        sender: SendRequest<UpstreamBody>,
        resp: Response<Incoming>,
    ) -> Response<PooledBody> {
        // A 101 hands the connection to the tunnel; it never comes back.
        let lease = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: Arc::downgrade(&self.inner),
            key,
            sender,
        });
        resp.map(|body| PooledBody { body, done: false, lease })
    }
}

/// Closes idle connections past [`POOL_IDLE_TIMEOUT`] until the pool is gone.
async fn reap(pool: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let mut hosts = inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for idle in hosts.values_mut() {
            idle.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < POOL_IDLE_TIMEOUT);
        }
        hosts.retain(|_, idle| !idle.is_empty());
    }
}

/// A connection on loan to one response.
struct Lease {
    pool: Weak<Inner>,
    key: Arc<str>,
    sender: SendRequest<UpstreamBody>,
}

impl Lease {
    fn give_back(self) {
        let Some(inner) = self.pool.upgrade() else { return };
        if self.sender.is_closed() {
            return;
        }
        let mut hosts = inner.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let idle = hosts.entry(self.key).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle { sender: self.sender, since: Instant::now() });
        }
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body. When it is dropped after its end, its connection goes back
    /// to the pool; dropped earlier, the connection is closed (the rest of the body is not
    /// read just to save the connection).
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

/// Classifies a failed exchange into the error erratum reports (error-semantics rule 42:
/// refused/reset/DNS -> 502, connect timeout -> 504).
pub fn classify(err: &UpstreamError, upstream: &str) -> ProxyError {
    match err {
        UpstreamError::ConnectTimeout { after, .. } => {
            ProxyError::UpstreamTimeout { upstream: upstream.to_string(), after: *after }
        }
        UpstreamError::Connect { source, .. } => {
            ProxyError::UpstreamConnect { upstream: upstream.to_string(), reason: connect_reason(source) }
        }
        UpstreamError::Http(e) => {
            let reason = source_chain(e);
            if has_source::<ClientBody>(e) {
                // The request body broke off (malformed chunks, stalled, client gone): the
                // client's fault, and the upstream connection it was streaming into is closed,
                // not reused.
                ProxyError::BadRequest { reason }
            } else {
                ProxyError::UpstreamReset { upstream: upstream.to_string(), reason }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An origin that answers every request on a connection with `200 ok` and reports each
    /// connection's end on `closed`. It closes a connection itself after `close_after`.
    async fn origin(close_after: Option<Duration>) -> (String, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (closed, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let read = match close_after {
                            Some(after) => {
                                tokio::time::timeout(after, s.read(&mut buf)).await.unwrap_or(Ok(0))
                            }
                            None => s.read(&mut buf).await,
                        };
                        match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap()
                            }
                        }
                    }
                    let _ = closed.send(());
                });
            }
        });
        (addr, rx)
    }

    fn get() -> Request<UpstreamBody> {
        Request::get("/").header("host", "o").body(Empty::new().map_err(|n| match n {}).boxed()).unwrap()
    }

    async fn ok(pool: &Upstreams, addr: &str) {
        let resp = pool.send(addr, get()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    #[tokio::test]
    async fn finished_responses_return_their_connection() {
        let (addr, _closed) = origin(None).await;
        let pool = Upstreams::new(Duration::from_secs(1));
        for _ in 0..5 {
            ok(&pool, &addr).await;
            assert_eq!(pool.idle(), 1);
        }
        // A body dropped before its end takes its connection with it.
        let resp = pool.send(&addr, get()).await.unwrap();
        assert_eq!(pool.idle(), 0);
        drop(resp);
        assert_eq!(pool.idle(), 0);
    }

    #[tokio::test]
    async fn connections_the_origin_closed_are_not_used() {
        let (addr, mut closed) = origin(Some(Duration::from_millis(50))).await;
        let pool = Upstreams::new(Duration::from_secs(1));
        ok(&pool, &addr).await;
        closed.recv().await.unwrap();
        // Let the connection's driver see the end of the stream.
        tokio::time::sleep(Duration::from_millis(20)).await;
        ok(&pool, &addr).await;
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (addr, mut closed) = origin(None).await;
        let pool = Upstreams::new(Duration::from_secs(1));
        ok(&pool, &addr).await;
        assert_eq!(pool.idle(), 1);
        tokio::time::pause();
        tokio::time::advance(POOL_IDLE_TIMEOUT - REAP_EVERY).await;
        tokio::task::yield_now().await;
        assert_eq!(pool.idle(), 1, "closed too early");
        tokio::time::advance(REAP_EVERY * 2).await;
        tokio::task::yield_now().await;
        assert_eq!(pool.idle(), 0);
        tokio::time::resume();
        tokio::time::timeout(Duration::from_secs(5), closed.recv()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn connect_failures_are_classified() {
        let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
        let pool = Upstreams::new(Duration::from_secs(1));
        let Err(err) = pool.send(&format!("127.0.0.1:{port}"), get()).await else { panic!("connected") };
        match classify(&err, "o") {
            ProxyError::UpstreamConnect { reason, .. } => assert_eq!(reason, "connection refused"),
            other => panic!("{other}"),
        }
    }
}
