//! ingress-nginx's routing and rewriting annotations: `rewrite-target`, `use-regex`,
//! `app-root`, `permanent-redirect`/`temporal-redirect` (+ `-code`), `from-to-www-redirect`,
//! `upstream-vhost`, `x-forwarded-prefix`.
//!
//! Data flow: [`read`](super::read) fills an [`IngressRouting`] per Ingress; the build asks it
//! which hosts turn into regex hosts ([`IngressRouting::enforces_regex`]) and resolves it per
//! path into a [`Rewrite`] carried by the route (`None` when the Ingress sets none of these:
//! the proxy pays one pointer check). The proxy applies it in `admit` (redirects, the path
//! rewrite) and `forward` (the upstream `Host`, `X-Forwarded-Prefix`). Pure.

use http::HeaderValue;

/// `rewrite-target`: the path the backend gets, with `$1`… from the rule's path regex.
pub const REWRITE_TARGET: &str = "rewrite-target";
/// `use-regex`: the paths are (case-insensitive, prefix) regular expressions.
pub const USE_REGEX: &str = "use-regex";
/// `app-root`: where a request for `/` is redirected (302).
pub const APP_ROOT: &str = "app-root";
/// `permanent-redirect`: every request is redirected there (301).
pub const PERMANENT_REDIRECT: &str = "permanent-redirect";
/// `permanent-redirect-code`: the status of `permanent-redirect`.
pub const PERMANENT_REDIRECT_CODE: &str = "permanent-redirect-code";
/// `temporal-redirect`: every request is redirected there (302).
pub const TEMPORAL_REDIRECT: &str = "temporal-redirect";
/// `temporal-redirect-code`: the status of `temporal-redirect`.
pub const TEMPORAL_REDIRECT_CODE: &str = "temporal-redirect-code";
/// `from-to-www-redirect`: `www.HOST` redirects to `HOST` (or the other way round).
pub const FROM_TO_WWW_REDIRECT: &str = "from-to-www-redirect";
/// `upstream-vhost`: the `Host` the backend gets.
pub const UPSTREAM_VHOST: &str = "upstream-vhost";
/// `x-forwarded-prefix`: an `X-Forwarded-Prefix` for the backend (with `rewrite-target`).
pub const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";

/// `service-upstream`: send to the Service's cluster IP instead of its endpoints.
pub const SERVICE_UPSTREAM: &str = "service-upstream";

/// The annotations this module reads.
pub const READ: [&str; 11] = [
    SERVICE_UPSTREAM,
    REWRITE_TARGET,
    USE_REGEX,
    APP_ROOT,
    PERMANENT_REDIRECT,
    PERMANENT_REDIRECT_CODE,
    TEMPORAL_REDIRECT,
    TEMPORAL_REDIRECT_CODE,
    FROM_TO_WWW_REDIRECT,
    UPSTREAM_VHOST,
    X_FORWARDED_PREFIX,
];

/// ingress-nginx's `http-redirect-code`: the status of its www and HTTPS redirects.
pub const WWW_REDIRECT_CODE: u16 = 308;

/// What one Ingress says about routing and rewriting, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngressRouting {
    /// `rewrite-target`.
    pub rewrite_target: Option<String>,
    /// `use-regex`.
    pub use_regex: bool,
    /// `app-root`.
    pub app_root: Option<String>,
    /// `permanent-redirect` and its code (301 by default).
    pub permanent: Option<(String, u16)>,
    /// `temporal-redirect` and its code (302 by default).
    pub temporal: Option<(String, u16)>,
    /// `from-to-www-redirect`.
    pub from_to_www: bool,
    /// `upstream-vhost`.
    pub upstream_vhost: Option<HeaderValue>,
    /// `x-forwarded-prefix`.
    pub forwarded_prefix: Option<HeaderValue>,
    /// `service-upstream`.
    pub service_upstream: bool,
}

impl IngressRouting {
    /// Reads `name` (without the prefix) if it is one of [`READ`]; `false` if it is not.
    /// Codes are read after the URLs they qualify, whatever the annotations' order.
    pub fn read(
        &mut self,
        name: &str,
        key: &str,
        value: &str,
        all: &dyn Fn(&str) -> Option<String>,
        report: &mut impl FnMut(String),
    ) -> bool {
        let v = value.trim();
        match name {
            REWRITE_TARGET => match check_target(v) {
                Ok(()) => self.rewrite_target = Some(v.to_string()),
                Err(why) => report(format!("annotation {key}: {v:?} {why}; the path is not rewritten")),
            },
            USE_REGEX => match super::parse_bool(v) {
                Ok(b) => self.use_regex = b,
                Err(why) => report(format!("annotation {key}: {v:?} {why}; the default (false) applies")),
            },
            APP_ROOT => match check_local_path(v) {
                Ok(()) => self.app_root = Some(v.to_string()),
                Err(why) => report(format!("annotation {key}: {v:?} {why}; ignored")),
            },
            PERMANENT_REDIRECT | TEMPORAL_REDIRECT => {
                let (code_name, default) = match name {
                    PERMANENT_REDIRECT => (PERMANENT_REDIRECT_CODE, 301),
                    _ => (TEMPORAL_REDIRECT_CODE, 302),
                };
                let code_key = format!("{}{code_name}", super::PREFIX);
                let code = match all(&code_key) {
                    None => default,
                    Some(c) => match c.trim().parse::<u16>() {
                        Ok(c) if (300..=308).contains(&c) => c,
                        _ => {
                            report(format!(
                                "annotation {code_key}: {c:?} is not a redirect code (300-308); {default} applies"
                            ));
                            default
                        }
                    },
                };
                match HeaderValue::from_str(v) {
                    Ok(_) if !v.is_empty() && !v.contains('$') => {
                        let slot =
                            if name == PERMANENT_REDIRECT { &mut self.permanent } else { &mut self.temporal };
                        *slot = Some((v.to_string(), code));
                    }
                    _ => report(format!(
                        "annotation {key}: {v:?} is not a URL erratum can send (nginx variables are not \
                         expanded); ignored"
                    )),
                }
            }
            // Read with the URL they qualify.
            PERMANENT_REDIRECT_CODE | TEMPORAL_REDIRECT_CODE => {}
            FROM_TO_WWW_REDIRECT | SERVICE_UPSTREAM => match super::parse_bool(v) {
                Ok(b) if name == SERVICE_UPSTREAM => self.service_upstream = b,
                Ok(b) => self.from_to_www = b,
                Err(why) => report(format!("annotation {key}: {v:?} {why}; the default (false) applies")),
            },
            UPSTREAM_VHOST | X_FORWARDED_PREFIX => match HeaderValue::from_str(v) {
                Ok(h) if !v.is_empty() && !v.contains('$') => {
                    if name == UPSTREAM_VHOST {
                        self.upstream_vhost = Some(h);
                    } else {
                        self.forwarded_prefix = Some(h);
                    }
                }
                _ => report(format!(
                    "annotation {key}: {v:?} is not a header value erratum can send (nginx variables \
                     are not expanded); ignored"
                )),
            },
            _ => return false,
        }
        true
    }

    /// Whether a rule path of this Ingress needs a rewrite: a target that is not the path
    /// itself (ingress-nginx's `needsRewrite`).
    fn rewrites(&self, path: &str) -> bool {
        self.rewrite_target.as_deref().is_some_and(|t| t != path)
    }

    /// Whether this Ingress makes every path of its hosts a regex (ingress-nginx's
    /// `enforceRegexModifier`: `use-regex`, or a rewrite on any of its paths) — for all
    /// Ingresses that share the host, not only this one.
    pub fn enforces_regex<'p>(&self, mut paths: impl Iterator<Item = &'p str>) -> bool {
        self.use_regex || paths.any(|p| self.rewrites(p))
    }

    /// What the routes for `path` do. `None` when nothing applies.
    pub fn resolve(&self, path: &str) -> Result<Option<Rewrite>, String> {
        let redirect = match (&self.permanent, &self.temporal) {
            // nginx's `return` for the permanent redirect comes first in the location.
            (Some((url, code)), _) | (None, Some((url, code))) => {
                HeaderValue::from_str(url).ok().map(|location| (*code, location))
            }
            (None, None) => None,
        };
        let target = match &self.rewrite_target {
            Some(t) if self.rewrites(path) => {
                // nginx: `rewrite "(?i)PATH" TARGET break;` on the path (unanchored).
                let pattern = regex::RegexBuilder::new(path)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| format!("path {path:?} is not a regular expression erratum reads: {e}"))?;
                Some(Target { pattern, replacement: t.clone() })
            }
            _ => None,
        };
        let rewrite = Rewrite {
            redirect,
            app_root: self.app_root.as_deref().and_then(|p| HeaderValue::from_str(p).ok()),
            // ingress-nginx sends the prefix only along with a rewrite.
            forwarded_prefix: target.as_ref().and(self.forwarded_prefix.clone()),
            target,
            upstream_vhost: self.upstream_vhost.clone(),
            www: None,
        };
        Ok((!rewrite.is_empty()).then_some(rewrite))
    }
}

/// A rewrite target nginx would take as a path: `/…`, `$N…` captures, no nginx variables.
fn check_target(t: &str) -> Result<(), String> {
    if t.starts_with("http://") || t.starts_with("https://") {
        return Err("is a URL (nginx would redirect; erratum rewrites paths only)".into());
    }
    let b = t.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'$' && !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return Err("uses an nginx variable (only $1 to $9 are expanded)".into());
        }
    }
    if t.is_empty() || !(t.starts_with('/') || t.starts_with('$')) {
        return Err("does not start with '/'".into());
    }
    Ok(())
}

/// A path on the same host (`app-root`).
fn check_local_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.starts_with("//") || HeaderValue::from_str(p).is_err() {
        return Err("is not a path on the same host (like /app)".into());
    }
    Ok(())
}

/// A route's redirects and rewrites, resolved at build.
#[derive(Clone, Debug)]
pub struct Rewrite {
    /// `permanent-redirect` / `temporal-redirect`: every request, this status and Location.
    pub redirect: Option<(u16, HeaderValue)>,
    /// `app-root`: a request for `/` gets 302 to this path on the same host.
    pub app_root: Option<HeaderValue>,
    /// `rewrite-target`.
    pub target: Option<Target>,
    /// `upstream-vhost`.
    pub upstream_vhost: Option<HeaderValue>,
    /// `x-forwarded-prefix` (only with a rewrite).
    pub forwarded_prefix: Option<HeaderValue>,
    /// `from-to-www-redirect`: this route only redirects, to the same URI on this host.
    pub www: Option<String>,
}

impl Rewrite {
    fn is_empty(&self) -> bool {
        self.redirect.is_none()
            && self.app_root.is_none()
            && self.target.is_none()
            && self.upstream_vhost.is_none()
            && self.www.is_none()
    }

    /// The redirect-only rule of `from-to-www-redirect` for the other form of a host.
    pub fn www(to: &str) -> Self {
        Self {
            redirect: None,
            app_root: None,
            target: None,
            upstream_vhost: None,
            forwarded_prefix: None,
            www: Some(to.to_string()),
        }
    }
}

/// `rewrite-target` compiled for one path.
#[derive(Clone, Debug)]
pub struct Target {
    /// The rule's path as a case-insensitive, unanchored regex (nginx's `rewrite` regex).
    pub pattern: regex::Regex,
    /// The target, with `$1`… for the pattern's groups.
    pub replacement: String,
}

impl Target {
    /// The path and query the backend gets, or `None` when the pattern does not match (the
    /// request goes as it came, as with nginx). nginx's rules for the query: the original
    /// one is kept; a target with its own query gets the original one appended after `&`,
    /// unless the target ends with `?`.
    pub fn apply(&self, path: &str, query: Option<&str>) -> Option<String> {
        let caps = self.pattern.captures(path)?;
        let mut out = String::with_capacity(self.replacement.len() + path.len());
        let mut chars = self.replacement.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            match (c, chars.peek()) {
                ('$', Some(&(_, d))) if d.is_ascii_digit() => {
                    chars.next();
                    let n = d.to_digit(10).and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
                    out.push_str(caps.get(n).map_or("", |m| m.as_str()));
                }
                _ => out.push(c),
            }
        }
        let query = query.filter(|q| !q.is_empty());
        match out.find('?') {
            None => {
                if let Some(q) = query {
                    out.push('?');
                    out.push_str(q);
                }
            }
            Some(_) if out.ends_with('?') => {
                out.pop();
            }
            Some(_) => {
                if let Some(q) = query {
                    out.push('&');
                    out.push_str(q);
                }
            }
        }
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        Some(out)
    }
}

/// The other form of a host for `from-to-www-redirect`: `www.x` <-> `x`.
pub fn www_alias(host: &str) -> String {
    match host.strip_prefix("www.") {
        Some(bare) => bare.to_string(),
        None => format!("www.{host}"),
    }
}

/// A regex host's paths, compiled into one set: ingress-nginx's `location ~* "^PATH"` for
/// every path of the host, tried in its order (longest path first, then descending), the
/// first match winning.
#[derive(Clone, Debug)]
pub struct RegexPaths {
    set: regex::RegexSet,
}

/// The largest compiled size of a host's regex set: 10,000 paths compile within it.
const REGEX_SET_LIMIT: usize = 512 << 20;

impl RegexPaths {
    /// Orders `paths` as ingress-nginx does and compiles them. Returns the order (indexes into
    /// `paths`) with the set; a path that does not compile is returned as an error with its
    /// index, so the build reports it and leaves it out.
    pub fn compile(paths: &[&str]) -> Result<(Self, Vec<usize>), (usize, String)> {
        let order = Self::order(paths);
        for &i in &order {
            if let Err(e) = regex::RegexBuilder::new(&format!("^{}", paths[i])).case_insensitive(true).build()
            {
                return Err((i, e.to_string()));
            }
        }
        let set = regex::RegexSetBuilder::new(order.iter().map(|&i| format!("^{}", paths[i])))
            .case_insensitive(true)
            .size_limit(REGEX_SET_LIMIT)
            .dfa_size_limit(REGEX_SET_LIMIT)
            .build()
            .map_err(|e| (order.first().copied().unwrap_or(0), e.to_string()))?;
        Ok((Self { set }, order))
    }

    /// The order ingress-nginx gives `paths` (indexes into it): path descending, then
    /// (stably) length descending, as Go's `sort.SliceStable` twice.
    pub fn order(paths: &[&str]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..paths.len()).collect();
        order.sort_by(|&a, &b| paths[b].cmp(paths[a]));
        order.sort_by(|&a, &b| paths[b].len().cmp(&paths[a].len()));
        order
    }

    /// The position (in the compiled order) of the first path matching `path`.
    pub fn find(&self, path: &str) -> Option<usize> {
        self.set.matches(path).iter().next()
    }

    /// Number of paths.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there is no path.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str, to: &str) -> Target {
        let r = IngressRouting { rewrite_target: Some(to.into()), ..IngressRouting::default() };
        r.resolve(path).unwrap().unwrap().target.unwrap()
    }

    #[test]
    fn rewrite_target_follows_the_ingress_nginx_example() {
        // docs/examples/rewrite: `/something(/|$)(.*)` with `/$2`.
        let t = target("/something(/|$)(.*)", "/$2");
        assert_eq!(t.apply("/something", None).as_deref(), Some("/"));
        assert_eq!(t.apply("/something/", None).as_deref(), Some("/"));
        assert_eq!(t.apply("/something/new", Some("a=1")).as_deref(), Some("/new?a=1"));
        assert_eq!(t.apply("/SomeThing/new", None).as_deref(), Some("/new"), "case-insensitive");
        assert_eq!(t.apply("/other", None), None);
        let q = target("/api/(.*)", "/v2/$1?from=api");
        assert_eq!(q.apply("/api/x", Some("a=1")).as_deref(), Some("/v2/x?from=api&a=1"));
        let drop = target("/api/(.*)", "/v2/$1?");
        assert_eq!(drop.apply("/api/x", Some("a=1")).as_deref(), Some("/v2/x"));
        assert_eq!(target("/a", "$1").apply("/a", None).as_deref(), Some("/"), "missing group is empty");
    }

    #[test]
    fn bad_values_are_reported() {
        let mut reports = Vec::new();
        let mut r = IngressRouting::default();
        let none = |_: &str| None;
        for (name, value) in [
            (REWRITE_TARGET, "/$host/x"),
            (REWRITE_TARGET, "https://x"),
            (APP_ROOT, "app"),
            (PERMANENT_REDIRECT, "https://x/$request_uri"),
            (USE_REGEX, "yes"),
        ] {
            assert!(r.read(name, name, value, &none, &mut |m| reports.push(m)));
        }
        assert_eq!(reports.len(), 5, "{reports:?}");
        assert_eq!(r, IngressRouting::default());
        let code = |k: &str| k.ends_with(PERMANENT_REDIRECT_CODE).then(|| "399".to_string());
        r.read(PERMANENT_REDIRECT, "k", "https://example.com", &code, &mut |m| reports.push(m));
        assert_eq!(r.permanent, Some(("https://example.com".into(), 301)), "a bad code leaves 301");
        assert!(reports[5].contains("399"), "{reports:?}");
    }

    #[test]
    fn regex_paths_are_ordered_like_ingress_nginx() {
        let paths = ["/a", "/a/b.*", "/b", "/A/B/CD", "/A/B/C"];
        let (set, order) = RegexPaths::compile(&paths).unwrap();
        let found = |p: &str| set.find(p).map(|i| paths[order[i]]);
        assert_eq!(found("/a/b/cd"), Some("/A/B/CD"), "longest first, case-insensitive");
        assert_eq!(found("/a/b/c"), Some("/a/b.*"), "equal lengths: descending, as Go sorts strings");
        assert_eq!(found("/a/bx"), Some("/a/b.*"));
        assert_eq!(found("/abc"), Some("/a"), "a regex path is a prefix");
        assert_eq!(found("/x/b"), None, "anchored at the start");
        assert!(RegexPaths::compile(&["/ok", "/(?<=x)"]).is_err());
        assert_eq!(www_alias("www.example.com"), "example.com");
        assert_eq!(www_alias("example.com"), "www.example.com");
    }
}
