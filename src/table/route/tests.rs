//! Unit tests of `route`.

use super::normalize_path;

#[test]
fn paths_are_normalised_the_same_for_matching_and_forwarding() {
    for (raw, want) in [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/../b", "/b"),
        ("/a/./b/", "/a/b/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/a/%2e%2e/b", "/b"),
        ("/a/%2E%2e/b", "/b"),
        ("/a/.%2e", "/"),
        ("//a///b", "/a/b"),
        ("/a%2Fb/../c", "/c"),
        ("/a%2fb", "/a%2Fb"),
        ("/%7Euser/%41", "/~user/A"),
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/public/..%2Fadmin", "/public/..%2Fadmin"),
        ("/%5c..%5cadmin", "/%5C..%5Cadmin"),
        ("*", "*"),
    ] {
        assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
    }
    assert!(matches!(normalize_path("/plain/path"), Ok(std::borrow::Cow::Borrowed(_))));
    // A stray % could pair with a decoded character into a new escape: rejected.
    for raw in ["/100%", "/a%zz", "/a%2", "/%%32e%%32e/admin", "/wild/%e%32e"] {
        assert_eq!(normalize_path(raw), Err(super::InvalidPath), "{raw}");
    }
}

use super::*;

#[test]
fn prefix_keys_ignore_trailing_slashes() {
    assert_eq!(prefix_key("/"), "/");
    assert_eq!(prefix_key("/foo/"), "/foo");
    assert_eq!(prefix_key("/foo"), "/foo");
    assert_eq!(prefix_key("//"), "/");
}

#[test]
fn hosts_are_normalised() {
    assert_eq!(normalize_host("Foo.Example.com:8080"), "foo.example.com");
    assert_eq!(normalize_host("example.com."), "example.com");
    assert_eq!(normalize_host("[::1]:80"), "::1");
    assert_eq!(normalize_host("localhost"), "localhost");
}

#[test]
fn wildcard_suffix_is_one_label() {
    assert_eq!(wildcard_suffix("a.example.com"), Some("example.com"));
    assert_eq!(wildcard_suffix("example"), None);
    assert_eq!(wildcard_suffix("a."), None);
}
