//! Unit tests of `files`.

use super::*;

fn parse(name: &str, text: &str) -> Parsed {
    parse_manifest(Path::new(name), text)
}

#[test]
fn multi_document_yaml_with_unknown_kind() {
    let p = parse(
        "a.yaml",
        "# comment\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n",
    );
    assert_eq!(p.objects.len(), 1);
    assert_eq!(p.errors.len(), 1);
    assert_eq!(p.errors[0].reason, Reason::UnknownKind);
    assert_eq!(p.errors[0].document, Some(2));
    assert_eq!(p.errors[0].line, Some(6));
}

#[test]
fn schema_errors_name_the_field() {
    let p = parse(
        "b.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\nspec:\n  rules: [{http: {paths: [{path: /, pathType: [Prefix]}]}}]\n",
    );
    assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
    assert_eq!(p.errors[0].reason, Reason::Schema);
    assert!(p.errors[0].message.contains("spec.rules[0].http.paths[0]"), "{}", p.errors[0].message);
}

#[test]
fn syntax_errors_have_a_line() {
    let p = parse("c.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: a\n");
    assert_eq!(p.errors[0].reason, Reason::Syntax);
    assert!(p.errors[0].line.is_some());
}

#[test]
fn json_lists_are_expanded() {
    let p = parse(
        "d.json",
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]}"#,
    );
    assert_eq!(p.objects.len(), 2);
    assert!(p.errors.is_empty());
}

#[test]
fn broken_file_keeps_its_last_good_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
    let mut folder = Folder::open(dir.path()).unwrap();
    let first = folder.load().unwrap().expect("first load");
    assert_eq!(first.index.services.len(), 1);
    assert!(folder.load().unwrap().is_none(), "unchanged folder is not reloaded");

    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a\n").unwrap();
    let second = folder.load().unwrap().expect("changed");
    assert_eq!(second.index.services.len(), 1, "last good objects kept");
    assert_eq!(second.errors.len(), 1);

    std::fs::remove_file(&file).unwrap();
    let third = folder.load().unwrap().expect("changed");
    assert!(third.index.services.is_empty(), "a deleted file takes its objects with it");
}

#[test]
fn duplicates_keep_the_first_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: a}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {k: b}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let loaded = Folder::open(dir.path()).unwrap().load().unwrap().unwrap();
    let cm = loaded.index.config_maps.values().next().unwrap();
    assert_eq!(cm.data.as_ref().unwrap()["k"], "a");
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.errors[0].reason, Reason::Duplicate);
}

#[test]
fn missing_folder_is_an_error() {
    assert!(matches!(Folder::open("/nonexistent/erratum"), Err(Error::Unreadable { .. })));
}

#[test]
fn objects_remember_where_they_were_defined() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n# the ingress\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: shop}\n",
    )
    .unwrap();
    let loaded = Folder::open(dir.path()).unwrap().load().unwrap().unwrap();
    let at = &loaded.origins[&(crate::index::Kind::Ingress, ObjectKey::new("shop", "web"))];
    assert_eq!((at.document, at.line), (2, Some(5)));
    assert!(at.to_string().ends_with("app.yaml:5 (document 2)"), "{at}");
}
