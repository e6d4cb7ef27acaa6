//! File mode judges a manifest as kube-apiserver does, so a folder never accepts what
//! `kubectl apply` would reject: unknown fields are errors (kubectl's default strict field
//! validation), and an ErrorPagePolicy must pass its CRD's schema and CEL rules.
//!
//! Data flow: a parsed document (`files::parse_manifest`) -> [`deserialize`] (and, for
//! policies, [`policy_problems`] first) -> an `Object` or a located rejection. The Kubernetes
//! source needs none of this: there the API server itself has judged every object.
//!
//! The schema and CEL rules are the ones of the CRD erratum generates (`crd::ErrorPagePolicy`),
//! evaluated with `jsonschema` and kube-rs's `kube-cel`; `tests/scenarios/kube_crd.rs` applies
//! one corpus to the real API server and to this module and compares the verdicts.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use serde::de::DeserializeOwned;

/// Deserialises `value` into `T` and rejects any field `T` does not have, with the server's
/// wording: `strict decoding error: unknown field "spec.errorResponse"`. Type errors carry the
/// field path as the server writes it (`spec.rules[0].host`).
pub fn deserialize<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let result =
        serde_ignored::deserialize(serde_path_to_error::Deserializer::new(value, &mut track), |path| {
            let path = field_path(&path);
            // Some types (kube's derived custom resources) leave the type fields to the caller,
            // which has already matched them.
            if path != "apiVersion" && path != "kind" {
                unknown.push(format!("\"{path}\""));
            }
        });
    match result {
        Err(e) => Err(format!("{}: {e}", pointer_path(&track.path().to_string()))),
        Ok(_) if !unknown.is_empty() => Err(unknown_fields(&unknown)),
        Ok(v) => Ok(v),
    }
}

/// The API server's words for fields it does not know (each already quoted).
fn unknown_fields(quoted: &[String]) -> String {
    let plural = if quoted.len() == 1 { "" } else { "s" };
    format!("strict decoding error: unknown field{plural} {}", quoted.join(", "))
}

/// serde_ignored's path in the API server's notation: `spec.rules[0].http`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => {
            let p = field_path(parent);
            if p.is_empty() { key.clone() } else { format!("{p}.{key}") }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}

/// serde_path_to_error's `a.b[0].c` is already the server's notation; `.` alone is the root.
fn pointer_path(p: &str) -> String {
    if p == "." { "(root)".into() } else { p.to_string() }
}

/// A JSON pointer (`/spec/errorResponses/0/codes`) in the server's notation
/// (`spec.errorResponses[0].codes`).
fn from_pointer(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

struct PolicySchema {
    raw: serde_json::Value,
    schema: jsonschema::Validator,
    cel: kube_cel::CompiledSchema,
}

static POLICY_SCHEMA: LazyLock<Result<PolicySchema, String>> = LazyLock::new(|| {
    let crd = crate::crd::ErrorPagePolicy::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .ok_or("the generated CRD has no schema")?;
    let schema = serde_json::to_value(schema).map_err(|e| e.to_string())?;
    Ok(PolicySchema {
        schema: jsonschema::validator_for(&schema).map_err(|e| e.to_string())?,
        cel: kube_cel::compile_schema(&schema),
        raw: schema,
    })
});

/// Fields of `value` that the structural schema does not declare, as the API server finds
/// them for a custom resource when it decodes strictly (before any validation).
fn undeclared(schema: &serde_json::Value, value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::Value::Bool(true)) {
        return;
    }
    match value {
        serde_json::Value::Object(map) => {
            let properties = schema.get("properties").and_then(|p| p.as_object());
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, v) in map {
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(s), _) | (None, Some(s)) => undeclared(s, v, &join(key), out),
                    (None, None) if properties.is_some() => out.push(format!("\"{}\"", join(key))),
                    (None, None) => {}
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    undeclared(s, v, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// What the API server would say about an ErrorPagePolicy (empty: it would accept it), in
/// its order: strict decoding against the structural schema (unknown fields) stops first;
/// then the schema's constraints and the CEL rules. Messages read like the server's.
pub fn policy_problems(value: &serde_json::Value) -> Vec<String> {
    let schema = match &*POLICY_SCHEMA {
        Ok(s) => s,
        Err(e) => return vec![format!("the ErrorPagePolicy schema cannot be compiled: {e}")],
    };
    let mut unknown = Vec::new();
    undeclared(&schema.raw, value, "", &mut unknown);
    // The type fields and ObjectMeta are the server's own, not the CRD's schema.
    unknown.retain(|f| !matches!(f.as_str(), "\"apiVersion\"" | "\"kind\"" | "\"metadata\""));
    if !unknown.is_empty() {
        return vec![unknown_fields(&unknown)];
    }
    let mut problems: Vec<String> = schema
        .schema
        .iter_errors(value)
        .map(|e| {
            let path = from_pointer(&e.instance_path().to_string());
            if path.is_empty() { e.to_string() } else { format!("{path}: {e}") }
        })
        .collect();
    if problems.is_empty() {
        // CEL rules assume a value that passed the schema (as in the server).
        if let Err(errors) = kube_cel::Validator::new().validate_compiled(&schema.cel, value, None) {
            problems.extend(errors.iter().map(|e| {
                if e.field_path.is_empty() {
                    e.message.clone()
                } else {
                    format!("{}: {}", e.field_path, e.message)
                }
            }));
        }
    }
    problems
}

#[cfg(test)]
mod tests;
