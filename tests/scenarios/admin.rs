//! The admin endpoints.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_table() {
    let a = origin().await;
    let manifests = [
        backend("ns", "a", &[a.addr]),
        ingress("ns", "i", &[("h.example", "/", "Prefix", "a"), ("h.example", "/x", "Prefix", "ghost")]),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    assert_eq!(h.status("h.example", "/").await, 200);

    let get = |p: &str| h.client.get(h.admin_url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(
        get("/readyz").await.unwrap().status(),
        200,
        "file mode is ready once the first table is published"
    );
    assert_eq!(get("/nope").await.unwrap().status(), 404);

    let metrics = h.metrics().await;
    for needle in [
        "erratum_requests_total{ingress=\"i\",namespace=\"ns\",status_class=\"2xx\",upstream_status_class=\"2xx\"} 1",
        "erratum_upstream_response_seconds_bucket",
        "erratum_table_rebuilds_total 1",
        "erratum_table_rebuild_duration_seconds_count 1",
        "erratum_table_generation 1",
        "erratum_table_routes 2",
        "erratum_config_problems 1",
        "erratum_objects{kind=\"Ingress\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle}\n{metrics}");
    }

    let table: serde_json::Value = get("/table").await.unwrap().json().await.unwrap();
    assert_eq!(table["ready"], true);
    assert_eq!(table["routes"], 2);
    assert!(table["problems"][0].as_str().unwrap().contains("service ns/ghost not found"), "{table}");
    h.shutdown().await;
}
