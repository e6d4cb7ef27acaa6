//! Pages fetched by path (CloudFront ResponsePagePath), pinned in memory and refreshed.
//!
//! Data flow: when a table is published, the fetcher loads every (host, page path) pair its
//! policies need; a request for a pair not yet known asks for it (and gets the built-in body
//! with the original status until it arrives, rule 47). A page is an internal GET through the
//! routing table on the request's host, without the viewer's cookies or credentials (rule 48).
//! A failed refresh keeps the last good copy.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Limited};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::intercept::{FetchedPage, Pages};
use super::upstream::Upstreams;
use crate::metrics::ProxyMetrics;
use crate::table::MAX_PAGE_BYTES;
use crate::table::{Pick, TableReader, route};

/// How often pinned pages are fetched again.
pub const PAGE_REFRESH: Duration = Duration::from_secs(60);
/// Longest a page fetch may take.
pub const PAGE_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most (host, path) pairs pinned; requests beyond it get the built-in body.
pub const MAX_PINNED_PAGES: usize = 4096;
/// How often the fetcher looks for a new table.
const TABLE_POLL: Duration = Duration::from_millis(200);

/// One pinned page and its fetch history.
#[derive(Debug, Clone)]
struct Pinned {
    page: Option<FetchedPage>,
    fetched: Option<Instant>,
    last_error: Option<String>,
}

/// The pinned pages, readable from every request without allocation.
#[derive(Debug, Clone)]
pub struct PageStore {
    pages: Arc<RwLock<HashMap<String, HashMap<String, Pinned>>>>,
    wanted: mpsc::UnboundedSender<(String, String)>,
}

/// A page's state, for the admin API.
#[derive(Debug, serde::Serialize)]
pub struct PageState {
    /// Host the page is fetched for.
    pub host: String,
    /// Page path.
    pub path: String,
    /// Size of the pinned copy, if any.
    pub bytes: Option<usize>,
    /// Seconds since the last successful fetch.
    pub age_seconds: Option<u64>,
    /// The last fetch error, if the last fetch failed.
    pub last_error: Option<String>,
}

impl Pages for PageStore {
    fn get(&self, host: &str, path: &str) -> Option<FetchedPage> {
        {
            let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = pages.get(host).and_then(|h| h.get(path)) {
                return p.page.clone();
            }
        }
        let _ = self.wanted.send((host.to_string(), path.to_string()));
        None
    }
}

impl PageStore {
    /// Every pinned page, sorted, for `GET /pages`.
    pub fn states(&self) -> Vec<PageState> {
        let pages = self.pages.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<PageState> = pages
            .iter()
            .flat_map(|(host, paths)| {
                paths.iter().map(move |(path, p)| PageState {
                    host: host.clone(),
                    path: path.clone(),
                    bytes: p.page.as_ref().map(|pg| pg.body.len()),
                    age_seconds: p.fetched.map(|t| t.elapsed().as_secs()),
                    last_error: p.last_error.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.host, &a.path).cmp(&(&b.host, &b.path)));
        out
    }

    /// Starts the fetcher. It runs until `shutdown`.
    pub fn spawn(
        table: TableReader,
        client: Upstreams,
        metrics: ProxyMetrics,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Self { pages: Arc::new(RwLock::new(HashMap::new())), wanted: tx };
        let fetcher = Fetcher { store: store.clone(), table, client, metrics };
        tokio::spawn(fetcher.run(rx, shutdown));
        store
    }

    fn len(&self) -> usize {
        self.pages.read().unwrap_or_else(|e| e.into_inner()).values().map(HashMap::len).sum()
    }

    fn contains(&self, host: &str, path: &str) -> bool {
        self.pages.read().unwrap_or_else(|e| e.into_inner()).get(host).is_some_and(|h| h.contains_key(path))
    }

    fn record(&self, host: &str, path: &str, result: Result<FetchedPage, String>) {
        let mut pages = self.pages.write().unwrap_or_else(|e| e.into_inner());
        let entry = pages.entry(host.to_string()).or_default().entry(path.to_string()).or_insert(Pinned {
            page: None,
            fetched: None,
            last_error: None,
        });
        match result {
            Ok(page) => {
                entry.page = Some(page);
                entry.fetched = Some(Instant::now());
                entry.last_error = None;
            }
            // The last good copy, if any, keeps serving.
            Err(e) => entry.last_error = Some(e),
        }
    }
}

struct Fetcher {
    store: PageStore,
    table: TableReader,
    client: Upstreams,
    metrics: ProxyMetrics,
}

impl Fetcher {
    async fn run(self, mut wanted: mpsc::UnboundedReceiver<(String, String)>, shutdown: CancellationToken) {
        let mut generation = 0;
        let mut poll = tokio::time::interval(TABLE_POLL);
        let mut refresh = tokio::time::interval(PAGE_REFRESH);
        refresh.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = poll.tick() => {
                    let table = self.table.load();
                    if table.generation() != generation {
                        generation = table.generation();
                        let pairs: Vec<(String, String)> = table.page_prefetch().to_vec();
                        self.fetch_all(pairs, false).await;
                    }
                }
                _ = refresh.tick() => {
                    let pairs: Vec<(String, String)> =
                        self.store.states().into_iter().map(|s| (s.host, s.path)).collect();
                    self.fetch_all(pairs, true).await;
                }
                Some(first) = wanted.recv() => {
                    // Collect whatever else is queued so a burst of misses is one round.
                    let mut pairs = HashSet::from([first]);
                    while let Ok(more) = wanted.try_recv() {
                        pairs.insert(more);
                    }
                    self.fetch_all(pairs.into_iter().collect(), false).await;
                }
            }
        }
    }

    /// Fetches pairs concurrently; `again` refetches pairs already pinned.
    async fn fetch_all(&self, pairs: Vec<(String, String)>, again: bool) {
        let mut tasks = Vec::new();
        for (host, path) in pairs {
            if !again && self.store.contains(&host, &path) {
                continue;
            }
            if !self.store.contains(&host, &path) && self.store.len() >= MAX_PINNED_PAGES {
                tracing::warn!(%host, %path, "{MAX_PINNED_PAGES} pages pinned already; not fetching more");
                continue;
            }
            tasks.push(async move {
                let result = self.fetch(&host, &path).await;
                let label = if result.is_ok() { "ok" } else { "error" };
                self.metrics.page_fetches.with_label_values(&[label]).inc();
                if let Err(e) = &result {
                    tracing::warn!(%host, %path, "error page fetch failed: {e}");
                }
                self.store.record(&host, &path, result);
            });
        }
        futures::future::join_all(tasks).await;
    }

    async fn fetch(&self, host: &str, path: &str) -> Result<FetchedPage, String> {
        let table = self.table.load();
        let route = table.find(host, path).ok_or_else(|| format!("no route for {host}{path}"))?;
        let authority = match route.backend.pick() {
            Pick::Addr(addr) => addr.to_string(),
            Pick::Name(name, port) => format!("{name}:{port}"),
            Pick::Unavailable(reason) => return Err(format!("service {}: {reason}", route.backend.service)),
        };
        let uri = http::Uri::try_from(path).map_err(|e| e.to_string())?;
        let host_header = if route::normalize_host(host).is_empty() { "localhost" } else { host };
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::HOST, HeaderValue::from_str(host_header).map_err(|e| e.to_string())?)
            .header(header::USER_AGENT, "erratum-page-fetch")
            .body(super::upstream::empty())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(
            PAGE_FETCH_TIMEOUT,
            self.client.send(&authority, &mut Some(req), &[], self.client.connect_timeout(), None),
        )
        .await
        .map_err(|_| format!("timed out after {PAGE_FETCH_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("page origin answered {}", resp.status()));
        }
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let body = tokio::time::timeout(
            PAGE_FETCH_TIMEOUT,
            Limited::new(resp.into_body(), MAX_PAGE_BYTES).collect(),
        )
        .await
        .map_err(|_| "timed out reading the body".to_string())?
        .map_err(|e| format!("reading the body: {e} (limit {MAX_PAGE_BYTES} bytes)"))?
        .to_bytes();
        Ok(FetchedPage { body, content_type })
    }
}
