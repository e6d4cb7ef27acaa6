//! Client connection accounting: one limit for all listeners, shedding at the limit, and the
//! drain on shutdown.
//!
//! Data flow: the accept loops in [`super::serve`] take a [`Slot`] per accepted connection
//! before serving it. At the limit the oldest *idle* connections (no request in the handler)
//! are asked to close gracefully — the way nginx reuses keep-alive connections when it runs
//! out — so a flood of idle or abandoned connections cannot lock real clients out; if every
//! connection is busy the accept loop waits (the kernel backlog queues new clients), which
//! bounds memory and file descriptors. The drain is a [`TaskTracker`] over every connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// Share of the limit shed at once when it is reached (at least one connection).
const SHED_DIVISOR: usize = 64;

/// One open connection as the registry sees it.
#[derive(Debug)]
struct Entry {
    /// Cancelled to ask the connection to close after its current request.
    close: CancellationToken,
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
}

/// A connection's place under the limit; released on drop.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    /// Cancelled when the connection should close gracefully (shutdown or shedding).
    pub close: CancellationToken,
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
    pub fn new(limit: usize, shutdown: CancellationToken, shed: IntCounter) -> Arc<Self> {
        let limit = limit.max(1);
        Arc::new(Self {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            open: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            tracker: TaskTracker::new(),
            shutdown,
            shed,
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
        let close = self.shutdown.child_token();
        let in_flight = Arc::new(AtomicUsize::new(0));
        self.registry().insert(id, Entry { close: close.clone(), in_flight: in_flight.clone() });
        Some(Slot { id, close, in_flight, owner: self.clone(), _permit: permit })
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
            if entry.in_flight.load(Ordering::Relaxed) == 0 && !entry.close.is_cancelled() {
                entry.close.cancel();
                shed += 1;
            }
        }
        self.shed.inc_by(shed as u64);
        tracing::debug!(limit = self.limit, shed, "connection limit reached");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(limit: usize) -> Arc<Connections> {
        let shed = IntCounter::new("shed", "shed").expect("valid metric");
        Connections::new(limit, CancellationToken::new(), shed)
    }

    #[tokio::test]
    async fn the_limit_sheds_the_oldest_idle_connection_first() {
        let conns = registry(2);
        let old = conns.acquire().await.expect("slot");
        let busy = Arc::new(conns.acquire().await.expect("slot"));
        let _working = busy.busy();
        // The idle one is `old`; the busy one must be spared.
        let waiter = tokio::spawn({
            let conns = conns.clone();
            async move { conns.acquire().await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), old.close.cancelled())
            .await
            .expect("the idle connection is asked to close");
        assert!(!busy.close.is_cancelled(), "a busy connection is not shed");
        assert_eq!(conns.shed.get(), 1);
        drop(old);
        let new = waiter.await.expect("task").expect("slot after the shed one closed");
        assert_eq!(new.id, 2);
        assert_eq!(conns.open(), 2);
    }

    #[tokio::test]
    async fn waiting_for_a_slot_ends_at_shutdown() {
        let conns = registry(1);
        let held = Arc::new(conns.acquire().await.expect("slot"));
        let _working = held.busy();
        conns.shutdown.cancel();
        assert!(conns.acquire().await.is_none());
    }
}
