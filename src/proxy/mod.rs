//! The data plane: listeners, connections, TLS, graceful drain.
//!
//! Data flow: accept -> (TLS handshake, certificate by SNI from the current table) -> hyper
//! auto connection (HTTP/1.1 or HTTP/2, upgrades allowed) -> [`service::Proxy::handle`].
//! The proxy sees only a [`TableReader`](crate::table::TableReader); it never imports kube.

pub mod cache;
pub mod conns;
pub mod h1;
pub mod intercept;
pub mod pages;
pub mod service;
pub mod tls;
pub mod ttl;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http::header::CONNECTION;
use http_body_util::combinators::BoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metrics::ProxyMetrics;
pub use conns::Connections;
pub use service::{ConnInfo, Proxy, ProxyConfig};

/// Error type carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Response body type.
pub type Body = BoxBody<Bytes, BoxError>;

/// Longest a client may take to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Builds the hyper connection builder with erratum's limits.
fn builder(config: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
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
    tls: Option<TlsAcceptor>,
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
        let gauge = metrics.connections.with_label_values(&[name]);
        conns.tracker().spawn(async move {
            gauge.inc();
            let slot = Arc::new(slot);
            let conn = ConnInfo::new(peer, tls.is_some()).with_slot(slot.clone());
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                let conn = conn.clone();
                // Busy while in the handler: at the limit, idle connections are shed first.
                let guard = conn.slot.as_ref().map(|slot| slot.busy());
                let close = Proxy::must_close_after(&req);
                // Boxed: the request future is a few KiB, and hyper moves the service future
                // into place per request (HTTP/2: into a task of its own, twice).
                let handled = Box::pin(async move { proxy.handle(req, conn).await });
                async move {
                    let mut resp = handled.await;
                    if close {
                        resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    drop(guard);
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let result = match tls {
                None => {
                    let io = TokioIo::new(stream);
                    drive(builder.serve_connection_with_upgrades(io, service).into_owned(), &slot.close).await
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let handshake = tokio::select! {
                        _ = slot.close.cancelled() => return gauge.dec(),
                        h = handshake => h,
                    };
                    match handshake {
                        Ok(Ok(tls_stream)) => {
                            let io = TokioIo::new(tls_stream);
                            drive(
                                builder.serve_connection_with_upgrades(io, service).into_owned(),
                                &slot.close,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            Ok(())
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended with error: {e}");
            }
            gauge.dec();
            drop(slot);
        });
    }
    drop(listener);
    // Every connection's close token is a child of `shutdown`: idle ones close now, busy
    // ones after their current response.
    conns.tracker().close();
    if tokio::time::timeout(drain, conns.tracker().wait()).await.is_err() {
        tracing::warn!(listener = name, "drain time of {drain:?} elapsed; closing remaining connections");
    }
}

/// Serves a connection until it ends; when `close` fires, finishes the request in progress
/// and closes (HTTP/1.1: no keep-alive; HTTP/2: GOAWAY).
async fn drive<C>(conn: C, close: &CancellationToken) -> Result<(), BoxError>
where
    C: GracefulConnection<Error = BoxError>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        // The connection first: it is what wakes this task almost every time.
        biased;
        result = conn.as_mut() => return result,
        _ = close.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}
