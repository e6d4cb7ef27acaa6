//! HTTP/1.1 wire rules shared by both sides (RFC 9112): reading into a buffer, field lines,
//! `Connection` tokens and keep-alive, which responses have no body, and where parsed
//! fields sit in their buffer. Parsing itself is `httparse`'s, as in hyper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// Most header fields in a head, either side (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// Reads more of `io` into `buf`, growing it by `size` when little room is left.
pub fn poll_fill<IO: tokio::io::AsyncRead + Unpin>(
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
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The comma-separated tokens of a field value (`Connection`), trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Whether a message of `version` with these `Connection` values leaves the connection open
/// (RFC 9112 §9.3): HTTP/1.1 unless `close`, HTTP/1.0 only with `keep-alive`.
pub fn keeps_alive<'a>(version: Version, connection: impl IntoIterator<Item = &'a [u8]>) -> bool {
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
pub fn bodiless(head_request: bool, status: StatusCode) -> bool {
    head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Where each part of a parsed head sits in its buffer, so the values can be slices of the
/// head once it is split off the buffer (no copy per field). Offsets are u32: a head is at
/// most a read past its limit. Filled in place: as a return value the array is copied.
#[derive(Default)]
pub struct Spans {
    fields: smallvec::SmallVec<[(u32, u32, u32, u32); 32]>,
}

impl Spans {
    /// The spans of `fields`, parsed from `buf`.
    pub fn fill(&mut self, buf: &[u8], fields: &[httparse::Header<'_>]) {
        self.fields.clear();
        for field in fields {
            let (n0, n1) = span_of(buf, field.name.as_bytes());
            let (v0, v1) = span_of(buf, field.value);
            self.fields.push((n0, n1, v0, v1));
        }
    }

    /// The fields as a header map whose values share `head`'s bytes.
    pub fn headers(&self, head: &Bytes) -> Result<HeaderMap, &'static str> {
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
pub fn span_of(buf: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize - buf.as_ptr() as usize) as u32;
    (start, start + part.len() as u32)
}

/// The part of a head httparse refused, for messages.
pub fn invalid(e: httparse::Error) -> &'static str {
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
