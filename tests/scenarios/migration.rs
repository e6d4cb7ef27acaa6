//! A home for ingress-nginx users (issue 20): their error backends work unchanged. An
//! Ingress's `custom-http-errors` with `default-backend` (or the flags for every Ingress) asks
//! the error backend per request with ingress-nginx's headers and serves its body with the
//! original status; an explicit ErrorPagePolicy wins where both apply, and can use the same
//! protocol itself (`page.backend`).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::*;

/// An error backend like ingress-nginx's custom-error-pages image: it answers with the status
/// `X-Code` names, and (so the test can read them) the headers it got as JSON.
async fn error_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let headers: serde_json::Map<String, serde_json::Value> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                        .collect();
                    let body = serde_json::json!({"path": req.uri().path(), "headers": headers}).to_string();
                    let code = req
                        .headers()
                        .get("x-code")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .unwrap_or(404);
                    let resp = hyper::Response::builder()
                        .status(code)
                        .header("content-type", "application/vnd.errors+json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// ingress-nginx's error-backend protocol: the listed codes, from the origin or from erratum
/// (no endpoint), get the error backend's body and type with the original status, and the
/// backend is told X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name,
/// X-Service-Name, X-Service-Port and X-Request-ID. Unlisted codes pass; a policy wins; a
/// dead error backend gives the built-in page with the original status.
#[tokio::test]
async fn custom_http_errors_ask_the_default_backend_per_request() {
    let app = origin().await;
    let errors = error_backend().await;
    let errors_ann: &[(&str, &str)] = &[("custom-http-errors", "404,503"), ("default-backend", "errors")];
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&backend("ns", "errors", &[errors]));
    m.push_str(&backend("ns", "empty", &[]));
    m.push_str(&backend("ns", "dead", &[closed_port()]));
    m.push_str(&annotated_ingress("shop", "shop.test", "app", errors_ann));
    m.push_str(&annotated_ingress("empty", "empty.test", "empty", errors_ann));
    m.push_str(&annotated_ingress("paged", "paged.test", "app", errors_ann));
    m.push_str(&annotated_ingress(
        "broken",
        "broken.test",
        "app",
        &[("custom-http-errors", "404"), ("default-backend", "dead")],
    ));
    m.push_str(&annotated_ingress("global", "global.test", "app", &[]));
    m.push_str(&policy(
        "ns",
        "own-404",
        "targetRefs: [{name: paged}]\nerrorResponses:\n- codes: [\"404\"]\n  page: {formats: [{contentType: text/plain, inline: \"the policy's page\"}]}\n",
    ));
    let h = Harness::start_with(&m, |c| {
        c.build.custom_http_errors = vec![404];
        c.build.default_backend = Some("ns/errors:80".parse().unwrap());
    })
    .await;

    let resp = h
        .client
        .get(h.url("/missing/thing?q=1"))
        .header("host", "shop.test")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the original status");
    assert_eq!(resp.headers()["content-type"], "application/vnd.errors+json", "the backend's type");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let got: serde_json::Value = resp.json().await.unwrap();
    let headers = &got["headers"];
    assert_eq!(got["path"], "/", "ingress-nginx asks for /");
    assert_eq!(headers["x-code"], "404");
    assert_eq!(headers["x-format"], "application/json");
    assert_eq!(headers["x-original-uri"], "/missing/thing");
    assert_eq!(headers["x-namespace"], "ns");
    assert_eq!(headers["x-ingress-name"], "shop");
    assert_eq!(headers["x-service-name"], "app");
    assert_eq!(headers["x-service-port"], "80");
    assert_eq!(headers["x-request-id"], request_id.as_str());

    assert_eq!(h.status("shop.test", "/boom").await, 500, "500 is not listed: it passes");
    assert_eq!(h.get("shop.test", "/boom").await.text().await.unwrap(), "origin: internal error\n");

    let resp = h.get("empty.test", "/").await;
    assert_eq!(resp.status(), 503, "no endpoint: erratum's 503, rendered by the error backend");
    let text = resp.text().await.unwrap();
    let table = h.client.get(h.admin_url("/table")).send().await.unwrap().text().await.unwrap();
    let metrics = h.metrics().await;
    let got: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{e}: {text} {table} {}",
            metrics.lines().filter(|l| l.contains("fallback")).collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(got["headers"]["x-code"], "503");

    let resp = h.get("paged.test", "/missing/x").await;
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (404, "the policy's page".into()));

    let resp = h.get("broken.test", "/missing/x").await;
    assert_eq!(resp.status(), 404, "a dead error backend keeps the original status");
    assert!(resp.text().await.unwrap().contains("<h1>404 Not Found</h1>"), "and the built-in page");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            "erratum_error_page_fallbacks_total{namespace=\"ns\",policy=\"custom-http-errors.broken\"} 1"
        ),
        "{metrics}"
    );

    let resp = h.get("global.test", "/missing/x").await;
    assert_eq!(resp.status(), 404);
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["headers"]["x-ingress-name"], "global", "--custom-http-errors with --default-backend");
    assert!(
        metrics.contains("erratum_error_pages_served_total{code=\"404\",namespace=\"ns\",policy=\"custom-http-errors.shop\",source=\"upstream\"} 1"),
        "{metrics}"
    );
    h.shutdown().await;
}

/// Every ingress-nginx annotation erratum does not read is reported — on `/table`, as a
/// diagnostic (Event, log) and in a metric by name — and a snippet is never executed, with
/// the reason.
/// The same protocol from an ErrorPagePolicy (`page.backend`), the CRD's home for what
/// `custom-http-errors` did: the backend is told the original code, a `responseCode` changes
/// only the status sent with its page, a dead backend keeps the original status (rule 47), and
/// a missing Service is an unresolved reference.
#[tokio::test]
async fn an_error_page_policy_can_render_its_pages_with_an_error_backend() {
    let app = origin().await;
    let errors = error_backend().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&backend("ns", "errors", &[errors]));
    m.push_str(&backend("ns", "dead", &[closed_port()]));
    m.push_str(&annotated_ingress("shop", "shop.test", "app", &[]));
    m.push_str(&annotated_ingress("broken", "broken.test", "app", &[]));
    m.push_str(&policy(
        "ns",
        "pages",
        "targetRefs: [{name: shop}]\nerrorResponses:\n- {codes: ['404'], page: {backend: {name: errors}}}\n- {codes: ['500'], responseCode: 503, page: {backend: {name: errors, port: 80}}}\n",
    ));
    m.push_str(&policy(
        "ns",
        "dead-pages",
        "targetRefs: [{name: broken}]\nerrorResponses:\n- {codes: ['500'], responseCode: 503, page: {backend: {name: dead}}}\n",
    ));
    m.push_str(&policy(
        "ns",
        "no-service",
        "targetRefs: [{name: broken}]\nerrorResponses:\n- {codes: ['404'], page: {backend: {name: ghost}}}\n",
    ));
    let h = Harness::start(&m).await;

    let resp = h.get("shop.test", "/missing/thing").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/vnd.errors+json", "the backend's type");
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["headers"]["x-code"], "404");
    assert_eq!(got["headers"]["x-original-uri"], "/missing/thing");
    assert_eq!(got["headers"]["x-ingress-name"], "shop");
    assert_eq!(got["headers"]["x-service-name"], "app");

    let resp = h.get("shop.test", "/boom").await;
    assert_eq!(resp.status(), 503, "the rule's responseCode");
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["headers"]["x-code"], "500", "the backend is told the original code");

    let resp = h.get("broken.test", "/boom").await;
    assert_eq!(resp.status(), 500, "a dead backend: the original status, not the rule's");
    assert!(resp.text().await.unwrap().contains("<h1>500 Internal Server Error</h1>"), "the built-in page");

    let status = h.policy_status("ns", "pages").await;
    assert_eq!(condition(&status, "ResolvedRefs")["status"], "True", "{status}");
    let row = status["rules"].as_array().unwrap().iter().find(|r| r["code"] == "404").unwrap().clone();
    assert_eq!(row["page"], "backend ns/errors:80");
    let status = h.policy_status("ns", "no-service").await;
    let refs = condition(&status, "ResolvedRefs");
    assert_eq!(refs["status"], "False", "{status}");
    assert!(refs["message"].as_str().unwrap().contains("Service ns/ghost not found"), "{refs}");
    assert_eq!(h.status("broken.test", "/missing/x").await, 404, "not in effect: the origin's 404");
    h.shutdown().await;
}

#[tokio::test]
async fn unread_annotations_are_reported_and_snippets_never_run() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&annotated_ingress(
        "a",
        "a.test",
        "app",
        &[("configuration-snippet", "more_set_headers 'X: y';"), ("enable-opentelemetry", "true")],
    ));
    m.push_str(&annotated_ingress("b", "b.test", "app", &[("enable-opentelemetry", "true")]));
    let h = Harness::start(&m).await;
    let resp = h.get("a.test", "/").await;
    assert_eq!(resp.status(), 200, "the Ingress serves");
    assert!(resp.headers().get("x").is_none(), "the snippet did not run");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        table["unsupportedAnnotations"],
        serde_json::json!({"configuration-snippet": 1, "enable-opentelemetry": 2})
    );
    let problems = table["problems"].to_string();
    assert!(problems.contains("configuration-snippet is never executed"), "{problems}");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_ingress_annotations_unsupported{annotation=\"enable-opentelemetry\"} 2"),
        "{metrics}"
    );
    h.shutdown().await;
}

/// `allowlist-source-range` (and `whitelist-source-range`), `denylist-source-range`: clients
/// outside the allowed ranges, or inside the denied ones, get 403 through the one decision
/// (a policy can page it); behind `--trusted-proxies` the client is the forwarded one.
#[tokio::test]
async fn source_ranges_answer_403() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&annotated_ingress(
        "inside",
        "inside.test",
        "app",
        &[("allowlist-source-range", "10.0.0.0/8, 127.0.0.1")],
    ));
    m.push_str(&annotated_ingress(
        "outside",
        "outside.test",
        "app",
        &[("whitelist-source-range", "10.0.0.0/8")],
    ));
    m.push_str(&annotated_ingress(
        "denied",
        "denied.test",
        "app",
        &[("allowlist-source-range", "127.0.0.0/8"), ("denylist-source-range", "127.0.0.1")],
    ));
    m.push_str(&annotated_ingress("bad", "bad.test", "app", &[("denylist-source-range", "10.0.0.0/33")]));
    m.push_str(&policy(
        "ns",
        "forbidden",
        "targetRefs: [{name: outside}]\nerrorResponses:\n- codes: [\"403\"]\n  page: {formats: [{contentType: text/plain, inline: \"not from here\"}]}\n",
    ));
    let h =
        Harness::start_with(&m, |c| c.proxy.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()].into())
            .await;

    assert_eq!(h.status("inside.test", "/").await, 200);
    let resp = h.get("outside.test", "/").await;
    assert_eq!((resp.status().as_u16(), resp.text().await.unwrap()), (403, "not from here".into()));
    assert_eq!(h.status("denied.test", "/").await, 403, "the denylist is checked first");
    assert_eq!(h.status("bad.test", "/").await, 403, "a bad range closes the Ingress, never opens it");
    // From a trusted proxy, the client is the forwarded address.
    let forwarded = |host: &'static str, xff: &'static str| {
        h.client.get(h.url("/")).header("host", host).header("x-forwarded-for", xff).send()
    };
    assert_eq!(forwarded("outside.test", "10.1.2.3").await.unwrap().status(), 200);
    assert_eq!(forwarded("inside.test", "192.0.2.9").await.unwrap().status(), 403);
    assert_eq!(app.hits(), 2, "nothing refused reached the origin");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"forbidden\"} 4"), "{metrics}");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    assert!(table["problems"].to_string().contains("10.0.0.0/33"), "{}", table["problems"]);
    h.shutdown().await;
}
