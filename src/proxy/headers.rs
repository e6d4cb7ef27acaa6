//! Header edits on the way through: the request id, hop-by-hop fields, and the forwarded
//! fields erratum sets on every request it sends upstream.
//!
//! Data flow: [`admit`](super::admit) takes the request id; [`forward`](super::forward) calls
//! [`upstream_fields`] before the exchange and [`strip_hop_by_hop`] runs on every upstream
//! response [`respond`](super::respond) passes on. Pure functions on header maps.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::listener::ConnInfo;

/// `X-Request-ID`: kept when the client sends a sane one, generated otherwise.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(super) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Longest client-sent request id that is kept.
const MAX_REQUEST_ID_LEN: usize = 200;

/// The request id in effect: the client's when it is sane (printable ASCII, at most 200
/// bytes), else 32 fresh hex digits.
#[inline]
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        let b = id.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID_LEN && b.iter().all(|c| c.is_ascii_graphic()) {
            return id.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (pair, byte) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    // Hex digits are always a valid header value; the fallback only keeps this total.
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a protocol upgrade (`Upgrade` named in `Connection`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy; with `keep_upgrade` the
/// `Upgrade` handshake is kept so WebSocket and friends pass through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most requests carry none of these, and a remove is a
    // hash and a probe per name.
    let (mut connection, mut fixed, mut upgrade) = (false, false, false);
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::UPGRADE {
            upgrade = true;
        } else if HOP_BY_HOP.contains(name) {
            fixed = true;
        }
    }
    if connection {
        // Vec::new does not allocate: only a Connection header naming other headers does.
        let mut listed: Vec<HeaderName> = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            if token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive") {
                continue; // not header names (keep-alive is removed below anyway)
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                listed.push(name);
            }
        }
        for name in listed {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    if fixed {
        for name in HOP_BY_HOP.iter() {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// Hop-by-hop headers besides `Connection` and `Upgrade` (RFC 9110 §7.6.1), never forwarded.
static HOP_BY_HOP: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

static HTTP: HeaderValue = HeaderValue::from_static("http");
static PORT_80: HeaderValue = HeaderValue::from_static("80");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The fields erratum sets on a request going upstream, replacing any of the same name the
/// client sent: without a configured list of trusted proxies a client-sent X-Forwarded-For is
/// a spoofing vector. `Host` is among them only when the request has none (HTTP/2 sends the
/// host as `:authority`). Borrowed from the request's context: no copy per request.
fn forwarded_fields<'a>(
    host: Option<&'a HeaderValue>,
    add_host: bool,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
    chain: Option<&'a ClientChain>,
    https_port: &'a HeaderValue,
) -> Forwarded<'a> {
    let mut fields = Forwarded::default();
    if add_host && let Some(h) = host {
        fields.push(&header::HOST, h);
    }
    let (forwarded_for, client) = match chain {
        Some(c) => (&c.forwarded_for, &c.client_ip),
        None => (&conn.client_ip, &conn.client_ip),
    };
    fields.push(&X_FORWARDED_FOR, forwarded_for);
    fields.push(&X_REAL_IP, client);
    if !chain.is_some_and(|c| c.keep_proto) {
        fields.push(&X_FORWARDED_PROTO, if conn.tls { &HTTPS } else { &HTTP });
    }
    if let Some(h) = host
        && !chain.is_some_and(|c| c.keep_host)
    {
        fields.push(&X_FORWARDED_HOST, h);
    }
    if !chain.is_some_and(|c| c.keep_port) {
        // The public port (80, or `--https-port` over TLS), not the listener's own.
        fields.push(&X_FORWARDED_PORT, if conn.tls { https_port } else { &PORT_80 });
    }
    fields.push(&X_REQUEST_ID, request_id);
    fields
}

/// Up to seven borrowed header fields, on the stack.
pub struct Forwarded<'a> {
    fields: [(&'a HeaderName, &'a HeaderValue); 7],
    len: usize,
}

impl Default for Forwarded<'_> {
    fn default() -> Self {
        Self { fields: [(&header::HOST, &HTTP); 7], len: 0 }
    }
}

impl<'a> Forwarded<'a> {
    fn push(&mut self, name: &'a HeaderName, value: &'a HeaderValue) {
        self.fields[self.len] = (name, value);
        self.len += 1;
    }

    /// The fields set so far.
    pub fn as_slice(&self) -> &[(&'a HeaderName, &'a HeaderValue)] {
        &self.fields[..self.len]
    }
}

/// What goes upstream besides the request's own fields (`https_port` is what
/// `X-Forwarded-Port` says for a TLS connection): edits `headers` only where they must
/// change (hop-by-hop fields removed, split cookies joined; most requests have neither) and
/// returns the `forwarded_fields`, which the upstream client sets as it sends (erratum's own
/// exchange writes them with the head: no header-map insert or value clone per request).
pub fn upstream_fields<'a>(
    headers: &mut HeaderMap,
    host: Option<&'a HeaderValue>,
    conn: &'a ConnInfo,
    request_id: &'a HeaderValue,
    upgrade: bool,
    chain: Option<&'a ClientChain>,
    https_port: &'a HeaderValue,
) -> Forwarded<'a> {
    strip_hop_by_hop(headers, upgrade);
    // HTTP/2 clients may split cookies (RFC 9113 §8.2.3); HTTP/1.1 upstreams need one.
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, v);
        }
    }
    forwarded_fields(host, !headers.contains_key(header::HOST), conn, request_id, chain, https_port)
}

/// Whether `ip` is one of the `--trusted-proxies`.
pub fn is_trusted(trusted: &[ipnet::IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// What a trusted peer (`--trusted-proxies`) says about the client: only made for requests
/// from such a peer.
#[derive(Debug)]
pub struct ClientChain {
    /// `X-Forwarded-For` to send upstream: the peer's chain with the peer appended.
    pub forwarded_for: HeaderValue,
    /// The client: the right-most address of the chain that is not a trusted proxy.
    pub client_ip: HeaderValue,
    /// The peer sent `X-Forwarded-Proto`: it is kept, not replaced.
    pub keep_proto: bool,
    /// The peer sent `X-Forwarded-Host`: it is kept, not replaced.
    pub keep_host: bool,
    /// The peer sent `X-Forwarded-Port`: it is kept, not replaced.
    pub keep_port: bool,
}

impl ClientChain {
    /// Reads the forwarded fields of a request from a trusted peer. Walking the
    /// `X-Forwarded-For` chain from the right, trusted addresses are skipped; the first
    /// untrusted one is the client. An entry that is not an address ends the walk at the
    /// last good one (garbage never becomes the client); when every entry is trusted the
    /// left-most is the client.
    pub fn of(headers: &HeaderMap, conn: &ConnInfo, trusted: &[ipnet::IpNet]) -> Self {
        let keep_proto = headers.contains_key(&X_FORWARDED_PROTO);
        let keep_host = headers.contains_key(&X_FORWARDED_HOST);
        let keep_port = headers.contains_key(&X_FORWARDED_PORT);
        let sent = headers.get_all(&X_FORWARDED_FOR);
        if sent.iter().next().is_none() {
            // No chain: the peer is the client; nothing to read, nothing to allocate.
            let ip = conn.client_ip.clone();
            return Self { forwarded_for: ip.clone(), client_ip: ip, keep_proto, keep_host, keep_port };
        }
        // The client as the chain names it (its bytes, no formatting), else the peer.
        let mut client: Option<HeaderValue> = None;
        'walk: for value in sent.iter().rev() {
            for entry in value.as_bytes().rsplit(|&b| b == b',') {
                let entry = entry.trim_ascii();
                let Some((ip, bare)) = address_of(entry) else { break 'walk };
                client = if bare {
                    HeaderValue::from_bytes(entry).ok()
                } else {
                    HeaderValue::try_from(ip.to_string()).ok()
                };
                if !is_trusted(trusted, ip) {
                    break 'walk;
                }
            }
        }
        let mut chain = Vec::with_capacity(64);
        for value in sent.iter() {
            chain.extend_from_slice(value.as_bytes());
            chain.extend_from_slice(b", ");
        }
        chain.extend_from_slice(conn.client_ip.as_bytes());
        Self {
            forwarded_for: HeaderValue::from_maybe_shared(bytes::Bytes::from(chain))
                .unwrap_or_else(|_| conn.client_ip.clone()),
            client_ip: client.unwrap_or_else(|| conn.client_ip.clone()),
            keep_proto,
            keep_host,
            keep_port,
        }
    }
}

/// Whether a request arrived over HTTPS as far as erratum can believe: its own connection is
/// TLS, or a trusted peer (TLS ended at a load balancer) says `X-Forwarded-Proto: https`.
#[inline]
pub fn arrived_over_https(headers: &HeaderMap, conn: &ConnInfo) -> bool {
    conn.tls
        || (conn.trusted
            && headers.get(&X_FORWARDED_PROTO).is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https")))
}

/// The address of an `X-Forwarded-For` entry — `192.0.2.1`, `2001:db8::1`, or either with a
/// port (`192.0.2.1:443`, `[2001:db8::1]:443`) — and whether the entry is the bare address.
fn address_of(entry: &[u8]) -> Option<(IpAddr, bool)> {
    let entry = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some((ip, true));
    }
    entry.parse::<std::net::SocketAddr>().ok().map(|a| (a.ip(), false))
}

#[cfg(test)]
mod tests;
