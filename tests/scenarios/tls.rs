//! TLS termination with certificates from Ingress `tls` Secrets, chosen by SNI.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::support::*;

/// Handshakes with `sni` and returns the certificate the server presented.
async fn presented_cert(
    addr: std::net::SocketAddr,
    sni: &str,
    trust: &[&TestCert],
) -> CertificateDer<'static> {
    let provider = rustls::crypto::ring::default_provider();
    let tls = handshake(addr, sni, trust, provider, rustls::DEFAULT_VERSIONS).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A verified handshake with `sni` by a rustls client of `provider` (its suites in its order)
/// and TLS `versions`.
async fn handshake(
    addr: std::net::SocketAddr,
    sni: &str,
    trust: &[&TestCert],
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in trust {
        roots.add(c.der.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(ServerName::try_from(sni.to_string()).unwrap(), tcp).await.expect("handshake verifies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_chooses_between_ingress_certificates() {
    let a = origin().await;
    let cert_a = cert(&["a.example"]);
    let cert_b = cert(&["*.b.example"]);
    let tls_ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: secure, namespace: ns}\nspec:\n  ingressClassName: erratum\n  tls:\n  - {hosts: [a.example], secretName: cert-a}\n  - {hosts: [\"*.b.example\"], secretName: cert-b}\n  rules:\n  - host: a.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}\n  - host: \"*.b.example\"\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}\n---\n";
    let manifests = [
        backend("ns", "a", &[a.addr]),
        secret_yaml("cert-a", &cert_a),
        secret_yaml("cert-b", &cert_b),
        tls_ingress.to_string(),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let https = h.running().https_addr.expect("https listener");

    assert_eq!(presented_cert(https, "a.example", &[&cert_a, &cert_b]).await, cert_a.der);
    assert_eq!(presented_cert(https, "x.b.example", &[&cert_a, &cert_b]).await, cert_b.der);

    // A full HTTPS request over h2 (ALPN), trusting only the right certificate.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_a.pem.as_bytes()).unwrap())
        .resolve("a.example", https)
        .build()
        .unwrap();
    let resp = client.get(format!("https://a.example:{}/echo", https.port())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");

    // HTTP/1.1 over TLS: erratum's own loop, including answers without a body.
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_a.pem.as_bytes()).unwrap())
        .resolve("a.example", https)
        .http1_only()
        .build()
        .unwrap();
    let base = format!("https://a.example:{}", https.port());
    for _ in 0..2 {
        let resp = h1.get(format!("{base}/echo")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), reqwest::Version::HTTP_11);
        let echo: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        let head = h1.head(format!("{base}/bytes/10")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "10", "HEAD keeps the GET's length");
        let empty = h1.get(format!("{base}/status/204")).send().await.unwrap();
        assert_eq!(empty.status(), 204);
        assert!(empty.bytes().await.unwrap().is_empty());
    }

    // An unknown name gets the self-signed fallback, which no client trusts.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_a.pem.as_bytes()).unwrap())
        .resolve("unknown.example", https)
        .build()
        .unwrap();
    let err = client.get(format!("https://unknown.example:{}/", https.port())).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_secret_is_reported_and_the_rest_serves() {
    let a = origin().await;
    let bad = "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: bad, namespace: ns}\nstringData: {tls.crt: nonsense, tls.key: nonsense}\n---\n";
    let ing = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i, namespace: ns}\nspec:\n  ingressClassName: erratum\n  tls: [{hosts: [a.example], secretName: bad}]\n  rules:\n  - host: a.example\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}\n";
    let manifests = [backend("ns", "a", &[a.addr]), bad.to_string(), ing.to_string()].concat();
    let h = Harness::start(&manifests).await;
    let problems =
        h.running().table().load().diagnostics().iter().map(ToString::to_string).collect::<Vec<_>>();
    assert!(problems.iter().any(|p| p.starts_with("Secret ns/bad: tls.crt")), "{problems:?}");
    assert_eq!(h.status("a.example", "/").await, 200, "plain HTTP keeps serving");
    h.shutdown().await;
}

/// Secrets never reach the logs, even at trace level and when a Secret is broken (its error
/// names the field, not the content).
#[test]
fn secrets_never_reach_the_logs() {
    use std::io::Read;
    let good = cert(&["secure.example"]);
    let marker = "SECRET-MARKER-7f3a9c";
    let dir = tempfile::tempdir().unwrap();
    let o = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let manifests = [
        backend("ns", "web", &[o]),
        ingress("ns", "i", &[("secure.example", "/", "Prefix", "web")])
            .replace(
                "  rules:\n",
                "  tls: [{hosts: [secure.example], secretName: good}, {hosts: [other.example], secretName: bad}]\n  rules:\n",
            ),
        secret_yaml("good", &good),
        format!(
            "apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {{name: bad, namespace: ns}}\nstringData: {{tls.crt: {marker}, tls.key: {marker}}}\n---\n"
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("main.yaml"), manifests).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_erratum"))
        .args(["run", "--manifests", dir.path().to_str().unwrap(), "--http-addr", "127.0.0.1:0"])
        .args(["--https-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-level", "trace"])
        .args(["--log-format", "json", "--workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let logs = reader.join().unwrap();
    assert!(logs.contains("erratum serving"), "it ran: {}", &logs[..logs.len().min(2000)]);
    assert!(logs.contains("ns/bad"), "the broken Secret is reported by name");
    assert!(!logs.contains(marker), "a Secret's content was logged");
    assert!(!logs.contains("PRIVATE KEY"), "key material was logged");
    let key_body: Vec<&str> = good.key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    for line in key_body {
        assert!(!logs.contains(line), "a line of the private key was logged");
    }
}

/// The suite a rustls client offering `suites` in this order (and only TLS `versions`)
/// negotiates with erratum.
async fn negotiated(
    addr: std::net::SocketAddr,
    trust: &TestCert,
    suites: &[rustls::SupportedCipherSuite],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::CipherSuite {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites.to_vec(),
        ..rustls::crypto::ring::default_provider()
    };
    let tls = handshake(addr, "a.example", &[trust], provider, versions).await;
    tls.get_ref().1.negotiated_cipher_suite().expect("a suite").suite()
}

/// A client whose first choice is an AES suite gets AES-128-GCM whatever its order (SHA-256
/// key schedule); one that asks for ChaCha20-Poly1305 first (no AES instructions) gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes_clients_get_aes_128_and_chacha_clients_their_choice() {
    use rustls::CipherSuite as S;
    use rustls::crypto::ring::cipher_suite as suite;
    let a = origin().await;
    let cert_a = cert(&["a.example"]);
    let manifests = [
        backend("ns", "a", &[a.addr]),
        secret_yaml("cert-a", &cert_a),
        ingress("ns", "i", &[("a.example", "/", "Prefix", "a")])
            .replace("  rules:\n", "  tls: [{hosts: [a.example], secretName: cert-a}]\n  rules:\n"),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let https = h.running().https_addr.expect("https listener");
    let tls13 = &[&rustls::version::TLS13];
    let tls12 = &[&rustls::version::TLS12];

    // OpenSSL's and Chrome's TLS 1.3 order lists AES-256 or AES-128 first.
    let openssl_order = [
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS13_AES_128_GCM_SHA256,
    ];
    assert_eq!(negotiated(https, &cert_a, &openssl_order, tls13).await, S::TLS13_AES_128_GCM_SHA256);
    let phone_order = [
        suite::TLS13_CHACHA20_POLY1305_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_AES_128_GCM_SHA256,
    ];
    assert_eq!(negotiated(https, &cert_a, &phone_order, tls13).await, S::TLS13_CHACHA20_POLY1305_SHA256);
    // A client that offers one suite gets it.
    let only_256 = [suite::TLS13_AES_256_GCM_SHA384];
    assert_eq!(negotiated(https, &cert_a, &only_256, tls13).await, S::TLS13_AES_256_GCM_SHA384);

    // TLS 1.2 the same way (the test certificate is ECDSA).
    let aes12 = [
        suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(negotiated(https, &cert_a, &aes12, tls12).await, S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    let chacha12 = [
        suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(https, &cert_a, &chacha12, tls12).await,
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    );
    h.shutdown().await;
}
