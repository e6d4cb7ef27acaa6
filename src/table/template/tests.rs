//! Unit tests of `template`.

use super::*;

fn values<'a>(path: &'a str, host: &'a str) -> Values<'a> {
    Values { status: 503, request_id: "abc", host, path, scheme: "https", query: None }
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

#[test]
fn header_values_are_percent_encoded_and_never_break_the_line() {
    let t = Template::parse("https://login.example.com/?rd={{url}}&code={{status}}", Escape::Header).unwrap();
    let v = Values {
        status: 401,
        request_id: "abc",
        host: "shop.example",
        path: "/a b/\r\nSet-Cookie: x=1",
        scheme: "https",
        query: Some("q=1&r=é"),
    };
    let out = t.render(&v);
    let out = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        out,
        "https://login.example.com/?rd=https%3A%2F%2Fshop.example%2Fa%20b%2F%0D%0ASet-Cookie%3A%20x%3D1%3Fq%3D1%26r%3D%C3%A9&code=401"
    );
    assert!(http::HeaderValue::from_str(out).is_ok());
    let t = Template::parse("{{host}}{{path}}{{request_id}}", Escape::Header).unwrap();
    let v = Values { host: "a.example", path: "/x-._~", request_id: "id\n", ..v };
    assert_eq!(t.render(&v), "a.example%2Fx-._~id%0A", "unreserved characters stay");
}

#[test]
fn the_url_is_the_one_the_client_asked_for() {
    let t = Template::parse("<a href=\"{{url}}\">", Escape::Html).unwrap();
    let v = Values { scheme: "http", query: Some("a=1&b=<2>"), ..values("/p", "h.example") };
    assert_eq!(t.render(&v), "<a href=\"http://h.example/p?a=1&amp;b=&lt;2&gt;\">");
    let v = Values { query: None, ..v };
    assert_eq!(t.render(&v), "<a href=\"http://h.example/p\">");
}
