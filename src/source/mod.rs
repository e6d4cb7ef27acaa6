//! Sources of configuration: where the Index comes from.
//!
//! Data flow: `files` (a manifests folder, watched) and, later, the Kubernetes API feed an
//! [`Index`](crate::index::Index); [`publish::Publisher`] turns each settled Index into a
//! routing table and swaps it in. Sources never touch the proxy.

pub mod files;
pub mod publish;
pub mod strict;
