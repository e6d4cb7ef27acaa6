//! erratum: a Kubernetes ingress controller whose speciality is what happens when things go wrong.
//!
//! ```text
//!  Kubernetes API ──watch──┐
//!  (controller/)           ├─> Index ──debounce──> RoutingTable::build ──ArcSwap──> proxy :8080/:8443
//!  manifests dir ──notify──┘   (index)             (table/, pure)                    (proxy/)
//!  (source/files)                                                     admin :9090 /metrics /table …
//! ```
//!
//! Layering: `controller -> table <- proxy` (the sources write, the table is built, the proxy
//! reads); they meet only in [`runtime`]. The proxy never imports `controller`, `source`, `crd`
//! or `index`, and the table imports neither kube's client nor the proxy (checked by
//! `tests/scenarios/layering.rs`).
//!
//! **Newcomers start with** [`proxy::intercept::decide`] (the one decision behind every error
//! status, pure), then [`proxy::admit`] (a request from the top), then [`table::build`] (how
//! Ingresses become routes). `docs/architecture.md` walks through the layers;
//! `docs/error-semantics.md` holds the numbered rules tests and comments cite.
//!
//! Sources of configuration:
//! - [`controller`] — cluster mode: kube-runtime watches, Lease, status and Events;
//! - [`source`] — file mode (a manifests folder judged like the API server) and the publisher
//!   both modes share;
//! - [`index`] — the Index both write: every object as plain k8s-openapi values;
//! - [`crd`] — the `ErrorPagePolicy` types (the CRD is generated from them).
//!
//! The table:
//! - [`table`] — the immutable routing snapshot and its pure build.
//!
//! The data plane:
//! - [`proxy`] — listeners, HTTP/1.1, admission, forwarding, the error cache, responses;
//! - [`admin`] — the admin port: health, readiness, metrics, table, policies, pages, cache.
//!
//! Around them:
//! - [`runtime`] — wiring and ordered shutdown; [`args`] — flags; [`metrics`] — the registry;
//!   [`telemetry`] — logging; [`demo`] and [`origin`] — `erratum demo` and its misbehaving
//!   origin (also the tests' upstream).
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
pub mod migrate;
pub mod origin;
pub mod proxy;
pub mod runtime;
pub mod source;
pub mod table;
pub mod telemetry;
