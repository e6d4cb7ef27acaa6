//! erratum's own pages: what a status looks like when no policy gives it a page. Small,
//! self-contained (no external asset, no script), responsive, dark-mode aware and accessible
//! (`lang`, a title, a heading, contrast above WCAG AA in both schemes), with the status, a
//! sentence a person understands, and the request id to quote to support.
//!
//! Data flow: `decide()` (and the few answers made before a decision can be) calls
//! [`builtin`]; the admin's `/pages/preview` shows them beside the policies' pages.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{NOSNIFF, Reply};
use crate::table::accept;
use crate::table::template::{Escape, escape_into};

/// The page's head and style: the same bytes for every status.
const HEAD: &str = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"color-scheme\" content=\"light dark\"><meta name=\"robots\" content=\"noindex\"><title>";
const STYLE: &str = "</title><style>\
:root{--bg:#f6f7f9;--fg:#1f2328;--muted:#57606a;--card:#ffffff;--line:#d0d7de}\
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9ea7b3;--card:#161b22;--line:#30363d}}\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:grid;place-items:center;padding:1.5rem;background:var(--bg);color:var(--fg);\
font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",sans-serif}\
main{width:100%;max-width:34rem;background:var(--card);border:1px solid var(--line);border-radius:12px;padding:2rem}\
h1{margin:0 0 .75rem;font-size:1.5rem;line-height:1.25}\
p{margin:0 0 1rem}\
.meta{margin:0;padding-top:1rem;border-top:1px solid var(--line);color:var(--muted);font-size:.875rem}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}\
</style></head>\n<body><main>";

/// A sentence for people: what happened and what they can do.
pub fn sentence(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request could not be understood.",
        401 => "You need to sign in to see this page.",
        403 => "You do not have access to this page.",
        404 => "The page you are looking for does not exist or has moved.",
        405 => "This page does not accept that kind of request.",
        408 => "The request took too long to arrive. Please try again.",
        413 => "The request is larger than this site accepts.",
        414 => "The address is longer than this site accepts.",
        429 => "There have been too many requests. Please wait a moment and try again.",
        431 => "The request headers are larger than this site accepts.",
        500 => "Something went wrong on our side. Please try again in a moment.",
        502 => "The service behind this site did not answer properly. Please try again in a moment.",
        503 => "The service is temporarily unavailable. Please try again in a moment.",
        504 => "The service took too long to answer. Please try again in a moment.",
        _ if status.is_client_error() => "The request could not be completed.",
        _ => "Something went wrong. Please try again in a moment.",
    }
}

/// erratum's own page for a status: HTML, or RFC 9457 `application/problem+json` when the
/// client prefers JSON. Nothing from the request is reflected but the request id, escaped.
pub fn builtin(status: StatusCode, accept: Option<&str>, request_id: &str) -> Reply {
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    let json = accept::choose(accept, ["text/html", "application/problem+json", "application/json"]) > 0;
    let (content_type, body) = if json {
        let mut out = BytesMut::with_capacity(128);
        out.extend_from_slice(
            format!("{{\"type\":\"about:blank\",\"title\":\"{reason}\",\"status\":{code},\"requestId\":\"")
                .as_bytes(),
        );
        escape_into(&mut out, request_id, Escape::Json);
        out.extend_from_slice(b"\"}\n");
        ("application/problem+json", out.freeze())
    } else {
        let mut out = BytesMut::with_capacity(HEAD.len() + STYLE.len() + 320);
        out.extend_from_slice(HEAD.as_bytes());
        out.extend_from_slice(format!("{code} {reason}").as_bytes());
        out.extend_from_slice(STYLE.as_bytes());
        out.extend_from_slice(format!("<h1>{code} {reason}</h1><p>{}</p>", sentence(status)).as_bytes());
        if !request_id.is_empty() {
            out.extend_from_slice(b"<p class=\"meta\">Request ID <code>");
            escape_into(&mut out, request_id, Escape::Html);
            out.extend_from_slice(b"</code></p>");
        }
        out.extend_from_slice(b"</main></body></html>\n");
        ("text/html; charset=utf-8", out.freeze())
    };
    reply(status, content_type, body)
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Reply {
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    Reply { status, headers, body, fetch: None }
}
