//! The CRD and the manifests on the real API server, with the real kubectl: the examples
//! apply, `kubectl get epp` shows the printer columns, every invalid policy of the corpus is
//! refused by the server's own schema and CEL validation, and file mode (`source::strict`)
//! reaches the same verdict as the server on one corpus: the examples, the fuzz corpus and
//! `tests/corpus/`.

use std::path::{Path, PathBuf};

use erratum::source::files::{Reason, parse_manifest};
use serde_json::Value;

use crate::cluster::{self, root};
use crate::support::manifest_files;

/// The two tests below write the same example objects: one at a time.
static EXAMPLES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every corpus file: examples, fuzz corpus, tests/corpus.
fn corpus() -> Vec<PathBuf> {
    ["examples", "fuzz/corpus/manifests", "tests/corpus"]
        .into_iter()
        .flat_map(|dir| manifest_files(&root().join(dir)))
        .collect()
}

fn namespaces_of(files: &[PathBuf]) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        let docs: Vec<Value> = if f.extension().is_some_and(|e| e == "json") {
            vec![serde_json::from_str(&text).unwrap()]
        } else {
            // The parser cannot resynchronise after a syntax error: stop at the first.
            serde_yaml_ng::Deserializer::from_str(&text)
                .map_while(|d| serde::Deserialize::deserialize(d).ok())
                .collect()
        };
        for d in docs {
            let items = d["items"].as_array().cloned().unwrap_or_else(|| vec![d.clone()]);
            for i in items {
                if let Some(ns) = i["metadata"]["namespace"].as_str() {
                    out.insert(ns.to_string());
                }
            }
        }
    }
    out
}

fn create_namespaces(cp: &cluster::ControlPlane, names: impl IntoIterator<Item = String>) {
    for ns in names {
        cp.kubectl_apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"));
    }
}

/// Field paths a message names (`spec.errorResponses[0].codes[0]`), and unknown-field names.
fn paths_in(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in message.split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == ':' || c == '\'') {
        let w = word.trim_end_matches('.');
        if (w.starts_with("spec.")
            || w.starts_with("metadata.")
            || w.starts_with("datas")
            || w.starts_with("ports[")
            || w.starts_with("endpoints["))
            && w.len() > 5
        {
            out.push(w.to_string());
        }
    }
    out
}

/// Why the server refused a file (kubectl's stderr), or None when it accepted it.
fn server_verdict(cp: &cluster::ControlPlane, file: &Path) -> Option<String> {
    let out = cp.kubectl(&["apply", "--dry-run=server", "-f", file.to_str().unwrap()]);
    if out.status.success() { None } else { Some(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

/// Why file mode refused a file, or None when it loads it.
fn file_verdict(file: &Path) -> Option<String> {
    let parsed = parse_manifest(file, &std::fs::read_to_string(file).unwrap());
    let errors: Vec<String> = parsed
        .errors
        .iter()
        .filter(|e| matches!(e.reason, Reason::Schema | Reason::Syntax))
        .map(|e| e.to_string())
        .collect();
    if errors.is_empty() { None } else { Some(errors.join("\n")) }
}

/// The one rule of the API server file mode leaves out on purpose: EndpointSlice addresses in
/// the loopback range. A cluster refuses them; without a cluster, origins on loopback are the
/// point (the quickstart's). Any other difference fails the test.
const LOOPBACK: &str = "may not be in the loopback range";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_judges_the_corpus_like_the_api_server() {
    let _one_at_a_time = EXAMPLES.lock().await;
    let cp = cluster::shared();
    let files = corpus();
    create_namespaces(cp, namespaces_of(&files));
    let (mut accepted, mut refused, mut loopback) = (0, 0, 0);
    let mut report = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root()).unwrap().display().to_string();
        let server = server_verdict(cp, file);
        let ours = file_verdict(file);
        match (&server, &ours) {
            (None, None) => accepted += 1,
            (Some(s), None)
                if s.contains(LOOPBACK) && s.lines().all(|l| l.contains(LOOPBACK) || l.trim().is_empty()) =>
            {
                loopback += 1
            }
            (Some(s), Some(o)) => {
                refused += 1;
                // The same reason: every field path the server names is named by erratum too.
                let missing: Vec<String> =
                    paths_in(s).into_iter().filter(|p| !o.contains(p.as_str())).collect();
                assert!(
                    missing.is_empty(),
                    "{rel}: the server names {missing:?}\n  server: {s}\n  erratum: {o}"
                );
                report.push(format!("{rel}\n  kubectl: {}\n  erratum: {}", s.trim(), o.trim()));
            }
            _ => panic!("{rel}: the server says {server:?}, file mode says {ours:?}"),
        }
        // The fuzz seeds may be either; the rest says what it is.
        if rel.starts_with("tests/corpus/invalid/") {
            assert!(ours.is_some(), "{rel} is refused");
        } else if !rel.starts_with("fuzz/") {
            assert!(ours.is_none(), "{rel} loads: {ours:?}");
        }
    }
    eprintln!("{}", report.join("\n"));
    eprintln!(
        "corpus: {accepted} accepted by both, {refused} refused by both, {loopback} differ only by loopback endpoints"
    );
    assert!(refused >= 18 && accepted >= 8, "the corpus holds both kinds");
    assert!(loopback >= 1, "the loopback difference is still exercised (the quickstart)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_apply_with_kubectl_and_get_shows_the_columns() {
    let _one_at_a_time = EXAMPLES.lock().await;
    let cp = cluster::shared();
    let files = manifest_files(&root().join("examples/policies"));
    create_namespaces(cp, namespaces_of(&files));
    for f in &files {
        cp.kubectl_ok(&["apply", "-f", f.to_str().unwrap()]);
    }
    let out = cp.kubectl_ok(&["get", "epp", "-A"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAMESPACE", "NAME", "TARGETS", "CODES", "MODE", "ACCEPTED", "ATTACHED", "MAINTENANCE", "AGE"],
        "{out}"
    );
    assert!(out.contains("branded-5xx"), "{out}");
    // The full resource name works as well as the short name.
    assert!(
        cp.kubectl_ok(&["get", "errorpagepolicies.erratum.dev", "-A", "-o", "name"]).contains("branded-5xx")
    );

    // An invalid policy as a user applies it: refused by the server with the CEL rule's message.
    let bad = "apiVersion: erratum.dev/v1alpha1\nkind: ErrorPagePolicy\nmetadata: {name: bad, namespace: default}\n\
               spec:\n  errorResponses: [{codes: ['404'], page: {inline: a, path: /b}}]\n";
    let out = cp.kubectl_stdin(&["apply", "-f", "-"], Some(bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("spec.errorResponses[0].page"), "{err}");
    eprintln!("kubectl apply of an invalid policy: {}", err.trim());
}
