//! Unit tests of `cache`.

use super::*;

fn key(path: &str) -> CacheKey {
    CacheKey { policies: 1, host: "h.example".into(), path_and_query: path.into(), format: 0 }
}

fn cache() -> (ErrorCache, crate::table::ResolvedPolicy) {
    let metrics = CacheMetrics::register(&prometheus::Registry::new()).unwrap();
    let spec = "errorResponses:\n- {codes: ['404'], errorCachingMinTTLSeconds: 30}\n";
    let policy = crate::fixtures::resolved_policy("ns", "p", spec);
    (ErrorCache::new(1 << 20, Arc::new(SystemClock), metrics), policy)
}

async fn store(c: &ErrorCache, owner: &ObjectKey, path: &str) {
    let e = c.entry(
        StatusCode::NOT_FOUND,
        &HeaderMap::new(),
        Bytes::new(),
        None,
        owner.clone(),
        None,
        Duration::from_secs(60),
    );
    c.insert(key(path), e).await;
}

#[test]
fn the_filter_counts_and_never_wraps() {
    let m = MaybeKeys::new();
    let fp = m.fingerprint(&key("/a"));
    assert!(!m.may_contain(fp));
    m.add(fp);
    m.add(fp);
    m.remove(fp);
    assert!(m.may_contain(fp), "one of two counts left");
    m.remove(fp);
    m.remove(fp);
    assert!(!m.may_contain(fp));
    m.add(fp);
    assert!(m.may_contain(fp), "a stray removal did not wrap the counter");
}

#[tokio::test]
async fn stored_keys_are_found_and_removed_keys_leave_the_filter() {
    let (c, owner) = cache();
    assert!(matches!(c.lookup(&key("/a"), &owner, None).await, CacheLookup::Miss { coalesce: None }));
    store(&c, &owner.key, "/a").await;
    // Replacing an entry keeps it findable: the old value's removal lowers one count only.
    store(&c, &owner.key, "/a").await;
    c.entries.run_pending_tasks().await;
    c.recent.run_pending_tasks();
    assert!(matches!(c.lookup(&key("/a"), &owner, None).await, CacheLookup::Hit(_)));
    assert!(matches!(c.lookup(&key("/b"), &owner, None).await, CacheLookup::Miss { coalesce: None }));
    // The policy's own counters (handles kept on the policy) are the exported series.
    let count = |m: &prometheus::IntCounterVec| m.with_label_values(&["ns", "p"]).get();
    assert_eq!((count(&c.metrics.hits), count(&c.metrics.misses)), (1, 2));

    let purge = Purge { policy: None, host: None, prefix: Some("/a".into()) };
    assert_eq!(c.purge(&purge).await, 1);
    c.entries.run_pending_tasks().await;
    // Still a recent error: misses on it coalesce.
    assert!(matches!(c.lookup(&key("/a"), &owner, None).await, CacheLookup::Miss { coalesce: Some(0) }));
    c.recent.invalidate_all();
    c.recent.run_pending_tasks();
    let fp = c.maybe.fingerprint(&key("/a"));
    assert!(!c.maybe.may_contain(fp), "every removal was counted");
}
