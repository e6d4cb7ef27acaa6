//! A gRPC origin for the benchmarks (`benches/compare/upstreams.py`): tonic's health service
//! on an h2c port, every service reported SERVING. Not part of erratum.
//!
//! `cargo run --release --example grpc_origin -- 127.0.0.1:18097`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark helper: a failed start is a failed run"
)]

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:18097".into()).parse().expect("address");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    tonic::transport::Server::builder().add_service(health).serve(addr).await.expect("serve");
}
