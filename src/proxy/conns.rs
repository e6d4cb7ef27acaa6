//! Client connection accounting: one limit for all listeners, shedding at the limit, the
//! drain on shutdown, and the per-request deadlines of HTTP/1.1 connections.
//!
//! Data flow: the accept loops in [`super::serve`] take a [`Slot`] per accepted connection
//! before serving it. At the limit the oldest *idle* connections (no request in the handler)
//! are asked to close gracefully — the way nginx reuses keep-alive connections when it runs
//! out — so a flood of idle or abandoned connections cannot lock real clients out; if every
//! connection is busy the accept loop waits (the kernel backlog queues new clients), which
//! bounds memory and file descriptors. The drain is a [`TaskTracker`] over every connection.
//!
//! Each slot carries [`Signals`]: the registry sets them (close; a deadline passed) and wakes
//! the connection's task. The deadlines of a request — its head arriving, the upstream's
//! answer — are words in the slot that the connection's task arms and disarms with an atomic
//! store, and one watcher task per process checks every open connection a few times per
//! timeout. A tokio timer per request (a clock read, an allocation, the timer wheel's lock to
//! register and again to cancel) measured ~1,000 instructions of a ~25,000-instruction
//! pass-through. erratum's own HTTP/1.1 loop ([`http1::server`](super::http1::server)) uses both deadlines; hyper's
//! connections get their head deadline through [`HeadTimer`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Share of the limit shed at once when it is reached (at least one connection).
const SHED_DIVISOR: usize = 64;

/// How often, at most, the watcher checks head deadlines: a fraction of the timeout, so a
/// slow client is closed within about an eighth of the timeout after its deadline.
const WATCH_DIVISOR: u32 = 8;
/// Bounds of the watcher's period.
const WATCH_MIN: Duration = Duration::from_millis(10);
const WATCH_MAX: Duration = Duration::from_secs(1);

/// A [`Deadline`] with nothing armed.
const NONE: u64 = 0;
/// A [`Deadline`] the watcher found passed.
const EXPIRED: u64 = u64::MAX;

/// One deadline of a connection: nanoseconds since the registry's epoch, `NONE` or
/// `EXPIRED`. Armed and disarmed by the connection's task, fired by the watcher.
#[derive(Debug, Default)]
pub struct Deadline(AtomicU64);

impl Deadline {
    /// Whether the watcher found the armed deadline passed.
    pub fn expired(&self) -> bool {
        self.0.load(Ordering::Acquire) == EXPIRED
    }

    fn disarm(&self) {
        self.0.store(NONE, Ordering::Release);
    }

    /// Marks the deadline passed if it is armed and at or before `now`; true if it did.
    fn expire(&self, now: u64) -> bool {
        let at = self.0.load(Ordering::Acquire);
        // Compare-and-swap: the deadline may have been disarmed (and another armed) meanwhile.
        at != NONE
            && at != EXPIRED
            && at <= now
            && self.0.compare_exchange(at, EXPIRED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// What the registry tells one connection's task. Set from any thread; the task is woken.
#[derive(Debug, Default)]
pub struct Signals {
    /// Asked to close after the request in progress (shutdown or shedding).
    close: AtomicBool,
    /// The request head being read (the header-read timeout).
    pub head: Deadline,
    /// The upstream's answer to the request in progress, on erratum's own HTTP/1.1 loop
    /// (one request at a time per connection; see [`Slot::within`]).
    pub response: Deadline,
    /// The connection's task.
    waker: AtomicWaker,
}

impl Signals {
    /// Asks the connection to close after its current request; false if it already was.
    fn request_close(&self) -> bool {
        let first = !self.close.swap(true, Ordering::AcqRel);
        self.waker.wake();
        first
    }

    /// Whether the connection was asked to close.
    pub fn close_requested(&self) -> bool {
        self.close.load(Ordering::Acquire)
    }

    /// Registers the current task for wake-ups, then reports whether close was requested
    /// (in that order, so a request in between still wakes the task).
    pub fn poll_close(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        if self.close_requested() { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Resolves once close is requested.
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_close(cx))
    }

    /// Fires the deadlines that are due at `now`, waking the task; how many fired.
    fn expire(&self, now: u64) -> usize {
        let fired = usize::from(self.head.expire(now)) + usize::from(self.response.expire(now));
        if fired > 0 {
            self.waker.wake();
        }
        fired
    }
}

/// One open connection as the registry sees it.
#[derive(Debug)]
struct Entry {
    signals: Arc<Signals>,
    /// Requests in the handler right now.
    in_flight: Arc<AtomicUsize>,
}

/// Every open client connection of the process.
#[derive(Debug)]
pub struct Connections {
    limit: usize,
    permits: Arc<Semaphore>,
    /// By age: ids grow, so the first entries are the oldest connections.
    open: Mutex<BTreeMap<u64, Entry>>,
    next_id: AtomicU64,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    shed: IntCounter,
    /// Zero of the head deadlines (they are stored as nanoseconds since it).
    epoch: Instant,
    /// Period of the watcher.
    watch_every: Duration,
    watch_every_nanos: u64,
    /// The header-read timeout in nanoseconds.
    head_timeout: u64,
    /// Nanoseconds since `epoch`, as of the watcher's last round.
    clock: AtomicU64,
    watcher: std::sync::Once,
}

/// A connection's place under the limit; released on drop.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    /// Set when the connection should close gracefully (shutdown or shedding).
    pub signals: Arc<Signals>,
    /// Requests (and tunnels) of this connection in progress; see [`Slot::busy`].
    in_flight: Arc<AtomicUsize>,
    owner: Arc<Connections>,
    _permit: OwnedSemaphorePermit,
}

/// Marks its connection busy (a request in the handler, or an upgraded tunnel) until dropped:
/// busy connections are never shed as idle. It also holds the slot, so a tunnel that outlives
/// hyper's connection future keeps its place under the limit.
#[derive(Debug)]
pub struct Busy(Arc<Slot>);

impl Slot {
    /// Marks the connection busy while the guard lives.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Starts the deadline for the next request head, unless one is running: the
    /// header-read timeout from now.
    pub fn arm_head(&self) {
        let deadline = self.owner.deadline(self.owner.head_timeout);
        let _ = self.signals.head.0.compare_exchange(NONE, deadline, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Ends the head deadline: the head arrived (or the connection is closing).
    pub fn disarm_head(&self) {
        self.signals.head.disarm();
    }

    /// `fut` (the upstream exchange of the connection's one request in progress), or `None`
    /// once `timeout` has passed. The deadline sits in the slot and the watcher fires it: no
    /// timer entry per request (a tokio timeout cost ~6 % of a pass-through's CPU). Only for
    /// a connection that runs one request at a time on its own task (erratum's HTTP/1.1
    /// loop); HTTP/2 streams share a connection and use tokio timers.
    pub fn within<F: Future>(&self, timeout: Duration, fut: F) -> Within<'_, F> {
        self.signals.response.0.store(self.owner.deadline(nanos(timeout)), Ordering::Release);
        Within { fut, signals: &self.signals, _disarm: Disarm(&self.signals.response) }
    }

    /// hyper's timer for this connection's request heads (see the module header).
    pub fn head_timer(&self) -> HeadTimer {
        HeadTimer { signals: self.signals.clone(), epoch: self.owner.epoch }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.registry().remove(&self.id);
    }
}

impl Connections {
    /// A registry allowing `limit` connections; `shutdown` closes them all gracefully.
    /// `head_timeout` is the header-read timeout; it and `response_timeout` (the upstream's
    /// time to answer) set how often deadlines are checked.
    pub fn new(
        limit: usize,
        shutdown: CancellationToken,
        shed: IntCounter,
        head_timeout: Duration,
        response_timeout: Duration,
    ) -> Arc<Self> {
        let limit = limit.max(1);
        let watch_every = (head_timeout.min(response_timeout) / WATCH_DIVISOR).clamp(WATCH_MIN, WATCH_MAX);
        Arc::new(Self {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            tracker: TaskTracker::new(),
            shutdown,
            shed,
            epoch: Instant::now(),
            watch_every,
            watch_every_nanos: nanos(watch_every),
            head_timeout: nanos(head_timeout),
            clock: AtomicU64::new(1),
            watcher: std::sync::Once::new(),
        })
    }

    /// The tracker every connection task is spawned on (for the drain).
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.registry().len()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        // The map stays consistent even if a holder panicked: every operation is one call.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a slot for a new connection. At the limit, sheds idle connections and waits for
    /// one to close; `None` when shutdown begins first.
    pub async fn acquire(self: &Arc<Self>) -> Option<Slot> {
        // Spawned on first use, inside the runtime that serves the connections.
        self.watcher.call_once(|| {
            tokio::spawn(watch(Arc::downgrade(self), self.shutdown.clone(), self.watch_every));
        });
        // The watcher's clock may not have ticked yet (the first connection), or not for a
        // while: deadlines armed from a stale clock would fire early.
        self.clock.store(nanos_since(self.epoch, Instant::now()), Ordering::Relaxed);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.shed_idle();
                tokio::select! {
                    _ = self.shutdown.cancelled() => return None,
                    p = self.permits.clone().acquire_owned() => p.ok()?,
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let signals = Arc::new(Signals::default());
        let in_flight = Arc::new(AtomicUsize::new(0));
        self.registry().insert(id, Entry { signals: signals.clone(), in_flight: in_flight.clone() });
        // After the insert: either the watcher's shutdown sweep sees this entry, or this sees
        // the shutdown (the sweep runs after the token is cancelled, under the same lock).
        if self.shutdown.is_cancelled() {
            signals.request_close();
        }
        Some(Slot { id, signals, in_flight, owner: self.clone(), _permit: permit })
    }

    /// Asks the oldest idle connections to close; when none is idle, nothing is shed (busy
    /// connections finish and free their slots on their own).
    fn shed_idle(&self) {
        let want = (self.limit / SHED_DIVISOR).max(1);
        let registry = self.registry();
        let mut shed = 0;
        for entry in registry.values() {
            if shed == want {
                break;
            }
            if entry.in_flight.load(Ordering::Relaxed) == 0 && entry.signals.request_close() {
                shed += 1;
            }
        }
        self.shed.inc_by(shed as u64);
        tracing::debug!(limit = self.limit, shed, "connection limit reached");
    }

    /// A deadline `nanos` from now by the watcher's clock: never early, at most one watcher
    /// period late, and no clock read per request.
    fn deadline(&self, nanos: u64) -> u64 {
        self.clock.load(Ordering::Relaxed) + nanos + self.watch_every_nanos
    }

    /// Fires every deadline that has passed; how many.
    fn expire_deadlines(&self) -> usize {
        let now = nanos_since(self.epoch, Instant::now());
        self.clock.store(now, Ordering::Relaxed);
        self.registry().values().map(|e| e.signals.expire(now)).sum()
    }

    /// Asks every open connection to close after its current request.
    fn close_all(&self) {
        for entry in self.registry().values() {
            entry.signals.request_close();
        }
    }
}

/// The watcher: head deadlines every period, and the close of every connection at shutdown.
/// Ends when the registry is gone or at shutdown.
async fn watch(conns: Weak<Connections>, shutdown: CancellationToken, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(conns) = conns.upgrade() {
                    conns.close_all();
                }
                return;
            }
            _ = tick.tick() => {}
        }
        let Some(conns) = conns.upgrade() else { return };
        let expired = conns.expire_deadlines();
        if expired > 0 {
            tracing::debug!(expired, "deadlines passed (request heads or upstream answers)");
        }
    }
}

/// `d` in nanoseconds, capped far below `EXPIRED` so a deadline sum cannot overflow.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).min(u64::MAX / 4)
}

/// `at` as nanoseconds since `epoch`, at least 1 (0 is `NONE`) and below `EXPIRED`.
fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    let n = u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(EXPIRED - 1);
    n.clamp(1, EXPIRED - 1)
}

pin_project_lite::pin_project! {
    /// [`Slot::within`]'s future.
    pub struct Within<'a, F> {
        #[pin]
        fut: F,
        signals: &'a Signals,
        _disarm: Disarm<'a>,
    }
}

/// Disarms a deadline when dropped: answered, timed out, or abandoned with its client.
struct Disarm<'a>(&'a Deadline);

impl Drop for Disarm<'_> {
    fn drop(&mut self) {
        self.0.disarm();
    }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        this.signals.waker.register(cx.waker());
        if this.signals.response.expired() { Poll::Ready(None) } else { Poll::Pending }
    }
}

/// hyper's [`Timer`](hyper::rt::Timer) for one connection: the request-head deadline hyper
/// arms is stored in the connection's [`Signals`] and watched by the registry's watcher.
/// Only hyper's HTTP/1 header-read timeout uses it (one sleep at a time per connection).
#[derive(Debug, Clone)]
pub struct HeadTimer {
    signals: Arc<Signals>,
    epoch: Instant,
}

/// A head deadline as hyper holds it; disarmed when dropped (the head arrived).
#[derive(Debug)]
struct HeadSleep {
    signals: Arc<Signals>,
    deadline: u64,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let deadline = nanos_since(self.epoch, deadline);
        self.signals.head.0.store(deadline, Ordering::Release);
        Box::pin(HeadSleep { signals: self.signals.clone(), deadline })
    }
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signals.head.expired() {
            return Poll::Ready(());
        }
        self.signals.waker.register(cx.waker());
        if self.signals.head.expired() { Poll::Ready(()) } else { Poll::Pending }
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        // Only its own deadline: a newer one may already be armed (hyper's `reset` arms the
        // new sleep before dropping the old).
        let _ =
            self.signals.head.0.compare_exchange(self.deadline, NONE, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
