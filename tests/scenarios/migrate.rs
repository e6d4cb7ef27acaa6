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
/// The folder of Ingresses with the ingress-nginx ConfigMap, class `nginx`.
const FOLDER: [&str; 6] = [
    "--manifests",
    "tests/migrate/ingresses",
    "--configmap",
    "tests/migrate/configmap.yaml",
    "--ingress-class",
    "nginx",
];

#[test]
fn migrate_reports_every_annotation_of_a_folder() {
    let (code, stdout, stderr) = migrate(&FOLDER);
    let expected = std::fs::read_to_string("tests/migrate/expected.txt").unwrap();
    assert_eq!(stdout, expected, "{stderr}");
    assert_eq!(code, 1, "unsupported annotations fail the default --fail-on");
    assert!(!stdout.contains("api/moved"), "--ingress-class nginx leaves erratum's own out");

    let (code, json, _) =
        migrate(&["--manifests", "tests/migrate/ingresses", "-o", "json", "--fail-on", "never"]);
    assert_eq!(code, 0, "--fail-on never");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["summary"]["ingresses"], 13, "all classes without --ingress-class");
    assert_eq!(
        report["summary"]["invalid"], 4,
        "proxy-body-size: 8mb, auth-type: digest, an unknown variable, custom-http-errors: 404,5O3"
    );
    assert!(report.get("policies").is_none(), "policies only with --write-policies");
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

/// `--write-policies DIR`: the ErrorPagePolicy of each Ingress's `custom-http-errors` +
/// `default-backend` (or the ConfigMap's codes with the Ingress's `default-backend`), exactly
/// as committed in `tests/migrate/policies/`, each one a manifest erratum loads strictly (the
/// CRD's schema and CEL rules) and resolves against the error backend's Service; the report
/// says what was written and why the others were not, in text and JSON.
#[test]
fn migrate_writes_the_error_pages_as_policies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policies");
    let out_s = out.to_str().unwrap();
    let args = [&FOLDER[..], &["--write-policies", out_s]].concat();
    let (code, stdout, stderr) = migrate(&args);
    assert_eq!(code, 1, "the same exit code as the report alone: {stderr}");
    let section: Vec<&str> = stdout.lines().skip_while(|l| *l != "ErrorPagePolicies").collect();
    let expected = [
        "ErrorPagePolicies".to_string(),
        format!("  wrote        {out_s}/api/grpc-error-pages.yaml (for Ingress api/grpc)"),
        "  not written  Ingress shop/blog: custom-http-errors without default-backend renders with the \
         controller's default backend (--default-backend-service, another namespace): run erratum with \
         --custom-http-errors and --default-backend instead; no policy written"
            .to_string(),
        "  not written  Ingress shop/checkout: custom-http-errors has \"5O3\", which is not an error status \
         (400-599); fix it first"
            .to_string(),
        format!("  wrote        {out_s}/shop/storefront-error-pages.yaml (for Ingress shop/storefront)"),
    ];
    assert_eq!(section[..section.len() - 1], expected, "{stdout}");

    let committed = std::path::Path::new("tests/migrate/policies");
    let mut written = 0;
    for rel in ["api/grpc-error-pages.yaml", "shop/storefront-error-pages.yaml"] {
        let got = std::fs::read_to_string(out.join(rel)).unwrap();
        assert_eq!(got, std::fs::read_to_string(committed.join(rel)).unwrap(), "{rel}");
        // Loaded as file mode loads manifests, beside the error backend's Service.
        let file = out.join(rel);
        let parsed = erratum::source::files::parse_manifest(&file, &got);
        assert!(parsed.errors.is_empty(), "{rel}: {:?}", parsed.errors);
        let mut index = erratum::index::Index::default();
        for (obj, _) in parsed.objects {
            index.apply(obj);
        }
        let policies: Vec<_> = index.policies.values().cloned().collect();
        for p in &policies {
            let service =
                p.spec.error_responses[0].page.as_ref().unwrap().backend.as_ref().unwrap().name.clone();
            index.apply(erratum::index::Object::Service(Box::new(erratum::fixtures::service(
                p.metadata.namespace.as_deref().unwrap(),
                &service,
                &[(None, 80)],
            ))));
            let resolved = erratum::table::policy::resolve_alone(&index, p).unwrap();
            assert_eq!(
                resolved.targets,
                [rel.split('/').nth(1).unwrap().trim_end_matches("-error-pages.yaml")]
            );
            let rule = resolved.rule_for(404).unwrap();
            assert_eq!((rule.min_ttl, rule.max_ttl), (Some(0), Some(0)), "nothing cached, as ingress-nginx");
            written += 1;
        }
    }
    assert_eq!(written, 2);

    let (_, json, _) = migrate(&[&args[..], &["-o", "json"]].concat());
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let policies = report["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 4, "{policies:#?}");
    assert_eq!(policies[0]["policy"], "grpc-error-pages");
    assert!(policies[1]["skipped"].as_str().unwrap().contains("--default-backend"));

    let (code, _, stderr) =
        migrate(&["--manifests", "tests/migrate/ingresses", "--write-policies", "/proc/x"]);
    assert_eq!(code, 2, "a folder that cannot be written: {stderr}");
    assert!(stderr.contains("cannot create /proc/x/api"), "{stderr}");
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
