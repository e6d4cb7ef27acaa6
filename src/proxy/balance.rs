//! Which endpoint a request goes to, and what erratum learns from each attempt: load
//! balancing, passive outlier ejection and the retry budget.
//!
//! Data flow: [`forward`](super::forward) asks [`Balancer::pick`] for an endpoint of the
//! route's [`Backend`] (skipping ejected endpoints and those the request already tried),
//! tells [`Balancer::report`] how each attempt went, and asks [`Balancer::may_retry`] before
//! trying another endpoint. Ejections are shown at `/table` ([`Balancer::outliers`]).
//!
//! The health state is the proxy's, keyed by endpoint address, so it outlives table swaps (a
//! rolling update publishes many tables) and the table stays a pure snapshot. When nothing is
//! failing it costs one relaxed atomic load per pick and per report: the map is locked only
//! while some endpoint has failures on record.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::uri::Authority;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use smallvec::SmallVec;

use crate::table::{Backend, LoadBalance, Target};

/// Outlier ejection and retry budget settings (flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive failed connects that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// Consecutive 5xx answers that eject an endpoint; 0 (the default) does not count them.
    pub consecutive_5xx: u32,
    /// The first ejection's length; each further ejection without a success in between adds
    /// as much again.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
    /// Most endpoints of one Service ejected at once, in percent (at least one when the
    /// Service has two or more; never all).
    pub max_ejection_percent: u32,
    /// Retries allowed as a percentage of requests (Envoy's and linkerd's retry budget).
    pub retry_budget_percent: u32,
    /// Retries allowed per second whatever the traffic, so a quiet service can still retry.
    pub retry_budget_min_per_second: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            consecutive_5xx: 0,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            retry_budget_percent: 20,
            retry_budget_min_per_second: 10,
        }
    }
}

/// The metric handles the balancer counts with.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// `erratum_upstream_retries_total{reason}`.
    pub retries: IntCounterVec,
    /// `erratum_upstream_retries_denied_total{reason}`.
    pub retries_denied: IntCounterVec,
    /// `erratum_upstream_ejections_total`.
    pub ejections: IntCounter,
    /// `erratum_upstream_ejection_returns_total`.
    pub returns: IntCounter,
    /// `erratum_upstream_ejected_endpoints`.
    pub ejected: IntGauge,
}

/// Why a request goes to another endpoint (the `reason` label of
/// `erratum_upstream_retries_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The connect failed (refused, unreachable).
    Connect,
    /// The connect timed out.
    ConnectTimeout,
    /// The TLS handshake failed.
    Tls,
    /// The connection broke before the response head.
    Reset,
    /// No response head in time.
    Timeout,
    /// The response head was not valid HTTP.
    InvalidHeader,
    /// An answer with a status the route retries.
    Http500,
    /// 502.
    Http502,
    /// 503.
    Http503,
    /// 504.
    Http504,
    /// 403.
    Http403,
    /// 404.
    Http404,
    /// 429.
    Http429,
}

impl Retry {
    /// Every reason, in label order.
    pub const ALL: [Retry; 13] = [
        Retry::Connect,
        Retry::ConnectTimeout,
        Retry::Tls,
        Retry::Reset,
        Retry::Timeout,
        Retry::InvalidHeader,
        Retry::Http500,
        Retry::Http502,
        Retry::Http503,
        Retry::Http504,
        Retry::Http403,
        Retry::Http404,
        Retry::Http429,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Retry::Connect => "connect",
            Retry::ConnectTimeout => "connect_timeout",
            Retry::Tls => "tls",
            Retry::Reset => "reset",
            Retry::Timeout => "timeout",
            Retry::InvalidHeader => "invalid_header",
            Retry::Http500 => "http_500",
            Retry::Http502 => "http_502",
            Retry::Http503 => "http_503",
            Retry::Http504 => "http_504",
            Retry::Http403 => "http_403",
            Retry::Http404 => "http_404",
            Retry::Http429 => "http_429",
        }
    }

    /// The reason for a retried status.
    pub fn for_status(status: u16) -> Option<Self> {
        Some(match status {
            500 => Retry::Http500,
            502 => Retry::Http502,
            503 => Retry::Http503,
            504 => Retry::Http504,
            403 => Retry::Http403,
            404 => Retry::Http404,
            429 => Retry::Http429,
            _ => return None,
        })
    }
}

/// The endpoint chosen for one attempt.
#[derive(Clone, Debug)]
pub struct Picked {
    /// `host:port` to send to.
    pub authority: Authority,
    /// Its place in the backend's endpoints; `None` for an ExternalName.
    pub index: Option<usize>,
}

/// How one attempt went, as far as the endpoint's health is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// It answered (any status below 500, or a 5xx when 5xx are not counted).
    Answered,
    /// It answered with a 5xx.
    ServerError,
    /// No connection could be made (refused, unreachable, connect timeout).
    ConnectFailed,
    /// Anything else (a timeout waiting for the head, a reset): says nothing certain about
    /// the endpoint, so it changes nothing.
    Other,
}

/// An endpoint with failures on record.
#[derive(Debug, Default)]
struct Trouble {
    connect_failures: u32,
    server_errors: u32,
    /// While ejected: until when.
    ejected_until: Option<Instant>,
    /// Ejections since its last success: the next one lasts this many times longer.
    ejections: u32,
}

/// Load balancing, outlier ejection and the retry budget (shared by every connection).
#[derive(Debug)]
pub struct Balancer {
    settings: Settings,
    /// Entries in `trouble`: zero is the fast path.
    troubled: AtomicUsize,
    trouble: Mutex<HashMap<SocketAddr, Trouble, foldhash::fast::RandomState>>,
    budget: Budget,
    metrics: Metrics,
    /// `retries` by [`Retry`], resolved once (a label lookup hashes on every call).
    retries: Vec<IntCounter>,
    denied_budget: IntCounter,
    denied_no_endpoint: IntCounter,
}

/// Why no (other) endpoint can take the request.
pub const NO_READY_ENDPOINTS: &str = "no ready endpoints";

impl Balancer {
    /// A balancer with nothing on record.
    pub fn new(settings: Settings, metrics: Metrics) -> Self {
        Self {
            settings,
            troubled: AtomicUsize::new(0),
            trouble: Mutex::new(HashMap::default()),
            budget: Budget::new(settings.retry_budget_percent, settings.retry_budget_min_per_second),
            retries: Retry::ALL.iter().map(|r| metrics.retries.with_label_values(&[r.label()])).collect(),
            denied_budget: metrics.retries_denied.with_label_values(&["budget"]),
            denied_no_endpoint: metrics.retries_denied.with_label_values(&["no_endpoint"]),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Trouble, foldhash::fast::RandomState>> {
        self.trouble.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An endpoint of `backend` for one attempt, not one of `tried` and not ejected. The
    /// first attempt of a request also counts toward the retry budget.
    pub fn pick(
        &self,
        backend: &Backend,
        balance: LoadBalance,
        tried: &[usize],
    ) -> Result<Picked, &'static str> {
        let addrs = backend.endpoints();
        if addrs.is_empty() {
            return match &backend.target {
                Target::ExternalName { host, port } if tried.is_empty() => format!("{host}:{port}")
                    .parse()
                    .map(|authority| Picked { authority, index: None })
                    .map_err(|_| "the ExternalName is not a valid host"),
                Target::Unresolved(_) => Err("the backend Service cannot be resolved"),
                _ => Err(NO_READY_ENDPOINTS),
            };
        }
        if tried.is_empty() {
            self.budget.deposit();
        }
        let n = addrs.len();
        let index = if tried.is_empty() && self.troubled.load(Ordering::Relaxed) == 0 {
            // Nothing failing: every endpoint is a candidate.
            match balance {
                LoadBalance::RoundRobin => backend.next_index(n),
                LoadBalance::P2c => p2c(backend, n, |_| true).unwrap_or(0),
            }
        } else {
            let usable = self.usable(addrs, tried);
            let index = match balance {
                LoadBalance::RoundRobin => {
                    let start = backend.next_index(n);
                    (0..n).map(|k| (start + k) % n).find(|&i| usable[i])
                }
                LoadBalance::P2c => p2c(backend, n, |i| usable[i]),
            };
            index.ok_or(NO_READY_ENDPOINTS)?
        };
        let authority = backend.authority(index).cloned().ok_or(NO_READY_ENDPOINTS)?;
        Ok(Picked { authority, index: Some(index) })
    }

    /// Which of `addrs` may take an attempt: not tried, not ejected. Ejections that have run
    /// out end here. If every untried endpoint is ejected, the ejected ones are usable again
    /// (a request is never refused for ejections alone).
    fn usable(&self, addrs: &[SocketAddr], tried: &[usize]) -> SmallVec<[bool; 8]> {
        let mut usable: SmallVec<[bool; 8]> = (0..addrs.len()).map(|i| !tried.contains(&i)).collect();
        if self.troubled.load(Ordering::Relaxed) == 0 {
            return usable;
        }
        let now = Instant::now();
        let mut trouble = self.lock();
        let untried = usable.clone();
        for (i, addr) in addrs.iter().enumerate() {
            let Some(t) = trouble.get_mut(addr) else { continue };
            match t.ejected_until {
                Some(until) if until > now => usable[i] = false,
                Some(_) => {
                    // Back: it gets traffic again; one more failure ejects it for longer.
                    t.ejected_until = None;
                    t.connect_failures = self.settings.consecutive_failures.saturating_sub(1);
                    t.server_errors = self.settings.consecutive_5xx.saturating_sub(1);
                    self.metrics.returns.inc();
                    self.metrics.ejected.dec();
                }
                None => {}
            }
        }
        if usable.iter().any(|&u| u) { usable } else { untried }
    }

    /// Records how an attempt at endpoint `index` of `backend` went: consecutive failures
    /// eject it (within the share of the backend's endpoints that may be out at once).
    pub fn report(&self, backend: &Backend, index: Option<usize>, attempt: Attempt) {
        // One endpoint is never ejected: nothing to record (and a Service whose only
        // endpoint is down does not put every other request on the slow path).
        if backend.endpoints().len() < 2 {
            return;
        }
        let Some(addr) = index.and_then(|i| backend.endpoints().get(i)) else { return };
        let counted = match attempt {
            Attempt::Answered => false,
            Attempt::ServerError => self.settings.consecutive_5xx > 0,
            Attempt::ConnectFailed => self.settings.consecutive_failures > 0,
            Attempt::Other => return,
        };
        if !counted {
            if self.troubled.load(Ordering::Relaxed) == 0 {
                return;
            }
            // A success clears the record (and the back-off) of an endpoint that is not ejected.
            let mut trouble = self.lock();
            if trouble.get(addr).is_some_and(|t| t.ejected_until.is_none()) {
                trouble.remove(addr);
                self.troubled.store(trouble.len(), Ordering::Relaxed);
            }
            return;
        }
        let now = Instant::now();
        let mut trouble = self.lock();
        let t = trouble.entry(*addr).or_default();
        if t.ejected_until.is_some() {
            return; // a request that picked it before the ejection
        }
        let over = match attempt {
            Attempt::ServerError => {
                t.server_errors += 1;
                t.server_errors >= self.settings.consecutive_5xx
            }
            _ => {
                t.connect_failures += 1;
                t.connect_failures >= self.settings.consecutive_failures
            }
        };
        if over {
            let ejected_now = backend
                .endpoints()
                .iter()
                .filter(|a| trouble.get(a).and_then(|t| t.ejected_until).is_some_and(|u| u > now))
                .count();
            let n = backend.endpoints().len();
            let share = (n * self.settings.max_ejection_percent as usize / 100).max(1);
            if ejected_now < share && ejected_now + 1 < n {
                let t = trouble.entry(*addr).or_default();
                t.ejections += 1;
                let length =
                    self.settings.base_ejection.saturating_mul(t.ejections).min(self.settings.max_ejection);
                t.ejected_until = Some(now + length);
                t.connect_failures = 0;
                t.server_errors = 0;
                self.metrics.ejections.inc();
                self.metrics.ejected.inc();
                tracing::warn!(endpoint = %addr, service = %backend.service, seconds = length.as_secs(), "endpoint ejected");
            }
        }
        self.troubled.store(trouble.len(), Ordering::Relaxed);
    }

    /// Whether a retry for `reason` may go out: counted, or denied when the budget is spent.
    pub fn may_retry(&self, reason: Retry) -> bool {
        if self.budget.withdraw() {
            if let Some(counter) =
                Retry::ALL.iter().position(|r| *r == reason).and_then(|i| self.retries.get(i))
            {
                counter.inc();
            }
            true
        } else {
            self.denied_budget.inc();
            false
        }
    }

    /// Counts a retry that could not go out for want of another endpoint.
    pub fn no_other_endpoint(&self) {
        self.denied_no_endpoint.inc();
    }

    /// Endpoints with failures on record, for `/table`.
    pub fn outliers(&self) -> Vec<Outlier> {
        let now = Instant::now();
        let mut out: Vec<Outlier> = self
            .lock()
            .iter()
            .map(|(addr, t)| Outlier {
                endpoint: *addr,
                ejected_for: t.ejected_until.and_then(|u| u.checked_duration_since(now)),
                connect_failures: t.connect_failures,
                server_errors: t.server_errors,
                ejections: t.ejections,
            })
            .collect();
        out.sort_by_key(|o| o.endpoint);
        out
    }
}

/// An endpoint with failures on record, as `/table` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outlier {
    /// Its address.
    pub endpoint: SocketAddr,
    /// How much longer it is ejected; `None` when it takes traffic.
    pub ejected_for: Option<Duration>,
    /// Consecutive failed connects.
    pub connect_failures: u32,
    /// Consecutive 5xx (counted only when `--outlier-consecutive-5xx` is set).
    pub server_errors: u32,
    /// Ejections since its last success.
    pub ejections: u32,
}

/// Power of two choices: of two usable endpoints at random, the one with fewer requests in
/// flight (Mitzenmacher; what Envoy's and linkerd's least-request balancers do).
fn p2c(backend: &Backend, n: usize, usable: impl Fn(usize) -> bool) -> Option<usize> {
    let candidates: SmallVec<[usize; 8]> = (0..n).filter(|&i| usable(i)).collect();
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        len => {
            let a = fastrand::usize(..len);
            let mut b = fastrand::usize(..len - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            let load = |i| backend.in_flight(i).load(Ordering::Relaxed);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

/// One request in flight to an endpoint, for power-of-two-choices; counted only on routes that balance
/// so (round robin pays nothing).
pub struct InFlight<'a>(Option<&'a AtomicU32>);

impl<'a> InFlight<'a> {
    /// Counts a request to `picked` when `balance` needs it.
    pub fn start(backend: &'a Backend, picked: &Picked, balance: LoadBalance) -> Self {
        match (balance, picked.index) {
            (LoadBalance::P2c, Some(i)) => {
                let counter = backend.in_flight(i);
                counter.fetch_add(1, Ordering::Relaxed);
                Self(Some(counter))
            }
            _ => Self(None),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Retries allowed as a share of requests, plus a few per second (linkerd's retry budget):
/// every request deposits `percent` hundredths of a retry, every retry withdraws one whole.
/// Deposits stop at [`BUDGET_CAP`] retries, so a long quiet spell does not save up a storm.
#[derive(Debug)]
struct Budget {
    percent: i64,
    min_per_second: u32,
    /// In hundredths of a retry.
    tokens: AtomicI64,
    /// The second (since `epoch`) the per-second allowance counts in, and retries in it.
    second: AtomicU64,
    this_second: AtomicU32,
    epoch: Instant,
}

/// The most retries the budget saves up: enough for the burst of retries when an endpoint
/// dies under a few hundred requests in flight, small beside the traffic of a sustained
/// outage (where the share rules).
const BUDGET_CAP: i64 = 100;

impl Budget {
    fn new(percent: u32, min_per_second: u32) -> Self {
        Self {
            percent: percent.into(),
            min_per_second,
            tokens: AtomicI64::new(BUDGET_CAP * 100),
            second: AtomicU64::new(0),
            this_second: AtomicU32::new(0),
            epoch: Instant::now(),
        }
    }

    /// A request's share. A full budget is only read (no shared write per request).
    fn deposit(&self) {
        if self.percent > 0 && self.tokens.load(Ordering::Relaxed) < BUDGET_CAP * 100 {
            self.tokens.fetch_add(self.percent, Ordering::Relaxed);
        }
    }

    /// Takes one retry: from the deposits, else from this second's allowance.
    fn withdraw(&self) -> bool {
        let taken = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| (t >= 100).then_some(t - 100))
            .is_ok();
        if taken {
            return true;
        }
        let now = self.epoch.elapsed().as_secs();
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.this_second.store(0, Ordering::Relaxed);
        }
        self.this_second.fetch_add(1, Ordering::Relaxed) < self.min_per_second
    }
}

#[cfg(test)]
mod tests;
