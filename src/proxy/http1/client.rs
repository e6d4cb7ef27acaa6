//! Upstream HTTP/1.1 exchanges for requests without a body, written and read on the request's
//! own task.
//!
//! Data flow: [`Upstreams::send`](crate::proxy::upstream::Upstreams::send) hands a bodiless request that is not an
//! upgrade to [`Conn::exchange`]; the response head comes back with a [`UpstreamBody`] that reads the
//! rest from the same socket and gives the connection back to the pool (via [`Release`]) the
//! moment its last byte is read. Requests with a body, and upgrades, go through hyper's client
//! connection instead ([`upstream`](crate::proxy::upstream)).
//!
//! Why by hand: hyper's client connection runs in a task of its own and talks to the request
//! through two channels (the request, then the body), so every proxied request wakes two tasks
//! and runs hyper's dispatch state machine on both sides. Here the request task writes the
//! head, parses the answer with `httparse` (the parser hyper itself uses) and reads the body
//! as the client side asks for it: one task, one write, one read for a small response. Only
//! the framing rules of RFC 9112 §6 are implemented here; parsing is `httparse`'s.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{MAX_HEADERS, Spans, bodiless, field, invalid, keeps_alive, poll_fill, tokens};

/// Largest response head (status line and fields) read from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) and longest trailer section accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;

/// Why an exchange or its body failed. Every one of them leaves the connection closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection ended (closed or reset) before a byte of the response arrived: the
    /// request may not have reached the origin at all (a pooled connection it had closed).
    #[error("upstream closed the connection without a response")]
    NoResponse(#[source] Option<io::Error>),
    /// The connection ended inside the response head.
    #[error("upstream closed the connection inside the response head")]
    IncompleteHead,
    /// The response head is not HTTP/1.x.
    #[error("invalid upstream response head: {0}")]
    Invalid(&'static str),
    /// The response head is larger than [`MAX_HEAD`] or has more than [`MAX_HEADERS`] fields.
    #[error("upstream response head too large")]
    HeadTooLarge,
    /// The body ended before its announced length or its last chunk.
    #[error("upstream response body ended early")]
    IncompleteBody,
    /// The chunked body is not valid chunked coding.
    #[error("invalid chunked coding in the upstream response body")]
    BadChunk,
    /// A socket error after the response started.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Where a finished connection goes (the pool); called only for a connection that can carry
/// another request.
pub trait Release: Send + Unpin + 'static {
    /// Takes back `conn`.
    fn release(self, conn: Conn);
}

/// One upstream connection and the bytes read from it but not yet used.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    read: BytesMut,
    /// The request head being written; kept to reuse its allocation.
    write: Vec<u8>,
}

impl Conn {
    /// Wraps a connected socket.
    pub fn new(io: TcpStream) -> Self {
        Self { io, read: BytesMut::new(), write: Vec::with_capacity(512) }
    }

    /// Whether an idle connection can still carry a request: nothing arrived on it while it
    /// was idle (neither the origin closing it nor stray bytes that would be read as the next
    /// response). Reads the socket's readiness, which the runtime already tracks, and makes a
    /// system call only when it says something arrived.
    pub fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last read; a read that would block says
            // nothing is there (and clears it).
            Poll::Ready(Ok(())) => {
                matches!(self.io.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends `req` (origin-form URI, no body; its fields written as they are, but those named
    /// in `set`, which replace them) and reads the response head. 1xx responses other than
    /// 101 are skipped.
    pub async fn exchange<B>(
        &mut self,
        req: &Request<B>,
        set: &[(&HeaderName, &HeaderValue)],
    ) -> Result<Response<()>, Error> {
        encode_head(&mut self.write, req, set);
        if let Err(e) = self.io.write_all(&self.write).await {
            return Err(Error::NoResponse(Some(e)));
        }
        loop {
            if !self.read.is_empty()
                && let Some(resp) = parse_head(&mut self.read)?
            {
                if resp.status().is_informational() && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                    continue;
                }
                return Ok(resp);
            }
            if self.read.len() >= MAX_HEAD {
                return Err(Error::HeadTooLarge);
            }
            let before = self.read.len();
            match std::future::poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) if before == 0 => return Err(Error::NoResponse(None)),
                Ok(0) => return Err(Error::IncompleteHead),
                Ok(_) => {}
                Err(e) if before == 0 => return Err(Error::NoResponse(Some(e))),
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(&mut self.io, &mut self.read, cx, READ_SIZE)
    }
}

/// `req`'s head as HTTP/1.1 into `out`, its fields named in `set` replaced by those. Header
/// names go out lower-case, as hyper writes them.
fn encode_head<B>(out: &mut Vec<u8>, req: &Request<B>, set: &[(&HeaderName, &HeaderValue)]) {
    out.clear();
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let replaced = |name: &HeaderName| set.iter().any(|(n, _)| *n == name);
    let own = req.headers().iter().filter(|(name, _)| !replaced(name));
    for (name, value) in own.chain(set.iter().map(|&(n, v)| (n, v))) {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A complete response head at the start of `buf`, taken off it; `None` if more bytes are
/// needed. Header values share the head's bytes (no copy per field).
fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, Error> {
    // Uninitialised field slots: a hundred initialised ones are 3 KiB of memset per response.
    let mut fields = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(e) => return Err(Error::Invalid(invalid(e))),
    };
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    let status =
        parsed.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or(Error::Invalid("status code"))?;
    let mut spans = Spans::default();
    spans.fill(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let headers = spans.headers(&head).map_err(Error::Invalid)?;
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    Ok(Some(resp))
}

/// Where reading the body that follows `head` starts (its framing, RFC 9112 §6.3), and whether
/// the connection can carry another request after it (§9.3).
fn framing(method: &Method, head: &Response<()>) -> Result<(State, bool), Error> {
    let headers = head.headers();
    let keep_alive =
        keeps_alive(head.version(), headers.get_all(CONNECTION).iter().map(HeaderValue::as_bytes));
    if bodiless(method == Method::HEAD, head.status()) {
        return Ok((State::Done, keep_alive));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Chunked only as the last coding; a message with both Transfer-Encoding and
        // Content-Length may be a smuggling attempt: read by its chunks, never reuse.
        let last = headers.get_all(TRANSFER_ENCODING).iter().next_back().map(HeaderValue::as_bytes);
        let chunked = last
            .and_then(|v| v.rsplit(|&b| b == b',').next())
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        let keep_alive = keep_alive && !headers.contains_key(CONTENT_LENGTH);
        return Ok(if chunked {
            (State::Chunked(Chunk::Size), keep_alive)
        } else {
            (State::UntilClose, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in tokens(value.as_bytes()) {
            let n = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::Invalid("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Invalid("content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (State::Done, keep_alive),
        Some(n) => (State::Length(n), keep_alive),
        None => (State::UntilClose, false),
    })
}

/// Sends `req` on `conn` (fields named in `set` replaced, see [`Conn::exchange`]) and returns
/// the response, whose body reads from `conn` and hands it to `release` when the body ends and
/// the connection can be reused.
pub async fn send<B, R: Release>(
    mut conn: Conn,
    req: &Request<B>,
    set: &[(&HeaderName, &HeaderValue)],
    release: R,
) -> Result<Response<UpstreamBody<R>>, Error> {
    let head = conn.exchange(req, set).await?;
    let (state, keep_alive) = framing(req.method(), &head)?;
    // 101: the connection is the tunnel's; it never comes back.
    let keep_alive = keep_alive && head.status() != StatusCode::SWITCHING_PROTOCOLS;
    let mut body = UpstreamBody { conn: Some(conn), state, release: keep_alive.then_some(release) };
    if body.state == State::Done {
        body.finish();
    }
    Ok(head.map(|()| body))
}

/// Where a body's reading is: its framing and how far it got. `Length` is never 0 (a body
/// that is over is `Done`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields (discarded) up to the empty line.
    Trailers,
}

/// A response body read straight from its upstream connection.
pub struct UpstreamBody<R> {
    conn: Option<Conn>,
    state: State,
    /// Where the connection goes when the body ends; `None` when it cannot be reused.
    release: Option<R>,
}

impl<R> std::fmt::Debug for UpstreamBody<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody").field("state", &self.state).finish()
    }
}

impl<R: Release> UpstreamBody<R> {
    /// The body ended: the connection goes back if it can carry another request and nothing
    /// follows the response (bytes past its end would be read as the next response).
    fn finish(&mut self) {
        self.state = State::Done;
        if let (Some(conn), Some(release)) = (self.conn.take(), self.release.take())
            && conn.read.is_empty()
        {
            release.release(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        self.conn = None;
        self.release = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<R: Release> http_body::Body for UpstreamBody<R> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else { return Poll::Ready(None) };
            let buf = &mut conn.read;
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::Chunked(Chunk::Data(left)) if !buf.is_empty() => {
                    let n = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let data = buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        match this.state {
                            State::Length(_) => this.finish(),
                            _ => this.state = State::Chunked(Chunk::DataEnd),
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if !buf.is_empty() => {
                    let data = buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(chunk @ Chunk::Size) if !buf.is_empty() => {
                    match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            *chunk = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                            continue;
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_LINE => {}
                        _ => return this.fail(Error::BadChunk),
                    }
                }
                State::Chunked(chunk @ Chunk::DataEnd) if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return this.fail(Error::BadChunk);
                    }
                    buf.advance(2);
                    *chunk = Chunk::Size;
                    continue;
                }
                State::Chunked(Chunk::Trailers) if !buf.is_empty() => {
                    let end = if buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
                    };
                    match end {
                        Some(end) => {
                            buf.advance(end);
                            this.finish();
                            return Poll::Ready(None);
                        }
                        None if buf.len() > MAX_TRAILERS => return this.fail(Error::BadChunk),
                        None => {}
                    }
                }
                // Nothing usable buffered yet.
                _ => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == State::UntilClose => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::IncompleteBody),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.state {
            State::Length(n) => http_body::SizeHint::with_exact(n),
            State::Done => http_body::SizeHint::with_exact(0),
            _ => http_body::SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
