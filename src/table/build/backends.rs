//! The build's Service backends: a Service port resolved once per build and shared by its
//! routes, by endpoints or (`service-upstream`) by cluster IP; an Ingress's error backend
//! (`custom-http-errors` + `default-backend`); the protocol to a backend. Pure.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::IngressBackend;

use super::Builder;
use crate::index::ObjectKey;
use crate::table::{
    Backend, BuildConfig, IngressEdgeView, Policies, PortRef, ResolvedPolicy, Target, annotations, backend,
    policy,
};

impl Builder<'_> {
    pub(super) fn backend(&mut self, namespace: &str, service: &str, port: PortRef) -> Arc<Backend> {
        self.backend_via(namespace, service, port, false)
    }

    /// A Service port's backend; by its cluster IP when `cluster_ip` (`service-upstream`).
    pub(super) fn backend_via(
        &mut self,
        namespace: &str,
        service: &str,
        port: PortRef,
        cluster_ip: bool,
    ) -> Arc<Backend> {
        let key = (ObjectKey::new(namespace, service), port, cluster_ip);
        if let Some(b) = self.backends.get(&key) {
            return b.clone();
        }
        let b =
            Arc::new(backend::resolve(self.index, &self.slices, key.0.clone(), key.1.clone(), cluster_ip));
        self.backends.insert(key, b.clone());
        b
    }

    /// The Ingress's policies with its error backend's implicit policy (`custom-http-errors`
    /// and `default-backend`, or the flags) after its own, before `--default-policy`.
    pub(super) fn with_error_backend(
        &mut self,
        key: &ObjectKey,
        annotated: &annotations::IngressEdge,
        config: &BuildConfig,
        policies: Policies,
    ) -> Policies {
        let codes = match &annotated.custom_http_errors {
            Some(codes) => codes.clone(),
            None if !config.custom_http_errors.is_empty() => config.custom_http_errors.clone(),
            None => {
                if annotated.default_backend.is_some() {
                    self.report(
                        key,
                        "annotation default-backend without custom-http-errors: erratum uses it only as the \
                         error backend of custom-http-errors (ingress-nginx also sends requests there when \
                         the Service has no endpoints; erratum answers 503, which a policy can page)"
                            .into(),
                    );
                }
                return policies;
            }
        };
        let backend = match (&annotated.default_backend, &config.default_backend) {
            (Some(name), _) => {
                // ingress-nginx uses the Service's first port.
                let port = self
                    .index
                    .services
                    .get(&ObjectKey::new(key.namespace.clone(), name.clone()))
                    .and_then(|s| s.spec.as_ref()?.ports.as_ref()?.first().map(|p| p.port));
                match port {
                    Some(port) => self.backend(&key.namespace, name, PortRef::Number(port)),
                    None => {
                        self.report(
                            key,
                            format!("default-backend service {}/{name} not found or has no port; custom-http-errors not applied", key.namespace),
                        );
                        return policies;
                    }
                }
            }
            (None, Some(global)) => {
                self.backend(&global.service.namespace, &global.service.name, global.port.clone())
            }
            (None, None) => {
                self.report(
                    key,
                    "custom-http-errors needs an error backend: the default-backend annotation or --default-backend; not applied"
                        .into(),
                );
                return policies;
            }
        };
        let implicit = Arc::new(policy::error_backend::implicit_policy(
            key,
            &codes,
            Arc::new(policy::error_backend::ErrorBackend { backend }),
        ));
        let mut list: Vec<Arc<ResolvedPolicy>> = policies.iter().cloned().collect();
        let at = match &config.default_policy {
            Some(default) if list.last().is_some_and(|p| p.key == *default) => list.len() - 1,
            _ => list.len(),
        };
        list.insert(at, implicit);
        list.into()
    }

    /// The protocol to `backend`'s endpoints for Ingress `key`, noted on its `/table` view.
    pub(super) fn protocol(
        &mut self,
        key: &ObjectKey,
        annotated: &annotations::IngressProtocol,
        backend: &Backend,
        view: &mut IngressEdgeView,
    ) -> Option<Arc<crate::table::BackendProtocol>> {
        let mut problems = Vec::new();
        let app = crate::table::upstream_tls::app_protocol(self.index, backend);
        let protocol = crate::table::upstream_tls::resolve(
            &key.namespace,
            annotated,
            backend,
            app,
            self.index,
            &mut |m| problems.push(m),
        );
        for problem in problems {
            self.report(key, problem);
        }
        if let Some(p) = &protocol
            && !view.protocols.iter().any(|(s, _)| *s == backend.service)
        {
            view.protocols.push((backend.service.clone(), p.clone()));
        }
        protocol
    }

    /// Resolves an Ingress backend, reporting problems against the Ingress.
    pub(super) fn ingress_backend(
        &mut self,
        ing_key: &ObjectKey,
        backend: &IngressBackend,
        cluster_ip: bool,
    ) -> Option<Arc<Backend>> {
        let Some(svc) = backend.service.as_ref() else {
            self.report(ing_key, "resource backends are not supported; rule skipped".into());
            return None;
        };
        let port = match svc.port.as_ref() {
            Some(p) => match (p.number, p.name.as_ref()) {
                (Some(n), _) => PortRef::Number(n),
                (None, Some(name)) => PortRef::Name(name.clone()),
                (None, None) => {
                    self.report(ing_key, format!("backend service {} names no port; rule skipped", svc.name));
                    return None;
                }
            },
            None => {
                self.report(ing_key, format!("backend service {} names no port; rule skipped", svc.name));
                return None;
            }
        };
        let b = self.backend_via(&ing_key.namespace, &svc.name, port, cluster_ip);
        if let Target::Unresolved(reason) = &b.target {
            self.report(ing_key, format!("{reason}; its routes answer 503"));
        }
        Some(b)
    }
}
