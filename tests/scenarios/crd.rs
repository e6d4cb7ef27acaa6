//! The generated CRD: committed copy in sync, and every example valid against its schema and
//! CEL rules (offline: file mode's `source::strict`), and against erratum's own validation.

use std::path::PathBuf;

use crate::support::manifest_files;
use erratum::crd::crd_yaml;
use erratum::index::Index;
use erratum::source::files::parse_manifest;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Schema and CEL problems of one object: file mode's judgement (`source::strict`), which
/// `kube_crd.rs` holds to the real API server's.
fn validate(obj: &serde_json::Value) -> Vec<String> {
    erratum::source::strict::policy_problems(obj)
}

#[test]
fn committed_crd_matches_the_code() {
    let fix = "run `cargo run -- crd > crds/errorpagepolicy.yaml && cp crds/errorpagepolicy.yaml charts/erratum/crds/ && .ci/render-deploy.sh`";
    let committed = std::fs::read_to_string(root().join("crds/errorpagepolicy.yaml")).unwrap();
    assert!(committed == crd_yaml(), "crds/errorpagepolicy.yaml is stale: {fix}");
    let chart = std::fs::read_to_string(root().join("charts/erratum/crds/errorpagepolicy.yaml")).unwrap();
    assert!(chart == crd_yaml(), "the chart's CRD is stale: {fix}");
    let install = std::fs::read_to_string(root().join("deploy/install.yaml")).unwrap();
    assert!(install.contains(&crd_yaml()), "deploy/install.yaml does not hold the current CRD: {fix}");
}

/// The Dockerfile cannot be built here (no Docker engine); check what can be checked.
#[test]
fn dockerfile_ships_the_cargo_binary_as_non_root() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let bin = env!("CARGO_BIN_EXE_erratum").rsplit('/').next().unwrap();
    assert!(dockerfile.contains(&format!("cargo build --profile dist --locked --bin {bin}")), "{dockerfile}");
    assert!(dockerfile.contains(&format!("/src/target/dist/{bin} ")), "copies the binary cargo builds");
    let user = dockerfile.lines().rev().find(|l| l.starts_with("USER ")).expect("a USER line");
    let name = user.trim_start_matches("USER ").split(':').next().unwrap().trim();
    assert!(name != "root" && name != "0", "the image runs as non-root: {user}");
    let from = dockerfile.lines().rev().find(|l| l.starts_with("FROM ")).unwrap();
    assert!(from.contains("distroless") && from.contains("nonroot"), "{from}");
    assert!(
        dockerfile.lines().any(|l| l.trim() == "ENV MIMALLOC_PURGE_DELAY=0"),
        "the allocator gives emptied pages back at once (docs/architecture.md, memory per connection)"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "the build context leaves target/ out");
}

/// The secure defaults of the install: non-root, read-only root filesystem, no privilege
/// escalation, no capabilities, and the admin port (metrics, cache purge) only on a
/// ClusterIP Service, never on the public one.
#[test]
fn the_install_runs_locked_down_and_keeps_admin_off_the_public_service() {
    let install = std::fs::read_to_string(root().join("deploy/install.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&install)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    for c in pod["containers"].as_array().unwrap() {
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}", c["name"]);
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}", c["name"]);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{}", c["name"]);
        assert!(sc["privileged"] != true);
    }
    let admin_port = pod["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("an admin container port")["containerPort"]
        .clone();
    let services: Vec<_> = docs.iter().filter(|d| d["kind"] == "Service").collect();
    assert!(!services.is_empty());
    for svc in services {
        let public = matches!(svc["spec"]["type"].as_str(), Some("LoadBalancer" | "NodePort"));
        for port in svc["spec"]["ports"].as_array().unwrap() {
            let to_admin = port["targetPort"] == "admin" || port["targetPort"] == admin_port;
            assert!(!(public && to_admin), "admin exposed on {}: {port}", svc["metadata"]["name"]);
        }
    }
}

#[test]
fn every_example_is_valid() {
    let files = manifest_files(&root().join("examples"));
    let mut policies = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // 1. The API server's view: schema and CEL.
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v["kind"] == "ErrorPagePolicy" {
                policies += 1;
                let errors = validate(&v);
                assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
            }
        }
        // 2. erratum's view: parses, and resolves against the ConfigMaps of the same file.
        let parsed = parse_manifest(&file, &text);
        assert!(parsed.errors.is_empty(), "{}: {:?}", file.display(), parsed.errors);
        let mut index = Index::default();
        for (obj, _) in parsed.objects {
            index.apply(obj);
        }
        for p in index.policies.values() {
            if let Err(problems) = erratum::table::policy::resolve_alone(&index, p) {
                panic!("{}: {problems:?}", file.display());
            }
        }
    }
    assert!(policies >= 3, "examples hold the common cases");
}

#[test]
fn every_invalid_policy_of_the_corpus_is_refused() {
    let files = manifest_files(&root().join("tests/corpus/invalid"));
    let mut policies = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let v: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        if v["kind"] != "ErrorPagePolicy" || v["metadata"].get("lables").is_some() {
            continue; // other kinds and ObjectMeta typos are judged by strict decoding
        }
        policies += 1;
        assert!(!validate(&v).is_empty(), "{}: accepted", file.display());
    }
    assert!(policies >= 13, "{policies}");
}
