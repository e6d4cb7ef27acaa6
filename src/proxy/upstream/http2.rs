//! HTTP/2 upstream connections (h2c, gRPC, GRPCS) on the `h2` crate directly.
//!
//! Data flow: `protocols::send_h2` picks the endpoint's shared [`Conn`] and calls
//! [`Conn::send`] on the request's own task; each connection has one driver task (reads,
//! writes, keep-alive pings). Why not hyper's HTTP/2 client: for every request it passes the
//! request through a channel to the connection's task, spawns a task that waits for the
//! response, and hands the response back through a one-shot channel (perf on the gRPC row:
//! the spawn alone moved ~1.7 % of the CPU through `memmove`). Here the request's task opens
//! the stream and waits for the response itself; a request body that is not all there when
//! the response head comes gets a task of its own to finish streaming.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderValue, Request, Response, header};
use http_body::{Body as _, Frame, SizeHint};

use super::{UpstreamBody, UpstreamError};

/// Pings on a connection: one every `every`, whether streams are open or not (a peer that
/// vanished is found before a request is sent into it); no pong within `timeout` closes it.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeepAlive {
    pub every: Duration,
    pub timeout: Duration,
}

/// Every upstream HTTP/2 connection's (tests use shorter ones).
pub(super) const KEEP_ALIVE: KeepAlive =
    KeepAlive { every: Duration::from_secs(30), timeout: Duration::from_secs(10) };

/// Receive windows: a stream's, and the connection's (hyper's defaults).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// One HTTP/2 connection to an endpoint, shared by every request to it; clones share it.
#[derive(Clone)]
pub(super) struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Set by the driver when the connection ended: a new one is made for the next request.
    closed: Arc<AtomicBool>,
}

impl Conn {
    /// The HTTP/2 handshake on `io`; the connection's driver is spawned.
    pub(super) async fn handshake<I>(io: I, keep_alive: KeepAlive) -> Result<Self, h2::Error>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        // hyper's client defaults, which erratum used before: windows large enough that a
        // burst of streams is not held back by flow control (h2's own default is 64 KiB).
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_send_buffer_size(1024 * 1024)
            .enable_push(false)
            .handshake(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(conn, keep_alive, closed.clone()));
        Ok(Self { send, closed })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends `req` (absolute URI, hop-by-hop fields removed) as a stream and waits for the
    /// response head. The request body streams beside it; a body that fails before the head
    /// comes fails the request with [`UpstreamError::RequestBody`] (the client's fault: 400,
    /// or 413 past its limit).
    pub(super) async fn send(&self, req: Request<UpstreamBody>) -> Result<Response<Body>, UpstreamError> {
        let mut send = self.send.clone().ready().await?;
        let (mut parts, body) = req.into_parts();
        // `headers::strip_hop_by_hop` took the rest of what HTTP/2 forbids (RFC 9113 §8.2.2)
        // from every upstream request; it keeps an upgrade's `Upgrade`, which HTTP/2 has not.
        parts.headers.remove(header::UPGRADE);
        if let Some(len) = body.size_hint().exact()
            && len > 0
            && !parts.headers.contains_key(header::CONTENT_LENGTH)
        {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let eos = body.is_end_stream();
        let (response, stream) = send.send_request(Request::from_parts(parts, ()), eos)?;
        let response = if eos {
            response.await?
        } else {
            let mut response = response;
            let mut pipe = Box::pin(pipe(body, stream));
            tokio::select! {
                biased;
                head = &mut response => {
                    // The rest of the body streams on its own task (a stream of requests
                    // answered as they come, as gRPC's bidirectional calls are).
                    tokio::spawn(async move {
                        if let Err(e) = pipe.await {
                            tracing::debug!("upstream HTTP/2 request body: {e}");
                        }
                    });
                    head?
                }
                piped = &mut pipe => {
                    piped?;
                    response.await?
                }
            }
        };
        let remaining = content_length(response.headers());
        Ok(response.map(|recv| Body { recv, trailers: false, remaining }))
    }
}

/// Drives one connection: its frames, and its pings.
async fn drive<T>(mut conn: h2::client::Connection<T, Bytes>, keep_alive: KeepAlive, closed: Arc<AtomicBool>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ping = conn.ping_pong();
    // One timer for the connection's life, moved rather than made again on every wake-up.
    let mut timer = std::pin::pin!(tokio::time::sleep(keep_alive.every));
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!("upstream HTTP/2 connection ended: {e}");
                }
                break;
            }
            () = timer.as_mut() => {
                let Some(ping) = ping.as_mut() else { continue };
                if awaiting_pong {
                    tracing::debug!("upstream HTTP/2 connection: no pong in {:?}, closing", keep_alive.timeout);
                    break;
                }
                if ping.send_ping(h2::Ping::opaque()).is_err() {
                    break;
                }
                awaiting_pong = true;
                timer.as_mut().reset(tokio::time::Instant::now() + keep_alive.timeout);
            }
            pong = std::future::poll_fn(|cx| match ping.as_mut() {
                Some(ping) => ping.poll_pong(cx),
                None => Poll::Pending,
            }), if awaiting_pong => {
                if pong.is_err() {
                    break;
                }
                awaiting_pong = false;
                timer.as_mut().reset(tokio::time::Instant::now() + keep_alive.every);
            }
        }
    }
    closed.store(true, Ordering::Relaxed);
}

/// Streams `body` into `stream` as the peer's flow control allows; the peer's reset ends it.
async fn pipe(mut body: UpstreamBody, mut stream: SendStream<Bytes>) -> Result<(), UpstreamError> {
    loop {
        let frame = std::future::poll_fn(|cx| {
            if let Poll::Ready(reset) = stream.poll_reset(cx) {
                // The peer is done with the stream (it may have answered already).
                return Poll::Ready(Err(reset));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await;
        let frame = match frame {
            Err(_reset) => return Ok(()),
            Ok(None) => {
                stream.send_data(Bytes::new(), true)?;
                return Ok(());
            }
            Ok(Some(Err(e))) => {
                stream.send_reset(Reason::CANCEL);
                return Err(UpstreamError::RequestBody(e));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let eos = body.is_end_stream();
                if data.is_empty() {
                    // An empty frame (hyper's server passes the client's END_STREAM as one).
                    if eos {
                        stream.send_data(data, true)?;
                        return Ok(());
                    }
                    continue;
                }
                // A claim of one byte, not the chunk's length: h2 raises it to what is
                // buffered when the data is sent, and many streams each claiming their whole
                // chunk at once would share the connection's window out in slivers (hyper's
                // reasoning, hyperium/hyper#4003).
                stream.reserve_capacity(1);
                while stream.capacity() == 0 {
                    match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(granted) => _ = granted?,
                        None => return Ok(()), // reset or closed by the peer
                    }
                }
                stream.send_data(data, eos)?;
                if eos {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    stream.reserve_capacity(0); // no more data: any claim goes back
                    stream.send_trailers(trailers)?;
                    return Ok(());
                }
            }
        }
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A response body read from an HTTP/2 stream: its data (flow-control window given back as
/// it is read), then its trailers (gRPC's status).
pub struct Body {
    recv: RecvStream,
    /// The data is over; trailers next.
    trailers: bool,
    /// What `content-length` said is left, for the size hint.
    remaining: Option<u64>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("remaining", &self.remaining).finish_non_exhaustive()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = self.get_mut();
        if !this.trailers {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The window is the peer's to fill again once erratum has taken the data.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = this.remaining.as_mut() {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.trailers = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(left) => SizeHint::with_exact(left),
            None if self.recv.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
