//! `erratum migrate --write-policies`: the ErrorPagePolicy equivalent of each Ingress's
//! `custom-http-errors` + `default-backend`, so a team can move its error pages from the
//! annotations to the CRD.
//!
//! Data flow: the Ingresses (and the ingress-nginx ConfigMap) the report reads -> the
//! controller's own annotation reader -> [`plan`], pure: per Ingress, a policy (a `backend`
//! page on the same Service, the same codes, nothing cached: what the implicit policy of
//! `table::policy::error_backend` does) or the reason none can be written -> `main` writes the
//! files. A written policy is serialised from the CRD's own types, so it is what the schema
//! accepts.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::crd::{ErrorPagePolicy, ErrorPagePolicySpec, ErrorResponse, Page, PageBackendRef, TargetRef};
use crate::index::ObjectKey;
use crate::table::annotations;

/// What `--write-policies` does for one Ingress with error-backend annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyPlan {
    /// The Ingress's namespace (the policy's too).
    pub namespace: String,
    /// The Ingress.
    pub ingress: String,
    /// The policy's name, when one is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// The file: `<folder>/<namespace>/<policy>.yaml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Why no policy is written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The manifest.
    #[serde(skip)]
    pub yaml: String,
}

/// The name of the policy written for Ingress `ingress`.
pub fn policy_name(ingress: &str) -> String {
    let mut name = format!("{ingress}-error-pages");
    // A metadata.name is at most 253 characters; an Ingress name may already be that long.
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The policies to write under `folder` for `ingresses`, with the ConfigMap's controller-wide
/// `custom-http-errors` for Ingresses that name only a `default-backend`. Pure.
pub fn plan(ingresses: &[Ingress], config_map: Option<&ConfigMap>, folder: &Path) -> Vec<PolicyPlan> {
    let mut ingresses: Vec<&Ingress> = ingresses.iter().collect();
    ingresses.sort_by_key(|i| ObjectKey::of(&i.metadata));
    let global = config_map
        .and_then(|cm| cm.data.as_ref()?.get("custom-http-errors"))
        .and_then(|v| annotations::parse_codes(v).ok());
    let mut out = Vec::new();
    for ing in ingresses {
        let key = ObjectKey::of(&ing.metadata);
        let read = annotations::read(ing.metadata.annotations.as_ref(), |_| {});
        let written = ing.metadata.annotations.as_ref().and_then(|a| {
            a.get(&format!("{}custom-http-errors", annotations::PREFIX))
                .map(|v| annotations::parse_codes(v).map_err(|e| format!("custom-http-errors {e}")))
        });
        let skip = |why: String| PolicyPlan {
            namespace: key.namespace.clone(),
            ingress: key.name.clone(),
            policy: None,
            file: None,
            skipped: Some(why),
            yaml: String::new(),
        };
        // The same choice as the table build: the Ingress's codes, else the controller's.
        let from_annotation = written.is_some();
        let codes = match (written, read.default_backend.is_some(), &global) {
            (None, false, _) | (None, true, None) => {
                if read.default_backend.is_some() {
                    out.push(skip(
                        "default-backend without custom-http-errors (here or in the ConfigMap) pages nothing; \
                         no policy needed"
                            .into(),
                    ));
                }
                continue;
            }
            (Some(Err(e)), _, _) => {
                out.push(skip(format!("{e}; fix it first")));
                continue;
            }
            (Some(Ok(codes)), _, _) => codes,
            (None, true, Some(global)) => global.clone(),
        };
        let Some(service) = read.default_backend.clone() else {
            out.push(skip(
                "custom-http-errors without default-backend renders with the controller's default backend \
                 (--default-backend-service, another namespace): run erratum with --custom-http-errors and \
                 --default-backend instead; no policy written"
                    .into(),
            ));
            continue;
        };
        let name = policy_name(&key.name);
        let policy = policy(&key, &name, &codes, &service);
        let yaml = match serde_yaml_ng::to_string(&policy) {
            Ok(y) => y,
            Err(e) => {
                out.push(skip(format!("cannot write the policy: {e}")));
                continue;
            }
        };
        let codes_list = codes.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let (whose, remove) = match from_annotation {
            true => ("its custom-http-errors", "those two annotations"),
            false => ("the ConfigMap's custom-http-errors", "the default-backend annotation"),
        };
        out.push(PolicyPlan {
            namespace: key.namespace.clone(),
            ingress: key.name.clone(),
            file: Some(folder.join(&key.namespace).join(format!("{name}.yaml")).display().to_string()),
            policy: Some(name),
            skipped: None,
            yaml: format!(
                "# Written by `erratum migrate --write-policies` for Ingress {key}: {whose}\n\
                 # ({codes_list}) and its default-backend ({service}). Apply it, then remove {remove}:\n\
                 # it serves the same pages. As a targeted policy it takes precedence over\n\
                 # namespace-wide ErrorPagePolicies, which the annotations did not.\n---\n{yaml}"
            ),
        });
    }
    out
}

/// The policy: the Ingress's codes, each asked of the Service's first port per request with
/// the original status, nothing cached (ingress-nginx asks its error backend every time).
fn policy(ingress: &ObjectKey, name: &str, codes: &[u16], service: &str) -> ErrorPagePolicy {
    let mut p = ErrorPagePolicy::new(
        name,
        ErrorPagePolicySpec {
            target_refs: vec![TargetRef {
                group: "networking.k8s.io".into(),
                kind: "Ingress".into(),
                name: ingress.name.clone(),
            }],
            error_responses: vec![ErrorResponse {
                codes: codes.iter().map(u16::to_string).collect(),
                page: Some(Page {
                    backend: Some(PageBackendRef { name: service.to_string(), port: None }),
                    ..Page::default()
                }),
                error_caching_min_ttl_seconds: Some(0),
                error_caching_max_ttl_seconds: Some(0),
                ..ErrorResponse::default()
            }],
            ..ErrorPagePolicySpec::default()
        },
    );
    p.metadata.namespace = Some(ingress.namespace.clone());
    p
}
