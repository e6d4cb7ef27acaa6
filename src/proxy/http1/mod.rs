//! HTTP/1.1 as erratum speaks it on its common paths, both sides of the proxy.
//!
//! - [`server`]: the client-facing loop for requests without a body (the connection goes to
//!   hyper from the first request that has one);
//! - [`client`]: the upstream exchange for requests without a body, on the request's task;
//! - [`wire`]: the RFC 9112 rules both share.
//!
//! Everything else HTTP (bodies, HTTP/2, upgrades) is hyper's. Parsing is `httparse`'s on
//! both sides; only message framing is written here. Why by hand: see each side's header.

pub mod client;
pub mod server;
pub mod wire;
