//! The layering rule, checked on the source: `controller -> table <- proxy`. The data plane
//! never imports the sources, the CRD types or the Index (the table exposes what it needs);
//! the table imports neither kube's client nor the proxy, and carries no `dyn Any` slot for
//! proxy state. A forbidden `use` or path fails this test with the file and line.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Lines of code under `dir` (comments apart) that contain one of `forbidden`.
fn offences(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let files = if root.is_dir() { rust_files(&root) } else { vec![root] };
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in forbidden {
                if code.contains(f) {
                    found.push(format!("{}:{}: {f}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    found
}

#[test]
fn the_data_plane_imports_only_the_table() {
    let bad = offences(
        "src/proxy",
        &[
            "crate::controller",
            "crate::source",
            "crate::crd",
            "crate::index",
            "kube::",
            "use kube",
            "k8s_openapi",
        ],
    );
    assert!(bad.is_empty(), "the proxy reaches past the table:\n{}", bad.join("\n"));
    let admin = offences("src/admin.rs", &["crate::controller", "crate::source", "kube::"]);
    assert!(admin.is_empty(), "{}", admin.join("\n"));
}

#[test]
fn the_table_knows_neither_the_kube_client_nor_the_proxy() {
    let bad = offences(
        "src/table",
        &[
            "crate::proxy",
            "crate::controller",
            "crate::source",
            "kube::",
            "use kube",
            "hyper::",
            "tokio::",
            "dyn Any",
            "std::any",
        ],
    );
    assert!(bad.is_empty(), "the table is not sealed:\n{}", bad.join("\n"));
}

#[test]
fn the_sources_never_touch_the_proxy() {
    for dir in ["src/controller", "src/source", "src/index.rs", "src/crd"] {
        let bad = offences(dir, &["crate::proxy"]);
        assert!(bad.is_empty(), "{dir} reaches into the data plane:\n{}", bad.join("\n"));
    }
}

#[test]
fn the_check_finds_what_it_looks_for() {
    // The scan itself: a rule that forbids what a file certainly has must report it.
    let found = offences("src/proxy/mod.rs", &["pub mod admit"]);
    assert_eq!(found.len(), 1, "{found:?}");
}
