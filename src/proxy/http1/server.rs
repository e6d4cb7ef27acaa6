//! erratum's own HTTP/1.1 server side for the common request: no body, no upgrade.
//!
//! Data flow: accept (and TLS) -> [`serve`]: read a request head, parse it with `httparse`
//! -> [`Proxy::handle`](crate::proxy::Proxy::handle) -> write the response head and body
//! -> next request on the same connection. The first request that is anything else (a body,
//! `Expect`, an upgrade, CONNECT, HTTP/2's preface, a head that does not parse or is over the
//! limits) hands the connection, with every byte read so far, to hyper's server connection
//! for the rest of its life: hyper answers errors (400, 431), streams request bodies, speaks
//! HTTP/2 and does upgrades.
//!
//! Why by hand: with hyper's server each request runs its dispatch state machine (and, with a
//! header-read timeout set, a second pass of it per request) around the handler; with the
//! upstream side already erratum's own (`h1.rs`) this was the largest share of user CPU per
//! request left, and what kept pass-through behind nginx. Only the message framing of RFC 9112
//! is written here; parsing is `httparse`'s (as in hyper).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::wire::{self, MAX_HEADERS, Spans, bodiless, field, keeps_alive, span_of, tokens};
use crate::proxy::conns::Slot;
use crate::proxy::{Body, RequestBody};

/// Read size for request heads.
const READ_SIZE: usize = 8 * 1024;
/// Response bodies up to this size are copied behind the head and go out in one write.
const COALESCE: usize = 16 * 1024;

/// Response head buffers kept per thread for the next response, and the largest kept.
const OUT_POOL: usize = 64;
const OUT_KEPT: usize = 64 * 1024;

// An idle keep-alive connection holds no buffer (nginx, likewise, frees a connection's
// buffers while it idles): with 8 KiB to read into and the last response's head kept per
// connection, 100,000 idle clients held ~1 GB. A connection with nothing buffered reads into
// its thread's scratch and keeps only the bytes that came (a head is a few hundred), and takes
// a buffer for a response from its thread's pool, giving it back once the response is written.
thread_local! {
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
    static OUT: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Handler slots ([`Handler`]) allocated on this thread and not yet freed.
    static HANDLERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Handler slots a thread's idle connections may keep; past it, a connection that goes idle
/// frees its slot (as does one that has asked only once). More than the busy connections of a
/// loaded worker (each keeps its slot from one request to the next, no allocation), bounded
/// for the many idle ones (~5.5 KiB each).
const HANDLERS_KEPT: usize = 256;

/// A connection's place for its handler's future, on the heap: the future (~5.5 KiB) is the
/// largest state of the connection's task, and inline it would be held by every connection,
/// idle ones too (with huge pages off, ~14 KB of RSS per idle connection instead of ~9;
/// BENCHMARKS.md, session 16). Allocated at a connection's
/// first request and reused for the next ones (a future set in place, no allocation); freed
/// when the connection goes idle after its first request, or while its thread holds more
/// than [`HANDLERS_KEPT`].
struct Handler<F>(Pin<Box<Option<F>>>);

impl<F> Handler<F> {
    fn new() -> Self {
        let _ = HANDLERS.try_with(|n| n.set(n.get() + 1));
        Self(Box::pin(None))
    }
}

/// Whether a connection going idle frees its handler slot: its thread keeps more than enough.
fn handlers_surplus() -> bool {
    HANDLERS.try_with(|n| n.get() > HANDLERS_KEPT).unwrap_or(true)
}

impl<F> Drop for Handler<F> {
    fn drop(&mut self) {
        let _ = HANDLERS.try_with(|n| n.set(n.get().saturating_sub(1)));
    }
}

/// A response head buffer from the thread's pool; back to the pool (of the thread it is
/// dropped on) when dropped.
struct OutBuf(Vec<u8>);

impl OutBuf {
    fn take() -> Self {
        let pooled = OUT.try_with(|pool| pool.try_borrow_mut().ok()?.pop()).ok().flatten();
        Self(pooled.unwrap_or_else(|| Vec::with_capacity(1024)))
    }
}

impl Drop for OutBuf {
    fn drop(&mut self) {
        if self.0.capacity() > OUT_KEPT {
            return;
        }
        let mut out = std::mem::take(&mut self.0);
        out.clear();
        let _ = OUT.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut()
                && pool.len() < OUT_POOL
            {
                pool.push(out);
            }
        });
    }
}

/// What the own loop needs of the proxy, per connection.
pub struct Front<'a, H, R> {
    /// Answers one request (the proxy's handler with the connection's bookkeeping).
    pub handle: H,
    /// Answers a head refused before it became a request (through the proxy's one decision).
    pub refuse: R,
    /// The connection's slot: close requests and the head deadline.
    pub slot: &'a Arc<Slot>,
    /// Largest request head accepted (larger ones are refused with 431).
    pub max_head: usize,
    /// Most header fields accepted here.
    pub max_headers: usize,
}

/// How the own loop left the connection.
pub enum Ended<IO> {
    /// Closed (by either side), or failed; nothing more to do.
    Done,
    /// A request the own loop does not answer: hyper takes over with the bytes read so far.
    Handover(IO, Bytes),
}

/// Why a request head was refused before it became a request. The connection closes after
/// the answer: nothing after a head that does not parse can be read as the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The head is over the size limit or has too many fields (431).
    TooLarge,
    /// The head is not valid HTTP/1.x (400); which part failed.
    Malformed(&'static str),
}

/// HTTP/2's connection preface (RFC 9113 §3.4): a client speaking HTTP/2 with prior knowledge
/// starts with it, and it is not an HTTP/1.x request line, so httparse refuses it. Such a
/// connection is hyper's.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest a refused client's remaining bytes are read and discarded before the socket
/// closes, and how many: closing with unread data sends a reset, which can destroy the
/// answer before the client reads it (nginx's lingering close does the same).
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// A parsed request this loop answers, and whether the client wants the connection kept.
struct Parsed {
    req: Request<RequestBody>,
    keep_alive: bool,
}

/// What the start of the read buffer holds.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once; a box would cost an allocation"
)]
enum Next {
    Request(Parsed),
    /// Not a whole head yet.
    More,
    /// Not a request this loop answers. `Some` is the head, already taken off the buffer
    /// (it failed a check after the split): it goes to hyper in front of the rest.
    Handover(Option<Bytes>),
    /// A head that is refused (and the connection closed after the answer).
    Refuse(Refusal),
}

/// The next request at the start of `buf`.
fn parse(buf: &mut BytesMut, max_head: usize, max_headers: usize) -> Next {
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    // Only the first `max_head` bytes are parsed: a head is refused as too large when it does
    // not end within them, whatever follows and however the bytes arrived (found by the fuzz
    // target: parsing the whole buffer made an over-long head 400 or 431 by read size).
    let window = &buf[..buf.len().min(max_head)];
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        window,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if parsed.headers.len() <= max_headers => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Next::More,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Next::Refuse(Refusal::TooLarge),
        Err(_) if buf.starts_with(H2_PREFACE) => return Next::Handover(None),
        // The preface so far: wait for all of it before deciding (found by the fuzz target).
        Err(_) if H2_PREFACE.starts_with(buf) => return Next::More,
        Err(e) => return Next::Refuse(Refusal::Malformed(wire::invalid(e))),
    };
    let method = match parsed.method.map(|m| Method::from_bytes(m.as_bytes())) {
        Some(Ok(m)) if m != Method::CONNECT => m,
        _ => return Next::Handover(None),
    };
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Next::Handover(None),
    };
    let Some(keep_alive) = answerable(parsed.headers, version) else { return Next::Handover(None) };
    let Some(target) = parsed.path.map(|p| span_of(buf, p.as_bytes())) else { return Next::Handover(None) };
    let mut spans = Spans::default();
    spans.fill(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let (Ok(headers), Ok(uri)) =
        (spans.headers(&head), Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize)))
    else {
        return Next::Handover(Some(head));
    };
    let mut req = Request::new(RequestBody::Right(http_body_util::Empty::new()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Next::Request(Parsed { req, keep_alive })
}

/// Whether this loop answers a request with these fields (no body, no upgrade, no
/// `Expect`), and then whether the client keeps the connection (RFC 9112 §9.3).
fn answerable(fields: &[httparse::Header<'_>], version: Version) -> Option<bool> {
    let mut lengths = 0;
    for field in fields {
        let name = field.name.as_bytes();
        let is = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
        if is(&TRANSFER_ENCODING) || is(&UPGRADE) || is(&EXPECT) {
            return None;
        }
        if is(&CONTENT_LENGTH) {
            lengths += 1;
            if field.value != b"0" || lengths > 1 {
                return None;
            }
        } else if is(&CONNECTION) && tokens(field.value).any(|t| t.eq_ignore_ascii_case(b"upgrade")) {
            return None;
        }
    }
    let connection =
        fields.iter().filter(|f| f.name.eq_ignore_ascii_case(CONNECTION.as_str())).map(|f| f.value);
    Some(keeps_alive(version, connection))
}

/// Serves `io` until it closes, or until a request this loop does not answer hands it to hyper.
pub async fn serve<IO, H, F, R>(front: Front<'_, H, R>, mut io: IO) -> Result<Ended<IO>, io::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<RequestBody>) -> F,
    F: Future<Output = Response<Body>>,
    R: Fn(Refusal) -> Response<Body>,
{
    let signals = &*front.slot.signals;
    let mut buf = BytesMut::new();
    let mut handler: Option<Handler<F>> = None;
    // Requests answered on this connection (saturating: only 1 and more matter).
    let mut asked: u8 = 0;
    loop {
        // The head, within the header-read deadline (armed while waiting for it).
        let parsed = loop {
            match parse(&mut buf, front.max_head, front.max_headers) {
                Next::Request(parsed) => break parsed,
                Next::More => {}
                Next::Handover(None) => {
                    front.slot.disarm_head();
                    return Ok(Ended::Handover(io, buf.freeze()));
                }
                Next::Refuse(refusal) => {
                    front.slot.disarm_head();
                    let (parts, mut body) = (front.refuse)(refusal).into_parts();
                    let mut out = OutBuf::take();
                    let out = &mut out.0;
                    let (framing, _) =
                        encode_head(out, parts.status, &parts.headers, &body, false, Version::HTTP_11, false);
                    write_body(&mut io, out, &mut body, framing).await?;
                    linger(&mut io, &mut buf).await;
                    return Ok(Ended::Done);
                }
                Next::Handover(Some(head)) => {
                    front.slot.disarm_head();
                    let mut all = BytesMut::with_capacity(head.len() + buf.len());
                    all.extend_from_slice(&head);
                    all.extend_from_slice(&buf);
                    return Ok(Ended::Handover(io, all.freeze()));
                }
            }
            front.slot.arm_head();
            let read = std::future::poll_fn(|cx| {
                if signals.poll_close(cx).is_ready() || signals.head.expired() {
                    return Poll::Ready(Ok(0));
                }
                poll_read(&mut io, &mut buf, cx)
            })
            .await;
            if read? == 0 {
                return Ok(Ended::Done);
            }
        };
        // The deadline ran from the first wait for this head until now.
        front.slot.disarm_head();
        let head_only = parsed.req.method() == Method::HEAD;
        let version = parsed.req.version();

        // The handler, while watching the client: if it goes away, the request is dropped
        // (as hyper does); bytes of a pipelined next request are kept.
        asked = asked.saturating_add(1);
        let place = handler.get_or_insert_with(Handler::new);
        place.0.set(Some((front.handle)(parsed.req)));
        let resp = std::future::poll_fn(|cx| {
            let Some(handled) = place.0.as_mut().as_pin_mut() else { return Poll::Ready(None) };
            if let Poll::Ready(resp) = handled.poll(cx) {
                return Poll::Ready(Some(resp));
            }
            if buf.len() < front.max_head {
                match poll_read(&mut io, &mut buf, cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) | Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        // The finished future goes now: what it holds is not kept while the response is written.
        place.0.set(None);
        let Some(resp) = resp else { return Ok(Ended::Done) };

        let keep_alive = parsed.keep_alive && !signals.close_requested();
        let (parts, mut body) = resp.into_parts();
        let mut out = OutBuf::take();
        let (framing, keep_alive) =
            encode_head(&mut out.0, parts.status, &parts.headers, &body, head_only, version, keep_alive);
        write_body(&mut io, &mut out.0, &mut body, framing).await?;
        drop(out);
        if !keep_alive {
            let _ = io.shutdown().await;
            return Ok(Ended::Done);
        }
        if buf.is_empty() {
            buf = BytesMut::new(); // idle: the head's allocation goes with the request
            // A client that asked once and went quiet (most idle keep-alive clients) frees its
            // slot at once, so that thousands of them leave the kept ones to clients that ask
            // again and again.
            if asked == 1 || handlers_surplus() {
                handler = None;
            }
        }
    }
}

/// Ends a refused connection without destroying its answer: shuts the write side, then
/// reads and discards what the client still sends, bounded in bytes and time.
async fn linger<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO, buf: &mut BytesMut) {
    let _ = io.shutdown().await;
    let drained = async {
        let mut seen = 0;
        while seen < LINGER_BYTES {
            buf.clear();
            match std::future::poll_fn(|cx| poll_read(io, buf, cx)).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drained).await;
}

/// Reads more of the connection into `buf`: into the thread's scratch when `buf` holds
/// nothing (what came is copied into `buf`, sized to it), else into `buf`, grown by
/// `READ_SIZE` (a head that came in pieces).
fn poll_read<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if !buf.is_empty() {
        return wire::poll_fill(io, buf, cx, READ_SIZE);
    }
    let read = SCRATCH.try_with(|scratch| {
        let mut scratch = scratch.try_borrow_mut().ok()?;
        let mut read = ReadBuf::new(&mut scratch);
        Some(match Pin::new(&mut *io).poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(read.filled());
                Poll::Ready(Ok(read.filled().len()))
            }
            other => other.map_ok(|()| 0),
        })
    });
    match read {
        Ok(Some(polled)) => polled,
        // The thread is ending, or its scratch is in use (never: nothing reads inside a read).
        _ => wire::poll_fill(io, buf, cx, READ_SIZE),
    }
}

/// How a response body goes on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client and no known length).
    UntilClose,
}

/// The response head into `out` (cleared first); the body's framing, and whether the
/// connection stays open after it. Length and transfer-coding fields are erratum's to write:
/// they follow the body, not the handler's map (a stated `Content-Length` is used when the
/// body does not know its length).
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &Body,
    head_only: bool,
    version: Version,
    keep_alive: bool,
) -> (Framing, bool) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    // A response to HEAD, and a 304, describe the body they do not carry: their length
    // fields are the handler's. 1xx and 204 have none (RFC 9110 §8.6, RFC 9112 §6.3).
    let keep_lengths = head_only || status == StatusCode::NOT_MODIFIED;
    let no_body = bodiless(head_only, status);
    let mut close = !keep_alive;
    let mut stated = None;
    let mut dated = false;
    for (name, value) in headers {
        dated |= *name == DATE;
        if *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING {
            if *name == CONTENT_LENGTH {
                stated = Some(value);
            }
            if !keep_lengths {
                continue;
            }
        } else if *name == CONNECTION {
            // Written below, from `close`.
            close |= tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"));
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        date::with(|now| field(out, b"date", now));
    }
    let framing = if no_body {
        Framing::None
    } else if let Some(len) = body.size_hint().exact().or_else(|| {
        // Parsed only for a body that does not know its length.
        stated.and_then(|v| std::str::from_utf8(v.as_bytes()).ok()).and_then(|v| v.parse::<u64>().ok())
    }) {
        field(out, b"content-length", itoa::Buffer::new().format(len).as_bytes());
        Framing::Length(len)
    } else if version == Version::HTTP_11 {
        field(out, b"transfer-encoding", b"chunked");
        Framing::Chunked
    } else {
        close = true;
        Framing::UntilClose
    };
    if close {
        field(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    (framing, !close)
}

/// Writes the head in `out` and then `body` in `framing`. Small bodies that are ready at once
/// go out in the same write as the head. A body that fails, or is shorter or longer than its
/// length, ends the connection (the client sees a truncated message, never a wrong one).
async fn write_body<IO>(io: &mut IO, out: &mut Vec<u8>, body: &mut Body, framing: Framing) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    use futures::FutureExt;
    use http_body_util::BodyExt;
    use std::io::Write;
    let mut remaining = match framing {
        Framing::None => {
            io.write_all(out).await?;
            return io.flush().await;
        }
        Framing::Length(len) => len,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                // Nothing ready: what is collected goes out before waiting.
                io.write_all(out).await?;
                out.clear();
                body.frame().await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not sent (a client must ask for them with `TE: trailers`).
                _ => continue,
            },
        };
        let len = data.len() as u64;
        if len > remaining {
            return Err(io::Error::other("response body longer than its length"));
        }
        remaining -= len;
        if framing == Framing::Chunked {
            let _ = write!(out, "{len:x}\r\n");
        }
        if out.len() + data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
    }
    match framing {
        Framing::Length(_) if remaining != 0 => {
            return Err(io::Error::other("response body shorter than its length"));
        }
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    io.write_all(out).await?;
    out.clear();
    io.flush().await
}

/// The `Date` field, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static NOW: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    /// Calls `f` with the current date as an HTTP-date (RFC 9110 §5.6.7).
    pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        NOW.with_borrow_mut(|(at, text)| {
            if *at != secs || text.is_empty() {
                *text = httpdate::fmt_http_date(now);
                *at = secs;
            }
            f(text.as_bytes())
        })
    }
}

/// The client connection handed to hyper: the bytes the own loop read but did not answer
/// come first, then the socket.
#[derive(Debug)]
pub struct Rewind<IO> {
    read: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    /// `io`, with `read` in front of what it reads.
    pub fn new(io: IO, read: Bytes) -> Self {
        Self { read, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(feature = "fixtures")]
#[doc(hidden)]
pub mod fuzz;

#[cfg(test)]
mod tests;
