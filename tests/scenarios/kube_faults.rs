//! Faults of the control plane under a running erratum, each on a private control plane:
//! kube-apiserver killed while changes go through a second one and etcd is compacted (the
//! watch resumes from a compacted resourceVersion: 410, relist); the CRD deleted and created
//! again; RBAC on ErrorPagePolicies revoked and restored. Traffic flows throughout and no
//! request fails.

use std::time::Duration;

use crate::cluster::{self, Ns, client_of, eventually, eventually_within};
use crate::kube::{Erratum, MapEq, Traffic, body_of, shop, status_of};
use crate::support::*;

fn lists_of(cp: &cluster::ControlPlane, resource: &str, ns: &str) -> usize {
    cp.erratum_calls().iter().filter(|c| c.0 == "list" && c.1 == resource && c.2 == ns && c.3 == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_killed_and_etcd_compacted_lose_no_request_and_no_update() {
    let cp = cluster::private("storage");
    let (ns, _origin, e) = shop(&cp, "faults").await;
    let other = Ns { name: ns.name.clone(), client: client_of(&cp.add_apiserver()).await };
    let lists_before = lists_of(&cp, "ingresses", &ns.name);
    let traffic = Traffic::start(e.url("/"), "shop.example", 200);

    // erratum's kube-apiserver dies. Through the other one, the cluster changes meanwhile and
    // etcd is compacted past everything erratum has seen.
    cp.stop_apiserver(1);
    other.apply(&ingress("shop", "second", &[("new.example", "/", "Prefix", "web")])).await;
    other
        .apply(&policy("shop", "p", "errorResponses:\n- codes: ['404']\n  page: {inline: meanwhile}\n"))
        .await;
    let revision = cp.compact();
    tokio::time::sleep(Duration::from_secs(2)).await; // traffic on a cluster without erratum's server
    cp.start_apiserver(1);

    eventually_within(Duration::from_secs(60), "the Ingress created meanwhile routes", || {
        status_of(e.url("/"), "new.example").map_eq(200)
    })
    .await;
    eventually("the policy created meanwhile applies", || {
        body_of(e.url("/missing/x"), "shop.example").map_eq("meanwhile")
    })
    .await;
    let (served, failed) = traffic.stop().await;
    eprintln!("kube-apiserver killed, etcd compacted at {revision}: {served} requests, {failed} failed");
    assert!(served > 0);
    assert_eq!(failed, 0, "no request failed: {}", e.logs());
    // The watch could not resume from a compacted resourceVersion (410 Expired): erratum
    // listed again.
    assert!(
        e.logs().lines().any(|l| l.contains("too old resource version") && l.contains("\"Ingress\"")),
        "the Ingress watch was refused with 410: {}",
        e.logs()
    );
    assert!(lists_of(&cp, "ingresses", &ns.name) > lists_before, "erratum relisted Ingresses");
    // And a change after the restart is seen through the resumed watch.
    ns.apply(&ingress("shop", "third", &[("third.example", "/", "Prefix", "web")])).await;
    eventually("a change after the restart routes", || status_of(e.url("/"), "third.example").map_eq(200))
        .await;
    cp.assert_rbac_allowed_everything(&ns.name);
}

async fn page_is(e: &Erratum, want: &'static str) -> bool {
    body_of(e.url("/unavailable"), "shop.example").await == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_deleted_and_created_again_and_rbac_revoked_and_restored() {
    let cp = cluster::private("config");
    let (ns, _origin, e) = shop(&cp, "config").await;
    let page = |text: &str| {
        policy(
            "shop",
            "p",
            &format!(
                "errorResponses:\n- codes: ['503']\n  page: {{inline: {text}, contentType: text/plain}}\n"
            ),
        )
    };
    ns.apply(&page("first")).await;
    eventually("the page is served", || async { page_is(&e, "first").await }).await;
    cp.assert_rbac_allowed_everything(&ns.name);
    let traffic = Traffic::start(e.url("/"), "shop.example", 200);

    // The CRD deleted: its policies go with it, Ingresses keep routing.
    cp.kubectl_ok(&["delete", "crd", "errorpagepolicies.erratum.dev", "--wait=true", "--timeout=60s"]);
    eventually("the deleted policy no longer applies", || async {
        let r = kube_client().get(e.url("/unavailable")).header("host", "shop.example").send().await;
        r.is_ok_and(|r| {
            r.status() == 503 && r.headers().get("content-type").is_some_and(|c| c != "text/plain")
        })
    })
    .await;
    // A replica started without the CRD says so and routes Ingresses.
    let late = Erratum::spawn(&cp, &ns, &["--identity", "late"]);
    late.ready().await;
    assert_eq!(status_of(late.url("/"), "shop.example").await, 200);
    assert!(late.logs().contains("ErrorPagePolicy CRD is not installed"), "{}", late.logs());
    // ... and created again: erratum's watch picks policies up again by itself.
    let crd = cluster::root().join("crds/errorpagepolicy.yaml");
    cp.kubectl_ok(&["apply", "-f", crd.to_str().unwrap()]);
    cp.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/errorpagepolicies.erratum.dev",
    ]);
    ns.apply(&page("second")).await;
    eventually_within(Duration::from_secs(90), "a policy of the re-created CRD applies", || async {
        page_is(&e, "second").await
    })
    .await;
    // The replica that started without it looks again (every 30 s) and starts watching.
    eventually_within(Duration::from_secs(90), "the late replica finds the CRD", || async {
        page_is(&late, "second").await
    })
    .await;
    drop(late);

    // RBAC on ErrorPagePolicies revoked. Open watches outlive a revocation; a restart of
    // kube-apiserver makes erratum ask again, and be refused.
    let install = std::fs::read_to_string(cluster::root().join("deploy/install.yaml")).unwrap();
    let role = install
        .split("\n---\n")
        .find(|d| d.contains("\nkind: ClusterRole\n"))
        .expect("the chart's ClusterRole")
        .to_string();
    let revoked = role.replace("[\"erratum.dev\"]", "[\"erratum.dev.revoked\"]");
    assert_ne!(revoked, role);
    cp.kubectl_apply(&revoked);
    cp.stop_apiserver(1);
    cp.start_apiserver(1);
    ns.apply(&page("while-revoked")).await;
    eventually_within(Duration::from_secs(60), "the refusal is counted", || async {
        e.metric("erratum_watch_errors_total{kind=\"ErrorPagePolicy\"}").await.unwrap_or(0.0) > 0.0
            && cp.erratum_calls().iter().any(|c| c.1 == "errorpagepolicies" && c.3 == 403)
    })
    .await;
    assert!(page_is(&e, "second").await, "the last good policies serve on while erratum cannot read them");
    assert_eq!(status_of(e.url("/"), "shop.example").await, 200);

    // Restored: the change made meanwhile arrives.
    cp.kubectl_apply(&role);
    eventually_within(Duration::from_secs(90), "the change made while revoked applies", || async {
        page_is(&e, "while-revoked").await
    })
    .await;
    let (served, failed) = traffic.stop().await;
    eprintln!("CRD deleted and re-created, RBAC revoked and restored: {served} requests, {failed} failed");
    assert_eq!(failed, 0, "no request failed: {}", e.logs());
}

fn kube_client() -> reqwest::Client {
    crate::kube::client()
}
