//! Graceful shutdown: in-flight requests finish, new connections are refused.

use std::time::Duration;

use crate::support::*;

/// With one worker (on the caller's runtime), then `--workers 3` (a thread each, every one of
/// them serving and draining). One test, so that no other harness's worker threads are
/// counted: the rest of the suite runs one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_during_the_drain() {
    drain_with_workers(1).await;
    drain_with_workers(3).await;
}

/// The names of this process's threads that are erratum's workers.
fn worker_threads() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with("erratum-wrk-"))
        .collect();
    names.sort();
    names
}

async fn drain_with_workers(workers: usize) {
    let a = origin().await;
    let manifests =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let before = worker_threads();
    let h = Harness::start_with(&manifests, |c| c.workers = workers).await;
    let addr = h.running().http_addr;
    let admin = h.admin_url("/readyz");
    if workers > 1 {
        // A thread names itself once it runs: wait for that.
        let expected: Vec<String> = (0..workers).map(|i| format!("erratum-wrk-{i}")).collect();
        let mut started = Vec::new();
        for _ in 0..100 {
            started = worker_threads().into_iter().filter(|n| !before.contains(n)).collect();
            if started == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(started, expected, "one thread per worker");
    }

    // Many connections at once: whichever worker takes each, every one is answered.
    let mut quick = Vec::new();
    for _ in 0..24 {
        let c = reqwest::Client::new();
        let url = h.url("/");
        quick.push(tokio::spawn(async move { c.get(url).header("host", "h.example").send().await }));
    }
    for q in quick {
        assert_eq!(q.await.unwrap().expect("answered").status(), 200);
    }

    let mut in_flight = Vec::new();
    for _ in 0..(5 * workers) {
        // A connection each, so that the requests spread over the workers.
        let c = reqwest::Client::new();
        let req = c.get(h.url("/slow/800")).header("host", "h.example").send();
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
    let left: Vec<String> = worker_threads().into_iter().filter(|n| !before.contains(n)).collect();
    assert!(left.is_empty(), "worker threads end after the drain: {left:?}");
}
