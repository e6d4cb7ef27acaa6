//! Host and path matching with Ingress v1 semantics: the lookup half of the routing table.
//!
//! Pure data and functions. Lookup cost is one hash probe per host form (exact, then wildcard)
//! plus one probe per path element, so it does not grow with the number of hosts or routes.

use std::collections::HashMap;
use std::sync::Arc;

use super::Route;

/// How a rule's path is matched (Ingress `pathType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// The whole path, case-sensitive.
    Exact,
    /// Element-wise prefix: `/foo` matches `/foo` and `/foo/bar`, never `/foobar`.
    /// `ImplementationSpecific` is treated as `Prefix`.
    Prefix,
}

impl PathKind {
    /// Parses an Ingress `pathType`.
    pub fn parse(path_type: &str) -> Option<Self> {
        match path_type {
            "Exact" => Some(PathKind::Exact),
            "Prefix" | "ImplementationSpecific" => Some(PathKind::Prefix),
            _ => None,
        }
    }
}

/// Normalises a Prefix path to its map key: trailing slashes carry no meaning for element-wise
/// matching (`/foo/` and `/foo` match the same requests), and the root stays `/`.
pub fn prefix_key(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { "/" } else { trimmed }
}

/// The routes of one host (or of the host-less rules), merged across Ingresses.
#[derive(Clone, Debug, Default)]
pub struct HostRoutes {
    pub(crate) exact: HashMap<String, Arc<Route>>,
    pub(crate) prefix: HashMap<String, Arc<Route>>,
    /// `spec.defaultBackend` of the oldest Ingress that names this host, for requests that match
    /// none of its paths (ingress-nginx behaviour, which most of our users come from).
    pub(crate) default: Option<Arc<Route>>,
    /// Policies of the Ingress that owns the host, for its requests that match no path.
    pub(crate) policies: super::Policies,
    /// A regex host's paths (`use-regex`, `rewrite-target` on any of its Ingresses): then
    /// the maps above are empty.
    pub(crate) regex: Option<Arc<RegexHost>>,
}

/// The paths of a regex host, in ingress-nginx's order, compiled into one set.
#[derive(Debug)]
pub struct RegexHost {
    /// Shared with the next table while the host's paths stay the same.
    pub(crate) paths: Arc<super::annotations::routing::RegexPaths>,
    /// Routes in the set's order.
    pub(crate) routes: Vec<Arc<Route>>,
}

impl HostRoutes {
    /// Finds the route for a request path: an Exact match first (it is always the longest
    /// possible match, and Exact beats Prefix of equal length), then the longest Prefix.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(regex) = &self.regex {
            return regex.paths.find(path).and_then(|i| regex.routes.get(i));
        }
        if let Some(route) = self.exact.get(path) {
            return Some(route);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Walk the path's element boundaries from the longest candidate down to "/".
        let mut candidate = path.trim_end_matches('/');
        loop {
            if let Some(route) = self.prefix.get(if candidate.is_empty() { "/" } else { candidate }) {
                return Some(route);
            }
            match candidate.rfind('/') {
                Some(i) if !candidate.is_empty() => candidate = &candidate[..i],
                _ => return None,
            }
        }
    }

    /// Number of path rules.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len() + self.regex.as_ref().map_or(0, |r| r.routes.len())
    }

    /// Whether the host has no path rule.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Normalises a request host: strips the port, a trailing dot, and lower-cases it.
/// Borrowed when already normal, which is the common case.
pub fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: "[::1]:8080" -> "::1"
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The wildcard key a request host falls under: `foo.example.com` -> `example.com`, so that
/// `*.example.com` matches exactly one extra label (Ingress v1).
pub fn wildcard_suffix(host: &str) -> Option<&str> {
    host.split_once('.').map(|(_, rest)| rest).filter(|rest| !rest.is_empty())
}

/// The request path as erratum routes it and forwards it: RFC 3986 normalisation (§6.2.2.2:
/// percent-encoded unreserved characters decoded, so `%2e` is a dot; §5.2.4: `.` and `..`
/// segments removed, never above the root) and runs of `/` merged (nginx's `merge_slashes`).
///
/// Matching and forwarding use the same result, so a path cannot match one route and mean
/// another to the backend (`/public/../admin` is `/admin` for both). An encoded slash (`%2F`)
/// or backslash (`%5C`) stays encoded: it is part of a segment for both sides. Borrows when the
/// path is already normal (the common case costs one scan).
///
/// A `%` not followed by two hex digits is an error: left alone it could pair with a decoded
/// character into a new escape (`%%32e` would become `%2e`), which a backend decoding once
/// more would read as a dot: a path escape.
pub fn normalize_path(path: &str) -> Result<std::borrow::Cow<'_, str>, InvalidPath> {
    let b = path.as_bytes();
    let suspicious =
        b.first() != Some(&b'/') || b.contains(&b'%') || b.windows(2).any(|w| w == b"//" || w == b"/.");
    if !suspicious {
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    if b.first() != Some(&b'/') {
        // `*` (OPTIONS) and other non-origin forms are left alone; they match no rule.
        return Ok(std::borrow::Cow::Borrowed(path));
    }
    // Decode unreserved characters only; keep every other escape as sent (upper-cased).
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
            else {
                return Err(InvalidPath);
            };
            let c = h << 4 | l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(c));
            } else {
                decoded.push('%');
                decoded.push(char::from(b[i + 1].to_ascii_uppercase()));
                decoded.push(char::from(b[i + 2].to_ascii_uppercase()));
            }
            i += 3;
        } else {
            // Byte-wise copy of a valid UTF-8 (indeed ASCII: http::Uri allows no more) path.
            let ch = path[i..].chars().next().unwrap_or('/');
            decoded.push(ch);
            i += ch.len_utf8();
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let ends_with_slash = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if ends_with_slash || out.is_empty() {
        normal.push('/');
    }
    Ok(std::borrow::Cow::Owned(normal))
}

/// A path with a `%` that does not start a valid escape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid percent-encoding in the path")]
pub struct InvalidPath;

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Whether `name` is an RFC 1123 DNS name: dot-separated labels of letters, digits and `-`,
/// not starting or ending with `-`, each at most 63 bytes, 253 in all. The one check for
/// Ingress hosts and policy host patterns.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests;
