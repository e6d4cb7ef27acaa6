//! erratum: a Kubernetes ingress controller whose speciality is what happens when things go wrong.
//!
//! ```text
//!  Kubernetes API ──watch──┐
//!  manifests dir ──notify──┴─> Index ──debounce──> RoutingTable::build ──ArcSwap──> proxy :8080/:8443
//!                               (source/)          (table/, pure)                      (proxy/)
//!                                                                      admin :9090 /metrics /healthz /readyz
//! ```
//!
//! Layering: `source -> table <- proxy`; they meet only in [`runtime`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod args;
pub mod controller;
pub mod crd;
pub mod demo;
#[cfg(any(test, feature = "fixtures"))]
#[doc(hidden)]
pub mod fixtures;
pub mod index;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod runtime;
pub mod source;
pub mod table;
pub mod telemetry;
