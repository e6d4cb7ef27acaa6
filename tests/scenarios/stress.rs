//! Configuration under stress: huge folders, a hundred changes a second with invalid ones
//! mixed in. The table keeps serving the last good state, no request fails, and replaced
//! tables are freed (memory does not grow with the number of changes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_objects_load_and_route() {
    let o = origin().await;
    let mut manifests = backend("ns", "web", &[o.addr]);
    for i in 0..10_000 {
        manifests.push_str(&ingress(
            "ns",
            &format!("i{i}"),
            &[(&format!("h{i}.example"), "/", "Prefix", "web")],
        ));
    }
    let started = Instant::now();
    let h = Harness::start(&manifests).await;
    h.wait_for_generation(1).await;
    let loaded = started.elapsed();
    let table = h.running().table().load();
    assert_eq!(table.ingress_count(), 10_000);
    assert!(table.diagnostics().is_empty(), "{:?}", &table.diagnostics()[..3.min(table.diagnostics().len())]);
    for host in ["h0.example", "h5000.example", "h9999.example"] {
        assert_eq!(h.status(host, "/ok").await, 200, "{host}");
    }
    assert_eq!(h.status("h10000.example", "/ok").await, 404);
    eprintln!("10,000 Ingresses from one file: serving after {loaded:?} (debug build)");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_changes_a_second_fail_no_request_and_free_old_tables() {
    let o = origin().await;
    let base =
        [backend("ns", "web", &[o.addr]), ingress("ns", "stable", &[("h.example", "/", "Prefix", "web")])]
            .concat();
    let h = Arc::new(Harness::start(&base).await);
    std::fs::write(h.dir.path().join("churn.yaml"), "").unwrap();
    h.wait_for_generation(1).await;
    let first_table = Arc::downgrade(&h.running().table().load());

    // 404 from the origin, replaced or not by whichever policy is current.
    let load = Load::start(&h, "h.example", "/missing/x", 404);
    // 300 writes, one every 10 ms: a policy that changes every time, an Ingress route that
    // changes every time, and every 10th write broken (YAML or schema) — those must be
    // reported and change nothing.
    let started = Instant::now();
    let generation_before = h.generation();
    for i in 0..300u32 {
        let content = match i % 10 {
            9 => "apiVersion: erratum.dev/v1alpha1\nkind: ErrorPagePolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  errorResponses:\n  - codes: ['999']\n".to_string(),
            4 => "kind: [this is not yaml".to_string(),
            _ => {
                [
                    policy("ns", "p", &format!("errorResponses:\n- codes: ['404']\n  page: {{inline: 'version {i}'}}\n")),
                    ingress("ns", "churn", &[("h.example", &format!("/v{i}"), "Exact", "web")]),
                ]
                .concat()
            }
        };
        std::fs::write(h.dir.path().join("churn.yaml"), content).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let churned = started.elapsed();
    let during = h.generation() - generation_before;
    // Writes faster than the folder is re-read (bounded debounce) are coalesced: erratum
    // serves whatever good state it last read. Settle on a known one, then break it.
    let good = |v: &str| {
        [
            policy(
                "ns",
                "p",
                &format!("errorResponses:\n- codes: ['404']\n  page: {{inline: 'version {v}'}}\n"),
            ),
            ingress("ns", "churn", &[("h.example", &format!("/{v}"), "Exact", "web")]),
        ]
        .concat()
    };
    // The churn's last writes may still be reloading: wait for them first, so the next table
    // is the one built from this write.
    h.settle().await;
    h.write_and_wait("churn.yaml", &good("final")).await;
    let body = h.get("h.example", "/missing/x").await.text().await.unwrap();
    assert_eq!(body, "version final");
    // A version the API server would refuse (a code out of range) is refused at load, as
    // kubectl would refuse it: the file's last good objects serve on, and the refusal is counted.
    let refused = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("erratum_manifest_errors_total{reason=\"schema\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let refused_before = refused(&h.metrics().await);
    let broken = good("final").replace("codes: ['404']", "codes: ['999']");
    h.write_and_wait("churn.yaml", &broken).await;
    let body = h.get("h.example", "/missing/x").await.text().await.unwrap();
    assert_eq!(body, "version final", "a refused version of the policy loses nothing");
    assert!(refused(&h.metrics().await) > refused_before, "and it is counted");
    // A version the server accepts but erratum cannot use is reported in the policy's status.
    let unusable = good("final").replace("version final", "{{nope}}");
    assert_ne!(unusable, good("final"));
    h.write_and_wait("churn.yaml", &unusable).await;
    let body = h.get("h.example", "/missing/x").await.text().await.unwrap();
    assert_eq!(body, "version final", "an unusable version of the policy loses nothing");
    let status = h.policy_status("ns", "p").await;
    assert_eq!(condition(&status, "Accepted")["status"], "False", "and it is reported: {status}");
    assert_eq!(h.status("h.example", "/final").await, 200);
    let (ok, failed) = load.stop().await;
    eprintln!(
        "300 writes in {churned:?}: {during} tables published meanwhile, {ok} requests served, {failed} failed"
    );
    assert!(ok > 100, "load ran");
    assert_eq!(failed, 0, "no request failed during the churn");
    // The folder is re-read at least once a second however fast it changes.
    assert!(during >= 2, "changes were applied while they happened, not only at the end: {during}");
    // Replaced tables are freed once no request holds them.
    assert!(first_table.upgrade().is_none(), "the first table is still alive: a table leak");
    let policies: serde_json::Value =
        h.client.get(h.admin_url("/policies")).send().await.unwrap().json().await.unwrap();
    assert_eq!(policies.as_array().unwrap().len(), 1, "one policy, not one per change: {policies}");
    match Arc::try_unwrap(h) {
        Ok(h) => h.shutdown().await,
        Err(_) => panic!("load tasks still hold the harness"),
    }
}
