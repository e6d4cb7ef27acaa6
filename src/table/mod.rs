//! The routing table: an immutable snapshot built by a pure function from the Index.
//!
//! Data flow: source -> Index -> [`RoutingTable::build`] ([`build`]) -> [`TableWriter::publish`]
//! (ArcSwap) -> [`TableReader::load`] once per request in the proxy. Nothing here does I/O,
//! reads a clock or knows about kube or the hyper server: both sources share this one
//! implementation of the Ingress v1 semantics, and tests can build tables from plain values.
//!
//! This file holds what the table *is* (routes, lookup, the publish/read pair) and the
//! vocabulary the data plane reads it in; [`build`] makes it, [`policy`] resolves
//! ErrorPagePolicies, [`backend`] Services and endpoints, [`route`] hosts and paths,
//! [`template`] page templates, [`accept`] content negotiation, [`tls`] certificates,
//! [`status`] what is reported back, [`annotations`] the ingress-nginx annotations read.

pub mod accept;
pub mod annotations;
pub mod backend;
pub mod build;
pub mod policy;
pub mod route;
pub mod status;
pub mod template;
pub mod tls;
pub mod upstream_tls;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::index::Kind;
pub use annotations::{Edge, EdgeDefaults, LoadBalance, NextUpstream, Protocol, Upstream};
pub use backend::{Backend, Pick, PortRef, Target};
pub use policy::ResolvedPolicy;
pub use route::{HostRoutes, PathKind};
pub use status::PolicyReport;
pub use tls::TlsTable;
pub use upstream_tls::{BackendProtocol, UpstreamTls};

// The table's vocabulary, as the data plane sees it: the proxy imports these from here and
// never from `crd` or `index` (checked by `tests/scenarios/layering.rs`).
pub use crate::crd::{MAX_PAGE_BYTES, MAX_TTL_SECONDS, Mode};
pub use crate::index::ObjectKey;

/// Annotation that makes an IngressClass the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Pre-IngressClass annotation still set by many manifests written for ingress-nginx.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// What the build needs besides the Index: the controller's own identity and fallbacks.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    /// IngressClass name this controller serves.
    pub ingress_class: String,
    /// `spec.controller` of IngressClasses that belong to us.
    pub controller_name: String,
    /// `--default-backend`: the catch-all when no Ingress provides one.
    pub default_backend: Option<ServiceRef>,
    /// `--default-policy`: an ErrorPagePolicy that applies everywhere with the lowest
    /// precedence, including requests no Ingress matches.
    pub default_policy: Option<ObjectKey>,
    /// The edge behaviour Ingress annotations override (`--ssl-redirect`, `--max-body-bytes`).
    pub edge: EdgeDefaults,
    /// `--custom-http-errors`: codes whose page `--default-backend` renders for every
    /// Ingress that does not say otherwise (ingress-nginx's ConfigMap key of that name).
    pub custom_http_errors: Vec<u16>,
    /// `--watch-ingress-without-class`: Ingresses that name no class are ours too.
    pub without_class: bool,
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            ingress_class: "erratum".into(),
            controller_name: "erratum.dev/ingress-controller".into(),
            default_backend: None,
            default_policy: None,
            edge: EdgeDefaults::default(),
            custom_http_errors: Vec::new(),
            without_class: false,
        }
    }
}

/// `NAMESPACE/SERVICE:PORT`, as given to `--default-backend`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    /// The Service.
    pub service: ObjectKey,
    /// Port number or name.
    pub port: PortRef,
}

impl std::str::FromStr for ServiceRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || format!("{s:?} is not NAMESPACE/SERVICE:PORT");
        let (service, port) = s.rsplit_once(':').ok_or_else(err)?;
        let service = ObjectKey::parse(service).map_err(|_| err())?;
        if port.is_empty() {
            return Err(err());
        }
        let port = match port.parse::<i32>() {
            Ok(n) if (1..=65535).contains(&n) => PortRef::Number(n),
            Ok(_) => return Err(format!("port in {s:?} is out of range")),
            Err(_) => PortRef::Name(port.to_string()),
        };
        Ok(ServiceRef { service, port })
    }
}

/// A problem found while building: the object is skipped or degraded, the rest is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Kind of the object at fault; `None` for a command-line flag.
    pub kind: Option<Kind>,
    /// The object (`namespace/name`; cluster-scoped kinds and flags have an empty namespace).
    pub key: ObjectKey,
    /// What is wrong and what erratum does about it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.key.namespace.is_empty()) {
            (None, _) => write!(f, "flag {}: {}", self.key.name, self.message),
            (Some(kind), true) => write!(f, "{kind} {}: {}", self.key.name, self.message),
            (Some(kind), false) => write!(f, "{kind} {}: {}", self.key, self.message),
        }
    }
}

/// One routable rule: where a matched request goes, and which Ingress said so.
#[derive(Debug)]
pub struct Route {
    /// The Ingress that owns the rule; `None` for `--default-backend`.
    pub ingress: Option<ObjectKey>,
    /// The path as written (for logs and the admin API).
    pub path: String,
    /// How the path matches.
    pub kind: PathKind,
    /// Where traffic goes.
    pub backend: Arc<Backend>,
    /// ErrorPagePolicies that apply, highest precedence first.
    pub policies: Policies,
    /// The owning Ingress's place in [`RoutingTable::ingress_keys`] (`None` for
    /// `--default-backend`): a dense index the proxy keys its per-Ingress state by.
    pub ingress_slot: Option<usize>,
    /// HTTPS redirect and body limit, from the Ingress's annotations and the flags.
    pub edge: Edge,
    /// Timeouts, retries and balancing, from the Ingress's annotations and the flags.
    pub upstream: Upstream,
    /// The protocol to the endpoints when not plaintext HTTP/1.1 (`backend-protocol`, the
    /// Service port's `appProtocol`).
    pub protocol: Option<Arc<BackendProtocol>>,
    /// Client address ranges allowed or denied (`allowlist-`/`denylist-source-range`);
    /// `None` checks nothing.
    pub access: Option<Arc<annotations::SourceRanges>>,
    /// Redirects and rewrites (`rewrite-target`, `app-root`, `permanent-redirect`, …);
    /// `None` for most routes.
    pub rewrite: Option<Arc<annotations::Rewrite>>,
    /// Rate limits per client address (`limit-rps`, …), shared by the Ingress's routes.
    pub limits: Option<Arc<annotations::RateLimits>>,
    /// Headers added to every response (CORS, `custom-headers`); `None` for most routes.
    pub response_headers: Option<Arc<annotations::ResponseHeaders>>,
    /// A canary Ingress's share of this route's requests (`canary` annotations).
    pub canary: Option<Arc<annotations::Canary>>,
    /// Session affinity by cookie (`affinity: cookie`).
    pub affinity: Option<Arc<annotations::Affinity>>,
    /// Authentication (`auth-type: basic`, `auth-url`), shared by the Ingress's routes.
    pub auth: Option<Arc<annotations::Auth>>,
    /// The policies of [`Route::policies`] whose maintenance is on, in precedence order;
    /// `None` for every other route (one branch per request).
    pub maintenance: Option<Policies>,
    /// The policies of [`Route::policies`] that serve stale copies on error (Enforce mode,
    /// `spec.staleIfError`), in precedence order; `None` for every other route: nothing is
    /// kept or looked up for them.
    pub stale: Option<Policies>,
}

/// What `/table` shows of an Ingress's edge settings (the effective values, after its
/// annotations and the flags).
#[derive(Clone, Debug)]
pub struct IngressEdgeView {
    /// The Ingress.
    pub key: ObjectKey,
    /// Largest request body; `None` is unlimited.
    pub max_body_bytes: Option<u64>,
    /// Hosts whose plain-HTTP requests are redirected to HTTPS.
    pub https_redirect: Vec<String>,
    /// Timeouts, retries and balancing of its routes.
    pub upstream: Upstream,
    /// The protocol to each Service it routes to that is not plaintext HTTP/1.1.
    pub protocols: Vec<(ObjectKey, Arc<BackendProtocol>)>,
    /// Redirects, rewrites, regex paths, as read.
    pub routing: annotations::IngressRouting,
    /// Authentication of its routes.
    pub auth: Option<Arc<annotations::Auth>>,
}

/// The policies among `policies` whose maintenance switch is on (`Route::maintenance`).
pub(crate) fn maintenance_of(policies: &Policies) -> Option<Policies> {
    let on: Vec<Arc<ResolvedPolicy>> =
        policies.iter().filter(|p| p.maintenance.as_ref().is_some_and(|m| m.enabled)).cloned().collect();
    (!on.is_empty()).then(|| on.into())
}

/// The policies among `policies` that serve stale copies on error (`Route::stale`).
pub(crate) fn stale_of(policies: &Policies) -> Option<Policies> {
    let on: Vec<Arc<ResolvedPolicy>> =
        policies.iter().filter(|p| p.mode == Mode::Enforce && p.stale_if_error.is_some()).cloned().collect();
    (!on.is_empty()).then(|| on.into())
}

/// The policies that apply to a route, highest precedence first (shared by all routes of one
/// Ingress).
pub type Policies = Arc<[Arc<ResolvedPolicy>]>;

/// What a request matched: the route (if any) and the policies that apply to it.
#[derive(Clone, Copy, Debug)]
pub struct RouteMatch<'a> {
    /// The route, or `None` when erratum answers 404 itself.
    pub route: Option<&'a Arc<Route>>,
    /// Policies for errors of this request, highest precedence first.
    pub policies: &'a [Arc<ResolvedPolicy>],
}

/// The immutable routing snapshot.
#[derive(Debug, Default)]
pub struct RoutingTable {
    generation: u64,
    ready: bool,
    hosts: HashMap<String, HostRoutes>,
    wildcards: HashMap<String, HostRoutes>,
    hostless: HostRoutes,
    catch_all: Option<Arc<Route>>,
    tls: TlsTable,
    ingresses: usize,
    edges: Vec<IngressEdgeView>,
    diagnostics: Vec<Diagnostic>,
    /// Policies for requests that match no host: the default policy only.
    fallback_policies: Policies,
    policy_reports: Vec<PolicyReport>,
    published_at: Option<Time>,
    page_prefetch: Vec<(String, String)>,
    /// Services routed to, and whether each has a ready endpoint (for readiness-aware caching).
    service_ready: HashMap<ObjectKey, bool>,
    /// Our Ingresses (for status).
    ingress_keys: Vec<ObjectKey>,
    /// ingress-nginx annotations erratum does not read, by name: how many Ingresses carry each.
    unsupported_annotations: std::collections::BTreeMap<String, usize>,
    /// Rate-limit state per Ingress (carried over to the next table while unchanged).
    limits: Vec<(ObjectKey, Arc<annotations::RateLimits>)>,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// The table served before the first build: every request gets a built-in 503.
    pub fn not_ready() -> Self {
        Self::default()
    }

    /// Finds the route for a request. `None` means erratum answers 404 itself.
    ///
    /// Order: the exact host, else its `*.` wildcard; within it the longest path, else the
    /// host's Ingress default backend. Requests for hosts no rule names use the host-less
    /// rules. Whatever is left goes to the catch-all default backend.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        self.lookup(&route::normalize_host(host), path).route
    }

    /// Like [`RoutingTable::find`] for a normalised host, with the policies for the request's
    /// errors: the route's, else those of the Ingress that owns the host, else the default
    /// policy.
    pub fn lookup(&self, host: &str, path: &str) -> RouteMatch<'_> {
        let routes =
            self.hosts.get(host).or_else(|| route::wildcard_suffix(host).and_then(|s| self.wildcards.get(s)));
        let (found, host_policies) = match routes {
            Some(routes) => (routes.find(path).or(routes.default.as_ref()), Some(&routes.policies)),
            None => (self.hostless.find(path), None),
        };
        match found.or(self.catch_all.as_ref()) {
            Some(route) => RouteMatch { route: Some(route), policies: &route.policies },
            None => RouteMatch { route: None, policies: host_policies.unwrap_or(&self.fallback_policies) },
        }
    }

    /// Policies for a request no host is known for (a head refused before routing): the
    /// default policy, if any.
    pub fn unmatched_policies(&self) -> &[Arc<ResolvedPolicy>] {
        &self.fallback_policies
    }

    /// Records when the table was published (the build itself reads no clock); status
    /// conditions use it as their transition time in file mode.
    pub fn stamp(&mut self, at: Time) {
        self.published_at = Some(at);
    }

    /// When the table was published, if stamped.
    pub fn published_at(&self) -> Option<&Time> {
        self.published_at.as_ref()
    }

    /// Services this table routes to, with whether each has at least one ready endpoint. The
    /// error cache drops a Service's 502/503/504 entries when it turns ready.
    pub fn service_readiness(&self) -> &HashMap<ObjectKey, bool> {
        &self.service_ready
    }

    /// (host, page path) pairs the policies need for the exact hosts of their Ingresses: the
    /// proxy fetches and pins these as soon as the table is published.
    pub fn page_prefetch(&self) -> &[(String, String)] {
        &self.page_prefetch
    }

    /// What the build found about each ErrorPagePolicy, by `namespace/name`.
    pub fn policy_reports(&self) -> &[PolicyReport] {
        &self.policy_reports
    }

    /// The policy version in effect for `key` (current or last good).
    pub fn policy(&self, key: &ObjectKey) -> Option<&Arc<ResolvedPolicy>> {
        self.policy_reports.iter().find(|r| &r.key == key).and_then(|r| r.in_effect.as_ref())
    }

    /// Whether a real build has been published (false for [`RoutingTable::not_ready`]).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// The publish counter this table was built for.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// TLS certificates by SNI.
    pub fn tls(&self) -> &TlsTable {
        &self.tls
    }

    /// Problems found while building.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The Ingresses of our class, oldest first.
    pub fn ingress_keys(&self) -> &[ObjectKey] {
        &self.ingress_keys
    }

    /// ingress-nginx annotations erratum does not read, with how many Ingresses carry each.
    pub fn unsupported_annotations(&self) -> &std::collections::BTreeMap<String, usize> {
        &self.unsupported_annotations
    }

    /// Rate-limit state of each Ingress that sets limits.
    pub fn rate_limits(&self) -> &[(ObjectKey, Arc<annotations::RateLimits>)] {
        &self.limits
    }

    /// Each served Ingress's effective edge settings, oldest Ingress first.
    pub fn edges(&self) -> &[IngressEdgeView] {
        &self.edges
    }

    /// Number of Ingresses of our class that contributed.
    pub fn ingress_count(&self) -> usize {
        self.ingresses
    }

    /// Number of hosts (exact and wildcard) with rules.
    pub fn host_count(&self) -> usize {
        self.hosts.len() + self.wildcards.len()
    }

    /// Number of path rules across all hosts.
    pub fn route_count(&self) -> usize {
        self.hosts.values().chain(self.wildcards.values()).map(HostRoutes::len).sum::<usize>()
            + self.hostless.len()
    }
}

// === TableWriter / TableReader ===

/// The published table and a count of publishes (what readers that derive state from a table
/// compare, with one atomic load, to know it changed).
#[derive(Debug)]
struct Shared {
    table: ArcSwap<RoutingTable>,
    publishes: AtomicU64,
}

/// Creates the publish/read pair around one [`ArcSwap`]. The table starts as
/// [`RoutingTable::not_ready`].
pub fn channel() -> (TableWriter, TableReader) {
    let shared = Arc::new(Shared {
        table: ArcSwap::from_pointee(RoutingTable::not_ready()),
        publishes: AtomicU64::new(0),
    });
    (TableWriter(shared.clone()), TableReader(shared))
}

/// The single publisher of routing tables.
#[derive(Debug)]
pub struct TableWriter(Arc<Shared>);

impl TableWriter {
    /// Swaps the whole snapshot in; requests already running keep the one they loaded.
    pub fn publish(&self, table: RoutingTable) {
        self.0.table.store(Arc::new(table));
        // After the store: a reader that sees the new count loads the new table.
        self.0.publishes.fetch_add(1, Ordering::Release);
    }

    /// A reader of the same table.
    pub fn reader(&self) -> TableReader {
        TableReader(self.0.clone())
    }
}

/// A lock-free reader of the current routing table.
#[derive(Clone, Debug)]
pub struct TableReader(Arc<Shared>);

impl TableReader {
    /// The current snapshot. One atomic load and a reference count; never blocks.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.0.table.load_full()
    }

    /// How many tables have been published. A reader that keeps state derived from a table
    /// (the proxy's per-Ingress metric handles) checks this first: one atomic load.
    pub fn publishes(&self) -> u64 {
        self.0.publishes.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
