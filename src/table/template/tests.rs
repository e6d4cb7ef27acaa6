//! Unit tests of `template`.

use super::*;

fn values<'a>(path: &'a str, host: &'a str) -> Values<'a> {
    Values { status: 503, request_id: "abc", host, path }
}

#[test]
fn fixed_bodies_are_shared() {
    let t = Template::parse("<h1>down</h1>", Escape::Html).unwrap();
    assert!(t.is_fixed());
    assert_eq!(t.render(&values("/", "h")), "<h1>down</h1>");
}

#[test]
fn variables_are_inserted() {
    let t = Template::parse("{{status}} at {{ host }}{{path}} ({{request_id}})", Escape::Text).unwrap();
    assert_eq!(t.render(&values("/x", "h.example")), "503 at h.example/x (abc)");
}

#[test]
fn html_values_are_inert() {
    let t = Template::parse("<p>{{path}}</p><a title=\"{{host}}\">", Escape::Html).unwrap();
    let out = t.render(&values("/<script>alert(1)</script>", "\"><img src=x onerror=y>"));
    let out = std::str::from_utf8(&out).unwrap();
    assert!(!out.contains("<script>") && !out.contains("<img"), "{out}");
    assert!(out.contains("&lt;script&gt;") && out.contains("&quot;&gt;&lt;img"), "{out}");
}

#[test]
fn json_values_cannot_break_out_of_strings() {
    let t = Template::parse(r#"{"status":{{status}},"path":"{{path}}"}"#, Escape::Json).unwrap();
    let out = t.render(&values("/\"},\"admin\":true,\"x\":\"\n</script>", "h"));
    let v: serde_json::Value = serde_json::from_slice(&out).expect("still valid JSON");
    assert_eq!(v.as_object().unwrap().len(), 2, "no injected key: {v}");
    assert_eq!(v["path"], "/\"},\"admin\":true,\"x\":\"\n</script>");
    assert!(!std::str::from_utf8(&out).unwrap().contains("</script>"));
}

#[test]
fn json_pages_keep_request_values_inside_strings() {
    assert!(Template::parse(r#"{"s":{{status}},"p":"a\"{{path}}"}"#, Escape::Json).is_ok());
    assert_eq!(
        Template::parse(r#"[0,{{path}}]"#, Escape::Json),
        Err(TemplateError::OutsideJsonString(Var::Path))
    );
    assert_eq!(
        Template::parse(r#"{"a":"\"",{{host}}:1}"#, Escape::Json),
        Err(TemplateError::OutsideJsonString(Var::Host))
    );
    assert!(Template::parse("[0,{{path}}]", Escape::Html).is_ok(), "only JSON pages have the rule");
}

#[test]
fn template_errors_are_reported() {
    assert_eq!(Template::parse("{{nope}}", Escape::Html), Err(TemplateError::UnknownVar("nope".into())));
    assert_eq!(Template::parse("ok {{status", Escape::Html), Err(TemplateError::Unclosed(3)));
}

#[test]
fn escaping_follows_the_content_type() {
    assert_eq!(Escape::for_content_type("application/problem+json"), Escape::Json);
    assert_eq!(Escape::for_content_type("text/html; charset=utf-8"), Escape::Html);
    assert_eq!(Escape::for_content_type("text/plain"), Escape::Text);
}
