//! ErrorPagePolicy conformance: one test per applicable rule of docs/error-semantics.md (§A, §D,
//! §E, §G, §H, §K), against real origins through the real proxy.

use reqwest::Method;

use crate::support::*;

const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_23_a_rule_with_a_page_replaces_the_error() {
    let o = origin().await;
    let manifests = storefront(o.addr)
        + &policy("shop", "p", "errorResponses:\n- codes: ['503']\n  page: {inline: '<h1>sorry</h1>'}\n");
    let h = Harness::start(&manifests).await;
    let r = h.get("shop.example", "/unavailable").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers()["x-error-origin-status"], "503");
    assert_eq!(r.text().await.unwrap(), "<h1>sorry</h1>");
    // Rule 23: codes without a rule pass through untouched.
    let r = h.get("shop.example", "/boom").await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "origin: internal error\n");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_8_an_empty_rule_list_changes_nothing() {
    let o = origin().await;
    let h = Harness::start(&(storefront(o.addr) + &policy("shop", "p", "errorResponses: []\n"))).await;
    let r = h.get("shop.example", "/unavailable").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "origin: unavailable\n");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_24_the_page_comes_from_the_route_of_its_own_path() {
    let api = origin().await;
    let pages = origin().await;
    let manifests = [
        backend("shop", "api", &[api.addr]),
        backend("shop", "static", &[pages.addr]),
        ingress(
            "shop",
            "storefront",
            &[("shop.example", "/status", "Prefix", "api"), ("shop.example", "/errors", "Prefix", "static")],
        ),
        policy("shop", "p", "errorResponses:\n- codes: ['503']\n  page: {path: /errors/503.html}\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    h.wait_for_page("shop.example", "/errors/503.html").await;
    let page_fetches = pages.hits();
    let r = h.get("shop.example", "/status/503").await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap(),
        "hello from the erratum demo origin: /errors/503.html\n",
        "fetched by its own path"
    );
    assert_eq!(pages.hits(), page_fetches, "rule 25: the page is pinned, not fetched per error");
    assert_eq!(api.hits(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_26_status_override_for_an_spa_keeps_api_clients_honest() {
    let o = origin().await;
    let manifests = [
        backend("shop", "web", &[o.addr]),
        ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "web")]),
        example("policies/spa-fallback.yaml"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    h.wait_for_page("shop.example", "/index.html").await;

    let r = h.send(Method::GET, "shop.example", "/missing/deep/link", Some(BROWSER)).await;
    assert_eq!(r.status(), 200, "a browser navigation gets the app");
    assert_eq!(r.headers()["cache-control"], "no-store", "rule 46: a 2xx page is not cacheable by viewers");
    assert_eq!(r.headers()["x-error-origin-status"], "404");
    assert_eq!(r.text().await.unwrap(), "hello from the erratum demo origin: /index.html\n");

    let r = h.send(Method::GET, "shop.example", "/missing/api/thing", Some("application/json")).await;
    assert_eq!(r.status(), 404, "an API client keeps its 404");
    assert_eq!(r.text().await.unwrap(), "origin: not found\n");

    // Rule 12 / §3 item 3: a POST never receives a page with a success status.
    let r = h.send(Method::POST, "shop.example", "/missing/form", Some(BROWSER)).await;
    assert_eq!(r.status(), 404);

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_error_pages_served_total{code=\"404\",namespace=\"shop\",policy=\"spa-fallback\",source=\"upstream\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "erratum_requests_total{ingress=\"storefront\",namespace=\"shop\",status_class=\"2xx\",upstream_status_class=\"4xx\"} 1"
        ),
        "the failure stays visible when the page says 200\n{metrics}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_31_and_47_a_failed_page_fetch_keeps_the_original_status() {
    let o = origin().await;
    // The page path answers 404 at the origin: CloudFront would send that 404 (rule 31);
    // erratum keeps the original 500 with a built-in body (rule 47).
    let manifests = storefront(o.addr)
        + &policy(
            "shop",
            "p",
            "errorResponses:\n- codes: ['500']\n  responseCode: 200\n  page: {path: /missing/page.html}\n",
        );
    let h = Harness::start(&manifests).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let pages: serde_json::Value =
            h.client.get(h.admin_url("/pages")).send().await.unwrap().json().await.unwrap();
        if pages[0]["last_error"].is_string() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pages}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = h.get("shop.example", "/boom").await;
    assert_eq!(r.status(), 500, "never the page origin's 404, never the 200 override");
    assert!(r.text().await.unwrap().contains("<h1>500 Internal Server Error</h1>"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_error_page_fallbacks_total{namespace=\"shop\",policy=\"p\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("erratum_error_page_fetches_total{result=\"error\"}"), "{metrics}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_32_a_page_on_the_failing_origin_falls_back_to_the_builtin() {
    let live = origin().await;
    let down = closed_port();
    let manifests = [
        backend("shop", "web", &[down]),
        backend("shop", "static", &[live.addr]),
        ingress("shop", "storefront", &[("shop.example", "/", "Prefix", "web")]),
        policy("shop", "p", "errorResponses:\n- codes: ['502']\n  page: {path: /errors/502.html}\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let r = h.get("shop.example", "/").await;
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("502 Bad Gateway"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_41_and_42_proxy_errors_get_pages_too() {
    let o = origin().await;
    let refused = closed_port();
    let manifests = [
        backend("shop", "web", &[o.addr]),
        backend("shop", "gone", &[refused]),
        backend_with_readiness("shop", "unready", &[(o.addr, false)]),
        ingress(
            "shop",
            "storefront",
            &[
                ("shop.example", "/", "Prefix", "web"),
                ("shop.example", "/gone", "Prefix", "gone"),
                ("shop.example", "/unready", "Prefix", "unready"),
            ],
        ),
        example("policies/branded-5xx.yaml"),
    ]
    .concat();
    let h =
        Harness::start_with(&manifests, |c| c.proxy.response_timeout = std::time::Duration::from_millis(300))
            .await;
    for (path, status) in [("/gone", 502), ("/slow/3000", 504), ("/unready", 503), ("/unavailable", 503)] {
        let r = h.send(Method::GET, "shop.example", path, Some(BROWSER)).await;
        assert_eq!(r.status(), status, "{path}");
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        assert!(body.contains(&format!("We are having trouble ({status})")), "{path}: {body}");
        assert!(body.contains(&rid), "{path}: the page carries the request id");
    }
    let metrics = h.metrics().await;
    for source in ["proxy", "upstream"] {
        assert!(metrics.contains(&format!("policy=\"branded-5xx\",source=\"{source}\"")), "{metrics}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_picks_the_format_by_accept() {
    let o = origin().await;
    let h = Harness::start(&(storefront(o.addr) + &example("policies/branded-5xx.yaml"))).await;
    let r = h.send(Method::GET, "shop.example", "/unavailable", Some("application/json, */*;q=0.1")).await;
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["vary"], "Accept");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], 503);
    let r = h.send(Method::GET, "shop.example", "/unavailable", Some(BROWSER)).await;
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let r = h.send(Method::GET, "shop.example", "/unavailable", None).await;
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8", "the first format is the default");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflected_values_are_escaped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin().await;
    let spec = "source: Proxy\nerrorResponses:\n- codes: ['404']\n  page:\n    formats:\n    - {contentType: text/html, inline: '<p>{{host}} {{path}}</p>'}\n    - {contentType: application/json, inline: '{\"host\":\"{{host}}\",\"path\":\"{{path}}\"}'}\n";
    let h = Harness::start_with(&(storefront(o.addr) + &policy("erratum", "default", spec)), |c| {
        c.build.default_policy = Some(erratum::index::ObjectKey::new("erratum", "default"))
    })
    .await;
    // Raw bytes, so no client encodes the payload: the Host carries markup, the path quotes
    // and braces (hyper rejects a raw '<' in a path with 400 before routing).
    let evil_host = "<script>alert(1)</script>\"}";
    let evil_path = "/x\"},\"admin\":true,\"y\":\"'";
    for accept in ["text/html", "application/json"] {
        let mut s = tokio::net::TcpStream::connect(h.running().http_addr).await.unwrap();
        let req = format!(
            "GET {evil_path} HTTP/1.1\r\nHost: {evil_host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        assert!(!body.contains("<script>"), "{accept}: {body}");
        if accept == "application/json" {
            let v: serde_json::Value = serde_json::from_str(body).expect("valid JSON");
            assert_eq!(v.as_object().unwrap().len(), 2, "no injected key: {v}");
            assert_eq!(v["host"], evil_host);
            assert_eq!(v["path"], evil_path);
        } else {
            assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;}"), "{body}");
            assert!(body.contains("/x&quot;},&quot;admin&quot;"), "{body}");
        }
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_44_head_gets_the_headers_without_a_body() {
    let o = origin().await;
    let h = Harness::start(&(storefront(o.addr) + &example("policies/branded-5xx.yaml"))).await;
    let get = h.send(Method::GET, "shop.example", "/unavailable", Some(BROWSER)).await;
    let get_len = get.headers()["content-length"].clone();
    let head = h.send(Method::HEAD, "shop.example", "/unavailable", Some(BROWSER)).await;
    assert_eq!(head.status(), 503);
    assert_eq!(head.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(head.headers()["content-length"], get_len);
    assert!(head.bytes().await.unwrap().is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_46_copied_and_set_headers() {
    let o = origin().await;
    let h = Harness::start(&(storefront(o.addr) + &example("policies/maintenance.yaml"))).await;
    let r = h
        .send(
            Method::GET,
            "shop.example",
            "/status/502?set-header=cache-control:max-age=600&set-header=x-secret:1",
            Some("application/json"),
        )
        .await;
    assert_eq!(r.status(), 503, "502 -> 503 maintenance");
    assert_eq!(r.headers()["retry-after"], "120");
    assert_eq!(r.headers()["cache-control"], "no-store", "the policy owns viewer Cache-Control");
    assert_eq!(r.headers()["x-error-origin-status"], "502");
    assert!(r.headers().get("x-secret").is_none(), "only listed headers are copied");
    assert_eq!(r.text().await.unwrap(), r#"{"error":"maintenance","retryAfterSeconds":120}"#);

    // copyHeaders (branded-5xx copies Retry-After and CORS from the origin).
    let h2 = Harness::start(&(storefront(o.addr) + &example("policies/branded-5xx.yaml"))).await;
    let r = h2
        .get("shop.example", "/status/503?set-header=retry-after:30&set-header=access-control-allow-origin:*")
        .await;
    assert_eq!(r.headers()["retry-after"], "30");
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    h.shutdown().await;
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_only_changes_nothing_and_counts() {
    let o = origin().await;
    let spec = "mode: ReportOnly\nerrorResponses:\n- codes: ['5xx']\n  responseCode: 200\n  page: {inline: hidden}\n";
    let h = Harness::start(&(storefront(o.addr) + &policy("shop", "dry", spec))).await;
    let r = h.get("shop.example", "/unavailable").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("x-error-origin-status").is_none());
    assert_eq!(r.text().await.unwrap(), "origin: unavailable\n");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("erratum_error_pages_report_only_total{code=\"503\",namespace=\"shop\",policy=\"dry\",source=\"upstream\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("erratum_error_pages_served_total{"), "{metrics}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_bodies_are_drained_and_connections_reused() {
    let o = origin().await;
    let h = Harness::start(&(storefront(o.addr) + &example("policies/branded-5xx.yaml"))).await;
    for _ in 0..10 {
        let r = h.get("shop.example", "/status/503?pad=100000").await;
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("We are having trouble"));
        // Give the drain a moment so the next request can reuse the connection.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(o.hits(), 10);
    assert_eq!(o.connections(), 1, "nginx reconnects after every intercepted error; erratum reuses");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_between_overlapping_policies() {
    let o = origin().await;
    let manifests = storefront(o.addr)
        + &policy(
            "shop",
            "namespace-wide",
            "errorResponses:\n- codes: ['503', '404']\n  page: {inline: wide}\n",
        )
        + &policy(
            "shop",
            "targeted",
            "targetRefs: [{name: storefront}]\nerrorResponses:\n- codes: ['503']\n  page: {inline: targeted}\n",
        )
        + &policy(
            "shop",
            "narrow",
            "targetRefs: [{name: storefront}]\nmatch: {paths: [{type: Prefix, value: /status}]}\nerrorResponses:\n- codes: ['503']\n  page: {inline: narrow}\n",
        );
    let h = Harness::start(&manifests).await;
    assert_eq!(h.get("shop.example", "/status/503").await.text().await.unwrap(), "narrow");
    assert_eq!(h.get("shop.example", "/unavailable").await.text().await.unwrap(), "targeted");
    assert_eq!(
        h.get("shop.example", "/missing/x").await.text().await.unwrap(),
        "wide",
        "per code, the lower policy still serves"
    );
    let st = h.policy_status("shop", "namespace-wide").await;
    assert!(st["conflicts"].to_string().contains("policy shop/"), "{st}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policies_are_reported_and_the_last_good_keeps_serving() {
    let o = origin().await;
    let good = storefront(o.addr)
        + &policy("shop", "p", "errorResponses:\n- codes: ['503']\n  page: {inline: good}\n");
    let h = Harness::start(&good).await;
    assert_eq!(h.get("shop.example", "/unavailable").await.text().await.unwrap(), "good");
    let st = h.policy_status("shop", "p").await;
    assert_eq!(condition(&st, "Accepted")["status"], "True");
    assert_eq!(condition(&st, "Programmed")["status"], "True");
    assert_eq!(st["attachedIngresses"], 1);

    // An edit with a bad template and a missing ConfigMap: reported, last good keeps serving.
    let bad = storefront(o.addr)
        + &policy(
            "shop",
            "p",
            "errorResponses:\n- codes: ['503']\n  page: {inline: '{{whoami}}'}\n- codes: ['404']\n  page: {configMapRef: {name: nope, key: x}}\n",
        );
    h.write_and_wait("main.yaml", &bad).await;
    assert_eq!(h.get("shop.example", "/unavailable").await.text().await.unwrap(), "good");
    let st = h.policy_status("shop", "p").await;
    assert_eq!(condition(&st, "Accepted")["status"], "False");
    assert!(
        condition(&st, "Accepted")["message"]
            .as_str()
            .unwrap()
            .contains("unknown template variable {{whoami}}"),
        "{st}"
    );
    assert_eq!(condition(&st, "ResolvedRefs")["status"], "False");
    assert!(
        condition(&st, "ResolvedRefs")["message"].as_str().unwrap().contains("ConfigMap shop/nope not found"),
        "{st}"
    );
    assert_eq!(condition(&st, "Programmed")["reason"], "LastGoodServing");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_pages_unmatched_requests() {
    let o = origin().await;
    let manifests = storefront(o.addr)
        + &policy(
            "erratum",
            "default",
            "source: Proxy\nerrorResponses:\n- codes: ['404']\n  page: {inline: 'no such site: {{host}}', contentType: text/plain}\n",
        );
    let h = Harness::start_with(&manifests, |c| {
        c.build.default_policy = Some(erratum::index::ObjectKey::new("erratum", "default"))
    })
    .await;
    let r = h.get("nobody.example", "/").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), "no such site: nobody.example");
    let r = h.get("shop.example", "/missing/x").await;
    assert_eq!(r.text().await.unwrap(), "origin: not found\n", "source: Proxy leaves backend 404s alone");
    h.shutdown().await;
}

/// `setHeaders` templates (`examples/policies/login-redirect.yaml`): a browser's 401 becomes a
/// 302 to the login service carrying the URL it asked for, percent-encoded, so nothing a
/// client sends can end the header or add one; an API client keeps its 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_headers_templates_send_a_401_to_sign_in() {
    let o = origin().await;
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies/login-redirect.yaml"),
    )
    .unwrap();
    let h = Harness::start(&(storefront(o.addr) + "---\n" + &example)).await;
    let no_redirects =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let ask = |path: &str, accept: &'static str| {
        no_redirects.get(h.url(path)).header("host", "shop.example").header("accept", accept).send()
    };
    let r = ask("/status/401?next=a&b=c", BROWSER).await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://login.example.com/oauth2/start?rd=http%3A%2F%2Fshop.example%2Fstatus%2F401%3Fnext%3Da%26b%3Dc"
    );
    assert_eq!(r.headers()["x-error-origin-status"], "401");
    let r = ask("/status/401?x=%0D%0ASet-Cookie:%20a=b", BROWSER).await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.ends_with("%3Fx%3D%250D%250ASet-Cookie%3A%2520a%3Db"), "{location}");
    assert!(r.headers().get("set-cookie").is_none(), "no header added by the client");
    let r = ask("/status/401", "application/json").await.unwrap();
    assert_eq!(r.status(), 401, "API clients keep the 401");
    assert!(r.headers().get("location").is_none());
    h.shutdown().await;
}
