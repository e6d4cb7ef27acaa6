//! Builders for Kubernetes objects, for tests and benchmarks (not used by the binary).
#![allow(clippy::expect_used, reason = "test fixtures: a malformed fixture is a test bug")]

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};

/// Builds an Ingress rule by rule.
#[derive(Clone, Debug)]
pub struct IngressBuilder {
    v: Value,
}

/// Starts an Ingress of class `erratum`.
pub fn ingress(namespace: &str, name: &str) -> IngressBuilder {
    IngressBuilder {
        v: json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"namespace": namespace, "name": name},
            "spec": {"ingressClassName": "erratum", "rules": []}
        }),
    }
}

impl IngressBuilder {
    /// Sets or clears `spec.ingressClassName`.
    pub fn class(mut self, class: Option<&str>) -> Self {
        self.v["spec"]["ingressClassName"] = class.map_or(Value::Null, Value::from);
        self
    }

    /// Adds a metadata annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.v["metadata"]["annotations"][key] = value.into();
        self
    }

    /// Sets `metadata.creationTimestamp` (RFC 3339).
    pub fn created(mut self, ts: &str) -> Self {
        self.v["metadata"]["creationTimestamp"] = ts.into();
        self
    }

    /// Adds a path to the rule for `host` ("" for a host-less rule), backed by `service:port`.
    pub fn path(mut self, host: &str, path: &str, path_type: &str, service: &str, port: i32) -> Self {
        let rules = self.v["spec"]["rules"].as_array_mut().expect("rules is an array");
        let want = if host.is_empty() { Value::Null } else { Value::from(host) };
        let entry = json!({"path": path, "pathType": path_type,
            "backend": {"service": {"name": service, "port": {"number": port}}}});
        match rules.iter_mut().find(|r| r.get("host").cloned().unwrap_or(Value::Null) == want) {
            Some(rule) => rule["http"]["paths"].as_array_mut().expect("paths").push(entry),
            None => {
                let mut rule = json!({"http": {"paths": [entry]}});
                if !host.is_empty() {
                    rule["host"] = host.into();
                }
                rules.push(rule);
            }
        }
        self
    }

    /// Sets `spec.defaultBackend`.
    pub fn default_backend(mut self, service: &str, port: i32) -> Self {
        self.v["spec"]["defaultBackend"] = json!({"service": {"name": service, "port": {"number": port}}});
        self
    }

    /// Adds a `spec.tls` entry.
    pub fn tls(mut self, hosts: &[&str], secret: &str) -> Self {
        let entry = json!({"hosts": hosts, "secretName": secret});
        match self.v["spec"]["tls"].as_array_mut() {
            Some(list) => list.push(entry),
            None => self.v["spec"]["tls"] = json!([entry]),
        }
        self
    }

    /// The Ingress.
    pub fn build(self) -> Ingress {
        serde_json::from_value(self.v).expect("fixture is a valid Ingress")
    }
}

/// `[{name?, port}]`, the shape Service and EndpointSlice ports share.
fn ports_json(ports: &[(Option<&str>, i32)]) -> Vec<Value> {
    ports
        .iter()
        .map(|(n, p)| match n {
            Some(n) => json!({"name": n, "port": p}),
            None => json!({"port": p}),
        })
        .collect()
}

/// A ClusterIP Service with ports `(name, port)`.
pub fn service(namespace: &str, name: &str, ports: &[(Option<&str>, i32)]) -> Service {
    let ports = ports_json(ports);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"ports": ports}
    }))
    .expect("fixture is a valid Service")
}

/// An ExternalName Service.
pub fn external_service(namespace: &str, name: &str, external_name: &str) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": {"type": "ExternalName", "externalName": external_name}
    }))
    .expect("fixture is a valid Service")
}

/// An EndpointSlice for `service` with ports `(name, port)` and endpoints `(ip, ready)`.
pub fn endpoint_slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(Option<&str>, i32)],
    endpoints: &[(&str, Option<bool>)],
) -> EndpointSlice {
    let ports = ports_json(ports);
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready)| match ready {
            Some(r) => json!({"addresses": [ip], "conditions": {"ready": r}}),
            None => json!({"addresses": [ip]}),
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": namespace, "name": name, "labels": {"kubernetes.io/service-name": service}},
        "addressType": if endpoints.iter().any(|e| e["addresses"][0].as_str().is_some_and(|a| a.contains(':'))) { "IPv6" } else { "IPv4" },
        "ports": ports,
        "endpoints": endpoints
    }))
    .expect("fixture is a valid EndpointSlice")
}

/// An IngressClass for `controller`, optionally the cluster default.
pub fn ingress_class(name: &str, controller: &str, default: bool) -> IngressClass {
    let mut v = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller}
    });
    if default {
        v["metadata"]["annotations"] = json!({"ingressclass.kubernetes.io/is-default-class": "true"});
    }
    serde_json::from_value(v).expect("fixture is a valid IngressClass")
}

/// A `kubernetes.io/tls` Secret from PEM text.
pub fn tls_secret(namespace: &str, name: &str, cert_pem: &str, key_pem: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"namespace": namespace, "name": name},
        "stringData": {"tls.crt": cert_pem, "tls.key": key_pem}
    }))
    .expect("fixture is a valid Secret")
}

/// An ErrorPagePolicy from its spec in YAML.
pub fn policy(namespace: &str, name: &str, spec_yaml: &str) -> crate::crd::ErrorPagePolicy {
    let spec: crate::crd::ErrorPagePolicySpec =
        serde_yaml_ng::from_str(spec_yaml).expect("fixture spec parses");
    let mut p = crate::crd::ErrorPagePolicy::new(name, spec);
    p.metadata.namespace = Some(namespace.to_string());
    p
}

/// A policy from its spec, resolved as the table build would (against an empty Index): what
/// the data plane's tests work with.
pub fn resolved_policy(namespace: &str, name: &str, spec_yaml: &str) -> crate::table::ResolvedPolicy {
    crate::table::policy::resolve_alone(&crate::index::Index::default(), &policy(namespace, name, spec_yaml))
        .expect("fixture policy is valid")
}
