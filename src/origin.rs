//! A small HTTP origin that misbehaves on demand: the `erratum demo` backend, and the upstream
//! of the scenario tests and benchmarks. One implementation serves all three.
//!
//! Paths:
//! - `/` and anything unlisted: 200 with a short text
//! - `/status/CODE`: answers CODE
//! - `/missing/...`: 404, `/boom`: 500, `/unavailable`: 503
//! - `/slow/MS`: waits MS milliseconds, then 200
//! - `/reset`: drops the connection without answering
//! - `/bytes/N`: 200 with N bytes
//! - `/echo`: 200, the request's method, URI and headers as JSON
//! - `/upload`: reads the whole request body, then 200 with its length (or 400 if it failed)
//! - an `Upgrade` request: 101, then echoes raw bytes
//!
//! Faults of the whole origin, set while it runs ([`Origin::fail_with`], [`Origin::delay`]):
//! every answer is one status, comes late, or is a closed connection
//! ([`Origin::reset_all`]); one endpoint of several misbehaves this way.
//!
//! Query parameters on any path: `delay_ms=N` waits first; `set-header=Name:Value` (repeatable)
//! adds a response header; `etag=V` adds `ETag: "V"`; `pad=N` appends N bytes to the body;
//! `status=N` sets the status of any answer (e.g. `/echo?status=404`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A running origin.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    faults: Arc<Faults>,
    shutdown: CancellationToken,
}

/// Misbehaviour of every request of one origin.
#[derive(Debug, Default)]
struct Faults {
    /// Answer every request with this status (0: answer normally).
    status: AtomicU16,
    /// Wait this long before answering.
    delay_ms: AtomicU64,
    /// Close the connection instead of answering.
    reset: std::sync::atomic::AtomicBool,
}

impl Origin {
    /// Starts an origin on `addr` (use port 0 for any free port).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        Self::serve(addr, None).await
    }

    /// Like [`Origin::start`], serving HTTPS with `tls` (HTTP/2 when ALPN picks it).
    pub async fn start_tls(addr: SocketAddr, tls: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        Self::serve(addr, Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn serve(addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let faults = Arc::new(Faults::default());
        tokio::spawn(accept_loop(
            listener,
            tls,
            hits.clone(),
            connections.clone(),
            faults.clone(),
            shutdown.clone(),
        ));
        Ok(Self { addr, hits, connections, faults, shutdown })
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far (shows whether the proxy reuses connections).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Answers every request with `status` from now on; `None` answers normally again.
    pub fn fail_with(&self, status: Option<u16>) {
        self.faults.status.store(status.unwrap_or(0), Ordering::SeqCst);
    }

    /// Closes the connection instead of answering every request from now on (`false`: answers
    /// again).
    pub fn reset_all(&self, reset: bool) {
        self.faults.reset.store(reset, Ordering::SeqCst);
    }

    /// Waits `delay` before every answer from now on (a slow endpoint).
    pub fn delay(&self, delay: Duration) {
        self.faults.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops accepting; open connections end with their current request.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hits: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    faults: Arc<Faults>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        connections.fetch_add(1, Ordering::SeqCst);
        let hits = hits.clone();
        let faults = faults.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                hits.fetch_add(1, Ordering::SeqCst);
                let delay = faults.delay_ms.load(Ordering::Relaxed);
                let status = faults.status.load(Ordering::Relaxed);
                let reset = faults.reset.load(Ordering::Relaxed);
                async move {
                    if reset {
                        return Err(Reset);
                    }
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    match StatusCode::from_u16(status) {
                        Ok(status) if status != 0 => {
                            Ok(reply(status, format!("origin fails with {status}\n")))
                        }
                        _ => answer(req).await,
                    }
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Some(tls) => {
                    let Ok(stream) = tls.accept(stream).await else { return };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        });
    }
}

/// The error returned to make hyper drop the connection without a response.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset on purpose")
    }
}

impl std::error::Error for Reset {}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

async fn answer(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Reset> {
    let query = req.uri().query().unwrap_or("").to_string();
    let mut extra_headers = Vec::new();
    let mut pad = 0usize;
    let mut status_override = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "delay_ms" => {
                if let Ok(ms) = value.parse() {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            "pad" => pad = value.parse::<usize>().unwrap_or(0).min(64 << 20),
            "status" => {
                status_override = value.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok())
            }
            // `etag=v1`: a strong validator `"v1"` (a quoted value does not survive a URL).
            "etag" => {
                if let Ok(v) = HeaderValue::from_str(&format!("\"{value}\"")) {
                    extra_headers.push((header::ETAG, v));
                }
            }
            "set-header" => {
                let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
                if let Some((name, value)) = value.split_once(':')
                    && let (Ok(n), Ok(v)) =
                        (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
                {
                    extra_headers.push((n, v));
                }
            }
            _ => {}
        }
    }

    if req.headers().contains_key(header::UPGRADE) {
        let protocol = req.headers()[header::UPGRADE].clone();
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        let mut resp = reply(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        resp.headers_mut().remove(header::CONTENT_TYPE);
        resp.headers_mut().insert(header::UPGRADE, protocol);
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Ok(resp);
    }

    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut resp = match segments.as_slice() {
        ["status", code, ..] => match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) => reply(status, format!("origin says {}\n", status.as_u16())),
            None => reply(StatusCode::BAD_REQUEST, "bad status code\n"),
        },
        ["missing", ..] => reply(StatusCode::NOT_FOUND, "origin: not found\n"),
        ["boom", ..] => reply(StatusCode::INTERNAL_SERVER_ERROR, "origin: internal error\n"),
        ["unavailable", ..] => reply(StatusCode::SERVICE_UNAVAILABLE, "origin: unavailable\n"),
        ["slow", ms, ..] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(1000))).await;
            reply(StatusCode::OK, "origin: slow answer\n")
        }
        ["reset", ..] => return Err(Reset),
        ["bytes", n, ..] => reply(StatusCode::OK, vec![b'x'; n.parse::<usize>().unwrap_or(0).min(64 << 20)]),
        ["upload", ..] => match http_body_util::BodyExt::collect(req.into_body()).await {
            Ok(body) => reply(StatusCode::OK, format!("received {} bytes\n", body.to_bytes().len())),
            Err(e) => reply(StatusCode::BAD_REQUEST, format!("body failed: {e}\n")),
        },
        ["echo", ..] => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            let mut r = reply(StatusCode::OK, body.to_string());
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        _ => reply(StatusCode::OK, format!("hello from the erratum demo origin: {path}\n")),
    };
    for (name, value) in extra_headers {
        resp.headers_mut().append(name, value);
    }
    if let Some(status) = status_override {
        *resp.status_mut() = status;
    }
    if pad > 0 {
        let mut body = http_body_util::BodyExt::collect(std::mem::take(resp.body_mut()))
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default()
            .to_vec();
        body.resize(body.len() + pad, b'.');
        *resp.body_mut() = Full::new(Bytes::from(body));
    }
    Ok(resp)
}
