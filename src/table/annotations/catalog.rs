//! What erratum does with each of ingress-nginx's documented annotations: the one list that
//! `erratum migrate` reports from and the README's migration table is checked against.
//!
//! Pure data. An annotation erratum reads ([`super::is_read`]) is supported, or supported
//! with a difference that [`DIFFERENCES`] names; every other one is unsupported, with the
//! reason of its family.

/// How erratum treats one ingress-nginx annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Read with ingress-nginx's semantics and defaults.
    Supported,
    /// Read, with this difference.
    Differs(&'static str),
    /// Not read, for this reason.
    Unsupported(&'static str),
}

impl Support {
    /// `supported`, `differs` or `unsupported`.
    pub fn label(self) -> &'static str {
        match self {
            Support::Supported => "supported",
            Support::Differs(_) => "differs",
            Support::Unsupported(_) => "unsupported",
        }
    }

    /// The difference or the reason (empty when supported).
    pub fn note(self) -> &'static str {
        match self {
            Support::Supported => "",
            Support::Differs(n) | Support::Unsupported(n) => n,
        }
    }
}

/// ingress-nginx's documented annotations (docs/user-guide/nginx-configuration/annotations.md,
/// controller-v1.15), plus `allowlist-source-range`, the newer name of the whitelist.
pub const KNOWN: [&str; 131] = [
    "affinity",
    "affinity-canary-behavior",
    "affinity-mode",
    "allowlist-source-range",
    "app-root",
    "auth-always-set-cookie",
    "auth-cache-duration",
    "auth-cache-key",
    "auth-keepalive",
    "auth-keepalive-requests",
    "auth-keepalive-share-vars",
    "auth-keepalive-timeout",
    "auth-method",
    "auth-proxy-set-headers",
    "auth-realm",
    "auth-request-redirect",
    "auth-response-headers",
    "auth-secret",
    "auth-secret-type",
    "auth-signin",
    "auth-signin-redirect-param",
    "auth-snippet",
    "auth-tls-error-page",
    "auth-tls-match-cn",
    "auth-tls-pass-certificate-to-upstream",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "auth-tls-verify-depth",
    "auth-type",
    "auth-url",
    "backend-protocol",
    "canary",
    "canary-by-cookie",
    "canary-by-header",
    "canary-by-header-pattern",
    "canary-by-header-value",
    "canary-weight",
    "canary-weight-total",
    "client-body-buffer-size",
    "configuration-snippet",
    "connection-proxy-header",
    "cors-allow-credentials",
    "cors-allow-headers",
    "cors-allow-methods",
    "cors-allow-origin",
    "cors-expose-headers",
    "cors-max-age",
    "custom-headers",
    "custom-http-errors",
    "default-backend",
    "denylist-source-range",
    "enable-access-log",
    "enable-cors",
    "enable-global-auth",
    "enable-modsecurity",
    "enable-opentelemetry",
    "enable-owasp-core-rules",
    "enable-rewrite-log",
    "force-ssl-redirect",
    "from-to-www-redirect",
    "http2-push-preload",
    "limit-burst-multiplier",
    "limit-connections",
    "limit-rate",
    "limit-rate-after",
    "limit-rpm",
    "limit-rps",
    "limit-whitelist",
    "load-balance",
    "mirror-host",
    "mirror-request-body",
    "mirror-target",
    "modsecurity-snippet",
    "modsecurity-transaction-id",
    "opentelemetry-trust-incoming-span",
    "permanent-redirect",
    "permanent-redirect-code",
    "preserve-trailing-slash",
    "proxy-body-size",
    "proxy-buffer-size",
    "proxy-buffering",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-connect-timeout",
    "proxy-cookie-domain",
    "proxy-cookie-path",
    "proxy-http-version",
    "proxy-max-temp-file-size",
    "proxy-next-upstream",
    "proxy-next-upstream-timeout",
    "proxy-next-upstream-tries",
    "proxy-read-timeout",
    "proxy-redirect-from",
    "proxy-redirect-to",
    "proxy-request-buffering",
    "proxy-send-timeout",
    "proxy-ssl-ciphers",
    "proxy-ssl-name",
    "proxy-ssl-protocols",
    "proxy-ssl-secret",
    "proxy-ssl-server-name",
    "proxy-ssl-verify",
    "proxy-ssl-verify-depth",
    "rewrite-target",
    "satisfy",
    "server-alias",
    "server-snippet",
    "service-upstream",
    "session-cookie-change-on-failure",
    "session-cookie-conditional-samesite-none",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-samesite",
    "session-cookie-secure",
    "ssl-ciphers",
    "ssl-passthrough",
    "ssl-prefer-server-ciphers",
    "ssl-redirect",
    "stream-snippet",
    "temporal-redirect",
    "temporal-redirect-code",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
    "upstream-vhost",
    "use-regex",
    "whitelist-source-range",
    "x-forwarded-prefix",
];

/// Annotations erratum reads differently from ingress-nginx, and how.
pub const DIFFERENCES: [(&str, &str); 15] = [
    (
        "affinity-mode",
        "both modes keep a client on its endpoint while it is ready (the cookie names the endpoint)",
    ),
    ("session-cookie-expires", "written as Max-Age (nginx writes Expires)"),
    (
        "custom-headers",
        "no global-allowed-response-headers allow-list: any header but framing and hop-by-hop ones",
    ),
    ("enable-cors", "an echoed Origin also gets Vary: Origin, so shared caches keep origins apart"),
    ("load-balance", "ewma is balanced as power of two choices on requests in flight, not on response times"),
    (
        "limit-rps",
        "refused with 429 and Retry-After (ingress-nginx: 503), counted as rate_limited, not as a 5xx",
    ),
    (
        "limit-rpm",
        "refused with 429 and Retry-After (ingress-nginx: 503), counted as rate_limited, not as a 5xx",
    ),
    (
        "limit-connections",
        "counts requests until their response head, refused with 429 (ingress-nginx: until the response ends, 503)",
    ),
    (
        "rewrite-target",
        "Rust regex syntax: no look-around or back-references; nginx variables are not expanded",
    ),
    ("use-regex", "Rust regex syntax: no look-around or back-references"),
    ("permanent-redirect", "nginx variables ($host, $request_uri…) in the URL are not expanded"),
    ("temporal-redirect", "nginx variables ($host, $request_uri…) in the URL are not expanded"),
    ("upstream-vhost", "nginx variables in the value are not expanded"),
    (
        "auth-url",
        "nginx variables other than $host, $http_host, $best_http_host, $scheme, $pass_access_scheme, \
         $request_uri, $escaped_request_uri, $request_method and $remote_addr are refused (the route \
         answers 503, never unauthenticated)",
    ),
    (
        "default-backend",
        "the error backend of custom-http-errors only; a Service without endpoints answers 503 (a policy can page it)",
    ),
];

/// How erratum treats `name` (without the prefix); `None` when ingress-nginx documents no
/// such annotation.
pub fn support(name: &str) -> Option<Support> {
    if let Some((_, note)) = DIFFERENCES.iter().find(|(n, _)| *n == name) {
        return Some(Support::Differs(note));
    }
    if super::is_read(name) {
        return Some(Support::Supported);
    }
    if !KNOWN.contains(&name) {
        return None;
    }
    Some(Support::Unsupported(unsupported_reason(name)))
}

/// Like [`support`] for one value: `load-balance: round_robin` has no difference.
pub fn support_of(name: &str, value: &str) -> Option<Support> {
    match name {
        "load-balance" if value.trim() != "ewma" => Some(Support::Supported),
        // Only a variable erratum does not fill in makes a difference.
        "auth-url" if super::auth::NginxString::parse(value.trim()).is_ok() => Some(Support::Supported),
        _ => support(name),
    }
}

/// The reason an annotation of ingress-nginx is not read, by family.
fn unsupported_reason(name: &str) -> &'static str {
    const FAMILIES: [(&str, &str); 11] = [
        ("modsecurity", "no web application firewall in erratum"),
        ("enable-modsecurity", "no web application firewall in erratum"),
        ("enable-owasp", "no web application firewall in erratum"),
        ("auth-tls", "client certificates are not supported yet"),
        ("auth-cache", "auth-url answers are not cached: every request asks auth-url"),
        ("auth-keepalive", "connections to auth-url are pooled like every upstream connection"),
        ("auth-proxy-set-headers", "not supported: auth-url gets the client's fields and X-Original-*"),
        ("enable-global-auth", "the ConfigMap's global-auth-url is not read: set auth-url per Ingress"),
        (
            "satisfy",
            "not supported: every check must pass (source ranges, then basic, then auth-url: nginx's satisfy all)",
        ),
        ("proxy-buffer", "erratum streams bodies: nginx's buffer sizes have no equivalent"),
        ("mirror-", "request mirroring is not supported"),
    ];
    if name.ends_with("-snippet") {
        return "raw nginx configuration: never executed (the root of CVE-2025-1974)";
    }
    FAMILIES.iter().find(|(prefix, _)| name.starts_with(prefix)).map_or("not supported", |(_, why)| why)
}

/// Every documented annotation with erratum's support, in name order: the README's table.
pub fn table() -> impl Iterator<Item = (&'static str, Support)> {
    KNOWN.iter().filter_map(|n| support(n).map(|s| (*n, s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_annotation_erratum_reads_is_documented_by_ingress_nginx() {
        let all = super::super::READ
            .iter()
            .chain(&super::super::routing::READ)
            .chain(&super::super::limits::READ)
            .chain(&super::super::auth::READ);
        for name in all {
            assert!(KNOWN.contains(name), "{name} is read but not in ingress-nginx's list");
        }
        for (name, _) in DIFFERENCES {
            assert!(
                super::super::is_read(name),
                "{name}: a difference of an annotation erratum does not read"
            );
        }
        assert!(KNOWN.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
        assert_eq!(support("configuration-snippet").map(Support::label), Some("unsupported"));
        assert_eq!(
            support("auth-tls-secret").map(Support::note),
            Some("client certificates are not supported yet")
        );
        assert_eq!(support("made-up"), None);
    }
}
