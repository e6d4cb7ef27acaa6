//! The real control plane for the Kubernetes-facing tests: etcd and kube-apiserver built from
//! the Go module proxy and started by `scripts/control-plane.sh`, shared by every test of this
//! binary (started on first use), one namespace per test. Tests that break the cluster itself
//! (restart kube-apiserver, compact etcd, delete the CRD, revoke RBAC) start a private one.
//!
//! Nothing here is skipped: without Go the first test that needs the cluster fails with the
//! script's one-line message saying what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;

/// Field manager of everything the tests apply (erratum's own is `erratum`).
pub const TEST_MANAGER: &str = "erratum-tests";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    root().join("scripts/control-plane.sh")
}

fn run_script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("ERRATUM_CONTROL_PLANE_OWNER", std::process::id().to_string())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/control-plane.sh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("go: "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The stdout of a command that must have succeeded (`what` names it in the failure).
pub fn succeeded(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running etcd + kube-apiserver (stopped on drop, and by the script's watchdog when this
/// test binary exits).
pub struct ControlPlane {
    pub dir: PathBuf,
    bin: PathBuf,
    shared: bool,
    erratum_kubeconfig: PathBuf,
    /// When a kube-apiserver was (re)starting: from its start until /readyz answered.
    starting: std::sync::Mutex<Vec<(Timestamp, Timestamp)>>,
}

use k8s_openapi::jiff::Timestamp;

static SHARED: OnceLock<ControlPlane> = OnceLock::new();
static PRIVATE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The control plane shared by this test binary.
pub fn shared() -> &'static ControlPlane {
    SHARED.get_or_init(|| ControlPlane::start("shared", true))
}

/// A control plane of one's own, for tests that break the cluster.
pub fn private(what: &str) -> ControlPlane {
    let n = PRIVATE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    ControlPlane::start(&format!("{what}-{n}"), false)
}

impl ControlPlane {
    fn start(name: &str, shared: bool) -> Self {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("control-plane");
        // Folders of earlier runs (their watchdogs stopped the processes) go.
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().split('-').next().unwrap_or("").to_string();
            if !Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(format!("{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let started = std::time::Instant::now();
        run_script(&["up", dir.to_str().unwrap()]);
        eprintln!("control plane {name} ready in {:?} at {}", started.elapsed(), dir.display());
        let bin = PathBuf::from(std::fs::read_to_string(dir.join("bin")).unwrap().trim());
        let mut cp = Self {
            erratum_kubeconfig: dir.join("erratum.kubeconfig"),
            dir,
            bin,
            shared,
            starting: Default::default(),
        };
        cp.install();
        cp
    }

    /// deploy/install.yaml as a user applies it (CRD, namespace, ServiceAccount, the chart's
    /// RBAC, Deployment: no kubelet, so its pods never run), then a kubeconfig with a real
    /// ServiceAccount token (TokenRequest) for `erratum-system/erratum`: erratum runs with
    /// exactly the chart's permissions, not as an admin.
    fn install(&mut self) {
        self.kubectl_ok(&["apply", "-f", root().join("deploy/install.yaml").to_str().unwrap()]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/errorpagepolicies.erratum.dev",
        ]);
        self.write_erratum_kubeconfig();
    }

    fn write_erratum_kubeconfig(&self) {
        let token =
            self.kubectl_ok(&["create", "token", "erratum", "-n", "erratum-system", "--duration=24h"]);
        let port = std::fs::read_to_string(self.dir.join("port")).unwrap();
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\n\
             users:\n- name: erratum\n  user:\n    token: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: erratum}}\ncurrent-context: test\n",
            port.trim(),
            self.dir.join("pki/ca.crt").display(),
            token.trim()
        );
        std::fs::write(&self.erratum_kubeconfig, kubeconfig).unwrap();
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig for the chart's ServiceAccount.
    pub fn erratum_kubeconfig(&self) -> PathBuf {
        self.erratum_kubeconfig.clone()
    }

    pub fn kubectl_path(&self) -> PathBuf {
        self.bin.join("kubectl")
    }

    /// The real kubectl (built with kube-apiserver, same version), as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(if stdin.is_some() { std::process::Stdio::piped() } else { std::process::Stdio::null() })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn kubectl_apply(&self, yaml: &str) -> String {
        succeeded("kubectl apply", self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)))
    }

    /// kubectl that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        succeeded(&format!("kubectl {}", args.join(" ")), self.kubectl(args))
    }

    /// An admin client on the caller's runtime.
    pub async fn client(&self) -> kube::Client {
        client_of(&self.kubeconfig()).await
    }

    /// A namespace of the test's own (namespaces are never deleted: without
    /// kube-controller-manager their deletion never finishes). It holds the chart's
    /// leader-election Role bound to erratum's ServiceAccount, so erratum can keep its Lease
    /// there with exactly the chart's permissions.
    pub async fn namespace(&self, name: &str) -> Ns {
        let client = self.client().await;
        let ns = Ns { name: name.to_string(), client };
        ns.apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n")).await;
        let install = std::fs::read_to_string(root().join("deploy/install.yaml")).unwrap();
        let roles: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&install)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .filter(|v: &Value| v["kind"] == "Role" || v["kind"] == "RoleBinding")
            .collect();
        for v in roles {
            ns.apply_value(v).await;
        }
        ns
    }

    /// Stops kube-apiserver `n` (1: the one erratum and [`Self::kubeconfig`] talk to).
    pub fn stop_apiserver(&self, n: u32) {
        run_script(&["stop-apiserver", self.dir.to_str().unwrap(), &n.to_string()]);
    }

    /// Starts kube-apiserver `n` again on its port; returns once it is ready.
    pub fn start_apiserver(&self, n: u32) {
        let from = Timestamp::now();
        run_script(&["start-apiserver", self.dir.to_str().unwrap(), &n.to_string()]);
        self.starting.lock().unwrap().push((from, Timestamp::now()));
    }

    /// A second kube-apiserver on the same etcd (an HA control plane); its admin kubeconfig.
    pub fn add_apiserver(&self) -> PathBuf {
        run_script(&["add-apiserver", self.dir.to_str().unwrap()]);
        self.dir.join("kubeconfig-2")
    }

    /// Compacts etcd at its current revision; returns that revision.
    pub fn compact(&self) -> u64 {
        run_script(&["compact", self.dir.to_str().unwrap()]).parse().unwrap()
    }

    /// Requests made as erratum's ServiceAccount, from kube-apiserver's audit log:
    /// (verb, resource[/subresource], namespace, HTTP code).
    pub fn erratum_calls(&self) -> Vec<(String, String, String, u16)> {
        self.erratum_calls_at().into_iter().map(|(_, c)| c).collect()
    }

    fn erratum_calls_at(&self) -> Vec<(Timestamp, (String, String, String, u16))> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .map(|e| {
                let o = &e["objectRef"];
                let mut resource = o["resource"].as_str().unwrap_or("").to_string();
                if let Some(sub) = o["subresource"].as_str() {
                    resource = format!("{resource}/{sub}");
                }
                let at = e["stageTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                (
                    at,
                    (
                        e["verb"].as_str().unwrap_or("").to_string(),
                        resource,
                        o["namespace"].as_str().unwrap_or("").to_string(),
                        e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                    ),
                )
            })
            .collect()
    }

    /// Fails when kube-apiserver refused erratum anything (403) in `namespace` or cluster-wide:
    /// the chart's RBAC must allow every call erratum makes. Refusals while a kube-apiserver
    /// was starting do not count: it serves before its RBAC caches have synced and refuses
    /// everything for that moment (seen here: ~100 ms of 403s after a restart).
    pub fn assert_rbac_allowed_everything(&self, namespace: &str) {
        let calls = self.erratum_calls_at();
        assert!(!calls.is_empty(), "the audit log saw erratum's calls");
        let starting = self.starting.lock().unwrap().clone();
        let grace = k8s_openapi::jiff::SignedDuration::from_secs(2);
        let refused: Vec<_> = calls
            .iter()
            .filter(|(_, c)| c.3 == 403 && (c.2.is_empty() || c.2 == namespace))
            .filter(|(at, _)| !starting.iter().any(|(from, ready)| from <= at && *at <= *ready + grace))
            .collect();
        assert!(refused.is_empty(), "the chart's RBAC refused erratum: {refused:?}");
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if !self.shared {
            run_script(&["down", self.dir.to_str().unwrap()]);
        }
    }
}

/// A client for `kubeconfig`, on the caller's runtime.
pub async fn client_of(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A test's namespace and an admin client.
pub struct Ns {
    pub name: String,
    pub client: kube::Client,
}

/// (plural, namespaced) of the kinds the tests write.
fn resource(gvk: &GroupVersionKind) -> (ApiResource, bool) {
    let (plural, namespaced) = match gvk.kind.as_str() {
        "Namespace" => ("namespaces", false),
        "Service" => ("services", true),
        "Secret" => ("secrets", true),
        "ConfigMap" => ("configmaps", true),
        "Ingress" => ("ingresses", true),
        "IngressClass" => ("ingressclasses", false),
        "EndpointSlice" => ("endpointslices", true),
        "Lease" => ("leases", true),
        "ErrorPagePolicy" => ("errorpagepolicies", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        k => panic!("the test harness does not know kind {k}"),
    };
    (ApiResource::from_gvk_with_plural(gvk, plural), namespaced)
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

impl Ns {
    fn api(&self, api_version: &str, kind: &str) -> (Api<DynamicObject>, bool) {
        let (ar, namespaced) = resource(&gvk_of(api_version, kind));
        let api = if namespaced {
            Api::namespaced_with(self.client.clone(), &self.name, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        };
        (api, namespaced)
    }

    /// Server-side applies every document of `yaml`, namespaced ones into this namespace
    /// (whatever namespace the document names).
    pub async fn apply(&self, yaml: &str) {
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .filter(|v: &Value| !v.is_null())
            .collect();
        for v in docs {
            self.apply_value(v).await;
        }
    }

    pub async fn apply_value(&self, mut v: Value) {
        let (api, namespaced) = self.api(v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap());
        if namespaced {
            v["metadata"]["namespace"] = Value::from(self.name.as_str());
        }
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let obj: DynamicObject = serde_json::from_value(v).unwrap();
        api.patch(&name, &PatchParams::apply(TEST_MANAGER).force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }

    /// An object as the server stores it.
    pub async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let (api, _) = self.api(api_version, kind);
        api.get_opt(name).await.unwrap().map(|o| serde_json::to_value(o).unwrap())
    }

    pub async fn delete(&self, api_version: &str, kind: &str, name: &str) {
        let (api, _) = self.api(api_version, kind);
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }

    /// The events.k8s.io Events about objects of this namespace.
    pub async fn events(&self) -> Vec<Value> {
        let ar = ApiResource::from_gvk_with_plural(&gvk_of("events.k8s.io/v1", "Event"), "events");
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &self.name, &ar);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }
}

/// An address of this machine that the API server accepts in an EndpointSlice: the server
/// rejects loopback (127.0.0.0/8) endpoints, as it does in every cluster, so test origins
/// listen on a non-loopback address of the host.
pub fn routable_ip() -> std::net::IpAddr {
    static IP: OnceLock<std::net::IpAddr> = OnceLock::new();
    *IP.get_or_init(|| {
        let out = Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next()?.parse().ok())
            .expect("a non-loopback IPv4 address on this machine (`ip -4 addr show scope global`)")
    })
}

pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(Duration::from_secs(30), what, check).await
}

pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
