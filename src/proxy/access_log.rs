//! The access log (`--access-log`): one JSON line per request, written off the request path.
//!
//! Data flow: [`listener`](super::listener)'s `answer` notes the request's facts (client,
//! method, host, path, protocol) before [`Proxy::handle`](super::Proxy::handle);
//! [`respond`](super::respond) puts what the one decision did ([`Facts`]: route, upstream
//! status, policy action, cache status) on the response's extensions, and
//! [`forward`](super::forward) the upstream's address and the request body's byte count; the
//! response body is wrapped in `Logged`, which sends the line to a writer thread when the
//! body ends (or the client goes away) with the bytes sent and the duration. The queue is
//! bounded: a request never waits for the log; lines that do not fit are dropped and counted
//! (`erratum_access_log_dropped_total`). When the log is off none of this exists.

use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Version, header};
use http_body::{Frame, SizeHint};
use prometheus::IntCounter;

use super::{Body, BoxError};

/// Lines waiting for the writer at most; beyond it lines are dropped (and counted).
pub const QUEUE_LINES: usize = 16 * 1024;

/// Where the log goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output, beside nothing else (erratum's own logs go to standard error).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("give stdout, a file path, or off".into()),
            "stdout" | "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be opened for appending.
    #[error("cannot open the access log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The sending side of the log; clones share the queue.
#[derive(Clone, Debug)]
pub struct AccessLog {
    queue: SyncSender<Vec<u8>>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Opens `target` and starts the writer thread (it ends when every sender is gone).
    pub fn open(target: &Target, dropped: IntCounter) -> Result<Self, Error> {
        let out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::Open { path: path.clone(), source })?,
            ),
        };
        let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("erratum-access-log".into())
            .spawn(move || write_lines(&lines, out))
            .map_err(|source| Error::Open { path: PathBuf::from("(writer thread)"), source })?;
        Ok(Self { queue, dropped })
    }

    fn send(&self, line: Vec<u8>) {
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.dropped.inc(),
            Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// How often the writer thread takes what is queued.
const WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer thread: every [`WRITE_INTERVAL`] it takes every queued line and writes them
/// in one buffer. It is never woken per line: a blocking `recv` made every request pay a
/// futex wake-up and a context switch (+67 % CPU per request measured with wrk; the queued
/// way costs far less, BENCHMARKS.md). A line is out at most one interval after its request.
fn write_lines(lines: &Receiver<Vec<u8>>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        let mut wrote = false;
        let mut failed = false;
        let ended = loop {
            match lines.try_recv() {
                Ok(line) => {
                    failed |= out.write_all(&line).is_err();
                    wrote = true;
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => break false,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break true,
            }
        };
        if wrote {
            failed |= out.flush().is_err();
        }
        if failed {
            // Not on the request path, and logging it through tracing would not reach a
            // full disk either; the next batch tries again.
            tracing::warn!("access log write failed");
        }
        if ended {
            return;
        }
        std::thread::sleep(WRITE_INTERVAL);
    }
}

/// What `respond` and `forward` know of a request, for its line (a response extension).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// `namespace/name` of the Ingress whose route served the request.
    pub ingress: Option<(String, String)>,
    /// The upstream's status, when one answered.
    pub upstream_status: Option<u16>,
    /// The endpoint the request went to.
    pub upstream: Option<String>,
    /// What the decision did: `passed`, `replaced`, `rewritten`, `report-only`.
    pub action: &'static str,
    /// The policy that acted (`namespace/name`).
    pub policy: Option<String>,
    /// `hit` (from the error cache), `miss` (stored by this request), `stale` (a kept copy
    /// answered a failure) or `bypass`.
    pub cache: &'static str,
    /// The request id in effect.
    pub request_id: String,
}

/// The request body's byte count, shared with `forward` through the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct BytesIn(pub Arc<AtomicU64>);

/// The request as it arrived, noted before it is handled.
#[derive(Debug)]
pub struct Pending {
    started: Instant,
    time: SystemTime,
    client: String,
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    version: Version,
    user_agent: Option<String>,
    bytes_in: BytesIn,
}

impl Pending {
    /// Notes a request; `client` is its real client (after `--trusted-proxies` and PROXY).
    pub fn note<B>(req: &http::Request<B>, client: &str) -> Self {
        let headers = req.headers();
        let host = req.uri().authority().map(|a| a.as_str()).or_else(|| text(headers, header::HOST));
        Self {
            started: Instant::now(),
            time: SystemTime::now(),
            client: client.to_string(),
            method: req.method().clone(),
            host: host.unwrap_or("").to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().map(str::to_string),
            version: req.version(),
            user_agent: text(headers, header::USER_AGENT).map(str::to_string),
            bytes_in: BytesIn::default(),
        }
    }

    /// The counter `forward` adds the request body's bytes to.
    pub fn bytes_in(&self) -> BytesIn {
        self.bytes_in.clone()
    }

    /// The response, its body wrapped so that the line is written when it ends.
    pub fn finish(self: Box<Self>, resp: http::Response<Body>, log: &AccessLog) -> http::Response<Body> {
        let (mut parts, body) = resp.into_parts();
        let facts = parts.extensions.remove::<Facts>().unwrap_or_default();
        let status = parts.status.as_u16();
        let logged = Logged { body, sent: 0, line: Some((self, facts, status, log.clone())) };
        http::Response::from_parts(parts, http_body_util::BodyExt::boxed(logged))
    }
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

/// The line, written field by field: serde_json's derive spent ~4,000 instructions per line
/// escaping strings a byte at a time (BENCHMARKS.md); here a string that needs no escaping
/// (nearly all) is copied whole, and only one that does goes through serde_json.
fn render(pending: &Pending, facts: &Facts, status: u16, bytes_out: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(448);
    let mut line = Writer(&mut out);
    line.raw("{\"time\":");
    line.string(&humantime::format_rfc3339_millis(pending.time).to_string());
    line.field("client", Some(&pending.client));
    line.field("method", Some(pending.method.as_str()));
    line.field("host", Some(&pending.host));
    line.field("path", Some(&pending.path));
    if let Some(query) = &pending.query {
        line.field("query", Some(query));
    }
    line.field("protocol", Some(protocol(pending.version)));
    line.number("status", Some(u64::from(status)));
    line.number("upstream_status", facts.upstream_status.map(u64::from));
    line.number("bytes_in", Some(pending.bytes_in.0.load(Ordering::Relaxed)));
    line.number("bytes_out", Some(bytes_out));
    // Milliseconds with three decimals, from whole microseconds (no float formatting).
    let micros = u64::try_from(pending.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    line.number("duration_ms", Some(micros / 1000));
    line.raw(".");
    let frac = micros % 1000;
    line.raw(if frac < 10 {
        "00"
    } else if frac < 100 {
        "0"
    } else {
        ""
    });
    line.raw(itoa::Buffer::new().format(frac));
    line.field("upstream", facts.upstream.as_deref());
    line.field("request_id", Some(&facts.request_id));
    let (namespace, ingress) = match &facts.ingress {
        Some((ns, name)) => (Some(ns.as_str()), Some(name.as_str())),
        None => (None, None),
    };
    line.field("namespace", namespace);
    line.field("ingress", ingress);
    line.field("action", Some(if facts.action.is_empty() { "passed" } else { facts.action }));
    line.field("policy", facts.policy.as_deref());
    line.field("cache", Some(if facts.cache.is_empty() { "bypass" } else { facts.cache }));
    line.field("user_agent", pending.user_agent.as_deref());
    line.raw("}\n");
    out
}

/// A JSON object being written into a buffer.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    fn key(&mut self, key: &str) {
        self.raw(",\"");
        self.raw(key);
        self.raw("\":");
    }

    /// A JSON string: copied whole when nothing in it needs escaping.
    fn string(&mut self, s: &str) {
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.0.push(b'"');
            self.raw(s);
            self.0.push(b'"');
        } else {
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *self.0, s);
        }
    }

    fn field(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => self.string(v),
            None => self.raw("null"),
        }
    }

    fn number(&mut self, key: &str, value: Option<u64>) {
        self.key(key);
        match value {
            Some(n) => self.raw(itoa::Buffer::new().format(n)),
            None => self.raw("null"),
        }
    }
}

/// A response body that counts what it sends and writes the request's line when it ends or
/// is dropped (the client went away: the line says how far it got).
struct Logged {
    body: Body,
    sent: u64,
    line: Option<(Box<Pending>, Facts, u16, AccessLog)>,
}

impl Logged {
    fn write(&mut self) {
        if let Some((pending, facts, status, log)) = self.line.take() {
            log.send(render(&pending, &facts, status, self.sent));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.write();
    }
}

impl http_body::Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.write(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that adds what it passes on to a [`BytesIn`].
pub struct Counted<B> {
    body: B,
    count: BytesIn,
}

impl<B> Counted<B> {
    /// Counts `body` into `count`.
    pub fn new(body: B, count: BytesIn) -> Self {
        Self { body, count }
    }
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.count.0.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_and_escape_what_needs_it() {
        let req = http::Request::builder()
            .uri("/a\"b?q=1")
            .header(header::HOST, "h.example")
            .header(header::USER_AGENT, "quote\" back\\slash \t tab")
            .body(())
            .unwrap();
        let pending = Pending::note(&req, "2001:db8::1");
        let facts = Facts { action: "replaced", policy: Some("ns/p".into()), ..Facts::default() };
        let line = render(&pending, &facts, 503, 12);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["query"], "q=1");
        assert_eq!(v["user_agent"], "quote\" back\\slash \t tab");
        assert_eq!((v["status"].as_u64(), v["bytes_out"].as_u64()), (Some(503), Some(12)));
        assert!(v["upstream_status"].is_null() && v["upstream"].is_null());
        assert_eq!(
            (v["action"].as_str(), v["policy"].as_str(), v["cache"].as_str()),
            (Some("replaced"), Some("ns/p"), Some("bypass"))
        );
        assert!(v["duration_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(v["client"], "2001:db8::1");
    }
}
