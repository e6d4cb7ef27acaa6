//! Prometheus metrics: one explicit registry, one struct per group.
//!
//! Data flow: the proxy, the sources and the publisher record here; the admin server renders
//! the registry at `/metrics`. Labels stay low-cardinality: namespace, Ingress, status class,
//! never the path or host.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Error registering a metric (a duplicate name is a programming error caught by tests).
pub type Error = prometheus::Error;

/// All metrics of one erratum process.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Data-plane metrics.
    pub proxy: ProxyMetrics,
    /// Routing-table and configuration metrics.
    pub table: TableMetrics,
    /// Error-cache metrics.
    pub cache: CacheMetrics,
    /// Kubernetes controller metrics.
    pub controller: ControllerMetrics,
}

impl Metrics {
    /// Creates a registry and registers every group in it.
    pub fn new() -> Result<Self, Error> {
        let registry = Registry::new();
        Ok(Self {
            proxy: ProxyMetrics::register(&registry)?,
            table: TableMetrics::register(&registry)?,
            cache: CacheMetrics::register(&registry)?,
            controller: ControllerMetrics::register(&registry)?,
            registry,
        })
    }

    /// The registry, for groups registered by later subsystems.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: T) -> Result<T, Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// The status class labels, in the order of [`status_class_index`].
pub const STATUS_CLASSES: [&str; 8] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other", "none", "maintenance"];
/// The `status_class` of a planned maintenance answer: apart from `5xx`, so it pages no one.
pub const MAINTENANCE_CLASS: usize = 7;

/// Status class label (`2xx`…`5xx`), or `none` when there was no upstream response.
pub fn status_class(status: Option<u16>) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// The index of a status's class in [`STATUS_CLASSES`].
pub fn status_class_index(status: Option<u16>) -> usize {
    match status {
        Some(100..=199) => 0,
        Some(200..=299) => 1,
        Some(300..=399) => 2,
        Some(400..=499) => 3,
        Some(500..=599) => 4,
        Some(_) => 5,
        None => 6,
    }
}

/// Data-plane metrics.
#[derive(Clone, Debug)]
pub struct ProxyMetrics {
    /// `erratum_requests_total{namespace,ingress,status_class,upstream_status_class}`: both the
    /// served and the upstream status, so a replaced error never hides the real failure.
    pub requests: IntCounterVec,
    /// `erratum_upstream_response_seconds{namespace,ingress}`: time to upstream response headers.
    pub upstream_seconds: HistogramVec,
    /// `erratum_proxy_errors_total{reason}`: responses erratum made itself.
    pub proxy_errors: IntCounterVec,
    /// `erratum_maintenance_requests_total{namespace,policy,outcome}`: requests a maintenance
    /// answered (`served`) or let through (`bypassed`) — planned, so apart from errors.
    pub maintenance: IntCounterVec,
    /// `erratum_connections_open{listener}`.
    pub connections: IntGaugeVec,
    /// `erratum_connections_shed_total`: idle connections closed because the connection limit
    /// was reached.
    pub connections_shed: IntCounter,
    /// `erratum_proxy_protocol_errors_total{reason}`: connections closed because their PROXY
    /// protocol header was missing, malformed, too large or too slow (`--proxy-protocol`).
    pub proxy_protocol_errors: IntCounterVec,
    /// `erratum_access_log_dropped_total`: access-log lines dropped because the writer fell
    /// behind (the queue is bounded; requests never wait for the log).
    pub access_log_dropped: IntCounter,
    /// `erratum_error_pages_served_total{namespace,policy,code,source}`: responses a policy
    /// changed; `code` is the original status.
    pub error_pages: IntCounterVec,
    /// `erratum_error_pages_report_only_total{namespace,policy,code,source}`: responses a
    /// `ReportOnly` policy would have changed.
    pub error_pages_report_only: IntCounterVec,
    /// `erratum_error_page_fallbacks_total{namespace,policy}`: a path page was not available, so
    /// the original status and a built-in body were sent (rule 47).
    pub page_fallbacks: IntCounterVec,
    /// `erratum_error_page_fetches_total{result}`: fetches of path pages.
    pub page_fetches: IntCounterVec,
    /// Retries, ejections (`erratum_upstream_retries_total{reason}` and the others of
    /// [`crate::proxy::balance::Metrics`]).
    pub balance: crate::proxy::balance::Metrics,
    /// Serve stale on error (`spec.staleIfError`).
    pub stale: StaleMetrics,
}

/// Serve-stale-on-error metrics.
#[derive(Clone, Debug)]
pub struct StaleMetrics {
    /// `erratum_stale_responses_total{namespace,policy,outcome}`: backend failures on routes
    /// that serve stale copies, by what happened: `served` (the copy answered; a 304 when the
    /// client's validators matched it), `expired` (a copy past its allowed staleness),
    /// `missing` (no copy for the request).
    pub responses: IntCounterVec,
    /// `erratum_stale_copies_stored_total`: good responses kept (or refreshed) as copies.
    pub stored: IntCounter,
    /// `erratum_stale_cache_bytes`.
    pub bytes: IntGauge,
    /// `erratum_stale_cache_entries`: keys (host, path and query) with copies.
    pub entries: IntGauge,
}

impl ProxyMetrics {
    /// Registers the group.
    pub fn register(r: &Registry) -> Result<Self, Error> {
        Ok(Self {
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_requests_total",
                        "Requests served, by Ingress, served and upstream status class",
                    ),
                    &["namespace", "ingress", "status_class", "upstream_status_class"],
                )?,
            )?,
            upstream_seconds: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "erratum_upstream_response_seconds",
                        "Time from sending the request upstream to its response headers",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        60.0,
                    ]),
                    &["namespace", "ingress"],
                )?,
            )?,
            proxy_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_proxy_errors_total",
                        "Error responses made by erratum itself, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            maintenance: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_maintenance_requests_total",
                        "Requests of routes under maintenance: answered by the policy (served) or let through by its bypass (bypassed)",
                    ),
                    &["namespace", "policy", "outcome"],
                )?,
            )?,
            access_log_dropped: register(
                r,
                IntCounter::new(
                    "erratum_access_log_dropped_total",
                    "Access-log lines dropped because the writer fell behind",
                )?,
            )?,
            stale: StaleMetrics {
                responses: register(
                    r,
                    IntCounterVec::new(
                        Opts::new(
                            "erratum_stale_responses_total",
                            "Backend failures on routes that serve stale copies: served from the copy, copy expired, or no copy",
                        ),
                        &["namespace", "policy", "outcome"],
                    )?,
                )?,
                stored: register(
                    r,
                    IntCounter::new(
                        "erratum_stale_copies_stored_total",
                        "Good responses kept as copies to serve when their backend fails",
                    )?,
                )?,
                bytes: register(
                    r,
                    IntGauge::new("erratum_stale_cache_bytes", "Bytes held by stale copies")?,
                )?,
                entries: register(
                    r,
                    IntGauge::new(
                        "erratum_stale_cache_entries",
                        "Keys (host, path and query) with stale copies",
                    )?,
                )?,
            },
            balance: crate::proxy::balance::Metrics {
                retries: register(
                    r,
                    IntCounterVec::new(
                        Opts::new(
                            "erratum_upstream_retries_total",
                            "Requests sent to another endpoint after a failed attempt, by reason",
                        ),
                        &["reason"],
                    )?,
                )?,
                retries_denied: register(
                    r,
                    IntCounterVec::new(
                        Opts::new(
                            "erratum_upstream_retries_denied_total",
                            "Retries not made: the retry budget was spent, or no other endpoint was left",
                        ),
                        &["reason"],
                    )?,
                )?,
                ejections: register(
                    r,
                    IntCounter::new(
                        "erratum_upstream_ejections_total",
                        "Endpoints taken out of balancing after consecutive failures",
                    )?,
                )?,
                returns: register(
                    r,
                    IntCounter::new(
                        "erratum_upstream_ejection_returns_total",
                        "Ejected endpoints back in balancing after their ejection ran out",
                    )?,
                )?,
                ejected: register(
                    r,
                    IntGauge::new("erratum_upstream_ejected_endpoints", "Endpoints ejected now")?,
                )?,
            },
            proxy_protocol_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_proxy_protocol_errors_total",
                        "Connections closed for a bad PROXY protocol header, by reason",
                    ),
                    &["reason"],
                )?,
            )?,
            connections: register(
                r,
                IntGaugeVec::new(
                    Opts::new("erratum_connections_open", "Open client connections"),
                    &["listener"],
                )?,
            )?,
            connections_shed: register(
                r,
                IntCounter::new(
                    "erratum_connections_shed_total",
                    "Idle client connections closed because --max-connections was reached",
                )?,
            )?,
            error_pages: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_error_pages_served_total",
                        "Error responses changed by a policy, by original code",
                    ),
                    &["namespace", "policy", "code", "source"],
                )?,
            )?,
            error_pages_report_only: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_error_pages_report_only_total",
                        "Error responses a ReportOnly policy would have changed, by original code",
                    ),
                    &["namespace", "policy", "code", "source"],
                )?,
            )?,
            page_fallbacks: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_error_page_fallbacks_total",
                        "Path pages unavailable when needed: original status and built-in body sent",
                    ),
                    &["namespace", "policy"],
                )?,
            )?,
            page_fetches: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_error_page_fetches_total",
                        "Fetches of error pages by path, by result",
                    ),
                    &["result"],
                )?,
            )?,
        })
    }
}

/// Routing-table and configuration metrics.
#[derive(Clone, Debug)]
pub struct TableMetrics {
    /// `erratum_table_rebuilds_total`.
    pub rebuilds: IntCounter,
    /// `erratum_table_rebuild_duration_seconds`.
    pub rebuild_seconds: Histogram,
    /// `erratum_table_generation`.
    pub generation: IntGauge,
    /// `erratum_table_ingresses`, `_hosts`, `_routes`.
    pub ingresses: IntGauge,
    /// Hosts with rules.
    pub hosts: IntGauge,
    /// Path rules.
    pub routes: IntGauge,
    /// `erratum_config_problems`: diagnostics of the current table (bad references, conflicts).
    pub problems: IntGauge,
    /// `erratum_manifest_errors_total{reason}`: manifest documents rejected (syntax, schema,
    /// unknown kind, duplicate, unreadable).
    pub manifest_errors: IntCounterVec,
    /// `erratum_objects{kind}`: objects in the Index.
    pub objects: IntGaugeVec,
    /// `erratum_ingress_annotations_unsupported{annotation}`: Ingresses carrying an
    /// ingress-nginx annotation erratum does not read, by annotation.
    pub unsupported_annotations: IntGaugeVec,
}

impl TableMetrics {
    /// Registers the group.
    pub fn register(r: &Registry) -> Result<Self, Error> {
        Ok(Self {
            rebuilds: register(
                r,
                IntCounter::new("erratum_table_rebuilds_total", "Routing tables built and published")?,
            )?,
            rebuild_seconds: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "erratum_table_rebuild_duration_seconds",
                        "Time to build a routing table",
                    )
                    .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                )?,
            )?,
            generation: register(
                r,
                IntGauge::new("erratum_table_generation", "Generation of the published table")?,
            )?,
            ingresses: register(
                r,
                IntGauge::new("erratum_table_ingresses", "Ingresses of our class in the table")?,
            )?,
            hosts: register(r, IntGauge::new("erratum_table_hosts", "Hosts with rules in the table")?)?,
            routes: register(r, IntGauge::new("erratum_table_routes", "Path rules in the table")?)?,
            problems: register(
                r,
                IntGauge::new("erratum_config_problems", "Problems found building the current table")?,
            )?,
            manifest_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new("erratum_manifest_errors_total", "Manifest documents rejected, by reason"),
                    &["reason"],
                )?,
            )?,
            objects: register(
                r,
                IntGaugeVec::new(Opts::new("erratum_objects", "Objects in the index, by kind"), &["kind"])?,
            )?,
            unsupported_annotations: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "erratum_ingress_annotations_unsupported",
                        "Ingresses carrying an ingress-nginx annotation erratum does not read, by annotation",
                    ),
                    &["annotation"],
                )?,
            )?,
        })
    }
}

/// Error-cache metrics.
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    /// `erratum_error_cache_hits_total{namespace,policy}`.
    pub hits: IntCounterVec,
    /// `erratum_error_cache_misses_total{namespace,policy}`.
    pub misses: IntCounterVec,
    /// `erratum_error_cache_coalesced_total{namespace,policy}`: requests that waited for another
    /// request's upstream answer instead of sending their own.
    pub coalesced: IntCounterVec,
    /// `erratum_error_cache_evictions_total{namespace,policy}`: entries evicted by the byte bound.
    pub evictions: IntCounterVec,
    /// `erratum_error_cache_purged_total{namespace,policy}`: entries removed through the admin API.
    pub purged: IntCounterVec,
    /// `erratum_error_cache_bytes`.
    pub bytes: IntGauge,
    /// `erratum_error_cache_entries`.
    pub entries: IntGauge,
}

impl CacheMetrics {
    /// Registers the group.
    pub fn register(r: &Registry) -> Result<Self, Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, Error> {
            register(r, IntCounterVec::new(Opts::new(name, help), &["namespace", "policy"])?)
        };
        Ok(Self {
            hits: counter("erratum_error_cache_hits_total", "Error responses served from the cache")?,
            misses: counter(
                "erratum_error_cache_misses_total",
                "Cacheable requests not answered from the cache",
            )?,
            coalesced: counter(
                "erratum_error_cache_coalesced_total",
                "Requests that shared another request's upstream answer",
            )?,
            evictions: counter(
                "erratum_error_cache_evictions_total",
                "Entries evicted to stay within the byte bound",
            )?,
            purged: counter("erratum_error_cache_purged_total", "Entries removed through the admin API")?,
            bytes: register(r, IntGauge::new("erratum_error_cache_bytes", "Bytes held by the error cache")?)?,
            entries: register(
                r,
                IntGauge::new("erratum_error_cache_entries", "Entries in the error cache")?,
            )?,
        })
    }
}

/// Kubernetes controller metrics.
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// `erratum_leader`: 1 while this replica holds the Lease.
    pub leader: IntGauge,
    /// `erratum_watch_errors_total{kind}`.
    pub watch_errors: IntCounterVec,
    /// `erratum_status_writes_total{kind,result}`.
    pub status_writes: IntCounterVec,
}

impl ControllerMetrics {
    /// Registers the group.
    pub fn register(r: &Registry) -> Result<Self, Error> {
        Ok(Self {
            leader: register(
                r,
                IntGauge::new("erratum_leader", "1 while this replica holds the erratum-leader Lease")?,
            )?,
            watch_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new("erratum_watch_errors_total", "Kubernetes watch errors, by kind"),
                    &["kind"],
                )?,
            )?,
            status_writes: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "erratum_status_writes_total",
                        "Status writes to the API server, by kind and result",
                    ),
                    &["kind", "result"],
                )?,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_once() {
        let m = Metrics::new().expect("metric names are unique");
        m.proxy.requests.with_label_values(&["ns", "ing", "2xx", "2xx"]).inc();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("erratum_requests_total{ingress=\"ing\",namespace=\"ns\""), "{text}");
    }
}
