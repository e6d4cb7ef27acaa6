//! The build's part of ingress-nginx's routing annotations: which hosts are regex hosts,
//! their compiled path sets, `from-to-www-redirect` hosts, the routes' rewrites and the
//! per-Ingress rate-limit state. Pure, like the rest of the build.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;

use super::{Builder, HostTarget, classify_host, host_label};
use crate::index::ObjectKey;
use crate::table::annotations::{Canary, IngressCanary};
use crate::table::{PathKind, Route, RoutingTable, route};

/// A route like `r` (the fields a derived route changes are set by the caller).
fn copy_of(r: &Route) -> Route {
    Route {
        ingress: r.ingress.clone(),
        path: r.path.clone(),
        kind: r.kind,
        backend: r.backend.clone(),
        policies: r.policies.clone(),
        ingress_slot: r.ingress_slot,
        edge: r.edge,
        upstream: r.upstream,
        protocol: r.protocol.clone(),
        access: r.access.clone(),
        rewrite: r.rewrite.clone(),
        limits: r.limits.clone(),
        response_headers: r.response_headers.clone(),
        canary: r.canary.clone(),
        affinity: r.affinity.clone(),
        auth: r.auth.clone(),
        maintenance: r.maintenance.clone(),
        stale: r.stale.clone(),
    }
}
use crate::table::annotations::routing::{IngressRouting, RegexPaths, Rewrite};
use crate::table::annotations::{
    Auth, IngressAuth, IngressCors, IngressEdge, IngressLimits, RateLimits, ResponseHeaders,
};
use crate::table::route::{HostRoutes, RegexHost};

/// The hosts whose every path is a regex, with the Ingresses that make them so: ingress-nginx
/// turns all paths of a host into `~*` locations when any Ingress on it sets `use-regex` or
/// rewrites a path.
pub(super) fn regex_hosts(
    ours: &[&Ingress],
    annotated: &[IngressEdge],
) -> HashMap<HostTarget, Vec<ObjectKey>> {
    let mut hosts: HashMap<HostTarget, Vec<ObjectKey>> = HashMap::new();
    for (ing, edge) in ours.iter().zip(annotated) {
        let rules = ing.spec.as_ref().and_then(|s| s.rules.as_ref());
        let paths = rules
            .into_iter()
            .flatten()
            .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
            .map(|p| p.path.as_deref().unwrap_or("/"));
        if !edge.routing.enforces_regex(paths) {
            continue;
        }
        for rule in rules.into_iter().flatten() {
            if let Ok(target) = classify_host(rule.host.as_deref().unwrap_or("")) {
                hosts.entry(target).or_default().push(ObjectKey::of(&ing.metadata));
            }
        }
    }
    hosts
}

impl Builder<'_> {
    /// The rewrite of an Ingress's route for `path`; `Err` (reported) when the path cannot be
    /// rewritten as asked, and the path is left out.
    pub(super) fn rewrite(
        &mut self,
        key: &ObjectKey,
        routing: &IngressRouting,
        path: &str,
    ) -> Result<Option<Arc<Rewrite>>, ()> {
        match routing.resolve(path) {
            Ok(r) => Ok(r.map(Arc::new)),
            Err(why) => {
                self.report(key, format!("{why}; skipped"));
                Err(())
            }
        }
    }

    /// The rate-limit state of an Ingress: the previous table's while the settings are the
    /// same, so a table swap resets no client's budget.
    pub(super) fn limits(&mut self, key: &ObjectKey, settings: &IngressLimits) -> Option<Arc<RateLimits>> {
        if !settings.any() {
            return None;
        }
        let carried = self
            .previous
            .and_then(|p| p.limits.iter().find(|(k, l)| k == key && l.settings == *settings))
            .map(|(_, l)| l.clone());
        let limits = carried.or_else(|| RateLimits::new(settings).map(Arc::new))?;
        self.table.limits.push((key.clone(), limits.clone()));
        Some(limits)
    }

    /// The authentication of an Ingress's routes, with its Secret (`auth-secret`).
    pub(super) fn auth(&mut self, key: &ObjectKey, auth: &IngressAuth) -> Option<Arc<Auth>> {
        let secret = auth
            .secret_ref(&key.namespace)
            .and_then(|(ns, name)| self.index.secrets.get(&ObjectKey::new(ns, name)));
        let mut problems = Vec::new();
        let resolved = auth.resolve(secret, &mut |m| problems.push(m));
        for p in problems {
            self.report(key, p);
        }
        resolved.map(Arc::new)
    }

    /// CORS and `custom-headers` of an Ingress (the ConfigMap `namespace/name`, or `name` in
    /// the Ingress's namespace, as ingress-nginx reads it).
    pub(super) fn response_headers(
        &mut self,
        key: &ObjectKey,
        cors: &IngressCors,
    ) -> Option<Arc<ResponseHeaders>> {
        let custom = match cors.custom_headers.as_deref() {
            None => None,
            Some(reference) => {
                let cm_key = match reference.split_once('/') {
                    Some((ns, name)) => ObjectKey::new(ns, name),
                    None => ObjectKey::new(key.namespace.clone(), reference),
                };
                match self.index.config_maps.get(&cm_key) {
                    Some(cm) => Some(cm.data.clone().unwrap_or_default()),
                    None => {
                        self.report(
                            key,
                            format!(
                                "annotation custom-headers: ConfigMap {cm_key} not found; no header added"
                            ),
                        );
                        None
                    }
                }
            }
        };
        let mut problems = Vec::new();
        let resolved = ResponseHeaders::resolve(cors, custom.as_ref(), &mut |m| problems.push(m));
        for p in problems {
            self.report(key, p);
        }
        resolved.map(Arc::new)
    }

    /// Compiles each regex host's paths into one set, leaving out (and reporting) a path that
    /// is not a regex erratum reads; tells the Ingresses whose plain paths became regexes.
    pub(super) fn finish_regex(&mut self) {
        let pending = std::mem::take(&mut self.regex_pending);
        for (target, mut routes) in pending {
            let owners = self.regex_hosts.get(&target).cloned().unwrap_or_default();
            let mut seen = std::collections::HashSet::new();
            routes.retain(|r| {
                let first = seen.insert(r.path.clone());
                if !first && let Some(key) = &r.ingress {
                    let message = format!(
                        "path {:?} on host {:?} is already served by an older Ingress; ignored",
                        r.path,
                        host_label(&target)
                    );
                    self.table.diagnostics.push(crate::table::Diagnostic {
                        kind: Some(crate::index::Kind::Ingress),
                        key: key.clone(),
                        message,
                    });
                }
                first
            });
            for r in &routes {
                if let Some(key) = r.ingress.as_ref().filter(|k| !owners.contains(k)) {
                    let by: Vec<String> = owners.iter().map(ToString::to_string).collect();
                    self.report(
                        key,
                        format!(
                            "host {:?}: use-regex or rewrite-target on Ingress {} makes every path of the \
                             host a case-insensitive regex prefix, this Ingress's too (as ingress-nginx does)",
                            host_label(&target),
                            by.join(", ")
                        ),
                    );
                }
            }
            // The same paths as in the previous table: its compiled set serves on (compiling
            // 10,000 paths takes most of a second; endpoint changes rebuild the table often).
            let reused = self.previous.and_then(|p| previous_regex(p, &target)).and_then(|prev| {
                let paths: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
                let order = RegexPaths::order(&paths);
                let same = prev.routes.len() == order.len()
                    && prev.routes.iter().zip(&order).all(|(r, &i)| r.path == paths[i]);
                same.then(|| (prev.paths.clone(), order))
            });
            let compiled = match reused {
                Some(r) => Some(r),
                None => loop {
                    let paths: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
                    match RegexPaths::compile(&paths) {
                        Ok(c) => break Some(c),
                        Err((i, why)) => {
                            let bad = routes.remove(i);
                            if let Some(key) = &bad.ingress {
                                self.report(
                                    key,
                                    format!(
                                        "path {:?} is not a regular expression erratum reads: {why}; skipped",
                                        bad.path
                                    ),
                                );
                            }
                            if routes.is_empty() {
                                break None;
                            }
                        }
                    }
                }
                .map(|(paths, order)| (Arc::new(paths), order)),
            };
            let Some((paths, order)) = compiled else { continue };
            let ordered = order.iter().filter_map(|&i| routes.get(i).cloned()).collect();
            if let Some(host) = self.existing_host(&target) {
                host.regex = Some(Arc::new(RegexHost { paths, routes: ordered }));
            }
        }
    }

    /// `from-to-www-redirect`: the other form of each host redirects to it (308, as
    /// ingress-nginx's `http-redirect-code`), unless some Ingress has rules for it.
    pub(super) fn finish_www(&mut self) {
        for (alias, route) in std::mem::take(&mut self.www_pending) {
            let Ok(HostTarget::Exact(alias)) = classify_host(&alias) else { continue };
            if self.table.hosts.contains_key(&alias) {
                continue;
            }
            let to = alias.strip_prefix("www.").map_or_else(|| format!("www.{alias}"), str::to_string);
            let redirect = Arc::new(Route {
                path: "/".into(),
                rewrite: Some(Arc::new(Rewrite::www(&to))),
                ..copy_of(&route)
            });
            let policies = route.policies.clone();
            self.table
                .hosts
                .insert(alias, HostRoutes { default: Some(redirect), policies, ..HostRoutes::default() });
        }
    }

    /// A canary Ingress: its paths become canaries of the main Ingress's routes (attached in
    /// [`Builder::finish_canaries`]); it adds no route of its own.
    pub(super) fn add_canary(&mut self, key: &ObjectKey, ing: &Ingress, canary: &IngressCanary) {
        let rules = ing.spec.as_ref().and_then(|s| s.rules.as_ref());
        for rule in rules.into_iter().flatten() {
            let Ok(target) = classify_host(rule.host.as_deref().unwrap_or("")) else { continue };
            for p in rule.http.iter().flat_map(|h| h.paths.iter()) {
                let path = p.path.clone().unwrap_or_else(|| "/".to_string());
                let Some(kind) = PathKind::parse(&p.path_type) else { continue };
                let Some(backend) = self.ingress_backend(key, &p.backend, false) else { continue };
                let canary = Arc::new(Canary { backend, rule: canary.clone() });
                self.canary_pending.push((target.clone(), path, kind, canary, key.clone()));
            }
        }
    }

    /// Attaches each canary to the main route of its host and path; a canary without one is
    /// reported (as in ingress-nginx, a canary needs a main Ingress).
    pub(super) fn finish_canaries(&mut self) {
        for (target, path, kind, canary, key) in std::mem::take(&mut self.canary_pending) {
            let with = |r: &Arc<Route>| Arc::new(Route { canary: Some(canary.clone()), ..copy_of(r) });
            let found = match self.regex_pending.get_mut(&target) {
                Some(routes) => routes.iter_mut().find(|r| r.path == path).map(|r| *r = with(r)).is_some(),
                None => match self.existing_host(&target) {
                    Some(host) => {
                        let (map, map_key) = match kind {
                            PathKind::Exact => (&mut host.exact, path.clone()),
                            PathKind::Prefix => (&mut host.prefix, route::prefix_key(&path).to_string()),
                        };
                        map.get_mut(&map_key).map(|r| *r = with(r)).is_some()
                    }
                    None => false,
                },
            };
            if !found {
                self.report(
                    &key,
                    format!(
                        "canary for path {path:?} on host {:?}: no main Ingress serves it; ignored",
                        host_label(&target)
                    ),
                );
            }
        }
    }

    fn existing_host(&mut self, target: &HostTarget) -> Option<&mut HostRoutes> {
        match target {
            HostTarget::Exact(h) => self.table.hosts.get_mut(h),
            HostTarget::Wildcard(s) => self.table.wildcards.get_mut(s),
            HostTarget::None => Some(&mut self.table.hostless),
        }
    }
}

/// A host's compiled regex paths in a table.
fn previous_regex<'t>(table: &'t RoutingTable, target: &HostTarget) -> Option<&'t Arc<RegexHost>> {
    let host = match target {
        HostTarget::Exact(h) => table.hosts.get(h),
        HostTarget::Wildcard(s) => table.wildcards.get(s),
        HostTarget::None => Some(&table.hostless),
    };
    host?.regex.as_ref()
}
