//! ingress-nginx's authentication: `auth-type: basic` with an htpasswd Secret, and forward
//! authentication (`auth-url`, nginx's `auth_request`) with `auth-signin`,
//! `auth-response-headers` and their companions.
//!
//! Data flow: [`read`](super::read) fills an [`IngressAuth`] with the values as written; the
//! build calls [`IngressAuth::resolve`] with the Ingress's Secret and gets the [`Auth`] its
//! routes carry; the proxy (`proxy/auth.rs`) checks it per request after the source ranges
//! (nginx's access phase) and answers 401/403/500 through `decide()`. Pure.
//!
//! Fails closed, as ingress-nginx does: an Ingress that asks for authentication erratum cannot
//! set up (a missing Secret, an `auth-url` that does not parse, a variable erratum does not
//! know) answers 503 on its routes, never serves them unauthenticated.

use std::collections::HashMap;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method};
use k8s_openapi::api::core::v1::Secret;
use sha1::Digest as _;

use super::nginx_vars::escape;
pub use super::nginx_vars::{NginxString, Vars};

/// `auth-type`: `basic` (or `digest`, which erratum does not do).
pub const AUTH_TYPE: &str = "auth-type";
/// `auth-secret`: the Secret (`name` or `namespace/name`) with the users.
pub const AUTH_SECRET: &str = "auth-secret";
/// `auth-secret-type`: `auth-file` (an htpasswd file in key `auth`, the default) or
/// `auth-map` (one key per user, the value its hash).
pub const AUTH_SECRET_TYPE: &str = "auth-secret-type";
/// `auth-realm`: the realm of the `WWW-Authenticate` challenge.
pub const AUTH_REALM: &str = "auth-realm";
/// `auth-url`: the service asked about each request; 2xx lets it through.
pub const AUTH_URL: &str = "auth-url";
/// `auth-method`: the method of the request to `auth-url` (default `GET`).
pub const AUTH_METHOD: &str = "auth-method";
/// `auth-signin`: where a 401 from `auth-url` redirects (302) the client to sign in.
pub const AUTH_SIGNIN: &str = "auth-signin";
/// `auth-signin-redirect-param`: the query parameter naming the page to return to (`rd`).
pub const AUTH_SIGNIN_REDIRECT_PARAM: &str = "auth-signin-redirect-param";
/// `auth-response-headers`: fields of the `auth-url` answer passed on to the backend.
pub const AUTH_RESPONSE_HEADERS: &str = "auth-response-headers";
/// `auth-request-redirect`: the `X-Auth-Request-Redirect` sent to `auth-url`.
pub const AUTH_REQUEST_REDIRECT: &str = "auth-request-redirect";
/// `auth-always-set-cookie`: the `auth-url` answer's `Set-Cookie` also on error responses.
pub const AUTH_ALWAYS_SET_COOKIE: &str = "auth-always-set-cookie";

/// The annotations this module reads.
pub const READ: [&str; 11] = [
    AUTH_TYPE,
    AUTH_SECRET,
    AUTH_SECRET_TYPE,
    AUTH_REALM,
    AUTH_URL,
    AUTH_METHOD,
    AUTH_SIGNIN,
    AUTH_SIGNIN_REDIRECT_PARAM,
    AUTH_RESPONSE_HEADERS,
    AUTH_REQUEST_REDIRECT,
    AUTH_ALWAYS_SET_COOKIE,
];

/// What one Ingress says about authentication, as written (checked at [`IngressAuth::resolve`],
/// where the Secret is known).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressAuth {
    /// `auth-type`.
    pub kind: Option<String>,
    /// `auth-secret`.
    pub secret: Option<String>,
    /// `auth-secret-type`.
    pub secret_type: Option<String>,
    /// `auth-realm`.
    pub realm: Option<String>,
    /// `auth-url`.
    pub url: Option<String>,
    /// `auth-method`.
    pub method: Option<String>,
    /// `auth-signin`.
    pub signin: Option<String>,
    /// `auth-signin-redirect-param`.
    pub signin_param: Option<String>,
    /// `auth-response-headers`.
    pub response_headers: Option<String>,
    /// `auth-request-redirect`.
    pub request_redirect: Option<String>,
    /// `auth-always-set-cookie`.
    pub always_set_cookie: Option<String>,
}

impl IngressAuth {
    /// Reads `name` (without the prefix) if it is one of [`READ`]; `false` if it is not.
    pub fn read(&mut self, name: &str, value: &str) -> bool {
        let v = Some(value.trim().to_string());
        match name {
            AUTH_TYPE => self.kind = v,
            AUTH_SECRET => self.secret = v,
            AUTH_SECRET_TYPE => self.secret_type = v,
            AUTH_REALM => self.realm = Some(value.to_string()),
            AUTH_URL => self.url = v,
            AUTH_METHOD => self.method = v,
            AUTH_SIGNIN => self.signin = v,
            AUTH_SIGNIN_REDIRECT_PARAM => self.signin_param = v,
            AUTH_RESPONSE_HEADERS => self.response_headers = v,
            AUTH_REQUEST_REDIRECT => self.request_redirect = v,
            AUTH_ALWAYS_SET_COOKIE => self.always_set_cookie = v,
            _ => return false,
        }
        true
    }

    /// The Secret `auth-secret` names, as `(namespace, name)` (its namespace defaults to the
    /// Ingress's), when basic authentication is asked for.
    pub fn secret_ref<'a>(&'a self, ns: &'a str) -> Option<(&'a str, &'a str)> {
        self.kind.as_ref()?;
        let name = self.secret.as_deref()?;
        Some(name.split_once('/').unwrap_or((ns, name)))
    }

    /// The authentication of the Ingress's routes; `None` when it asks for none. `secret` is
    /// the Secret [`secret_ref`](Self::secret_ref) names, if it exists. What cannot be set up
    /// is reported and makes the routes answer 503 ([`Auth::broken`]).
    pub fn resolve(&self, secret: Option<&Secret>, report: &mut impl FnMut(String)) -> Option<Auth> {
        if self.kind.is_none() && self.url.is_none() {
            return None;
        }
        let mut auth = Auth::default();
        let mut failed = Vec::new();
        if self.kind.is_some() {
            match self.basic(secret, report) {
                Ok(basic) => auth.basic = Some(basic),
                Err(why) => failed.push(why),
            }
        }
        if let Some(url) = &self.url {
            match self.external(url) {
                Ok(external) => {
                    if external.tls() {
                        report(format!(
                            "annotation {}{AUTH_URL}: the certificate of {url} is not verified \
                             (ingress-nginx's default for auth-url)",
                            super::PREFIX
                        ));
                    }
                    auth.external = Some(external);
                }
                Err(why) => failed.push(why),
            }
        }
        for why in failed {
            report(fails_closed(&why));
            auth.broken.get_or_insert(why);
        }
        Some(auth)
    }

    /// Reports what is wrong with the values themselves (not with the Secret): the reader
    /// calls it, so `erratum migrate` sees it without the cluster's Secrets. The build's
    /// [`resolve`](Self::resolve) reports the same words (a diagnostic is reported once).
    pub fn check(&self, report: &mut impl FnMut(String)) {
        if self.kind.is_none() && self.url.is_none() {
            for (name, set) in [
                (AUTH_SECRET, self.secret.is_some()),
                (AUTH_SIGNIN, self.signin.is_some()),
                (AUTH_RESPONSE_HEADERS, self.response_headers.is_some()),
            ] {
                if set {
                    report(format!(
                        "annotation {}{name} has no effect without auth-type or auth-url",
                        super::PREFIX
                    ));
                }
            }
            return;
        }
        if self.kind.is_some()
            && let Err(why) = self.basic_settings()
        {
            report(fails_closed(&why));
        }
        if let Some(url) = &self.url
            && let Err(why) = self.external(url)
        {
            report(fails_closed(&why));
        }
    }

    /// `auth-type`, `auth-secret` and `auth-secret-type` as values: the Secret's name.
    fn basic_settings(&self) -> Result<&str, String> {
        let key = |name: &str| format!("annotation {}{name}", super::PREFIX);
        match self.kind.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("basic") => {}
            Some("digest") => {
                return Err(format!(
                    "{}: digest authentication is not supported by erratum (basic is)",
                    key(AUTH_TYPE)
                ));
            }
            other => return Err(format!("{}: {other:?} is not basic or digest", key(AUTH_TYPE))),
        }
        match self.secret_type.as_deref() {
            None | Some("auth-file" | "auth-map") => {}
            Some(other) => {
                return Err(format!("{}: {other:?} is not auth-file or auth-map", key(AUTH_SECRET_TYPE)));
            }
        }
        self.secret
            .as_deref()
            .ok_or_else(|| format!("{}: auth-type basic needs auth-secret", key(AUTH_SECRET)))
    }

    fn basic(&self, secret: Option<&Secret>, report: &mut impl FnMut(String)) -> Result<BasicAuth, String> {
        let key = |name: &str| format!("annotation {}{name}", super::PREFIX);
        let name = self.basic_settings()?;
        let Some(secret) = secret else {
            return Err(format!(
                "{}: Secret {name:?} not found (erratum reads Secrets of type Opaque)",
                key(AUTH_SECRET)
            ));
        };
        let data = secret_data(secret);
        let mut users = HashMap::new();
        let mut add = |user: &str, hash: &str, report: &mut dyn FnMut(String)| match Password::parse(hash) {
            Some(p) => {
                users.insert(user.to_string(), p);
            }
            None => report(format!(
                "{}: the password of user {user:?} in Secret {name:?} is not in a format erratum \
                 verifies (bcrypt, apr1, $1$/$5$/$6$ crypt, {{SHA}}, {{SSHA}}, {{PLAIN}}); that user \
                 cannot sign in",
                key(AUTH_SECRET)
            )),
        };
        match self.secret_type.as_deref().unwrap_or("auth-file") {
            "auth-file" => {
                let Some(file) = data.get("auth") else {
                    return Err(format!("{}: Secret {name:?} has no key \"auth\"", key(AUTH_SECRET)));
                };
                for line in String::from_utf8_lossy(file).lines() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    match line.split_once(':') {
                        Some((user, hash)) => add(user, hash, report),
                        None => report(format!(
                            "{}: a line of Secret {name:?} is not user:hash; skipped",
                            key(AUTH_SECRET)
                        )),
                    }
                }
            }
            _ => {
                for (user, hash) in &data {
                    add(user, String::from_utf8_lossy(hash).trim(), report);
                }
            }
        }
        if users.is_empty() {
            report(format!("{}: Secret {name:?} names no user; nobody can sign in", key(AUTH_SECRET)));
        }
        // nginx writes the realm between quotes as given; a quote or backslash in it is escaped.
        let realm = self.realm.as_deref().unwrap_or("").replace('\\', "\\\\").replace('"', "\\\"");
        let challenge = HeaderValue::try_from(format!("Basic realm=\"{realm}\""))
            .map_err(|_| format!("{}: the realm is not a valid header value", key(AUTH_REALM)))?;
        Ok(BasicAuth { challenge, users })
    }

    fn external(&self, url: &str) -> Result<ExternalAuth, String> {
        let key = |name: &str| format!("annotation {}{name}", super::PREFIX);
        let template = NginxString::parse(url).map_err(|why| format!("{}: {why}", key(AUTH_URL)))?;
        // The URL must parse once its variables are filled in; checked with sample values.
        let sample = template.render(&Vars::SAMPLE);
        let uri: http::Uri = sample.parse().map_err(|e| format!("{}: {url:?}: {e}", key(AUTH_URL)))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{}: {url:?} is not an http or https URL", key(AUTH_URL))),
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{}: {url:?} names no host", key(AUTH_URL)));
        }
        let method = match &self.method {
            None => None,
            Some(m) => Some(
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| format!("{}: {m:?} is not a method", key(AUTH_METHOD)))?,
            ),
        };
        let signin = match &self.signin {
            None => None,
            Some(s) => Some(NginxString::parse(s).map_err(|why| format!("{}: {why}", key(AUTH_SIGNIN)))?),
        };
        let signin_param = self.signin_param.clone().unwrap_or_else(|| "rd".to_string());
        let response_headers = match &self.response_headers {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    HeaderName::try_from(h)
                        .map_err(|_| format!("{}: {h:?} is not a header name", key(AUTH_RESPONSE_HEADERS)))
                })
                .collect::<Result<_, _>>()?,
        };
        let request_redirect = match &self.request_redirect {
            None => None,
            Some(r) => Some(
                HeaderValue::try_from(r.as_str())
                    .map_err(|_| format!("{}: {r:?} is not a header value", key(AUTH_REQUEST_REDIRECT)))?,
            ),
        };
        let always_set_cookie = match self.always_set_cookie.as_deref() {
            None => false,
            Some(v) => {
                super::parse_bool(v).map_err(|why| format!("{}: {why}", key(AUTH_ALWAYS_SET_COOKIE)))?
            }
        };
        Ok(ExternalAuth {
            url: template,
            tls,
            method,
            signin,
            signin_param,
            response_headers,
            request_redirect,
            always_set_cookie,
        })
    }
}

/// A problem that makes the Ingress's routes answer 503, as reported.
fn fails_closed(why: &str) -> String {
    format!("{why}; the Ingress's routes answer 503 until it is fixed")
}

/// A Secret's fields, from `data` or (in manifests) `stringData`.
fn secret_data(secret: &Secret) -> HashMap<String, Vec<u8>> {
    let mut out: HashMap<String, Vec<u8>> = HashMap::new();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// The authentication of an Ingress's routes, resolved at build time.
#[derive(Debug, Default)]
pub struct Auth {
    /// `auth-type: basic`: checked first (nginx's `auth_basic` runs before `auth_request`).
    pub basic: Option<BasicAuth>,
    /// `auth-url`.
    pub external: Option<ExternalAuth>,
    /// Why authentication cannot be done as asked: every request is answered 503.
    pub broken: Option<String>,
}

impl Auth {
    /// What `/table` shows.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "basic": self.basic.as_ref().map(|b| serde_json::json!({
                "challenge": b.challenge.to_str().unwrap_or(""),
                "users": b.users.len(),
            })),
            "external": self.external.as_ref().map(|e| serde_json::json!({
                "url": e.url.source,
                "signin": e.signin.as_ref().map(|s| s.source.clone()),
                "responseHeaders": e.response_headers.iter().map(HeaderName::as_str).collect::<Vec<_>>(),
            })),
            "broken": self.broken,
        })
    }
}

/// `auth-type: basic`: the users and their password hashes.
#[derive(Debug)]
pub struct BasicAuth {
    /// `WWW-Authenticate` of a 401.
    pub challenge: HeaderValue,
    users: HashMap<String, Password>,
}

/// What [`BasicAuth::credentials`] makes of a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    /// None given, not Basic, or not `user:password` in base64: 401.
    Missing,
    /// An unknown user: 401.
    Unknown,
    /// A known user: the password is still to be verified against its hash (slow on purpose:
    /// the proxy remembers the pairs it verified).
    Check(Given<'a>),
}

/// The credentials a request gave for a known user.
#[derive(Debug, PartialEq, Eq)]
pub struct Given<'a> {
    /// `user:password`, decoded (the one allocation of a check).
    pair: String,
    /// Where the `:` is.
    colon: usize,
    /// The user's entry.
    pub hash: &'a Password,
}

impl Given<'_> {
    /// The user.
    pub fn user(&self) -> &str {
        &self.pair[..self.colon]
    }

    /// The password given.
    pub fn password(&self) -> &str {
        &self.pair[self.colon + 1..]
    }
}

impl BasicAuth {
    /// Reads the `Authorization` field of a request.
    pub fn credentials(&self, authorization: Option<&HeaderValue>) -> Credentials<'_> {
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else { return Credentials::Missing };
        let Some((scheme, token)) = value.trim().split_once(' ') else { return Credentials::Missing };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Credentials::Missing;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
            return Credentials::Missing;
        };
        let Ok(pair) = String::from_utf8(decoded) else { return Credentials::Missing };
        let Some(colon) = pair.find(':') else { return Credentials::Missing };
        match self.users.get(&pair[..colon]) {
            Some(hash) => Credentials::Check(Given { pair, colon, hash }),
            None => Credentials::Unknown,
        }
    }
}

/// One user's password as an htpasswd file stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    /// A crypt(3) hash: bcrypt (`$2y$`, `$2b$`, `$2a$`), Apache's MD5 (`$apr1$`), `$1$`,
    /// `$5$`, `$6$`, DES.
    Crypt(String),
    /// `{SHA}`: base64 of the SHA-1 of the password (htpasswd `-s`).
    Sha1([u8; 20]),
    /// `{SSHA}`: base64 of SHA-1(password + salt) followed by the salt.
    SaltedSha1 {
        /// The digest.
        digest: [u8; 20],
        /// The salt.
        salt: Vec<u8>,
    },
    /// `{PLAIN}`: the password itself (nginx reads it; for tests and migrations).
    Plain(String),
}

impl Password {
    /// Reads a stored hash; `None` for a format erratum does not verify.
    pub fn parse(stored: &str) -> Option<Self> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok();
        if let Some(rest) = stored.strip_prefix("{PLAIN}") {
            return Some(Self::Plain(rest.to_string()));
        }
        if let Some(rest) = stored.strip_prefix("{SHA}") {
            return b64(rest)?.try_into().ok().map(Self::Sha1);
        }
        if let Some(rest) = stored.strip_prefix("{SSHA}") {
            let raw = b64(rest)?;
            if raw.len() <= 20 {
                return None;
            }
            let (digest, salt) = raw.split_at(20);
            return Some(Self::SaltedSha1 { digest: digest.try_into().ok()?, salt: salt.to_vec() });
        }
        crypt3_rs::Hash::try_from(stored).ok()?;
        Some(Self::Crypt(stored.to_string()))
    }

    /// Whether `password` is the one stored. CPU-heavy for crypt hashes (that is their point).
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Self::Crypt(hash) => crypt3_rs::unix::verify(password, hash),
            Self::Sha1(digest) => sha1::Sha1::digest(password.as_bytes()).as_slice() == digest,
            Self::SaltedSha1 { digest, salt } => {
                let mut h = sha1::Sha1::new();
                h.update(password.as_bytes());
                h.update(salt);
                h.finalize().as_slice() == digest
            }
            Self::Plain(p) => p == password,
        }
    }

    /// The stored form in two parts, for the key of a verified pair (a new password is a
    /// new key).
    pub fn stored(&self) -> [&[u8]; 2] {
        match self {
            Self::Crypt(h) => [h.as_bytes(), &[]],
            Self::Sha1(d) => [d, &[]],
            Self::SaltedSha1 { digest, salt } => [digest, salt],
            Self::Plain(p) => [p.as_bytes(), &[]],
        }
    }
}

/// `auth-url` and its companions.
#[derive(Debug)]
pub struct ExternalAuth {
    /// The URL, with nginx variables filled in per request.
    pub url: NginxString,
    tls: bool,
    /// `auth-method`; `None` is GET (nginx's subrequests are GETs).
    pub method: Option<Method>,
    /// `auth-signin`.
    pub signin: Option<NginxString>,
    /// `auth-signin-redirect-param`.
    pub signin_param: String,
    /// `auth-response-headers`.
    pub response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`; `None` sends the request's URI.
    pub request_redirect: Option<HeaderValue>,
    /// `auth-always-set-cookie`.
    pub always_set_cookie: bool,
}

impl ExternalAuth {
    /// Whether `auth-url` is HTTPS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Where a 401 sends the client: `auth-signin` with the page to come back to in its
    /// redirect parameter (unless the URL already has it), as ingress-nginx builds it.
    pub fn signin_location(&self, vars: &Vars<'_>) -> Option<String> {
        let signin = self.signin.as_ref()?;
        let mut url = signin.render(vars);
        let param = format!("{}=", self.signin_param);
        if !url.contains(&param) {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&param);
            url.push_str(vars.scheme);
            url.push_str("://");
            url.push_str(vars.http_host);
            url.push_str(&escape(vars.request_uri));
        }
        Some(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, value: &str) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    fn basic_of(file: &str) -> (BasicAuth, Vec<String>) {
        let a = IngressAuth {
            kind: Some("basic".into()),
            secret: Some("users".into()),
            realm: Some("Staff \"only\"".into()),
            ..Default::default()
        };
        let mut reports = Vec::new();
        let auth = a.resolve(Some(&secret("auth", file)), &mut |m| reports.push(m)).unwrap();
        (auth.basic.unwrap(), reports)
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::try_from(format!("Basic {token}")).unwrap()
    }

    fn verifies(b: &BasicAuth, user: &str, password: &str) -> bool {
        match b.credentials(Some(&header(user, password))) {
            Credentials::Check(given) => given.hash.verify(given.password()),
            _ => false,
        }
    }

    /// Hashes as `htpasswd` (-m, -B, -s) and `openssl passwd` (-apr1, -1, -5) write them, all
    /// of the password "secret" (made with openssl and Python's bcrypt and hashlib).
    #[test]
    fn htpasswd_formats_verify_as_nginx_reads_them() {
        let file = "\
# a comment line
apr:$apr1$6S7jGXRk$TeAwbUkxGMztPIzTHJAxa.
bcrypt:$2y$05$LzQfyghugayGf3/BVdIg/OPf0u.rZk6nnqVfNvZc36.1HYsWBc2Jm
bcrypt2b:$2b$05$LzQfyghugayGf3/BVdIg/OPf0u.rZk6nnqVfNvZc36.1HYsWBc2Jm
sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
ssha:{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6FhOYUNs
md5:$1$Hq4rNa7b$Sesg/jqrbTF3GLz.wDkRe1
sha256:$5$d2dExFYomGQ0iy6e$Pqu9.Rd9WKm79QzQZLekP5g2q3QBsXeUYGCRztTKzo4
sha512:$6$FV/hCMI.XxmRaipU$XTF96YwuhyPhjWx.ufoaU3QORgv4Fq9OQFvU8sz4jmk2AO97jMaX4zUv0DSNJzLxDxw5xd6W6txC.P.99VYUR/
shortsalt:$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA
plain:{PLAIN}secret
odd:$y$j9T$yescrypt$notsupported
";
        let (b, reports) = basic_of(file);
        assert_eq!(b.challenge, "Basic realm=\"Staff \\\"only\\\"\"");
        for user in ["apr", "bcrypt", "bcrypt2b", "sha", "ssha", "md5", "sha256", "sha512", "plain"] {
            assert!(verifies(&b, user, "secret"), "{user}");
            assert!(!verifies(&b, user, "Secret"), "{user}: a wrong password");
        }
        // yescrypt (Debian's mkpasswd default) is not verified; neither is a SHA-crypt hash
        // with a salt under 16 characters (crypt3_rs refuses them): reported, not accepted.
        assert!(reports.iter().any(|r| r.contains("\"odd\"")), "{reports:?}");
        assert!(reports.iter().any(|r| r.contains("\"shortsalt\"")), "{reports:?}");
        assert!(!verifies(&b, "shortsalt", "secret"));
        assert_eq!(b.credentials(Some(&header("nobody", "secret"))), Credentials::Unknown);
        assert_eq!(b.credentials(None), Credentials::Missing);
        assert_eq!(b.credentials(Some(&HeaderValue::from_static("Bearer x"))), Credentials::Missing);
        assert_eq!(b.credentials(Some(&HeaderValue::from_static("Basic !!!"))), Credentials::Missing);
    }

    #[test]
    fn what_cannot_be_set_up_fails_closed() {
        let mut reports = Vec::new();
        let a = IngressAuth { kind: Some("basic".into()), secret: Some("gone".into()), ..Default::default() };
        let auth = a.resolve(None, &mut |m| reports.push(m)).unwrap();
        assert!(auth.broken.as_deref().unwrap().contains("not found"), "{auth:?}");
        let a = IngressAuth { kind: Some("digest".into()), secret: Some("s".into()), ..Default::default() };
        assert!(
            a.resolve(Some(&secret("auth", "u:{PLAIN}p")), &mut |m| reports.push(m))
                .unwrap()
                .broken
                .is_some()
        );
        let a = IngressAuth { url: Some("http://auth/$cookie_session".into()), ..Default::default() };
        let auth = a.resolve(None, &mut |m| reports.push(m)).unwrap();
        assert!(auth.broken.as_deref().unwrap().contains("$cookie_session"), "{auth:?}");
        let a = IngressAuth { url: Some("ftp://auth/".into()), ..Default::default() };
        assert!(a.resolve(None, &mut |m| reports.push(m)).unwrap().broken.is_some());
        assert!(reports.iter().all(|r| r.contains("answer 503")), "{reports:?}");
        reports.clear();
        // Without auth-type or auth-url nothing is asked for; a lone auth-secret is reported.
        let a = IngressAuth { secret: Some("s".into()), ..Default::default() };
        assert!(a.resolve(None, &mut |m| reports.push(m)).is_none());
        a.check(&mut |m| reports.push(m));
        assert!(reports.last().unwrap().contains("no effect"));
        // What is wrong with the values is found without the Secret (for `erratum migrate`).
        let mut found = Vec::new();
        IngressAuth { kind: Some("digest".into()), ..Default::default() }.check(&mut |m| found.push(m));
        IngressAuth { url: Some("http://a/$uri".into()), ..Default::default() }.check(&mut |m| found.push(m));
        IngressAuth { kind: Some("basic".into()), secret: Some("s".into()), ..Default::default() }
            .check(&mut |m| found.push(m));
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn auth_map_secrets_hold_one_user_per_key() {
        let a = IngressAuth {
            kind: Some("basic".into()),
            secret: Some("users".into()),
            secret_type: Some("auth-map".into()),
            ..Default::default()
        };
        let s = Secret {
            data: Some(
                [
                    ("alice".to_string(), ByteString(b"{PLAIN}a".to_vec())),
                    ("bob".to_string(), ByteString(b"$apr1$6S7jGXRk$TeAwbUkxGMztPIzTHJAxa.".to_vec())),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let b = a.resolve(Some(&s), &mut |_| {}).unwrap().basic.unwrap();
        assert!(verifies(&b, "alice", "a") && verifies(&b, "bob", "secret"));
        assert_eq!(b.challenge, "Basic realm=\"\"", "ingress-nginx's default realm is empty");
    }

    #[test]
    fn signin_urls_are_built_as_ingress_nginx_builds_them() {
        let vars = Vars {
            host: "app.example",
            http_host: "app.example:8443",
            scheme: "https",
            request_uri: "/a b?x=1&y=2",
            method: "POST",
            remote_addr: "203.0.113.7",
        };
        let external = |signin: &str, param: Option<&str>| {
            let a = IngressAuth {
                url: Some("http://oauth2-proxy.auth.svc/oauth2/auth".into()),
                signin: Some(signin.into()),
                signin_param: param.map(str::to_string),
                ..Default::default()
            };
            a.resolve(None, &mut |_| {}).unwrap().external.unwrap()
        };
        assert_eq!(
            external("https://$host/oauth2/start", None).signin_location(&vars).unwrap(),
            "https://app.example/oauth2/start?rd=https://app.example:8443%2Fa%20b%3Fx%3D1%26y%3D2"
        );
        assert_eq!(
            external("https://$host/oauth2/start?rd=$escaped_request_uri", None)
                .signin_location(&vars)
                .unwrap(),
            "https://app.example/oauth2/start?rd=%2Fa%20b%3Fx%3D1%26y%3D2",
            "a URL that already has the parameter is left as it is"
        );
        assert_eq!(
            external("https://login.example/start?app=1", Some("return_to")).signin_location(&vars).unwrap(),
            "https://login.example/start?app=1&return_to=https://app.example:8443%2Fa%20b%3Fx%3D1%26y%3D2"
        );
    }
}
