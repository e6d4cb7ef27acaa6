//! The upstream exchange for routes whose endpoints speak something other than plaintext
//! HTTP/1.1: HTTP/1.1 over TLS (HTTPS), and HTTP/2 in plaintext (h2c, gRPC) or over TLS by
//! ALPN (GRPCS).
//!
//! Data flow: [`Upstreams::send`] hands a request here when its route has a
//! [`BackendProtocol`]. HTTPS connections are pooled like plaintext ones (hyper's HTTP/1.1
//! connection, one request at a time), under a key that names the TLS settings too. HTTP/2
//! connections are shared: one per endpoint and settings, every request a stream on it, a
//! new one made when it closes.

use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri, Version, header};
use tokio_rustls::TlsConnector;

use super::{ResponseBody, UpstreamBody, UpstreamError, Upstreams, http2};
use crate::table::{BackendProtocol, UpstreamTls};

impl Upstreams {
    /// Sends the request in `slot` to `authority` as `protocol` says. The request stays in
    /// `slot` until a connection is made (a failed connect can go elsewhere).
    pub(super) async fn send_via(
        &self,
        authority: &str,
        slot: &mut Option<Request<UpstreamBody>>,
        connect_timeout: Duration,
        protocol: &BackendProtocol,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        if let Some(why) = &protocol.broken {
            return Err(UpstreamError::Tls { authority: authority.to_string(), reason: why.clone() });
        }
        let key = match &protocol.tls {
            Some(tls) => format!("{authority}#{}", tls.pool_tag),
            None => authority.to_string(),
        };
        if protocol.protocol.http2() {
            self.send_h2(&key, authority, slot, connect_timeout, protocol.tls.as_ref()).await
        } else {
            self.send_hyper(&key, authority, slot, connect_timeout, protocol.tls.as_ref()).await
        }
    }

    /// A TLS connection to `authority` within `after` (TCP and handshake together).
    pub(super) async fn dial_tls(
        &self,
        authority: &str,
        after: Duration,
        tls: &UpstreamTls,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, UpstreamError> {
        let started = tokio::time::Instant::now();
        let tcp = self.dial(authority, after).await?;
        let left = after.saturating_sub(started.elapsed());
        let connector = TlsConnector::from(tls.config.clone());
        match tokio::time::timeout(left, connector.connect(tls.server_name.clone(), tcp)).await {
            Err(_) => Err(UpstreamError::ConnectTimeout { authority: authority.to_string(), after }),
            Ok(Err(e)) => {
                Err(UpstreamError::Tls { authority: authority.to_string(), reason: tls_reason(&e) })
            }
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    async fn send_h2(
        &self,
        key: &str,
        authority: &str,
        slot: &mut Option<Request<UpstreamBody>>,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let shared = self.h2_lock().get(key).filter(|c| !c.is_closed()).cloned();
        let conn = match shared {
            Some(conn) => conn,
            None => {
                let conn = self.connect_h2(authority, connect_timeout, tls).await?;
                self.h2_lock().insert(key.to_string(), conn.clone());
                conn
            }
        };
        let Some(mut req) = slot.take() else { return Err(UpstreamError::Spent) };
        // HTTP/2 names the host in `:authority`: the client's Host, else the endpoint.
        let host = req.headers_mut().remove(header::HOST);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(authority);
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        *req.uri_mut() = Uri::try_from(format!("{scheme}://{host}{path}")).map_err(|e| {
            UpstreamError::Tls { authority: authority.to_string(), reason: format!("request URI: {e}") }
        })?;
        *req.version_mut() = Version::HTTP_2;
        if super::super::intercept::grpc::is_grpc(req.headers()) {
            // gRPC servers expect it; it is hop-by-hop, so the client's was removed.
            req.headers_mut().insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let resp = conn.send(req).await?;
        Ok(resp.map(ResponseBody::H2))
    }

    async fn connect_h2(
        &self,
        authority: &str,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Result<http2::Conn, UpstreamError> {
        let conn = match tls {
            Some(tls) => {
                http2::Conn::handshake(
                    self.dial_tls(authority, connect_timeout, tls).await?,
                    http2::KEEP_ALIVE,
                )
                .await?
            }
            None => {
                http2::Conn::handshake(self.dial(authority, connect_timeout).await?, http2::KEEP_ALIVE)
                    .await?
            }
        };
        Ok(conn)
    }
}

/// Why a TLS handshake failed, as the log and the error say it.
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => format!("TLS handshake: {tls}"),
        None => format!("TLS handshake: {e}"),
    }
}
