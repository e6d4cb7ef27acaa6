//! The routing table: an immutable snapshot built by a pure function from the Index.
//!
//! Data flow: source -> Index -> [`RoutingTable::build`] -> [`TableWriter::publish`] (ArcSwap)
//! -> [`TableReader::load`] once per request in the proxy. Nothing here does I/O, reads a
//! clock or knows about kube or the hyper server: both sources share this one implementation
//! of the Ingress v1 semantics, and tests can build tables from plain values.

pub mod accept;
pub mod backend;
pub mod policy;
pub mod route;
pub mod status;
pub mod template;
pub mod tls;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::ErrorPagePolicy;
use crate::index::Index;
pub use backend::{Backend, Pick, PortRef, Target};
pub use policy::ResolvedPolicy;
pub use route::{HostRoutes, PathKind};
pub use status::PolicyReport;
pub use tls::TlsTable;

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
}

impl Default for BuildConfig {
    fn default() -> Self {
        Self {
            ingress_class: "erratum".into(),
            controller_name: "erratum.dev/ingress-controller".into(),
            default_backend: None,
            default_policy: None,
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
        let (ns, rest) = s.split_once('/').ok_or_else(err)?;
        let (name, port) = rest.split_once(':').ok_or_else(err)?;
        if ns.is_empty() || name.is_empty() || port.is_empty() {
            return Err(err());
        }
        let port = match port.parse::<i32>() {
            Ok(n) if (1..=65535).contains(&n) => PortRef::Number(n),
            Ok(_) => return Err(format!("port in {s:?} is out of range")),
            Err(_) => PortRef::Name(port.to_string()),
        };
        Ok(ServiceRef { service: ObjectKey::new(ns, name), port })
    }
}

/// A problem found while building: the object is skipped or degraded, the rest is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Kind of the object at fault (`Ingress`, `Secret`, …), or `Flag` for a command-line flag.
    pub kind: &'static str,
    /// The object (`namespace/name`; cluster-scoped kinds and flags have an empty namespace).
    pub key: ObjectKey,
    /// What is wrong and what erratum does about it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, self.key.namespace.is_empty()) {
            ("Flag", _) => write!(f, "flag {}: {}", self.key.name, self.message),
            (kind, true) => write!(f, "{kind} {}: {}", self.key.name, self.message),
            (kind, false) => write!(f, "{kind} {}: {}", self.key, self.message),
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
}

/// Sort key that makes conflict resolution deterministic: the oldest Ingress wins, then the
/// lexically smallest `namespace/name`. Ingresses without a timestamp (manifest files) sort
/// after timestamped ones and among themselves by name.
fn policy_age(p: &ErrorPagePolicy) -> PolicyAge {
    let ts = p.metadata.creation_timestamp.clone();
    (ts.is_none(), ts, ObjectKey::of(&p.metadata))
}

fn age_key(ing: &Ingress) -> (bool, Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>, ObjectKey) {
    let ts = ing.metadata.creation_timestamp.clone();
    (ts.is_none(), ts, ObjectKey::of(&ing.metadata))
}

// === impl RoutingTable ===

impl RoutingTable {
    /// The table served before the first build: every request gets a built-in 503.
    pub fn not_ready() -> Self {
        Self::default()
    }

    /// Builds a table from the Index. Pure: the same Index and config give the same table,
    /// and every problem is returned in [`RoutingTable::diagnostics`] instead of failing.
    pub fn build(index: &Index, config: &BuildConfig, generation: u64) -> Self {
        Self::build_from(index, config, generation, None)
    }

    /// Like [`RoutingTable::build`], keeping the last good version of any policy that is now
    /// invalid from `previous`, so a bad edit never takes its pages away. Still pure.
    pub fn build_from(
        index: &Index,
        config: &BuildConfig,
        generation: u64,
        previous: Option<&RoutingTable>,
    ) -> Self {
        let mut b = Builder {
            index,
            slices: backend::slices_by_service(index),
            table: Self::default(),
            backends: HashMap::new(),
            reported: BTreeSet::new(),
            policies: PolicySet::default(),
        };
        b.table.generation = generation;
        b.table.ready = true;

        let class = ClassFilter::new(index, config, &mut b.table.diagnostics);
        let mut ours: Vec<&Ingress> = index.ingresses.values().filter(|ing| class.accepts(ing)).collect();
        ours.sort_by_key(|ing| age_key(ing));
        b.table.ingresses = ours.len();
        b.table.ingress_keys = ours.iter().map(|ing| ObjectKey::of(&ing.metadata)).collect();

        b.resolve_policies(config, previous, &ours);
        b.table.fallback_policies = b.policies.fallback();
        for (slot, ing) in ours.iter().enumerate() {
            b.add_ingress(ing, slot);
        }
        if b.table.catch_all.is_none()
            && let Some(default) = &config.default_backend
        {
            let backend = b.backend(&default.service.namespace, &default.service.name, default.port.clone());
            if let Target::Unresolved(reason) = &backend.target {
                b.table.diagnostics.push(Diagnostic {
                    kind: "Flag",
                    key: ObjectKey::new("", "--default-backend"),
                    message: format!("{reason}; unmatched requests get 503"),
                });
            }
            let policies = b.table.fallback_policies.clone();
            b.table.catch_all = Some(Arc::new(Route {
                ingress: None,
                path: "/".into(),
                kind: PathKind::Prefix,
                backend,
                policies,
                ingress_slot: None,
            }));
        }
        for ing in &ours {
            b.add_tls(ing);
        }
        b.finish_policies();
        for ((service, _), backend) in &b.backends {
            let ready = !matches!(backend.target, Target::Endpoints(ref a) if a.is_empty())
                && !matches!(backend.target, Target::Unresolved(_));
            *b.table.service_ready.entry(service.clone()).or_default() |= ready;
        }
        b.table
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

/// Which Ingresses are ours.
struct ClassFilter<'a> {
    name: &'a str,
    /// Our IngressClass exists and belongs to another controller: Ingresses naming it are not ours.
    foreign: bool,
    /// Our IngressClass is the cluster default: class-less Ingresses are ours.
    default: bool,
}

impl<'a> ClassFilter<'a> {
    fn new(index: &Index, config: &'a BuildConfig, diagnostics: &mut Vec<Diagnostic>) -> Self {
        let class = index.ingress_classes.get(&ObjectKey::new("", config.ingress_class.clone()));
        let controller = class.and_then(|c| c.spec.as_ref()).and_then(|s| s.controller.as_deref());
        let foreign = class.is_some() && controller != Some(config.controller_name.as_str());
        if foreign {
            diagnostics.push(Diagnostic {
                kind: "IngressClass",
                key: ObjectKey::new("", config.ingress_class.clone()),
                message: format!(
                    "controller is {:?}, not {:?}; its Ingresses are not served",
                    controller.unwrap_or(""),
                    config.controller_name
                ),
            });
        }
        let default = !foreign
            && class
                .and_then(|c| c.metadata.annotations.as_ref())
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true");
        Self { name: &config.ingress_class, foreign, default }
    }

    fn accepts(&self, ing: &Ingress) -> bool {
        if self.foreign {
            return false;
        }
        let named = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).or_else(|| {
            ing.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)).map(String::as_str)
        });
        match named {
            Some(name) => name == self.name,
            None => self.default,
        }
    }
}

struct Builder<'a> {
    index: &'a Index,
    slices: HashMap<ObjectKey, Vec<&'a k8s_openapi::api::discovery::v1::EndpointSlice>>,
    table: RoutingTable,
    /// One Backend per Service port, shared by its routes so round robin spans all of them.
    backends: HashMap<(ObjectKey, PortRef), Arc<Backend>>,
    /// (ingress, problem) pairs already reported, so one bad Service is one diagnostic.
    reported: BTreeSet<(String, String)>,
    policies: PolicySet,
}

/// Policies in effect during a build, and what is known about each.
#[derive(Default)]
struct PolicySet {
    /// In effect, by namespace, with their age for tie-breaks.
    by_namespace: HashMap<String, Vec<(Arc<ResolvedPolicy>, PolicyAge)>>,
    default: Option<Arc<ResolvedPolicy>>,
    reports: Vec<PolicyReport>,
    /// Per Ingress, its ordered policies (shared by all its routes).
    per_ingress: HashMap<ObjectKey, Policies>,
    /// Per Ingress, the exact hosts of its rules (for page prefetch).
    hosts: HashMap<ObjectKey, BTreeSet<String>>,
}

/// Tie-break among policies of equal specificity: older first (untimestamped last), then name.
type PolicyAge = (bool, Option<Time>, ObjectKey);

impl PolicySet {
    fn fallback(&self) -> Policies {
        self.default.iter().cloned().collect::<Vec<_>>().into()
    }
}

impl Builder<'_> {
    fn report(&mut self, kind: &'static str, key: &ObjectKey, message: String) {
        if self.reported.insert((format!("{kind} {key}"), message.clone())) {
            self.table.diagnostics.push(Diagnostic { kind, key: key.clone(), message });
        }
    }

    fn backend(&mut self, namespace: &str, service: &str, port: PortRef) -> Arc<Backend> {
        let key = (ObjectKey::new(namespace, service), port);
        if let Some(b) = self.backends.get(&key) {
            return b.clone();
        }
        let b = Arc::new(backend::resolve(self.index, &self.slices, key.0.clone(), key.1.clone()));
        self.backends.insert(key, b.clone());
        b
    }

    /// Resolves an Ingress backend, reporting problems against the Ingress.
    fn ingress_backend(&mut self, ing_key: &ObjectKey, backend: &IngressBackend) -> Option<Arc<Backend>> {
        let Some(svc) = backend.service.as_ref() else {
            self.report("Ingress", ing_key, "resource backends are not supported; rule skipped".into());
            return None;
        };
        let port = match svc.port.as_ref() {
            Some(p) => match (p.number, p.name.as_ref()) {
                (Some(n), _) => PortRef::Number(n),
                (None, Some(name)) => PortRef::Name(name.clone()),
                (None, None) => {
                    self.report(
                        "Ingress",
                        ing_key,
                        format!("backend service {} names no port; rule skipped", svc.name),
                    );
                    return None;
                }
            },
            None => {
                self.report(
                    "Ingress",
                    ing_key,
                    format!("backend service {} names no port; rule skipped", svc.name),
                );
                return None;
            }
        };
        let b = self.backend(&ing_key.namespace, &svc.name, port);
        if let Target::Unresolved(reason) = &b.target {
            self.report("Ingress", ing_key, format!("{reason}; its routes answer 503"));
        }
        Some(b)
    }

    fn add_ingress(&mut self, ing: &Ingress, slot: usize) {
        let key = ObjectKey::of(&ing.metadata);
        let Some(spec) = ing.spec.as_ref() else { return };
        let policies =
            self.policies.per_ingress.get(&key).cloned().unwrap_or_else(|| self.policies.fallback());

        let default = match spec.default_backend.as_ref() {
            Some(b) => self.ingress_backend(&key, b).map(|backend| {
                Arc::new(Route {
                    ingress: Some(key.clone()),
                    path: "/".into(),
                    kind: PathKind::Prefix,
                    backend,
                    policies: policies.clone(),
                    ingress_slot: Some(slot),
                })
            }),
            None => None,
        };

        let mut hosts_named = Vec::new();
        for rule in spec.rules.iter().flatten() {
            let host = rule.host.as_deref().unwrap_or("");
            let target = match classify_host(host) {
                Ok(h) => h,
                Err(msg) => {
                    self.report("Ingress", &key, msg);
                    continue;
                }
            };
            hosts_named.push(target.clone());
            if let HostTarget::Exact(h) = &target {
                self.policies.hosts.entry(key.clone()).or_default().insert(h.clone());
            }
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let path = p.path.clone().unwrap_or_else(|| "/".to_string());
                let Some(kind) = PathKind::parse(&p.path_type) else {
                    self.report(
                        "Ingress",
                        &key,
                        format!("path {path:?}: unknown pathType {:?}; skipped", p.path_type),
                    );
                    continue;
                };
                if !path.starts_with('/') {
                    self.report("Ingress", &key, format!("path {path:?} does not start with '/'; skipped"));
                    continue;
                }
                let Some(backend) = self.ingress_backend(&key, &p.backend) else { continue };
                let route = Arc::new(Route {
                    ingress: Some(key.clone()),
                    path: path.clone(),
                    kind,
                    backend,
                    policies: policies.clone(),
                    ingress_slot: Some(slot),
                });
                let routes = self.host_routes(&target, &policies);
                let (map, map_key) = match kind {
                    PathKind::Exact => (&mut routes.exact, path.clone()),
                    PathKind::Prefix => (&mut routes.prefix, route::prefix_key(&path).to_string()),
                };
                if let Some(winner) = map.get(&map_key) {
                    // Ingresses are visited oldest first, so the incumbent wins.
                    let winner = winner.ingress.as_ref().map(ToString::to_string).unwrap_or_default();
                    let msg = format!(
                        "{kind:?} path {path:?} on host {:?} is already served by Ingress {winner}; ignored",
                        host_label(&target)
                    );
                    self.report("Ingress", &key, msg);
                    continue;
                }
                map.insert(map_key, route);
            }
        }

        if let Some(default) = default {
            for target in &hosts_named {
                if !matches!(target, HostTarget::None) {
                    let routes = self.host_routes(target, &policies);
                    routes.default.get_or_insert_with(|| default.clone());
                }
            }
            match &self.table.catch_all {
                None => self.table.catch_all = Some(default),
                Some(winner) if hosts_named.is_empty() => {
                    let winner = winner.ingress.as_ref().map(ToString::to_string).unwrap_or_default();
                    self.report(
                        "Ingress",
                        &key,
                        format!("defaultBackend ignored: Ingress {winner} already provides the catch-all"),
                    );
                }
                Some(_) => {}
            }
        }
    }

    /// The routes of a host, created with the policies of the first (oldest) Ingress naming it;
    /// those apply to requests for the host that match none of its paths.
    fn host_routes(&mut self, target: &HostTarget, policies: &Policies) -> &mut HostRoutes {
        let fresh = || HostRoutes { policies: policies.clone(), ..HostRoutes::default() };
        match target {
            HostTarget::Exact(h) => self.table.hosts.entry(h.clone()).or_insert_with(fresh),
            HostTarget::Wildcard(s) => self.table.wildcards.entry(s.clone()).or_insert_with(fresh),
            HostTarget::None => &mut self.table.hostless,
        }
    }

    /// Resolves every policy (keeping the last good version of invalid ones from `previous`),
    /// then orders, per Ingress of ours, the policies that apply to it.
    fn resolve_policies(&mut self, config: &BuildConfig, previous: Option<&RoutingTable>, ours: &[&Ingress]) {
        for (key, policy) in &self.index.policies {
            let mut report = PolicyReport {
                key: key.clone(),
                generation: policy.metadata.generation,
                ..PolicyReport::default()
            };
            match policy::resolve(self.index, policy) {
                Ok(resolved) => report.in_effect = Some(Arc::new(resolved)),
                Err(problems) => {
                    // The last good version is kept only for the same object (same uid): a policy
                    // deleted and recreated under the name starts over.
                    report.in_effect = previous
                        .and_then(|t| t.policy(key))
                        .filter(|good| policy.metadata.uid.as_ref().is_none_or(|uid| &good.uid == uid))
                        .cloned();
                    let fallback =
                        if report.in_effect.is_some() { "; the last good version keeps serving" } else { "" };
                    for problem in problems.invalid.iter().chain(&problems.refs) {
                        self.table.diagnostics.push(Diagnostic {
                            kind: "ErrorPagePolicy",
                            key: key.clone(),
                            message: format!("{problem}{fallback}"),
                        });
                    }
                    report.problems = problems;
                }
            }
            if let Some(p) = &report.in_effect {
                if config.default_policy.as_ref() == Some(key) {
                    self.policies.default = Some(p.clone());
                } else {
                    let age = policy_age(policy);
                    self.policies
                        .by_namespace
                        .entry(key.namespace.clone())
                        .or_default()
                        .push((p.clone(), age));
                }
            }
            self.policies.reports.push(report);
        }
        if let Some(key) = &config.default_policy
            && self.policies.default.is_none()
        {
            self.table.diagnostics.push(Diagnostic {
                kind: "Flag",
                key: ObjectKey::new("", "--default-policy"),
                message: format!("ErrorPagePolicy {key} not found or not valid; no default policy applies"),
            });
        }

        for ing in ours {
            let ing_key = ObjectKey::of(&ing.metadata);
            type Candidate<'a> = ((u8, usize, u8), &'a PolicyAge, &'a Arc<ResolvedPolicy>);
            let mut candidates: Vec<Candidate> = self
                .policies
                .by_namespace
                .get(&ing_key.namespace)
                .into_iter()
                .flatten()
                .filter_map(|(p, age)| {
                    let level = if p.targets.is_empty() {
                        1
                    } else if p.targets.contains(&ing_key.name) {
                        2
                    } else {
                        return None;
                    };
                    Some((p.specificity(level), age, p))
                })
                .collect();
            // Highest specificity first; then the older policy, then the smaller name.
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let mut ordered: Vec<Arc<ResolvedPolicy>> =
                candidates.into_iter().map(|(_, _, p)| p.clone()).collect();
            ordered.extend(self.policies.default.iter().cloned());
            self.policies.per_ingress.insert(ing_key, ordered.into());
        }
    }

    /// Fills in attachment and conflicts and stores the reports in the table.
    fn finish_policies(&mut self) {
        let mut attached: HashMap<ObjectKey, Vec<ObjectKey>> = HashMap::new();
        let mut conflicts: HashMap<ObjectKey, BTreeSet<String>> = HashMap::new();
        let mut ingresses: Vec<(&ObjectKey, &Policies)> = self.policies.per_ingress.iter().collect();
        ingresses.sort_by_key(|(k, _)| *k);
        for (ing, list) in ingresses {
            for (i, p) in list.iter().enumerate() {
                attached.entry(p.key.clone()).or_default().push(ing.clone());
                for winner in &list[..i] {
                    let shared: Vec<&str> =
                        p.code_keys().filter(|c| winner.code_keys().any(|w| w == *c)).collect();
                    if !shared.is_empty() {
                        conflicts.entry(p.key.clone()).or_default().insert(format!(
                            "codes {} on Ingress {ing}: policy {} takes precedence where both match",
                            shared.join(","),
                            winner.key
                        ));
                    }
                }
            }
        }
        for report in &mut self.policies.reports {
            let Some(p) = report.in_effect.as_ref() else { continue };
            report.attached = attached.remove(&report.key).unwrap_or_default();
            report.conflicts =
                conflicts.remove(&report.key).map(|c| c.into_iter().collect()).unwrap_or_default();
            report.missing_targets = p
                .targets
                .iter()
                .filter(|t| !report.attached.iter().any(|a| &a.name == *t))
                .cloned()
                .collect();
        }
        self.table.policy_reports = std::mem::take(&mut self.policies.reports);

        let mut prefetch = BTreeSet::new();
        for (ing, list) in &self.policies.per_ingress {
            for host in self.policies.hosts.get(ing).into_iter().flatten() {
                for p in list.iter() {
                    for path in p.rules.iter().filter_map(|r| r.page.as_ref()).flat_map(|pg| pg.paths()) {
                        prefetch.insert((host.clone(), path.to_string()));
                    }
                }
            }
        }
        self.table.page_prefetch = prefetch.into_iter().collect();
    }

    fn add_tls(&mut self, ing: &Ingress) {
        let key = ObjectKey::of(&ing.metadata);
        for entry in ing.spec.as_ref().and_then(|s| s.tls.as_ref()).into_iter().flatten() {
            let Some(secret_name) = entry.secret_name.as_deref() else {
                self.report("Ingress", &key, "tls entry without secretName; skipped".into());
                continue;
            };
            let secret_key = ObjectKey::new(key.namespace.clone(), secret_name);
            let Some(secret) = self.index.secrets.get(&secret_key) else {
                self.report("Ingress", &key, format!("TLS secret {secret_key} not found"));
                continue;
            };
            let cert = match tls::load_secret(secret) {
                Ok(c) => c,
                Err(e) => {
                    self.report("Secret", &secret_key, format!("{e}; not served"));
                    continue;
                }
            };
            let hosts = entry.hosts.as_deref().unwrap_or_default();
            if hosts.is_empty() {
                self.table.tls.default.get_or_insert(cert.clone());
            }
            for host in hosts {
                let map = match classify_host(host) {
                    Ok(HostTarget::Exact(h)) => self.table.tls.exact.entry(h),
                    Ok(HostTarget::Wildcard(s)) => self.table.tls.wildcard.entry(s),
                    Ok(HostTarget::None) | Err(_) => {
                        self.report(
                            "Ingress",
                            &key,
                            format!("tls host {host:?} is not a valid host; skipped"),
                        );
                        continue;
                    }
                };
                if let std::collections::hash_map::Entry::Vacant(v) = map {
                    v.insert(cert.clone());
                }
            }
        }
    }
}

/// Where a rule's host puts its paths.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostTarget {
    Exact(String),
    /// The suffix after `*.`
    Wildcard(String),
    /// No host: the rule applies to requests for any host no other rule names.
    None,
}

fn host_label(t: &HostTarget) -> String {
    match t {
        HostTarget::Exact(h) => h.clone(),
        HostTarget::Wildcard(s) => format!("*.{s}"),
        HostTarget::None => String::new(),
    }
}

/// Validates an Ingress rule host (RFC 1123 name, optionally `*.` + name, no IP, no port).
fn classify_host(host: &str) -> Result<HostTarget, String> {
    if host.is_empty() {
        return Ok(HostTarget::None);
    }
    let host = host.to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        && name.parse::<std::net::IpAddr>().is_err();
    if !valid {
        return Err(format!(
            "host {host:?} is not a valid DNS name (a leading \"*.\" is allowed); rule skipped"
        ));
    }
    Ok(if wildcard { HostTarget::Wildcard(name.to_string()) } else { HostTarget::Exact(name.to_string()) })
}

// === TableWriter / TableReader ===

/// Creates the publish/read pair around one [`ArcSwap`]. The table starts as
/// [`RoutingTable::not_ready`].
pub fn channel() -> (TableWriter, TableReader) {
    let shared = Arc::new(ArcSwap::from_pointee(RoutingTable::not_ready()));
    (TableWriter(shared.clone()), TableReader(shared))
}

/// The single publisher of routing tables.
#[derive(Debug)]
pub struct TableWriter(Arc<ArcSwap<RoutingTable>>);

impl TableWriter {
    /// Swaps the whole snapshot in; requests already running keep the one they loaded.
    pub fn publish(&self, table: RoutingTable) {
        self.0.store(Arc::new(table));
    }

    /// A reader of the same table.
    pub fn reader(&self) -> TableReader {
        TableReader(self.0.clone())
    }
}

/// A lock-free reader of the current routing table.
#[derive(Clone, Debug)]
pub struct TableReader(Arc<ArcSwap<RoutingTable>>);

impl TableReader {
    /// The current snapshot. One atomic load and a reference count; never blocks.
    pub fn load(&self) -> Arc<RoutingTable> {
        self.0.load_full()
    }
}

#[cfg(test)]
mod tests;
