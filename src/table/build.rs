//! The pure build: Index + [`BuildConfig`] -> [`RoutingTable`].
//!
//! Data flow: a source's publisher ([`source::publish`](crate::source::publish)) calls
//! [`RoutingTable::build_from`] with the Index snapshot and the table it last published; the
//! result is swapped in whole. This is erratum's one implementation of the Ingress v1
//! semantics (which Ingresses are ours, hosts, paths, conflicts, default backends, TLS) and of
//! which ErrorPagePolicies apply where. No I/O, no clock: every problem becomes a
//! [`Diagnostic`], never an error.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::annotations::{self, Edge, IngressUpstream, Upstream};
use super::{Backend, HostRoutes, IngressEdgeView, PathKind, PortRef, Target};
use super::{
    BuildConfig, DEFAULT_CLASS_ANNOTATION, Diagnostic, LEGACY_CLASS_ANNOTATION, Policies, PolicyReport,
    ResolvedPolicy, Route, RoutingTable, backend, policy, route, tls,
};
use crate::crd::ErrorPagePolicy;
use crate::index::{Index, Kind, ObjectKey};

mod backends;
mod routing;
use routing::regex_hosts;

impl RoutingTable {
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
            previous,
            regex_hosts: Default::default(),
            regex_pending: Default::default(),
            www_pending: Vec::new(),
            canary_pending: Vec::new(),
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
        let tls_hosts: Vec<Vec<HostTarget>> = ours.iter().map(|ing| b.add_tls(ing)).collect();
        let annotated: Vec<annotations::IngressEdge> =
            ours.iter().map(|ing| b.read_annotations(ing)).collect();
        b.regex_hosts = regex_hosts(&ours, &annotated);
        for (slot, ((ing, tls_hosts), annotated)) in ours.iter().zip(&tls_hosts).zip(&annotated).enumerate() {
            b.add_ingress(ing, slot, config, tls_hosts, annotated);
        }
        b.finish_canaries();
        b.finish_regex();
        b.finish_www();
        if b.table.catch_all.is_none()
            && let Some(default) = &config.default_backend
        {
            let backend = b.backend(&default.service.namespace, &default.service.name, default.port.clone());
            if let Target::Unresolved(reason) = &backend.target {
                b.table.diagnostics.push(Diagnostic {
                    kind: None,
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
                maintenance: super::maintenance_of(&policies),
                stale: super::stale_of(&policies),
                policies,
                ingress_slot: None,
                edge: Edge::defaults(&config.edge),
                upstream: Upstream::resolve(&IngressUpstream::default(), &config.edge),
                protocol: None,
                access: None,
                rewrite: None,
                limits: None,
                response_headers: None,
                canary: None,
                affinity: None,
                auth: None,
            }));
        }
        b.finish_policies();
        for ((service, _, _), backend) in &b.backends {
            let ready = !matches!(backend.target, Target::Endpoints(ref a) if a.is_empty())
                && !matches!(backend.target, Target::Unresolved(_));
            *b.table.service_ready.entry(service.clone()).or_default() |= ready;
        }
        b.table
    }
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
                kind: Some(Kind::IngressClass),
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
        Self { name: &config.ingress_class, foreign, default: default || (!foreign && config.without_class) }
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
    /// The table this build replaces (for the state it carries over).
    previous: Option<&'a RoutingTable>,
    /// Hosts whose paths are all regexes (`use-regex`, `rewrite-target`).
    regex_hosts: HashMap<HostTarget, Vec<ObjectKey>>,
    /// Their routes, compiled once every Ingress is added.
    regex_pending: HashMap<HostTarget, Vec<Arc<Route>>>,
    /// `from-to-www-redirect`: the other form of a host, and a route of the Ingress.
    www_pending: Vec<(String, Arc<Route>)>,
    /// Canary paths (host, path, kind, canary, canary Ingress), attached once every main
    /// route is in.
    canary_pending: Vec<(HostTarget, String, PathKind, Arc<annotations::Canary>, ObjectKey)>,
    index: &'a Index,
    slices: HashMap<ObjectKey, Vec<&'a k8s_openapi::api::discovery::v1::EndpointSlice>>,
    table: RoutingTable,
    /// One Backend per Service port, shared by its routes so round robin spans all of them.
    backends: HashMap<(ObjectKey, PortRef, bool), Arc<Backend>>,
    /// (ingress, problem) pairs already reported, so one bad Service is one diagnostic.
    reported: BTreeSet<(Kind, ObjectKey, String)>,
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
    /// Reports a problem of an Ingress once (one bad Service is one diagnostic per Ingress).
    fn report(&mut self, key: &ObjectKey, message: String) {
        self.report_kind(Kind::Ingress, key, message);
    }

    /// Reports a problem of an object once.
    fn report_kind(&mut self, kind: Kind, key: &ObjectKey, message: String) {
        if self.reported.insert((kind, key.clone(), message.clone())) {
            self.table.diagnostics.push(Diagnostic { kind: Some(kind), key: key.clone(), message });
        }
    }

    /// Reads an Ingress's annotations, reporting what they get wrong or erratum ignores.
    fn read_annotations(&mut self, ing: &Ingress) -> annotations::IngressEdge {
        let key = ObjectKey::of(&ing.metadata);
        let mut problems = Vec::new();
        let annotated = annotations::read(ing.metadata.annotations.as_ref(), |m| problems.push(m));
        for problem in problems {
            self.report(&key, problem);
        }
        annotated
    }

    fn add_ingress(
        &mut self,
        ing: &Ingress,
        slot: usize,
        config: &BuildConfig,
        tls_hosts: &[HostTarget],
        annotated: &annotations::IngressEdge,
    ) {
        let defaults = &config.edge;
        let key = ObjectKey::of(&ing.metadata);
        let Some(spec) = ing.spec.as_ref() else { return };
        if annotated.canary.enabled {
            return self.add_canary(&key, ing, &annotated.canary);
        }
        let limits = self.limits(&key, &annotated.limits);
        let response_headers = self.response_headers(&key, &annotated.cors);
        let auth = self.auth(&key, &annotated.auth);
        let policies =
            self.policies.per_ingress.get(&key).cloned().unwrap_or_else(|| self.policies.fallback());
        let policies = self.with_error_backend(&key, annotated, config, policies);
        for name in &annotated.unsupported {
            *self.table.unsupported_annotations.entry(name.clone()).or_default() += 1;
        }
        let upstream = Upstream::resolve(&annotated.upstream, defaults);
        let access = annotations::SourceRanges::of(annotated).map(Arc::new);
        let mut view = IngressEdgeView {
            key: key.clone(),
            max_body_bytes: Edge::resolve(annotated, defaults, false).max_body_bytes,
            https_redirect: Vec::new(),
            upstream,
            protocols: Vec::new(),
            routing: annotated.routing.clone(),
            auth: auth.clone(),
        };

        let default = match spec.default_backend.as_ref() {
            Some(b) => self.ingress_backend(&key, b, annotated.routing.service_upstream).map(|backend| {
                let protocol = self.protocol(&key, &annotated.protocol, &backend, &mut view);
                let rewrite = self.rewrite(&key, &annotated.routing, "/");
                Arc::new(Route {
                    ingress: Some(key.clone()),
                    path: "/".into(),
                    kind: PathKind::Prefix,
                    backend,
                    policies: policies.clone(),
                    maintenance: super::maintenance_of(&policies),
                    stale: super::stale_of(&policies),
                    ingress_slot: Some(slot),
                    // Serves many hosts: only a forced redirect applies.
                    edge: Edge::resolve(annotated, defaults, false),
                    upstream,
                    protocol,
                    access: access.clone(),
                    rewrite: rewrite.ok().flatten(),
                    limits: limits.clone(),
                    response_headers: response_headers.clone(),
                    canary: None,
                    affinity: annotated.affinity.resolve("/").map(Arc::new),
                    auth: auth.clone(),
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
                    self.report(&key, msg);
                    continue;
                }
            };
            hosts_named.push(target.clone());
            let edge = Edge::resolve(annotated, defaults, tls_covers(tls_hosts, &target));
            if edge.https_redirect {
                view.https_redirect.push(host_label(&target).to_string());
            }
            if let HostTarget::Exact(h) = &target {
                self.policies.hosts.entry(key.clone()).or_default().insert(h.clone());
            }
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let path = p.path.clone().unwrap_or_else(|| "/".to_string());
                let Some(kind) = PathKind::parse(&p.path_type) else {
                    self.report(&key, format!("path {path:?}: unknown pathType {:?}; skipped", p.path_type));
                    continue;
                };
                if !path.starts_with('/') {
                    self.report(&key, format!("path {path:?} does not start with '/'; skipped"));
                    continue;
                }
                let Some(backend) =
                    self.ingress_backend(&key, &p.backend, annotated.routing.service_upstream)
                else {
                    continue;
                };
                let Ok(rewrite) = self.rewrite(&key, &annotated.routing, &path) else { continue };
                let protocol = self.protocol(&key, &annotated.protocol, &backend, &mut view);
                let route = Arc::new(Route {
                    ingress: Some(key.clone()),
                    path: path.clone(),
                    kind,
                    backend,
                    policies: policies.clone(),
                    maintenance: super::maintenance_of(&policies),
                    stale: super::stale_of(&policies),
                    ingress_slot: Some(slot),
                    edge,
                    upstream,
                    protocol,
                    access: access.clone(),
                    rewrite,
                    limits: limits.clone(),
                    response_headers: response_headers.clone(),
                    canary: None,
                    affinity: annotated.affinity.resolve(&path).map(Arc::new),
                    auth: auth.clone(),
                });
                if annotated.routing.from_to_www
                    && let HostTarget::Exact(h) = &target
                {
                    self.www_pending.push((annotations::routing::www_alias(h), route.clone()));
                }
                if self.regex_hosts.contains_key(&target) {
                    // Every path of the host is a regex, whichever Ingress wrote it.
                    self.host_routes(&target, &policies);
                    self.regex_pending.entry(target.clone()).or_default().push(route);
                    continue;
                }
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
                    self.report(&key, msg);
                    continue;
                }
                map.insert(map_key, route);
            }
        }

        self.table.edges.push(view);

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
            let index = self.index;
            let mut backends =
                |service: &ObjectKey, port| self.backend(&service.namespace, &service.name, port);
            match policy::resolve(index, policy, &mut backends) {
                Ok(resolved) => report.in_effect = Some(Arc::new(resolved)),
                Err(problems) => {
                    // The last good version is kept only for the same object (same uid): a policy
                    // deleted and recreated under the name starts over.
                    report.in_effect = previous
                        .and_then(|t| t.policy(key))
                        .filter(|good| policy.metadata.uid.as_ref().is_none_or(|uid| &good.uid == uid))
                        .map(|good| Arc::new(policy::rebind(good, &mut backends)));
                    let fallback =
                        if report.in_effect.is_some() { "; the last good version keeps serving" } else { "" };
                    for problem in problems.invalid.iter().chain(&problems.refs) {
                        self.table.diagnostics.push(Diagnostic {
                            kind: Some(Kind::ErrorPagePolicy),
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
                kind: None,
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

    /// Adds an Ingress's certificates; returns the hosts it has a certificate for (what
    /// `ssl-redirect` redirects: a TLS entry whose Secret is broken redirects nobody).
    fn add_tls(&mut self, ing: &Ingress) -> Vec<HostTarget> {
        let key = ObjectKey::of(&ing.metadata);
        let mut served = Vec::new();
        for entry in ing.spec.as_ref().and_then(|s| s.tls.as_ref()).into_iter().flatten() {
            let Some(secret_name) = entry.secret_name.as_deref() else {
                self.report(&key, "tls entry without secretName; skipped".into());
                continue;
            };
            let secret_key = ObjectKey::new(key.namespace.clone(), secret_name);
            let Some(secret) = self.index.secrets.get(&secret_key) else {
                self.report(&key, format!("TLS secret {secret_key} not found"));
                continue;
            };
            let cert = match tls::load_secret(secret) {
                Ok(c) => c,
                Err(e) => {
                    self.report_kind(Kind::Secret, &secret_key, format!("{e}; not served"));
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
                        self.report(&key, format!("tls host {host:?} is not a valid host; skipped"));
                        continue;
                    }
                };
                if let std::collections::hash_map::Entry::Vacant(v) = map {
                    v.insert(cert.clone());
                }
                served.extend(classify_host(host).ok());
            }
        }
        served
    }
}

/// Where a rule's host puts its paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum HostTarget {
    Exact(String),
    /// The suffix after `*.`
    Wildcard(String),
    /// No host: the rule applies to requests for any host no other rule names.
    None,
}

/// Whether an Ingress's TLS entries name a rule's host (exactly, or by a wildcard entry one
/// label up). A host-less rule has no TLS entry.
fn tls_covers(tls_hosts: &[HostTarget], target: &HostTarget) -> bool {
    match target {
        HostTarget::None => false,
        HostTarget::Exact(h) => tls_hosts.iter().any(|t| match t {
            HostTarget::Exact(e) => e == h,
            HostTarget::Wildcard(suffix) => route::wildcard_suffix(h) == Some(suffix.as_str()),
            HostTarget::None => false,
        }),
        wildcard @ HostTarget::Wildcard(_) => tls_hosts.contains(wildcard),
    }
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
    let valid = route::is_dns_name(name) && name.parse::<std::net::IpAddr>().is_err();
    if !valid {
        return Err(format!(
            "host {host:?} is not a valid DNS name (a leading \"*.\" is allowed); rule skipped"
        ));
    }
    Ok(if wildcard { HostTarget::Wildcard(name.to_string()) } else { HostTarget::Exact(name.to_string()) })
}
