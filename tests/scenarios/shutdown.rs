//! Graceful shutdown: in-flight requests finish, new connections are refused.

use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_the_drain() {
    let a = origin().await;
    let manifests =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let h = Harness::start(&manifests).await;
    let addr = h.running().http_addr;
    let admin = h.admin_url("/readyz");

    let mut in_flight = Vec::new();
    for _ in 0..5 {
        let req = h.client.get(h.url("/slow/800")).header("host", "h.example").send();
        in_flight.push(tokio::spawn(req));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = h.client.clone();
    let shutdown = tokio::spawn(h.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = client.get(&admin).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readyz reports the drain");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no new connections while draining");

    for req in in_flight {
        let resp = req.await.unwrap().expect("in-flight request completes");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "origin: slow answer\n");
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown).await.expect("shutdown completes").unwrap();
}
