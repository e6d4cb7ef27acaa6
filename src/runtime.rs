//! Wiring: the only module that knows every other one.
//!
//! `start` sets up the source — a manifests folder (loaded, first table published, watched) or
//! the Kubernetes API (the controller's watches and Lease) — binds the listeners, and spawns
//! the proxy and the admin server. Shutdown fans out in order: `/readyz`
//! turns 503, listeners stop accepting, in-flight requests drain (bounded), then the admin
//! server and the source stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::metrics::Metrics;
use crate::proxy::cache::{Clock, DEFAULT_MAX_BYTES, ErrorCache, SystemClock};
use crate::proxy::{self, Proxy, ProxyConfig};
use crate::source::files::{self, Folder};
use crate::source::publish::Publisher;
use crate::table::{self, BuildConfig, TableReader};

/// Everything `erratum run` needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Manifests folder (file mode); `None` watches the Kubernetes API.
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode settings (used when `manifests` is `None`).
    pub kube: KubeSettings,
    /// HTTP listener.
    pub http_addr: SocketAddr,
    /// HTTPS listener, if any.
    pub https_addr: Option<SocketAddr>,
    /// Admin listener.
    pub admin_addr: SocketAddr,
    /// Routing-table identity and fallbacks.
    pub build: BuildConfig,
    /// Data-plane limits and timeouts.
    pub proxy: ProxyConfig,
    /// Bounded drain on shutdown.
    pub drain_timeout: Duration,
    /// `--error-cache-max-bytes`; 0 turns the error cache off.
    pub error_cache_max_bytes: u64,
    /// `--stale-cache-max-bytes`; 0 turns serving stale off.
    pub stale_cache_max_bytes: u64,
    /// The clock of the error cache and the stale copies (tests inject a manual one).
    pub clock: Arc<dyn Clock>,
    /// Threads serving requests (`--workers`). One serves on the runtime `start` is called on,
    /// beside the source and the admin server; more are threads of their own, each a
    /// current-thread runtime with its own upstream connections, all accepting from one
    /// listening socket.
    pub workers: usize,
}

impl RunConfig {
    /// A configuration for tests and embedding: every listener on 127.0.0.1 with a free port.
    pub fn local(manifests: impl Into<PathBuf>) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            manifests: Some(manifests.into()),
            kube: KubeSettings::default(),
            http_addr: any,
            https_addr: Some(any),
            admin_addr: any,
            build: BuildConfig::default(),
            proxy: ProxyConfig::default(),
            drain_timeout: Duration::from_secs(5),
            error_cache_max_bytes: DEFAULT_MAX_BYTES,
            stale_cache_max_bytes: proxy::stale::DEFAULT_MAX_BYTES,
            clock: Arc::new(SystemClock),
            workers: 1,
        }
    }
}

/// Settings of the Kubernetes source.
#[derive(Clone, Debug, Default)]
pub struct KubeSettings {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    /// `--publish-service`.
    pub publish_service: Option<crate::index::ObjectKey>,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Identity in the Lease.
    pub identity: String,
}

/// Errors that stop erratum from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The manifests folder failed.
    #[error(transparent)]
    Manifests(#[from] files::Error),
    /// Metrics registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] proxy::tls::Error),
    /// The access log cannot be opened.
    #[error(transparent)]
    AccessLog(#[from] proxy::access_log::Error),
    /// The Kubernetes source failed to start.
    #[error(transparent)]
    Controller(#[from] crate::controller::Error),
    /// A worker thread could not be started.
    #[error("starting a worker thread: {0}")]
    Worker(std::io::Error),
}

/// A running erratum.
#[derive(Debug)]
pub struct Running {
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    /// Bound HTTPS address.
    pub https_addr: Option<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The metrics registry.
    pub metrics: Metrics,
    table: TableReader,
    draining: Arc<AtomicBool>,
    stop_proxy: CancellationToken,
    stop_admin: CancellationToken,
    proxy_tasks: Vec<JoinHandle<()>>,
    admin_task: JoinHandle<()>,
    watcher: Option<files::Watcher>,
    leadership: Option<crate::controller::leader::Leadership>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    listen(addr).and_then(TcpListener::from_std).map_err(|source| Error::Bind { what, addr, source })
}

/// One listening socket on `addr` for `n` workers: a handle each on one accept queue, which
/// every worker's reactor watches, so that a new client goes to whichever worker accepts first,
/// that is a worker with time for it (nginx's workers and HAProxy's threads share their queue
/// too). One socket per worker with `SO_REUSEPORT` was measured and not kept: the kernel
/// hashes each connection to a worker whatever its load, and p99 rose by a quarter on a busy
/// core (BENCHMARKS.md, session 15).
fn bind_workers(what: &'static str, addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, Error> {
    let err = |source| Error::Bind { what, addr, source };
    let first = listen(addr).map_err(err)?;
    let mut all = Vec::new();
    for _ in 1..n {
        all.push(first.try_clone().map_err(err)?);
    }
    all.insert(0, first);
    Ok(all)
}

/// A listening socket as tokio's `TcpListener::bind` makes it (address reuse, a backlog of
/// 1024), except that `[::]` always accepts IPv4 too (dual stack), whatever the node's
/// `net.ipv6.bindv6only` says: one listener serves both families.
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// One worker's listeners, not yet registered with a runtime.
type WorkerListeners = (std::net::TcpListener, Option<std::net::TcpListener>);

/// Registers a worker's listeners with the reactor of the runtime this is called on.
fn register((http, https): WorkerListeners) -> std::io::Result<(TcpListener, Option<TcpListener>)> {
    Ok((TcpListener::from_std(http)?, https.map(TcpListener::from_std).transpose()?))
}

/// What every worker serves with, shared.
struct Serving {
    proxy: Arc<Proxy>,
    tls: Option<proxy::tls::Acceptor>,
    metrics: crate::metrics::ProxyMetrics,
    conns: Arc<proxy::Connections>,
    shutdown: CancellationToken,
    drain: Duration,
}

impl Serving {
    /// Serves one worker's listeners until shutdown has drained them.
    async fn serve(&self, proxy: Arc<Proxy>, http: TcpListener, https: Option<TcpListener>) {
        let serve = |listener, tls| {
            proxy::serve(
                listener,
                tls,
                proxy.clone(),
                self.metrics.clone(),
                self.conns.clone(),
                self.shutdown.clone(),
                self.drain,
            )
        };
        match (https, &self.tls) {
            (Some(https), Some(tls)) => {
                tokio::join!(serve(http, None), serve(https, Some(tls.clone())));
            }
            _ => serve(http, None).await,
        }
    }
}

/// Starts one thread per pair of listeners, each a current-thread runtime serving them with a
/// handler of its own ([`Proxy::for_worker`]): thread per core, as nginx, HAProxy and Pingora
/// scale, with nothing shared on the request path but the table, caches and counters (one
/// multi-thread runtime was measured beside it: 1.8 % more instructions per request, its
/// work-stealing and cross-thread wake-ups). Each returned task ends when its thread has
/// drained.
fn spawn_workers(
    serving: Arc<Serving>,
    listeners: Vec<WorkerListeners>,
) -> Result<Vec<JoinHandle<()>>, Error> {
    let mut done = Vec::new();
    for (i, listeners) in listeners.into_iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = serving.clone();
        let proxy = Arc::new(serving.proxy.for_worker());
        let body = move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(worker = i, "starting the worker's runtime: {e}"),
            };
            runtime.block_on(async move {
                match register(listeners) {
                    Ok((http, https)) => serving.serve(proxy, http, https).await,
                    Err(e) => tracing::error!(worker = i, "registering the worker's listeners: {e}"),
                }
            });
            let _ = tx.send(());
        };
        std::thread::Builder::new()
            // Fifteen characters at most: what `top -H` and /proc show of a thread's name.
            .name(format!("erratum-wrk-{i}"))
            .spawn(body)
            .map_err(Error::Worker)?;
        done.push(tokio::spawn(async move {
            let _ = rx.await;
        }));
    }
    Ok(done)
}

/// Starts erratum in file mode and returns once it serves.
pub async fn start(config: RunConfig) -> Result<Running, Error> {
    let metrics = Metrics::new()?;
    let (writer, reader) = table::channel();
    let mut publisher = Publisher::new(writer, config.build.clone(), metrics.table.clone());
    let stop_proxy = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let mut watcher = None;
    let mut leadership = None;
    match &config.manifests {
        Some(dir) => {
            let mut folder = Folder::open(dir)?;
            // The first table is published before any port is bound: file mode is ready at once.
            if !files::reload(&mut folder, &mut publisher, &metrics.table) {
                // An unreadable folder after validation (it vanished): serve an empty table
                // rather than 503 forever; the watcher publishes once it is readable again.
                publisher.publish(&crate::index::Index::default());
            }
            watcher = Some(files::watch(folder, publisher, metrics.table.clone())?);
        }
        None => {
            let client = kube::Client::try_default().await.map_err(crate::controller::Error::from)?;
            let controller = crate::controller::ControllerConfig {
                namespace: config.kube.namespace.clone(),
                build: config.build.clone(),
                publish_service: config.kube.publish_service.clone(),
                lease_namespace: config.kube.lease_namespace.clone(),
                identity: config.kube.identity.clone(),
            };
            leadership = Some(
                crate::controller::start(
                    client,
                    controller,
                    publisher,
                    metrics.controller.clone(),
                    stop_admin.clone(),
                )
                .await?,
            );
        }
    }

    let workers = config.workers.max(1);
    let http = bind_workers("http", config.http_addr, workers)?;
    let https = match config.https_addr {
        Some(addr) => Some(bind_workers("https", addr, workers)?),
        None => None,
    };
    let admin_listener = bind("admin", config.admin_addr).await?;
    let running_addr = |l: &std::net::TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let http_addr = running_addr(&http[0], config.http_addr);
    let https_addr =
        https.as_ref().map(|l| running_addr(&l[0], config.https_addr.unwrap_or(config.http_addr)));
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin_addr);

    let cache = (config.error_cache_max_bytes > 0)
        .then(|| ErrorCache::new(config.error_cache_max_bytes, config.clock.clone(), metrics.cache.clone()));
    if let Some(cache) = &cache {
        cache.spawn_maintenance(reader.clone(), stop_admin.clone());
    }
    let stale = (config.stale_cache_max_bytes > 0).then(|| {
        proxy::stale::StaleStore::new(
            config.stale_cache_max_bytes,
            config.clock.clone(),
            metrics.proxy.stale.clone(),
        )
    });
    if let Some(stale) = &stale {
        stale.spawn_maintenance(stop_admin.clone());
    }
    let access_log = match &config.proxy.access_log {
        Some(target) => {
            Some(proxy::access_log::AccessLog::open(target, metrics.proxy.access_log_dropped.clone())?)
        }
        None => None,
    };
    let proxy = Arc::new(
        Proxy::new(
            reader.clone(),
            metrics.proxy.clone(),
            config.proxy.clone(),
            cache.clone(),
            stop_admin.clone(),
        )
        .with_access_log(access_log)
        .with_stale(stale),
    );
    let draining = Arc::new(AtomicBool::new(false));

    let conns = proxy::Connections::new(
        config.proxy.max_connections,
        stop_proxy.clone(),
        metrics.proxy.connections_shed.clone(),
        config.proxy.header_read_timeout,
        config.proxy.response_timeout,
    );
    let tls = match https_addr {
        Some(_) => Some(proxy::tls::Acceptor::new(reader.clone())?),
        None => None,
    };
    let https: Vec<_> = match https {
        Some(l) => l.into_iter().map(Some).collect(),
        None => std::iter::repeat_with(|| None).take(workers).collect(),
    };
    let mut listeners: Vec<WorkerListeners> = http.into_iter().zip(https).collect();
    let serving = Arc::new(Serving {
        proxy: proxy.clone(),
        tls,
        metrics: metrics.proxy.clone(),
        conns: conns.clone(),
        shutdown: stop_proxy.clone(),
        drain: config.drain_timeout,
    });
    let proxy_tasks = match listeners.pop() {
        // One worker serves here, beside the source and the admin server (one thread in all).
        Some(one) if workers == 1 => {
            let (http, https) =
                register(one).map_err(|source| Error::Bind { what: "http", addr: http_addr, source })?;
            vec![tokio::spawn(async move { serving.serve(serving.proxy.clone(), http, https).await })]
        }
        last => spawn_workers(serving, listeners.into_iter().chain(last).collect())?,
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            metrics: metrics.clone(),
            table: reader.clone(),
            draining: draining.clone(),
            pages: Some(proxy.pages().clone()),
            cache,
            balancer: Some(proxy.balancer().clone()),
        },
        stop_admin.clone(),
    ));
    let source = match &config.manifests {
        Some(dir) => format!("manifests {}", dir.display()),
        None => "kubernetes".to_string(),
    };
    tracing::info!(%http_addr, https_addr = ?https_addr, %admin_addr, %source, "erratum serving");

    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        metrics,
        table: reader,
        draining,
        stop_proxy,
        stop_admin,
        proxy_tasks,
        admin_task,
        watcher,
        leadership,
    })
}

impl Running {
    /// Whether this replica holds the Lease (Kubernetes mode; `None` in file mode).
    pub fn is_leader(&self) -> Option<bool> {
        self.leadership.as_ref().map(|l| l.is_leader())
    }

    /// The published routing table.
    pub fn table(&self) -> &TableReader {
        &self.table
    }

    /// Graceful shutdown: stop accepting, drain in-flight requests, stop the rest.
    pub async fn shutdown(mut self) {
        self.draining.store(true, Ordering::Relaxed);
        self.stop_proxy.cancel();
        for task in self.proxy_tasks.drain(..) {
            let _ = task.await;
        }
        self.stop_admin.cancel();
        let _ = (&mut self.admin_task).await;
        if self.leadership.as_ref().is_some_and(|l| l.is_leader()) {
            // Give the election task a moment to release the Lease (hand-over).
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(watcher) = self.watcher.take() {
            // Joining a std thread: do it off the async workers.
            let _ = tokio::task::spawn_blocking(move || watcher.stop()).await;
        }
        tracing::info!("erratum stopped");
    }

    /// Serves until `signal` resolves (see [`shutdown_signal`]), then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("shutdown signal received; draining");
        self.shutdown().await;
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered when this is called, not when
/// the future is first polled: call it before binding ports so a signal that arrives during
/// start-up is not lost (nor kills the process with the default action).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term {
                Some(mut t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let interrupt = async {
            match interrupt {
                Some(mut i) => {
                    i.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = term => {}
            _ = interrupt => {}
        }
    }
}
