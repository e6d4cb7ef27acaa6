//! Unit tests of `strict`.

use super::*;
use k8s_openapi::api::networking::v1::Ingress;

#[test]
fn unknown_fields_are_named_with_their_path() {
    let v = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "a", "labelz": {}},
        "spec": {"rules": [{"host": "a", "htttp": {}}]}
    });
    let e = deserialize::<Ingress>(v).unwrap_err();
    assert_eq!(e, "strict decoding error: unknown fields \"metadata.labelz\", \"spec.rules[0].htttp\"");
}

#[test]
fn type_errors_carry_the_path() {
    let v = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "a"}, "spec": {"rules": [{"host": 7}]}});
    let e = deserialize::<Ingress>(v).unwrap_err();
    assert!(e.starts_with("spec.rules[0].host: invalid type"), "{e}");
}

#[test]
fn pointers_read_like_the_server() {
    assert_eq!(from_pointer("/spec/errorResponses/0/codes/1"), "spec.errorResponses[0].codes[1]");
    assert_eq!(from_pointer(""), "");
}

#[test]
fn policies_are_judged_by_schema_and_cel() {
    let policy = |spec: serde_json::Value| {
        serde_json::json!({"apiVersion": "erratum.dev/v1alpha1", "kind": "ErrorPagePolicy",
            "metadata": {"name": "p", "namespace": "n"}, "spec": spec})
    };
    assert!(policy_problems(&policy(serde_json::json!({"errorResponses": [{"codes": ["503"]}]}))).is_empty());
    let bad = policy_problems(&policy(serde_json::json!({"errorResponses": [{"codes": ["5XX"]}]})));
    assert!(bad.iter().any(|p| p.starts_with("spec.errorResponses[0].codes[0]")), "{bad:?}");
    let cel = policy_problems(&policy(
        serde_json::json!({"errorResponses": [{"codes": ["404"], "page": {"inline": "a", "path": "/b"}}]}),
    ));
    assert_eq!(cel.len(), 1, "{cel:?}");
}
