//! `GET /pages/preview`: every page users would see — erratum's built-in pages and, for each
//! policy in effect, each rule's page in each of its formats (and its maintenance page) —
//! rendered with sample request values (a page by path as pinned for a host), so a platform engineer sees them before they ship.
//! `GET /pages/preview/page?…` serves one of them alone, with its content type (to open it
//! in a tab, or to screenshot it).
//!
//! Data flow: the current routing table (resolved policies, pure) -> the same template
//! rendering, built-in pages and pinned pages the proxy uses -> HTML. Read-only; nothing is
//! fetched.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::proxy::intercept::{Pages, builtin};
use crate::proxy::pages::PageStore;
use crate::table::policy::{Format, PageBody, Rule};
use crate::table::template::{Escape, Values, escape_into};
use crate::table::{ResolvedPolicy, RoutingTable};

/// The sample request's id.
const SAMPLE_ID: &str = Values::sample(0).request_id;

/// The statuses the built-in pages are shown for.
const BUILTIN: [u16; 8] = [400, 403, 404, 429, 500, 502, 503, 504];

/// A code key of a rule as a status to render (`4xx` and `5xx` as 404 and 503).
fn status_of(code: &str) -> u16 {
    match code {
        "4xx" => 404,
        "5xx" => 503,
        c => c.parse().unwrap_or(500),
    }
}

/// One page to show: where it comes from, and its body when erratum has it.
struct Shown {
    title: String,
    link: String,
    status: u16,
    media: String,
    body: Result<Bytes, String>,
}

fn rule_pages(
    policy: &ResolvedPolicy,
    rule: &Rule,
    maintenance: bool,
    pages: Option<&PageStore>,
    out: &mut Vec<Shown>,
) {
    let key = &policy.key;
    for code in &rule.codes {
        let original =
            if maintenance { rule.response_code.map_or(503, |s| s.as_u16()) } else { status_of(code) };
        let served = rule.response_code.map_or(original, |s| s.as_u16());
        let Some(page) = &rule.page else {
            let body = builtin(
                StatusCode::from_u16(served).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                None,
                SAMPLE_ID,
            )
            .body;
            out.push(Shown {
                title: format!("{key} · {code} (no page: erratum's)"),
                link: format!("builtin={served}"),
                status: served,
                media: "text/html".into(),
                body: Ok(body),
            });
            continue;
        };
        for (i, f) in page.formats.iter().enumerate() {
            out.push(Shown {
                title: format!("{key} · {code}"),
                link: format!("policy={key}&code={code}&format={i}"),
                status: served,
                media: f.media.clone(),
                body: render(f, original, pages),
            });
        }
    }
}

/// A page's body for the sample request; a path page as pinned for the first host that has
/// it (pages by path are fetched per host).
fn render(f: &Format, status: u16, pages: Option<&PageStore>) -> Result<Bytes, String> {
    match &f.body {
        PageBody::Static(t) => Ok(t.render(&Values::sample(status))),
        PageBody::Path(p) => pages
            .and_then(|store| {
                let pinned = store.states().into_iter().find(|s| &s.path == p && s.bytes.is_some())?;
                store.get(&pinned.host, p).map(|page| page.body)
            })
            .ok_or_else(|| {
                format!("fetched from {p} on the request's host, per host, and pinned; not pinned yet")
            }),
        PageBody::Backend(b) => Err(format!(
            "asked of {}:{} per request (ingress-nginx's error-backend protocol)",
            b.backend.service, b.backend.port
        )),
    }
}

fn every_page(table: &RoutingTable, pages: Option<&PageStore>) -> Vec<Shown> {
    let mut out: Vec<Shown> = BUILTIN
        .iter()
        .filter_map(|c| StatusCode::from_u16(*c).ok())
        .map(|s| Shown {
            title: format!("built-in · {}", s.as_u16()),
            link: format!("builtin={}", s.as_u16()),
            status: s.as_u16(),
            media: "text/html".into(),
            body: Ok(builtin(s, None, SAMPLE_ID).body),
        })
        .collect();
    for report in table.policy_reports() {
        let Some(policy) = &report.in_effect else { continue };
        for rule in &policy.rules {
            rule_pages(policy, rule, false, pages, &mut out);
        }
        if let Some(m) = &policy.maintenance {
            let mut rule = m.rule.clone();
            rule.codes = vec!["maintenance".into()];
            rule_pages(policy, &rule, true, pages, &mut out);
        }
    }
    out
}

fn escaped(s: &[u8]) -> String {
    let mut out = bytes::BytesMut::new();
    escape_into(&mut out, &String::from_utf8_lossy(s), Escape::Html);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /pages/preview`.
pub fn index(table: &RoutingTable, pages: Option<&PageStore>) -> Response<Full<Bytes>> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>erratum: page preview</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;margin:1.5rem;background:#f6f7f9;color:#1f2328}\
         section{background:#ffffff;border:1px solid #d0d7de;border-radius:8px;margin:0 0 1.5rem;padding:1rem}\
         h2{font-size:1rem;margin:0 0 .5rem}iframe{width:100%;height:22rem;border:1px solid #d0d7de;border-radius:6px;background:#ffffff}\
         pre{white-space:pre-wrap;background:#f6f8fa;padding:.75rem;border-radius:6px;overflow:auto}\
         .note{color:#57606a}</style></head>\n<body><h1>What users see</h1>\
         <p class=\"note\">Each page as erratum renders it for a sample request \
         (<code>GET https://www.example.com/some/page?q=preview</code>, request id <code>3f2a9c1e-preview</code>).</p>\n",
    );
    for s in every_page(table, pages) {
        html.push_str(&format!(
            "<section><h2>{} → {} <small>{}</small> <a href=\"/pages/preview/page?{}\">open</a></h2>",
            escaped(s.title.as_bytes()),
            s.status,
            escaped(s.media.as_bytes()),
            escaped(s.link.as_bytes()),
        ));
        match &s.body {
            Ok(body) if s.media.contains("html") => html.push_str(&format!(
                "<iframe sandbox=\"\" title=\"{}\" srcdoc=\"{}\"></iframe>",
                escaped(s.title.as_bytes()),
                escaped(body)
            )),
            Ok(body) => html.push_str(&format!("<pre>{}</pre>", escaped(body))),
            Err(note) => html.push_str(&format!("<p class=\"note\">{}</p>", escaped(note.as_bytes()))),
        }
        html.push_str("</section>\n");
    }
    html.push_str("</body></html>\n");
    reply(StatusCode::OK, "text/html; charset=utf-8", Bytes::from(html))
}

/// `GET /pages/preview/page?builtin=CODE` or `?policy=NS/NAME&code=CODE&format=N`: one page
/// alone, with its content type.
pub fn page(table: &RoutingTable, pages: Option<&PageStore>, query: &str) -> Response<Full<Bytes>> {
    let wanted = format!("?{query}");
    let link = |s: &Shown| format!("?{}", s.link);
    let found = every_page(table, pages).into_iter().find(|s| link(s) == wanted);
    match found {
        Some(Shown { body: Ok(body), media, .. }) => {
            let content_type =
                if media.contains("html") { "text/html; charset=utf-8".to_string() } else { media };
            let mut resp = reply(StatusCode::OK, "text/plain", body);
            if let Ok(v) = http::HeaderValue::from_str(&content_type) {
                resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            resp
        }
        Some(Shown { body: Err(note), .. }) => {
            reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from(format!("{note}\n")))
        }
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"no such page; see /pages/preview\n"),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}
