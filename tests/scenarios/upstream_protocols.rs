//! Upstreams that speak more than plaintext HTTP/1.1 (issue 19): HTTPS endpoints verified
//! against a CA from a Secret or a ConfigMap, h2c and HTTP/2 over TLS, and gRPC end to end
//! with a real gRPC client and server (tonic) — unary, server streaming, bidirectional — with
//! erratum's own failures answered as gRPC statuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use erratum::origin::Origin;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A CA and a server certificate it signed for `names`.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn pki(names: &[&str]) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let mut server =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key_der)
            .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Pki { ca_pem: ca.pem(), server: Arc::new(server) }
}

/// A server configuration for `server_names` that demands a client certificate, the CA of
/// its own certificate (PEM), and a client certificate and key (PEM) it accepts.
fn mutual(server_names: &[&str]) -> (String, String, String, Arc<rustls::ServerConfig>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let client_ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["erratum.client".to_string()])
        .unwrap()
        .signed_by(&key, &client_ca)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = CertificateParams::new(server_names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca.pem(), client.pem(), key.serialize_pem(), Arc::new(config))
}

/// An Ingress `name` for `host` -> service `svc`; annotation keys without a `/` get the
/// ingress-nginx prefix.
fn ingress_for(name: &str, host: &str, svc: &str, annotations: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: ns\n  annotations:\n    erratum.dev/test: \"true\"\n"
    );
    for (k, v) in annotations {
        let key = if k.contains('/') { k.to_string() } else { format!("nginx.ingress.kubernetes.io/{k}") };
        out.push_str(&format!("    {key}: \"{v}\"\n"));
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: erratum\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {svc}, port: {{number: 80}}}}}}}}]}}\n---\n"
    ));
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// A TLS Secret holding a CA (and, as the type requires, a certificate and key erratum then
/// presents as its client certificate).
fn ca_secret(name: &str, ca_pem: &str) -> String {
    let client = cert(&["erratum-client"]);
    format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: {name}, namespace: ns}}\nstringData:\n  ca.crt: |\n{}  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(ca_pem),
        indent(&client.pem),
        indent(&client.key_pem)
    )
}

fn ca_configmap(name: &str, ca_pem: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: ns}}\ndata:\n  ca.crt: |\n{}---\n",
        indent(ca_pem)
    )
}

async fn table(h: &Harness) -> serde_json::Value {
    h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap()
}

/// HTTPS to the endpoint: verified against the CA of a Secret or ConfigMap, with the
/// Service's name or `proxy-ssl-name`; a wrong CA or name is a 502 and nothing goes out in
/// plaintext; no CA means ingress-nginx's unverified default, reported; a missing Secret
/// makes the route answer 503. Connections are pooled.
#[tokio::test]
async fn https_upstreams_verify_what_they_are_told_to() {
    let good = pki(&["tls.ns.svc", "backend.internal"]);
    let other = pki(&["tls.ns.svc"]);
    let origin = Origin::start_tls("127.0.0.1:0".parse().unwrap(), good.server.clone()).await.unwrap();
    let https = |extra: &[(&'static str, &'static str)]| {
        let mut a: Vec<(&str, &str)> = vec![("backend-protocol", "HTTPS")];
        a.extend_from_slice(extra);
        a
    };
    let mut m = backend("ns", "tls", &[origin.addr]);
    m.push_str(&ca_secret("ca-good", &good.ca_pem));
    m.push_str(&ca_configmap("ca-other", &other.ca_pem));
    m.push_str(&ca_configmap("ca-good-map", &good.ca_pem));
    m.push_str(&ingress_for("good", "good.test", "tls", &https(&[("proxy-ssl-secret", "ns/ca-good")])));
    m.push_str(&ingress_for(
        "map",
        "map.test",
        "tls",
        &https(&[("erratum.dev/backend-ca-configmap", "ca-good-map")]),
    ));
    m.push_str(&ingress_for(
        "wrongca",
        "wrongca.test",
        "tls",
        &https(&[("erratum.dev/backend-ca-configmap", "ca-other")]),
    ));
    m.push_str(&ingress_for(
        "wrongname",
        "wrongname.test",
        "tls",
        &https(&[("proxy-ssl-secret", "ns/ca-good"), ("proxy-ssl-name", "elsewhere.example")]),
    ));
    m.push_str(&ingress_for(
        "named",
        "named.test",
        "tls",
        &https(&[("proxy-ssl-secret", "ca-good"), ("proxy-ssl-name", "backend.internal")]),
    ));
    m.push_str(&ingress_for("unverified", "unverified.test", "tls", &https(&[])));
    m.push_str(&ingress_for("off", "off.test", "tls", &https(&[("proxy-ssl-verify", "off")])));
    m.push_str(&ingress_for("missing", "missing.test", "tls", &https(&[("proxy-ssl-secret", "ns/nope")])));
    // Plaintext to a TLS endpoint: what HTTPS is not.
    m.push_str(&ingress_for("plain", "plain.test", "tls", &[]));
    let h = Harness::start(&m).await;

    for host in ["good.test", "map.test", "named.test", "unverified.test", "off.test"] {
        let resp = h.get(host, "/echo").await;
        assert_eq!(resp.status(), 200, "{host}");
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["headers"]["host"], host, "the client's Host goes to the endpoint");
    }
    let before = origin.hits();
    assert_eq!(h.status("wrongca.test", "/").await, 502, "a certificate the CA did not sign");
    assert_eq!(h.status("wrongname.test", "/").await, 502, "a certificate for another name");
    assert_eq!(origin.hits(), before, "nothing was sent to an endpoint that did not verify");
    assert_eq!(h.status("missing.test", "/").await, 503, "a CA that cannot be read: no request goes out");
    assert_ne!(h.status("plain.test", "/").await, 200);

    // Pooled: more requests, no more connections.
    let connections = origin.connections();
    for _ in 0..5 {
        assert_eq!(h.status("good.test", "/").await, 200);
    }
    assert!(origin.connections() <= connections + 1, "{} then {}", connections, origin.connections());

    let t = table(&h).await;
    let problems = t["problems"].to_string();
    assert!(problems.contains("ns/unverified") && problems.contains("not verified"), "{problems}");
    assert!(!problems.contains("ns/off:"), "verification off by request is not a warning: {problems}");
    assert!(problems.contains("proxy-ssl-secret ns/nope not found"), "{problems}");
    let edge = t["edge"].as_array().unwrap();
    let good_edge = edge.iter().find(|e| e["ingress"] == "ns/good").unwrap();
    assert_eq!(good_edge["protocols"][0]["protocol"], "HTTPS");
    assert_eq!(good_edge["protocols"][0]["tlsName"], "tls.ns.svc");
    assert_eq!(good_edge["protocols"][0]["tlsVerified"], true);
    let m = h.metrics().await;
    assert!(m.contains("erratum_proxy_errors_total{reason=\"upstream_connect\"} 2"), "{m}");
    h.shutdown().await;
}

/// `proxy-ssl-secret`'s `tls.crt`/`tls.key` are the client certificate erratum presents to
/// an endpoint that asks for one (mutual TLS); without it the endpoint refuses: 502.
#[tokio::test]
async fn https_upstreams_present_the_secrets_client_certificate() {
    let (server_ca, client_pem, client_key, config) = mutual(&["mtls.ns.svc"]);
    let origin = Origin::start_tls("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: client, namespace: ns}}\nstringData:\n  ca.crt: |\n{}  tls.crt: |\n{}  tls.key: |\n{}---\n",
        indent(&server_ca),
        indent(&client_pem),
        indent(&client_key)
    );
    let mut m = backend("ns", "mtls", &[origin.addr]);
    m.push_str(&secret);
    m.push_str(&ca_configmap("ca", &server_ca));
    m.push_str(&ingress_for(
        "with",
        "with.test",
        "mtls",
        &[("backend-protocol", "HTTPS"), ("proxy-ssl-secret", "client")],
    ));
    m.push_str(&ingress_for(
        "without",
        "without.test",
        "mtls",
        &[("backend-protocol", "HTTPS"), ("erratum.dev/backend-ca-configmap", "ca")],
    ));
    let h = Harness::start(&m).await;
    assert_eq!(h.status("with.test", "/").await, 200, "the client certificate of the Secret");
    assert_eq!(h.status("without.test", "/").await, 502, "no client certificate: refused");
    assert_eq!(origin.hits(), 1);
    h.shutdown().await;
}

/// H2C: HTTP/2 with prior knowledge, every request a stream of one shared connection; GRPCS
/// to an endpoint whose ALPN picks h2 is HTTP/2 over TLS. The Service port's `appProtocol`
/// says it without an annotation.
#[tokio::test]
async fn http2_upstreams_share_one_connection() {
    let h2c = origin().await;
    let pki = pki(&["h2.ns.svc"]);
    let tls = Origin::start_tls("127.0.0.1:0".parse().unwrap(), pki.server.clone()).await.unwrap();
    let mut m = backend("ns", "h2c", &[h2c.addr]);
    m.push_str(&backend("ns", "h2", &[tls.addr]));
    // The same endpoint as a Service whose port says `appProtocol: kubernetes.io/h2c`.
    m.push_str(
        &backend("ns", "app", &[h2c.addr])
            .replace("{name: http, port: 80}", "{name: http, port: 80, appProtocol: kubernetes.io/h2c}"),
    );
    m.push_str(&ca_configmap("ca", &pki.ca_pem));
    m.push_str(&ingress_for("h2c", "h2c.test", "h2c", &[("backend-protocol", "H2C")]));
    m.push_str(&ingress_for("app", "app.test", "app", &[]));
    m.push_str(&ingress_for(
        "h2",
        "h2.test",
        "h2",
        &[("backend-protocol", "GRPCS"), ("erratum.dev/backend-ca-configmap", "ca")],
    ));
    let h = Arc::new(Harness::start(&m).await);

    for (host, origin) in [("h2c.test", &h2c), ("app.test", &h2c), ("h2.test", &tls)] {
        let echo: serde_json::Value = h.get(host, "/echo?x=1").await.json().await.unwrap();
        assert_eq!(echo["version"], "HTTP/2.0", "{host}: {echo}");
        assert_eq!(echo["uri"].as_str().unwrap().rsplit_once("/echo").unwrap().1, "?x=1", "{echo}");
        assert!(origin.hits() > 0);
    }
    let connections = h2c.connections();
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                let body = format!("{}", i % 10).repeat(1000);
                let resp = h
                    .client
                    .post(h.url("/upload"))
                    .header("host", "h2c.test")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.text().await.unwrap())
            })
        })
        .collect();
    for c in calls {
        let (status, text) = c.await.unwrap();
        assert_eq!((status, text.as_str()), (200, "received 1000 bytes\n"));
    }
    assert_eq!(h2c.connections(), connections, "streams of the one connection");

    // Past the stream's 64 KiB flow-control window: streamed as the origin gives credit.
    let big = h.client.post(h.url("/upload")).header("host", "h2c.test").body(vec![b'x'; 300_000]);
    let big = big.send().await.unwrap();
    assert_eq!((big.status().as_u16(), big.text().await.unwrap()), (200, "received 300000 bytes\n".into()));
    // A body with no length that grows past `--max-body-size` (1m) while it streams: 413, as
    // on HTTP/1.1 upstreams, not a 502.
    let mut raw = tokio::net::TcpStream::connect(h.running().http_addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: h2c.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    raw.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
    for _ in 0..40 {
        if raw.write_all(chunk.as_bytes()).await.is_err() {
            break; // answered and closed once past the limit
        }
    }
    let mut answer = vec![0; 64];
    let n = raw.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let upstream = h.client.get(h.url("/status/503")).header("host", "h2c.test").send().await.unwrap();
    assert_eq!(upstream.status(), 503, "an HTTP/2 upstream's status passes through (not a gRPC call)");
    Arc::into_inner(h).unwrap().shutdown().await;
}

mod grpc {
    use super::*;
    use tonic::Code;
    use tonic::transport::{Channel, Endpoint};
    use tonic_health::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    /// A tonic server with the health service (unary, server streaming) and reflection
    /// (bidirectional streaming), on a free port.
    async fn server()
    -> (SocketAddr, tonic_health::server::HealthReporter, tokio_util::sync::CancellationToken) {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("shop", ServingStatus::Serving).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .unwrap();
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(reflection)
                .serve_with_incoming_shutdown(incoming, stopped.cancelled_owned())
                .await
                .unwrap();
        });
        (addr, reporter, stop)
    }

    /// A gRPC channel through erratum's plaintext listener, calling `host`.
    async fn channel(h: &Harness, host: &str) -> Channel {
        Endpoint::from_shared(format!("http://{}", h.running().http_addr))
            .unwrap()
            .origin(format!("http://{host}").parse().unwrap())
            .connect()
            .await
            .unwrap()
    }

    fn check(service: &str) -> HealthCheckRequest {
        HealthCheckRequest { service: service.into() }
    }

    /// Unary, server streaming and bidirectional streaming calls through erratum, trailers
    /// and all.
    #[tokio::test]
    async fn calls_pass_through_end_to_end() {
        let (addr, reporter, stop) = server().await;
        let mut m = backend("ns", "grpc", &[addr]);
        m.push_str(&ingress_for("grpc", "grpc.test", "grpc", &[("backend-protocol", "GRPC")]));
        let h = Harness::start(&m).await;
        let ch = channel(&h, "grpc.test").await;

        let mut health = HealthClient::new(ch.clone());
        let answer = health.check(check("shop")).await.unwrap().into_inner();
        assert_eq!(answer.status, health_check_response::ServingStatus::Serving as i32);
        let unknown = health.check(check("nope")).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound, "the server's own status, from its trailers");

        let mut watch = health.watch(check("shop")).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.status, health_check_response::ServingStatus::Serving as i32);
        reporter.set_service_status("shop", ServingStatus::NotServing).await;
        let next =
            tokio::time::timeout(Duration::from_secs(5), watch.message()).await.unwrap().unwrap().unwrap();
        assert_eq!(
            next.status,
            health_check_response::ServingStatus::NotServing as i32,
            "streamed as it changed"
        );

        let mut reflection = ServerReflectionClient::new(ch);
        let asks = (0..3).map(|_| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        });
        let mut answers =
            reflection.server_reflection_info(futures::stream::iter(asks)).await.unwrap().into_inner();
        let mut seen = 0;
        while let Some(answer) = answers.message().await.unwrap() {
            let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
                panic!("{answer:?}")
            };
            assert!(list.service.iter().any(|s| s.name == "grpc.health.v1.Health"), "{list:?}");
            seen += 1;
        }
        assert_eq!(seen, 3, "one answer per request on the bidirectional stream");
        stop.cancel();
        h.shutdown().await;
    }

    /// erratum's failures are gRPC statuses, never a page: no endpoint, refused, an upstream
    /// HTTP 503 without a gRPC status, the call's deadline; a policy sets `grpc-message`.
    #[tokio::test]
    async fn failures_are_grpc_statuses() {
        let slow = origin().await;
        let failing = origin().await;
        failing.fail_with(Some(503));
        slow.delay(Duration::from_secs(3));
        let grpc = &[("backend-protocol", "GRPC")];
        let mut m = backend("ns", "refused", &[closed_port()]);
        m.push_str(&backend("ns", "empty", &[]));
        m.push_str(&backend("ns", "failing", &[failing.addr]));
        m.push_str(&backend("ns", "slow", &[slow.addr]));
        m.push_str(&ingress_for("refused", "refused.test", "refused", grpc));
        m.push_str(&ingress_for("empty", "empty.test", "empty", grpc));
        m.push_str(&ingress_for("failing", "failing.test", "failing", grpc));
        m.push_str(&ingress_for("slow", "slow.test", "slow", grpc));
        m.push_str(&ingress_for("paged", "paged.test", "refused", grpc));
        m.push_str(&policy(
            "ns",
            "grpc-down",
            "targetRefs: [{name: paged}]\nerrorResponses:\n- codes: [\"502\"]\n  setHeaders: {grpc-message: \"the shop is closed for a moment\"}\n  page: {formats: [{contentType: text/html, inline: \"<h1>down</h1>\"}]}\n",
        ));
        let h = Harness::start(&m).await;

        let call = |host: &'static str, deadline: Option<Duration>| {
            let h = &h;
            async move {
                let mut client = HealthClient::new(channel(h, host).await);
                let mut req = tonic::Request::new(check("shop"));
                if let Some(d) = deadline {
                    req.set_timeout(d);
                }
                client.check(req).await.unwrap_err()
            }
        };
        let refused = call("refused.test", None).await;
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert_eq!(refused.message(), "erratum: Bad Gateway (upstream_connect)");
        let empty = call("empty.test", None).await;
        assert_eq!(empty.code(), Code::Unavailable, "{empty:?}");
        assert!(empty.message().contains("no_endpoints"), "{empty:?}");
        let failing_status = call("failing.test", None).await;
        assert_eq!(failing_status.code(), Code::Unavailable, "{failing_status:?}");
        assert!(failing_status.message().contains("HTTP 503"), "{failing_status:?}");
        // The call's deadline: sent as `grpc-timeout` by a raw HTTP/2 client (tonic's own timer
        // would race erratum's).
        let addr = h.running().http_addr;
        let raw =
            reqwest::Client::builder().http2_prior_knowledge().resolve("slow.test", addr).build().unwrap();
        let started = std::time::Instant::now();
        let late = raw
            .post(format!("http://slow.test:{}/grpc.health.v1.Health/Check", addr.port()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", "300m")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "the call's deadline, not the 60 s timeout");
        assert_eq!(late.status(), 200, "trailers-only");
        assert_eq!(late.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED: {:?}", late.headers());
        assert_eq!(late.headers()["content-type"], "application/grpc");
        assert!(late.bytes().await.unwrap().is_empty());
        let paged = call("paged.test", None).await;
        assert_eq!(paged.code(), Code::Unavailable);
        assert_eq!(paged.message(), "the shop is closed for a moment", "the policy's grpc-message");

        // The same failure for a browser on the same route is the policy's page.
        let resp = h.get("paged.test", "/").await;
        assert_eq!(resp.status(), 502);
        assert_eq!(resp.text().await.unwrap(), "<h1>down</h1>");
        let m = h.metrics().await;
        assert!(m.contains("erratum_error_pages_served_total{code=\"502\",namespace=\"ns\",policy=\"grpc-down\",source=\"proxy\"} 2"), "{m}");
        h.shutdown().await;
    }
}
