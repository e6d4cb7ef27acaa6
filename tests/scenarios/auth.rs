//! ingress-nginx's authentication annotations through the real binary (issue 20):
//! `auth-type: basic` with an htpasswd Secret, and forward authentication (`auth-url`, nginx's
//! `auth_request`) with `auth-signin`, `auth-response-headers`, `auth-method` and the
//! `auth-url` answer's cookies, against an authentication service that decides by cookie and
//! records what it was asked. Every refusal goes through `decide()`; what cannot be set up
//! fails closed (503).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;

use crate::support::*;

/// What the authentication service was asked: method, path and query, fields, body length.
#[derive(Clone, Debug)]
struct Asked {
    method: String,
    target: String,
    headers: http::HeaderMap,
    body: usize,
    /// The TLS server name asked for, on the HTTPS service.
    sni: Option<String>,
}

/// An authentication service like oauth2-proxy's `/oauth2/auth`: `session=alice` is signed in
/// (200, `X-Auth-Request-User: alice`, a refreshed cookie), `session=anon` is signed in without
/// a user field, `session=banned` is 403, `session=broken` makes it fail (500), anything else
/// is 401 with a Bearer challenge. Over TLS with `tls` (a self-signed certificate).
async fn auth_service(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, Arc<Mutex<Vec<Asked>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked: Arc<Mutex<Vec<Asked>>> = Arc::default();
    let log = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let log = log.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let (stream, sni): (Box<dyn Io>, Option<String>) = match tls {
                    None => (Box::new(stream), None),
                    Some(config) => {
                        let Ok(s) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else {
                            return;
                        };
                        let sni = s.get_ref().1.server_name().map(str::to_string);
                        (Box::new(s), sni)
                    }
                };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    let sni = sni.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        log.lock().unwrap().push(Asked {
                            method: parts.method.to_string(),
                            target: parts.uri.to_string(),
                            headers: parts.headers.clone(),
                            body,
                            sni,
                        });
                        let cookie = parts.headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
                        let r = hyper::Response::builder().header("set-cookie", "refreshed=1; Path=/");
                        let r = match cookie {
                            c if c.contains("session=alice") => {
                                r.status(200).header("x-auth-request-user", "alice")
                            }
                            c if c.contains("session=anon") => r.status(202),
                            c if c.contains("session=banned") => r.status(403),
                            c if c.contains("session=broken") => r.status(500),
                            _ => r.status(401).header("www-authenticate", "Bearer realm=\"sso\""),
                        };
                        Ok::<_, Infallible>(
                            r.body(Full::new(Bytes::from_static(b"the service's own body"))).unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, asked)
}

/// A connection the authentication service serves: TCP or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A TLS configuration with a self-signed certificate for `name`.
fn self_signed(name: &str) -> Arc<rustls::ServerConfig> {
    let c = cert(&[name]);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.der], key)
            .unwrap();
    Arc::new(config)
}

fn annotated(name: &str, host: &str, annotations: &[(&str, &str)]) -> String {
    annotated_ingress(name, host, "app", annotations)
}

fn opaque_secret(name: &str, key: &str, value: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(value);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: ns}}\ntype: Opaque\ndata:\n  {key}: {b64}\n---\n"
    )
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The fields the origin got, from its `/echo` answer.
async fn echoed(r: reqwest::Response) -> serde_json::Value {
    let body: serde_json::Value = r.json().await.unwrap();
    body["headers"].clone()
}

/// ingress-nginx's basic authentication: an htpasswd file in key `auth` of an Opaque Secret
/// (apr1 as `htpasswd` writes it, bcrypt), 401 with `WWW-Authenticate: Basic realm="…"` without
/// valid credentials (curl's `-u` gets in), the credentials passed to the backend, `auth-map`
/// Secrets, a policy paging the 401 without losing the challenge, and a missing Secret
/// failing closed with 503 and a report.
#[tokio::test]
async fn basic_auth_reads_htpasswd_secrets_and_answers_401_with_the_realm() {
    let app = origin().await;
    let htpasswd = "alice:$apr1$6S7jGXRk$TeAwbUkxGMztPIzTHJAxa.\n\
                    bob:$2y$05$LzQfyghugayGf3/BVdIg/OPf0u.rZk6nnqVfNvZc36.1HYsWBc2Jm\n";
    let basic = [("auth-type", "basic"), ("auth-secret", "users"), ("auth-realm", "Staff only")];
    let map = [("auth-type", "basic"), ("auth-secret", "map"), ("auth-secret-type", "auth-map")];
    let manifests = [
        backend("ns", "app", &[app.addr]),
        opaque_secret("users", "auth", htpasswd),
        opaque_secret("map", "carol", "{PLAIN}c4r0l"),
        annotated("basic", "basic.test", &basic),
        annotated("map", "map.test", &map),
        annotated("paged", "paged.test", &basic),
        annotated("gone", "gone.test", &[("auth-type", "basic"), ("auth-secret", "nope")]),
        policy(
            "ns",
            "login",
            "targetRefs: [{name: paged}]\nsource: Proxy\nerrorResponses:\n- codes: ['401']\n  page: {inline: 'please sign in', contentType: text/plain}\n",
        ),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let get = |host: &str| h.client.get(h.url("/echo")).header("host", host);

    let r = get("basic.test").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"Staff only\"");
    assert_eq!(app.hits(), 0, "nothing reached the backend");
    let r = get("basic.test").basic_auth("alice", Some("wrong")).send().await.unwrap();
    assert_eq!(r.status(), 401, "a wrong password");
    let r = get("basic.test").basic_auth("mallory", Some("secret")).send().await.unwrap();
    assert_eq!(r.status(), 401, "an unknown user");
    let r = get("basic.test").basic_auth("alice", Some("secret")).send().await.unwrap();
    assert_eq!(r.status(), 200, "apr1");
    assert!(
        echoed(r).await["authorization"].as_str().unwrap().starts_with("Basic "),
        "passed on, as nginx does"
    );
    for _ in 0..2 {
        // The second time the pair is remembered (no bcrypt); both must pass.
        let r = get("basic.test").basic_auth("bob", Some("secret")).send().await.unwrap();
        assert_eq!(r.status(), 200, "bcrypt");
    }

    // curl, as users try it by hand.
    let url = h.url("/");
    let curl = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            // tokio's: the proxy runs on this test's thread.
            let out = tokio::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: basic.test"])
                .args(args)
                .arg(&url)
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(curl(&[]).await, "401");
    assert_eq!(curl(&["-u", "alice:secret"]).await, "200");
    assert_eq!(curl(&["-u", "alice:nope"]).await, "401");

    let r = get("map.test").basic_auth("carol", Some("c4r0l")).send().await.unwrap();
    assert_eq!(r.status(), 200, "auth-map");
    let r = get("map.test").send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"\"", "ingress-nginx's default realm");

    let r = get("paged.test").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"Staff only\"", "the page keeps the challenge");
    assert_eq!(r.text().await.unwrap(), "please sign in");

    let r = get("gone.test").send().await.unwrap();
    assert_eq!(r.status(), 503, "a missing Secret fails closed");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    let problems = table["problems"].to_string();
    assert!(problems.contains("auth-secret") && problems.contains("\\\"nope\\\" not found"), "{problems}");
    let shown =
        table["edge"].as_array().unwrap().iter().find(|e| e["ingress"] == "ns/basic").unwrap()["auth"]
            .clone();
    assert_eq!(shown["basic"]["users"], 2, "/table shows the auth: {shown}");
    assert_eq!(shown["basic"]["challenge"], "Basic realm=\"Staff only\"");
    let metrics = h.metrics().await;
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"unauthorized\"}"), "{metrics}");
    assert!(metrics.contains("erratum_proxy_errors_total{reason=\"auth_unavailable\"} 1"), "{metrics}");
    h.shutdown().await;
}

/// ingress-nginx's forward authentication: the service at `auth-url` is asked about every
/// request (GET, no body, the client's fields, `X-Original-URL`, `X-Original-Method`,
/// `X-Auth-Request-Redirect`, `X-Sent-From`, the request id); 2xx lets the request through with
/// `auth-response-headers` copied onto it (and a client's own copy removed when the service
/// sends none) and the service's `Set-Cookie` on the response; 401 is passed with its challenge
/// or becomes a 302 to `auth-signin` with `rd`; 403 is passed; anything else, or no answer, is
/// 500. nginx variables in `auth-url` are filled in. An HTTPS `auth-url` gets SNI and is not
/// verified (ingress-nginx's default), which the Ingress is told.
#[tokio::test]
async fn forward_auth_asks_auth_url_as_ingress_nginx_does() {
    let app = origin().await;
    let (auth, asked) = auth_service(None).await;
    let (secure, secure_asked) = auth_service(Some(self_signed("sso.internal"))).await;
    let secure_url = format!("https://localhost:{}/oauth2/auth", secure.port());
    let url = format!("http://{auth}/oauth2/auth?app=$host");
    let forward =
        [("auth-url", url.as_str()), ("auth-response-headers", "X-Auth-Request-User, X-Auth-Request-Email")];
    let signin = [
        ("auth-url", url.as_str()),
        ("auth-signin", "https://login.test/oauth2/start"),
        ("auth-method", "POST"),
    ];
    let dead = format!("http://{}/auth", closed_port());
    let manifests = [
        backend("ns", "app", &[app.addr]),
        annotated("forward", "fwd.test", &forward),
        annotated("signin", "signin.test", &signin),
        annotated("dead", "dead.test", &[("auth-url", dead.as_str())]),
        annotated("typo", "typo.test", &[("auth-url", "http://auth/$cookie_session")]),
        annotated("secure", "secure.test", &[("auth-url", secure_url.as_str())]),
        annotated(
            "always",
            "always.test",
            &[
                ("auth-url", url.as_str()),
                ("auth-always-set-cookie", "true"),
                ("auth-request-redirect", "https://always.test/welcome"),
            ],
        ),
    ]
    .concat();
    let h = Harness::start(&manifests).await;
    let client = no_redirects();
    let req = |host: &str, path: &str, cookie: &str| {
        client.get(h.url(path)).header("host", host).header("cookie", cookie)
    };

    // Not signed in: the service's 401 and challenge, not its body.
    let r = req("fwd.test", "/echo?q=1", "session=none").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"sso\"");
    let request_id = r.headers()["x-request-id"].clone();
    assert!(!r.text().await.unwrap().contains("the service's own body"));
    assert_eq!(app.hits(), 0);
    let a = asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(a.method, "GET");
    assert_eq!(a.target, "/oauth2/auth?app=fwd.test", "$host filled in");
    assert_eq!(a.body, 0);
    assert_eq!(a.headers["host"], auth.to_string());
    assert_eq!(a.headers["x-original-url"], "http://fwd.test/echo?q=1");
    assert_eq!(a.headers["x-original-method"], "GET");
    assert_eq!(a.headers["x-auth-request-redirect"], "/echo?q=1");
    assert_eq!(a.headers["x-sent-from"], "nginx-ingress-controller");
    assert_eq!(a.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(a.headers["cookie"], "session=none", "the client's fields go along");
    assert_eq!(a.headers["x-request-id"], request_id, "one request id for both");

    // Signed in: through, with the user for the backend and the refreshed cookie for the client.
    let r = req("fwd.test", "/echo", "session=alice")
        .header("x-auth-request-email", "spoofed@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["set-cookie"], "refreshed=1; Path=/");
    let seen = echoed(r).await;
    assert_eq!(seen["x-auth-request-user"], "alice");
    assert!(
        seen.get("x-auth-request-email").is_none(),
        "a listed field the service did not send is removed: {seen}"
    );
    let r =
        req("fwd.test", "/echo", "session=anon").header("x-auth-request-user", "root").send().await.unwrap();
    assert_eq!(r.status(), 200, "any 2xx lets it through");
    assert!(echoed(r).await.get("x-auth-request-user").is_none(), "the client cannot name the user");
    // A request body goes to the backend, not to the service.
    let r = client
        .post(h.url("/upload"))
        .header("host", "fwd.test")
        .header("cookie", "session=alice")
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "received 5000 bytes\n");
    let a = asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!((a.method.as_str(), a.body), ("GET", 0), "a POST is asked about with a bodiless GET");
    assert_eq!(a.headers["x-original-method"], "POST");
    assert!(a.headers.get("content-length").is_none());

    assert_eq!(req("fwd.test", "/", "session=banned").send().await.unwrap().status(), 403);
    let r = req("fwd.test", "/", "session=broken").send().await.unwrap();
    assert_eq!(r.status(), 500, "a failing service is nginx's 500");
    assert!(r.headers().get("set-cookie").is_none(), "cookies only on 2xx and 3xx");

    // auth-signin: a 401 becomes a 302 to sign in, with where to come back to.
    let r = req("signin.test", "/page?x=1", "").send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://login.test/oauth2/start?rd=http://signin.test%2Fpage%3Fx%3D1"
    );
    assert_eq!(r.headers()["set-cookie"], "refreshed=1; Path=/");
    assert_eq!(asked.lock().unwrap().last().unwrap().method, "POST", "auth-method");

    assert_eq!(req("dead.test", "/", "").send().await.unwrap().status(), 500, "no answer is 500");
    // auth-always-set-cookie: the cookie on a refusal too; auth-request-redirect is sent as is.
    let r = req("always.test", "/", "session=banned").send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.headers()["set-cookie"].to_str().unwrap()),
        (403, "refreshed=1; Path=/")
    );
    let a = asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(a.headers["x-auth-request-redirect"], "https://always.test/welcome");
    // HTTPS: SNI is the URL's host; the certificate is not verified (ingress-nginx's default),
    // and the Ingress is told.
    assert_eq!(req("secure.test", "/", "session=alice").send().await.unwrap().status(), 200);
    assert_eq!(req("secure.test", "/", "session=none").send().await.unwrap().status(), 401);
    let a = secure_asked.lock().unwrap().last().cloned().unwrap();
    assert_eq!(a.sni.as_deref(), Some("localhost"));
    assert_eq!(a.headers["host"], format!("localhost:{}", secure.port()));
    assert_eq!(req("typo.test", "/", "").send().await.unwrap().status(), 503, "fails closed");
    let table: serde_json::Value =
        h.client.get(h.admin_url("/table")).send().await.unwrap().json().await.unwrap();
    assert!(table["problems"].to_string().contains("$cookie_session"), "{}", table["problems"]);
    assert!(table["problems"].to_string().contains("is not verified"), "{}", table["problems"]);
    let metrics = h.metrics().await;
    for reason in ["unauthorized", "auth_forbidden", "auth_failed"] {
        assert!(metrics.contains(&format!("erratum_proxy_errors_total{{reason=\"{reason}\"}}")), "{reason}");
    }
    h.shutdown().await;
}
