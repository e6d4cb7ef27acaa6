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
    for (name, value) in upstream_fields(&mut h, Some(&host), &conn, &id, false).as_slice() {
        h.insert((*name).clone(), (*value).clone());
    }
    assert_eq!(h[&X_FORWARDED_FOR], "192.0.2.7");
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    assert_eq!(h[&X_FORWARDED_HOST], "shop.example.com");
    assert_eq!(h[header::HOST], "shop.example.com");
    assert_eq!(h[header::COOKIE], "a=1; b=2");
}
