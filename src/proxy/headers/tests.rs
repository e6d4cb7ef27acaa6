//! Unit tests of the header edits.

use super::*;

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    strip_hop_by_hop(&mut h, false);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key(header::CONTENT_TYPE));
}

#[test]
fn upgrades_keep_their_handshake() {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert!(is_upgrade(&h));
    strip_hop_by_hop(&mut h, true);
    assert_eq!(h[header::UPGRADE], "websocket");
    assert_eq!(h[header::CONNECTION], "upgrade");
}

#[test]
fn request_ids_are_kept_or_generated() {
    let mut h = HeaderMap::new();
    h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
    assert_eq!(request_id(&h), "abc-123");
    h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
    let generated = request_id(&h);
    assert_eq!(generated.len(), 32);
    assert_ne!(generated, request_id(&HeaderMap::new()), "generated ids differ");
}

#[test]
fn forwarded_headers_are_set_not_trusted() {
    let mut h = HeaderMap::new();
    h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
    h.append(header::COOKIE, HeaderValue::from_static("a=1"));
    h.append(header::COOKIE, HeaderValue::from_static("b=2"));
    let conn = ConnInfo::new("192.0.2.7:5000".parse().unwrap(), true);
    let (host, id) = (HeaderValue::from_static("shop.example.com"), HeaderValue::from_static("id"));
    // As the upstream client applies them: the set fields replace the client's.
    for (name, value) in
        upstream_fields(&mut h, Some(&host), &conn, &id, false, None, &HeaderValue::from_static("443"))
            .as_slice()
    {
        h.insert((*name).clone(), (*value).clone());
    }
    assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.7");
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    assert_eq!(h[&X_FORWARDED_HOST], "shop.example.com");
    assert_eq!(h[header::HOST], "shop.example.com");
    assert_eq!(h[header::COOKIE], "a=1; b=2");
}

fn chain_of(xff: &[&str], peer: &str, trusted: &[&str]) -> ClientChain {
    let mut h = HeaderMap::new();
    for v in xff {
        h.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
    }
    let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
    let conn = ConnInfo::new(peer.parse().unwrap(), false).trusting(&trusted);
    assert!(conn.trusted, "the peer is trusted in these cases");
    ClientChain::of(&h, &conn, &trusted)
}

#[test]
fn the_client_is_the_right_most_untrusted_address() {
    let c = chain_of(&["203.0.113.9"], "10.0.0.2:4000", &["10.0.0.0/8"]);
    assert_eq!(c.client_ip, "203.0.113.9");
    assert_eq!(c.forwarded_for, "203.0.113.9, 10.0.0.2", "appended to, not replaced");
    // A client that spoofs the start of the chain does not become the client.
    let c = chain_of(&["6.6.6.6, 203.0.113.9", "10.1.1.1"], "10.0.0.2:4000", &["10.0.0.0/8"]);
    assert_eq!(c.client_ip, "203.0.113.9");
    assert_eq!(c.forwarded_for, "6.6.6.6, 203.0.113.9, 10.1.1.1, 10.0.0.2");
    // Every hop trusted: the left-most is the client.
    let c = chain_of(&["10.9.9.9, 10.1.1.1"], "10.0.0.2:4000", &["10.0.0.0/8"]);
    assert_eq!(c.client_ip, "10.9.9.9");
    // Garbage ends the walk at the last good address, never becoming the client.
    let c = chain_of(&["<script>, 10.1.1.1"], "10.0.0.2:4000", &["10.0.0.0/8"]);
    assert_eq!(c.client_ip, "10.1.1.1");
    // Ports and IPv6.
    let c = chain_of(&["[2001:db8::7]:443, 203.0.113.9:5000"], "[::1]:4000", &["::1/128", "203.0.113.0/24"]);
    assert_eq!(c.client_ip, "2001:db8::7");
    // No chain: the peer itself.
    let c = chain_of(&[], "10.0.0.2:4000", &["10.0.0.0/8"]);
    assert_eq!((c.client_ip.to_str().unwrap(), c.forwarded_for.to_str().unwrap()), ("10.0.0.2", "10.0.0.2"));
}

#[test]
fn ipv4_peers_on_a_dual_stack_listener_match_ipv4_ranges() {
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
    assert!(is_trusted(&trusted, "::ffff:10.0.0.2".parse().unwrap()));
    assert!(!is_trusted(&trusted, "::ffff:11.0.0.2".parse().unwrap()));
    assert!(!is_trusted(&[], "10.0.0.2".parse().unwrap()));
}
