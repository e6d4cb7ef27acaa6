//! ErrorPagePolicy status, computed by a pure function from what the table build found.
//!
//! The controller writes this to the API (server-side apply, only when it changed); file mode
//! shows it at `GET /policies` on the admin port.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::policy::{Problems, ResolvedPolicy, effective_rules};
use crate::crd::ErrorPagePolicyStatus;
use crate::index::ObjectKey;

/// What the table build found about one policy.
#[derive(Clone, Debug, Default)]
pub struct PolicyReport {
    /// The policy.
    pub key: ObjectKey,
    /// `metadata.generation` of the version in the Index.
    pub generation: Option<i64>,
    /// What is wrong with that version.
    pub problems: Problems,
    /// The version serving: the current one, an earlier good one, or none.
    pub in_effect: Option<Arc<ResolvedPolicy>>,
    /// Ingresses it applies to.
    pub attached: Vec<ObjectKey>,
    /// `targetRefs` names that match no Ingress of our class.
    pub missing_targets: Vec<String>,
    /// Where a higher-precedence policy takes over.
    pub conflicts: Vec<String>,
}

impl PolicyReport {
    /// Whether an earlier generation serves because the current one has problems.
    pub fn serving_last_good(&self) -> bool {
        !self.problems.is_empty() && self.in_effect.is_some()
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The status for a report. `now` stamps `lastTransitionTime`; the controller keeps the
/// previous stamp for conditions whose status did not change.
pub fn status(report: &PolicyReport, now: &Time) -> ErrorPagePolicyStatus {
    let generation = report.generation;
    let p = &report.problems;
    let accepted = if p.invalid.is_empty() {
        condition("Accepted", true, "Accepted", "the policy is valid".into(), generation, now)
    } else {
        condition("Accepted", false, "Invalid", p.invalid.join("; "), generation, now)
    };
    let mut unresolved = p.refs.clone();
    unresolved.extend(
        report.missing_targets.iter().map(|t| {
            format!("targetRefs: Ingress {}/{t} not found or not of our class", report.key.namespace)
        }),
    );
    let resolved = if unresolved.is_empty() {
        condition("ResolvedRefs", true, "ResolvedRefs", "every reference resolved".into(), generation, now)
    } else {
        let reason = if p.refs.is_empty() { "TargetNotFound" } else { "RefNotFound" };
        condition("ResolvedRefs", false, reason, unresolved.join("; "), generation, now)
    };
    let attached = report.attached.len();
    let programmed = match (&report.in_effect, report.serving_last_good()) {
        (None, _) => condition(
            "Programmed",
            false,
            "Invalid",
            "not applied: fix the problems above".into(),
            generation,
            now,
        ),
        (Some(good), true) => condition(
            "Programmed",
            false,
            "LastGoodServing",
            format!(
                "generation {} has problems; generation {} keeps serving",
                generation.unwrap_or(0),
                good.generation
            ),
            generation,
            now,
        ),
        (Some(_), false) if attached == 0 => condition(
            "Programmed",
            false,
            "NoTargets",
            "no Ingress of our class matches the policy's targets".into(),
            generation,
            now,
        ),
        (Some(_), false) => condition(
            "Programmed",
            true,
            "Programmed",
            format!("applies to {attached} Ingress{}", if attached == 1 { "" } else { "es" }),
            generation,
            now,
        ),
    };
    let policy = report.in_effect.as_deref();
    ErrorPagePolicyStatus {
        observed_generation: generation,
        conditions: vec![accepted, resolved, programmed],
        attached_ingresses: u32::try_from(attached).unwrap_or(u32::MAX),
        targets: policy
            .map(|pol| if pol.targets.is_empty() { "*".to_string() } else { pol.targets.join(",") }),
        codes: policy.map(|pol| pol.code_keys().collect::<Vec<_>>().join(",")),
        rules: policy.map(effective_rules).unwrap_or_default(),
        conflicts: report.conflicts.clone(),
        maintenance: policy
            .and_then(|pol| pol.maintenance.as_ref())
            .map(|m| if m.enabled { "On" } else { "Off" }.to_string()),
    }
}
