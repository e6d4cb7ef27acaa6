//! A body that fails when it stalls: the idle timeout of request and response bodies.

use std::time::Duration;

use crate::proxy::BoxError;

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
