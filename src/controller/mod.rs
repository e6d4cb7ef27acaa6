//! The Kubernetes source: kube-runtime watchers feed the single-writer Index, a debounced
//! publisher rebuilds the routing table, and the Lease holder writes status.
//!
//! Data flow: API server ──watch──> one task per kind ──mpsc──> index writer (single writer,
//! relists swapped in whole) ──debounce──> `Publisher` (the same pure build as file mode) ──>
//! status writer (leader only: ErrorPagePolicy status and Ingress `status.loadBalancer` by
//! server-side apply, Events). The only module that imports `kube::runtime`.

pub mod leader;
pub mod status;

use std::collections::HashSet;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::crd::ErrorPagePolicy;
use crate::index::{Index, Kind, Object, ObjectKey};
use crate::metrics::ControllerMetrics;
use crate::source::publish::Publisher;
use crate::table::BuildConfig;

/// Quiet time after the last change before a rebuild: a rollout changes many EndpointSlices.
pub const REBUILD_DEBOUNCE: Duration = Duration::from_millis(100);
/// How often a missing ErrorPagePolicy CRD is looked for again.
pub const CRD_RECHECK: Duration = Duration::from_secs(30);

/// Controller settings.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    /// Table identity and fallbacks.
    pub build: BuildConfig,
    /// The Service whose address goes into Ingress `status.loadBalancer`.
    pub publish_service: Option<ObjectKey>,
    /// Namespace of the `erratum-leader` Lease.
    pub lease_namespace: String,
    /// This replica's identity in the Lease.
    pub identity: String,
}

/// Controller errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot configure a Kubernetes client (kubeconfig or in-cluster): {0}")]
    Client(#[from] kube::Error),
}

enum Msg {
    Apply(Object),
    Delete(Kind, ObjectKey),
    /// A full (re)list of one watch: replaces every object of the kind, or of the Secret type
    /// it names (two watches share the kind Secret).
    Relist(Watch, Vec<Object>),
}

/// One watch: a kind, and for Secrets which type (a field selector per type: erratum never
/// lists every Secret of the cluster).
type Watch = (Kind, Option<&'static str>);

/// The Secret types erratum watches: TLS certificates, and Opaque ones (basic-auth users,
/// `auth-secret`).
const SECRET_TYPES: [&str; 2] = ["kubernetes.io/tls", "Opaque"];

/// Every watch that must have listed once before the first table.
fn watches() -> Vec<Watch> {
    Kind::ALL
        .into_iter()
        .flat_map(|k| match k {
            Kind::Secret => SECRET_TYPES.iter().map(|t| (k, Some(*t))).collect::<Vec<_>>(),
            _ => vec![(k, None)],
        })
        .collect()
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Starts watching; returns once the tasks are spawned. The first table is published when
/// every kind has synced; `/readyz` and the proxy's 503 follow the table's readiness.
pub async fn start(
    client: Client,
    config: ControllerConfig,
    publisher: Publisher,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) -> Result<leader::Leadership, Error> {
    let (tx, rx) = mpsc::channel(1024);
    let ns = config.namespace.as_deref();
    let wc = watcher::Config::default();
    spawn_watch::<IngressClass>(
        Api::all(client.clone()),
        wc.clone(),
        (Kind::IngressClass, None),
        |o| Object::IngressClass(Box::new(o)),
        &tx,
        &metrics,
        &shutdown,
    );
    spawn_watch::<Ingress>(
        api(&client, ns),
        wc.clone(),
        (Kind::Ingress, None),
        |o| Object::Ingress(Box::new(o)),
        &tx,
        &metrics,
        &shutdown,
    );
    spawn_watch::<Service>(
        api(&client, ns),
        wc.clone(),
        (Kind::Service, None),
        |o| Object::Service(Box::new(o)),
        &tx,
        &metrics,
        &shutdown,
    );
    spawn_watch::<EndpointSlice>(
        api(&client, ns),
        wc.clone(),
        (Kind::EndpointSlice, None),
        |o| Object::EndpointSlice(Box::new(o)),
        &tx,
        &metrics,
        &shutdown,
    );
    // TLS and Opaque Secrets only, one watch each: never every Secret of the cluster (Helm
    // releases, service-account tokens) in memory; kept without their managed fields and
    // annotations (`kubectl apply` copies the whole Secret into one).
    for secret_type in SECRET_TYPES {
        spawn_watch::<Secret>(
            api(&client, ns),
            wc.clone().fields(&format!("type={secret_type}")),
            (Kind::Secret, Some(secret_type)),
            |mut o: Secret| {
                o.metadata.managed_fields = None;
                o.metadata.annotations = None;
                Object::Secret(Box::new(o))
            },
            &tx,
            &metrics,
            &shutdown,
        );
    }
    spawn_watch::<ConfigMap>(
        api(&client, ns),
        wc.clone(),
        (Kind::ConfigMap, None),
        |o| Object::ConfigMap(Box::new(o)),
        &tx,
        &metrics,
        &shutdown,
    );
    spawn_policy_watch(client.clone(), ns.map(str::to_string), tx.clone(), metrics.clone(), shutdown.clone());

    let reader = publisher.reader();
    let (published_tx, published_rx) = watch::channel(0u64);
    tokio::spawn(index_writer(rx, publisher, published_tx, shutdown.clone()));

    let leadership = leader::Leadership::default();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &config.lease_namespace);
    let gauge = metrics.leader.clone();
    let wake_on_lead = wake.clone();
    tokio::spawn(leader::run(
        leases,
        config.identity.clone(),
        leadership.clone(),
        move |leading| {
            gauge.set(i64::from(leading));
            if leading {
                wake_on_lead.notify_one();
            }
        },
        shutdown.clone(),
    ));
    tokio::spawn(status::writer(
        client,
        config,
        reader,
        published_rx,
        leadership.clone(),
        wake,
        metrics,
        shutdown,
    ));
    Ok(leadership)
}

fn spawn_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    watch: Watch,
    to_object: fn(K) -> Object,
    tx: &mpsc::Sender<Msg>,
    metrics: &ControllerMetrics,
    shutdown: &CancellationToken,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (tx, metrics, shutdown) = (tx.clone(), metrics.clone(), shutdown.clone());
    let kind = watch.0;
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut relist: Vec<Object> = Vec::new();
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => e,
            };
            let msg = match event {
                None => return,
                Some(Ok(Event::Init)) => {
                    relist.clear();
                    continue;
                }
                Some(Ok(Event::InitApply(o))) => {
                    relist.push(to_object(o));
                    continue;
                }
                Some(Ok(Event::InitDone)) => Msg::Relist(watch, std::mem::take(&mut relist)),
                Some(Ok(Event::Apply(o))) => Msg::Apply(to_object(o)),
                Some(Ok(Event::Delete(o))) => Msg::Delete(kind, to_object(o).key()),
                Some(Err(e)) => {
                    // The watcher relists with backoff; the proxy keeps serving the last table.
                    metrics.watch_errors.with_label_values(&[kind.as_str()]).inc();
                    tracing::warn!(kind = kind.as_str(), "watch error (retrying with backoff): {e}");
                    continue;
                }
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
}

/// ErrorPagePolicies, if the CRD is installed: without it erratum logs it once and keeps
/// routing Ingresses (policies simply do not apply), checking again from time to time.
fn spawn_policy_watch(
    client: Client,
    namespace: Option<String>,
    tx: mpsc::Sender<Msg>,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let api: Api<ErrorPagePolicy> = match &namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut warned = false;
        loop {
            match api.list(&kube::api::ListParams::default().limit(1)).await {
                Ok(_) => break,
                // 404: the CRD is not installed; 403: RBAC does not allow reading policies. Either
                // way, route Ingresses without policies rather than never becoming ready.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 403 => {
                    if !warned {
                        let why = if e.code == 404 {
                            "the ErrorPagePolicy CRD is not installed (kubectl apply -f crds/errorpagepolicy.yaml)"
                        } else {
                            "listing ErrorPagePolicies is forbidden (check the ClusterRole)"
                        };
                        tracing::error!("{why}; routing Ingresses without error policies");
                        warned = true;
                        // Count the kind as synced (empty) so readiness does not wait for it.
                        if tx.send(Msg::Relist((Kind::ErrorPagePolicy, None), Vec::new())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    metrics.watch_errors.with_label_values(&[Kind::ErrorPagePolicy.as_str()]).inc();
                    tracing::warn!("checking for the ErrorPagePolicy CRD: {e}");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(if warned { CRD_RECHECK } else { Duration::from_secs(2) }) => {}
            }
        }
        if warned {
            tracing::info!("the ErrorPagePolicy CRD is installed now; watching policies");
        }
        spawn_watch::<ErrorPagePolicy>(
            api,
            watcher::Config::default(),
            (Kind::ErrorPagePolicy, None),
            |o| Object::ErrorPagePolicy(Box::new(o)),
            &tx,
            &metrics,
            &shutdown,
        );
    });
}

/// The single writer of the Index: applies events, debounces, publishes once every kind has
/// synced, and after every change from then on.
async fn index_writer(
    mut rx: mpsc::Receiver<Msg>,
    mut publisher: Publisher,
    published: watch::Sender<u64>,
    shutdown: CancellationToken,
) {
    let mut index = Index::default();
    let mut synced: HashSet<Watch> = HashSet::new();
    let all = watches();
    let mut dirty = false;
    loop {
        let msg = if dirty {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                m = tokio::time::timeout(REBUILD_DEBOUNCE, rx.recv()) => match m {
                    Ok(m) => m,
                    Err(_) => {
                        if all.iter().all(|w| synced.contains(w)) {
                            // The build is synchronous CPU work: keep it off the other workers' way
                            // where the runtime allows it.
                            let generation = match tokio::runtime::Handle::current().runtime_flavor() {
                                tokio::runtime::RuntimeFlavor::MultiThread => {
                                    tokio::task::block_in_place(|| publisher.publish(&index))
                                }
                                _ => publisher.publish(&index),
                            };
                            let _ = published.send(generation);
                            dirty = false;
                        }
                        continue;
                    }
                },
            }
        } else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                m = rx.recv() => m,
            }
        };
        match msg {
            None => return,
            Some(Msg::Apply(o)) => {
                index.apply(o);
            }
            Some(Msg::Delete(kind, key)) => {
                index.delete(kind, &key);
            }
            Some(Msg::Relist((kind, part), objects)) => {
                match part {
                    Some(secret_type) => index.replace_secrets(secret_type, objects),
                    None => index.replace_kind(kind, objects),
                }
                if synced.insert((kind, part)) {
                    tracing::info!(kind = kind.as_str(), part, "initial list synced");
                }
            }
        }
        dirty = true;
    }
}
