//! Page and header templates: `{{status}}`, `{{request_id}}`, `{{host}}`, `{{path}}`,
//! `{{url}}`, parsed when the table is built and rendered with escaping chosen by the page's
//! content type (or, in a `setHeaders` value, percent-encoding), so a request value can never
//! become markup, JSON structure, or a new header line.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// A value a template can insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// The original error status code.
    Status,
    /// The request id (`X-Request-ID`).
    RequestId,
    /// The request host.
    Host,
    /// The request path.
    Path,
    /// The whole request URL as the client asked for it: `scheme://host/path?query`.
    Url,
}

impl Var {
    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "status" => Some(Var::Status),
            "request_id" => Some(Var::RequestId),
            "host" => Some(Var::Host),
            "path" => Some(Var::Path),
            "url" => Some(Var::Url),
            _ => None,
        }
    }
}

/// How inserted values are escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// HTML/XML text and attribute context.
    Html,
    /// Inside a JSON string literal.
    Json,
    /// Plain text: control characters are dropped.
    Text,
    /// A header value (`setHeaders`): percent-encoded as a URI component (RFC 3986: all but
    /// `A-Z a-z 0-9 - . _ ~`), so it is safe inside a URL's query and can never hold CR, LF or
    /// a control character.
    Header,
}

impl Escape {
    /// The escaping for a content type.
    pub fn for_content_type(content_type: &str) -> Self {
        let ct = content_type.to_ascii_lowercase();
        if ct.contains("json") {
            Escape::Json
        } else if ct.contains("html") || ct.contains("xml") {
            Escape::Html
        } else {
            Escape::Text
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(Bytes),
    Var(Var),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    escape: Escape,
    /// The whole body when there is no variable: serving it is a reference-count clone.
    fixed: Option<Bytes>,
}

/// A template that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{name}}` with a name erratum does not know.
    #[error("unknown template variable {{{{{0}}}}} (known: status, request_id, host, path, url)")]
    UnknownVar(String),
    /// `{{` without `}}`.
    #[error("unclosed {{{{ at byte {0}")]
    Unclosed(usize),
    /// A request value outside a string literal of a JSON page: escaping cannot keep it from
    /// adding JSON structure there.
    #[error("{{{{{0}}}}} must be inside a JSON string (\"...\") in a JSON page")]
    OutsideJsonString(Var),
}

/// What a rendered template may insert.
#[derive(Clone, Copy, Debug)]
pub struct Values<'a> {
    /// Original status code.
    pub status: u16,
    /// Request id.
    pub request_id: &'a str,
    /// Request host.
    pub host: &'a str,
    /// Request path.
    pub path: &'a str,
    /// `https` or `http`, as the client used.
    pub scheme: &'a str,
    /// The request's query, as sent.
    pub query: Option<&'a str>,
}

impl Values<'static> {
    /// A sample request, `GET https://www.example.com/some/page?q=preview`: what the admin's
    /// page preview renders, and what a header template is checked with at build.
    pub const fn sample(status: u16) -> Self {
        Values {
            status,
            request_id: "3f2a9c1e-preview",
            host: "www.example.com",
            path: "/some/page",
            scheme: "https",
            query: Some("q=preview"),
        }
    }
}

impl Template {
    /// Parses `text`; values are escaped with `escape` when rendered.
    pub fn parse(text: &str, escape: Escape) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        // JSON: whether the literal text so far leaves us inside a string literal.
        let mut in_string = false;
        let mut escaped = false;
        let mut scan = |lit: &str| {
            for c in lit.bytes() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = in_string,
                    (false, b'"') => in_string = !in_string,
                    _ => {}
                }
            }
            in_string
        };
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start + 2..].find("}}") else {
                return Err(TemplateError::Unclosed(offset + start));
            };
            let name = &rest[start + 2..start + 2 + len];
            let var = Var::parse(name).ok_or_else(|| TemplateError::UnknownVar(name.trim().to_string()))?;
            // The status is a number erratum writes, never request data: allowed anywhere.
            if escape == Escape::Json && !scan(&rest[..start]) && var != Var::Status {
                return Err(TemplateError::OutsideJsonString(var));
            }
            if start > 0 {
                parts.push(Part::Lit(Bytes::copy_from_slice(&rest.as_bytes()[..start])));
            }
            parts.push(Part::Var(var));
            let consumed = start + 2 + len + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(Bytes::copy_from_slice(rest.as_bytes())));
        }
        let fixed = match parts.as_slice() {
            [] => Some(Bytes::new()),
            [Part::Lit(b)] => Some(b.clone()),
            _ => None,
        };
        Ok(Self { parts, escape, fixed })
    }

    /// Whether rendering needs request values.
    pub fn is_fixed(&self) -> bool {
        self.fixed.is_some()
    }

    /// Length of the body without variables (for status reporting).
    pub fn literal_len(&self) -> usize {
        self.parts.iter().map(|p| if let Part::Lit(b) = p { b.len() } else { 0 }).sum()
    }

    /// Renders with escaped values.
    pub fn render(&self, values: &Values<'_>) -> Bytes {
        if let Some(b) = &self.fixed {
            return b.clone();
        }
        let mut out = BytesMut::with_capacity(self.literal_len() + 128);
        for part in &self.parts {
            match part {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Var(Var::Status) => out.put_slice(values.status.to_string().as_bytes()),
                Part::Var(Var::RequestId) => escape_into(&mut out, values.request_id, self.escape),
                Part::Var(Var::Host) => escape_into(&mut out, values.host, self.escape),
                Part::Var(Var::Path) => escape_into(&mut out, values.path, self.escape),
                Part::Var(Var::Url) => {
                    let query = values.query.map(|q| format!("?{q}")).unwrap_or_default();
                    let url = format!("{}://{}{}{query}", values.scheme, values.host, values.path);
                    escape_into(&mut out, &url, self.escape)
                }
            }
        }
        out.freeze()
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Var::Status => "status",
            Var::RequestId => "request_id",
            Var::Host => "host",
            Var::Path => "path",
            Var::Url => "url",
        })
    }
}

/// What a URI component escapes: everything but RFC 3986's unreserved characters.
const URI_COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Escapes `value` for `escape` into `out`.
pub fn escape_into(out: &mut BytesMut, value: &str, escape: Escape) {
    if escape == Escape::Header {
        out.extend(percent_encoding::utf8_percent_encode(value, URI_COMPONENT).flat_map(str::bytes));
        return;
    }
    for c in value.chars() {
        match (escape, c) {
            (Escape::Html, '&') => out.put_slice(b"&amp;"),
            (Escape::Html, '<') => out.put_slice(b"&lt;"),
            (Escape::Html, '>') => out.put_slice(b"&gt;"),
            (Escape::Html, '"') => out.put_slice(b"&quot;"),
            (Escape::Html, '\'') => out.put_slice(b"&#39;"),
            (Escape::Json, '"') => out.put_slice(b"\\\""),
            (Escape::Json, '\\') => out.put_slice(b"\\\\"),
            // Also escaped so a JSON body embedded in HTML cannot close a <script>.
            (Escape::Json, '<') => out.put_slice(b"\\u003c"),
            (Escape::Json, '>') => out.put_slice(b"\\u003e"),
            (Escape::Json, '&') => out.put_slice(b"\\u0026"),
            (Escape::Json, '\u{2028}') => out.put_slice(b"\\u2028"),
            (Escape::Json, '\u{2029}') => out.put_slice(b"\\u2029"),
            (Escape::Json, c) if c.is_control() => out.put_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            (_, c) if c.is_control() => {}
            (_, c) => {
                let mut buf = [0u8; 4];
                out.put_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests;
