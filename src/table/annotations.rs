//! ingress-nginx annotations (`nginx.ingress.kubernetes.io/…`) on the Ingresses erratum serves:
//! one reader for all of them, with ingress-nginx's documented syntax and defaults.
//!
//! Data flow: [`build`](super::build) calls [`read`] once per Ingress; each value that erratum
//! reads becomes part of the routes' [`Edge`]; a value that does not parse, and an annotation
//! of that prefix erratum does not read, becomes a diagnostic (Event, `/table`, log), so a
//! migrated Ingress never behaves differently in silence. Pure functions.

use std::collections::BTreeMap;
use std::time::Duration;

pub mod affinity;
pub mod auth;
pub mod canary;
pub mod catalog;
pub mod cors;
pub mod limits;
pub mod nginx_vars;
pub mod routing;

pub use affinity::{Affinity, IngressAffinity};
pub use auth::{Auth, IngressAuth};
pub use canary::{Canary, IngressCanary};
pub use cors::{IngressCors, ResponseHeaders};
pub use limits::{IngressLimits, RateLimits};
pub use routing::{IngressRouting, Rewrite};

/// The prefix of every ingress-nginx annotation.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// How a report of a difference (not of a bad value) begins after the annotation's name.
pub const DIFFERS: &str = "erratum differs from ingress-nginx:";

/// The annotation (without the prefix) a report of [`read`] is about: its messages begin
/// `annotation nginx.ingress.kubernetes.io/NAME`. `None` for other diagnostics.
pub fn named_in(message: &str) -> Option<&str> {
    message.strip_prefix("annotation ")?.strip_prefix(PREFIX)?.split([':', ' ']).next()
}

/// The value of cookie `name` in a request's `Cookie` fields (canaries and affinity read it).
pub fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `ssl-redirect`: redirect plain HTTP to HTTPS for hosts with a TLS entry (default: the
/// `--ssl-redirect` flag, on as in ingress-nginx).
pub const SSL_REDIRECT: &str = "ssl-redirect";
/// `force-ssl-redirect`: redirect even for hosts without a TLS entry (TLS ends at a load
/// balancer). Default off.
pub const FORCE_SSL_REDIRECT: &str = "force-ssl-redirect";
/// `proxy-body-size`: the largest request body (nginx size syntax; `0` is unlimited).
pub const PROXY_BODY_SIZE: &str = "proxy-body-size";

/// `proxy-connect-timeout`: seconds to connect to an endpoint (default: `--upstream-connect-timeout`).
pub const PROXY_CONNECT_TIMEOUT: &str = "proxy-connect-timeout";
/// `proxy-read-timeout`: seconds to wait for the response head, and between two pieces of the
/// response body (default: `--upstream-response-timeout`).
pub const PROXY_READ_TIMEOUT: &str = "proxy-read-timeout";
/// `proxy-send-timeout`: seconds between two pieces of the request body on its way upstream
/// (default: `--client-body-timeout`).
pub const PROXY_SEND_TIMEOUT: &str = "proxy-send-timeout";
/// `proxy-next-upstream`: which failures send the request to another endpoint.
pub const PROXY_NEXT_UPSTREAM: &str = "proxy-next-upstream";
/// `proxy-next-upstream-tries`: most attempts of one request, the first included (0: one per
/// endpoint).
pub const PROXY_NEXT_UPSTREAM_TRIES: &str = "proxy-next-upstream-tries";
/// `proxy-next-upstream-timeout`: seconds after which no further attempt starts (0: no limit).
pub const PROXY_NEXT_UPSTREAM_TIMEOUT: &str = "proxy-next-upstream-timeout";
/// `load-balance`: `round_robin` or `ewma` (erratum: power of two choices on in-flight
/// requests, reported as a difference).
pub const LOAD_BALANCE: &str = "load-balance";

/// `backend-protocol`: `HTTP`, `HTTPS`, `GRPC`, `GRPCS` or `H2C` to the endpoints.
pub const BACKEND_PROTOCOL: &str = "backend-protocol";
/// `proxy-ssl-secret`: `namespace/name` of a Secret with `ca.crt` (and `tls.crt`/`tls.key`
/// for a client certificate) for TLS to the endpoints.
pub const PROXY_SSL_SECRET: &str = "proxy-ssl-secret";
/// `proxy-ssl-verify`: `on` or `off`.
pub const PROXY_SSL_VERIFY: &str = "proxy-ssl-verify";
/// `proxy-ssl-name`: the name the endpoint's certificate is verified against (and SNI).
pub const PROXY_SSL_NAME: &str = "proxy-ssl-name";
/// `proxy-ssl-server-name`: `on` or `off`: whether SNI is sent.
pub const PROXY_SSL_SERVER_NAME: &str = "proxy-ssl-server-name";
/// erratum's own: a ConfigMap of the Ingress's namespace whose `ca.crt` verifies the
/// endpoints' certificates (a CA bundle is not a secret).
pub const BACKEND_CA_CONFIGMAP: &str = "erratum.dev/backend-ca-configmap";

/// `custom-http-errors`: codes whose page the error backend renders (comma-separated).
pub const CUSTOM_HTTP_ERRORS: &str = "custom-http-errors";
/// `default-backend`: a Service of the Ingress's namespace: the error backend.
pub const DEFAULT_BACKEND: &str = "default-backend";

/// `allowlist-source-range` (and its older name `whitelist-source-range`): only clients in
/// these CIDRs are served; others get 403.
pub const ALLOWLIST_SOURCE_RANGE: &str = "allowlist-source-range";
/// The older name of [`ALLOWLIST_SOURCE_RANGE`].
pub const WHITELIST_SOURCE_RANGE: &str = "whitelist-source-range";
/// `denylist-source-range`: clients in these CIDRs get 403 (checked first).
pub const DENYLIST_SOURCE_RANGE: &str = "denylist-source-range";

/// Whether erratum reads the annotation `name` (without the prefix); every other one under
/// [`PREFIX`] is reported as ignored.
pub fn is_read(name: &str) -> bool {
    READ.contains(&name)
        || routing::READ.contains(&name)
        || limits::READ.contains(&name)
        || cors::READ.contains(&name)
        || canary::READ.contains(&name)
        || affinity::READ.contains(&name)
        || auth::READ.contains(&name)
}

/// The edge, upstream, access and error-page annotations erratum reads (besides
/// [`routing::READ`] and [`limits::READ`]).
pub const READ: [&str; 20] = [
    ALLOWLIST_SOURCE_RANGE,
    WHITELIST_SOURCE_RANGE,
    DENYLIST_SOURCE_RANGE,
    CUSTOM_HTTP_ERRORS,
    DEFAULT_BACKEND,
    BACKEND_PROTOCOL,
    PROXY_SSL_SECRET,
    PROXY_SSL_VERIFY,
    PROXY_SSL_NAME,
    PROXY_SSL_SERVER_NAME,
    SSL_REDIRECT,
    FORCE_SSL_REDIRECT,
    PROXY_BODY_SIZE,
    PROXY_CONNECT_TIMEOUT,
    PROXY_READ_TIMEOUT,
    PROXY_SEND_TIMEOUT,
    PROXY_NEXT_UPSTREAM,
    PROXY_NEXT_UPSTREAM_TRIES,
    PROXY_NEXT_UPSTREAM_TIMEOUT,
    LOAD_BALANCE,
];

/// The cluster-wide defaults the annotations override (flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeDefaults {
    /// `--ssl-redirect`.
    pub ssl_redirect: bool,
    /// `--max-body-bytes`; `None` is unlimited.
    pub max_body_bytes: Option<u64>,
    /// `--load-balance`.
    pub load_balance: LoadBalance,
}

impl Default for EdgeDefaults {
    fn default() -> Self {
        Self {
            ssl_redirect: true,
            max_body_bytes: Some(DEFAULT_MAX_BODY_BYTES),
            load_balance: LoadBalance::RoundRobin,
        }
    }
}

/// ingress-nginx's default `proxy-body-size` (nginx's `client_max_body_size`): 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

/// What one Ingress says about the edge, as read; `None` where it says nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressEdge {
    /// `ssl-redirect`.
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect`.
    pub force_ssl_redirect: Option<bool>,
    /// `proxy-body-size`: `Some(None)` is unlimited (`0`).
    pub max_body_bytes: Option<Option<u64>>,
    /// The upstream settings (timeouts, retries, balancing).
    pub upstream: IngressUpstream,
    /// The protocol to the endpoints and its TLS settings.
    pub protocol: IngressProtocol,
    /// `custom-http-errors`.
    pub custom_http_errors: Option<Vec<u16>>,
    /// `default-backend`: a Service name.
    pub default_backend: Option<String>,
    /// ingress-nginx annotations erratum does not read (names without the prefix).
    pub unsupported: Vec<String>,
    /// `allowlist-source-range` / `whitelist-source-range`.
    pub allow: Option<Vec<ipnet::IpNet>>,
    /// `denylist-source-range`.
    pub deny: Option<Vec<ipnet::IpNet>>,
    /// A source range did not parse: nobody is allowed.
    pub ranges_broken: bool,
    /// Redirects, rewrites, regex paths, the upstream `Host`.
    pub routing: IngressRouting,
    /// Rate limits per client address.
    pub limits: IngressLimits,
    /// CORS and `custom-headers`.
    pub cors: IngressCors,
    /// `canary` and its rules.
    pub canary: IngressCanary,
    /// `affinity: cookie` and `session-cookie-*`.
    pub affinity: IngressAffinity,
    /// `auth-type: basic`, `auth-url` and their companions.
    pub auth: IngressAuth,
}

/// Who may use a route, by client address (ingress-nginx's source ranges).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRanges {
    /// When not empty, only these.
    pub allow: Vec<ipnet::IpNet>,
    /// Never these (checked first, as nginx's `deny` lines come first).
    pub deny: Vec<ipnet::IpNet>,
    /// A range did not parse: nobody.
    pub closed: bool,
}

impl SourceRanges {
    /// The ranges an Ingress sets; `None` when it sets none (nothing is checked).
    pub fn of(ingress: &IngressEdge) -> Option<Self> {
        let ranges = Self {
            allow: ingress.allow.clone().unwrap_or_default(),
            deny: ingress.deny.clone().unwrap_or_default(),
            closed: ingress.ranges_broken,
        };
        (ranges.closed || !ranges.allow.is_empty() || !ranges.deny.is_empty()).then_some(ranges)
    }

    /// Whether `ip` may use the route.
    pub fn permits(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.closed
            && !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
    }
}

/// A comma-separated list of CIDRs or addresses (ingress-nginx's source ranges).
pub fn parse_ranges(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(parse_range).collect()
}

/// One CIDR (host bits cleared) or one address (a /32 or /128); also `--trusted-proxies`'s
/// entries.
pub fn parse_range(p: &str) -> Result<ipnet::IpNet, String> {
    let p = p.trim();
    p.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{p:?} is not a CIDR (10.0.0.0/8) or an address"))
}

/// What one Ingress says about the protocol to its endpoints, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressProtocol {
    /// `backend-protocol`.
    pub protocol: Option<Protocol>,
    /// `proxy-ssl-secret` (`namespace/name`, or `name` in the Ingress's namespace).
    pub ssl_secret: Option<String>,
    /// `erratum.dev/backend-ca-configmap`.
    pub ca_configmap: Option<String>,
    /// `proxy-ssl-verify`.
    pub verify: Option<bool>,
    /// `proxy-ssl-name`.
    pub name: Option<String>,
    /// `proxy-ssl-server-name`.
    pub sni: Option<bool>,
}

/// The protocol erratum speaks to a backend's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 in plaintext.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 in plaintext (prior knowledge).
    H2c,
    /// gRPC: HTTP/2 in plaintext; erratum's own errors are gRPC statuses.
    Grpc,
    /// gRPC over TLS (HTTP/2 by ALPN).
    Grpcs,
}

impl Protocol {
    /// As `backend-protocol` spells it (and `/table` shows it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::H2c => "H2C",
            Self::Grpc => "GRPC",
            Self::Grpcs => "GRPCS",
        }
    }

    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Https | Self::Grpcs)
    }

    /// Whether the requests go over HTTP/2.
    pub fn http2(self) -> bool {
        matches!(self, Self::H2c | Self::Grpc | Self::Grpcs)
    }

    /// Whether erratum's own errors are answered as gRPC statuses.
    pub fn grpc(self) -> bool {
        matches!(self, Self::Grpc | Self::Grpcs)
    }

    /// A Service port's `appProtocol` (Kubernetes' own way to say it): `https`,
    /// `kubernetes.io/h2c`, `grpc`, `grpcs` (case-insensitive); others are HTTP/1.1.
    pub fn from_app_protocol(app: &str) -> Option<Self> {
        match app.to_ascii_lowercase().as_str() {
            "https" => Some(Self::Https),
            "kubernetes.io/h2c" | "h2c" => Some(Self::H2c),
            "grpc" => Some(Self::Grpc),
            "grpcs" => Some(Self::Grpcs),
            "http" => Some(Self::Http),
            _ => None,
        }
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    match s.trim().to_ascii_uppercase().as_str() {
        "HTTP" => Ok(Protocol::Http),
        "HTTPS" => Ok(Protocol::Https),
        "H2C" => Ok(Protocol::H2c),
        "GRPC" => Ok(Protocol::Grpc),
        "GRPCS" => Ok(Protocol::Grpcs),
        "AUTO_HTTP" | "FCGI" => Err("is not supported by erratum (HTTP, HTTPS, GRPC, GRPCS, H2C are)".into()),
        _ => Err("is not HTTP, HTTPS, GRPC, GRPCS or H2C".into()),
    }
}

/// `custom-http-errors`: status codes 400–599, comma-separated.
pub fn parse_codes(s: &str) -> Result<Vec<u16>, String> {
    let mut codes = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u16>() {
            Ok(code) if (400..=599).contains(&code) => codes.push(code),
            _ => return Err(format!("has {part:?}, which is not an error status (400-599)")),
        }
    }
    if codes.is_empty() {
        return Err("lists no status".into());
    }
    codes.sort_unstable();
    codes.dedup();
    Ok(codes)
}

/// nginx's `on`/`off`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("is not on or off".into()),
    }
}

/// What one Ingress says about its upstreams, as read; `None` where it says nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngressUpstream {
    /// `proxy-connect-timeout`.
    pub connect_timeout: Option<Duration>,
    /// `proxy-read-timeout`.
    pub read_timeout: Option<Duration>,
    /// `proxy-send-timeout`.
    pub send_timeout: Option<Duration>,
    /// `proxy-next-upstream`.
    pub next: Option<NextUpstream>,
    /// `proxy-next-upstream-tries`.
    pub tries: Option<u32>,
    /// `proxy-next-upstream-timeout`: `Some(None)` is no limit (`0`).
    pub next_timeout: Option<Option<Duration>>,
    /// `load-balance`.
    pub load_balance: Option<LoadBalance>,
}

/// How an endpoint is chosen for a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalance {
    /// Each endpoint in turn (ingress-nginx's default).
    #[default]
    RoundRobin,
    /// Two endpoints at random, the one with fewer requests in flight (power of two choices).
    P2c,
}

impl LoadBalance {
    /// The name `/table` and the flag use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::P2c => "p2c",
        }
    }
}

/// `proxy-next-upstream`: the failures after which a request goes to another endpoint. A set
/// of nginx's `proxy_next_upstream` conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextUpstream(u16);

impl NextUpstream {
    /// No connection could be made, or it broke before the response head.
    pub const ERROR: u16 = 1;
    /// Connecting, or waiting for the response head, timed out.
    pub const TIMEOUT: u16 = 1 << 1;
    /// The response head is not valid HTTP.
    pub const INVALID_HEADER: u16 = 1 << 2;
    /// Requests of any method, not only idempotent ones, may be repeated once sent.
    pub const NON_IDEMPOTENT: u16 = 1 << 3;
    const STATUSES: [(u16, &'static str, u16); 7] = [
        (500, "http_500", 1 << 4),
        (502, "http_502", 1 << 5),
        (503, "http_503", 1 << 6),
        (504, "http_504", 1 << 7),
        (403, "http_403", 1 << 8),
        (404, "http_404", 1 << 9),
        (429, "http_429", 1 << 10),
    ];
    /// ingress-nginx's default: `error timeout`.
    pub const DEFAULT: Self = Self(Self::ERROR | Self::TIMEOUT);

    /// Whether `flag` (one of the constants) is in the set.
    pub fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }

    /// Whether an answer with `status` goes to another endpoint.
    pub fn on_status(self, status: u16) -> bool {
        self.0 >> 4 != 0 && Self::STATUSES.iter().any(|&(code, _, bit)| code == status && self.0 & bit != 0)
    }

    /// The set in nginx's words, for `/table`.
    pub fn names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (bit, name) in [
            (Self::ERROR, "error"),
            (Self::TIMEOUT, "timeout"),
            (Self::INVALID_HEADER, "invalid_header"),
            (Self::NON_IDEMPOTENT, "non_idempotent"),
        ] {
            if self.has(bit) {
                out.push(name);
            }
        }
        out.extend(Self::STATUSES.iter().filter(|(_, _, bit)| self.has(*bit)).map(|(_, name, _)| *name));
        if out.is_empty() {
            out.push("off");
        }
        out
    }

    /// Parses nginx's list (`error timeout http_503`; `off` alone turns retries off).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut set = 0u16;
        let mut off = false;
        for word in s.split_whitespace() {
            set |= match word {
                "error" => Self::ERROR,
                "timeout" => Self::TIMEOUT,
                "invalid_header" => Self::INVALID_HEADER,
                "non_idempotent" => Self::NON_IDEMPOTENT,
                "off" => {
                    off = true;
                    0
                }
                _ => match Self::STATUSES.iter().find(|(_, name, _)| *name == word) {
                    Some((_, _, bit)) => *bit,
                    None => {
                        return Err(format!("has {word:?}, which is not a proxy_next_upstream condition"));
                    }
                },
            };
        }
        if off && set != 0 {
            return Err("combines off with other conditions".into());
        }
        if !off && set == 0 {
            return Err("is empty".into());
        }
        Ok(Self(set))
    }
}

/// The upstream behaviour of one route, resolved at build time. Timeouts left `None` are the
/// flags' (the proxy holds them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// Connect timeout.
    pub connect_timeout: Option<Duration>,
    /// Response (head and body-gap) timeout.
    pub read_timeout: Option<Duration>,
    /// Request body gap timeout.
    pub send_timeout: Option<Duration>,
    /// When to try another endpoint.
    pub next: NextUpstream,
    /// Most attempts, the first included; 0 is one per endpoint.
    pub tries: u32,
    /// No attempt starts after this much time from the first; `None` is no limit.
    pub next_timeout: Option<Duration>,
    /// How the endpoint is chosen.
    pub load_balance: LoadBalance,
}

/// ingress-nginx's default `proxy-next-upstream-tries`.
pub const DEFAULT_TRIES: u32 = 3;

impl Upstream {
    /// A route's upstream settings from its Ingress's annotations and the defaults.
    pub fn resolve(ingress: &IngressUpstream, defaults: &EdgeDefaults) -> Self {
        Self {
            connect_timeout: ingress.connect_timeout,
            read_timeout: ingress.read_timeout,
            send_timeout: ingress.send_timeout,
            next: ingress.next.unwrap_or(NextUpstream::DEFAULT),
            tries: ingress.tries.unwrap_or(DEFAULT_TRIES),
            next_timeout: ingress.next_timeout.flatten(),
            load_balance: ingress.load_balance.unwrap_or(defaults.load_balance),
        }
    }
}

/// The edge behaviour of one route, resolved at build time: what the proxy checks per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    /// A request that did not arrive over HTTPS (by the connection, or a trusted
    /// `X-Forwarded-Proto`) gets a 308 to https, except ACME HTTP-01 challenges.
    pub https_redirect: bool,
    /// Largest request body accepted (413 beyond it); `None` is unlimited.
    pub max_body_bytes: Option<u64>,
}

impl Edge {
    /// A route's edge from its Ingress's annotations and the defaults; `tls_host` says whether
    /// the Ingress has a TLS entry for the route's host.
    pub fn resolve(ingress: &IngressEdge, defaults: &EdgeDefaults, tls_host: bool) -> Self {
        let redirect = ingress.ssl_redirect.unwrap_or(defaults.ssl_redirect) && tls_host;
        Self {
            https_redirect: redirect || ingress.force_ssl_redirect.unwrap_or(false),
            max_body_bytes: ingress.max_body_bytes.unwrap_or(defaults.max_body_bytes),
        }
    }

    /// The edge of a route no Ingress annotates (`--default-backend`): the defaults, no
    /// redirect (no TLS entry names its hosts).
    pub fn defaults(defaults: &EdgeDefaults) -> Self {
        Self::resolve(&IngressEdge::default(), defaults, false)
    }
}

/// Reads an Ingress's annotations; `report` gets one message per value that does not parse
/// (the default applies) and per ingress-nginx annotation erratum does not read.
pub fn read(annotations: Option<&BTreeMap<String, String>>, mut report: impl FnMut(String)) -> IngressEdge {
    let mut edge = IngressEdge::default();
    let all = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
    for (key, value) in annotations.into_iter().flatten() {
        // Where erratum reads an annotation differently, the Ingress is told (the catalog's
        // one list of differences: the same words `erratum migrate` prints).
        if let Some(name) = key.strip_prefix(PREFIX)
            && let Some(catalog::Support::Differs(how)) = catalog::support_of(name, value)
        {
            report(format!("annotation {key}: {DIFFERS} {how}"));
        }
        if key == BACKEND_CA_CONFIGMAP {
            edge.protocol.ca_configmap = Some(value.trim().to_string());
            continue;
        }
        let Some(name) = key.strip_prefix(PREFIX) else { continue };
        match name {
            BACKEND_PROTOCOL => {
                edge.protocol.protocol = parse_or_report(key, value, parse_protocol, &mut report)
            }
            // A range that does not parse closes the route (403 for everyone) instead of
            // opening it: ingress-nginx denies such a location too.
            ALLOWLIST_SOURCE_RANGE | WHITELIST_SOURCE_RANGE | DENYLIST_SOURCE_RANGE => {
                match parse_ranges(value) {
                    Ok(ranges) if name == DENYLIST_SOURCE_RANGE => edge.deny = Some(ranges),
                    Ok(ranges) => edge.allow = Some(ranges),
                    Err(why) => {
                        edge.ranges_broken = true;
                        report(format!("annotation {key}: {why}; the Ingress answers 403 until it is fixed"));
                    }
                }
            }
            CUSTOM_HTTP_ERRORS => {
                edge.custom_http_errors = parse_or_report(key, value, parse_codes, &mut report)
            }
            DEFAULT_BACKEND => edge.default_backend = Some(value.trim().to_string()),
            PROXY_SSL_SECRET => edge.protocol.ssl_secret = Some(value.trim().to_string()),
            PROXY_SSL_VERIFY => edge.protocol.verify = parse_or_report(key, value, parse_on_off, &mut report),
            PROXY_SSL_NAME => edge.protocol.name = Some(value.trim().to_string()),
            PROXY_SSL_SERVER_NAME => {
                edge.protocol.sni = parse_or_report(key, value, parse_on_off, &mut report)
            }
            SSL_REDIRECT => edge.ssl_redirect = parse_or_report(key, value, parse_bool, &mut report),
            FORCE_SSL_REDIRECT => {
                edge.force_ssl_redirect = parse_or_report(key, value, parse_bool, &mut report);
            }
            PROXY_BODY_SIZE => edge.max_body_bytes = parse_or_report(key, value, parse_size, &mut report),
            PROXY_CONNECT_TIMEOUT => {
                edge.upstream.connect_timeout = parse_or_report(key, value, parse_timeout, &mut report);
            }
            PROXY_READ_TIMEOUT => {
                edge.upstream.read_timeout = parse_or_report(key, value, parse_timeout, &mut report);
            }
            PROXY_SEND_TIMEOUT => {
                edge.upstream.send_timeout = parse_or_report(key, value, parse_timeout, &mut report);
            }
            PROXY_NEXT_UPSTREAM => {
                edge.upstream.next = parse_or_report(key, value, NextUpstream::parse, &mut report);
            }
            PROXY_NEXT_UPSTREAM_TRIES => {
                edge.upstream.tries = parse_or_report(key, value, parse_count, &mut report);
            }
            PROXY_NEXT_UPSTREAM_TIMEOUT => {
                edge.upstream.next_timeout = parse_or_report(
                    key,
                    value,
                    |v| parse_seconds(v).map(|d| (!d.is_zero()).then_some(d)),
                    &mut report,
                );
            }
            LOAD_BALANCE => {
                edge.upstream.load_balance = parse_or_report(key, value, parse_balance, &mut report);
            }
            _ if edge.routing.read(name, key, value, &all, &mut report) => {}
            _ if edge.limits.read(name, key, value, &mut report) => {}
            _ if edge.cors.read(name, key, value, &mut report) => {}
            _ if edge.canary.read(name, key, value, &mut report) => {}
            _ if edge.affinity.read(name, key, value, &mut report) => {}
            _ if edge.auth.read(name, value) => {}
            _ => {
                edge.unsupported.push(name.to_string());
                if name.ends_with("-snippet") {
                    report(format!(
                        "annotation {key} is never executed: it is raw nginx configuration, and erratum runs \
                         no nginx (snippets let an Ingress author run directives in the shared proxy, \
                         the root of CVE-2025-1974); say it with an ErrorPagePolicy or an annotation \
                         erratum reads"
                    ));
                } else {
                    let why = catalog::support(name)
                        .map_or("not an annotation ingress-nginx documents", |s| s.note());
                    report(format!("annotation {key} is not supported by erratum ({why}); ignored"));
                }
            }
        }
    }
    edge.auth.check(&mut report);
    edge
}

fn parse_or_report<T>(
    key: &str,
    value: &str,
    parse: fn(&str) -> Result<T, String>,
    report: &mut impl FnMut(String),
) -> Option<T> {
    match parse(value) {
        Ok(v) => Some(v),
        Err(why) => {
            report(format!("annotation {key}: {value:?} {why}; the default applies"));
            None
        }
    }
}

/// Whole seconds as ingress-nginx reads its timeouts (`proxy_connect_timeout {N}s`).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<u32>()
        .map(|n| Duration::from_secs(n.into()))
        .map_err(|_| "is not a whole number of seconds".to_string())
}

/// A timeout: whole seconds, more than 0.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_seconds(s)
        .and_then(|d| if d.is_zero() { Err("is 0 (a timeout must be at least 1)".into()) } else { Ok(d) })
}

fn parse_count(s: &str) -> Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| "is not a whole number".to_string())
}

fn parse_balance(s: &str) -> Result<LoadBalance, String> {
    match s.trim() {
        "round_robin" => Ok(LoadBalance::RoundRobin),
        "ewma" => Ok(LoadBalance::P2c),
        _ => Err("is not round_robin or ewma".into()),
    }
}

/// A boolean as ingress-nginx reads it (Go's `strconv.ParseBool`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("is not a boolean (true or false)".into()),
    }
}

/// An nginx size (`client_max_body_size`): bytes, or a number with `k`, `m` or `g` (either
/// case, powers of 1024). `0` means unlimited: `None`.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    const HINT: &str = "is not a size (like 8m, 512k, 1g or 0 for unlimited)";
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HINT.into());
    }
    let n: u64 = digits.parse().map_err(|_| HINT.to_string())?;
    let bytes = n.checked_mul(unit).ok_or_else(|| "is too large".to_string())?;
    Ok((bytes > 0).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string())).collect()
    }

    #[test]
    fn sizes_follow_nginx_syntax() {
        assert_eq!(parse_size("8m"), Ok(Some(8 << 20)));
        assert_eq!(parse_size("512K"), Ok(Some(512 << 10)));
        assert_eq!(parse_size("1g"), Ok(Some(1 << 30)));
        assert_eq!(parse_size("1000"), Ok(Some(1000)));
        assert_eq!(parse_size("0"), Ok(None));
        assert_eq!(parse_size("0m"), Ok(None));
        for bad in ["", "m", "8mb", "-1", "1.5m", "8 m", "99999999999999999999g"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upstream_annotations_follow_ingress_nginx() {
        let next = NextUpstream::parse("error timeout http_503  non_idempotent").unwrap();
        assert!(next.has(NextUpstream::ERROR) && next.has(NextUpstream::NON_IDEMPOTENT));
        assert!(next.on_status(503) && !next.on_status(502) && !next.on_status(200));
        assert_eq!(next.names(), ["error", "timeout", "non_idempotent", "http_503"]);
        assert_eq!(NextUpstream::parse("off").unwrap().names(), ["off"]);
        for bad in ["", "off error", "http_418", "errors"] {
            assert!(NextUpstream::parse(bad).is_err(), "{bad:?}");
        }
        let mut reports = Vec::new();
        let read = read(
            Some(&annotations(&[
                ("proxy-connect-timeout", "3"),
                ("proxy-read-timeout", "0"),
                ("proxy-next-upstream-tries", "5"),
                ("proxy-next-upstream-timeout", "0"),
                ("backend-protocol", "grpcs"),
                ("proxy-ssl-verify", "yes"),
            ])),
            |m| reports.push(m),
        );
        assert_eq!(read.upstream.connect_timeout, Some(Duration::from_secs(3)));
        assert_eq!(read.upstream.read_timeout, None, "0 is not a timeout");
        assert_eq!(read.upstream.tries, Some(5));
        assert_eq!(read.upstream.next_timeout, Some(None), "0 is no limit");
        assert_eq!(read.protocol.protocol, Some(Protocol::Grpcs), "case-insensitive");
        assert_eq!(read.protocol.verify, None);
        assert_eq!(reports.len(), 2, "{reports:?}");
        let resolved = Upstream::resolve(&read.upstream, &EdgeDefaults::default());
        assert_eq!((resolved.next, resolved.tries), (NextUpstream::DEFAULT, 5));
        assert_eq!(
            Upstream::resolve(&IngressUpstream::default(), &EdgeDefaults::default()).tries,
            DEFAULT_TRIES
        );
    }

    #[test]
    fn booleans_follow_go() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn annotations_override_defaults_and_bad_values_are_reported() {
        let defaults = EdgeDefaults::default();
        let mut reports = Vec::new();
        let read = read(
            Some(&annotations(&[
                ("ssl-redirect", "false"),
                ("proxy-body-size", "eight"),
                ("limit-rate", "100"),
            ])),
            |m| reports.push(m),
        );
        assert_eq!(read.ssl_redirect, Some(false));
        assert_eq!(read.max_body_bytes, None, "a bad value leaves the default");
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(reports[0].contains("limit-rate") && reports[0].contains("not supported"));
        assert!(reports[1].contains("proxy-body-size") && reports[1].contains("the default applies"));
        let edge = Edge::resolve(&read, &defaults, true);
        assert!(!edge.https_redirect, "ssl-redirect: false wins over a TLS entry");
        assert_eq!(edge.max_body_bytes, Some(DEFAULT_MAX_BODY_BYTES));
    }

    #[test]
    fn redirect_needs_a_tls_entry_unless_forced() {
        let defaults = EdgeDefaults::default();
        assert!(Edge::resolve(&IngressEdge::default(), &defaults, true).https_redirect);
        assert!(!Edge::resolve(&IngressEdge::default(), &defaults, false).https_redirect);
        let forced = IngressEdge { force_ssl_redirect: Some(true), ..IngressEdge::default() };
        assert!(Edge::resolve(&forced, &defaults, false).https_redirect);
        let off = EdgeDefaults { ssl_redirect: false, ..defaults };
        assert!(!Edge::resolve(&IngressEdge::default(), &off, true).https_redirect);
        let on = IngressEdge { ssl_redirect: Some(true), ..IngressEdge::default() };
        assert!(Edge::resolve(&on, &off, true).https_redirect, "the annotation overrides the flag");
        let unlimited = IngressEdge { max_body_bytes: Some(None), ..IngressEdge::default() };
        assert_eq!(Edge::resolve(&unlimited, &defaults, false).max_body_bytes, None);
    }
}
