//! Lingering on an HTTP/1.x request body that erratum answered without reading.
//!
//! Data flow: hyper's server ([`listener`](super::listener)) -> [`Lingering::wrap`] -> the
//! handler ([`admit`](super::admit), [`forward`](super::forward)) -> dropped. When a request
//! body is dropped before its end (a 413 on its stated length, a 403, a 429, a redirect, an
//! upstream that failed mid-upload), hyper stops reading the connection and closes it with
//! the client's bytes unread. The kernel then answers with a reset, and a client still
//! writing its body gets `EPIPE`/`ECONNRESET` instead of the answer already sent to it.
//! nginx avoids this with its lingering close (`lingering_time` 30 s, `lingering_timeout`
//! 5 s); this is the same: the rest of the body is read and discarded, within those bounds,
//! so hyper keeps the connection until the client has sent it and read the answer.
//!
//! Free for requests without a body (nothing is wrapped: the own HTTP/1.1 loop and hyper's
//! bodiless requests) and for bodies read to their end; HTTP/2 resets the stream instead
//! (RFC 9113 §8.1 allows `NO_ERROR` once the response is complete).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// nginx's `lingering_time`: longest a refused body is read after the answer.
const LINGER_TIME: Duration = Duration::from_secs(30);
/// nginx's `lingering_timeout`: longest wait for the next bytes of it.
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// A request body read by hyper that is drained, not abandoned, when dropped before its end.
#[derive(Debug)]
pub struct Lingering {
    /// `None` only after `Drop` took it.
    inner: Option<Incoming>,
    /// Whether dropping it unread drains it: HTTP/1.x, and not a body the client has not
    /// been asked for yet (`Expect: 100-continue` before the first read: hyper sends `100`
    /// on that read, and a client told `413` instead never sends the body).
    linger: bool,
    /// Since when the client has sent nothing while the body was being read.
    waiting: Option<tokio::time::Instant>,
    /// A client silent this long while its body was read has stalled (the body timeout cut
    /// it, as nginx's does, which closes without lingering): nothing to wait for.
    stalled_after: Duration,
}

impl Lingering {
    /// Wraps hyper's request body for a request of `version` with `headers`; `body_timeout`
    /// is `--client-body-timeout`.
    pub fn wrap(inner: Incoming, version: Version, headers: &HeaderMap, body_timeout: Duration) -> Self {
        let expects =
            headers.get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let linger = version <= Version::HTTP_11 && !expects && !inner.is_end_stream();
        Lingering { inner: Some(inner), linger, waiting: None, stalled_after: body_timeout.min(LINGER_IDLE) }
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        // Once read, hyper has sent `100 Continue` if it was asked for: the client sends.
        this.linger = true;
        let polled = Pin::new(inner).poll_frame(cx);
        match polled {
            Poll::Pending => {
                this.waiting.get_or_insert_with(tokio::time::Instant::now);
            }
            Poll::Ready(_) => this.waiting = None,
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Incoming::size_hint).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        let stalled = self.waiting.is_some_and(|since| since.elapsed() >= self.stalled_after);
        if !self.linger || stalled || inner.is_end_stream() {
            return;
        }
        // Dropped inside a request's task, so on the runtime; the connection's own task
        // (tracked for the shutdown drain) does the reading, this one only pulls.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(inner, usize::MAX, LINGER_TIME, LINGER_IDLE));
        }
    }
}

/// Reads and throws away `body`: at most `bytes` of it (beyond them it is dropped), for at
/// most `total`, waiting at most `idle` for each piece. The one reader of the bodies erratum
/// does not pass on: request bodies answered unread (here, within nginx's lingering bounds)
/// and replaced upstream bodies ([`respond`](super::respond), so their connection can be
/// pooled again).
pub(super) async fn discard<B: Body + Unpin>(mut body: B, bytes: usize, total: Duration, idle: Duration) {
    let deadline = tokio::time::Instant::now() + total;
    let mut seen = 0usize;
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now()).min(idle);
        match tokio::time::timeout(wait, body.frame()).await {
            Ok(Some(Ok(frame))) if !wait.is_zero() => {
                seen = seen.saturating_add(frame.data_ref().map_or(0, bytes::Buf::remaining));
                if seen > bytes {
                    return;
                }
            }
            _ => return,
        }
    }
}
