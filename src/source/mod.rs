//! Sources of configuration: where the Index comes from.
//!
//! Data flow: [`files`] (a manifests folder, watched) or the Kubernetes API
//! ([`controller`](crate::controller)) feeds an [`Index`](crate::index::Index);
//! [`publish::Publisher`], shared by both, turns each settled Index into a routing table and
//! swaps it in. [`strict`] judges file-mode manifests as the API server would. Sources never
//! touch the proxy.

pub mod files;
pub mod publish;
pub mod strict;
