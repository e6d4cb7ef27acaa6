//! Test harness: real origins on 127.0.0.1:0, the real runtime from a manifests folder written
//! by the test, and real HTTP clients.

use std::net::SocketAddr;
use std::time::Duration;

use erratum::origin::Origin;
use erratum::runtime::{self, RunConfig, Running};

/// YAML for a Service `name` (port 80, named "http") whose EndpointSlice lists `addrs` as ready.
pub fn backend(ns: &str, name: &str, addrs: &[SocketAddr]) -> String {
    backend_with_readiness(ns, name, &addrs.iter().map(|a| (*a, true)).collect::<Vec<_>>())
}

/// Like [`backend`], with a readiness per endpoint. All addresses must share one port.
pub fn backend_with_readiness(ns: &str, name: &str, endpoints: &[(SocketAddr, bool)]) -> String {
    let port = endpoints.first().map(|(a, _)| a.port()).unwrap_or(1);
    let eps: String = endpoints
        .iter()
        .map(|(a, ready)| format!("  - addresses: [\"{}\"]\n    conditions: {{ready: {ready}}}\n", a.ip()))
        .collect();
    let eps = if eps.is_empty() { "  []\n".to_string() } else { eps };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports: [{{name: http, port: 80}}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\n\
         addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{eps}---\n"
    )
}

/// YAML for an Ingress with `(host, path, pathType, service)` rules, class erratum.
pub fn ingress(ns: &str, name: &str, rules: &[(&str, &str, &str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ingressClassName: erratum\n  rules:\n"
    );
    for (host, path, path_type, service) in rules {
        out.push_str(&format!(
            "  - host: \"{host}\"\n    http:\n      paths:\n      - path: {path}\n        pathType: {path_type}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
        ));
    }
    out.push_str("---\n");
    out
}

/// An Ingress `ns/NAME` of class erratum for `host` (`/`, Prefix) to Service `service` port 80,
/// with these ingress-nginx annotations (names without the prefix).
pub fn annotated_ingress(name: &str, host: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  annotations:\n    erratum.dev/test: \"true\"\n"
    );
    for (k, v) in annotations {
        out.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"));
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: erratum\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}\n---\n"
    ));
    out
}

/// A self-signed certificate for `names`.
pub struct TestCert {
    pub pem: String,
    pub key_pem: String,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

pub fn cert(names: &[&str]) -> TestCert {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    TestCert { pem: c.cert.pem(), key_pem: c.signing_key.serialize_pem(), der: c.cert.der().clone() }
}

/// YAML for a `kubernetes.io/tls` Secret `name` in namespace `ns` holding `c`.
pub fn secret_yaml(name: &str, c: &TestCert) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: {name}, namespace: ns}}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(&c.pem),
        indent(&c.key_pem)
    )
}

/// Sends `raw` on a new plain-HTTP connection and reads until erratum closes it.
pub async fn exchange(h: &Harness, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(h.running().http_addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "erratum closed the connection; got so far: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

/// A running erratum on a temporary manifests folder.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub running: Option<Running>,
    pub client: reqwest::Client,
}

impl Harness {
    /// Writes `manifests` to `main.yaml` and starts erratum with the default local config.
    pub async fn start(manifests: &str) -> Self {
        Self::start_with(manifests, |_| {}).await
    }

    /// Like [`Harness::start`], with a chance to adjust the configuration.
    pub async fn start_with(manifests: &str, adjust: impl FnOnce(&mut RunConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("main.yaml"), manifests).expect("write manifests");
        let mut config = RunConfig::local(dir.path());
        adjust(&mut config);
        let running = runtime::start(config).await.expect("erratum starts");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(8)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        Self { dir, running: Some(running), client }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running().http_addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.running().admin_addr, path)
    }

    /// GET `path` with a Host header.
    pub async fn get(&self, host: &str, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).header("host", host).send().await.expect("request completes")
    }

    /// Status of GET `path` for `host`.
    pub async fn status(&self, host: &str, path: &str) -> u16 {
        self.get(host, path).await.status().as_u16()
    }

    pub fn generation(&self) -> u64 {
        self.running().table().load().generation()
    }

    /// Waits until no table has been published for a while (twice the reload debounce), so a
    /// reload of earlier writes still in flight cannot be mistaken for the next write's.
    pub async fn settle(&self) {
        let quiet = erratum::source::files::RELOAD_DEBOUNCE * 2 + Duration::from_millis(100);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.generation();
            tokio::time::sleep(quiet).await;
            if self.generation() == seen {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "tables kept coming for 15 s");
        }
    }

    /// Writes a manifest file and waits until a newer table than the current one is published.
    pub async fn write_and_wait(&self, file: &str, content: &str) {
        let before = self.generation();
        std::fs::write(self.dir.path().join(file), content).expect("write");
        self.wait_for_generation(before + 1).await;
    }

    pub async fn wait_for_generation(&self, at_least: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.generation() < at_least {
            assert!(tokio::time::Instant::now() < deadline, "no table generation {at_least} within 15 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// An origin on a free loopback port.
pub async fn origin() -> Origin {
    Origin::start("127.0.0.1:0".parse().unwrap()).await.expect("origin starts")
}

/// A loopback address where nothing listens (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// YAML for an ErrorPagePolicy with `spec` (YAML, unindented).
pub fn policy(ns: &str, name: &str, spec: &str) -> String {
    let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!(
        "apiVersion: erratum.dev/v1alpha1\nkind: ErrorPagePolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}---\n"
    )
}

/// The shop: Service `web` on `origin` and Ingress `storefront` for `shop.example`.
pub fn storefront(origin: SocketAddr) -> String {
    [
        backend("shop", "web", &[origin]),
        ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "web")]),
    ]
    .concat()
}

/// The manifests (`*.yaml`, `*.yml`, `*.json`) under `dir`, recursively, sorted.
pub fn manifest_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(manifest_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// An example manifest from `examples/`.
pub fn example(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(path))
        .unwrap()
        + "\n---\n"
}

impl Harness {
    /// A request with a method, host, path and optional Accept header.
    pub async fn send(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
        accept: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.client.request(method, self.url(path)).header("host", host);
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        req.send().await.expect("request completes")
    }

    /// Waits until the page `path` for `host` is pinned (fetched by path).
    pub async fn wait_for_page(&self, host: &str, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let pages: serde_json::Value =
                self.client.get(self.admin_url("/pages")).send().await.unwrap().json().await.unwrap();
            let pinned = pages
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["host"] == host && p["path"] == path && p["bytes"].is_u64());
            if pinned {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "page {host}{path} never pinned: {pages}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The status of policy `ns/name` as `GET /policies` shows it.
    pub async fn policy_status(&self, ns: &str, name: &str) -> serde_json::Value {
        let all: serde_json::Value =
            self.client.get(self.admin_url("/policies")).send().await.unwrap().json().await.unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|p| p["namespace"] == ns && p["name"] == name)
            .expect("policy listed")["status"]
            .clone()
    }
}

/// The condition `type_` of a status.
pub fn condition(status: &serde_json::Value, type_: &str) -> serde_json::Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).cloned().unwrap_or_default()
}

/// Steady load on one URL from four tasks, counting answers with the expected status and
/// everything else (other statuses, connection errors) as failures.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts GET `path` for `host` in a loop, expecting `status`.
    pub fn start(h: &std::sync::Arc<Harness>, host: &'static str, path: &'static str, status: u16) -> Self {
        Self::start_expecting(h, host, path, vec![status])
    }

    /// Starts GET `path` for `host` in a loop, expecting any of `statuses`.
    pub fn start_expecting(
        h: &std::sync::Arc<Harness>,
        host: &'static str,
        path: &'static str,
        statuses: Vec<u16>,
    ) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..4)
            .map(|_| {
                let (h, stop, ok, failed) = (h.clone(), stop.clone(), ok.clone(), failed.clone());
                let statuses = statuses.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        match h.client.get(h.url(path)).header("host", host).send().await {
                            Ok(r) if statuses.contains(&r.status().as_u16()) => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
            .collect();
        Self { stop, ok, failed, tasks }
    }

    /// Stops the load and returns (answered as expected, failed).
    pub async fn stop(self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}
