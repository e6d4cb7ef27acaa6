//! Authentication of a request: `auth-type: basic` and forward authentication (`auth-url`,
//! nginx's `auth_request`), for routes whose Ingress asks for it.
//!
//! Data flow: [`admit`](super::admit), after the source ranges (nginx's access phase) ->
//! `Proxy::authenticate` -> the basic check (a verified pair is remembered) and/or a request
//! to `auth-url` over the upstream pools -> the request goes on (with `auth-response-headers`
//! set on it), or a refusal goes through `decide()`: 401 (with its challenge), 403, a 302 to
//! `auth-signin`, 500 when `auth-url` fails, 503 when the route's authentication cannot be set
//! up. Routes without authentication never get here.

use std::borrow::Cow;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use sha2::Digest as _;

use super::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID};
use super::intercept::ProxyError;
use super::respond::{Answer, Scope};
use super::{Body, BoxError, Proxy, RequestBody};
use crate::table::annotations::Auth;
use crate::table::annotations::auth::{Credentials, ExternalAuth, Password, Vars};
use crate::table::upstream_tls;
use crate::table::{BackendProtocol, annotations::Protocol};

/// How many verified (user, password) pairs are remembered, and for how long: a crypt hash
/// costs milliseconds of CPU on purpose (bcrypt), and nginx pays it on every request.
const VERIFIED_PAIRS: u64 = 10_000;
const VERIFIED_FOR: Duration = Duration::from_secs(300);

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");

/// The pairs of user, password and stored hash that verified, as SHA-256 digests (never the
/// passwords); a changed password is a new key.
pub type Verified = moka::sync::Cache<[u8; 32], ()>;

/// A new [`Verified`] store.
pub fn verified_store() -> Verified {
    moka::sync::Cache::builder().max_capacity(VERIFIED_PAIRS).time_to_live(VERIFIED_FOR).build()
}

/// The request's facts authentication needs.
pub(super) struct Facts<'a> {
    /// `$host`.
    pub host: &'a str,
    /// `$http_host`.
    pub http_host: &'a str,
    /// Whether the request arrived over HTTPS.
    pub https: bool,
    /// `$request_uri`: path and query as sent.
    pub request_uri: &'a str,
    /// The client address (after `--trusted-proxies`).
    pub client: HeaderValue,
    /// `X-Forwarded-For` as erratum sends it upstream.
    pub forwarded_for: HeaderValue,
}

/// What a granted request carries on.
#[derive(Debug)]
pub(super) struct Granted {
    /// `Set-Cookie` of the `auth-url` answer, for the response.
    cookies: Vec<HeaderValue>,
    /// `auth-always-set-cookie`: on every response, not only 2xx and 3xx.
    always: bool,
}

impl Granted {
    /// Adds the `auth-url` answer's cookies to `resp`: on the statuses nginx's `add_header`
    /// covers (2xx and 3xx), or on all with `auth-always-set-cookie`.
    pub(super) fn apply(self, resp: &mut Response<Body>) {
        let status = resp.status().as_u16();
        let covered = matches!(status, 200 | 201 | 204 | 206 | 301 | 302 | 303 | 304 | 307 | 308);
        if self.always || covered {
            for cookie in self.cookies {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
        }
    }
}

impl Proxy {
    /// Checks `req` against the route's authentication: `Ok` lets it through (with the
    /// cookies to add to its response, if `auth-url` set any), `Err` is the answer.
    pub(super) async fn authenticate(
        &self,
        auth: &Auth,
        req: &mut Request<RequestBody>,
        facts: Facts<'_>,
        scope: Scope<'_>,
    ) -> Result<Option<Box<Granted>>, Response<Body>> {
        let scope = &scope;
        let facts = &facts;
        if let Some(reason) = &auth.broken {
            return Err(self.fail(&ProxyError::AuthUnavailable { reason: reason.clone() }, scope));
        }
        if let Some(basic) = &auth.basic {
            let ok = match basic.credentials(req.headers().get(header::AUTHORIZATION)) {
                Credentials::Check(given) => self.verify(given.user(), given.password(), given.hash).await,
                Credentials::Missing | Credentials::Unknown => false,
            };
            if !ok {
                let err = ProxyError::AuthRefused {
                    status: StatusCode::UNAUTHORIZED,
                    challenge: Some(basic.challenge.clone()),
                };
                return Err(self.fail(&err, scope));
            }
        }
        match &auth.external {
            Some(external) => self.ask(external, req, facts, scope).await,
            None => Ok(None),
        }
    }

    /// Whether `password` is `user`'s, remembering pairs that verified. A crypt hash is
    /// verified off the request workers (bcrypt takes milliseconds).
    async fn verify(&self, user: &str, password: &str, hash: &Password) -> bool {
        let mut digest = sha2::Sha256::new();
        let [stored, salt] = hash.stored();
        for part in [user.as_bytes(), password.as_bytes(), stored, salt] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let key: [u8; 32] = digest.finalize().into();
        if self.verified.contains_key(&key) {
            return true;
        }
        let ok = match hash {
            Password::Crypt(_) => {
                let (password, hash) = (password.to_string(), hash.clone());
                tokio::task::spawn_blocking(move || hash.verify(&password)).await.unwrap_or(false)
            }
            fast => fast.verify(password),
        };
        if ok {
            self.verified.insert(key, ());
        }
        ok
    }

    /// Asks `auth-url` about `req`, as nginx's `auth_request` does: a bodiless request with the
    /// client's fields and ingress-nginx's `X-Original-*`; 2xx lets it through.
    async fn ask(
        &self,
        external: &ExternalAuth,
        req: &mut Request<RequestBody>,
        facts: &Facts<'_>,
        scope: &Scope<'_>,
    ) -> Result<Option<Box<Granted>>, Response<Body>> {
        let scheme = if facts.https { "https" } else { "http" };
        let vars = Vars {
            host: facts.host,
            http_host: facts.http_host,
            scheme,
            request_uri: facts.request_uri,
            method: req.method().as_str(),
            remote_addr: facts.client.to_str().unwrap_or(""),
        };
        let url = match external.url.literal() {
            Some(url) => Cow::Borrowed(url),
            None => Cow::Owned(external.url.render(&vars)),
        };
        let failed = |reason: String| ProxyError::AuthFailed { url: url.to_string(), reason };
        let answer = match self.exchange(external, req, facts, &url, scheme, scope).await {
            Ok(answer) => answer,
            Err(reason) => return Err(self.fail(&failed(reason), scope)),
        };
        let (status, headers) = answer;
        let cookies: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
        let granted = Granted { cookies, always: external.always_set_cookie };
        if status.is_success() {
            // nginx's `proxy_set_header` from `auth_request_set`: a field the answer lacks is
            // removed, so a client cannot send it in the service's place.
            for name in &external.response_headers {
                match headers.get(name) {
                    Some(v) => req.headers_mut().insert(name.clone(), v.clone()),
                    None => req.headers_mut().remove(name),
                };
            }
            return Ok((!granted.cookies.is_empty()).then(|| Box::new(granted)));
        }
        let mut refused = match status {
            StatusCode::UNAUTHORIZED => match external.signin_location(&vars) {
                Some(location) => match HeaderValue::try_from(location) {
                    Ok(location) => self.render(Answer::Redirect(StatusCode::FOUND, &location), scope),
                    Err(_) => self.fail(&failed("auth-signin is not a valid Location".into()), scope),
                },
                None => {
                    let challenge = headers.get(header::WWW_AUTHENTICATE).cloned();
                    self.fail(&ProxyError::AuthRefused { status, challenge }, scope)
                }
            },
            StatusCode::FORBIDDEN => self.fail(&ProxyError::AuthRefused { status, challenge: None }, scope),
            other => self.fail(&failed(format!("answered {other}")), scope),
        };
        granted.apply(&mut refused);
        Err(refused)
    }

    /// The request to `auth-url` and its answer's status and fields (the body is drained).
    async fn exchange(
        &self,
        external: &ExternalAuth,
        req: &Request<RequestBody>,
        facts: &Facts<'_>,
        url: &str,
        scheme: &str,
        scope: &Scope<'_>,
    ) -> Result<(StatusCode, HeaderMap), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let host = uri.host().unwrap_or("");
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = match host.contains(':') {
            true => format!("[{host}]:{port}"),
            false => format!("{host}:{port}"),
        };
        let mut headers = req.headers().clone();
        super::headers::strip_hop_by_hop(&mut headers, false);
        for name in [header::CONTENT_LENGTH, header::TRANSFER_ENCODING, header::EXPECT] {
            headers.remove(name);
        }
        headers.remove(&X_FORWARDED_PROTO);
        let original_url = format!("{scheme}://{}{}", facts.http_host, facts.request_uri);
        let value = |s: &str| HeaderValue::try_from(s).map_err(|_| format!("{s:?} is not a header value"));
        headers.insert(header::HOST, value(uri.authority().map_or(host, |a| a.as_str()))?);
        headers.insert(X_ORIGINAL_URL.clone(), value(&original_url)?);
        headers.insert(X_ORIGINAL_METHOD.clone(), value(req.method().as_str())?);
        headers.insert(X_SENT_FROM.clone(), HeaderValue::from_static("nginx-ingress-controller"));
        headers.insert(X_REAL_IP.clone(), facts.client.clone());
        headers.insert(X_FORWARDED_FOR.clone(), facts.forwarded_for.clone());
        let redirect = match &external.request_redirect {
            Some(r) => r.clone(),
            None => value(facts.request_uri)?,
        };
        headers.insert(X_AUTH_REQUEST_REDIRECT.clone(), redirect);
        headers.insert(X_REQUEST_ID.clone(), scope.request_id.clone());
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut ask = Request::builder()
            .method(external.method.clone().unwrap_or(Method::GET))
            .uri(target)
            .body(super::upstream::empty())
            .map_err(|e| e.to_string())?;
        *ask.headers_mut() = headers;
        let protocol = match tls {
            true => Some(BackendProtocol {
                protocol: Protocol::Https,
                tls: Some(upstream_tls::unverified(host)?),
                broken: None,
            }),
            false => None,
        };
        let upstream = scope.route.map(|r| r.upstream);
        let connect = upstream.and_then(|u| u.connect_timeout).unwrap_or(self.config.connect_timeout);
        let wait = upstream.and_then(|u| u.read_timeout).unwrap_or(self.config.response_timeout);
        let mut slot = Some(ask);
        let sent = self.client.send(&authority, &mut slot, &[], connect, protocol.as_ref());
        let resp = match tokio::time::timeout(connect + wait, sent).await {
            Err(_) => return Err(format!("no answer within {:?}", connect + wait)),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(resp)) => resp,
        };
        let (parts, body) = resp.into_parts();
        super::respond::drain(body.map_err(BoxError::from).boxed());
        Ok((parts.status, parts.headers))
    }
}
