//! The PROXY protocol (HAProxy's, v1 text and v2 binary) on the listeners: `--proxy-protocol`,
//! as cloud load balancers send it, so the client address survives a TCP load balancer.
//!
//! Data flow: [`listener`](super::listener) accepts a connection -> [`read`] takes the header
//! off the front of the stream (bounded in time and size) -> the connection's
//! [`ConnInfo`](super::ConnInfo) is made with the client address it names, and the bytes read
//! past the header go first to TLS or HTTP. Parsing is the `ppp` crate's; this module only
//! reads, bounds and classifies.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest header accepted: a v1 header is at most 107 bytes; v2 headers carry TLVs (AWS,
/// GCP and Azure add a few dozen bytes), 4 KiB is far beyond any load balancer's.
pub const MAX_HEADER_BYTES: usize = 4096;

/// Why a connection's PROXY header was refused (the connection is closed, never answered:
/// without the header there is no client to answer).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing complete within the time allowed.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Not a PROXY header (a client connected directly?), or a broken one.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// Longer than [`MAX_HEADER_BYTES`].
    #[error("PROXY protocol header over {MAX_HEADER_BYTES} bytes")]
    TooLarge,
    /// The peer closed (or the read failed) before the header was complete.
    #[error("connection closed before the PROXY protocol header was complete")]
    Closed,
}

impl Error {
    /// The `reason` label of `erratum_proxy_protocol_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Timeout(_) => "timeout",
            Error::Malformed(_) => "malformed",
            Error::TooLarge => "too_large",
            Error::Closed => "closed",
        }
    }
}

/// What a header said.
#[derive(Debug)]
pub struct Header {
    /// The client address, when the header names one (`None` for v1 `UNKNOWN` and v2
    /// `LOCAL`, the load balancer's own health checks: the peer stays the client).
    pub client: Option<SocketAddr>,
    /// Bytes read past the header: the start of the TLS or HTTP stream.
    pub rest: Bytes,
}

/// Reads the PROXY header at the start of `io` within `timeout`.
pub async fn read<IO: AsyncRead + Unpin>(io: &mut IO, timeout: Duration) -> Result<Header, Error> {
    tokio::time::timeout(timeout, read_header(io)).await.map_err(|_| Error::Timeout(timeout))?
}

async fn read_header<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<Header, Error> {
    // Load balancers send the header in one segment, usually with the first bytes behind it.
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let n = io.read_buf(&mut buf).await.map_err(|_| Error::Closed)?;
        if n == 0 {
            return Err(Error::Closed);
        }
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() >= MAX_HEADER_BYTES {
                return Err(Error::TooLarge);
            }
            continue;
        }
        let (len, client) = match parsed {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_client(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_client(&h)),
            HeaderResult::V1(Err(e)) => return Err(Error::Malformed(e.to_string())),
            HeaderResult::V2(Err(e)) => return Err(Error::Malformed(e.to_string())),
        };
        if len > MAX_HEADER_BYTES {
            return Err(Error::TooLarge);
        }
        let rest = buf.split_off(len).freeze();
        return Ok(Header { client, rest });
    }
}

fn v1_client(addresses: &v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    }
}

fn v2_client(header: &v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: &[u8]) -> Result<Header, Error> {
        let mut io = input;
        read(&mut io, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn v1_headers_name_the_client_and_keep_what_follows() {
        let h = parse(b"PROXY TCP4 203.0.113.9 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(h.client, Some("203.0.113.9:51234".parse().unwrap()));
        assert_eq!(&h.rest[..], b"GET / HTTP/1.1\r\n");
        let h = parse(b"PROXY TCP6 2001:db8::9 2001:db8::1 51234 443\r\n").await.unwrap();
        assert_eq!(h.client, Some("[2001:db8::9]:51234".parse().unwrap()));
        assert!(parse(b"PROXY UNKNOWN\r\nX").await.unwrap().client.is_none());
    }

    #[tokio::test]
    async fn v2_headers_with_tlvs_and_local_health_checks() {
        let mut input = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        input.extend([0x21, 0x11, 0, 12 + 7]); // PROXY, TCP over IPv4, 12 address bytes + a TLV
        input.extend([198, 51, 100, 7, 10, 0, 0, 1, 0xC8, 0x1C, 1, 187]);
        input.extend([0x04, 0, 4, b'n', b'o', b'o', b'p']); // PP2_TYPE_NOOP
        input.extend(b"rest");
        let h = parse(&input).await.unwrap();
        assert_eq!(h.client, Some("198.51.100.7:51228".parse().unwrap()));
        assert_eq!(&h.rest[..], b"rest");
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert!(parse(&local).await.unwrap().client.is_none());
    }

    #[tokio::test]
    async fn bad_headers_are_refused_with_a_reason() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap_err().reason(), "malformed");
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n").await.unwrap_err().reason(), "malformed");
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4").await.unwrap_err().reason(), "closed");
        let mut huge = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        huge.extend([0x21, 0x11, 0xFF, 0xFF]);
        huge.extend(vec![0u8; 8000]);
        assert_eq!(parse(&huge).await.unwrap_err().reason(), "too_large");
        let (_client, mut server) = tokio::io::duplex(64);
        let slow = read(&mut server, Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(slow.reason(), "timeout");
    }
}
