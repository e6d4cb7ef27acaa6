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
use tokio_rustls::TlsAcceptor;
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
    listen(addr).map_err(|source| Error::Bind { what, addr, source })
}

/// A listening socket as tokio's `TcpListener::bind` makes it (address reuse, a backlog of
/// 1024), except that `[::]` always accepts IPv4 too (dual stack), whatever the node's
/// `net.ipv6.bindv6only` says: one listener serves both families.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
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

    let http = bind("http", config.http_addr).await?;
    let https = match config.https_addr {
        Some(addr) => Some(bind("https", addr).await?),
        None => None,
    };
    let admin_listener = bind("admin", config.admin_addr).await?;
    let running_addr = |l: &TcpListener, fallback| l.local_addr().unwrap_or(fallback);
    let http_addr = running_addr(&http, config.http_addr);
    let https_addr = https.as_ref().map(|l| running_addr(l, config.https_addr.unwrap_or(config.http_addr)));
    let admin_addr = running_addr(&admin_listener, config.admin_addr);

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
    let mut proxy_tasks = vec![tokio::spawn(proxy::serve(
        http,
        None,
        proxy.clone(),
        metrics.proxy.clone(),
        conns.clone(),
        stop_proxy.clone(),
        config.drain_timeout,
    ))];
    if let Some(https) = https {
        let acceptor = TlsAcceptor::from(proxy::tls::server_config(reader.clone())?);
        proxy_tasks.push(tokio::spawn(proxy::serve(
            https,
            Some(acceptor),
            proxy.clone(),
            metrics.proxy.clone(),
            conns.clone(),
            stop_proxy.clone(),
            config.drain_timeout,
        )));
    }
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
