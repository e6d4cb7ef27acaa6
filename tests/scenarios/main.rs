//! Scenario tests: the real proxy from a manifests folder, real origins, real clients.
//! One test binary so the suite links once.

mod support;

mod admin;
mod apiserver;
mod cache;
mod cli;
mod crd;
mod errors;
mod faults;
mod hostile;
mod kube;
mod policies;
mod protocols;
mod reload;
mod routing;
mod shutdown;
mod stress;
mod tls;
