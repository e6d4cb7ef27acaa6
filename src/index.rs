//! The Index: every Kubernetes object erratum routes from, as plain k8s-openapi values.
//!
//! Data flow: a source (the manifests folder in file mode, the Kubernetes API's watches in
//! cluster mode) is the single writer of an `Index`; the publisher hands a snapshot of it to the pure
//! [`RoutingTable::build`](crate::table::RoutingTable::build). The Index does no validation
//! beyond identity: what an object *means* is decided by the table build, so both sources
//! share one implementation of the Ingress semantics.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::ErrorPagePolicy;

/// Namespace used for objects whose manifest does not name one, as `kubectl apply` would.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace (never empty; see [`DEFAULT_NAMESPACE`]).
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// The key of an object from its metadata, defaulting the namespace.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta
                .namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl ObjectKey {
    /// Parses `NAMESPACE/NAME` (flags, admin queries): both parts non-empty, one slash.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(ObjectKey::new(ns, name))
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The kinds of object erratum reads, each named once here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// networking.k8s.io/v1 IngressClass (cluster-scoped).
    IngressClass,
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// v1 Secret.
    Secret,
    /// v1 ConfigMap.
    ConfigMap,
    /// erratum.dev/v1alpha1 ErrorPagePolicy.
    ErrorPagePolicy,
}

impl Kind {
    /// Every kind, in the order they are watched and counted.
    pub const ALL: [Kind; 7] = [
        Kind::IngressClass,
        Kind::Ingress,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ErrorPagePolicy,
    ];

    /// The kind name, as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::IngressClass => "IngressClass",
            Kind::Ingress => "Ingress",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::ErrorPagePolicy => "ErrorPagePolicy",
        }
    }

    /// The `apiVersion` erratum reads the kind at.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::IngressClass | Kind::Ingress => "networking.k8s.io/v1",
            Kind::Service | Kind::Secret | Kind::ConfigMap => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::ErrorPagePolicy => "erratum.dev/v1alpha1",
        }
    }

    /// The kind a manifest's `apiVersion` and `kind` name, if erratum reads it.
    pub fn of_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind && k.api_version() == api_version)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of a kind erratum understands.
#[derive(Clone, Debug)]
pub enum Object {
    /// networking.k8s.io/v1 IngressClass (cluster-scoped).
    IngressClass(Box<IngressClass>),
    /// networking.k8s.io/v1 Ingress.
    Ingress(Box<Ingress>),
    /// v1 Service.
    Service(Box<Service>),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// v1 Secret (`kubernetes.io/tls` ones for certificates, Opaque ones for basic auth).
    Secret(Box<Secret>),
    /// v1 ConfigMap (page bodies for error policies).
    ConfigMap(Box<ConfigMap>),
    /// erratum.dev/v1alpha1 ErrorPagePolicy.
    ErrorPagePolicy(Box<ErrorPagePolicy>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::IngressClass(_) => Kind::IngressClass,
            Object::Ingress(_) => Kind::Ingress,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Secret(_) => Kind::Secret,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::ErrorPagePolicy(_) => Kind::ErrorPagePolicy,
        }
    }

    /// `namespace/name`; cluster-scoped kinds use an empty namespace.
    pub fn key(&self) -> ObjectKey {
        match self {
            Object::IngressClass(o) => ObjectKey::new("", o.metadata.name.clone().unwrap_or_default()),
            Object::Ingress(o) => ObjectKey::of(&o.metadata),
            Object::Service(o) => ObjectKey::of(&o.metadata),
            Object::EndpointSlice(o) => ObjectKey::of(&o.metadata),
            Object::Secret(o) => ObjectKey::of(&o.metadata),
            Object::ConfigMap(o) => ObjectKey::of(&o.metadata),
            Object::ErrorPagePolicy(o) => ObjectKey::of(&o.metadata),
        }
    }
}

/// Every object erratum routes from, keyed by kind and `namespace/name`.
///
/// Maps are ordered so that anything derived from the Index is deterministic.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// IngressClasses by name (namespace empty).
    pub ingress_classes: BTreeMap<ObjectKey, IngressClass>,
    /// Ingresses.
    pub ingresses: BTreeMap<ObjectKey, Ingress>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Service>,
    /// EndpointSlices.
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    /// Secrets.
    pub secrets: BTreeMap<ObjectKey, Secret>,
    /// ConfigMaps.
    pub config_maps: BTreeMap<ObjectKey, ConfigMap>,
    /// ErrorPagePolicies.
    pub policies: BTreeMap<ObjectKey, ErrorPagePolicy>,
}

impl Index {
    /// Inserts or replaces an object. Returns the previous object of the same kind and key,
    /// so a caller loading several files can report duplicates.
    pub fn apply(&mut self, obj: Object) -> Option<Object> {
        let key = obj.key();
        match obj {
            Object::IngressClass(o) => {
                self.ingress_classes.insert(key, *o).map(|o| Object::IngressClass(Box::new(o)))
            }
            Object::Ingress(o) => self.ingresses.insert(key, *o).map(|o| Object::Ingress(Box::new(o))),
            Object::Service(o) => self.services.insert(key, *o).map(|o| Object::Service(Box::new(o))),
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(key, *o).map(|o| Object::EndpointSlice(Box::new(o)))
            }
            Object::Secret(o) => self.secrets.insert(key, *o).map(|o| Object::Secret(Box::new(o))),
            Object::ConfigMap(o) => self.config_maps.insert(key, *o).map(|o| Object::ConfigMap(Box::new(o))),
            Object::ErrorPagePolicy(o) => {
                self.policies.insert(key, *o).map(|o| Object::ErrorPagePolicy(Box::new(o)))
            }
        }
    }

    /// Removes an object by kind and key; returns whether it was present.
    pub fn delete(&mut self, kind: Kind, key: &ObjectKey) -> bool {
        match kind {
            Kind::IngressClass => self.ingress_classes.remove(key).is_some(),
            Kind::Ingress => self.ingresses.remove(key).is_some(),
            Kind::Service => self.services.remove(key).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
            Kind::ConfigMap => self.config_maps.remove(key).is_some(),
            Kind::ErrorPagePolicy => self.policies.remove(key).is_some(),
        }
    }

    /// Replaces every object of `kind` (a relist): objects missing from `objects` are gone.
    pub fn replace_kind(&mut self, kind: Kind, objects: Vec<Object>) {
        match kind {
            Kind::IngressClass => self.ingress_classes.clear(),
            Kind::Ingress => self.ingresses.clear(),
            Kind::Service => self.services.clear(),
            Kind::EndpointSlice => self.endpoint_slices.clear(),
            Kind::Secret => self.secrets.clear(),
            Kind::ConfigMap => self.config_maps.clear(),
            Kind::ErrorPagePolicy => self.policies.clear(),
        }
        for o in objects.into_iter().filter(|o| o.kind() == kind) {
            self.apply(o);
        }
    }

    /// Replaces the Secrets of one type (a relist of that type's watch); others stay.
    pub fn replace_secrets(&mut self, secret_type: &str, objects: Vec<Object>) {
        self.secrets.retain(|_, s| s.type_.as_deref().unwrap_or("Opaque") != secret_type);
        for o in objects.into_iter().filter(|o| o.kind() == Kind::Secret) {
            self.apply(o);
        }
    }

    /// Number of objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::IngressClass => self.ingress_classes.len(),
            Kind::Ingress => self.ingresses.len(),
            Kind::Service => self.services.len(),
            Kind::EndpointSlice => self.endpoint_slices.len(),
            Kind::Secret => self.secrets.len(),
            Kind::ConfigMap => self.config_maps.len(),
            Kind::ErrorPagePolicy => self.policies.len(),
        }
    }

    /// Number of objects of every kind.
    pub fn len(&self) -> usize {
        Kind::ALL.into_iter().map(|k| self.count(k)).sum()
    }

    /// Whether the index holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
