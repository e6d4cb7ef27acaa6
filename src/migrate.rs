//! `erratum migrate`: what erratum would do with a cluster's (or a folder's) ingress-nginx
//! Ingresses, before any traffic moves.
//!
//! Data flow: Ingresses and the ingress-nginx ConfigMap come from manifest files (the file
//! source's parser) or from the API server (kubeconfig) -> [`report`], a pure function over
//! the same annotation reader and catalog the controller uses (so the report cannot drift
//! from what erratum does) and the table build (for findings that need every Ingress, like a
//! host whose paths all became regexes) -> text or JSON, and an exit code for CI; with
//! `--write-policies`, the ErrorPagePolicies of [`plan_policies`] beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use crate::index::{Index, Object, ObjectKey};

mod policies;

use crate::table::annotations::{self, catalog, catalog::Support};
use crate::table::{BuildConfig, LEGACY_CLASS_ANNOTATION, RoutingTable};
pub use policies::{PolicyPlan, plan as plan_policies, policy_name};

/// What went wrong reading the input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A manifest did not parse.
    #[error("{0}")]
    Manifest(String),
    /// The API server could not be asked.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// `--configmap` is not `NAMESPACE/NAME` or names nothing.
    #[error("configmap {0}")]
    ConfigMap(String),
}

/// One annotation of one Ingress, as erratum would treat it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The annotation's name, without `nginx.ingress.kubernetes.io/`.
    pub annotation: String,
    /// Its value.
    pub value: String,
    /// `supported`, `differs`, `unsupported` or `invalid`.
    pub status: &'static str,
    /// The difference, the reason, or what is wrong with the value.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

/// The findings of one Ingress.
#[derive(Clone, Debug, Serialize)]
pub struct IngressReport {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its class (`spec.ingressClassName` or the legacy annotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Per annotation, in name order.
    pub annotations: Vec<Finding>,
    /// What erratum says of the Ingress as a whole (e.g. its paths became regexes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Counts by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Ingresses looked at.
    pub ingresses: usize,
    /// Annotations read as ingress-nginx does.
    pub supported: usize,
    /// Annotations read with a difference.
    pub differs: usize,
    /// Annotations erratum ignores.
    pub unsupported: usize,
    /// Annotations whose value erratum cannot use.
    pub invalid: usize,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Per Ingress.
    pub ingresses: Vec<IngressReport>,
    /// The ingress-nginx ConfigMap's keys and what erratum has for each.
    #[serde(rename = "configMap", skip_serializing_if = "Vec::is_empty")]
    pub config_map: Vec<Finding>,
    /// Counts.
    pub summary: Summary,
    /// With `--write-policies`: the ErrorPagePolicy written for each Ingress with
    /// `custom-http-errors`, or why none is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyPlan>,
}

/// The threshold of `--fail-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Unsupported or invalid annotations fail (the default).
    Unsupported,
    /// Differences fail too.
    Difference,
    /// Never fail.
    Never,
}

impl Report {
    /// Whether the report fails at `threshold`.
    pub fn fails(&self, threshold: FailOn) -> bool {
        let s = &self.summary;
        match threshold {
            FailOn::Never => false,
            FailOn::Unsupported => s.unsupported + s.invalid > 0,
            FailOn::Difference => s.unsupported + s.invalid + s.differs > 0,
        }
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for ing in &self.ingresses {
            let class = ing.class.as_deref().map(|c| format!(" (class {c})")).unwrap_or_default();
            out.push_str(&format!("Ingress {}/{}{class}\n", ing.namespace, ing.name));
            if ing.annotations.is_empty() {
                out.push_str("  no ingress-nginx annotations\n");
            }
            for f in &ing.annotations {
                let note = if f.note.is_empty() { String::new() } else { format!(": {}", f.note) };
                out.push_str(&format!("  {:<12} {}{note}\n", f.status, f.annotation));
            }
            for w in &ing.warnings {
                out.push_str(&format!("  warning      {w}\n"));
            }
        }
        if !self.config_map.is_empty() {
            out.push_str("ConfigMap\n");
            for f in &self.config_map {
                out.push_str(&format!("  {:<12} {}: {}\n", f.status, f.annotation, f.note));
            }
        }
        if !self.policies.is_empty() {
            out.push_str("ErrorPagePolicies\n");
            for p in &self.policies {
                let ingress = format!("{}/{}", p.namespace, p.ingress);
                match (&p.file, &p.skipped) {
                    (Some(file), _) => {
                        out.push_str(&format!("  wrote        {file} (for Ingress {ingress})\n"))
                    }
                    (None, Some(why)) => out.push_str(&format!("  not written  Ingress {ingress}: {why}\n")),
                    (None, None) => {}
                }
            }
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{} Ingresses: {} annotations supported, {} with a difference, {} unsupported, {} invalid\n",
            s.ingresses, s.supported, s.differs, s.unsupported, s.invalid
        ));
        out
    }
}

/// The report on `ingresses` (and the ingress-nginx ConfigMap, if given). Pure.
pub fn report(ingresses: &[Ingress], config_map: Option<&ConfigMap>) -> Report {
    let mut sorted: Vec<&Ingress> = ingresses.iter().collect();
    sorted.sort_by_key(|i| ObjectKey::of(&i.metadata));
    let warnings = table_warnings(&sorted);
    let mut summary = Summary { ingresses: sorted.len(), ..Summary::default() };
    let mut reports = Vec::new();
    for ing in sorted {
        let key = ObjectKey::of(&ing.metadata);
        let annotations = ing.metadata.annotations.as_ref();
        // The controller's own reader: the messages it would report, by annotation.
        let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
        annotations::read(annotations, |m| {
            let name = annotations::named_in(&m).unwrap_or("").to_string();
            problems.entry(name).or_default().push(m);
        });
        let mut findings = Vec::new();
        for (k, value) in annotations.into_iter().flatten() {
            let Some(name) = k.strip_prefix(annotations::PREFIX) else { continue };
            let support = catalog::support_of(name, value);
            // What the reader says of an annotation it reads is a value it cannot use, except
            // its note of a difference (the catalog's, shown as `differs`).
            let bad: Vec<&String> = problems
                .get(name)
                .into_iter()
                .flatten()
                .filter(|m| !m.contains(annotations::DIFFERS))
                .collect();
            let invalid =
                matches!(support, Some(Support::Supported | Support::Differs(_))) && !bad.is_empty();
            let (status, note) = match support {
                _ if invalid => ("invalid", bad.iter().map(|m| m.as_str()).collect::<Vec<_>>().join("; ")),
                Some(s) => (s.label(), s.note().to_string()),
                None => ("unsupported", "not an annotation ingress-nginx documents".to_string()),
            };
            match status {
                "supported" => summary.supported += 1,
                "differs" => summary.differs += 1,
                "invalid" => summary.invalid += 1,
                _ => summary.unsupported += 1,
            }
            findings.push(Finding { annotation: name.to_string(), value: value.clone(), status, note });
        }
        reports.push(IngressReport {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            class: class_of(ing),
            annotations: findings,
            warnings: warnings.get(&key).cloned().unwrap_or_default(),
        });
    }
    Report {
        ingresses: reports,
        config_map: config_map.map(config_map_findings).unwrap_or_default(),
        summary,
        policies: Vec::new(),
    }
}

/// Findings the table build makes across Ingresses (a host whose paths all became regexes).
/// Each class is built as if erratum served it.
fn table_warnings(ingresses: &[&Ingress]) -> BTreeMap<ObjectKey, Vec<String>> {
    let mut by_class: BTreeMap<String, Index> = BTreeMap::new();
    for ing in ingresses {
        let class = class_of(ing).unwrap_or_default();
        by_class.entry(class).or_default().apply(Object::Ingress(Box::new((*ing).clone())));
    }
    let mut out: BTreeMap<ObjectKey, Vec<String>> = BTreeMap::new();
    for (class, index) in by_class {
        let config = BuildConfig { ingress_class: class, ..BuildConfig::default() };
        let table = RoutingTable::build(&index, &config, 1);
        for d in table.diagnostics() {
            if d.message.contains("regex prefix") {
                out.entry(d.key.clone()).or_default().push(d.message.clone());
            }
        }
    }
    out
}

/// An Ingress's class: `spec.ingressClassName`, else the legacy annotation.
pub fn class_of(ing: &Ingress) -> Option<String> {
    ing.spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| ing.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)).cloned())
}

/// The ingress-nginx ConfigMap keys erratum has a flag (or chart value) for, and how they map.
const CONFIG_KEYS: [(&str, &str); 13] = [
    ("allow-snippet-annotations", "snippets are never executed, whatever this says"),
    ("custom-http-errors", "--custom-http-errors (with --default-backend)"),
    ("ssl-redirect", "--ssl-redirect"),
    ("proxy-body-size", "--max-body-bytes"),
    ("load-balance", "--load-balance (ewma: p2c on requests in flight)"),
    ("proxy-connect-timeout", "--upstream-connect-timeout"),
    ("proxy-read-timeout", "--upstream-response-timeout"),
    ("proxy-next-upstream-tries", "per Ingress only (proxy-next-upstream-tries); the default is 3"),
    ("use-forwarded-headers", "--trusted-proxies (forwarded headers are read from these addresses only)"),
    ("use-proxy-protocol", "--proxy-protocol"),
    ("enable-real-ip", "--trusted-proxies"),
    ("limit-req-status-code", "not configurable: erratum refuses with 429"),
    ("http-redirect-code", "not configurable: 308"),
];

fn config_map_findings(cm: &ConfigMap) -> Vec<Finding> {
    cm.data
        .iter()
        .flatten()
        .map(|(k, v)| {
            let (status, note) = match CONFIG_KEYS.iter().find(|(key, _)| key == k) {
                // The values erratum has fixed: the same value is no difference.
                Some((_, n))
                    if (k == "limit-req-status-code" && v.trim() == "429")
                        || (k == "http-redirect-code" && v.trim() == "308") =>
                {
                    ("supported", n.to_string())
                }
                Some((_, n)) if n.starts_with("not configurable") => ("differs", n.to_string()),
                Some((_, n)) => ("supported", n.to_string()),
                None => ("unsupported", "no erratum equivalent".to_string()),
            };
            Finding { annotation: k.clone(), value: v.clone(), status, note }
        })
        .collect()
}

/// Ingresses and ConfigMaps of every manifest under `path` (a file or a folder, recursively).
pub fn from_files(path: &Path) -> Result<(Vec<Ingress>, Vec<ConfigMap>), Error> {
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    let (mut ingresses, mut config_maps) = (Vec::new(), Vec::new());
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|source| Error::Read { path: file.clone(), source })?;
        let parsed = crate::source::files::parse_manifest(&file, &text);
        if let Some(e) = parsed.errors.first() {
            return Err(Error::Manifest(e.to_string()));
        }
        for (object, _) in parsed.objects {
            match object {
                Object::Ingress(i) => ingresses.push(*i),
                Object::ConfigMap(c) => config_maps.push(*c),
                _ => {}
            }
        }
    }
    Ok((ingresses, config_maps))
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let read = |source| Error::Read { path: path.to_path_buf(), source };
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(path).map_err(read)?.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect_files(&p, out)?;
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(p);
        }
    }
    Ok(())
}

/// Ingresses of the cluster of the current kubeconfig (one namespace, or all), and the
/// ConfigMap `namespace/name` if asked.
pub async fn from_cluster(
    namespace: Option<&str>,
    config_map: Option<&str>,
) -> Result<(Vec<Ingress>, Option<ConfigMap>), Error> {
    use kube::api::{Api, ListParams};
    let client = kube::Client::try_default().await?;
    let api: Api<Ingress> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ingresses = api.list(&ListParams::default()).await?.items;
    let cm = match config_map {
        None => None,
        Some(key) => {
            let key = ObjectKey::parse(key)
                .map_err(|_| Error::ConfigMap(format!("{key:?} is not NAMESPACE/NAME")))?;
            let api: Api<ConfigMap> = Api::namespaced(client, &key.namespace);
            Some(api.get_opt(&key.name).await?.ok_or_else(|| Error::ConfigMap(format!("{key} not found")))?)
        }
    };
    Ok((ingresses, cm))
}

/// The README's migration table, in Markdown: every annotation ingress-nginx documents and
/// what erratum does with it.
pub fn markdown_table() -> String {
    let mut out = String::from("| annotation | erratum | note |\n|---|---|---|\n");
    for (name, support) in catalog::table() {
        out.push_str(&format!("| `{name}` | {} | {} |\n", support.label(), support.note()));
    }
    out
}
