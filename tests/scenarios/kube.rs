//! Kubernetes mode through the real binary, against the stand-in API server: routing from
//! watched objects, policy status and Ingress status written back, watch breaks and 410 Gone,
//! leader election with hand-over, and a cluster without the CRD.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::support::*;

/// A running `erratum run` (Kubernetes mode).
struct Erratum {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Erratum {
    fn spawn(api: &ApiServer, extra: &[&str]) -> Self {
        Self::spawn_with(Some(api.kubeconfig()), extra)
    }

    /// `kubeconfig: None` keeps the caller's KUBECONFIG (a real cluster).
    fn spawn_with(kubeconfig: Option<std::path::PathBuf>, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_erratum"));
        if let Some(k) = kubeconfig {
            command.env("KUBECONFIG", k);
        }
        let mut child = command
            .args(["run", "--http-addr", "127.0.0.1:0", "--https-addr", "off", "--admin-addr", "127.0.0.1:0"])
            .args(["--log-format", "json", "--workers", "1", "--lease-namespace", "erratum-system"])
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
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            let log = log.lock().unwrap();
            panic!("erratum did not start: {:?}", &log[..log.len().min(8)])
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        let field = |k: &str| v[k].as_str().or(v["fields"][k].as_str()).unwrap().parse().unwrap();
        Self { http: field("http_addr"), admin: field("admin_addr"), child, log }
    }

    fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Erratum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

async fn status_of(url: String, host: &str) -> u16 {
    match client().get(url).header("host", host).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn apply_yaml(api: &ApiServer, yaml: &str) {
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            api.apply(v);
        }
    }
}

fn publish_service(api: &ApiServer) {
    api.apply(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "erratum", "namespace": "erratum-system"},
        "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "http", "port": 80}]}
    }));
}

async fn ready(e: &Erratum) {
    let url = format!("http://{}/readyz", e.admin);
    eventually("readyz", || {
        let url = url.clone();
        async move { client().get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pages_and_status_through_the_api_server() {
    let api = ApiServer::start().await;
    let o = origin().await;
    apply_yaml(&api, &storefront(o.addr));
    publish_service(&api);
    let mut e =
        Erratum::spawn(&api, &["--publish-service", "erratum-system/erratum", "--identity", "replica-a"]);
    ready(&e).await;
    assert_eq!(status_of(format!("http://{}/", e.http), "shop.example").await, 200, "{}", e.logs());
    assert_eq!(o.hits(), 1);

    // A policy arrives: the page is served and the leader writes its status.
    apply_yaml(
        &api,
        &policy(
            "shop",
            "p",
            "errorResponses:\n- codes: ['503']\n  page: {inline: 'sorry', contentType: text/plain}\n",
        ),
    );
    let url = format!("http://{}/unavailable", e.http);
    eventually("the page is served", || {
        let url = url.clone();
        async move {
            match client().get(url).header("host", "shop.example").send().await {
                Ok(r) => r.text().await.is_ok_and(|t| t == "sorry"),
                Err(_) => false,
            }
        }
    })
    .await;
    eventually("policy status written", || async {
        api.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "shop", "p").is_some_and(|p| {
            p["status"]["attachedIngresses"] == 1
                && p["status"]["observedGeneration"] == 1
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Accepted" && c["status"] == "True"))
        })
    })
    .await;
    let p = api.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "shop", "p").unwrap();
    assert_eq!(p["metadata"]["generation"], 1, "a status write does not bump the generation");
    eventually("Ingress status written", || async {
        api.get("networking.k8s.io/v1", "Ingress", "shop", "storefront")
            .is_some_and(|i| i["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.96.0.9")
    })
    .await;
    let lease =
        api.get("coordination.k8s.io/v1", "Lease", "erratum-system", "erratum-leader").expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    // An invalid edit: reported in status and as an Event; the last good version serves on.
    apply_yaml(
        &api,
        &policy("shop", "p", "errorResponses:\n- codes: ['503']\n  page: {inline: '{{nope}}'}\n"),
    );
    eventually("invalid status written", || async {
        api.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "shop", "p").is_some_and(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["reason"] == "LastGoodServing"))
        })
    })
    .await;
    eventually("an Event is published", || async {
        !api.requests_matching("POST /apis/events.k8s.io/v1/namespaces/shop/events").is_empty()
    })
    .await;
    let r = client()
        .get(format!("http://{}/unavailable", e.http))
        .header("host", "shop.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "sorry");
    assert_eq!(e.terminate(), Some(0));
    every_call_is_allowed_by_the_committed_rbac(&api);
}

/// (apiGroup, resource[/subresource], verb) of an API request line ("METHOD /path?query").
fn rbac_request(line: &str) -> Option<(String, String, String)> {
    let (method, uri) = line.split_once(' ')?;
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", g, _, rest @ ..] => (*g, rest),
        _ => return None, // discovery
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] if !rest.is_empty() => rest,
        r => r,
    };
    let (resource, named) = match rest {
        [r] => (r.to_string(), false),
        [r, _] => (r.to_string(), true),
        [r, _, sub] => (format!("{r}/{sub}"), true),
        _ => return None,
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) if query.contains("watch=true") || query.contains("watch=1") => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group.to_string(), resource, verb.to_string()))
}

fn every_call_is_allowed_by_the_committed_rbac(api: &ApiServer) {
    let text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/install.yaml"))
            .unwrap();
    let mut rules: Vec<(Vec<String>, Vec<String>, Vec<String>)> = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["kind"] == "ClusterRole" || v["kind"] == "Role" {
            for r in v["rules"].as_array().unwrap() {
                let list = |k: &str| {
                    r[k].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
                };
                rules.push((list("apiGroups"), list("resources"), list("verbs")));
            }
        }
    }
    let calls: std::collections::BTreeSet<(String, String, String)> =
        api.requests_matching("/").iter().filter_map(|l| rbac_request(l)).collect();
    assert!(calls.iter().any(|c| c.1 == "errorpagepolicies/status" && c.2 == "patch"), "{calls:?}");
    for (group, resource, verb) in &calls {
        let allowed =
            rules.iter().any(|(g, r, v)| g.contains(group) && r.contains(resource) && v.contains(verb));
        assert!(allowed, "deploy/install.yaml does not allow {verb} {group}/{resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_breaks_and_410_gone_keep_serving_and_resync() {
    let api = ApiServer::start().await;
    let o = origin().await;
    apply_yaml(&api, &storefront(o.addr));
    let e = Erratum::spawn(&api, &[]);
    ready(&e).await;
    let base = format!("http://{}/", e.http);
    assert_eq!(status_of(base.clone(), "shop.example").await, 200);

    // Every watch is cut and history is compacted: resuming gets 410 Gone, the controller
    // relists; meanwhile the proxy serves the last table.
    let lists_before = api.requests_matching("GET /apis/networking.k8s.io/v1/ingresses?").len();
    api.compact();
    api.drop_watches();
    for _ in 0..20 {
        assert_eq!(status_of(base.clone(), "shop.example").await, 200, "served throughout");
    }
    apply_yaml(
        &api,
        &ingress(
            "shop",
            "storefront",
            &[("shop.example", "/", "Prefix", "web"), ("new.example", "/", "Prefix", "web")],
        ),
    );
    eventually("the change after the 410 is routed", || status_of(base.clone(), "new.example").map_eq(200))
        .await;
    let lists_after = api.requests_matching("GET /apis/networking.k8s.io/v1/ingresses?").len();
    assert!(lists_after > lists_before, "the controller relisted");
    // Deletion is watched too.
    api.delete("networking.k8s.io/v1", "Ingress", "shop", "storefront");
    eventually("the deleted Ingress stops routing", || status_of(base.clone(), "shop.example").map_eq(404))
        .await;
    drop(e);
}

trait MapEq {
    fn map_eq(self, v: u16) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>>;
}

impl<F: Future<Output = u16> + Send + 'static> MapEq for F {
    fn map_eq(self, v: u16) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> {
        Box::pin(async move { self.await == v })
    }
}

async fn leader_gauge(e: &Erratum) -> Option<u8> {
    let text = client().get(format!("http://{}/metrics", e.admin)).send().await.ok()?.text().await.ok()?;
    text.lines().find(|l| l.starts_with("erratum_leader "))?.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_replica_leads_and_hands_over_on_shutdown() {
    let api = ApiServer::start().await;
    let o = origin().await;
    apply_yaml(&api, &storefront(o.addr));
    let mut a = Erratum::spawn(&api, &["--identity", "replica-a"]);
    let mut b = Erratum::spawn(&api, &["--identity", "replica-b"]);
    ready(&a).await;
    ready(&b).await;
    eventually("one leader", || async {
        leader_gauge(&a).await.unwrap_or(0) + leader_gauge(&b).await.unwrap_or(0) == 1
    })
    .await;
    // Both serve traffic.
    assert_eq!(status_of(format!("http://{}/", a.http), "shop.example").await, 200);
    assert_eq!(status_of(format!("http://{}/", b.http), "shop.example").await, 200);
    let holder = api.get("coordination.k8s.io/v1", "Lease", "erratum-system", "erratum-leader").unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let (leader, follower, follower_name) =
        if holder == "replica-a" { (&mut a, &b, "replica-b") } else { (&mut b, &a, "replica-a") };
    assert_eq!(leader_gauge(follower).await, Some(0));
    assert_eq!(leader.terminate(), Some(0));
    eventually("the follower takes over", || async { leader_gauge(follower).await == Some(1) }).await;
    let lease = api.get("coordination.k8s.io/v1", "Lease", "erratum-system", "erratum-leader").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], follower_name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_crd_ingresses_still_route() {
    let api = ApiServer::start().await;
    api.uninstall_crd();
    let o = origin().await;
    apply_yaml(&api, &storefront(o.addr));
    let e = Erratum::spawn(&api, &[]);
    ready(&e).await;
    assert_eq!(status_of(format!("http://{}/", e.http), "shop.example").await, 200);
    assert!(e.logs().contains("ErrorPagePolicy CRD is not installed"), "{}", e.logs());
}

/// `kubectl` against the stand-in: apply the examples, read them back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_examples() {
    let Some(kubectl) =
        ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].into_iter().find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: kubectl is not installed");
        return;
    };
    let api = ApiServer::start().await;
    let kubeconfig = api.kubeconfig();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(kubectl)
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(args)
                    .output()
                    .expect("kubectl runs")
            })
            .await
            .unwrap()
        }
    };
    for file in [
        "examples/quickstart/quickstart.yaml",
        "examples/policies/branded-5xx.yaml",
        "examples/policies/spa-fallback.yaml",
    ] {
        let out = run(vec![
            "apply".into(),
            "--validate=false".into(),
            "-f".into(),
            root.join(file).display().to_string(),
        ])
        .await;
        assert!(
            out.status.success(),
            "kubectl apply {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(api.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "shop", "branded-5xx").is_some());
    assert!(api.get("networking.k8s.io/v1", "Ingress", "demo", "quickstart").is_some());
    let out =
        run(vec!["get".into(), "errorpagepolicies".into(), "-A".into(), "-o".into(), "name".into()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("branded-5xx") && text.contains("quickstart-errors"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The same scenario on a real cluster (kind, k3d, …) for users and future CI that have one:
/// `KUBECONFIG=... cargo test --test scenarios e2e_cluster -- --ignored`. erratum runs as a
/// local process against the cluster, so this checks the control loop (watch, status by
/// server-side apply, Lease), not traffic into the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a cluster: KUBECONFIG pointing at kind/k3d"]
async fn e2e_cluster_status_and_leader() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::CustomResourceExt;
    use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
    let client = kube::Client::try_default().await.expect("KUBECONFIG points at a cluster");
    let apply = PatchParams::apply("erratum-e2e").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = erratum::crd::ErrorPagePolicy::crd();
    crds.patch("errorpagepolicies.erratum.dev", &apply, &Patch::Apply(&crd)).await.expect("install the CRD");
    tokio::time::sleep(Duration::from_secs(3)).await; // let it become Established
    let ns = "erratum-e2e";
    let docs = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n{}{}",
        ingress(ns, "storefront", &[("shop.example", "/", "Prefix", "web")]),
        policy(
            ns,
            "p",
            "errorResponses:\n- codes: ['503']\n  page: {inline: sorry, contentType: text/plain}\n"
        ),
    );
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    for doc in serde_yaml_ng::Deserializer::from_str(&docs) {
        let obj: DynamicObject = serde::Deserialize::deserialize(doc).unwrap();
        let gvk = kube::api::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
        let (ar, caps) = discovery.resolve_gvk(&gvk).expect("known kind");
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), ns, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(&obj.metadata.name.clone().unwrap(), &apply, &Patch::Apply(&obj)).await.expect("apply");
    }
    let mut e = Erratum::spawn_with(None, &["--namespace", ns, "--lease-namespace", ns, "--identity", "e2e"]);
    ready(&e).await;
    let policies: Api<erratum::crd::ErrorPagePolicy> = Api::namespaced(client.clone(), ns);
    eventually("status written on the cluster", || async {
        policies.get("p").await.ok().and_then(|p| p.status).is_some_and(|s| {
            s.attached_ingresses == 1
                && s.conditions.iter().any(|c| c.type_ == "Accepted" && c.status == "True")
        })
    })
    .await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), ns);
    let lease = leases.get("erratum-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("e2e"));
    assert_eq!(e.terminate(), Some(0));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_objects_changing_a_hundred_times_a_second_fail_no_request() {
    let api = ApiServer::start().await;
    let o = origin().await;
    apply_yaml(&api, &storefront(o.addr));
    publish_service(&api);
    let e = Erratum::spawn(&api, &["--publish-service", "erratum-system/erratum"]);
    ready(&e).await;
    let base = format!("http://{}/missing/x", e.http);
    assert_eq!(status_of(base.clone(), "shop.example").await, 404);
    let rss_before = rss_kib(e.child.id());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let (stop, failed, served, base) = (stop.clone(), failed.clone(), served.clone(), base.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&base).header("host", "shop.example").send().await {
                    Ok(r) if r.status() == 404 => served.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    _ => failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                };
            }
        })
    };
    // 300 changes at 100 a second: the policy's page and an Ingress route change each time;
    // every 10th policy version is invalid (a code the schema would reject: this stand-in has
    // no admission, like a cluster whose CRD is older than the controller).
    let started = std::time::Instant::now();
    for i in 0..300u32 {
        let code = if i % 10 == 9 { "999" } else { "404" };
        apply_yaml(
            &api,
            &policy(
                "shop",
                "p",
                &format!("errorResponses:\n- codes: ['{code}']\n  page: {{inline: 'v{i}'}}\n"),
            ),
        );
        apply_yaml(&api, &ingress("shop", "churn", &[("shop.example", &format!("/v{i}"), "Exact", "web")]));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let churned = started.elapsed();
    // Changes closer together than the publish debounce are coalesced: what serves is the
    // last good *published* state. Settle on a known good version, then break it.
    let apply_policy = |body: &str, code: &str| {
        apply_yaml(
            &api,
            &policy(
                "shop",
                "p",
                &format!("errorResponses:\n- codes: ['{code}']\n  page: {{inline: '{body}'}}\n"),
            ),
        )
    };
    apply_policy("final", "404");
    eventually("the final version serves", || {
        let base = base.clone();
        async move {
            match client().get(base).header("host", "shop.example").send().await {
                Ok(r) => r.text().await.is_ok_and(|t| t == "final"),
                Err(_) => false,
            }
        }
    })
    .await;
    apply_policy("broken", "999");
    eventually("the invalid version is reported", || async {
        api.get("erratum.dev/v1alpha1", "ErrorPagePolicy", "shop", "p").is_some_and(|p| {
            p["status"]["observedGeneration"] == p["metadata"]["generation"]
                && p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Accepted" && c["status"] == "False"))
        })
    })
    .await;
    let body = client().get(&base).header("host", "shop.example").send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "final", "the invalid version lost nothing");
    assert_eq!(status_of(format!("http://{}/v299", e.http), "shop.example").await, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    let rss_after = rss_kib(e.child.id());
    eprintln!(
        "600 API changes in {churned:?}: {} requests, {} failed; RSS {rss_before} -> {rss_after} KiB",
        served.load(std::sync::atomic::Ordering::Relaxed),
        failed.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(failed.load(std::sync::atomic::Ordering::Relaxed), 0, "no request failed: {}", e.logs());
    // Bounded, not a tight memory budget: 600 object versions must not each stay resident.
    assert!(rss_after < rss_before + 64 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
    drop(e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ingresses_from_the_api_load_and_route() {
    let api = ApiServer::start().await;
    let o = origin().await;
    apply_yaml(&api, &backend("shop", "web", &[o.addr]));
    for i in 0..10_000 {
        apply_yaml(
            &api,
            &ingress("shop", &format!("i{i}"), &[(&format!("h{i}.example"), "/", "Prefix", "web")]),
        );
    }
    let started = std::time::Instant::now();
    let e = Erratum::spawn(&api, &[]);
    ready(&e).await;
    let ready_after = started.elapsed();
    for host in ["h0.example", "h5000.example", "h9999.example"] {
        assert_eq!(status_of(format!("http://{}/ok", e.http), host).await, 200, "{host}");
    }
    eprintln!(
        "10,000 Ingresses from the API: ready {ready_after:?} after start; RSS {} KiB",
        rss_kib(e.child.id())
    );
    drop(e);
}
