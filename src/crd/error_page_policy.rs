use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest page body accepted (inline, ConfigMap, or fetched by path).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// CloudFront's ErrorCachingMinTTL ceiling (one year), also ours.
pub const MAX_TTL_SECONDS: u32 = 31_536_000;

/// Replaces error responses (from backends, from erratum itself, or both) with custom pages,
/// overrides their status, and sets how long they are cached — CloudFront's custom error
/// responses, scoped to Ingresses, hosts and paths.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "erratum.dev",
    version = "v1alpha1",
    kind = "ErrorPagePolicy",
    plural = "errorpagepolicies",
    shortname = "epp",
    namespaced,
    doc = "Custom error pages, status overrides and error caching for Ingress traffic (CloudFront custom error responses, per Ingress, host and path)",
    status = "ErrorPagePolicyStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Targets","type":"string","jsonPath":".status.targets","description":"Ingresses targeted"}"#,
    printcolumn = r#"{"name":"Codes","type":"string","jsonPath":".status.codes","description":"Status codes handled"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Attached","type":"integer","jsonPath":".status.attachedIngresses"}"#,
    printcolumn = r#"{"name":"Maintenance","type":"string","jsonPath":".status.maintenance","description":"On while covered routes answer with the maintenance page"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPagePolicySpec {
    /// Ingresses this policy applies to, in the policy's namespace. Empty: every Ingress in the
    /// namespace. A policy that names an Ingress takes precedence over a namespace-wide one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub target_refs: Vec<TargetRef>,

    /// Optional narrowing inside the targets: only requests for these hosts and paths.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<PolicyMatch>,

    /// Which errors the policy handles: from backends (`Upstream`), made by erratum itself
    /// (`Proxy`: no route 404, no endpoint 503, connect 502, timeout 504), or both (`Any`).
    #[serde(default)]
    pub source: Source,

    /// `Enforce` changes responses; `ReportOnly` changes nothing and counts what it would do.
    #[serde(default)]
    pub mode: Mode,

    /// Error Caching Minimum TTL for cacheable codes without a rule of their own (CloudFront
    /// default: 10 s).
    #[serde(default, rename = "defaultErrorCachingMinTTLSeconds", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub default_error_caching_min_ttl_seconds: Option<u32>,

    /// One entry per set of status codes. A code listed exactly beats a class (`4xx`, `5xx`);
    /// a code may appear in one entry only.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub error_responses: Vec<ErrorResponse>,

    /// A maintenance switch: while `enabled`, the routes the policy covers answer with its
    /// page and status (503 by default) without contacting their backends, except for the
    /// requests `bypass` lets through. `kubectl patch` turns it on and off; no request fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<Maintenance>,

    /// Serve stale on error (RFC 5861 `stale-if-error`; nginx `proxy_cache_use_stale`): erratum
    /// keeps the last good response of each GET on the routes the policy covers and, when the
    /// backend fails (connect error, timeout, reset, no ready endpoint, or a listed 5xx),
    /// answers with that copy instead of the error. In `Enforce` mode only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<StaleIfError>,
}

/// `spec.staleIfError`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StaleIfError {
    /// How long past its freshness lifetime (`s-maxage`, `max-age`, `Expires`; none: 0) a
    /// copy may be served. The origin's own `Cache-Control: stale-if-error=N` wins.
    #[schemars(range(min = 1, max = 31_536_000))]
    pub max_stale_seconds: u32,
    /// Backend statuses answered with the copy: 5xx codes or the class `5xx` (default: 500,
    /// 502, 503, 504, as RFC 5861 and nginx's `http_50x`). Connect errors, timeouts, resets
    /// and no ready endpoint always are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(regex(pattern = r"^(5[0-9][0-9]|5xx)$")))]
    pub codes: Vec<String>,
}

/// `spec.maintenance`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Maintenance {
    /// On or off.
    pub enabled: bool,
    /// Status sent (default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub response_code: Option<u16>,
    /// `Retry-After`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub retry_after_seconds: Option<u32>,
    /// The page, as for an `errorResponses` entry (default: erratum's built-in page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
    /// Who still reaches the backends (the team checking its work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypass: Option<MaintenanceBypass>,
}

/// Requests a maintenance lets through: any one condition suffices.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceBypass {
    /// Client addresses or CIDRs (the client as erratum sees it: the peer, the PROXY
    /// protocol's, or behind `--trusted-proxies` the forwarded one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub source_ranges: Vec<String>,
    /// Request headers with exactly this value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub headers: Vec<NameValue>,
    /// Cookies with exactly this value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub cookies: Vec<NameValue>,
}

/// A header or cookie and its value.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NameValue {
    /// Name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Value, compared exactly.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// An Ingress this policy targets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.group == 'networking.k8s.io' && self.kind == 'Ingress'").message("only networking.k8s.io Ingress targets are supported"))]
pub struct TargetRef {
    /// API group of the target.
    #[serde(default = "default_target_group")]
    pub group: String,
    /// Kind of the target.
    #[serde(default = "default_target_kind")]
    pub kind: String,
    /// Name of the Ingress, in the policy's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn default_target_group() -> String {
    "networking.k8s.io".into()
}

fn default_target_kind() -> String {
    "Ingress".into()
}

/// Hosts and paths a policy is narrowed to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMatch {
    /// Request hosts (exact, or `*.example.com` for one extra label). Empty: any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub hosts: Vec<String>,
    /// Request paths. Empty: any path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub paths: Vec<PathMatch>,
}

/// A path condition.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.value.startsWith('/')").message("path must start with '/'"))]
pub struct PathMatch {
    /// `Exact` or `Prefix` (element-wise, as Ingress paths).
    #[serde(rename = "type", default)]
    pub type_: PathMatchType,
    /// The path.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

/// How a [`PathMatch`] compares.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PathMatchType {
    /// The whole path.
    Exact,
    /// Element-wise prefix.
    #[default]
    Prefix,
}

/// Which errors a policy handles.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Source {
    /// Backend responses and erratum's own errors.
    #[default]
    Any,
    /// Only responses from backends.
    Upstream,
    /// Only errors erratum makes (no route, no endpoint, connect failure, timeout).
    Proxy,
}

/// Whether a policy acts.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Replace responses.
    #[default]
    Enforce,
    /// Change nothing; count what would have been replaced.
    ReportOnly,
}

/// What to do for a set of status codes (CloudFront: one CustomErrorResponse).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.errorCachingMaxTTLSeconds) || !has(self.errorCachingMinTTLSeconds) || self.errorCachingMaxTTLSeconds >= self.errorCachingMinTTLSeconds").message("errorCachingMaxTTLSeconds must not be below errorCachingMinTTLSeconds"))]
pub struct ErrorResponse {
    /// Status codes: exact (`"404"`) or classes (`"4xx"`, `"5xx"`).
    #[schemars(length(min = 1, max = 200), inner(regex(pattern = r"^([45][0-9][0-9]|[45]xx)$")))]
    pub codes: Vec<String>,

    /// Status sent instead of the original (CloudFront ResponseCode). Without `page` it only
    /// rewrites the status and the original body is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 200, max = 599))]
    pub response_code: Option<u16>,

    /// The body to send. Without it the rule only sets caching (and `responseCode`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,

    /// Error Caching Minimum TTL for these codes (CloudFront default 10 s). The origin's longer
    /// `s-maxage`/`max-age` wins, up to `errorCachingMaxTTLSeconds`.
    #[serde(default, rename = "errorCachingMinTTLSeconds", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub error_caching_min_ttl_seconds: Option<u32>,

    /// Cap on how long the origin's headers may keep an error cached.
    #[serde(default, rename = "errorCachingMaxTTLSeconds", skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_536_000))]
    pub error_caching_max_ttl_seconds: Option<u32>,

    /// Request methods the rule applies to. Default: `GET` and `HEAD` when `responseCode` is
    /// 2xx or 3xx (so a POST never receives a page with a success status), every method
    /// otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub methods: Vec<HttpMethod>,

    /// Apply only when the request's `Accept` header explicitly lists one of these media types
    /// (wildcards in the request do not count). For an SPA fallback: `["text/html"]`, so API
    /// clients keep their JSON errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 3, max = 255)))]
    pub when_accepts: Vec<String>,

    /// Response headers copied from the original error onto the page (e.g. `WWW-Authenticate`,
    /// `Retry-After`, `Access-Control-Allow-Origin`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")))]
    pub copy_headers: Vec<String>,

    /// Headers set on the page (e.g. `Retry-After: "120"` for a maintenance page). A value may
    /// use `{{status}}`, `{{request_id}}`, `{{host}}`, `{{path}}` and `{{url}}` (the URL the
    /// client asked for), percent-encoded: a 401 with `responseCode: 302` and
    /// `Location: "https://login.example.com/?rd={{url}}"` sends the user to sign in.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(schema_with = "set_headers_schema")]
    pub set_headers: std::collections::BTreeMap<String, String>,

    /// Cache errors for requests that carry `Authorization` or `Cookie` too. Off by default:
    /// such errors may be personal (a 403 for one user is not a 403 for another).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache_requests_with_credentials: bool,

    /// Viewer `Cache-Control` on the page. Default: `no-store` when the served status is 2xx or
    /// 3xx (a long `max-age` must not stick to arbitrary URLs), else the origin's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub cache_control: Option<String>,
}

/// Request methods a rule can be limited to.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum HttpMethod {
    /// GET
    GET,
    /// HEAD
    HEAD,
    /// POST
    POST,
    /// PUT
    PUT,
    /// PATCH
    PATCH,
    /// DELETE
    DELETE,
    /// OPTIONS
    OPTIONS,
    /// CONNECT
    CONNECT,
    /// TRACE
    TRACE,
}

/// A page body: exactly one of `path`, `inline`, `configMapRef`, `formats`, `backend`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.path) ? 1 : 0) + (has(self.inline) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) + (has(self.formats) ? 1 : 0) + (has(self.backend) ? 1 : 0) == 1").message("page needs exactly one of path, inline, configMapRef, formats, backend"))]
#[x_kube(validation = Rule::new("!has(self.formats) || !has(self.contentType)").message("with formats, set contentType on each format"))]
#[x_kube(validation = Rule::new("!has(self.backend) || !has(self.contentType)").message("a backend page has the content type its backend answers with"))]
pub struct Page {
    /// Fetched through the routing table on the request's host (CloudFront ResponsePagePath):
    /// the page may live on another backend than the failing one. Pinned in memory, refreshed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// The body itself. May use `{{status}}`, `{{request_id}}`, `{{host}}`, `{{path}}`, `{{url}}`,
    /// escaped for the content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1_048_576))]
    pub inline: Option<String>,
    /// A key of a ConfigMap in the policy's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
    /// Several representations, chosen by the request's `Accept` (q-values); the first is the
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8))]
    pub formats: Option<Vec<PageFormat>>,
    /// A Service in the policy's namespace that renders the page per request, with
    /// ingress-nginx's error-backend protocol (`X-Code`, `X-Format`, `X-Original-URI`, …): the
    /// stock custom-error-pages image and tarampampam/error-pages work unchanged. It
    /// negotiates the format itself, from `X-Format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<PageBackendRef>,
    /// Content type of `inline`/`configMapRef` (default `text/html; charset=utf-8`); for
    /// `path`, the page origin's own unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 255))]
    pub content_type: Option<String>,
}

/// One representation of a page.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.path) ? 1 : 0) + (has(self.inline) ? 1 : 0) + (has(self.configMapRef) ? 1 : 0) == 1").message("a format needs exactly one of path, inline, configMapRef"))]
pub struct PageFormat {
    /// Media type of this representation, e.g. `application/problem+json`.
    #[schemars(length(min = 3, max = 255))]
    pub content_type: String,
    /// See [`Page::path`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/"))]
    pub path: Option<String>,
    /// See [`Page::inline`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1_048_576))]
    pub inline: Option<String>,
    /// See [`Page::config_map_ref`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

/// A key in a ConfigMap of the policy's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in `data` (or `binaryData`).
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Service port in the policy's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PageBackendRef {
    /// Service name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Service port; the Service's first port when unset (as ingress-nginx's
    /// `default-backend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Observed state, computed by a pure function of the policy and the routing table.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ErrorPagePolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`, `ResolvedRefs`, `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Ingresses the policy currently applies to.
    #[serde(default)]
    pub attached_ingresses: u32,
    /// Summary for `kubectl get`: the targeted Ingresses, or `*` for the whole namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<String>,
    /// Summary for `kubectl get`: the codes handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codes: Option<String>,
    /// The effective behaviour per code, defaults included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<EffectiveRule>,
    /// Where a higher-precedence policy takes over this one's rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// `On` or `Off` when the policy has `spec.maintenance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<String>,
}

/// How one code is handled, after defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveRule {
    /// The code or class.
    pub code: String,
    /// Status sent, when overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
    /// What the page is (`inline text/html`, `path /errors/503.html`, `none`, …).
    pub page: String,
    /// `always`, `whenOriginSetsMaxAge`, `never`, or `byRule`.
    pub cached: String,
    /// Error Caching Minimum TTL in effect.
    #[serde(rename = "minTTLSeconds")]
    pub min_ttl_seconds: u32,
    /// Cap in effect, if any.
    #[serde(default, rename = "maxTTLSeconds", skip_serializing_if = "Option::is_none")]
    pub max_ttl_seconds: Option<u32>,
    /// Methods the rule applies to.
    pub methods: Vec<HttpMethod>,
}

/// `setHeaders`: at most 8 fields, each value at most 1 KiB, with known variables only (the
/// bounds keep the CEL rule within the API server's cost budget).
fn set_headers_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 8,
        "additionalProperties": {"type": "string", "maxLength": 1024},
        "x-kubernetes-validations": [{
            "rule": "self.all(k, self[k].matches('^(?:[^{\\r\\n]|[{][{] *(?:status|request_id|host|path|url) *[}][}]|[{](?:[^{\\r\\n]|$))*$'))",
            "message": "setHeaders values: no CR or LF, and only the variables {{status}}, {{request_id}}, {{host}}, {{path}}, {{url}}"
        }]
    })
}
