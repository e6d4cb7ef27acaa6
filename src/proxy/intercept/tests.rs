//! Unit tests of `intercept`.

use super::*;
use crate::fixtures;

fn resolved(spec_yaml: &str) -> Arc<ResolvedPolicy> {
    Arc::new(fixtures::resolved_policy("ns", "p", spec_yaml))
}

fn req<'a>(method: &'a Method, accept: Option<&'a str>) -> RequestInfo<'a> {
    RequestInfo {
        method,
        host: "h.example",
        path: "/x",
        query: None,
        https: false,
        accept,
        request_id: "rid",
        grpc: false,
    }
}

fn upstream(code: u16, headers: &HeaderMap) -> Outcome<'_> {
    Outcome::Upstream { status: StatusCode::from_u16(code).unwrap(), headers }
}

#[test]
fn proxy_errors_map_to_semantics_rule_42() {
    let up = || "10.0.0.1:80".to_string();
    assert_eq!(
        ProxyError::UpstreamConnect { upstream: up(), reason: "refused".into() }.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        ProxyError::UpstreamTimeout { upstream: up(), after: std::time::Duration::from_secs(1) }.status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        ProxyError::UpstreamReset { upstream: up(), reason: "reset".into() }.status(),
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(ProxyError::NoRoute { host: "h".into(), path: "/".into() }.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        ProxyError::NoEndpoints { service: "a/b".into(), reason: "none".into() }.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[test]
fn upstream_responses_pass_through_without_a_policy() {
    let h = HeaderMap::new();
    assert!(matches!(
        decide(&[], &req(&Method::GET, None), upstream(503, &h), &NoPages),
        Decision::PassThrough
    ));
}

#[test]
fn builtin_pages_carry_their_length_and_negotiate() {
    let r = builtin(StatusCode::BAD_GATEWAY, None, "rid<1>");
    assert_eq!(r.headers[header::CONTENT_LENGTH], r.body.len().to_string().as_str());
    assert!(std::str::from_utf8(&r.body).unwrap().contains("502 Bad Gateway"));
    let j = builtin(StatusCode::BAD_GATEWAY, Some("application/json"), "rid\"1");
    assert_eq!(j.headers[header::CONTENT_TYPE], "application/problem+json");
    let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(v["status"], 502);
}

#[test]
fn exact_codes_beat_classes() {
    let p = resolved(
        "errorResponses:\n- {codes: ['5xx'], page: {inline: class}}\n- {codes: ['503'], page: {inline: exact}}\n",
    );
    let h = HeaderMap::new();
    let body =
        |code| match decide(std::slice::from_ref(&p), &req(&Method::GET, None), upstream(code, &h), &NoPages)
        {
            Decision::Replace { reply, .. } => reply.body,
            other => panic!("{other:?}"),
        };
    assert_eq!(body(503), "exact");
    assert_eq!(body(502), "class");
}

#[test]
fn a_2xx_override_applies_to_get_and_head_only_by_default() {
    let p = resolved("errorResponses:\n- {codes: ['404'], responseCode: 200, page: {inline: spa}}\n");
    let h = HeaderMap::new();
    for (m, replaced) in
        [(Method::GET, true), (Method::HEAD, true), (Method::POST, false), (Method::DELETE, false)]
    {
        let d = decide(std::slice::from_ref(&p), &req(&m, None), upstream(404, &h), &NoPages);
        assert_eq!(matches!(d, Decision::Replace { .. }), replaced, "{m}");
    }
}

#[test]
fn status_only_rules_rewrite_and_keep_the_body() {
    let p = resolved("errorResponses:\n- {codes: ['5xx'], responseCode: 500}\n");
    let h = HeaderMap::new();
    match decide(std::slice::from_ref(&p), &req(&Method::GET, None), upstream(503, &h), &NoPages) {
        Decision::Rewrite { status, headers, .. } => {
            assert_eq!(status, 500);
            assert_eq!(headers["x-error-origin-status"], "503");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ttl_only_rules_change_nothing() {
    let p = resolved("errorResponses:\n- {codes: ['404'], errorCachingMinTTLSeconds: 30}\n");
    let h = HeaderMap::new();
    assert!(matches!(
        decide(std::slice::from_ref(&p), &req(&Method::GET, None), upstream(404, &h), &NoPages),
        Decision::PassThrough
    ));
}

#[test]
fn report_only_changes_nothing() {
    let p = resolved("mode: ReportOnly\nerrorResponses:\n- {codes: ['503'], page: {inline: x}}\n");
    let h = HeaderMap::new();
    assert!(matches!(
        decide(std::slice::from_ref(&p), &req(&Method::GET, None), upstream(503, &h), &NoPages),
        Decision::Report(_)
    ));
}

#[test]
fn source_selects_upstream_or_proxy_errors() {
    let up = resolved("source: Upstream\nerrorResponses:\n- {codes: ['502'], page: {inline: up}}\n");
    let px = resolved("source: Proxy\nerrorResponses:\n- {codes: ['502'], page: {inline: px}}\n");
    let h = HeaderMap::new();
    let err = ProxyError::UpstreamConnect { upstream: "a".into(), reason: "refused".into() };
    let body = |p: &Arc<ResolvedPolicy>, o| match decide(
        std::slice::from_ref(p),
        &req(&Method::GET, None),
        o,
        &NoPages,
    ) {
        Decision::Replace { reply, applied } => (reply.body, applied.is_some()),
        Decision::PassThrough => (Bytes::from_static(b"pass"), false),
        other => panic!("{other:?}"),
    };
    assert_eq!(body(&up, upstream(502, &h)).0, "up");
    assert!(!body(&up, Outcome::Proxy(&err)).1, "an Upstream policy leaves proxy errors built-in");
    assert_eq!(body(&px, upstream(502, &h)).0, "pass");
    assert_eq!(body(&px, Outcome::Proxy(&err)).0, "px");
}

#[test]
fn rule_46_headers_on_a_substituted_response() {
    let p = resolved(
        "errorResponses:\n- codes: ['401']\n  page: {inline: login, contentType: text/plain}\n  copyHeaders: [WWW-Authenticate]\n  setHeaders: {Retry-After: '5'}\n",
    );
    let mut h = HeaderMap::new();
    h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    h.insert(header::SET_COOKIE, HeaderValue::from_static("secret=1"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
    let Decision::Replace { reply, .. } =
        decide(std::slice::from_ref(&p), &req(&Method::GET, None), upstream(401, &h), &NoPages)
    else {
        panic!()
    };
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "text/plain");
    assert_eq!(reply.headers[header::CONTENT_LENGTH], "5");
    assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(reply.headers["retry-after"], "5");
    assert_eq!(reply.headers["x-error-origin-status"], "401");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "max-age=60", "rule 19: the origin's Cache-Control");
    assert!(!reply.headers.contains_key(header::SET_COOKIE), "only listed headers are copied");
}

#[test]
fn path_pages_fall_back_to_the_original_status_rule_47() {
    let p =
        resolved("errorResponses:\n- {codes: ['500'], responseCode: 200, page: {path: /errors/500.html}}\n");
    let h = HeaderMap::new();
    let Decision::Replace { reply, applied } =
        decide(std::slice::from_ref(&p), &req(&Method::GET, None), upstream(500, &h), &NoPages)
    else {
        panic!()
    };
    assert_eq!(reply.status, 500, "never the override without the page");
    assert!(applied.unwrap().page_missing);
}

#[test]
fn builtin_pages_are_accessible_self_contained_and_escape_the_request_id() {
    for code in [400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 418, 599] {
        let status = StatusCode::from_u16(code).unwrap();
        let r = builtin(status, Some("text/html"), "id-<script>");
        let html = std::str::from_utf8(&r.body).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"), "{html}");
        let reason = status.canonical_reason().unwrap_or("Error");
        assert!(html.contains(&format!("<title>{code} {reason}</title>")), "{html}");
        assert!(html.contains(&format!("<h1>{code} {reason}</h1><p>{}</p>", sentence(status))));
        assert!(html.contains("name=\"viewport\"") && html.contains("prefers-color-scheme:dark"));
        assert!(html.contains("Request ID <code>id-&lt;script&gt;</code>"), "{html}");
        // Self-contained: nothing to fetch, nothing to run.
        for external in ["<script", "src=", "href=", "url(", "@import"] {
            assert!(!html.contains(external), "{code}: {external}");
        }
        assert!(r.body.len() < 2048, "{code}: {} bytes", r.body.len());
    }
    let j = builtin(StatusCode::SERVICE_UNAVAILABLE, Some("application/json"), "a\"b");
    let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!((v["status"].as_u64(), v["requestId"].as_str()), (Some(503), Some("a\"b")));
}

/// WCAG 2 contrast of the built-in page's text colours, in both schemes (AA: 4.5:1).
#[test]
fn builtin_page_colours_pass_wcag_aa() {
    fn luminance(hex: &str) -> f64 {
        let c = |i: usize| {
            let v = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
            if v <= 0.039_28 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * c(1) + 0.7152 * c(3) + 0.0722 * c(5)
    }
    let ratio = |a: &str, b: &str| {
        let (x, y) = (luminance(a), luminance(b));
        (x.max(y) + 0.05) / (x.min(y) + 0.05)
    };
    let html = String::from_utf8(builtin(StatusCode::NOT_FOUND, None, "").body.to_vec()).unwrap();
    let var = |scheme: &str, name: &str| {
        let at = html.find(scheme).unwrap();
        let rest = &html[at..];
        let from = rest.find(&format!("--{name}:")).unwrap() + name.len() + 3;
        rest[from..from + 7].to_string()
    };
    for scheme in [":root{", "dark){:root{"] {
        for (fg, bg) in [("fg", "card"), ("muted", "card"), ("fg", "bg")] {
            let r = ratio(&var(scheme, fg), &var(scheme, bg));
            assert!(r >= 4.5, "{scheme} {fg} on {bg}: {r:.2}");
        }
    }
}

/// Rule 53: a maintenance answer is its policy's maintenance rule, whatever the policy's mode
/// and source and whatever other policy has a rule for the status; counted as `maintenance`.
#[test]
fn maintenance_answers_with_its_own_rule_whatever_the_mode() {
    let spec = "mode: ReportOnly\nsource: Upstream\nerrorResponses:\n- codes: ['503']\n  page: {inline: other}\n\
                maintenance: {enabled: true, responseCode: 200, retryAfterSeconds: 90, page: {inline: 'back at {{host}}', contentType: text/plain}}\n";
    let policy = resolved(spec);
    let other = resolved("errorResponses:\n- codes: ['503']\n  page: {inline: nope}\n");
    let err = ProxyError::Maintenance { policy: policy.clone() };
    assert_eq!(err.status(), StatusCode::OK);
    assert_eq!(err.reason(), "maintenance");
    let d = decide(&[other, policy], &req(&Method::POST, None), Outcome::Proxy(&err), &NoPages);
    let Decision::Replace { reply, applied: Some(applied) } = d else { panic!("{d:?}") };
    assert_eq!(reply.status, StatusCode::OK, "the maintenance responseCode, even a 2xx");
    assert_eq!(reply.body, "back at h.example");
    assert_eq!(reply.headers[header::RETRY_AFTER], "90");
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!((applied.maintenance, applied.source()), (true, "maintenance"));
    // gRPC clients are told the service is unavailable.
    assert_eq!(grpc::from_error(&err), grpc::Code::Unavailable);
    // With the default 503, a policy before it with a 503 rule does not take over.
    let plain = resolved("maintenance: {enabled: true, page: {inline: 'down', contentType: text/plain}}\n");
    let other = resolved("errorResponses:\n- codes: ['503']\n  page: {inline: nope}\n");
    let err = ProxyError::Maintenance { policy: plain.clone() };
    let d = decide(&[other, plain], &req(&Method::GET, None), Outcome::Proxy(&err), &NoPages);
    let Decision::Replace { reply, .. } = d else { panic!("{d:?}") };
    assert_eq!((reply.status, reply.body.as_ref()), (StatusCode::SERVICE_UNAVAILABLE, &b"down"[..]));
}
