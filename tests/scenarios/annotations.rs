//! ingress-nginx's annotations as its documentation describes them (issue 20), through the
//! real proxy from a manifests folder, a real origin that echoes what it got, and a real
//! HTTP client that does not follow redirects. Each test is named after the documented
//! behaviour it checks, including the traps of the Kubernetes blog's "Before You Migrate:
//! Five Surprising Ingress-NGINX Behaviors" (regex paths are prefixes, case-insensitive, and
//! spread to every path of the host).

use std::time::Duration;

use crate::support::*;

/// An Ingress of class erratum in namespace `ns` with these annotations (without the
/// prefix) and `(path, pathType)` rules for `host`, all to Service `service` port 80.
fn ingress_with(
    name: &str,
    host: &str,
    annotations: &[(&str, &str)],
    paths: &[(&str, &str)],
    service: &str,
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  annotations:\n    erratum.dev/test: \"true\"\n"
    );
    for (k, v) in annotations {
        out.push_str(&format!("    nginx.ingress.kubernetes.io/{k}: '{v}'\n"));
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: erratum\n  rules:\n  - host: {host}\n    http:\n      paths:\n"
    ));
    for (path, kind) in paths {
        out.push_str(&format!(
            "      - path: '{path}'\n        pathType: {kind}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
        ));
    }
    out.push_str("---\n");
    out
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn echo(h: &Harness, host: &str, path: &str) -> serde_json::Value {
    let resp = h.get(host, path).await;
    assert_eq!(resp.status(), 200, "{host}{path}");
    resp.json().await.unwrap()
}

/// `rewrite-target` with capture groups (ingress-nginx's docs/examples/rewrite): the backend
/// gets `/$2` of `/something(/|$)(.*)`, the query kept; the match is case-insensitive.
#[tokio::test]
async fn rewrite_target_uses_the_paths_capture_groups() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&ingress_with(
        "rewrite",
        "rewrite.test",
        &[("use-regex", "true"), ("rewrite-target", "/echo/$2")],
        &[("/something(/|$)(.*)", "ImplementationSpecific")],
        "app",
    ));
    m.push_str(&ingress_with(
        "query",
        "query.test",
        &[("rewrite-target", "/echo/v2/$1?from=api"), ("x-forwarded-prefix", "/api")],
        &[("/api/(.*)", "Prefix")],
        "app",
    ));
    let h = Harness::start(&m).await;
    for (path, uri) in [
        ("/something", "/echo/"),
        ("/something/", "/echo/"),
        ("/something/new?a=1", "/echo/new?a=1"),
        ("/SomeThing/new", "/echo/new"),
    ] {
        assert_eq!(echo(&h, "rewrite.test", path).await["uri"], uri, "{path}");
    }
    assert_eq!(h.status("rewrite.test", "/other").await, 404, "anchored at the start");
    let got = echo(&h, "query.test", "/api/users?page=2").await;
    assert_eq!(got["uri"], "/echo/v2/users?from=api&page=2", "the target's query, then the client's");
    assert_eq!(got["headers"]["x-forwarded-prefix"], "/api");
    h.shutdown().await;
}

/// `use-regex` on one Ingress makes every path of the host a case-insensitive regex prefix,
/// another Ingress's Exact and Prefix paths included — and erratum tells that Ingress.
#[tokio::test]
async fn use_regex_turns_every_path_of_the_host_into_a_case_insensitive_prefix_regex() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&ingress_with(
        "regex",
        "trap.test",
        &[("use-regex", "true")],
        &[("/echo/v[0-9]+", "Prefix")],
        "app",
    ));
    m.push_str(&ingress_with(
        "plain",
        "trap.test",
        &[],
        &[("/echo/exact", "Exact"), ("/Echo/Static", "Prefix")],
        "app",
    ));
    m.push_str(&ingress_with(
        "control",
        "control.test",
        &[],
        &[("/echo/exact", "Exact"), ("/Echo/Static", "Prefix")],
        "app",
    ));
    let h = Harness::start(&m).await;
    assert_eq!(h.status("trap.test", "/echo/v12/x").await, 200);
    assert_eq!(h.status("trap.test", "/ECHO/V1").await, 200, "case-insensitive");
    assert_eq!(h.status("trap.test", "/echo/exactly").await, 200, "an Exact path became a prefix");
    assert_eq!(h.status("trap.test", "/echo/static/css").await, 200, "a Prefix path became case-insensitive");
    assert_eq!(h.status("trap.test", "/echo/vx").await, 404);
    // The same paths on a host without use-regex keep their Ingress v1 meaning.
    assert_eq!(h.status("control.test", "/echo/exactly").await, 404);
    assert_eq!(h.status("control.test", "/echo/static/css").await, 404);
    assert_eq!(h.status("control.test", "/Echo/Static/css").await, 200);
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let problems = table["problems"].to_string();
    assert!(
        problems.contains("ns/plain")
            && problems.contains("makes every path of the host a case-insensitive regex prefix"),
        "{problems}"
    );
    h.shutdown().await;
}

/// `app-root` (302 for `/` only), `permanent-redirect` (301, or `permanent-redirect-code`),
/// `temporal-redirect` (302, or `temporal-redirect-code`), `from-to-www-redirect` (308 to the
/// host the rules name, path and query kept). Nothing reaches the backend.
#[tokio::test]
async fn redirect_annotations_answer_without_the_backend() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    let root = &[("/", "Prefix")];
    m.push_str(&ingress_with("root", "root.test", &[("app-root", "/app1")], root, "app"));
    m.push_str(&ingress_with(
        "moved",
        "moved.test",
        &[("permanent-redirect", "https://example.com/new")],
        root,
        "app",
    ));
    m.push_str(&ingress_with(
        "moved308",
        "moved308.test",
        &[("permanent-redirect", "https://example.com/new"), ("permanent-redirect-code", "308")],
        root,
        "app",
    ));
    m.push_str(&ingress_with(
        "away",
        "away.test",
        &[("temporal-redirect", "https://example.com/later")],
        root,
        "app",
    ));
    m.push_str(&ingress_with(
        "away307",
        "away307.test",
        &[("temporal-redirect", "https://example.com/later"), ("temporal-redirect-code", "307")],
        root,
        "app",
    ));
    m.push_str(&ingress_with("www", "www.shop.test", &[("from-to-www-redirect", "true")], root, "app"));
    m.push_str(&ingress_with("bare", "bare.test", &[("from-to-www-redirect", "true")], root, "app"));
    let h = Harness::start(&m).await;
    let client = no_redirects();
    let get = |host: &'static str, path: &'static str| {
        let req = client.get(h.url(path)).header("host", host);
        async move {
            let resp = req.send().await.unwrap();
            let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_string());
            (resp.status().as_u16(), location.unwrap_or_default())
        }
    };
    assert_eq!(get("root.test", "/").await, (302, "http://root.test/app1".into()));
    assert_eq!(get("root.test", "/other").await.0, 200, "app-root redirects / only");
    assert_eq!(get("moved.test", "/x").await, (301, "https://example.com/new".into()));
    assert_eq!(get("moved308.test", "/x").await, (308, "https://example.com/new".into()));
    assert_eq!(get("away.test", "/x").await, (302, "https://example.com/later".into()));
    assert_eq!(get("away307.test", "/x").await, (307, "https://example.com/later".into()));
    assert_eq!(get("shop.test", "/a/b?c=d").await, (308, "http://www.shop.test/a/b?c=d".into()));
    assert_eq!(get("www.bare.test", "/x").await, (308, "http://bare.test/x".into()));
    assert_eq!(get("www.shop.test", "/x").await.0, 200, "the named host serves");
    assert_eq!(app.hits(), 2, "redirects never reach the backend");
    h.shutdown().await;
}

/// `upstream-vhost` is the Host the backend gets (X-Forwarded-Host stays the client's);
/// `x-forwarded-prefix` is sent only with a rewrite, as ingress-nginx does.
#[tokio::test]
async fn upstream_vhost_sets_the_backends_host() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&ingress_with(
        "vhost",
        "vhost.test",
        &[("upstream-vhost", "internal.example"), ("x-forwarded-prefix", "/ignored")],
        &[("/", "Prefix")],
        "app",
    ));
    let h = Harness::start(&m).await;
    let got = echo(&h, "vhost.test", "/echo").await;
    assert_eq!(got["headers"]["host"], "internal.example");
    assert_eq!(got["headers"]["x-forwarded-host"], "vhost.test");
    assert!(got["headers"].get("x-forwarded-prefix").is_none(), "no rewrite, no prefix");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    assert_eq!(table["edge"][0]["routing"]["upstreamVhost"], "internal.example");
    h.shutdown().await;
}

/// `limit-rps` with `limit-burst-multiplier`: the burst passes, the next request gets 429 with
/// `Retry-After` through the one decision (a policy pages it), counted as `rate_limited` and
/// never reaching the backend; `limit-whitelist` exempts; `limit-connections` counts requests
/// in flight.
#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let app = origin().await;
    let slow = origin().await;
    slow.delay(Duration::from_millis(600));
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&backend("ns", "slow", &[slow.addr]));
    let root = &[("/", "Prefix")];
    m.push_str(&ingress_with(
        "limited",
        "limited.test",
        &[("limit-rps", "1"), ("limit-burst-multiplier", "2")],
        root,
        "app",
    ));
    m.push_str(&ingress_with(
        "exempt",
        "exempt.test",
        &[("limit-rps", "1"), ("limit-burst-multiplier", "1"), ("limit-whitelist", "127.0.0.0/8")],
        root,
        "app",
    ));
    m.push_str(&ingress_with("conns", "conns.test", &[("limit-connections", "1")], root, "slow"));
    m.push_str(&policy(
        "ns",
        "slow-down",
        "targetRefs: [{name: limited}]\nerrorResponses:\n- codes: [\"429\"]\n  page: {formats: [{contentType: text/plain, inline: \"slow down\"}]}\n",
    ));
    let h = Harness::start(&m).await;
    for i in 0..3 {
        assert_eq!(h.status("limited.test", "/").await, 200, "burst: request {i}");
    }
    let resp = h.get("limited.test", "/").await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry), "one request per second: {retry}");
    assert_eq!(resp.text().await.unwrap(), "slow down");
    assert_eq!(app.hits(), 3, "the refused request never reached the backend");
    for _ in 0..6 {
        assert_eq!(h.status("exempt.test", "/").await, 200, "limit-whitelist");
    }
    let (a, b) = tokio::join!(h.get("conns.test", "/"), h.get("conns.test", "/"));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 429], "one request in flight per client");
    assert_eq!(h.status("conns.test", "/").await, 200, "the count drops when the request ends");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"rate_limited\"} 2"), "{metrics}");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    assert!(table["problems"].to_string().contains("429 and Retry-After"), "the difference is told");
    let limited =
        table["rateLimits"].as_array().unwrap().iter().find(|l| l["ingress"] == "ns/limited").unwrap();
    assert_eq!((limited["rps"].as_u64(), limited["burstMultiplier"].as_u64()), (Some(1), Some(2)));
    assert_eq!(limited["trackedClients"], 1);
    h.shutdown().await;
}

/// `enable-cors` with ingress-nginx's defaults (`*`, credentials true, its methods, headers
/// and max age) on every response, a preflight (`OPTIONS`) answered 204 without the backend;
/// a listed origin (a `*.` wildcard of one label) is echoed with `Vary: Origin`, others get no
/// CORS and their `OPTIONS` goes to the backend; `custom-headers` from a ConfigMap are on
/// every response, erratum's error pages included.
#[tokio::test]
async fn cors_and_custom_headers_are_on_every_response() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&backend("ns", "empty", &[]));
    let root = &[("/", "Prefix")];
    m.push_str(&ingress_with("open", "open.test", &[("enable-cors", "true")], root, "app"));
    m.push_str(&ingress_with(
        "listed",
        "listed.test",
        &[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://*.shop.test, https://admin.test:8443"),
            ("cors-allow-credentials", "false"),
            ("cors-expose-headers", "X-Total"),
        ],
        root,
        "app",
    ));
    m.push_str(&ingress_with(
        "headers",
        "headers.test",
        &[("custom-headers", "ns/security-headers")],
        root,
        "empty",
    ));
    m.push_str(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: security-headers, namespace: ns}\ndata:\n  \
         X-Frame-Options: DENY\n  Strict-Transport-Security: max-age=31536000\n---\n",
    );
    let h = Harness::start(&m).await;
    let send = |method: reqwest::Method, host: &'static str, origin: Option<&'static str>| {
        let mut req = h.client.request(method, h.url("/echo")).header("host", host);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        async move { req.send().await.unwrap() }
    };
    let resp = send(reqwest::Method::GET, "open.test", None).await;
    assert_eq!(resp.status(), 200);
    let hdr = |r: &reqwest::Response, n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(hdr(&resp, "access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(hdr(&resp, "access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(
        hdr(&resp, "access-control-allow-methods").as_deref(),
        Some("GET, PUT, POST, DELETE, PATCH, OPTIONS")
    );
    assert_eq!(hdr(&resp, "access-control-max-age").as_deref(), Some("1728000"));
    let hits = app.hits();
    let pre = send(reqwest::Method::OPTIONS, "open.test", Some("https://anywhere.test")).await;
    assert_eq!(pre.status(), 204, "a preflight is answered here");
    assert_eq!(hdr(&pre, "content-type").as_deref(), Some("text/plain charset=UTF-8"));
    assert_eq!(app.hits(), hits, "without the backend");

    let ok = send(reqwest::Method::GET, "listed.test", Some("https://www.shop.test")).await;
    assert_eq!(hdr(&ok, "access-control-allow-origin").as_deref(), Some("https://www.shop.test"));
    assert_eq!(hdr(&ok, "vary").as_deref(), Some("Origin"));
    assert_eq!(hdr(&ok, "access-control-allow-credentials"), None);
    assert_eq!(hdr(&ok, "access-control-expose-headers").as_deref(), Some("X-Total"));
    for other in ["https://a.b.shop.test", "https://admin.test", "http://www.shop.test"] {
        let resp = send(reqwest::Method::GET, "listed.test", Some(other)).await;
        assert_eq!(hdr(&resp, "access-control-allow-origin"), None, "{other}");
    }
    let hits = app.hits();
    let not_preflight = send(reqwest::Method::OPTIONS, "listed.test", Some("https://evil.test")).await;
    assert_eq!(not_preflight.status(), 200, "an OPTIONS without CORS goes to the backend");
    assert_eq!(app.hits(), hits + 1);
    let pre = send(reqwest::Method::OPTIONS, "listed.test", Some("https://admin.test:8443")).await;
    assert_eq!(pre.status(), 204);

    let resp = h.get("headers.test", "/").await;
    assert_eq!(resp.status(), 503, "no endpoint: erratum's own page");
    assert_eq!(hdr(&resp, "x-frame-options").as_deref(), Some("DENY"), "on erratum's page too");
    assert_eq!(hdr(&resp, "strict-transport-security").as_deref(), Some("max-age=31536000"));
    h.shutdown().await;
}

/// The blog's fourth and fifth behaviours. A Prefix path written with a trailing slash
/// (`/docs/`) serves `/docs` itself, as Ingress v1 says (ingress-nginx answers 301 to
/// `/docs/`: nginx's location special case; erratum differs, and the README says so). Paths
/// are normalised before matching (`.`/`..` segments, `//`, `%2e`) as in nginx — and the
/// backend gets the normalised path too, so a path cannot match one route and mean another.
#[tokio::test]
async fn trailing_slashes_and_url_normalisation() {
    let app = origin().await;
    let mut m = backend("ns", "app", &[app.addr]);
    m.push_str(&ingress_with(
        "docs",
        "docs.test",
        &[],
        &[("/echo/docs/", "Prefix"), ("/echo/admin", "Exact")],
        "app",
    ));
    let h = Harness::start(&m).await;
    let resp = no_redirects().get(h.url("/echo/docs")).header("host", "docs.test").send().await.unwrap();
    assert_eq!(resp.status(), 200, "served, not redirected");
    for (path, uri) in [
        ("/echo/docs/../docs/a", "/echo/docs/a"),
        ("//echo//docs///a", "/echo/docs/a"),
        ("/echo/docs/%2e%2e/docs/b", "/echo/docs/b"),
        ("/echo/x/../admin", "/echo/admin"),
    ] {
        assert_eq!(echo(&h, "docs.test", path).await["uri"], uri, "{path}");
    }
    assert_eq!(h.status("docs.test", "/echo/docs/../private").await, 404, "normalised before matching");
    h.shutdown().await;
}

/// `canary: "true"` on a second Ingress for the same host and path: `canary-by-header`
/// (`always`/`never`), then `canary-by-cookie`, then `canary-weight` decide which Service gets
/// a request, as in ingress-nginx; a canary with no main Ingress is reported and serves nothing.
#[tokio::test]
async fn canary_ingresses_take_their_share() {
    let main = origin().await;
    let canary = origin().await;
    let mut m = backend("ns", "main", &[main.addr]);
    m.push_str(&backend("ns", "canary", &[canary.addr]));
    let root = &[("/", "Prefix")];
    m.push_str(&ingress_with("prod", "shop.test", &[], root, "main"));
    m.push_str(&ingress_with(
        "prod-canary",
        "shop.test",
        &[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-cookie", "canary"),
            ("canary-weight", "20"),
        ],
        root,
        "canary",
    ));
    m.push_str(&ingress_with(
        "orphan",
        "orphan.test",
        &[("canary", "true"), ("canary-weight", "100")],
        root,
        "canary",
    ));
    let h = Harness::start(&m).await;
    let send = |header: Option<&'static str>, cookie: Option<&'static str>| {
        let mut req = h.client.get(h.url("/")).header("host", "shop.test");
        if let Some(v) = header {
            req = req.header("x-canary", v);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        async move { assert_eq!(req.send().await.unwrap().status(), 200) }
    };
    let (m0, c0) = (main.hits(), canary.hits());
    send(Some("always"), None).await;
    assert_eq!((main.hits() - m0, canary.hits() - c0), (0, 1), "header always");
    send(Some("never"), Some("canary=always")).await;
    assert_eq!((main.hits() - m0, canary.hits() - c0), (1, 1), "header never wins over the cookie");
    send(None, Some("session=1; canary=always")).await;
    assert_eq!((main.hits() - m0, canary.hits() - c0), (1, 2), "cookie always");
    let (m0, c0) = (main.hits(), canary.hits());
    for _ in 0..500 {
        send(None, None).await;
    }
    let share = canary.hits() - c0;
    assert_eq!(main.hits() - m0 + share, 500);
    assert!((50..=150).contains(&share), "20 % of 500 by weight: {share}");
    assert_eq!(h.status("orphan.test", "/").await, 404, "a canary alone serves nothing");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    assert!(table["problems"].to_string().contains("no main Ingress serves it"), "{}", table["problems"]);
    h.shutdown().await;
}

/// `affinity: cookie`: a client without the cookie is balanced and gets one (named by
/// `session-cookie-name`, with its path and max age, never the endpoint's address); with it,
/// every request goes to the same endpoint; a cookie for an endpoint that is gone is replaced.
#[tokio::test]
async fn affinity_cookie_keeps_a_client_on_its_endpoint() {
    // One port on three loopback addresses: an EndpointSlice names one port for all.
    let port = closed_port().port();
    let addrs: Vec<std::net::SocketAddr> = (1..=3).map(|i| ([127, 0, 0, i], port).into()).collect();
    let mut origins = Vec::new();
    for a in &addrs {
        origins.push(erratum::origin::Origin::start(*a).await.unwrap());
    }
    let mut m = backend("ns", "app", &addrs);
    m.push_str(&ingress_with(
        "sticky",
        "sticky.test",
        &[("affinity", "cookie"), ("session-cookie-name", "route"), ("session-cookie-max-age", "600")],
        &[("/", "Prefix")],
        "app",
    ));
    let h = Harness::start(&m).await;
    let hits = || origins.iter().map(|o| o.hits()).collect::<Vec<_>>();
    let first = h.get("sticky.test", "/").await;
    let set = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("route=") && set.ends_with("; Path=/; Max-Age=600; HttpOnly"), "{set}");
    assert!(!set.contains("127.0.0"), "no address in the cookie: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let before = hits();
    for _ in 0..12 {
        let resp = h
            .client
            .get(h.url("/"))
            .header("host", "sticky.test")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("set-cookie").is_none(), "a valid cookie is kept");
    }
    let moved: Vec<u64> = hits().iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(moved.iter().filter(|&&n| n == 12).count(), 1, "all 12 on one endpoint: {moved:?}");
    let before = hits();
    for _ in 0..12 {
        assert_eq!(h.status("sticky.test", "/").await, 200);
    }
    let spread: Vec<u64> = hits().iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(spread.iter().all(|&n| n > 0), "without the cookie, balanced: {spread:?}");
    let stale = h
        .client
        .get(h.url("/"))
        .header("host", "sticky.test")
        .header("cookie", "route=0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert!(stale.headers().get("set-cookie").is_some(), "an unknown endpoint's cookie is replaced");
    h.shutdown().await;
}

/// `session-cookie-change-on-failure`: a client whose endpoint fails is answered by another
/// (the retry) and, only with the annotation, gets a cookie naming the one that answered.
#[tokio::test]
async fn affinity_cookie_changes_on_failure_only_when_asked() {
    let port = closed_port().port();
    let addrs: Vec<std::net::SocketAddr> = (1..=3).map(|i| ([127, 0, 0, i], port).into()).collect();
    // .1 and .2 answer; .3 refuses connections.
    let mut origins = Vec::new();
    for a in &addrs[..2] {
        origins.push(erratum::origin::Origin::start(*a).await.unwrap());
    }
    let mut m = backend("ns", "app", &addrs);
    let root = &[("/", "Prefix")];
    m.push_str(&ingress_with("keep", "keep.test", &[("affinity", "cookie")], root, "app"));
    m.push_str(&ingress_with(
        "change",
        "change.test",
        &[("affinity", "cookie"), ("session-cookie-change-on-failure", "true")],
        root,
        "app",
    ));
    let h = Harness::start(&m).await;
    // The cookie value for the dead endpoint: FNV-1a 64 of its address, as erratum writes it.
    let fnv = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    };
    let dead = format!("INGRESSCOOKIE={:016x}", fnv(&addrs[2].to_string()));
    for (host, changes) in [("keep.test", false), ("change.test", true)] {
        let resp =
            h.client.get(h.url("/")).header("host", host).header("cookie", &dead).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{host}: another endpoint answered");
        assert_eq!(resp.headers().get("set-cookie").is_some(), changes, "{host}");
    }
    h.shutdown().await;
}
