//! ingress-nginx's session affinity: `affinity: cookie` and `session-cookie-*`. A client
//! without the cookie is balanced as usual and gets a cookie naming the endpoint that
//! answered; with it, it goes back to that endpoint while the endpoint is ready.
//!
//! Data flow: [`read`](super::read) fills an [`IngressAffinity`]; the build resolves it into
//! an [`Affinity`] carried by the Ingress's routes (`None` without `affinity`); the proxy's
//! `forward` asks [`Affinity::endpoint`] before it balances and [`Affinity::set_cookie`] for
//! the answer. The cookie's value is a digest of the endpoint's address, so no address leaks.

use std::net::SocketAddr;

use http::HeaderValue;
use http::header::HeaderMap;

/// `affinity`: `cookie` is the only type.
pub const AFFINITY: &str = "affinity";
/// `affinity-mode`: `balanced` (default) or `persistent`.
pub const AFFINITY_MODE: &str = "affinity-mode";
/// `session-cookie-name` (default `INGRESSCOOKIE`).
pub const SESSION_COOKIE_NAME: &str = "session-cookie-name";
/// `session-cookie-path` (default: the rule's path).
pub const SESSION_COOKIE_PATH: &str = "session-cookie-path";
/// `session-cookie-max-age`: seconds.
pub const SESSION_COOKIE_MAX_AGE: &str = "session-cookie-max-age";
/// `session-cookie-expires`: seconds (written as `Expires` by nginx; erratum as `Max-Age`).
pub const SESSION_COOKIE_EXPIRES: &str = "session-cookie-expires";
/// `session-cookie-secure`.
pub const SESSION_COOKIE_SECURE: &str = "session-cookie-secure";
/// `session-cookie-samesite`: `None`, `Lax` or `Strict`.
pub const SESSION_COOKIE_SAMESITE: &str = "session-cookie-samesite";
/// `session-cookie-domain`.
pub const SESSION_COOKIE_DOMAIN: &str = "session-cookie-domain";
/// `session-cookie-change-on-failure`: a failed endpoint's clients get a new cookie.
pub const SESSION_COOKIE_CHANGE_ON_FAILURE: &str = "session-cookie-change-on-failure";

/// The annotations this module reads.
pub const READ: [&str; 10] = [
    AFFINITY,
    AFFINITY_MODE,
    SESSION_COOKIE_NAME,
    SESSION_COOKIE_PATH,
    SESSION_COOKIE_MAX_AGE,
    SESSION_COOKIE_EXPIRES,
    SESSION_COOKIE_SECURE,
    SESSION_COOKIE_SAMESITE,
    SESSION_COOKIE_DOMAIN,
    SESSION_COOKIE_CHANGE_ON_FAILURE,
];

/// What one Ingress says about session affinity, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressAffinity {
    /// `affinity: cookie`.
    pub cookie: bool,
    /// `session-cookie-name`.
    pub name: Option<String>,
    /// `session-cookie-path`.
    pub path: Option<String>,
    /// `session-cookie-max-age` (or `-expires`).
    pub max_age: Option<u64>,
    /// `session-cookie-secure`.
    pub secure: bool,
    /// `session-cookie-samesite`.
    pub same_site: Option<&'static str>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-change-on-failure`.
    pub change_on_failure: bool,
}

impl IngressAffinity {
    /// Reads `name` (without the prefix) if it is one of [`READ`]; `false` if it is not.
    pub fn read(&mut self, name: &str, key: &str, value: &str, report: &mut impl FnMut(String)) -> bool {
        let v = value.trim();
        let token = |s: &str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~/".contains(&b))
        };
        let mut bad = |why: &str| report(format!("annotation {key}: {v:?} {why}; ignored"));
        match name {
            AFFINITY if v == "cookie" => self.cookie = true,
            AFFINITY => bad("is not cookie (the only affinity type)"),
            // `persistent` keeps clients on an endpoint when endpoints are added; erratum's cookie
            // names the endpoint itself, so both modes behave as persistent.
            AFFINITY_MODE if v == "balanced" || v == "persistent" => {}
            AFFINITY_MODE => bad("is not balanced or persistent"),
            SESSION_COOKIE_NAME if token(v) && !v.contains('/') => self.name = Some(v.to_string()),
            SESSION_COOKIE_PATH if v.starts_with('/') && token(v) => self.path = Some(v.to_string()),
            SESSION_COOKIE_DOMAIN if token(v) => self.domain = Some(v.to_string()),
            SESSION_COOKIE_NAME | SESSION_COOKIE_PATH | SESSION_COOKIE_DOMAIN => {
                bad("is not a cookie attribute value")
            }
            SESSION_COOKIE_MAX_AGE | SESSION_COOKIE_EXPIRES => match v.parse::<u64>() {
                Ok(n) => self.max_age = Some(n),
                Err(_) => bad("is not a whole number of seconds"),
            },
            SESSION_COOKIE_SECURE | SESSION_COOKIE_CHANGE_ON_FAILURE => match super::parse_bool(v) {
                Ok(b) if name == SESSION_COOKIE_SECURE => self.secure = b,
                Ok(b) => self.change_on_failure = b,
                Err(why) => bad(&why),
            },
            SESSION_COOKIE_SAMESITE => match v.to_ascii_lowercase().as_str() {
                "none" => self.same_site = Some("None"),
                "lax" => self.same_site = Some("Lax"),
                "strict" => self.same_site = Some("Strict"),
                _ => bad("is not None, Lax or Strict"),
            },
            _ => return false,
        }
        true
    }

    /// The affinity of a route for `path` (`None` without `affinity: cookie`).
    pub fn resolve(&self, path: &str) -> Option<Affinity> {
        if !self.cookie {
            return None;
        }
        let mut attributes = format!("; Path={}", self.path.as_deref().unwrap_or(path));
        if let Some(n) = self.max_age {
            attributes.push_str(&format!("; Max-Age={n}"));
        }
        if let Some(d) = &self.domain {
            attributes.push_str(&format!("; Domain={d}"));
        }
        if self.secure {
            attributes.push_str("; Secure");
        }
        if let Some(s) = self.same_site {
            attributes.push_str(&format!("; SameSite={s}"));
        }
        attributes.push_str("; HttpOnly");
        Some(Affinity {
            name: self.name.clone().unwrap_or_else(|| "INGRESSCOOKIE".into()),
            attributes,
            change_on_failure: self.change_on_failure,
        })
    }
}

/// A route's session affinity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affinity {
    name: String,
    /// `; Path=…; Max-Age=…; HttpOnly`, written once.
    attributes: String,
    /// `session-cookie-change-on-failure`.
    pub change_on_failure: bool,
}

impl Affinity {
    /// The endpoint (index into `endpoints`) the request's cookie names, if it is still there.
    pub fn endpoint(&self, headers: &HeaderMap, endpoints: &[SocketAddr]) -> Option<usize> {
        let value = super::cookie(headers, &self.name)?;
        let wanted = u64::from_str_radix(value, 16).ok().filter(|_| value.len() == 16)?;
        endpoints.iter().position(|a| digest(a) == wanted)
    }

    /// `Set-Cookie` naming `endpoint`.
    pub fn set_cookie(&self, endpoint: &SocketAddr) -> Option<HeaderValue> {
        HeaderValue::try_from(format!("{}={:016x}{}", self.name, digest(endpoint), self.attributes)).ok()
    }
}

/// An endpoint's cookie value (written as 16 hex digits): FNV-1a of its address. Stable
/// across versions and replicas (every replica must read every other's cookies), which a std
/// or foldhash hasher does not promise; a 64-bit FNV is a dozen lines, so no crate for it.
/// The address is written into a stack buffer: no allocation per endpoint per request.
fn digest(addr: &SocketAddr) -> u64 {
    use std::io::Write;
    let mut buf = [0u8; 64];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    // An address is at most 47 bytes (`[v6%scope]:port`): it always fits.
    let _ = write!(out, "{addr}");
    let n = usize::try_from(out.position()).unwrap_or(0);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &buf[..n] {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_names_an_endpoint_without_its_address() {
        let mut a = IngressAffinity::default();
        let mut reports = Vec::new();
        for (k, v) in [
            (AFFINITY, "cookie"),
            (SESSION_COOKIE_NAME, "route"),
            (SESSION_COOKIE_MAX_AGE, "3600"),
            (SESSION_COOKIE_SAMESITE, "lax"),
        ] {
            assert!(a.read(k, k, v, &mut |m| reports.push(m)));
        }
        assert!(a.read(AFFINITY_MODE, "k", "sticky", &mut |m| reports.push(m)));
        assert_eq!(reports.len(), 1, "{reports:?}");
        let affinity = a.resolve("/app").unwrap();
        let endpoints: Vec<SocketAddr> = vec!["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()];
        let cookie = affinity.set_cookie(&endpoints[1]).unwrap();
        let text = cookie.to_str().unwrap();
        assert!(
            text.starts_with("route=") && text.ends_with("; Path=/app; Max-Age=3600; SameSite=Lax; HttpOnly"),
            "{text}"
        );
        assert!(!text.contains("10.0.0"), "no address in the cookie");
        let value = text.split(';').next().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::COOKIE, HeaderValue::from_str(&format!("a=b; {value}")).unwrap());
        assert_eq!(affinity.endpoint(&headers, &endpoints), Some(1));
        assert_eq!(affinity.endpoint(&headers, &endpoints[..1]), None, "a gone endpoint is no match");
        // Pinned: a cookie written by another version or replica must still name its endpoint
        // (FNV-1a 64 of "10.0.0.1:80", computed outside Rust).
        assert_eq!(digest(&endpoints[0]), 0x529f_5a4b_643f_a605, "stable across versions");
    }
}
