//! Command line and environment: every flag also reads `ERRATUM_*`.
//!
//! Validation happens here, before any port is bound; `main` exits with 64 (EX_USAGE) on any
//! error so a bad rollout fails fast and visibly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::index::ObjectKey;
use crate::proxy::ProxyConfig;
use crate::runtime::RunConfig;
use crate::source::files::Folder;
use crate::table::{BuildConfig, EdgeDefaults, LoadBalance, ServiceRef};

/// Exit code for bad flags or configuration (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Configuration errors found before starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests folder is missing or unreadable.
    #[error(transparent)]
    Manifests(#[from] crate::source::files::Error),
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// erratum: a Kubernetes ingress controller with CloudFront-style error pages and error caching.
#[derive(Debug, Parser)]
#[command(name = "erratum", version, about, propagate_version = true)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "ERRATUM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `erratum=debug`).
    #[arg(long, env = "ERRATUM_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Let the allocator back its memory with transparent huge pages (Linux). Off by default:
    /// with them an idle keep-alive connection held ~23 KB of resident memory instead of ~9 KB
    /// (BENCHMARKS.md, session 16); on, large error caches take fewer TLB misses.
    #[arg(long, env = "ERRATUM_TRANSPARENT_HUGE_PAGES", global = true)]
    pub transparent_huge_pages: bool,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the ingress controller.
    Run(Box<RunArgs>),
    /// Run a local demo: a built-in origin plus erratum on examples/quickstart.
    Demo(Box<DemoArgs>),
    /// Print the ErrorPagePolicy CustomResourceDefinition (YAML), as committed in crds/.
    Crd,
    /// Report what erratum would do with ingress-nginx Ingresses (a folder of manifests, or
    /// the cluster of the current kubeconfig): each annotation supported, supported with a
    /// difference, unsupported or invalid. Exit code 0: nothing at or above --fail-on;
    /// 1: something is; 2: the input could not be read.
    Migrate(MigrateArgs),
    /// Run only the demo's misbehaving origin (for benchmarks and the soak script).
    #[command(hide = true)]
    Origin {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18081")]
        addr: SocketAddr,
        /// Wait this many milliseconds before every answer (a slow endpoint).
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

/// `erratum migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// A manifest file or folder (searched recursively for .yaml, .yml, .json). Without it,
    /// the cluster of the current kubeconfig is read.
    #[arg(long, value_name = "PATH")]
    pub manifests: Option<PathBuf>,
    /// The ingress-nginx ConfigMap: NAMESPACE/NAME in the cluster, or a file of manifests
    /// holding it.
    #[arg(long, value_name = "NAMESPACE/NAME|FILE")]
    pub configmap: Option<String>,
    /// Only this namespace (cluster mode; default: all).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only Ingresses of these classes (default: all).
    #[arg(long = "ingress-class", value_name = "CLASS")]
    pub classes: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = MigrateOutput::Text)]
    pub output: MigrateOutput,
    /// The least that makes the exit code 1.
    #[arg(long, value_enum, default_value_t = crate::migrate::FailOn::Unsupported)]
    pub fail_on: crate::migrate::FailOn,
    /// Write, under this folder (`<namespace>/<ingress>-error-pages.yaml`), the ErrorPagePolicy
    /// equivalent of each Ingress's `custom-http-errors` + `default-backend`: a `backend` page
    /// on the same Service, the same codes, nothing cached. Existing files are replaced.
    #[arg(long, value_name = "DIR")]
    pub write_policies: Option<PathBuf>,
    /// Print erratum's support of every ingress-nginx annotation as a Markdown table, and exit.
    #[arg(long)]
    pub list: bool,
}

/// `erratum migrate -o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateOutput {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

/// Data-plane tuning shared by `run` and `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuningArgs {
    /// TCP connect timeout to upstreams (a timeout answers 504).
    #[arg(long, env = "ERRATUM_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Time allowed for an upstream's response headers (a timeout answers 504).
    #[arg(long, env = "ERRATUM_UPSTREAM_RESPONSE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub upstream_response_timeout: Duration,
    /// Time a client has to send its request headers; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "ERRATUM_CLIENT_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub client_header_timeout: Duration,
    /// Longest pause between two pieces of a request body before the request is aborted.
    #[arg(long, env = "ERRATUM_CLIENT_BODY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub client_body_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes.
    #[arg(long, env = "ERRATUM_MAX_HEADER_BYTES", default_value_t = 65536)]
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    #[arg(long, env = "ERRATUM_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Peers whose `X-Forwarded-For`, `-Proto` and `-Host` are believed (load balancers,
    /// CDNs): comma-separated CIDRs or addresses. From them `X-Forwarded-For` is appended to
    /// and the client is its right-most untrusted address; from anyone else those fields are
    /// replaced. Default: none.
    #[arg(long, env = "ERRATUM_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_trusted)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Longest request target (path and query) accepted, in bytes; longer ones get 414.
    #[arg(long, env = "ERRATUM_MAX_URI_BYTES", default_value_t = 8192)]
    pub max_uri_bytes: usize,
    /// Most open client connections, HTTP and HTTPS together. At the limit the oldest idle
    /// connections are closed; when none is idle, new clients wait to be accepted.
    #[arg(long, env = "ERRATUM_MAX_CONNECTIONS", default_value_t = crate::proxy::conns::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "ERRATUM_SHUTDOWN_DRAIN", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_drain: Duration,
    /// Bound of the error cache in bytes (0 turns it off).
    #[arg(long, env = "ERRATUM_ERROR_CACHE_MAX_BYTES", default_value_t = crate::proxy::cache::DEFAULT_MAX_BYTES)]
    pub error_cache_max_bytes: u64,
    /// Bound of the kept copies of good responses that ErrorPagePolicies with
    /// `staleIfError` serve when a backend fails, in bytes (0 turns serving stale off).
    #[arg(long, env = "ERRATUM_STALE_CACHE_MAX_BYTES", default_value_t = crate::proxy::stale::DEFAULT_MAX_BYTES)]
    pub stale_cache_max_bytes: u64,
    /// Worker threads serving requests (default: one per CPU). Each is a thread with its own
    /// async runtime and upstream connections, all taking clients from one accept queue; with
    /// one, it shares its thread with the source and the admin server.
    #[arg(long, env = "ERRATUM_WORKERS")]
    pub workers: Option<usize>,
    /// Redirect plain-HTTP requests for hosts with a TLS entry in their Ingress to HTTPS (308),
    /// as ingress-nginx's `ssl-redirect`; the annotation overrides it per Ingress.
    #[arg(long, env = "ERRATUM_SSL_REDIRECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub ssl_redirect: bool,
    /// The public HTTPS port redirects point to (omitted from `Location` when 443).
    #[arg(long, env = "ERRATUM_HTTPS_PORT", default_value_t = 443)]
    pub https_port: u16,
    /// Send `Strict-Transport-Security` on responses served over HTTPS.
    #[arg(long, env = "ERRATUM_HSTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts: bool,
    /// HSTS `max-age`, in seconds.
    #[arg(long, env = "ERRATUM_HSTS_MAX_AGE", default_value_t = 31_536_000)]
    pub hsts_max_age: u64,
    /// HSTS `includeSubDomains`.
    #[arg(long, env = "ERRATUM_HSTS_INCLUDE_SUBDOMAINS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts_include_subdomains: bool,
    /// HSTS `preload`.
    #[arg(long, env = "ERRATUM_HSTS_PRELOAD", default_value_t = false, action = clap::ArgAction::Set)]
    pub hsts_preload: bool,
    /// Largest request body (nginx size syntax: 1m, 512k, 0 for unlimited); larger bodies get
    /// 413. The `proxy-body-size` annotation overrides it per Ingress. Default as ingress-nginx.
    #[arg(long, env = "ERRATUM_MAX_BODY_SIZE", default_value = "1m", value_parser = parse_body_size)]
    pub max_body_size: BodySize,
    /// Every connection starts with a PROXY protocol header (v1 or v2), as TCP load
    /// balancers send it (AWS NLB, GCP, Azure, HAProxy `send-proxy`); the client address is
    /// the one it names. Connections without a valid header are closed and counted.
    #[arg(long, env = "ERRATUM_PROXY_PROTOCOL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: bool,
    /// Access log: `off`, `stdout`, or a file to append to. One JSON line per request
    /// (client, method, host, path, status, upstream status and address, bytes, duration,
    /// request id, Ingress, policy action, cache status), written off the request path.
    #[arg(long, env = "ERRATUM_ACCESS_LOG", default_value = "off", value_parser = parse_access_log)]
    pub access_log: AccessLogArg,
    /// How an endpoint is chosen: `round-robin` (as ingress-nginx), or `p2c` (of two endpoints
    /// at random, the one with fewer requests in flight). The `load-balance` annotation
    /// overrides it per Ingress.
    #[arg(long, env = "ERRATUM_LOAD_BALANCE", default_value = "round-robin", value_parser = parse_load_balance)]
    pub load_balance: LoadBalance,
    /// Consecutive failed connects after which an endpoint is ejected from balancing for a
    /// while (0: never).
    #[arg(long, env = "ERRATUM_OUTLIER_CONSECUTIVE_FAILURES", default_value_t = 3)]
    pub outlier_consecutive_failures: u32,
    /// Consecutive 5xx answers after which an endpoint is ejected (0, the default: 5xx do not
    /// eject).
    #[arg(long, env = "ERRATUM_OUTLIER_CONSECUTIVE_5XX", default_value_t = 0)]
    pub outlier_consecutive_5xx: u32,
    /// How long a first ejection lasts; each further one without a success in between lasts
    /// this much longer, up to `--outlier-max-ejection`.
    #[arg(long, env = "ERRATUM_OUTLIER_BASE_EJECTION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub outlier_base_ejection: Duration,
    /// The longest ejection.
    #[arg(long, env = "ERRATUM_OUTLIER_MAX_EJECTION", default_value = "300s", value_parser = humantime::parse_duration)]
    pub outlier_max_ejection: Duration,
    /// Most endpoints of one Service ejected at once, in percent (one at least when it has
    /// two or more; never all).
    #[arg(long, env = "ERRATUM_OUTLIER_MAX_EJECTION_PERCENT", default_value_t = 50)]
    pub outlier_max_ejection_percent: u32,
    /// Retries allowed, as a percentage of requests (beside 10 per second whatever the
    /// traffic): a total outage cannot multiply the load on the upstreams.
    #[arg(long, env = "ERRATUM_RETRY_BUDGET_PERCENT", default_value_t = 20)]
    pub retry_budget_percent: u32,
}

fn parse_load_balance(s: &str) -> Result<LoadBalance, String> {
    match s {
        "round-robin" | "round_robin" => Ok(LoadBalance::RoundRobin),
        "p2c" => Ok(LoadBalance::P2c),
        _ => Err(format!("{s:?} is not round-robin or p2c")),
    }
}

/// An `--access-log` value; `None` is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogArg(pub Option<crate::proxy::access_log::Target>);

fn parse_access_log(s: &str) -> Result<AccessLogArg, String> {
    match s {
        "off" | "false" | "none" => Ok(AccessLogArg(None)),
        target => target.parse().map(|t| AccessLogArg(Some(t))),
    }
}

/// A `--custom-http-errors` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomHttpErrors(pub Vec<u16>);

fn parse_custom_http_errors(s: &str) -> Result<CustomHttpErrors, String> {
    crate::table::annotations::parse_codes(s).map(CustomHttpErrors).map_err(|why| format!("{s:?} {why}"))
}

/// A `--max-body-size` value; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodySize(pub Option<u64>);

fn parse_body_size(s: &str) -> Result<BodySize, String> {
    crate::table::annotations::parse_size(s).map(BodySize).map_err(|why| format!("{s:?} {why}"))
}

impl TuningArgs {
    /// The edge defaults Ingress annotations override.
    fn edge_defaults(&self) -> EdgeDefaults {
        EdgeDefaults {
            ssl_redirect: self.ssl_redirect,
            max_body_bytes: self.max_body_size.0,
            load_balance: self.load_balance,
        }
    }

    /// The `Strict-Transport-Security` value, or `None` when off.
    fn hsts_value(&self) -> Result<Option<http::HeaderValue>, Error> {
        if !self.hsts {
            return Ok(None);
        }
        let mut value = format!("max-age={}", self.hsts_max_age);
        if self.hsts_include_subdomains {
            value.push_str("; includeSubDomains");
        }
        if self.hsts_preload {
            value.push_str("; preload");
        }
        http::HeaderValue::try_from(value).map(Some).map_err(|e| Error::Invalid(format!("--hsts: {e}")))
    }

    fn proxy_config(&self) -> Result<ProxyConfig, Error> {
        let positive = |name: &str, d: Duration| {
            if d.is_zero() {
                Err(Error::Invalid(format!("--{name} must be greater than zero")))
            } else {
                Ok(d)
            }
        };
        if self.workers == Some(0) {
            return Err(Error::Invalid("--workers must be at least 1".into()));
        }
        if !(1024..=1 << 20).contains(&self.max_header_bytes) {
            return Err(Error::Invalid("--max-header-bytes must be between 1024 and 1048576".into()));
        }
        if !(1..=1000).contains(&self.max_headers) {
            return Err(Error::Invalid("--max-headers must be between 1 and 1000".into()));
        }
        if !(256..=65_534).contains(&self.max_uri_bytes) {
            return Err(Error::Invalid("--max-uri-bytes must be between 256 and 65534".into()));
        }
        if self.max_connections == 0 {
            return Err(Error::Invalid("--max-connections must be at least 1".into()));
        }
        Ok(ProxyConfig {
            connect_timeout: positive("upstream-connect-timeout", self.upstream_connect_timeout)?,
            response_timeout: positive("upstream-response-timeout", self.upstream_response_timeout)?,
            header_read_timeout: positive("client-header-timeout", self.client_header_timeout)?,
            client_body_timeout: positive("client-body-timeout", self.client_body_timeout)?,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_uri_bytes: self.max_uri_bytes,
            max_connections: self.max_connections,
            trusted_proxies: self.trusted_proxies.clone().into(),
            https_port: self.https_port,
            hsts: self.hsts_value()?,
            proxy_protocol: self.proxy_protocol,
            access_log: self.access_log.0.clone(),
            balance: crate::proxy::balance::Settings {
                consecutive_failures: self.outlier_consecutive_failures,
                consecutive_5xx: self.outlier_consecutive_5xx,
                base_ejection: positive("outlier-base-ejection", self.outlier_base_ejection)?,
                max_ejection: positive("outlier-max-ejection", self.outlier_max_ejection)?,
                max_ejection_percent: self.outlier_max_ejection_percent.min(100),
                retry_budget_percent: self.retry_budget_percent,
                ..crate::proxy::balance::Settings::default()
            },
        })
    }
}

/// A `--trusted-proxies` entry: a CIDR, or one address (a /32 or /128).
fn parse_trusted(s: &str) -> Result<ipnet::IpNet, String> {
    crate::table::annotations::parse_range(s)
}

/// A listener address that can be turned off with `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "off" | "none" => Ok(Self(None)),
            _ => s
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|e| format!("{e} (use an address like 0.0.0.0:8443, or \"off\")")),
        }
    }
}

/// `erratum run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Folder of Kubernetes manifests to serve (file mode, no cluster needed). Watched for changes.
    /// Without it erratum watches the Kubernetes API (kubeconfig or in-cluster config).
    #[arg(long, env = "ERRATUM_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Kubernetes mode: watch only this namespace (default: all).
    #[arg(long, env = "ERRATUM_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubernetes mode: the Service (NAMESPACE/NAME) whose address goes into Ingress status.
    #[arg(long, env = "ERRATUM_PUBLISH_SERVICE", value_parser = ObjectKey::parse)]
    pub publish_service: Option<ObjectKey>,
    /// Kubernetes mode: namespace of the `erratum-leader` Lease (default: $POD_NAMESPACE, else
    /// `default`).
    #[arg(long, env = "ERRATUM_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Kubernetes mode: this replica's identity in the Lease (default: $POD_NAME, else
    /// $HOSTNAME, else a random id).
    #[arg(long, env = "ERRATUM_IDENTITY")]
    pub identity: Option<String>,
    /// Plain HTTP listener (HTTP/1.1 and h2c).
    #[arg(long, env = "ERRATUM_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// HTTPS listener (HTTP/1.1 and h2 by ALPN), or "off".
    #[arg(long, env = "ERRATUM_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    pub https_addr: OptionalAddr,
    /// Admin listener: /healthz, /readyz, /metrics, /table.
    #[arg(long, env = "ERRATUM_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// IngressClass name to serve.
    #[arg(long, env = "ERRATUM_INGRESS_CLASS", default_value = "erratum")]
    pub ingress_class: String,
    /// `spec.controller` value of our IngressClass (`k8s.io/ingress-nginx`, with
    /// `--ingress-class nginx`, serves ingress-nginx's class in place).
    #[arg(long, env = "ERRATUM_CONTROLLER_NAME", default_value = "erratum.dev/ingress-controller")]
    pub controller_name: String,
    /// Also serve Ingresses that name no class (ingress-nginx's flag of that name), besides
    /// those our IngressClass gets as the cluster default.
    #[arg(long, env = "ERRATUM_WATCH_INGRESS_WITHOUT_CLASS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_ingress_without_class: bool,
    /// Catch-all backend when no Ingress provides one: NAMESPACE/SERVICE:PORT.
    #[arg(long, env = "ERRATUM_DEFAULT_BACKEND")]
    pub default_backend: Option<ServiceRef>,
    /// ErrorPagePolicy (NAMESPACE/NAME) applied everywhere with the lowest precedence,
    /// including to requests no Ingress matches.
    #[arg(long, env = "ERRATUM_DEFAULT_POLICY", value_parser = ObjectKey::parse)]
    pub default_policy: Option<ObjectKey>,
    /// Status codes (comma-separated) whose page `--default-backend` renders, for every
    /// Ingress without its own `custom-http-errors` (ingress-nginx's ConfigMap key).
    #[arg(long, env = "ERRATUM_CUSTOM_HTTP_ERRORS", value_parser = parse_custom_http_errors)]
    pub custom_http_errors: Option<CustomHttpErrors>,
    /// Data-plane tuning.
    #[command(flatten)]
    pub tuning: TuningArgs,
}

impl RunArgs {
    /// Validates everything that can be checked without binding a port.
    pub fn into_config(self) -> Result<RunConfig, Error> {
        let proxy = self.tuning.proxy_config()?;
        if let Some(dir) = &self.manifests {
            Folder::open(dir)?;
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let kube = crate::runtime::KubeSettings {
            namespace: self.namespace,
            publish_service: self.publish_service,
            lease_namespace: self
                .lease_namespace
                .or_else(|| env("POD_NAMESPACE"))
                .unwrap_or_else(|| "default".into()),
            identity: self
                .identity
                .or_else(|| env("POD_NAME"))
                .or_else(|| env("HOSTNAME"))
                .unwrap_or_else(|| format!("erratum-{:016x}", fastrand::u64(..))),
        };
        if self.ingress_class.is_empty() {
            return Err(Error::Invalid("--ingress-class must not be empty".into()));
        }
        Ok(RunConfig {
            manifests: self.manifests,
            kube,
            http_addr: self.http_addr,
            https_addr: self.https_addr.0,
            admin_addr: self.admin_addr,
            build: BuildConfig {
                ingress_class: self.ingress_class,
                controller_name: self.controller_name,
                default_backend: self.default_backend,
                default_policy: self.default_policy,
                edge: self.tuning.edge_defaults(),
                custom_http_errors: self.custom_http_errors.map(|c| c.0).unwrap_or_default(),
                without_class: self.watch_ingress_without_class,
            },
            proxy,
            drain_timeout: self.tuning.shutdown_drain,
            error_cache_max_bytes: self.tuning.error_cache_max_bytes,
            stale_cache_max_bytes: self.tuning.stale_cache_max_bytes,
            clock: std::sync::Arc::new(crate::proxy::cache::SystemClock),
            workers: self
                .tuning
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        })
    }
}

/// `erratum demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Plain HTTP listener.
    #[arg(long, env = "ERRATUM_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// HTTPS listener, or "off".
    #[arg(long, env = "ERRATUM_HTTPS_ADDR", default_value = "127.0.0.1:8443")]
    pub https_addr: OptionalAddr,
    /// Admin listener.
    #[arg(long, env = "ERRATUM_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// Data-plane tuning.
    #[command(flatten)]
    pub tuning: TuningArgs,
}

impl DemoArgs {
    /// The run configuration for a manifests folder.
    pub fn into_config(self, manifests: PathBuf) -> Result<RunConfig, Error> {
        RunArgs {
            manifests: Some(manifests),
            namespace: None,
            publish_service: None,
            lease_namespace: None,
            identity: None,
            http_addr: self.http_addr,
            https_addr: self.https_addr,
            admin_addr: self.admin_addr,
            ingress_class: "erratum".into(),
            controller_name: "erratum.dev/ingress-controller".into(),
            watch_ingress_without_class: false,
            default_backend: None,
            default_policy: None,
            custom_http_errors: None,
            tuning: self.tuning,
        }
        .into_config()
    }
}

#[cfg(test)]
mod tests;
