//! Kubernetes mode through the real `erratum` binary against a real kube-apiserver (see
//! `cluster.rs`), with exactly the chart's RBAC: routing from watched objects, policy status by
//! server-side apply, Events, Ingress status, leader election and hand-over, churn, scale.
//! The faults (kube-apiserver restarts, etcd compaction, the CRD and RBAC changing under a
//! running controller) are in `kube_faults.rs`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use erratum::origin::Origin;
use serde_json::Value;

use crate::cluster::{self, ControlPlane, Ns, eventually};
use crate::support::*;

/// A running `erratum run` (Kubernetes mode) as the chart's ServiceAccount.
pub struct Erratum {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Erratum {
    /// Watches only `ns` and keeps its Lease there.
    pub fn spawn(cp: &ControlPlane, ns: &Ns, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_erratum"))
            .env("KUBECONFIG", cp.erratum_kubeconfig())
            .args(["run", "--http-addr", "127.0.0.1:0", "--https-addr", "off", "--admin-addr", "127.0.0.1:0"])
            .args(["--log-format", "json", "--workers", "1"])
            .args(["--namespace", &ns.name, "--lease-namespace", &ns.name])
            .args(extra)
            .env_remove("ERRATUM_MANIFESTS")
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("erratum serving") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let log = log.lock().unwrap();
            panic!("erratum did not start: {:?}", &log[..log.len().min(8)])
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        let field = |k: &str| v[k].as_str().or(v["fields"][k].as_str()).unwrap().parse().unwrap();
        Self { http: field("http_addr"), admin: field("admin_addr"), child, log }
    }

    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub async fn ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        eventually("readyz", || {
            let url = url.clone();
            async move { client().get(url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let text =
            client().get(format!("http://{}/metrics", self.admin)).send().await.ok()?.text().await.ok()?;
        text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
    }
}

impl Drop for Erratum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

pub async fn status_of(url: String, host: &str) -> u16 {
    match client().get(url).header("host", host).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

pub async fn body_of(url: String, host: &str) -> String {
    match client().get(url).header("host", host).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// An origin the API server accepts in an EndpointSlice (not on loopback).
pub async fn routable_origin() -> Origin {
    Origin::start(SocketAddr::new(cluster::routable_ip(), 0)).await.expect("origin starts")
}

/// A namespace of its own holding the shop (`storefront`: Service `web` on a routable origin,
/// Ingress for `shop.example`), and an erratum watching it, ready.
pub async fn shop(cp: &ControlPlane, namespace: &str) -> (Ns, Origin, Erratum) {
    let ns = cp.namespace(namespace).await;
    let o = routable_origin().await;
    ns.apply(&storefront(o.addr)).await;
    let e = Erratum::spawn(cp, &ns, &[]);
    e.ready().await;
    (ns, o, e)
}

fn condition<'a>(p: &'a Value, type_: &str) -> Option<&'a Value> {
    p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pages_status_and_events_through_the_real_api_server() {
    let cp = cluster::shared();
    let ns = cp.namespace("routing").await;
    let o = routable_origin().await;
    ns.apply(&storefront(o.addr)).await;
    ns.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: erratum}\nspec: {ports: [{name: http, port: 80}]}\n",
    )
    .await;
    let cluster_ip = ns.get("v1", "Service", "erratum").await.unwrap()["spec"]["clusterIP"]
        .as_str()
        .expect("the server allocated a cluster IP")
        .to_string();
    let publish = format!("{}/erratum", ns.name);
    let mut e = Erratum::spawn(cp, &ns, &["--publish-service", &publish, "--identity", "replica-a"]);
    e.ready().await;
    assert_eq!(status_of(e.url("/"), "shop.example").await, 200, "{}", e.logs());
    assert_eq!(o.hits(), 1);

    // A policy arrives: the page is served and the leader writes its status by SSA.
    let sorry = "errorResponses:\n- codes: ['503']\n  page: {inline: 'sorry', contentType: text/plain}\n";
    ns.apply(&policy("shop", "p", sorry)).await;
    eventually("the page is served", || body_of(e.url("/unavailable"), "shop.example").map_eq("sorry")).await;
    eventually("policy status written", || async {
        ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "p").await.is_some_and(|p| {
            p["status"]["attachedIngresses"] == 1
                && p["status"]["observedGeneration"] == 1
                && condition(&p, "Accepted").is_some_and(|c| c["status"] == "True")
        })
    })
    .await;
    let p = ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "p").await.unwrap();
    assert_eq!(p["metadata"]["generation"], 1, "a status write does not bump the generation");
    let managers = p["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        managers.iter().any(|m| m["manager"] == "erratum"
            && m["operation"] == "Apply"
            && m["subresource"] == "status"
            && m["fieldsV1"]["f:status"]["f:conditions"].is_object()),
        "erratum owns status by server-side apply: {managers:#?}"
    );
    assert!(
        !managers.iter().any(|m| m["manager"] == "erratum" && m["subresource"] != "status"),
        "erratum never writes a policy's spec: {managers:#?}"
    );

    // A valid edit: observedGeneration follows the generation.
    ns.apply(&policy("shop", "p", &sorry.replace("sorry", "sorry again"))).await;
    eventually("observedGeneration follows an edit", || async {
        ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "p")
            .await
            .is_some_and(|p| p["metadata"]["generation"] == 2 && p["status"]["observedGeneration"] == 2)
    })
    .await;

    // An edit the server accepts but erratum cannot use (an unknown template variable: the
    // schema cannot say): reported in status and as an Event; the last good version serves on.
    ns.apply(&policy("shop", "p", "errorResponses:\n- codes: ['503']\n  page: {inline: '{{nope}}'}\n")).await;
    eventually("invalid status written", || async {
        ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "p").await.is_some_and(|p| {
            p["status"]["observedGeneration"] == 3
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["reason"] == "LastGoodServing"))
        })
    })
    .await;
    eventually("a Warning Event about the policy", || async {
        ns.events().await.iter().any(|ev| {
            ev["type"] == "Warning"
                && ev["regarding"]["kind"] == "ErrorPagePolicy"
                && ev["regarding"]["name"] == "p"
                && ev["reportingController"] == "erratum"
                && ev["note"].as_str().is_some_and(|n| n.contains("nope"))
        })
    })
    .await;
    assert_eq!(body_of(e.url("/unavailable"), "shop.example").await, "sorry again", "last good serves on");

    // Ingress status from --publish-service (a ClusterIP Service: its allocated address).
    eventually("Ingress status written", || async {
        ns.get("networking.k8s.io/v1", "Ingress", "storefront")
            .await
            .is_some_and(|i| i["status"]["loadBalancer"]["ingress"][0]["ip"] == cluster_ip.as_str())
    })
    .await;
    let lease = ns.get("coordination.k8s.io/v1", "Lease", "erratum-leader").await.expect("a Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    // Deletion is watched too.
    ns.delete("networking.k8s.io/v1", "Ingress", "storefront").await;
    eventually("the deleted Ingress stops routing", || status_of(e.url("/"), "shop.example").map_eq(404))
        .await;
    assert_eq!(e.terminate(), Some(0));
    cp.assert_rbac_allowed_everything(&ns.name);
    let calls = cp.erratum_calls();
    for (verb, resource) in [
        ("watch", "ingresses"),
        ("watch", "errorpagepolicies"),
        ("patch", "errorpagepolicies/status"),
        ("patch", "ingresses/status"),
        ("create", "events"),
    ] {
        assert!(
            calls.iter().any(|c| c.0 == verb && c.1 == resource && c.2 == ns.name && c.3 < 300),
            "erratum did {verb} {resource} as its ServiceAccount: {calls:?}"
        );
    }
}

pub trait MapEq<T> {
    fn map_eq(self, v: T) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>>;
}

impl<F: Future<Output = u16> + Send + 'static> MapEq<u16> for F {
    fn map_eq(self, v: u16) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(async move { self.await == v })
    }
}

impl<F: Future<Output = String> + Send + 'static> MapEq<&'static str> for F {
    fn map_eq(self, v: &'static str) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(async move { self.await == v })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_the_other_takes_over_within_the_lease() {
    let cp = cluster::shared();
    let ns = cp.namespace("leader").await;
    let o = routable_origin().await;
    ns.apply(&storefront(o.addr)).await;
    let mut a = Erratum::spawn(cp, &ns, &["--identity", "replica-a"]);
    let mut b = Erratum::spawn(cp, &ns, &["--identity", "replica-b"]);
    a.ready().await;
    b.ready().await;
    eventually("one leader", || async {
        a.metric("erratum_leader ").await.unwrap_or(0.0) + b.metric("erratum_leader ").await.unwrap_or(0.0)
            == 1.0
    })
    .await;
    assert_eq!(status_of(a.url("/"), "shop.example").await, 200, "both serve");
    assert_eq!(status_of(b.url("/"), "shop.example").await, 200, "both serve");
    let holder =
        ns.get("coordination.k8s.io/v1", "Lease", "erratum-leader").await.unwrap()["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .to_string();
    let (leader, follower, follower_name) =
        if holder == "replica-a" { (&mut a, &b, "replica-b") } else { (&mut b, &a, "replica-a") };
    assert_eq!(follower.metric("erratum_leader ").await, Some(0.0));

    // SIGTERM the holder: the other holds the Lease within the lease duration (at once, as the
    // holder releases it on shutdown) and writes status from then on.
    let stopped = std::time::Instant::now();
    assert_eq!(leader.terminate(), Some(0));
    eventually("the follower takes over", || async { follower.metric("erratum_leader ").await == Some(1.0) })
        .await;
    let took = stopped.elapsed();
    assert!(took < erratum::controller::leader::LEASE_DURATION, "took over after {took:?}");
    let lease = ns.get("coordination.k8s.io/v1", "Lease", "erratum-leader").await.unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], follower_name);
    ns.apply(&policy("shop", "p", "errorResponses:\n- codes: ['404']\n  page: {inline: x}\n")).await;
    eventually("the new leader writes status", || async {
        ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "p")
            .await
            .is_some_and(|p| p["status"]["observedGeneration"] == 1)
    })
    .await;
    eprintln!("leader hand-over after SIGTERM: {took:?}");
    cp.assert_rbac_allowed_everything(&ns.name);
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Traffic on one path until stopped; counts answers with the expected status and the rest.
pub struct Traffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl Traffic {
    pub fn start(url: String, host: &'static str, expect: u16) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed) = (0, 0);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).header("host", host).send().await {
                    Ok(r) if r.status() == expect => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
        Self { stop, task }
    }

    /// (served as expected, failed)
    pub async fn stop(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_objects_changing_a_hundred_times_a_second_fail_no_request() {
    let cp = cluster::shared();
    let (ns, _origin, e) = shop(cp, "churn").await;
    assert_eq!(status_of(e.url("/missing/x"), "shop.example").await, 404);
    let rss_before = rss_kib(e.child.id());
    let load = Traffic::start(e.url("/missing/x"), "shop.example", 404);
    // 300 changes at up to 100 a second: the policy's page and an Ingress route change each
    // time; every 10th policy version is one erratum cannot use (the server accepts it).
    let started = std::time::Instant::now();
    for i in 0..300u32 {
        let page = if i % 10 == 9 { "'{{nope}}'".to_string() } else { format!("'v{i}'") };
        let next = tokio::time::Instant::now() + Duration::from_millis(10);
        ns.apply(&policy(
            "shop",
            "p",
            &format!("errorResponses:\n- codes: ['404']\n  page: {{inline: {page}}}\n"),
        ))
        .await;
        ns.apply(&ingress("shop", "churn", &[("shop.example", &format!("/v{i}"), "Exact", "web")])).await;
        tokio::time::sleep_until(next).await;
    }
    let churned = started.elapsed();
    ns.apply(&policy("shop", "p", "errorResponses:\n- codes: ['404']\n  page: {inline: final}\n")).await;
    eventually("the final version serves", || body_of(e.url("/missing/x"), "shop.example").map_eq("final"))
        .await;
    ns.apply(&policy("shop", "p", "errorResponses:\n- codes: ['404']\n  page: {inline: '{{nope}}'}\n")).await;
    eventually("the unusable version is reported", || async {
        ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "p").await.is_some_and(|p| {
            p["status"]["observedGeneration"] == p["metadata"]["generation"]
                && condition(&p, "Accepted").is_some_and(|c| c["status"] == "False")
        })
    })
    .await;
    assert_eq!(
        body_of(e.url("/missing/x"), "shop.example").await,
        "final",
        "the unusable version lost nothing"
    );
    assert_eq!(status_of(e.url("/v299"), "shop.example").await, 200);
    let (served, failed) = load.stop().await;
    let rss_after = rss_kib(e.child.id());
    eprintln!(
        "600 API writes in {churned:?}: {served} requests, {failed} failed; RSS {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(failed, 0, "no request failed: {}", e.logs());
    // Bounded, not a tight memory budget: 600 object versions must not each stay resident.
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    cp.assert_rbac_allowed_everything(&ns.name);
}

/// 1,000 Ingresses, each with its Service and EndpointSlice, created through the API while
/// erratum runs: the time from the last create to a routed request, and erratum's RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_ingresses_created_through_the_api_route() {
    const N: usize = 1000;
    let cp = cluster::shared();
    let ns = cp.namespace("scale").await;
    let o = routable_origin().await;
    let e = Erratum::spawn(cp, &ns, &[]);
    e.ready().await;
    let rss_before = rss_kib(e.child.id());
    let started = std::time::Instant::now();
    // Four writers at once, as a GitOps tool or a Helm install would.
    let ns = Arc::new(ns);
    let mut writers = Vec::new();
    for w in 0..4 {
        let ns = ns.clone();
        let addr = o.addr;
        writers.push(tokio::spawn(async move {
            for i in (w..N).step_by(4) {
                let svc = format!("web{i}");
                ns.apply(&backend("scale", &svc, &[addr])).await;
                ns.apply(&ingress(
                    "scale",
                    &format!("i{i}"),
                    &[(&format!("h{i}.example"), "/", "Prefix", &svc)],
                ))
                .await;
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let created = started.elapsed();
    let last = std::time::Instant::now();
    eventually("every Ingress routes", || async {
        status_of(e.url("/ok"), &format!("h{}.example", N - 1)).await == 200
            && status_of(e.url("/ok"), "h0.example").await == 200
    })
    .await;
    let routed = last.elapsed();
    for i in (0..N).step_by(97) {
        assert_eq!(status_of(e.url("/ok"), &format!("h{i}.example")).await, 200, "h{i}");
    }
    let rss = rss_kib(e.child.id());
    eprintln!(
        "{N} Ingresses + Services + EndpointSlices created through the API in {created:?}; \
         routed {routed:?} after the last create; erratum RSS {rss_before} -> {rss} KiB"
    );
    cp.assert_rbac_allowed_everything(&ns.name);
}

/// ingress-nginx annotations against the real API server: what erratum does not read, or
/// reads differently, or cannot use, is a Warning Event on the Ingress while the Ingress
/// serves (with the rate limit in force); `erratum migrate` reads the same Ingress from the
/// cluster through a kubeconfig.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_annotations_become_events_and_migrate_reads_the_cluster() {
    let cp = cluster::shared();
    let ns = cp.namespace("annotations").await;
    let o = routable_origin().await;
    ns.apply(&backend("shop", "web", &[o.addr])).await;
    ns.apply(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: legacy\n  annotations:\n    \
         nginx.ingress.kubernetes.io/configuration-snippet: \"more_set_headers 'X: y';\"\n    \
         nginx.ingress.kubernetes.io/limit-rps: \"1\"\n    nginx.ingress.kubernetes.io/limit-burst-multiplier: \"1\"\n    \
         nginx.ingress.kubernetes.io/proxy-body-size: \"8mb\"\nspec:\n  ingressClassName: erratum\n  rules:\n  \
         - host: legacy.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
    )
    .await;
    // Basic authentication from an Opaque Secret (its own watch beside the TLS Secrets').
    let secret = |password: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: users}}\ntype: Opaque\nstringData:\n  auth: \"ops:{{PLAIN}}{password}\"\n"
        )
    };
    ns.apply(&secret("first")).await;
    // A TLS Secret beside it: the two Secret watches each relist their own type only (a TLS
    // host whose certificate loads redirects plain HTTP; one without a certificate would not).
    let c = cert(&["secure.example"]);
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    ns.apply(&format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: cert}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(&c.pem),
        indent(&c.key_pem)
    ))
    .await;
    ns.apply(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: secure\nspec:\n  ingressClassName: erratum\n  \
         tls: [{hosts: [secure.example], secretName: cert}]\n  rules:\n  \
         - host: secure.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
    )
    .await;
    // ingress-nginx's error backend, per Ingress: what `migrate --write-policies` moves to the CRD.
    ns.apply(&backend("shop", "pages", &[o.addr])).await;
    ns.apply(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: errors\n  annotations:\n    \
         nginx.ingress.kubernetes.io/custom-http-errors: \"404\"\n    nginx.ingress.kubernetes.io/default-backend: pages\n\
         spec:\n  ingressClassName: erratum\n  rules:\n  \
         - host: errors.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
    )
    .await;
    ns.apply(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: staff\n  annotations:\n    \
         nginx.ingress.kubernetes.io/auth-type: basic\n    nginx.ingress.kubernetes.io/auth-secret: users\n\
         spec:\n  ingressClassName: erratum\n  rules:\n  \
         - host: staff.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}\n",
    )
    .await;
    let mut e = Erratum::spawn(cp, &ns, &[]);
    e.ready().await;
    let signed_in = |password: &'static str| {
        let url = e.url("/");
        async move {
            match client()
                .get(url)
                .header("host", "staff.example")
                .basic_auth("ops", Some(password))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }
    };
    assert_eq!(status_of(e.url("/"), "staff.example").await, 401, "{}", e.logs());
    assert_eq!(signed_in("first").await, 200, "{}", e.logs());
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirects.get(e.url("/")).header("host", "secure.example").send().await.unwrap();
    assert_eq!(r.status(), 308, "the TLS Secret is still there beside the Opaque one: {}", e.logs());
    ns.apply(&secret("second")).await;
    eventually("the changed password is read from the Secret", || async { signed_in("second").await == 200 })
        .await;
    assert_eq!(signed_in("first").await, 401, "the old password no longer works");
    let warned = |needle: &'static str| {
        let ns = &ns;
        async move {
            ns.events().await.iter().any(|ev| {
                ev["type"] == "Warning"
                    && ev["regarding"]["kind"] == "Ingress"
                    && ev["regarding"]["name"] == "legacy"
                    && ev["note"].as_str().is_some_and(|n| n.contains(needle))
            })
        }
    };
    eventually("a Warning Event: the snippet is never executed", || {
        warned("configuration-snippet is never executed")
    })
    .await;
    eventually("a Warning Event: the value that does not parse", || warned("proxy-body-size")).await;
    eventually("a Warning Event: 429 where ingress-nginx sends 503", || warned("429 and Retry-After")).await;
    let statuses = [
        status_of(e.url("/"), "legacy.example").await,
        status_of(e.url("/"), "legacy.example").await,
        status_of(e.url("/"), "legacy.example").await,
    ];
    assert_eq!(statuses, [200, 200, 429], "the Ingress serves, with its limit: {}", e.logs());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erratum"))
        .env("KUBECONFIG", cp.kubeconfig())
        .args(["migrate", "--namespace", &ns.name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "unsupported and invalid fail: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("Ingress {}/legacy (class erratum)", ns.name)), "{text}");
    assert!(text.contains("unsupported  configuration-snippet"), "{text}");
    assert!(text.contains("invalid      proxy-body-size"), "{text}");
    assert!(text.contains("differs      limit-rps"), "{text}");

    // The error backend's page (its answer to `GET /`) with the origin's 404; then the same
    // from the policy `migrate --write-policies` writes, applied with kubectl and checked by
    // the real CRD's schema and CEL rules, once the annotations are gone.
    let page = body_of(e.url("/"), "errors.example").await;
    let missing = || async {
        let r = client().get(e.url("/missing")).header("host", "errors.example").send().await;
        r.map(|r| r.status().as_u16()).unwrap_or(0)
    };
    assert_eq!(missing().await, 404);
    assert_eq!(body_of(e.url("/missing"), "errors.example").await, page, "the error backend's page");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erratum"))
        .env("KUBECONFIG", cp.kubeconfig())
        .args(["migrate", "--namespace", &ns.name, "--fail-on", "never", "--write-policies"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text} {}", String::from_utf8_lossy(&out.stderr));
    let file = dir.path().join(&ns.name).join("errors-error-pages.yaml");
    assert!(text.contains(&format!("wrote        {}", file.display())), "{text}");
    cp.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let key = |k: &str| format!("nginx.ingress.kubernetes.io/{k}-");
    cp.kubectl_ok(&[
        "annotate",
        "-n",
        &ns.name,
        "ingress",
        "errors",
        &key("custom-http-errors"),
        &key("default-backend"),
    ]);
    eventually("the written policy is accepted, resolved and attached", || async {
        let p = ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "errors-error-pages").await;
        p.is_some_and(|p| {
            ["Accepted", "ResolvedRefs"]
                .iter()
                .all(|t| condition(&p, t).is_some_and(|c| c["status"] == "True"))
                && p["status"]["attachedIngresses"] == 1
        })
    })
    .await;
    assert_eq!(missing().await, 404);
    assert_eq!(body_of(e.url("/missing"), "errors.example").await, page, "the same page, from the policy");
    e.child.kill().ok();
}

/// The maintenance switch through the real API server: the example policy applied off, then
/// `kubectl patch` turns it on (503 with its page, `kubectl get epp` shows `On`) and off again,
/// while a steady load sees no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_is_one_kubectl_patch_away() {
    let cp = cluster::shared();
    let (ns, _o, mut e) = shop(cp, "maintenance").await;
    let policy =
        std::fs::read_to_string(cluster::root().join("examples/policies/planned-maintenance.yaml")).unwrap();
    ns.apply(&policy).await;
    eventually("the policy is programmed", || async {
        ns.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "planned-maintenance")
            .await
            .is_some_and(|p| p["status"]["maintenance"] == "Off")
    })
    .await;
    assert_eq!(status_of(e.url("/ok"), "shop.example").await, 200);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), e.url("/ok"));
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match status_of(url.clone(), "shop.example").await {
                    200 | 503 => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        })
    };
    let patch = |on: bool| {
        let body = format!("{{\"spec\":{{\"maintenance\":{{\"enabled\":{on}}}}}}}");
        cp.kubectl_ok(&[
            "patch",
            "-n",
            &ns.name,
            "epp",
            "planned-maintenance",
            "--type",
            "merge",
            "-p",
            &body,
        ]);
    };
    for _ in 0..2 {
        patch(true);
        eventually("maintenance answers", || async { status_of(e.url("/ok"), "shop.example").await == 503 })
            .await;
        assert!(body_of(e.url("/ok"), "shop.example").await.contains("is being upgraded"));
        eventually("kubectl get epp shows it on", || async {
            let out = cp.kubectl_ok(&["get", "epp", "-n", &ns.name, "planned-maintenance"]);
            out.lines().next().is_some_and(|h| h.contains("MAINTENANCE")) && out.contains(" On ")
        })
        .await;
        patch(false);
        eventually("the backend answers again", || async {
            status_of(e.url("/ok"), "shop.example").await == 200
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "failed requests while the switch moved: {failed:?} ({ok} answered)");
    assert!(ok > 20, "the load ran: {ok}");
    e.child.kill().ok();
}
