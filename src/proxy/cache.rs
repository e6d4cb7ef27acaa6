//! The error cache: origin error responses kept for their Error Caching TTL (docs/error-semantics.md
//! §B, §C, §J), built on moka.
//!
//! Data flow: the service computes a [`CacheKey`] for a GET/HEAD request covered by an
//! Enforce policy, looks it up, and on a miss forwards upstream; a cacheable error is stored
//! here *as the origin sent it* (status, headers, body) and the page substitution runs when
//! serving, so a page edit needs no purge and a failed page fetch never poisons an entry
//! (rule 47). Bounded by bytes (moka weigher), expiring per entry, coalescing concurrent
//! misses for keys that were errors recently, purged by policy/host/prefix, and flushed for a
//! Service whose EndpointSlices regain ready endpoints.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use moka::notification::RemovalCause;
use tokio_util::sync::CancellationToken;

use super::intercept::ProxyError;
use crate::metrics::CacheMetrics;
use crate::table::ObjectKey;
use crate::table::TableReader;

/// Default `--error-cache-max-bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest error body cached; larger errors stream through uncached.
pub const MAX_ENTRY_BODY: usize = 64 * 1024;
/// Bytes charged per entry on top of its key, headers and body: moka's entry bookkeeping, the
/// `Arc`, the struct, and allocator rounding. Measured (see BENCHMARKS.md), so that the
/// `--error-cache-max-bytes` bound holds for real memory, not just payload bytes.
pub const ENTRY_OVERHEAD: u32 = 640;
/// Bytes a header costs in a `HeaderMap` besides its name and value (bucket, index, links).
const HEADER_OVERHEAD: usize = 128;
/// How long a key counts as "recently an error", which makes its misses coalesce.
pub const RECENT_ERROR_WINDOW: Duration = Duration::from_secs(120);
/// How often the maintenance task looks for a new table and refreshes the gauges.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(200);
/// Maintenance ticks between two passes over the rate limits (a minute).
const LIMITS_EVERY: u64 = 300;

// === Clock ===

/// Time source of the cache, injectable so tests advance time instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now (for `Expires`).
    fn system_now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    system_base: SystemTime,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self { base: Instant::now(), system_base: SystemTime::now(), offset: Mutex::new(Duration::ZERO) }
    }
}

impl ManualClock {
    /// Moves time forward.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
    fn offset(&self) -> Duration {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + self.offset()
    }
    fn system_now(&self) -> SystemTime {
        self.system_base + self.offset()
    }
}

// === Keys and entries ===

/// Everything that can change a cached error response. Nothing else is read to serve a hit,
/// so nothing unkeyed (X-Forwarded-Host, another Host, another policy) can poison it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Fingerprint of every policy that applies (uid + generation): an edit invalidates.
    pub policies: u64,
    /// Normalised host.
    pub host: String,
    /// Path and query as requested.
    pub path_and_query: String,
    /// The negotiated format class (0 HTML/default, 1 JSON).
    pub format: u8,
}

impl CacheKey {
    fn weight(&self) -> usize {
        // Two heap strings (with allocator rounding) and the key's own fields.
        self.host.len() + self.path_and_query.len() + 96
    }
}

/// Which keys may have an entry (in the cache or in the "recently an error" set): a counting
/// filter over key fingerprints, one counter per bucket, raised before every insert and
/// lowered by moka's removal notification (every removal cause, replacements included).
///
/// Most requests on a policy-covered route answer 200 and were never errors: for them the
/// filter's "no" ends the lookup without hashing the key into two moka caches (measured at
/// about 0.6 us per pass-through request). A "maybe" (a present key, or a bucket collision)
/// takes the full lookup, so the filter can only make lookups cheaper, never wrong. Written
/// here: the Bloom-filter crates are neither counting (removals) nor lock-free.
struct MaybeKeys {
    counts: Box<[AtomicU32]>,
    hasher: foldhash::fast::RandomState,
}

/// Counters of [`MaybeKeys`]: 256 KiB; with tens of thousands of cached keys most buckets fill
/// and lookups take the full path, as before the filter.
const FILTER_BUCKETS: usize = 1 << 16;

impl MaybeKeys {
    fn new() -> Self {
        Self {
            counts: (0..FILTER_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// A compact stand-in for a key: the filter's hash and the "recently an error" set's key.
    fn fingerprint(&self, key: &CacheKey) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hasher, key)
    }

    fn bucket(&self, fingerprint: u64) -> &AtomicU32 {
        // The modulo only picks a bucket; the fingerprint's low bits are as good as any.
        &self.counts[(fingerprint as usize) % FILTER_BUCKETS]
    }

    fn add(&self, fingerprint: u64) {
        self.bucket(fingerprint).fetch_add(1, Ordering::Relaxed);
    }

    fn remove(&self, fingerprint: u64) {
        // Saturating: a stray removal must not wrap a bucket to "maybe" forever.
        let _ =
            self.bucket(fingerprint).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
    }

    fn may_contain(&self, fingerprint: u64) -> bool {
        self.bucket(fingerprint).load(Ordering::Relaxed) > 0
    }
}

/// A cached origin error.
#[derive(Debug)]
pub struct CachedError {
    /// Origin status.
    pub status: StatusCode,
    /// Origin headers (end-to-end ones, without `Set-Cookie` and `Date`).
    pub headers: HeaderMap,
    /// Origin body.
    pub body: Bytes,
    /// For an erratum-made 502/504 (rule 41), the error to answer again.
    pub proxy_error: Option<ProxyError>,
    /// The policy that owns the entry (purge and metrics).
    pub owner: ObjectKey,
    /// The Service that answered (readiness flush).
    pub service: Option<ObjectKey>,
    /// When it was stored.
    pub stored_at: Instant,
    /// When it stops being served.
    pub expires_at: Instant,
    /// Its TTL.
    pub ttl: Duration,
    /// Identity of this entry, so concurrent misses on the same stale entry coalesce together.
    pub id: u64,
}

impl CachedError {
    fn weight(&self, key: &CacheKey) -> u32 {
        let headers: usize =
            self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + HEADER_OVERHEAD).sum();
        u32::try_from(key.weight() + headers + self.body.len())
            .unwrap_or(u32::MAX)
            .saturating_add(ENTRY_OVERHEAD)
    }
}

/// The leader's upstream answer was not a cacheable error; followers send their own requests.
#[derive(Debug)]
pub struct NotCacheable;

/// Result of a lookup.
#[derive(Debug)]
pub enum CacheLookup {
    /// A fresh entry.
    Hit(Arc<CachedError>),
    /// No fresh entry. `coalesce` is set when the key was an error recently: concurrent misses
    /// should share one upstream request ([`ErrorCache::flight`]).
    Miss {
        /// Flight marker: the stale entry's id, or 0.
        coalesce: Option<u64>,
    },
}

/// What `GET /cache` shows.
#[derive(Debug, serde::Serialize)]
pub struct CacheStats {
    /// Entries.
    pub entries: u64,
    /// Bytes charged.
    pub bytes: u64,
    /// The bound.
    pub max_bytes: u64,
    /// Hits since start.
    pub hits: u64,
    /// Misses since start.
    pub misses: u64,
    /// hits / (hits + misses).
    pub hit_ratio: f64,
}

/// A purge filter (`DELETE /cache?…`).
#[derive(Debug, Clone, Default)]
pub struct Purge {
    /// Entries owned by this policy.
    pub policy: Option<ObjectKey>,
    /// Entries for this host.
    pub host: Option<String>,
    /// Entries whose path starts with this prefix.
    pub prefix: Option<String>,
}

impl Purge {
    fn matches(&self, key: &CacheKey, entry: &CachedError) -> bool {
        self.policy.as_ref().is_none_or(|p| &entry.owner == p)
            && self.host.as_ref().is_none_or(|h| key.host.eq_ignore_ascii_case(h))
            && self.prefix.as_ref().is_none_or(|p| key.path_and_query.starts_with(p.as_str()))
    }
}

/// Per-entry expiry for moka's own bookkeeping (memory reclamation). Freshness is decided by
/// [`Clock`] in [`ErrorCache::lookup`], so tests can move time.
struct EntryExpiry;

impl moka::Expiry<CacheKey, Arc<CachedError>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        v: &Arc<CachedError>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(v.ttl + Duration::from_secs(1))
    }
}

/// The bounded error cache.
#[derive(Clone)]
pub struct ErrorCache {
    entries: moka::future::Cache<CacheKey, Arc<CachedError>>,
    flights: moka::future::Cache<(CacheKey, u64), Arc<CachedError>>,
    /// Fingerprints of keys that were errors recently (8 bytes each, not the whole key).
    recent: moka::sync::Cache<u64, ()>,
    maybe: Arc<MaybeKeys>,
    clock: Arc<dyn Clock>,
    metrics: CacheMetrics,
    max_bytes: u64,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
}

/// A policy's error-cache counters. Prometheus' own lookup hashes both label values on every
/// call; the proxy keeps these per table and route ([`RouteMetrics`](super::respond::RouteMetrics)).
#[derive(Debug)]
pub struct OwnerCounters {
    hits: prometheus::IntCounter,
    misses: prometheus::IntCounter,
}

impl fmt::Debug for ErrorCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorCache").field("max_bytes", &self.max_bytes).finish_non_exhaustive()
    }
}

impl ErrorCache {
    /// A cache bounded by `max_bytes`.
    pub fn new(max_bytes: u64, clock: Arc<dyn Clock>, metrics: CacheMetrics) -> Self {
        let evictions = metrics.evictions.clone();
        let maybe = Arc::new(MaybeKeys::new());
        let removed = maybe.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &CacheKey, v: &Arc<CachedError>| v.weight(k))
            .expire_after(EntryExpiry)
            .eviction_listener(move |k: Arc<CacheKey>, v: Arc<CachedError>, cause| {
                removed.remove(removed.fingerprint(&k));
                if cause == RemovalCause::Size {
                    evictions.with_label_values(&[v.owner.namespace.as_str(), v.owner.name.as_str()]).inc();
                }
            })
            .build();
        let flights =
            moka::future::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(5)).build();
        let removed = maybe.clone();
        let recent = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(RECENT_ERROR_WINDOW)
            .eviction_listener(move |fingerprint: Arc<u64>, (), _| removed.remove(*fingerprint))
            .build();
        Self {
            entries,
            flights,
            recent,
            maybe,
            clock,
            metrics,
            max_bytes,
            hits: Arc::new(AtomicU64::new(0)),
            misses: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The cache's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The hit and miss counters of `owner`.
    pub fn owner_counters(&self, owner: &crate::table::ResolvedPolicy) -> OwnerCounters {
        let labels = [owner.key.namespace.as_str(), owner.key.name.as_str()];
        OwnerCounters {
            hits: self.metrics.hits.with_label_values(&labels),
            misses: self.metrics.misses.with_label_values(&labels),
        }
    }

    /// Looks a key up, counting a hit or miss on `counters` (`owner`'s, made here when the
    /// caller has none).
    pub async fn lookup(
        &self,
        key: &CacheKey,
        owner: &crate::table::ResolvedPolicy,
        counters: Option<&OwnerCounters>,
    ) -> CacheLookup {
        let made;
        let counters = match counters {
            Some(c) => c,
            None => {
                made = self.owner_counters(owner);
                &made
            }
        };
        let fingerprint = self.maybe.fingerprint(key);
        // Boxed: moka's futures are large, and every request future that awaits one inline
        // grows by their size (hyper moves the whole request future into place per request).
        let maybe = self.maybe.may_contain(fingerprint);
        let found = if maybe { Box::pin(self.entries.get(key)).await } else { None };
        match found {
            Some(e) if self.clock.now() < e.expires_at => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                counters.hits.inc();
                CacheLookup::Hit(e)
            }
            stale => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                counters.misses.inc();
                // Coalesce only keys that were errors recently: a miss on a key that has
                // always answered 200 must not wait behind another request (docs/error-semantics.md §J).
                let coalesce = match stale {
                    Some(e) => Some(e.id),
                    None if maybe && self.recent.contains_key(&fingerprint) => Some(0),
                    None => None,
                };
                CacheLookup::Miss { coalesce }
            }
        }
    }

    /// Stores an entry.
    pub async fn insert(&self, key: CacheKey, entry: Arc<CachedError>) {
        // Counted before the inserts, so a lookup never misses a stored key; one count per
        // cache, each lowered by that cache's removal notification.
        let fingerprint = self.maybe.fingerprint(&key);
        self.maybe.add(fingerprint);
        self.recent.insert(fingerprint, ());
        self.maybe.add(fingerprint);
        Box::pin(self.entries.insert(key, entry)).await;
    }

    /// Runs `init` (one upstream request) once for every concurrent caller with the same key
    /// and marker; the others wait and share its cacheable result. `Err` means the result
    /// was not a cacheable error (or this caller did not lead): the caller sends its own request.
    pub async fn flight<F>(
        &self,
        key: &CacheKey,
        marker: u64,
        owner: &ObjectKey,
        init: F,
    ) -> Result<Arc<CachedError>, Arc<NotCacheable>>
    where
        F: Future<Output = Result<Arc<CachedError>, NotCacheable>>,
    {
        let led = std::sync::atomic::AtomicBool::new(false);
        let result = self
            .flights
            .try_get_with((key.clone(), marker), async {
                led.store(true, Ordering::Relaxed);
                init.await
            })
            .await;
        if !led.load(Ordering::Relaxed) && result.is_ok() {
            self.metrics.coalesced.with_label_values(&[owner.namespace.as_str(), owner.name.as_str()]).inc();
        }
        result
    }

    /// Builds an entry for an origin error that is to be cached.
    #[allow(clippy::too_many_arguments)]
    pub fn entry(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        proxy_error: Option<ProxyError>,
        owner: ObjectKey,
        service: Option<ObjectKey>,
        ttl: Duration,
    ) -> Arc<CachedError> {
        let mut kept = HeaderMap::new();
        for (name, value) in headers {
            if !matches!(
                name.as_str(),
                "set-cookie"
                    | "date"
                    | "age"
                    | "connection"
                    | "keep-alive"
                    | "transfer-encoding"
                    | "te"
                    | "trailer"
                    | "upgrade"
            ) {
                // Copy: a parsed header value is a slice of the connection's whole read buffer,
                // and keeping it would pin that buffer (kilobytes) for the entry's lifetime.
                if let Ok(v) = http::HeaderValue::from_bytes(value.as_bytes()) {
                    kept.append(name.clone(), v);
                }
            }
        }
        let now = self.clock.now();
        Arc::new(CachedError {
            status,
            headers: kept,
            // Same for the body: store exactly its bytes.
            body: Bytes::copy_from_slice(&body),
            proxy_error,
            owner,
            service,
            stored_at: now,
            expires_at: now + ttl,
            ttl,
            id: fastrand::u64(1..),
        })
    }

    /// Removes matching entries; returns how many.
    pub async fn purge(&self, filter: &Purge) -> usize {
        let doomed: Vec<(Arc<CacheKey>, Arc<CachedError>)> =
            self.entries.iter().filter(|(k, v)| filter.matches(k, v)).collect();
        for (k, v) in &doomed {
            self.entries.invalidate(&**k).await;
            self.metrics.purged.with_label_values(&[v.owner.namespace.as_str(), v.owner.name.as_str()]).inc();
        }
        doomed.len()
    }

    /// Drops the cached 502/503/504 of Services that just regained ready endpoints.
    pub async fn flush_services(&self, services: &HashSet<ObjectKey>) -> usize {
        let doomed: Vec<Arc<CacheKey>> = self
            .entries
            .iter()
            .filter(|(_, v)| {
                matches!(v.status.as_u16(), 502..=504)
                    && v.service.as_ref().is_some_and(|s| services.contains(s))
            })
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            self.entries.invalidate(&**k).await;
        }
        doomed.len()
    }

    /// Entry count, bytes and hit ratio.
    pub async fn stats(&self) -> CacheStats {
        self.entries.run_pending_tasks().await;
        let (hits, misses) = (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed));
        CacheStats {
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            max_bytes: self.max_bytes,
            hits,
            misses,
            hit_ratio: if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
        }
    }

    /// Starts the maintenance task: readiness flushes on new tables, gauges, moka housekeeping,
    /// and (once a minute) forgetting rate-limit state of clients whose budget is full again.
    pub fn spawn_maintenance(&self, table: TableReader, shutdown: CancellationToken) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut ticks: u64 = 0;
            let mut generation = 0;
            let mut ready: HashMap<ObjectKey, bool> = HashMap::new();
            let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let t = table.load();
                ticks += 1;
                if ticks.is_multiple_of(LIMITS_EVERY) {
                    for (_, limits) in t.rate_limits() {
                        limits.forget_idle();
                    }
                }
                if t.generation() != generation {
                    generation = t.generation();
                    let now_ready = t.service_readiness();
                    let recovered: HashSet<ObjectKey> = now_ready
                        .iter()
                        .filter(|(svc, r)| **r && ready.get(*svc) == Some(&false))
                        .map(|(svc, _)| svc.clone())
                        .collect();
                    if !recovered.is_empty() {
                        let n = cache.flush_services(&recovered).await;
                        tracing::info!(services = ?recovered, entries = n, "endpoints ready again; cached 502/503/504 dropped");
                    }
                    ready = now_ready.clone();
                }
                cache.entries.run_pending_tasks().await;
                cache.metrics.entries.set(i64::try_from(cache.entries.entry_count()).unwrap_or(i64::MAX));
                cache.metrics.bytes.set(i64::try_from(cache.entries.weighted_size()).unwrap_or(i64::MAX));
            }
        });
    }
}

#[cfg(test)]
mod tests;
