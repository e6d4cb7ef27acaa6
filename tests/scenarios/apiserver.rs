//! A stand-in Kubernetes API server for tests, speaking the real wire protocol to a real
//! `kube::Client` (and, for the basics, to `kubectl`).
//!
//! It is NOT a kube-apiserver. It models: discovery for the kinds erratum uses; list with
//! `kind`/`apiVersion`/`resourceVersion`; watch from a resourceVersion with BOOKMARKs and
//! `410 Gone` when asked to resume from a compacted version; create, replace (409 on a stale
//! resourceVersion), patch (merge; server-side apply treated as a merge of the applied
//! fields), a separate `/status` subresource, `metadata.generation` bumped on spec changes
//! only, deletion, Leases and Events as plain objects, `type=` field selectors and `k=v`
//! label selectors. It does NOT model: admission, defaulting, schema or CEL validation
//! (covered by the CRD schema tests), managedFields and SSA conflict detection, strategic
//! merge patch, JSON patch, pagination, authentication and RBAC, watch caches per resource.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// (group, version, plural, kind, namespaced)
const RESOURCES: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "namespaces", "Namespace", false),
    ("", "v1", "services", "Service", true),
    ("", "v1", "secrets", "Secret", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "events", "Event", true),
    ("events.k8s.io", "v1", "events", "Event", true),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", true),
    ("networking.k8s.io", "v1", "ingressclasses", "IngressClass", false),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true),
    ("coordination.k8s.io", "v1", "leases", "Lease", true),
    ("erratum.dev", "v1alpha1", "errorpagepolicies", "ErrorPagePolicy", true),
];

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    res: usize,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// (resource, namespace, name) -> object
    objects: BTreeMap<(usize, String, String), Value>,
    history: Vec<WatchEvent>,
    compacted: u64,
    uid: u64,
    /// Every request as "METHOD path?query", for assertions.
    log: Vec<String>,
}

/// The running stand-in.
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
    watches: Arc<Mutex<CancellationToken>>,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
    crd_installed: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl ApiServer {
    /// Starts on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (events, _) = broadcast::channel(4096);
        let server = Self {
            state: Arc::new(Mutex::new(State::default())),
            events,
            watches: Arc::new(Mutex::new(CancellationToken::new())),
            shutdown: CancellationToken::new(),
            dir: tempfile::tempdir().unwrap(),
            crd_installed: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: \"http://{addr}\"}}\n\
             contexts:\n- name: test\n  context: {{cluster: test, user: test, namespace: default}}\n\
             current-context: test\nusers:\n- name: test\n  user: {{token: test}}\n"
        );
        std::fs::write(server.kubeconfig(), kubeconfig).unwrap();
        let shared = Shared {
            state: server.state.clone(),
            events: server.events.clone(),
            watches: server.watches.clone(),
            crd_installed: server.crd_installed.clone(),
        };
        let shutdown = server.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.handle(req).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! { _ = conn => {}, _ = shutdown.cancelled() => {} }
                });
            }
        });
        server
    }

    /// Path of a kubeconfig that points at this server.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Makes the ErrorPagePolicy resource unknown (404), as when its CRD is not installed.
    pub fn uninstall_crd(&self) {
        self.crd_installed.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Creates or replaces an object (as an admin would with kubectl apply).
    pub fn apply(&self, obj: Value) {
        let (res, ns, name) = locate(&obj);
        let shared = self.shared();
        let mut st = self.state.lock().unwrap();
        let existing = st.objects.get(&(res, ns.clone(), name.clone())).cloned();
        let obj = match existing {
            Some(old) => shared.store(&mut st, res, &ns, &name, updated(&old, obj, false)),
            None => {
                let fresh = created(&mut st, obj);
                shared.store(&mut st, res, &ns, &name, fresh)
            }
        };
        let _ = obj;
    }

    /// Deletes an object.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) {
        let res = RESOURCES.iter().position(|r| api_version_of(r) == api_version && r.3 == kind).unwrap();
        let ns = if RESOURCES[res].4 { ns.to_string() } else { String::new() };
        let mut st = self.state.lock().unwrap();
        if let Some(obj) = st.objects.remove(&(res, ns.clone(), name.to_string())) {
            self.shared().emit(&mut st, res, &ns, "DELETED", obj);
        }
    }

    /// An object, as stored.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let res = RESOURCES.iter().position(|r| api_version_of(r) == api_version && r.3 == kind)?;
        let ns = if RESOURCES[res].4 { ns.to_string() } else { String::new() };
        self.state.lock().unwrap().objects.get(&(res, ns, name.to_string())).cloned()
    }

    /// Ends every open watch (clients must re-watch).
    pub fn drop_watches(&self) {
        let mut w = self.watches.lock().unwrap();
        w.cancel();
        *w = CancellationToken::new();
    }

    /// Forgets history: resuming a watch from any earlier resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        let mut st = self.state.lock().unwrap();
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Requests received so far matching `needle`.
    pub fn requests_matching(&self, needle: &str) -> Vec<String> {
        self.state.lock().unwrap().log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    fn shared(&self) -> Shared {
        Shared {
            state: self.state.clone(),
            events: self.events.clone(),
            watches: self.watches.clone(),
            crd_installed: self.crd_installed.clone(),
        }
    }
}

fn api_version_of(r: &(&str, &str, &str, &str, bool)) -> String {
    api_version(r.0, r.1)
}

fn locate(obj: &Value) -> (usize, String, String) {
    let av = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let res = RESOURCES
        .iter()
        .position(|r| api_version_of(r) == av && r.3 == kind)
        .unwrap_or_else(|| panic!("unknown {av} {kind}"));
    let ns = if RESOURCES[res].4 {
        obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string()
    } else {
        String::new()
    };
    (res, ns, obj["metadata"]["name"].as_str().unwrap().to_string())
}

fn now() -> String {
    httpdate_like()
}

fn httpdate_like() -> String {
    // RFC 3339, seconds precision, from the system clock.
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    k8s_openapi::jiff::Timestamp::from_second(secs as i64).unwrap().to_string()
}

/// Fills in server-side metadata of a new object.
fn created(st: &mut State, mut obj: Value) -> Value {
    st.uid += 1;
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    meta.insert("uid".into(), json!(format!("00000000-0000-0000-0000-{:012}", st.uid)));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    obj
}

/// The object after an update: generation bumps when the spec changes; `status_only` keeps
/// everything but the status.
fn updated(old: &Value, new: Value, status_only: bool) -> Value {
    let mut out = if status_only {
        let mut o = old.clone();
        o["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        o
    } else {
        let mut o = new;
        if let Some(s) = old.get("status") {
            o["status"] = s.clone();
        }
        for k in ["uid", "creationTimestamp", "generation"] {
            if let Some(v) = old["metadata"].get(k) {
                o["metadata"][k] = v.clone();
            }
        }
        o
    };
    let spec_changed = out.get("spec") != old.get("spec");
    let generation =
        old["metadata"]["generation"].as_i64().unwrap_or(1) + i64::from(!status_only && spec_changed);
    out["metadata"]["generation"] = json!(generation);
    out
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<WatchEvent>,
    watches: Arc<Mutex<CancellationToken>>,
    crd_installed: Arc<std::sync::atomic::AtomicBool>,
}

fn respond(code: StatusCode, v: Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    respond(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

struct Target {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Shared {
    fn store(&self, st: &mut State, res: usize, ns: &str, name: &str, mut obj: Value) -> Value {
        st.rv += 1;
        let (g, v, _, kind, namespaced) = RESOURCES[res];
        obj["apiVersion"] = json!(api_version(g, v));
        obj["kind"] = json!(kind);
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        if namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let existed = st.objects.insert((res, ns.to_string(), name.to_string()), obj.clone()).is_some();
        let rv = st.rv;
        st.history.push(WatchEvent {
            rv,
            res,
            namespace: ns.to_string(),
            kind: if existed { "MODIFIED" } else { "ADDED" },
            object: obj.clone(),
        });
        let _ = self.events.send(st.history.last().unwrap().clone());
        obj
    }

    fn emit(&self, st: &mut State, res: usize, ns: &str, kind: &'static str, mut obj: Value) {
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let ev = WatchEvent { rv: st.rv, res, namespace: ns.to_string(), kind, object: obj };
        st.history.push(ev.clone());
        let _ = self.events.send(ev);
    }

    fn parse(&self, path: &str) -> Option<Result<Target, Response<Body>>> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let (plural, name, sub) = match rest {
            [p] => (*p, None, None),
            [p, n] => (*p, Some(n.to_string()), None),
            [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
            _ => return None,
        };
        // "namespaces/foo" itself is the Namespace object.
        let res = RESOURCES.iter().position(|r| r.0 == group && r.1 == version && r.2 == plural)?;
        if group == "erratum.dev" && !self.crd_installed.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(Err(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            )));
        }
        Some(Ok(Target { res, namespace, name, subresource: sub }))
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| {
                (k.to_string(), percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
            })
            .collect();
        self.state.lock().unwrap().log.push(format!("{} {}", req.method(), req.uri()));
        if let Some(resp) = self.discovery(&path) {
            return resp;
        }
        let target = match self.parse(&path) {
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource",
                );
            }
            Some(Err(resp)) => return resp,
            Some(Ok(t)) => t,
        };
        let method = req.method().clone();
        let content_type =
            req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let ns = if RESOURCES[target.res].4 {
            target.namespace.clone().unwrap_or_default()
        } else {
            String::new()
        };
        match (&method, &target.name) {
            (&Method::GET, None) if query.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                self.watch(&target, &query)
            }
            (&Method::GET, None) => self.list(&target, &query),
            (&Method::GET, Some(name)) => {
                match self.state.lock().unwrap().objects.get(&(target.res, ns, name.clone())) {
                    Some(o) => respond(StatusCode::OK, o.clone()),
                    None => status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("{} {name} not found", RESOURCES[target.res].2),
                    ),
                }
            }
            (&Method::POST, None) => {
                let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string).or_else(|| {
                    obj["metadata"]["generateName"]
                        .as_str()
                        .map(|g| format!("{g}{:05}", fastrand::u32(..100000)))
                }) else {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name is required");
                };
                let mut st = self.state.lock().unwrap();
                if st.objects.contains_key(&(target.res, ns.clone(), name.clone())) {
                    return status(StatusCode::CONFLICT, "AlreadyExists", &format!("{name} already exists"));
                }
                let mut obj = created(&mut st, obj);
                obj["metadata"]["name"] = json!(name);
                let stored = self.store(&mut st, target.res, &ns, &name, obj);
                respond(StatusCode::CREATED, stored)
            }
            (&Method::PUT, Some(name)) => {
                let Ok(obj) = serde_json::from_slice::<Value>(&body) else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let mut st = self.state.lock().unwrap();
                let Some(old) = st.objects.get(&(target.res, ns.clone(), name.clone())).cloned() else {
                    return status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found"));
                };
                if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
                    && Some(rv) != old["metadata"]["resourceVersion"].as_str()
                {
                    return status(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    );
                }
                let new = updated(&old, obj, target.subresource.as_deref() == Some("status"));
                let stored = self.store(&mut st, target.res, &ns, name, new);
                respond(StatusCode::OK, stored)
            }
            (&Method::PATCH, Some(name)) => {
                let patch: Value = if content_type.contains("yaml") {
                    match serde_yaml_ng::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
                    }
                } else {
                    match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
                    }
                };
                if !(content_type.starts_with("application/merge-patch+json")
                    || content_type.starts_with("application/apply-patch"))
                {
                    return status(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        "only merge and apply patches are modelled",
                    );
                }
                let status_only = target.subresource.as_deref() == Some("status");
                let mut st = self.state.lock().unwrap();
                let key = (target.res, ns.clone(), name.clone());
                let old = match st.objects.get(&key).cloned() {
                    Some(o) => o,
                    None if content_type.starts_with("application/apply-patch") && !status_only => {
                        // Server-side apply creates.
                        let mut obj = created(&mut st, patch.clone());
                        obj["metadata"]["name"] = json!(name);
                        let stored = self.store(&mut st, target.res, &ns, name, obj);
                        return respond(StatusCode::CREATED, stored);
                    }
                    None => return status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
                };
                let mut merged = old.clone();
                let mut patch = patch;
                if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                if status_only {
                    merge(
                        &mut merged,
                        &json!({"status": patch.get("status").cloned().unwrap_or(Value::Null)}),
                    );
                } else {
                    if let Some(p) = patch.as_object_mut() {
                        p.remove("status");
                    }
                    merge(&mut merged, &patch);
                }
                let new = updated(&old, merged, status_only);
                let stored = self.store(&mut st, target.res, &ns, name, new);
                respond(StatusCode::OK, stored)
            }
            (&Method::DELETE, Some(name)) => {
                let mut st = self.state.lock().unwrap();
                match st.objects.remove(&(target.res, ns.clone(), name.clone())) {
                    Some(obj) => {
                        self.emit(&mut st, target.res, &ns, "DELETED", obj.clone());
                        respond(StatusCode::OK, obj)
                    }
                    None => status(StatusCode::NOT_FOUND, "NotFound", &format!("{name} not found")),
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not modelled"),
        }
    }

    fn matches(&self, target: &Target, query: &BTreeMap<String, String>, ns: &str, obj: &Value) -> bool {
        if let Some(want) = &target.namespace
            && RESOURCES[target.res].4
            && want != ns
        {
            return false;
        }
        let selector_ok = |sel: Option<&String>, get: &dyn Fn(&str) -> Option<String>| {
            sel.is_none_or(|s| {
                s.split(',').filter(|t| !t.is_empty()).all(|term| match term.split_once('=') {
                    Some((k, v)) => get(k.trim_end_matches('=')).as_deref() == Some(v),
                    None => get(term).is_some(),
                })
            })
        };
        selector_ok(query.get("fieldSelector"), &|k| match k {
            "type" => obj["type"].as_str().map(str::to_string),
            "metadata.name" => obj["metadata"]["name"].as_str().map(str::to_string),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str().map(str::to_string),
            _ => None,
        }) && selector_ok(query.get("labelSelector"), &|k| {
            obj["metadata"]["labels"][k].as_str().map(str::to_string)
        })
    }

    fn list(&self, target: &Target, query: &BTreeMap<String, String>) -> Response<Body> {
        let st = self.state.lock().unwrap();
        let (g, v, _, kind, _) = RESOURCES[target.res];
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((res, ns, _), obj)| *res == target.res && self.matches(target, query, ns, obj))
            .map(|(_, o)| o.clone())
            .collect();
        respond(
            StatusCode::OK,
            json!({"apiVersion": api_version(g, v), "kind": format!("{kind}List"),
                   "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
        )
    }

    fn watch(&self, target: &Target, query: &BTreeMap<String, String>) -> Response<Body> {
        let from: u64 = query.get("resourceVersion").and_then(|r| r.parse().ok()).unwrap_or(0);
        let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let timeout = query.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(300u64);
        let mut rx = self.events.subscribe();
        let cancel = self.watches.lock().unwrap().clone();
        let (g, v, _, kind, _) = RESOURCES[target.res];
        let (res, ns_filter) = (target.res, target.namespace.clone().filter(|_| RESOURCES[target.res].4));
        let field = query.clone();
        let me = self.clone();
        let target_copy = Target { res, namespace: ns_filter.clone(), name: None, subresource: None };
        let (backlog, gone, current) = {
            let st = self.state.lock().unwrap();
            let gone = from != 0 && from < st.compacted;
            let backlog: Vec<WatchEvent> = st
                .history
                .iter()
                .filter(|e| {
                    e.rv > from && e.res == res && me.matches(&target_copy, &field, &e.namespace, &e.object)
                })
                .cloned()
                .collect();
            (backlog, gone, st.rv)
        };
        let (tx, out) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
        let line = |v: Value| Ok(Frame::data(Bytes::from(format!("{v}\n"))));
        tokio::spawn(async move {
            if gone {
                let _ = tx
                    .send(line(json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}})))
                    .await;
                return;
            }
            let mut last = from.max(if from == 0 { current } else { 0 });
            for e in backlog {
                last = last.max(e.rv);
                if tx.send(line(json!({"type": e.kind, "object": e.object}))).await.is_err() {
                    return;
                }
            }
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        if bookmarks {
                            let rv = me.state.lock().unwrap().rv;
                            let b = json!({"type": "BOOKMARK", "object": {"apiVersion": api_version(g, v), "kind": kind,
                                "metadata": {"resourceVersion": rv.to_string()}}});
                            if tx.send(line(b)).await.is_err() { return; }
                        }
                    }
                    e = rx.recv() => match e {
                        Ok(e) if e.rv > last && e.res == res && me.matches(&target_copy, &field, &e.namespace, &e.object) => {
                            last = e.rv;
                            if tx.send(line(json!({"type": e.kind, "object": e.object}))).await.is_err() { return; }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => return,
                    }
                }
            }
        });
        let stream = tokio_stream_from(out);
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-type", "application/json".parse().unwrap());
        r
    }

    fn discovery(&self, path: &str) -> Option<Response<Body>> {
        let crd = self.crd_installed.load(std::sync::atomic::Ordering::SeqCst);
        let visible = |r: &&(&str, &str, &str, &str, bool)| crd || r.0 != "erratum.dev";
        let resources = |group: &str, version: &str| -> Vec<Value> {
            RESOURCES
                .iter()
                .filter(visible)
                .filter(|r| r.0 == group && r.1 == version)
                .flat_map(|r| {
                    let main = json!({"name": r.2, "singularName": r.3.to_lowercase(), "namespaced": r.4, "kind": r.3,
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]});
                    let status = json!({"name": format!("{}/status", r.2), "singularName": "", "namespaced": r.4, "kind": r.3,
                        "verbs": ["get", "patch", "update"]});
                    [main, status]
                })
                .collect()
        };
        let v = match path.trim_end_matches('/') {
            "/api" => json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            "/apis" => {
                let mut groups: Vec<&str> =
                    RESOURCES.iter().filter(visible).map(|r| r.0).filter(|g| !g.is_empty()).collect();
                groups.dedup();
                let groups: Vec<Value> = groups
                    .iter()
                    .map(|g| {
                        let v = RESOURCES.iter().find(|r| r.0 == *g).unwrap().1;
                        json!({"name": g, "versions": [{"groupVersion": format!("{g}/{v}"), "version": v}],
                               "preferredVersion": {"groupVersion": format!("{g}/{v}"), "version": v}})
                    })
                    .collect();
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            }
            "/version" => json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-erratum-test"}),
            p => {
                let parts: Vec<&str> = p.trim_matches('/').split('/').collect();
                let (g, v) = match parts.as_slice() {
                    ["api", v] => ("", *v),
                    ["apis", g, v] => (*g, *v),
                    _ => return None,
                };
                let rs = resources(g, v);
                if rs.is_empty() {
                    return Some(status(StatusCode::NOT_FOUND, "NotFound", "no such group version"));
                }
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version(g, v), "resources": rs})
            }
        };
        Some(respond(StatusCode::OK, v))
    }
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
