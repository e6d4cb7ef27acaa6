//! Leader election on a coordination.k8s.io Lease: every replica serves traffic, only the
//! holder writes status. Hand-written on the Lease API (get/create/replace with
//! resourceVersion preconditions) because the crates that do this lag behind kube's major
//! versions; the protocol is the one client-go's leaderelection uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{PostParams, ResourceExt};
use tokio_util::sync::CancellationToken;

/// Lease name.
pub const LEASE_NAME: &str = "erratum-leader";
/// How long a lease is valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and the others retry.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// Whether this replica currently holds the lease.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// True while this replica is the leader.
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    fn set(&self, v: bool) {
        self.0.store(v, Ordering::Release);
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else { return true };
    let duration = spec.lease_duration_seconds.unwrap_or(LEASE_DURATION.as_secs() as i32);
    let deadline = renew.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(duration));
    deadline < Timestamp::now()
}

/// Runs the election until `shutdown`; on shutdown a holder releases the lease so another
/// replica takes over at once instead of after the lease duration.
pub async fn run(
    api: Api<Lease>,
    identity: String,
    leadership: Leadership,
    on_change: impl Fn(bool),
    shutdown: CancellationToken,
) {
    loop {
        let held = match try_acquire_or_renew(&api, &identity).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!("leader election: {e}");
                // Failing to renew for longer than the lease means someone else may lead:
                // step down rather than risk two writers.
                false
            }
        };
        if held != leadership.is_leader() {
            leadership.set(held);
            on_change(held);
            tracing::info!(identity, leader = held, "leadership changed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(RETRY_PERIOD) => {}
        }
    }
    if leadership.is_leader() {
        if let Err(e) = release(&api, &identity).await {
            tracing::warn!("releasing the lease: {e}");
        }
        leadership.set(false);
        on_change(false);
    }
}

async fn try_acquire_or_renew(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..ObjectMeta::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false), // another replica was faster
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder != identity {
        if !holder.is_empty() && !expired(spec) {
            return Ok(false);
        }
        spec.holder_identity = Some(identity.into());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
    // replace carries metadata.resourceVersion: a concurrent writer makes it fail with 409.
    match api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

async fn release(api: &Api<Lease>, identity: &str) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else { return Ok(()) };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    let _ = lease.name_any();
    api.replace(LEASE_NAME, &PostParams::default(), &lease).await.map(|_| ())
}

#[cfg(test)]
mod tests;
