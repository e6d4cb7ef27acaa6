//! Scenario tests: the real proxy from a manifests folder, real origins, real clients.
//! One test binary so the suite links once.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests: a failed unwrap is a failed test")]

mod support;

mod admin;
mod annotations;
mod auth;
mod cache;
mod cli;
mod cluster;
mod crd;
mod edge;
mod errors;
mod faults;
mod fuzz;
mod hostile;
mod http1;
mod kube;
mod kube_crd;
mod kube_faults;
mod kube_packaging;
mod layering;
mod maintenance;
mod migrate;
mod migration;
mod policies;
mod protocols;
mod redbot;
mod reload;
mod routing;
mod screenshots;
mod shutdown;
mod stale;
mod stress;
mod tls;
mod upstream_protocols;
mod upstreams;
