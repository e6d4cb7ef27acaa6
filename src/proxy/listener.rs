//! The listener side: accepting clients, their connections, and what the proxy knows of them.
//!
//! Data flow: accept -> a slot under `--max-connections` ([`conns`]) -> TLS
//! handshake (certificate by SNI from the current table) -> erratum's own HTTP/1.1 server loop
//! for requests without a body ([`http1::server`](super::http1::server)), or from the first
//! other request hyper's auto connection (HTTP/1.1 or HTTP/2, upgrades allowed) -> for each
//! request [`Proxy::handle`](super::Proxy::handle) with the connection's [`ConnInfo`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::tls;
use http::HeaderValue;
use http::header::{CONNECTION, STRICT_TRANSPORT_SECURITY};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::http1::server as front;
use super::intercept::ProxyError;
use super::linger::Lingering;
use super::{Body, BoxError, Connections, Proxy, RequestBody, access_log, conns, proxy_protocol};
use crate::metrics::ProxyMetrics;

/// Timeouts and limits of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// TCP connect timeout to an upstream (-> 504 when it fires, rule 42).
    pub connect_timeout: Duration,
    /// Time from sending a request to the upstream's response headers (-> 504).
    pub response_timeout: Duration,
    /// Time a client has to send its request headers (slowloris guard); also the idle
    /// keep-alive timeout of HTTP/1.1 connections.
    pub header_read_timeout: Duration,
    /// Longest pause between two pieces of a request body from the client (-> the upstream
    /// request is aborted). The upstream response body gets `response_timeout` likewise.
    pub client_body_timeout: Duration,
    /// Largest request head (request line + headers) accepted, in bytes (-> 431).
    pub max_header_bytes: usize,
    /// Most request headers accepted (-> 431).
    pub max_headers: usize,
    /// Longest request target (path and query) accepted, in bytes (-> 414).
    pub max_uri_bytes: usize,
    /// Most open client connections, all listeners together (idle ones are shed at the limit).
    pub max_connections: usize,
    /// `--trusted-proxies`: peers whose forwarded fields are believed. Empty: nobody's.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// `--https-port`: the port HTTPS redirects name (omitted when 443) and
    /// `X-Forwarded-Port` says for TLS connections.
    pub https_port: u16,
    /// `Strict-Transport-Security` for responses served over HTTPS; `None` when off.
    pub hsts: Option<HeaderValue>,
    /// `--access-log`: where one JSON line per request goes; `None` when off.
    pub access_log: Option<access_log::Target>,
    /// `--proxy-protocol`: every connection starts with a PROXY protocol header (v1 or v2),
    /// read within `header_read_timeout`; the client address is the one it names.
    pub proxy_protocol: bool,
    /// Outlier ejection and the retry budget.
    pub balance: super::balance::Settings,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            client_body_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8192,
            max_connections: super::conns::DEFAULT_MAX_CONNECTIONS,
            trusted_proxies: Arc::from([]),
            https_port: 443,
            hsts: Some(HeaderValue::from_static("max-age=31536000; includeSubDomains")),
            proxy_protocol: false,
            access_log: None,
            balance: super::balance::Settings::default(),
        }
    }
}

/// What the proxy knows about the client connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    /// The client IP as a header value, made once per connection (`X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// The connection's place under `--max-connections`: an upgraded connection (WebSocket)
    /// outlives hyper's connection future and keeps it until the tunnel closes.
    pub slot: Option<Arc<super::conns::Slot>>,
    /// Requests run one at a time, on the connection's own task (erratum's HTTP/1.1 loop):
    /// per-request deadlines can live in the slot.
    pub one_at_a_time: bool,
    /// The peer is one of `--trusted-proxies`: its forwarded fields are believed. Decided
    /// once per connection, so with no trusted proxies a request pays one branch.
    pub trusted: bool,
}

impl ConnInfo {
    /// Connection facts for a client.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        // An IPv4 client of a dual-stack (`[::]`) listener arrives as `::ffff:a.b.c.d`: it is
        // an IPv4 client, and logs, X-Forwarded-For and trusted-proxy CIDRs say it as one.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        // An IP address is always a valid header value; the fallback only keeps this total.
        let client_ip = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { peer, tls, client_ip, slot: None, one_at_a_time: false, trusted: false }
    }

    /// The same, trusting the peer's forwarded fields if it is one of `trusted`.
    pub fn trusting(mut self, trusted: &[ipnet::IpNet]) -> Self {
        self.trusted = super::headers::is_trusted(trusted, self.peer.ip());
        self
    }

    /// The same, holding `slot` for upgrades.
    pub fn with_slot(mut self, slot: Arc<super::conns::Slot>) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The same, for a connection whose requests run one at a time on its own task.
    pub fn one_at_a_time(mut self) -> Self {
        self.one_at_a_time = true;
        self
    }
}

/// Longest a client may take to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Builds the hyper connection builder with erratum's limits. A connection handed to hyper
/// takes a copy with its own HTTP/1 timer ([`conns::HeadTimer`]).
fn builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192))
        .max_headers(config.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64)
        .max_local_error_reset_streams(256);
    b
}

/// Serves one listener until `shutdown` fires, then drains in-flight requests for at most
/// `drain`. `tls` turns the listener into HTTPS. `conns` is shared by all listeners: one
/// connection limit for the process.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tls::Acceptor>,
    proxy: Arc<Proxy>,
    metrics: ProxyMetrics,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let name = if tls.is_some() { "https" } else { "http" };
    let builder = Arc::new(builder(proxy.config()));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = name, "accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        // A slot for the accepted client. At the limit this sheds idle connections and waits;
        // meanwhile the loop accepts nothing more (new clients wait in the kernel backlog).
        // Shedding happens only when a client is actually waiting.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = conns.acquire() => match slot {
                Some(slot) => slot,
                None => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let accepted = Accepted {
            peer,
            tls,
            builder,
            slot: Arc::new(slot),
            gauge: metrics.connections.with_label_values(&[name]),
            proxy,
        };
        // The client's own future is the task (no wrapper polled on every wake-up).
        if accepted.proxy.config().proxy_protocol {
            conns.tracker().spawn(proxied(stream, accepted, metrics.proxy_protocol_errors.clone()));
        } else {
            conns.tracker().spawn(client(stream, accepted));
        }
    }
    drop(listener);
    // The registry asks every connection to close when `shutdown` fires: idle ones close
    // now, busy ones after their current response.
    conns.tracker().close();
    if tokio::time::timeout(drain, conns.tracker().wait()).await.is_err() {
        tracing::warn!(listener = name, "drain time of {drain:?} elapsed; closing remaining connections");
    }
}

/// `erratum_connections_open` for one connection, however its task ends.
struct Open(prometheus::IntGauge);

impl Open {
    fn new(gauge: prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a connection's task owns besides its stream.
struct Accepted {
    /// The client (the PROXY protocol's, when on).
    peer: SocketAddr,
    tls: Option<tls::Acceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    slot: Arc<conns::Slot>,
    gauge: prometheus::IntGauge,
}

/// A connection that starts with a PROXY protocol header (`--proxy-protocol`): the header is
/// read (bounded in time and size), then the client is served as the address it names.
async fn proxied(
    mut stream: tokio::net::TcpStream,
    mut accepted: Accepted,
    errors: prometheus::IntCounterVec,
) {
    let timeout = accepted.proxy.config().header_read_timeout;
    let header = tokio::select! {
        _ = accepted.slot.signals.closed() => return,
        h = proxy_protocol::read(&mut stream, timeout) => h,
    };
    match header {
        Ok(header) => {
            accepted.peer = header.client.unwrap_or(accepted.peer);
            client(front::Rewind::new(stream, header.rest), accepted).await;
        }
        Err(e) => {
            tracing::debug!(peer = %accepted.peer, "{e}");
            errors.with_label_values(&[e.reason()]).inc();
        }
    }
}

/// Serves one accepted client: the TLS handshake when the listener is HTTPS, then its
/// requests.
async fn client<IO>(stream: IO, accepted: Accepted)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Accepted { peer, tls, builder, proxy, slot, gauge } = accepted;
    let _open = Open::new(gauge);
    let (builder, proxy, slot) = (&*builder, &proxy, &slot);
    let config = proxy.config();
    let conn = ConnInfo::new(peer, tls.is_some()).trusting(&config.trusted_proxies).with_slot(slot.clone());
    let result = match tls {
        None => serve_connection(stream, builder, proxy, conn, slot).await,
        // Boxed: a TLS connection's state (the handshake's result among it, ~1.2 KiB) would
        // otherwise be part of every connection's task, plain HTTP included.
        Some(acceptor) => Box::pin(tls_client(stream, acceptor, builder, proxy, conn, slot)).await,
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended with error: {e}");
    }
}

/// A TLS client: the handshake (within its deadline), then its requests.
async fn tls_client<IO>(
    stream: IO,
    acceptor: tls::Acceptor,
    builder: &auto::Builder<TokioExecutor>,
    proxy: &Arc<Proxy>,
    conn: ConnInfo,
    slot: &Arc<conns::Slot>,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed, the handshake and then the TLS stream (rustls' connection state, a few KiB): the
    // handshake's state is not kept once the connection serves requests.
    let handshake = Box::pin(tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)));
    let handshake = tokio::select! {
        _ = slot.signals.closed() => return Ok(()),
        h = handshake => h,
    };
    let tls_stream = match handshake {
        Ok(Ok(tls_stream)) => Box::new(tls_stream),
        Ok(Err(e)) => {
            tracing::debug!(peer = %conn.peer, "TLS handshake failed: {e}");
            return Ok(());
        }
        Err(_) => {
            tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
            return Ok(());
        }
    };
    serve_connection(tls_stream, builder, proxy, conn, slot).await
}

/// Serves one client connection: erratum's own HTTP/1.1 loop ([`front`]) while requests are
/// simple, then hyper's server connection for the rest, from the first request that is not.
async fn serve_connection<IO>(
    io: IO,
    builder: &auto::Builder<TokioExecutor>,
    proxy: &Arc<Proxy>,
    conn: ConnInfo,
    slot: &Arc<conns::Slot>,
) -> Result<(), BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = proxy.config();
    let own = conn.clone().one_at_a_time();
    let front = front::Front {
        handle: |req| answer(proxy, &own, req),
        refuse: |refusal| proxy.refuse_head(&refused(refusal, config)),
        slot,
        max_head: config.max_header_bytes,
        max_headers: config.max_headers,
    };
    let (io, read) = match front::serve(front, io).await? {
        front::Ended::Done => return Ok(()),
        front::Ended::Handover(io, read) => (io, read),
    };
    let proxy = proxy.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        let conn = conn.clone();
        // Boxed: the request future is a few KiB, and hyper moves the service future into
        // place per request (HTTP/2: into a task of its own, twice).
        let close = Proxy::must_close_after(&req);
        let body_timeout = proxy.config().client_body_timeout;
        let handled = Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = Lingering::wrap(body, parts.version, &parts.headers, body_timeout);
            answer(&proxy, &conn, Request::from_parts(parts, RequestBody::Left(Box::new(body)))).await
        });
        async move {
            let mut resp = handled.await;
            if close {
                resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    // hyper's copy of the builder, with this connection's head deadline as its timer.
    let mut builder = builder.clone();
    builder.http1().timer(slot.head_timer());
    let io = TokioIo::new(front::Rewind::new(io, read));
    // Boxed: hyper's connection (~3 KiB) would otherwise be part of every connection's task.
    Box::pin(drive(builder.serve_connection_with_upgrades(io, service).into_owned(), &slot.signals)).await
}

/// The error a refused head is answered as.
fn refused(refusal: front::Refusal, config: &ProxyConfig) -> ProxyError {
    match refusal {
        front::Refusal::TooLarge => {
            ProxyError::HeadTooLarge { limit: config.max_header_bytes, fields: config.max_headers }
        }
        front::Refusal::Malformed(part) => {
            ProxyError::BadRequest { reason: format!("malformed request head ({part})") }
        }
    }
}

/// One request through the proxy, with the connection's bookkeeping (both server sides).
/// (A request that must end its connection — [`Proxy::must_close_after`] — has a body, so it
/// is hyper's; its service adds the close.)
async fn answer(proxy: &Proxy, conn: &ConnInfo, mut req: Request<RequestBody>) -> Response<Body> {
    // Busy while in the handler: at the limit, idle connections are shed first.
    let guard = conn.slot.as_ref().map(|slot| slot.busy());
    // HSTS only on what the client received over HTTPS (never on plain HTTP: RFC 6797 §7.2).
    let hsts =
        proxy.config().hsts.as_ref().filter(|_| super::headers::arrived_over_https(req.headers(), conn));
    // Boxed: held across the request's await, it would grow every request's future.
    let pending = proxy.access_log.as_ref().map(|_| {
        let pending = Box::new(access_log::Pending::note(
            &req,
            &client_of(&req, conn, &proxy.config().trusted_proxies),
        ));
        req.extensions_mut().insert(pending.bytes_in());
        pending
    });
    let mut resp = proxy.handle(req, conn.clone()).await;
    // A page an error backend renders (ingress-nginx's `custom-http-errors`): asked now,
    // in a boxed future so that other requests' futures do not grow.
    if resp.extensions().get::<super::error_backend::ErrorPageFetch>().is_some() {
        resp = Box::pin(proxy.ask_error_backend(resp)).await;
    }
    if let Some(hsts) = hsts {
        resp.headers_mut().insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if let (Some(pending), Some(log)) = (pending, &proxy.access_log) {
        resp = pending.finish(resp, log);
    }
    drop(guard);
    resp
}

/// The request's real client, for the access log: the connection's peer (or the PROXY
/// protocol's client), or from a trusted proxy the client its `X-Forwarded-For` names.
fn client_of<B>(req: &Request<B>, conn: &ConnInfo, trusted: &[ipnet::IpNet]) -> String {
    let ip = if conn.trusted {
        super::headers::ClientChain::of(req.headers(), conn, trusted).client_ip
    } else {
        conn.client_ip.clone()
    };
    ip.to_str().unwrap_or("").to_string()
}

/// Serves a connection until it ends; once asked to close, finishes the request in progress
/// and closes (HTTP/1.1: no keep-alive; HTTP/2: GOAWAY).
async fn drive<C>(conn: C, signals: &conns::Signals) -> Result<(), BoxError>
where
    C: GracefulConnection<Error = BoxError>,
{
    let mut conn = std::pin::pin!(conn);
    // The connection first: it is what wakes this task almost every time. The close check
    // is an atomic load (a cancellation token's future cost ~2 % of a request here).
    let closing = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(Some(result)),
        Poll::Pending => signals.poll_close(cx).map(|()| None),
    })
    .await;
    if let Some(result) = closing {
        return result;
    }
    conn.as_mut().graceful_shutdown();
    conn.await
}
