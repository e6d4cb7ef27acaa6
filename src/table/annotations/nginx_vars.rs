//! nginx variables in annotation values (`$host`, `${request_uri}`), as ingress-nginx users
//! write them in `auth-url` and `auth-signin`: split once at build time into text and the
//! variables erratum fills in per request; any other variable is an error at build time,
//! never a wrong value at run time.
//!
//! Data flow: [`auth`](super::auth) parses with [`NginxString::parse`]; the proxy fills in
//! with [`NginxString::render`] and the request's [`Vars`]. Pure.

/// The request values nginx variables in `auth-url` and `auth-signin` may name.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// `$host`: the host, without port, lower case.
    pub host: &'a str,
    /// `$http_host` (and ingress-nginx's `$best_http_host`): the `Host` field as sent.
    pub http_host: &'a str,
    /// `$scheme` (and `$pass_access_scheme`): `http` or `https`.
    pub scheme: &'a str,
    /// `$request_uri`: the path and query as sent.
    pub request_uri: &'a str,
    /// `$request_method`.
    pub method: &'a str,
    /// `$remote_addr`: the client address.
    pub remote_addr: &'a str,
}

impl Vars<'static> {
    /// Values that make any URL of [`NginxString`] parse if a real request's would.
    pub const SAMPLE: Vars<'static> = Vars {
        host: "example.com",
        http_host: "example.com",
        scheme: "https",
        request_uri: "/",
        method: "GET",
        remote_addr: "192.0.2.1",
    };
}

/// A string with nginx variables (`$host`, `${host}`), split once at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxString {
    /// As written.
    pub source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Host,
    HttpHost,
    Scheme,
    RequestUri,
    EscapedRequestUri,
    Method,
    RemoteAddr,
}

/// The variables [`NginxString`] knows, by name.
const VARIABLES: [(&str, Part); 9] = [
    ("host", Part::Host),
    ("http_host", Part::HttpHost),
    ("best_http_host", Part::HttpHost),
    ("scheme", Part::Scheme),
    ("pass_access_scheme", Part::Scheme),
    ("request_uri", Part::RequestUri),
    ("escaped_request_uri", Part::EscapedRequestUri),
    ("request_method", Part::Method),
    ("remote_addr", Part::RemoteAddr),
];

impl NginxString {
    /// Splits `s` at its variables; a variable erratum does not know is an error (the value
    /// would be wrong, and for authentication a wrong value fails closed).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('$') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, next) = match after.strip_prefix('{') {
                Some(braced) => match braced.find('}') {
                    Some(end) => (&braced[..end], &braced[end + 1..]),
                    None => return Err(format!("{s:?} has an unclosed ${{")),
                },
                None => {
                    let end =
                        after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            let Some((_, part)) = VARIABLES.iter().find(|(n, _)| *n == name) else {
                let known: Vec<_> = VARIABLES.iter().map(|(n, _)| format!("${n}")).collect();
                return Err(format!(
                    "{s:?} uses ${name}, which erratum does not fill in ({} are)",
                    known.join(", ")
                ));
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part.clone());
            rest = next;
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { source: s.to_string(), parts })
    }

    /// Whether the string has no variable (it can be used as it is).
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The string with the request's values.
    pub fn render(&self, v: &Vars<'_>) -> String {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Host => out.push_str(v.host),
                Part::HttpHost => out.push_str(v.http_host),
                Part::Scheme => out.push_str(v.scheme),
                Part::RequestUri => out.push_str(v.request_uri),
                Part::EscapedRequestUri => out.push_str(&escape(v.request_uri)),
                Part::Method => out.push_str(v.method),
                Part::RemoteAddr => out.push_str(v.remote_addr),
            }
        }
        out
    }
}

/// ingress-nginx's `$escaped_request_uri`: the URI percent-encoded for a query value.
pub fn escape(uri: &str) -> String {
    percent_encoding::utf8_percent_encode(uri, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_filled_in_and_unknown_ones_refused() {
        let vars = Vars {
            host: "app.example",
            http_host: "app.example:8443",
            scheme: "https",
            request_uri: "/a b?x=1",
            method: "POST",
            remote_addr: "203.0.113.7",
        };
        let s = NginxString::parse("${scheme}://${host}/x/$request_method/$remote_addr").unwrap();
        assert_eq!(s.render(&vars), "https://app.example/x/POST/203.0.113.7");
        let s =
            NginxString::parse("$pass_access_scheme://$best_http_host$request_uri?rd=$escaped_request_uri")
                .unwrap();
        assert_eq!(s.render(&vars), "https://app.example:8443/a b?x=1?rd=%2Fa%20b%3Fx%3D1");
        assert_eq!(NginxString::parse("http://a/b").unwrap().literal(), Some("http://a/b"));
        assert_eq!(s.literal(), None);
        assert!(NginxString::parse("http://a/${host").is_err());
        assert!(NginxString::parse("http://a/$cookie_x").unwrap_err().contains("$cookie_x"));
    }
}
