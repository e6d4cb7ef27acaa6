//! Hot reload: file changes take effect without a failed request; bad files lose nothing.

use std::sync::Arc;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apply_live_without_failing_requests_in_flight() {
    let a = origin().await;
    let base = backend("ns", "a", &[a.addr]);
    let h = Arc::new(
        Harness::start(&[base.clone(), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat())
            .await,
    );

    // Load on the stable route while the file is rewritten over and over.
    let load = Load::start(&h, "h.example", "/slow/5", 200);
    for i in 0..10 {
        let extra = format!("/v{i}");
        let manifests = [
            base.clone(),
            ingress("ns", "i", &[("h.example", "/", "Prefix", "a"), ("h.example", &extra, "Exact", "ghost")]),
        ]
        .concat();
        h.write_and_wait("main.yaml", &manifests).await;
        assert_eq!(
            h.status("h.example", &extra).await,
            503,
            "new route {extra} is live (its Service is missing)"
        );
    }
    let (ok, failed) = load.stop().await;
    assert!(ok > 10, "load ran");
    assert_eq!(failed, 0, "no request failed during reloads");

    // Removing a route takes effect too.
    h.write_and_wait(
        "main.yaml",
        &[base.clone(), ingress("ns", "i", &[("h.example", "/only", "Exact", "a")])].concat(),
    )
    .await;
    assert_eq!(h.status("h.example", "/").await, 404);
    assert_eq!(h.status("h.example", "/only").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_keeps_the_last_good_table() {
    let a = origin().await;
    let good =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let h = Harness::start(&good).await;
    assert_eq!(h.status("h.example", "/").await, 200);

    // Broken YAML in the file that defines the routes: its last good objects keep serving.
    h.write_and_wait("main.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a\n").await;
    assert_eq!(h.status("h.example", "/").await, 200);
    // Wrong types in a new file, and a kind erratum does not know: reported, rest unaffected.
    h.write_and_wait("extra.yaml", "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: j, namespace: ns}\nspec: {rules: 7}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").await;
    assert_eq!(h.status("h.example", "/").await, 200);
    let metrics = h.metrics().await;
    for reason in ["syntax", "schema", "unknown_kind"] {
        assert!(
            metrics.contains(&format!("erratum_manifest_errors_total{{reason=\"{reason}\"}}")),
            "{reason}\n{metrics}"
        );
    }

    // Fixing the file applies the new content.
    let fixed =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/v2", "Prefix", "a")])].concat();
    h.write_and_wait("main.yaml", &fixed).await;
    assert_eq!(h.status("h.example", "/v2").await, 200);
    assert_eq!(h.status("h.example", "/").await, 404);
    h.shutdown().await;
}
