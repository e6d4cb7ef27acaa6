//! Status writer: ErrorPagePolicy status and Ingress `status.loadBalancer`, by server-side
//! apply with field manager `erratum`, only when they changed, only on the Lease holder; plus
//! Events (events.k8s.io) when a policy turns invalid.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::ControllerConfig;
use super::leader::Leadership;
use crate::crd::{ErrorPagePolicy, ErrorPagePolicyStatus};
use crate::index::ObjectKey;
use crate::metrics::ControllerMetrics;
use crate::table::status::status;
use crate::table::{RoutingTable, TableReader};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "erratum";

/// Keeps the previous `lastTransitionTime` of conditions whose status did not change (the
/// pure status function stamps every condition with one time).
pub fn carry_transition_times(new: &mut ErrorPagePolicyStatus, old: Option<&ErrorPagePolicyStatus>) {
    let Some(old) = old else { return };
    for c in &mut new.conditions {
        if let Some(prev) = old.conditions.iter().find(|p| p.type_ == c.type_ && p.status == c.status) {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// Status without timestamps, to decide whether a write is needed.
fn comparable(s: &ErrorPagePolicyStatus) -> ErrorPagePolicyStatus {
    let mut s = s.clone();
    for c in &mut s.conditions {
        c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    }
    s
}

/// The addresses to publish for our Ingresses: the publish Service's load-balancer
/// addresses, else its external IPs, else its cluster IP.
pub fn load_balancer(service: &Service) -> Vec<IngressLoadBalancerIngress> {
    let from_status: Vec<IngressLoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| IngressLoadBalancerIngress { ip: i.ip.clone(), hostname: i.hostname.clone(), ports: None })
        .collect();
    if !from_status.is_empty() {
        return from_status;
    }
    let spec = service.spec.as_ref();
    let ips: Vec<String> = spec
        .and_then(|s| s.external_ips.clone())
        .filter(|ips| !ips.is_empty())
        .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).filter(|ip| ip != "None").map(|ip| vec![ip]))
        .unwrap_or_default();
    ips.into_iter().map(|ip| IngressLoadBalancerIngress { ip: Some(ip), ..Default::default() }).collect()
}

fn failed(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.status == "False" && c.type_ != "Programmed")
}

/// Runs until `shutdown`: after every publish (and on gaining the lease) the leader writes
/// what changed.
#[allow(clippy::too_many_arguments)]
pub async fn writer(
    client: Client,
    config: ControllerConfig,
    table: TableReader,
    mut published: watch::Receiver<u64>,
    leadership: Leadership,
    wake: Arc<Notify>,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter { controller: FIELD_MANAGER.into(), instance: Some(config.identity.clone()) },
    );
    let mut written: HashMap<ObjectKey, ErrorPagePolicyStatus> = HashMap::new();
    let mut ingress_written: HashMap<ObjectKey, Vec<IngressLoadBalancerIngress>> = HashMap::new();
    let mut warned: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = published.changed() => if r.is_err() { return },
            _ = wake.notified() => {
                // A new leader writes everything once: another replica may have written
                // something else in between.
                written.clear();
                ingress_written.clear();
                warned.clear();
            }
        }
        if !leadership.is_leader() {
            continue;
        }
        let t = table.load();
        if !t.is_ready() {
            continue;
        }
        write_policies(&client, &t, &recorder, &mut written, &metrics).await;
        write_ingresses(&client, &config, &t, &mut ingress_written, &metrics).await;
        warn_ingresses(&t, &recorder, &mut warned).await;
    }
}

/// A Warning Event on each Ingress for each problem the build found with it (an annotation
/// erratum does not read or reads differently, a value it cannot use, a missing Service…),
/// once per problem while it lasts: a problem that goes away and comes back is told again.
async fn warn_ingresses(t: &RoutingTable, recorder: &Recorder, warned: &mut HashSet<String>) {
    let current: Vec<(&crate::table::Diagnostic, String)> = t
        .diagnostics()
        .iter()
        .filter(|d| d.kind == Some(crate::index::Kind::Ingress))
        .map(|d| (d, format!("{}\n{}", d.key, d.message)))
        .collect();
    warned.retain(|w| current.iter().any(|(_, id)| id == w));
    for (d, id) in current {
        if warned.contains(&id) {
            continue;
        }
        let regarding = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("networking.k8s.io/v1".into()),
            kind: Some("Ingress".into()),
            namespace: Some(d.key.namespace.clone()),
            name: Some(d.key.name.clone()),
            ..Default::default()
        };
        // The recorder folds Events of one (reason, action, object) into a series that keeps
        // the first note: each problem gets its own action (the annotation's name, or a
        // digest of the message) so that each is told.
        let action = match crate::table::annotations::named_in(&d.message) {
            Some(name) => name.chars().take(100).collect(),
            None => {
                use std::hash::{Hash, Hasher};
                let mut h = std::hash::DefaultHasher::new();
                d.message.hash(&mut h);
                format!("Build-{:08x}", h.finish() as u32)
            }
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "ConfigurationWarning".into(),
            note: Some(d.message.chars().take(1024).collect()),
            action,
            secondary: None,
        };
        match recorder.publish(&event, &regarding).await {
            Ok(()) => {
                warned.insert(id);
            }
            Err(e) => tracing::warn!(ingress = %d.key, "publishing an event: {e}"),
        }
    }
}

async fn write_policies(
    client: &Client,
    t: &RoutingTable,
    recorder: &Recorder,
    written: &mut HashMap<ObjectKey, ErrorPagePolicyStatus>,
    metrics: &ControllerMetrics,
) {
    let now = t.published_at().cloned().unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    for report in t.policy_reports() {
        let mut new = status(report, &now);
        let api: Api<ErrorPagePolicy> = Api::namespaced(client.clone(), &report.key.namespace);
        let previous = written.get(&report.key).cloned();
        carry_transition_times(&mut new, previous.as_ref());
        if previous.as_ref().map(comparable) == Some(comparable(&new)) {
            continue;
        }
        let patch = serde_json::json!({
            "apiVersion": "erratum.dev/v1alpha1",
            "kind": "ErrorPagePolicy",
            "status": new,
        });
        let params = PatchParams::apply(super::status::FIELD_MANAGER).force();
        match api.patch_status(&report.key.name, &params, &Patch::Apply(&patch)).await {
            Ok(obj) => {
                metrics.status_writes.with_label_values(&["ErrorPagePolicy", "ok"]).inc();
                let newly_failed = failed(&new.conditions).filter(|c| {
                    previous
                        .as_ref()
                        .is_none_or(|p| failed(&p.conditions).map(|f| &f.message) != Some(&c.message))
                });
                if let Some(c) = newly_failed {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: c.reason.clone(),
                        note: Some(c.message.chars().take(1024).collect()),
                        action: "Validate".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &obj.object_ref(&())).await {
                        tracing::warn!(policy = %report.key, "publishing an event: {e}");
                    }
                }
                written.insert(report.key.clone(), new);
            }
            Err(e) => {
                metrics.status_writes.with_label_values(&["ErrorPagePolicy", "error"]).inc();
                tracing::warn!(policy = %report.key, "writing status: {e}");
            }
        }
    }
}

async fn write_ingresses(
    client: &Client,
    config: &ControllerConfig,
    t: &RoutingTable,
    written: &mut HashMap<ObjectKey, Vec<IngressLoadBalancerIngress>>,
    metrics: &ControllerMetrics,
) {
    let Some(publish) = &config.publish_service else { return };
    let services: Api<Service> = Api::namespaced(client.clone(), &publish.namespace);
    let addresses = match services.get_opt(&publish.name).await {
        Ok(Some(svc)) => load_balancer(&svc),
        Ok(None) => {
            tracing::warn!(service = %publish, "--publish-service not found; Ingress status not written");
            return;
        }
        Err(e) => {
            tracing::warn!(service = %publish, "reading --publish-service: {e}");
            return;
        }
    };
    for key in t.ingress_keys() {
        if written.get(key) == Some(&addresses) {
            continue;
        }
        let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
        let patch = serde_json::json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "status": {"loadBalancer": {"ingress": addresses}},
        });
        match api
            .patch_status(&key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                metrics.status_writes.with_label_values(&["Ingress", "ok"]).inc();
                written.insert(key.clone(), addresses.clone());
            }
            Err(e) => {
                metrics.status_writes.with_label_values(&["Ingress", "error"]).inc();
                tracing::warn!(ingress = %key, "writing status: {e}");
            }
        }
    }
}
