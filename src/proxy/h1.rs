//! Upstream HTTP/1.1 exchanges for requests without a body, written and read on the request's
//! own task.
//!
//! Data flow: [`super::upstream::Upstreams::send`] hands a bodiless request that is not an
//! upgrade to [`Conn::exchange`]; the response head comes back with a [`Body`] that reads the
//! rest from the same socket and gives the connection back to the pool (via [`Release`]) the
//! moment its last byte is read. Requests with a body, and upgrades, go through hyper's client
//! connection instead (`upstream.rs`).
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
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Largest response head (status line and fields) read from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head (hyper's default too).
pub const MAX_HEADERS: usize = 100;
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

// HTTP/1.1 message rules shared by the upstream exchange here and the client side (`front.rs`).

/// Reads more of `io` into `buf`, growing it by `size` when little room is left.
pub(super) fn poll_fill<IO: tokio::io::AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    size: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < size / 4 {
        buf.reserve(size);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// One header field line into `out`.
pub(super) fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The comma-separated tokens of a field value (`Connection`), trimmed.
pub(super) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a message of `version` with these `Connection` values leaves the connection open
/// (RFC 9112 §9.3): HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
pub(super) fn keeps_alive<'a>(version: Version, connection: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut keep_alive = version == Version::HTTP_11;
    for token in connection.into_iter().flat_map(tokens) {
        if token.eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
            keep_alive = true;
        }
    }
    keep_alive
}

/// Whether a response with `status` to a request (HEAD or not) has no body (RFC 9112 §6.3).
pub(super) fn bodiless(head_request: bool, status: StatusCode) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
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

/// Where each part of a parsed head sits in its buffer, so the values can be slices of the
/// head once it is split off the buffer (no copy per field). Offsets are u32: a head is at
/// most a read past its limit. Filled in place: as a return value the array is copied.
#[derive(Default)]
pub(super) struct Spans {
    fields: smallvec::SmallVec<[(u32, u32, u32, u32); 32]>,
}

impl Spans {
    /// The spans of `fields`, parsed from `buf`.
    pub(super) fn fill(&mut self, buf: &[u8], fields: &[httparse::Header<'_>]) {
        self.fields.clear();
        for field in fields {
            let (n0, n1) = span_of(buf, field.name.as_bytes());
            let (v0, v1) = span_of(buf, field.value);
            self.fields.push((n0, n1, v0, v1));
        }
    }

    /// The fields as a header map whose values share `head`'s bytes.
    pub(super) fn headers(&self, head: &Bytes) -> Result<HeaderMap, &'static str> {
        let mut headers = HeaderMap::with_capacity(self.fields.len());
        for &(n0, n1, v0, v1) in &self.fields {
            let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
            let name = HeaderName::from_bytes(&head[n0..n1]).map_err(|_| "field name")?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0..v1)).map_err(|_| "field value")?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// Where `part` (a slice of `buf`) sits in `buf`.
pub(super) fn span_of(buf: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    (start, start + part.len() as u32)
}

fn invalid(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "field name",
        httparse::Error::HeaderValue => "field value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status code",
        httparse::Error::Token => "token",
        httparse::Error::TooManyHeaders => "too many fields",
        httparse::Error::Version => "version",
    }
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
) -> Result<Response<Body<R>>, Error> {
    let head = conn.exchange(req, set).await?;
    let (state, keep_alive) = framing(req.method(), &head)?;
    // 101: the connection is the tunnel's; it never comes back.
    let keep_alive = keep_alive && head.status() != StatusCode::SWITCHING_PROTOCOLS;
    let mut body = Body { conn: Some(conn), state, release: keep_alive.then_some(release) };
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
pub struct Body<R> {
    conn: Option<Conn>,
    state: State,
    /// Where the connection goes when the body ends; `None` when it cannot be reused.
    release: Option<R>,
}

impl<R> std::fmt::Debug for Body<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").field("state", &self.state).finish()
    }
}

impl<R: Release> Body<R> {
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

impl<R: Release> http_body::Body for Body<R> {
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
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Collects released connections.
    #[derive(Clone, Default)]
    struct Back(std::sync::Arc<std::sync::Mutex<Vec<Conn>>>);
    impl Release for Back {
        fn release(self, conn: Conn) {
            self.0.lock().unwrap().push(conn);
        }
    }

    /// A connection to an origin that reads one request head and answers `answer` in the
    /// pieces given (a pause between them), then keeps the socket open until the test ends;
    /// an empty piece closes it instead.
    async fn origin(answer: Vec<&'static [u8]>) -> (Conn, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while !got.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).await.unwrap() == 0 {
                    return;
                }
                got.push(byte[0]);
            }
            let _ = tx.send(got);
            for piece in answer {
                if piece.is_empty() {
                    return;
                }
                s.write_all(piece).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let _ = s.read(&mut byte).await;
        });
        (Conn::new(TcpStream::connect(addr).await.unwrap()), rx)
    }

    fn get(method: Method) -> Request<()> {
        Request::builder()
            .method(method)
            .uri("/a?b=c")
            .header("host", "o")
            .header("x-id", "1")
            .body(())
            .unwrap()
    }

    async fn answer(
        pieces: Vec<&'static [u8]>,
        method: Method,
    ) -> (Result<(Response<()>, Bytes), Error>, usize) {
        let (conn, _) = origin(pieces).await;
        let back = Back::default();
        let result = match send(conn, &get(method), &[], back.clone()).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                body.collect().await.map(|b| (Response::from_parts(parts, ()), b.to_bytes()))
            }
            Err(e) => Err(e),
        };
        let released = back.0.lock().unwrap().len();
        (result, released)
    }

    #[tokio::test]
    async fn the_request_head_is_written_whole() {
        let (conn, head) = origin(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
        send(conn, &get(Method::GET), &[], Back::default()).await.unwrap();
        assert_eq!(head.await.unwrap(), b"GET /a?b=c HTTP/1.1\r\nhost: o\r\nx-id: 1\r\n\r\n");
        // Fields set by the caller replace the request's own of the same name.
        let (conn, head) = origin(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]).await;
        let (id, new) = (HeaderName::from_static("x-id"), HeaderName::from_static("x-new"));
        let (two, y) = (HeaderValue::from_static("2"), HeaderValue::from_static("y"));
        send(conn, &get(Method::GET), &[(&id, &two), (&new, &y)], Back::default()).await.unwrap();
        assert_eq!(head.await.unwrap(), b"GET /a?b=c HTTP/1.1\r\nhost: o\r\nx-id: 2\r\nx-new: y\r\n\r\n");
    }

    #[tokio::test]
    async fn length_bodies_in_pieces_are_read_whole_and_the_connection_comes_back() {
        let pieces: Vec<&[u8]> =
            vec![b"HTTP/1.1 200 OK\r\nContent-Len", b"gth: 10\r\nX-A: b\r\n\r\n01234", b"56789"];
        let (result, released) = answer(pieces, Method::GET).await;
        let (head, body) = result.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["x-a"], "b");
        assert_eq!(body, "0123456789");
        assert_eq!(released, 1);
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers_are_decoded() {
        let pieces: Vec<&[u8]> = vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhel",
            b"lo\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
        ];
        let (result, released) = answer(pieces, Method::GET).await;
        assert_eq!(result.unwrap().1, "hello world");
        assert_eq!(released, 1);
    }

    #[tokio::test]
    async fn bad_chunks_fail_and_the_connection_is_not_reused() {
        let (result, released) =
            answer(vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], Method::GET).await;
        assert!(matches!(result, Err(Error::BadChunk)), "{result:?}");
        assert_eq!(released, 0);
        let (result, _) = answer(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n"],
            Method::GET,
        )
        .await;
        assert!(matches!(result, Err(Error::BadChunk)), "{result:?}");
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        let pieces: Vec<&[u8]> = vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
            b"HTTP/1.1 503 Busy\r\ncontent-length: 2\r\n\r\nno",
        ];
        let (result, _) = answer(pieces, Method::GET).await;
        let (head, body) = result.unwrap();
        assert_eq!((head.status().as_u16(), &body[..]), (503, &b"no"[..]));
        assert!(!head.headers().contains_key("link"));
    }

    #[tokio::test]
    async fn bodies_without_length_run_until_close_and_are_never_reused() {
        let (conn, _) = origin(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"]).await;
        let back = Back::default();
        let resp = send(conn, &get(Method::GET), &[], back.clone()).await.unwrap();
        // The origin keeps the socket open: the body has not ended yet.
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "all of it");
        assert!(!http_body::Body::is_end_stream(&body));
        drop(body);
        assert!(back.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn responses_that_end_the_connection_do_not_give_it_back() {
        for (answer_head, reused) in [
            (&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..], 1),
            (b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok", 0),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", 0),
            (b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok", 1),
            // Both lengths: read by the chunks, but never trusted again.
            (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n2\r\nok\r\n0\r\n\r\n", 0),
        ] {
            let (result, released) = answer(vec![answer_head], Method::GET).await;
            assert_eq!(result.unwrap().1, "ok");
            assert_eq!(released, reused, "{}", String::from_utf8_lossy(answer_head));
        }
        // No length: the body runs to the origin's close, and the connection goes with it.
        let (result, released) = answer(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it", b""], Method::GET).await;
        assert_eq!(result.unwrap().1, "all of it");
        assert_eq!(released, 0);
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body() {
        for (answer_head, method) in [
            (&b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"[..], Method::HEAD),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
            (b"HTTP/1.1 304 Not Modified\r\ncontent-length: 1000\r\n\r\n", Method::GET),
        ] {
            let (result, released) = answer(vec![answer_head], method).await;
            assert!(result.unwrap().1.is_empty());
            assert_eq!(released, 1);
        }
    }

    #[tokio::test]
    async fn short_bodies_fail_and_bytes_past_the_end_are_not_the_next_response() {
        let (result, released) =
            answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", b""], Method::GET).await;
        assert!(matches!(result, Err(Error::IncompleteBody)), "{result:?}");
        assert_eq!(released, 0);
        let (result, released) =
            answer(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsh", b""], Method::GET).await;
        assert!(matches!(result, Err(Error::IncompleteBody)), "{result:?}");
        assert_eq!(released, 0);
        let (result, released) = answer(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n"],
            Method::GET,
        )
        .await;
        assert_eq!(result.unwrap().1, "ok");
        assert_eq!(released, 0, "a connection with bytes past its response came back");
    }

    #[tokio::test]
    async fn heads_are_checked() {
        for (bad, want) in [
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "invalid"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", "content-length"),
            (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "content-length"),
        ] {
            let (result, _) = answer(vec![bad], Method::GET).await;
            let err = result.unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let (result, _) = answer(vec![b"HTTP/1.1 200 OK\r\ncontent-le", b""], Method::GET).await;
        assert!(matches!(result, Err(Error::IncompleteHead)), "{result:?}");
    }

    #[tokio::test]
    async fn closed_connections_are_reported_as_no_response() {
        let (result, _) = answer(vec![b""], Method::GET).await;
        assert!(matches!(result, Err(Error::NoResponse(_))), "{result:?}");
    }

    #[tokio::test]
    async fn idle_connections_with_news_are_not_usable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (send_stray, stray) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            stray.await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            let _ = s.read(&mut [0u8; 1]).await;
        });
        let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        assert!(conn.is_usable());
        send_stray.send(()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.is_usable());
    }
}
