//! Page bodies of an ErrorPagePolicy rule: `path`, `inline`, `configMapRef`, `formats` and
//! `backend`, validated and loaded into the [`Page`] a resolved rule carries.
//!
//! Data flow: [`resolve`](super::resolve) calls [`resolve_page`] per rule. A `backend` page
//! takes its [`Backend`] from the table build (one per Service port per build, shared with the
//! routes), so its endpoints are always the current ones; a policy kept in its last good
//! version after an invalid edit is [`rebind`]-ed to the current build's backends for the
//! same reason.

use std::sync::Arc;

use http::HeaderValue;

use super::error_backend::ErrorBackend;
use super::{DEFAULT_CONTENT_TYPE, Format, Page, PageBody, Problems, ResolvedPolicy, Rule};
use crate::crd::{self, MAX_PAGE_BYTES};
use crate::index::{Index, ObjectKey};
use crate::table::accept;
use crate::table::template::{Escape, Template};
use crate::table::{Backend, PortRef};

/// The table build's Service backends: the one `Backend` of a Service port in this build.
pub type Backends<'a> = dyn FnMut(&ObjectKey, PortRef) -> Arc<Backend> + 'a;

pub(super) fn resolve_page(
    index: &Index,
    namespace: &str,
    page: &crd::Page,
    backends: &mut Backends<'_>,
    at: &str,
    p: &mut Problems,
) -> Option<Page> {
    let sources = [
        page.path.is_some(),
        page.inline.is_some(),
        page.config_map_ref.is_some(),
        page.formats.is_some(),
        page.backend.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        p.invalid.push(format!("{at}: set exactly one of path, inline, configMapRef, formats, backend"));
        return None;
    }
    if let Some(r) = &page.backend {
        if page.content_type.is_some() {
            p.invalid.push(format!("{at}: a backend page has the content type its backend answers with"));
        }
        let backend = error_backend(index, namespace, r, backends, &format!("{at}.backend"), p)?;
        return Some(Page {
            formats: vec![Format {
                media: "*/*".into(),
                content_type: None,
                body: PageBody::Backend(backend),
            }],
        });
    }
    if let Some(formats) = &page.formats {
        if page.content_type.is_some() {
            p.invalid.push(format!("{at}: with formats, set contentType on each format"));
        }
        if formats.is_empty() || formats.len() > 8 {
            p.invalid.push(format!("{at}.formats: between 1 and 8 formats"));
            return None;
        }
        let mut out = Vec::new();
        for (i, f) in formats.iter().enumerate() {
            let fat = format!("{at}.formats[{i}]");
            if [f.path.is_some(), f.inline.is_some(), f.config_map_ref.is_some()]
                .iter()
                .filter(|s| **s)
                .count()
                != 1
            {
                p.invalid.push(format!("{fat}: set exactly one of path, inline, configMapRef"));
                continue;
            }
            if let Some(format) = resolve_format(
                index,
                namespace,
                Some(&f.content_type),
                f.path.as_deref(),
                f.inline.as_deref(),
                f.config_map_ref.as_ref(),
                &fat,
                p,
            ) {
                out.push(format);
            }
        }
        return (out.len() == formats.len()).then_some(Page { formats: out });
    }
    let format = resolve_format(
        index,
        namespace,
        page.content_type.as_deref(),
        page.path.as_deref(),
        page.inline.as_deref(),
        page.config_map_ref.as_ref(),
        at,
        p,
    )?;
    Some(Page { formats: vec![format] })
}

#[allow(clippy::too_many_arguments)]
fn resolve_format(
    index: &Index,
    namespace: &str,
    content_type: Option<&str>,
    path: Option<&str>,
    inline: Option<&str>,
    config_map: Option<&crd::ConfigMapKeyRef>,
    at: &str,
    p: &mut Problems,
) -> Option<Format> {
    let header = match content_type {
        Some(ct) => match HeaderValue::from_str(ct) {
            Ok(v) if accept::essence(ct).contains('/') => Some(v),
            _ => {
                p.invalid.push(format!("{at}.contentType: {ct:?} is not a media type"));
                return None;
            }
        },
        None => None,
    };
    if let Some(path) = path {
        if !path.starts_with('/') || path.len() > 1024 || HeaderValue::from_str(path).is_err() {
            p.invalid.push(format!("{at}.path: {path:?} must start with '/' (a path on the same host)"));
            return None;
        }
        let media = content_type.map(accept::essence).unwrap_or_else(|| "text/html".into());
        return Some(Format { media, content_type: header, body: PageBody::Path(path.to_string()) });
    }
    let text: String = match (inline, config_map) {
        (Some(text), _) => text.to_string(),
        (None, Some(r)) => {
            let cm_key = ObjectKey::new(namespace, r.name.clone());
            let Some(cm) = index.config_maps.get(&cm_key) else {
                p.refs.push(format!("{at}.configMapRef: ConfigMap {cm_key} not found"));
                return None;
            };
            if let Some(v) = cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                v.clone()
            } else if let Some(v) = cm.binary_data.as_ref().and_then(|d| d.get(&r.key)) {
                match String::from_utf8(v.0.clone()) {
                    Ok(s) => s,
                    Err(_) => {
                        p.invalid.push(format!(
                            "{at}.configMapRef: key {} of ConfigMap {cm_key} is not UTF-8 text",
                            r.key
                        ));
                        return None;
                    }
                }
            } else {
                p.refs.push(format!("{at}.configMapRef: ConfigMap {cm_key} has no key {:?}", r.key));
                return None;
            }
        }
        (None, None) => {
            p.invalid.push(format!("{at}: no body"));
            return None;
        }
    };
    if text.len() > MAX_PAGE_BYTES {
        p.refs.push(format!("{at}: page is {} bytes, more than the {MAX_PAGE_BYTES}-byte limit", text.len()));
        return None;
    }
    let content_type = header.unwrap_or_else(|| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let ct_str = content_type.to_str().unwrap_or(DEFAULT_CONTENT_TYPE).to_string();
    match Template::parse(&text, Escape::for_content_type(&ct_str)) {
        Ok(t) => Some(Format {
            media: accept::essence(&ct_str),
            content_type: Some(content_type),
            body: PageBody::Static(t),
        }),
        Err(e) => {
            p.invalid.push(format!("{at}: template: {e}"));
            None
        }
    }
}

/// A `backend` page's Service port: the Service must exist and have the port (a missing one is
/// an unresolved reference, like a missing ConfigMap); endpoints may come and go.
fn error_backend(
    index: &Index,
    namespace: &str,
    r: &crd::PageBackendRef,
    backends: &mut Backends<'_>,
    at: &str,
    p: &mut Problems,
) -> Option<Arc<ErrorBackend>> {
    if r.port.is_some_and(|n| !(1..=65535).contains(&n)) || r.name.is_empty() {
        p.invalid.push(format!("{at}: a Service name and, if set, a port between 1 and 65535"));
        return None;
    }
    let key = ObjectKey::new(namespace, r.name.clone());
    let Some(ports) =
        index.services.get(&key).map(|s| s.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or(&[]))
    else {
        p.refs.push(format!("{at}: Service {key} not found"));
        return None;
    };
    // ingress-nginx's default-backend uses the Service's first port; so does an unset port.
    let port = match r.port {
        None => ports.first().map(|sp| sp.port),
        Some(n) => ports.iter().any(|sp| sp.port == n).then_some(n),
    };
    let Some(port) = port else {
        match r.port {
            Some(n) => p.refs.push(format!("{at}: Service {key} has no port {n}")),
            None => p.refs.push(format!("{at}: Service {key} has no ports")),
        }
        return None;
    };
    Some(Arc::new(ErrorBackend { backend: backends(&key, PortRef::Number(port)) }))
}

/// `policy` with its backend pages on this build's backends (a policy kept in its last good
/// version still has the previous build's, with their old endpoints).
pub fn rebind(policy: &ResolvedPolicy, backends: &mut Backends<'_>) -> ResolvedPolicy {
    let mut out = policy.clone();
    for rule in &mut out.rules {
        rebind_rule(rule, backends);
    }
    if let Some(m) = &mut out.maintenance {
        rebind_rule(&mut Arc::make_mut(m).rule, backends);
    }
    out
}

fn rebind_rule(rule: &mut Rule, backends: &mut Backends<'_>) {
    let Some(page) = &rule.page else { return };
    if !page.formats.iter().any(|f| matches!(f.body, PageBody::Backend(_))) {
        return;
    }
    let mut fresh = Page::clone(page);
    for f in &mut fresh.formats {
        if let PageBody::Backend(b) = &f.body {
            let backend = backends(&b.backend.service, b.backend.port.clone());
            f.body = PageBody::Backend(Arc::new(ErrorBackend { backend }));
        }
    }
    rule.page = Some(Arc::new(fresh));
}
