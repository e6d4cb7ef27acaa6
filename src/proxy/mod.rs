//! The data plane: what happens to a request from the socket to the response.
//!
//! One request, phase by phase (one file each, as pingora-proxy keeps them):
//!
//! ```text
//! listener ─> http1::server / hyper ─> admit ─┬─> forward ─> respond
//!  (accept,     (HTTP/1.1 heads;       (checks, │   (upstream    (the one place a
//!   TLS, slots)  bodies, HTTP/2)        routing)│    exchange)    Decision becomes
//!                                              └─> cache_path    a response)
//!                                                  (error cache, coalescing)
//! ```
//!
//! - [`listener`]: accept loop, connection limit, TLS handshake, [`ProxyConfig`], [`ConnInfo`];
//! - [`conns`]: the connection registry (limits, idle shedding, deadlines, drain);
//! - [`http1`]: erratum's own HTTP/1.1 server and upstream client for bodiless requests;
//! - [`admit`]: [`Proxy::handle`], request checks (size, ambiguity, readiness) and routing;
//! - [`auth`]: `auth-type: basic` and `auth-url` (forward authentication);
//! - [`headers`]: request id, hop-by-hop removal, forwarded fields;
//! - [`cache_path`]: which requests the error cache answers, coalescing, storing errors;
//! - [`forward`]: the upstream exchange, timeouts, retries on another endpoint, upgrades;
//! - [`balance`]: endpoint choice (round robin, power of two choices), outlier ejection, the
//!   retry budget;
//! - [`linger`]: reads the rest of a request body answered unread (nginx's lingering close);
//! - [`access_log`]: `--access-log`, one JSON line per request off the request path;
//! - [`proxy_protocol`]: `--proxy-protocol` headers on the listeners;
//! - [`respond`]: applies [`intercept::decide`]'s [`Decision`](intercept::Decision), counts;
//! - [`intercept`]: `decide()`, pure: the one decision behind every error status;
//! - [`cache`], [`ttl`]: the error-cache store and its TTL rules;
//! - [`stale`]: serve stale on error, the kept copies of good responses;
//! - [`upstream`]: connection pools to endpoints; [`pages`]: fetched error pages; [`tls`].
//!
//! The proxy sees only the [`table`](crate::table) (one atomic load per request); it never
//! imports kube, the CRD types or the Index (checked by `tests/scenarios/layering.rs`).

pub mod access_log;
pub mod admit;
pub mod auth;
pub mod balance;
pub mod cache;
pub mod cache_path;
pub mod conns;
pub mod error_backend;
pub mod forward;
pub mod headers;
pub mod http1;
pub mod intercept;
pub mod linger;
pub mod listener;
pub mod pages;
pub mod proxy_protocol;
pub mod respond;
pub mod stale;
pub mod tls;
pub mod ttl;
pub mod upstream;

use bytes::Bytes;
use http::{Request, Version, header};
use http_body_util::combinators::BoxBody;
use tokio_util::sync::CancellationToken;

use crate::metrics::ProxyMetrics;
use crate::table::TableReader;
use cache::ErrorCache;
pub use conns::Connections;
pub use listener::{ConnInfo, ProxyConfig, TLS_HANDSHAKE_TIMEOUT, serve};
use pages::PageStore;
use upstream::Upstreams;

/// Error type carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response erratum sends and of every request it forwards.
pub type Body = BoxBody<Bytes, BoxError>;
/// Request body type: hyper's for the requests hyper reads (drained if dropped unread, see
/// [`linger`]; boxed, so every request stays as small as a pointer to it: requests are moved
/// through several futures), none for those [`http1::server`] reads (it answers only
/// requests without a body).
pub type RequestBody = http_body_util::Either<Box<linger::Lingering>, http_body_util::Empty<Bytes>>;

/// The request handler shared by every connection. Its phases are `impl Proxy` blocks in
/// the files named above.
#[derive(Debug)]
pub struct Proxy {
    table: TableReader,
    client: Upstreams,
    metrics: ProxyMetrics,
    config: ProxyConfig,
    pages: PageStore,
    cache: Option<ErrorCache>,
    /// Kept copies of good responses (`spec.staleIfError`), unless `--stale-cache-max-bytes 0`.
    stale: Option<stale::StaleStore>,
    /// The current table with the proxy's own state for it (kept out of the table).
    views: respond::Views,
    /// `--access-log`, when on.
    access_log: Option<access_log::AccessLog>,
    /// `--https-port` as a header value (`X-Forwarded-Port` of TLS connections).
    https_port: http::HeaderValue,
    /// Endpoint choice and health, the retry budget.
    balancer: std::sync::Arc<balance::Balancer>,
    /// Basic-auth passwords that verified (`auth-type: basic`).
    verified: auth::Verified,
}

impl Proxy {
    /// Creates the handler and starts its page fetcher (stopped by `shutdown`).
    pub fn new(
        table: TableReader,
        metrics: ProxyMetrics,
        config: ProxyConfig,
        cache: Option<ErrorCache>,
        shutdown: CancellationToken,
    ) -> Self {
        let client = Upstreams::new(config.connect_timeout);
        let pages = PageStore::spawn(table.clone(), client.clone(), metrics.clone(), shutdown);
        let views = respond::Views::new(&table);
        let https_port = http::HeaderValue::from(config.https_port);
        let balancer = std::sync::Arc::new(balance::Balancer::new(config.balance, metrics.balance.clone()));
        let verified = auth::verified_store();
        Self {
            client,
            table,
            metrics,
            config,
            pages,
            cache,
            stale: None,
            views,
            access_log: None,
            https_port,
            balancer,
            verified,
        }
    }

    /// Endpoint health and balancing (read by `/table`).
    pub fn balancer(&self) -> &std::sync::Arc<balance::Balancer> {
        &self.balancer
    }

    /// The same, writing an access log line per request to `log`.
    pub fn with_access_log(mut self, log: Option<access_log::AccessLog>) -> Self {
        self.access_log = log;
        self
    }

    /// The same, with a store of stale copies (`spec.staleIfError` does nothing without one).
    pub fn with_stale(mut self, store: Option<stale::StaleStore>) -> Self {
        self.stale = store;
        self
    }

    /// The handler of one more worker thread (`--workers` > 1): the same table, pages, caches,
    /// balancer, log and verified passwords, and upstream connections of its own. A connection
    /// is registered with the reactor of the runtime that opened it, and each worker is a
    /// runtime of its own: a shared pool would hand one worker's sockets to another, whose
    /// wake-ups would then wait on the first worker's thread.
    pub fn for_worker(&self) -> Self {
        Self {
            table: self.table.clone(),
            client: Upstreams::new(self.config.connect_timeout),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            pages: self.pages.clone(),
            cache: self.cache.clone(),
            stale: self.stale.clone(),
            views: respond::Views::new(&self.table),
            access_log: self.access_log.clone(),
            https_port: self.https_port.clone(),
            balancer: self.balancer.clone(),
            verified: self.verified.clone(),
        }
    }

    /// The data-plane configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The pinned error pages.
    pub fn pages(&self) -> &PageStore {
        &self.pages
    }

    /// Whether the connection must close after answering `req`: a chunked HTTP/1 request may
    /// have carried a Content-Length that hyper dropped (RFC 9112 §6.3: chunked wins), so
    /// whatever follows its body on the connection is suspect. Checked by the connection's
    /// service before [`Proxy::handle`] (no extra future layer on the request path).
    pub fn must_close_after<B>(req: &Request<B>) -> bool {
        req.version() != Version::HTTP_2 && req.headers().contains_key(header::TRANSFER_ENCODING)
    }
}
