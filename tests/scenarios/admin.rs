//! The admin endpoints.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_table() {
    let a = origin().await;
    let manifests = [
        backend("ns", "a", &[a.addr]),
        ingress("ns", "i", &[("h.example", "/", "Prefix", "a"), ("h.example", "/x", "Prefix", "ghost")]),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    assert_eq!(h.status("h.example", "/").await, 200);

    let get = |p: &str| h.client.get(h.admin_url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(
        get("/readyz").await.unwrap().status(),
        200,
        "file mode is ready once the first table is published"
    );
    assert_eq!(get("/nope").await.unwrap().status(), 404);

    let metrics = h.metrics().await;
    for needle in [
        "erratum_requests_total{ingress=\"i\",namespace=\"ns\",status_class=\"2xx\",upstream_status_class=\"2xx\"} 1",
        "erratum_upstream_response_seconds_bucket",
        "erratum_table_rebuilds_total 1",
        "erratum_table_rebuild_duration_seconds_count 1",
        "erratum_table_generation 1",
        "erratum_table_routes 2",
        "erratum_config_problems 1",
        "erratum_objects{kind=\"Ingress\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle}\n{metrics}");
    }

    let table: serde_json::Value = get("/table").await.unwrap().json().await.unwrap();
    assert_eq!(table["ready"], true);
    assert_eq!(table["routes"], 2);
    assert!(table["problems"][0].as_str().unwrap().contains("service ns/ghost not found"), "{table}");
    h.shutdown().await;
}

/// `/pages/preview` shows what users will see: erratum's built-in pages and each policy's
/// pages in each format (and its maintenance page), rendered for a sample request, a page by
/// path as pinned; each one opens alone with its content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_preview_shows_every_page_in_every_format() {
    let o = origin().await;
    let spec = "errorResponses:\n- codes: ['5xx']\n  page:\n    formats:\n    - {contentType: text/html, inline: '<h1>Sorry from {{host}}</h1>'}\n    - {contentType: application/problem+json, inline: '{\"status\":{{status}},\"id\":\"{{request_id}}\"}'}\n- codes: ['404']\n  responseCode: 200\n  page: {path: /index.html}\nmaintenance: {enabled: false, page: {inline: '<p>Back soon</p>'}}\n";
    let h = Harness::start(&(storefront(o.addr) + &policy("shop", "branded", spec))).await;
    h.wait_for_page("shop.example", "/index.html").await;
    let get = |path: &str| h.client.get(h.admin_url(path)).send();
    let r = get("/pages/preview").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let html = r.text().await.unwrap();
    for needle in [
        "built-in · 503 → 503",
        "shop/branded · 5xx → 503 <small>text/html</small>",
        "shop/branded · 5xx → 503 <small>application/problem+json</small>",
        "shop/branded · 404 → 200",
        // The page by path, as pinned for shop.example (the demo origin's answer).
        "hello from the erratum demo origin: /index.html",
        "shop/branded · maintenance → 503",
        // The HTML page, rendered and escaped into a sandboxed frame.
        "srcdoc=\"&lt;h1&gt;Sorry from www.example.com&lt;/h1&gt;\"",
        "{&quot;status&quot;:503,&quot;id&quot;:&quot;3f2a9c1e-preview&quot;}",
    ] {
        assert!(html.contains(needle), "{needle}: {html}");
    }
    assert!(html.contains("<iframe sandbox=\"\""), "pages cannot run anything in the preview");

    let r = get("/pages/preview/page?policy=shop/branded&code=5xx&format=1").await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.text().await.unwrap(), "{\"status\":503,\"id\":\"3f2a9c1e-preview\"}");
    let r = get("/pages/preview/page?builtin=404").await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(r.text().await.unwrap().contains("<h1>404 Not Found</h1>"));
    let r = get("/pages/preview/page?policy=shop/branded&code=404&format=0").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("hello from the erratum demo origin: /index.html"));
    assert_eq!(get("/pages/preview/page?builtin=999").await.unwrap().status(), 404);
    h.shutdown().await;
}
