//! ingress-nginx's error backends — `custom-http-errors` with `default-backend` (per Ingress,
//! or `--custom-http-errors` with `--default-backend` for all) — as an implicit
//! ErrorPagePolicy: one more input to the one `decide()`, not a second engine.
//!
//! Data flow: [`build`](crate::table::build) makes one per Ingress that asks for it and puts it
//! after the Ingress's own policies (an explicit ErrorPagePolicy wins where both have a rule)
//! and before `--default-policy`. Its page is a [`PageBody::Backend`]: the proxy asks the
//! backend per request, with ingress-nginx's `X-Code`, `X-Format`, … headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Format, MethodSet, Page, PageBody, ResolvedPolicy, Rule};
use crate::crd::{Mode, Source};
use crate::index::ObjectKey;
use crate::table::Backend;

/// The Service that renders error pages for an Ingress (ingress-nginx's error backend).
#[derive(Debug)]
pub struct ErrorBackend {
    /// Where the page requests go.
    pub backend: Arc<Backend>,
}

impl PartialEq for ErrorBackend {
    fn eq(&self, other: &Self) -> bool {
        self.backend.service == other.backend.service && self.backend.port == other.backend.port
    }
}

impl Eq for ErrorBackend {}

/// The name of the implicit policy of Ingress `ingress` (metric labels, logs, `/table`).
pub fn policy_name(ingress: &str) -> String {
    format!("custom-http-errors.{ingress}")
}

/// The implicit policy: for each of `codes`, from the backend or from erratum, the page the
/// error backend renders for the request, with the original status. Nothing is cached (as
/// ingress-nginx, which asks its backend every time).
pub fn implicit_policy(ingress: &ObjectKey, codes: &[u16], backend: Arc<ErrorBackend>) -> ResolvedPolicy {
    let page = Arc::new(Page {
        formats: vec![Format { media: "*/*".into(), content_type: None, body: PageBody::Backend(backend) }],
    });
    let rule = Rule {
        codes: codes.iter().map(u16::to_string).collect(),
        response_code: None,
        page: Some(page),
        min_ttl: Some(0),
        max_ttl: Some(0),
        methods: MethodSet::ALL,
        when_accepts: Vec::new(),
        copy_headers: Vec::new(),
        set_headers: Vec::new(),
        cache_control: None,
        cache_with_credentials: false,
    };
    let by_code: BTreeMap<u16, usize> = codes.iter().map(|c| (*c, 0)).collect();
    let key = ObjectKey::new(ingress.namespace.clone(), policy_name(&ingress.name));
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (&key, codes).hash(&mut h);
        h.finish()
    };
    ResolvedPolicy {
        key,
        uid: String::new(),
        generation: 0,
        source: Source::Any,
        mode: Mode::Enforce,
        default_min_ttl: 0,
        rules: vec![rule],
        targets: vec![ingress.name.clone()],
        maintenance: None,
        stale_if_error: None,
        fingerprint,
        hosts: Vec::new(),
        paths: Vec::new(),
        by_code,
        class4: None,
        class5: None,
    }
}
