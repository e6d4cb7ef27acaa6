//! Ingress semantics end to end: which origin a request reaches.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_and_paths_route_to_their_services() {
    let a = origin().await;
    let b = origin().await;
    let c = origin().await;
    let manifests = [
        backend("shop", "a", &[a.addr]),
        backend("shop", "b", &[b.addr]),
        backend("shop", "c", &[c.addr]),
        ingress(
            "shop",
            "web",
            &[
                ("shop.example", "/", "Prefix", "a"),
                ("shop.example", "/api", "Prefix", "b"),
                ("shop.example", "/api/health", "Exact", "c"),
                ("*.shop.example", "/", "Prefix", "c"),
            ],
        ),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    // (host, path, which origin, status)
    let cases = [
        ("shop.example", "/", &a, 200),
        ("shop.example", "/cart", &a, 200),
        ("shop.example", "/api", &b, 200),
        ("shop.example", "/api/orders", &b, 200),
        ("shop.example", "/apix", &a, 200),
        ("shop.example", "/api/health", &c, 200),
        ("shop.example", "/api/health/x", &b, 200),
        ("Shop.Example:8080", "/api", &b, 200),
        ("eu.shop.example", "/anything", &c, 200),
    ];
    for (host, path, origin, status) in cases {
        let before = origin.hits();
        assert_eq!(h.status(host, path).await, status, "{host}{path}");
        assert_eq!(origin.hits(), before + 1, "{host}{path} reached the wrong origin");
    }
    assert_eq!(h.status("other.example", "/").await, 404, "no route: erratum's own 404");
    assert_eq!(h.status("a.b.shop.example", "/").await, 404, "a wildcard covers one label");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_and_bodies_reach_the_origin() {
    let a = origin().await;
    let manifests =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let h = Harness::start(&manifests).await;
    let resp = h
        .client
        .post(h.url("/echo?x=1&y=2"))
        .header("host", "h.example")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/echo?x=1&y=2");
    assert_eq!(echo["headers"]["host"], "h.example");
    assert_eq!(echo["headers"]["x-forwarded-host"], "h.example");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-request-id"].as_str().unwrap().len(), 32);

    // A client request id is kept; hop-by-hop headers named in Connection are dropped.
    let resp = h
        .client
        .get(h.url("/echo"))
        .header("host", "h.example")
        .header("x-request-id", "trace-42")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"], "trace-42");
    assert!(echo["headers"].get("x-private").is_none(), "{echo}");

    // Large bodies stream both ways.
    let resp = h.get("h.example", "/bytes/5000000").await;
    assert_eq!(resp.bytes().await.unwrap().len(), 5_000_000);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_backend_flag_catches_unmatched_requests() {
    let app = origin().await;
    let fallback = origin().await;
    let manifests = [
        backend("ns", "app", &[app.addr]),
        backend("ns", "fallback", &[fallback.addr]),
        ingress("ns", "i", &[("h.example", "/app", "Prefix", "app")]),
    ]
    .concat();
    let h = Harness::start_with(&manifests, |c| {
        c.build.default_backend = Some("ns/fallback:http".parse().unwrap())
    })
    .await;
    assert_eq!(h.status("h.example", "/app").await, 200);
    assert_eq!(app.hits(), 1);
    assert_eq!(h.status("h.example", "/elsewhere").await, 200);
    assert_eq!(h.status("nobody.example", "/").await, 200);
    assert_eq!(fallback.hits(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_of_other_classes_are_ignored() {
    let a = origin().await;
    let other = ingress("ns", "theirs", &[("h.example", "/", "Prefix", "a")])
        .replace("ingressClassName: erratum", "ingressClassName: nginx");
    let manifests = [backend("ns", "a", &[a.addr]), other].concat();
    let h = Harness::start(&manifests).await;
    assert_eq!(h.status("h.example", "/").await, 404);
    assert_eq!(a.hits(), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ready_endpoints_get_traffic_round_robin() {
    let ready1 = origin().await;
    let ready2 = origin().await;
    // Two ready origins share a port number only by chance, so use one slice per origin.
    let not_ready = origin().await;
    let slice = |name: &str, o: &erratum::origin::Origin, ready: bool| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  namespace: ns\n  labels: {{kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints:\n  - addresses: [\"127.0.0.1\"]\n    conditions: {{ready: {ready}}}\n---\n",
            o.addr.port()
        )
    };
    let manifests = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\nspec:\n  ports: [{name: http, port: 80}]\n---\n".to_string(),
        slice("s1", &ready1, true),
        slice("s2", &ready2, true),
        slice("s3", &not_ready, false),
        ingress("ns", "i", &[("h.example", "/", "Prefix", "web")]),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    for _ in 0..10 {
        assert_eq!(h.status("h.example", "/").await, 200);
    }
    assert_eq!(not_ready.hits(), 0);
    assert_eq!(ready1.hits(), 5, "round robin");
    assert_eq!(ready2.hits(), 5, "round robin");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_services_are_resolved_by_dns() {
    let a = origin().await;
    let manifests = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: ext, namespace: ns}}\nspec: {{type: ExternalName, externalName: localhost}}\n---\n{}",
        ingress("ns", "i", &[("h.example", "/", "Prefix", "ext")])
            .replace("number: 80", &format!("number: {}", a.addr.port()))
    );
    let h = Harness::start(&manifests).await;
    assert_eq!(h.status("h.example", "/").await, 200);
    assert_eq!(a.hits(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled() {
    let a = origin().await;
    let manifests =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let h = Harness::start(&manifests).await;
    for _ in 0..20 {
        assert_eq!(h.status("h.example", "/").await, 200);
    }
    assert_eq!(a.hits(), 20);
    assert_eq!(a.connections(), 1, "sequential requests reuse one keep-alive connection");
    // Error statuses that pass through keep the connection too.
    for _ in 0..5 {
        assert_eq!(h.status("h.example", "/missing/x").await, 404);
    }
    assert_eq!(a.connections(), 1);
    h.shutdown().await;
}

/// `--trusted-proxies` (issue 18): a front proxy's `X-Forwarded-For` is appended to and its
/// client becomes `X-Real-IP`; from an untrusted client the same fields are replaced, so a
/// spoofed chain never becomes the client address. Real sockets, the origin's `/echo`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_fields_are_believed_only_from_trusted_proxies() {
    let a = origin().await;
    let manifests =
        [backend("ns", "a", &[a.addr]), ingress("ns", "i", &[("h.example", "/", "Prefix", "a")])].concat();
    let echo = |h: &Harness| {
        h.client
            .get(h.url("/echo"))
            .header("host", "h.example")
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "www.example.com")
            .header("x-forwarded-port", "443")
            .send()
    };

    // Untrusted (the default): replaced.
    let h = Harness::start(&manifests).await;
    let e: serde_json::Value = echo(&h).await.unwrap().json().await.unwrap();
    assert_eq!(e["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(e["headers"]["x-real-ip"], "127.0.0.1");
    assert_eq!(e["headers"]["x-forwarded-proto"], "http");
    assert_eq!(e["headers"]["x-forwarded-host"], "h.example");
    assert_eq!(e["headers"]["x-forwarded-port"], "80", "the public port, not the listener's");
    h.shutdown().await;

    // Loopback trusted (the test client plays the load balancer).
    let h = Harness::start_with(&manifests, |c| {
        c.proxy.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()].into();
    })
    .await;
    let e: serde_json::Value = echo(&h).await.unwrap().json().await.unwrap();
    assert_eq!(e["headers"]["x-forwarded-for"], "6.6.6.6, 203.0.113.9, 127.0.0.1", "appended to");
    assert_eq!(e["headers"]["x-real-ip"], "203.0.113.9", "the right-most untrusted address");
    assert_eq!(e["headers"]["x-forwarded-proto"], "https", "kept from a trusted peer");
    assert_eq!(e["headers"]["x-forwarded-host"], "www.example.com");
    assert_eq!(e["headers"]["x-forwarded-port"], "443", "kept from a trusted peer");
    // A request without a chain from the trusted peer: the peer is the client.
    let r = h.client.get(h.url("/echo")).header("host", "h.example").send().await.unwrap();
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(e["headers"]["x-forwarded-proto"], "http");
    h.shutdown().await;
}
