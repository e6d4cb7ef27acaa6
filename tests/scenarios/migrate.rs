//! `erratum migrate` through the real binary on a folder of Ingresses shaped like the ones
//! ingress-nginx users run (its docs' examples, and what teams add to them): the exact
//! report, the exit codes CI relies on, JSON, and the README's table kept true.

use std::process::Command;

fn migrate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_erratum"))
        .arg("migrate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The report on `tests/migrate/ingresses` with the ingress-nginx ConfigMap, exactly: per
/// Ingress each annotation supported / differs (which) / unsupported (why) / invalid (what),
/// the host whose plain paths became regexes, the ConfigMap's keys, a summary; exit 1 because
/// something is unsupported.
#[test]
fn migrate_reports_every_annotation_of_a_folder() {
    let (code, stdout, stderr) = migrate(&[
        "--manifests",
        "tests/migrate/ingresses",
        "--configmap",
        "tests/migrate/configmap.yaml",
        "--ingress-class",
        "nginx",
    ]);
    let expected = std::fs::read_to_string("tests/migrate/expected.txt").unwrap();
    assert_eq!(stdout, expected, "{stderr}");
    assert_eq!(code, 1, "unsupported annotations fail the default --fail-on");
    assert!(!stdout.contains("api/moved"), "--ingress-class nginx leaves erratum's own out");

    let (code, json, _) =
        migrate(&["--manifests", "tests/migrate/ingresses", "-o", "json", "--fail-on", "never"]);
    assert_eq!(code, 0, "--fail-on never");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["summary"]["ingresses"], 10, "all classes without --ingress-class");
    assert_eq!(
        report["summary"]["invalid"], 3,
        "proxy-body-size: 8mb, auth-type: digest, an unknown variable"
    );
    let api = report["ingresses"].as_array().unwrap().iter().find(|i| i["name"] == "api").unwrap();
    let body =
        api["annotations"].as_array().unwrap().iter().find(|a| a["annotation"] == "proxy-body-size").unwrap();
    assert_eq!((body["value"].as_str(), body["status"].as_str()), (Some("8mb"), Some("invalid")));

    let (code, _, _) =
        migrate(&["--manifests", "tests/migrate/ingresses/rewrite.yaml", "--fail-on", "unsupported"]);
    assert_eq!(code, 0, "differences alone pass --fail-on unsupported");
    let (code, _, _) =
        migrate(&["--manifests", "tests/migrate/ingresses/rewrite.yaml", "--fail-on", "difference"]);
    assert_eq!(code, 1, "and fail --fail-on difference");
    let (code, _, stderr) = migrate(&["--manifests", "tests/migrate/missing"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read tests/migrate/missing"), "{stderr}");
}

/// The README's annotation table is `erratum migrate --list`: the docs say what the code does.
#[test]
fn the_readme_table_is_the_catalog() {
    let (code, table, _) = migrate(&["--list"]);
    assert_eq!(code, 0);
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(
        readme.contains(&table),
        "README.md's annotation table differs from `erratum migrate --list`:\n{table}"
    );
    assert!(table.lines().count() > 130, "every documented annotation");
}
