//! Backend resolution: Ingress backend -> Service port -> ready EndpointSlice addresses.
//!
//! Pure: resolved while the table is built, so the proxy only picks an address from a list.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::index::{Index, ObjectKey};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service port as an Ingress names it: by number or by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    /// `port.number`
    Number(i32),
    /// `port.name`
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Where a backend's traffic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Ready endpoint addresses (possibly none: the proxy answers 503).
    Endpoints(Vec<SocketAddr>),
    /// A Service of type ExternalName: resolved through DNS when connecting.
    ExternalName {
        /// DNS name.
        host: String,
        /// Port.
        port: u16,
    },
    /// The reference cannot be resolved; the reason is reported and the proxy answers 503.
    Unresolved(String),
}

/// A resolved Service port, shared by every route that points at it.
#[derive(Debug)]
pub struct Backend {
    /// The Service.
    pub service: ObjectKey,
    /// The Service port, as the Ingress named it.
    pub port: PortRef,
    /// Resolved target.
    pub target: Target,
    /// Round-robin cursor. Lives in the snapshot: a new table starts a new rotation, which is
    /// harmless and keeps the proxy free of shared mutable maps.
    cursor: AtomicUsize,
    /// `ip:port` of each endpoint as an HTTP authority, built once per table instead of per
    /// request.
    authorities: Vec<http::uri::Authority>,
    /// Requests waiting for each endpoint's response head, for power-of-two-choices balancing
    /// (counted only on routes that balance so). Per snapshot like the cursor: a new table
    /// starts from zero while the old table's requests finish on the old counters.
    in_flight: Box<[AtomicU32]>,
}

/// The upstream address the proxy should use for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// A ready endpoint.
    Addr(SocketAddr),
    /// An ExternalName host and port.
    Name(&'a str, u16),
    /// No endpoint can take the request; the string says why.
    Unavailable(&'a str),
}

impl Backend {
    /// Builds a backend with a fresh rotation.
    pub fn new(service: ObjectKey, port: PortRef, target: Target) -> Self {
        let authorities = match &target {
            Target::Endpoints(addrs) => addrs.iter().filter_map(|a| a.to_string().parse().ok()).collect(),
            _ => Vec::new(),
        };
        let in_flight = authorities.iter().map(|_| AtomicU32::new(0)).collect();
        Self { service, port, target, cursor: AtomicUsize::new(0), authorities, in_flight }
    }

    /// The ready endpoints' addresses (empty for other targets).
    pub fn endpoints(&self) -> &[SocketAddr] {
        match &self.target {
            Target::Endpoints(addrs) if addrs.len() == self.authorities.len() => addrs,
            _ => &[],
        }
    }

    /// Endpoint `i` as an HTTP authority.
    pub fn authority(&self, i: usize) -> Option<&http::uri::Authority> {
        self.authorities.get(i)
    }

    /// Requests in flight to endpoint `i`.
    pub fn in_flight(&self, i: usize) -> &AtomicU32 {
        static NONE: AtomicU32 = AtomicU32::new(0);
        self.in_flight.get(i).unwrap_or(&NONE)
    }

    /// The next round-robin index of `n` endpoints (public for the proxy's balancer).
    pub fn next_index(&self, n: usize) -> usize {
        self.next(n)
    }

    /// Like [`Backend::pick`], as the HTTP authority to send to (precomputed for addresses).
    pub fn pick_authority(&self) -> Result<http::uri::Authority, &str> {
        match &self.target {
            Target::Endpoints(addrs) if addrs.is_empty() || self.authorities.len() != addrs.len() => {
                Err("no ready endpoints")
            }
            Target::Endpoints(addrs) => Ok(self.authorities[self.next(addrs.len())].clone()),
            Target::ExternalName { host, port } => {
                format!("{host}:{port}").parse().map_err(|_| "the ExternalName is not a valid host")
            }
            Target::Unresolved(reason) => Err(reason),
        }
    }

    /// The next of `n` (> 0) endpoints, round robin: the one place the cursor moves.
    fn next(&self, n: usize) -> usize {
        if n == 1 {
            return 0; // no shared write for the common single endpoint
        }
        // Relaxed: the cursor only spreads load, it orders nothing.
        self.cursor.fetch_add(1, Ordering::Relaxed) % n
    }

    /// Picks the next endpoint, round robin.
    pub fn pick(&self) -> Pick<'_> {
        match &self.target {
            Target::Endpoints(addrs) if addrs.is_empty() => Pick::Unavailable("no ready endpoints"),
            Target::Endpoints(addrs) => Pick::Addr(addrs[self.next(addrs.len())]),
            Target::ExternalName { host, port } => Pick::Name(host, *port),
            Target::Unresolved(reason) => Pick::Unavailable(reason),
        }
    }
}

/// EndpointSlices grouped by the Service they belong to.
pub(crate) fn slices_by_service(index: &Index) -> HashMap<ObjectKey, Vec<&EndpointSlice>> {
    let mut by_service: HashMap<ObjectKey, Vec<&EndpointSlice>> = HashMap::new();
    for (key, slice) in &index.endpoint_slices {
        let Some(service) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else {
            continue;
        };
        by_service.entry(ObjectKey::new(key.namespace.clone(), service.clone())).or_default().push(slice);
    }
    by_service
}

/// Resolves a Service port to its target. Problems become the `Unresolved` target, which the
/// build reports against the Ingress that asked.
pub(crate) fn resolve(
    index: &Index,
    slices: &HashMap<ObjectKey, Vec<&EndpointSlice>>,
    service: ObjectKey,
    port: PortRef,
    cluster_ip: bool,
) -> Backend {
    let target = match cluster_ip {
        true => via_cluster_ip(index, &service, &port)
            .unwrap_or_else(|| resolve_target(index, slices, &service, &port)),
        false => resolve_target(index, slices, &service, &port),
    };
    Backend::new(service, port, target)
}

/// `service-upstream`: the Service's cluster IP and port, one endpoint that kube-proxy
/// balances (`None` for a headless or ExternalName Service, which has none: its endpoints
/// are used).
fn via_cluster_ip(index: &Index, key: &ObjectKey, port: &PortRef) -> Option<Target> {
    let spec = index.services.get(key)?.spec.as_ref()?;
    let ip: IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let service_port = spec.ports.iter().flatten().find(|sp| match port {
        PortRef::Number(n) => sp.port == *n,
        PortRef::Name(name) => sp.name.as_deref() == Some(name.as_str()),
    })?;
    let number = u16::try_from(service_port.port).ok()?;
    Some(Target::Endpoints(vec![SocketAddr::new(ip, number)]))
}

fn resolve_target(
    index: &Index,
    slices: &HashMap<ObjectKey, Vec<&EndpointSlice>>,
    key: &ObjectKey,
    port: &PortRef,
) -> Target {
    let Some(service) = index.services.get(key) else {
        return Target::Unresolved(format!("service {key} not found"));
    };
    let Some(spec) = service.spec.as_ref() else {
        return Target::Unresolved(format!("service {key} has no spec"));
    };
    let service_port = spec.ports.iter().flatten().find(|sp| match port {
        PortRef::Number(n) => sp.port == *n,
        PortRef::Name(name) => sp.name.as_deref() == Some(name.as_str()),
    });

    if spec.type_.as_deref() == Some("ExternalName") {
        let Some(host) = spec.external_name.clone().filter(|h| !h.is_empty()) else {
            return Target::Unresolved(format!("ExternalName service {key} has no externalName"));
        };
        // An ExternalName Service needs no ports list: a numeric Ingress port is used as is.
        let number = match (service_port, port) {
            (Some(sp), _) => sp.port,
            (None, PortRef::Number(n)) => *n,
            (None, PortRef::Name(name)) => {
                return Target::Unresolved(format!("service {key} has no port named {name:?}"));
            }
        };
        return match u16::try_from(number) {
            Ok(port) if port > 0 => Target::ExternalName { host, port },
            _ => Target::Unresolved(format!("service {key} port {number} is out of range")),
        };
    }

    let Some(service_port) = service_port else {
        return Target::Unresolved(format!("service {key} has no port {port}"));
    };
    // EndpointSlice ports carry the Service port's name (empty for a single unnamed port).
    let port_name = service_port.name.as_deref().unwrap_or("");
    let mut addrs = Vec::new();
    for slice in slices.get(key).into_iter().flatten() {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue; // FQDN slices are deprecated and not routable by address
        }
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // Kubernetes: a nil `ready` means ready.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    addrs.push(SocketAddr::new(ip, number));
                }
            }
        }
    }
    addrs.sort();
    addrs.dedup();
    Target::Endpoints(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_visits_every_endpoint() {
        let addrs: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()];
        let b =
            Backend::new(ObjectKey::new("ns", "svc"), PortRef::Number(80), Target::Endpoints(addrs.clone()));
        let picks: Vec<_> = (0..4).map(|_| b.pick()).collect();
        assert_eq!(
            picks,
            vec![Pick::Addr(addrs[0]), Pick::Addr(addrs[1]), Pick::Addr(addrs[0]), Pick::Addr(addrs[1])]
        );
    }

    #[test]
    fn empty_endpoints_are_unavailable() {
        let b = Backend::new(ObjectKey::new("ns", "svc"), PortRef::Number(80), Target::Endpoints(vec![]));
        assert_eq!(b.pick(), Pick::Unavailable("no ready endpoints"));
    }
}
