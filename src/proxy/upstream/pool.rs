//! The idle-connection pools of [`Upstreams`](super::Upstreams): connections by endpoint key,
//! most recently used first, closed when gone or idle too long.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use hyper::client::conn::http1::SendRequest;

use super::{IDLE_TICKS, MAX_IDLE_PER_ENDPOINT, UpstreamBody};
use crate::proxy::http1::client;

/// What a pooled connection can do now.
pub(super) enum Health {
    Ready,
    /// Still finishing its last exchange: kept for later.
    Busy,
    /// Closed by the origin or carrying stray bytes: dropped.
    Gone,
}

/// A connection that can wait in a [`Pool`].
pub(super) trait Poolable {
    fn health(&mut self) -> Health;
}

impl Poolable for client::Conn {
    fn health(&mut self) -> Health {
        if self.is_usable() { Health::Ready } else { Health::Gone }
    }
}

impl Poolable for SendRequest<UpstreamBody> {
    fn health(&mut self) -> Health {
        if self.is_closed() {
            Health::Gone
        } else if self.is_ready() {
            Health::Ready
        } else {
            Health::Busy
        }
    }
}

/// Idle connections by endpoint (`host:port`).
pub(super) struct Pool<C> {
    hosts: Mutex<HashMap<Arc<str>, Vec<Idle<C>>, foldhash::fast::RandomState>>,
    /// Reaper ticks so far.
    pub(super) tick: AtomicU32,
}

pub(super) struct Idle<C> {
    conn: C,
    /// The reaper tick when it came back.
    pub(super) since: u32,
}

impl<C> Idle<C> {
    /// Idle for more than [`IDLE_TICKS`] whole ticks: at least [`POOL_IDLE_TIMEOUT`].
    fn expired(&self, tick: u32) -> bool {
        tick.wrapping_sub(self.since) > IDLE_TICKS
    }
}

impl<C: Poolable> Pool<C> {
    pub(super) fn new() -> Self {
        Self { hosts: Mutex::new(HashMap::default()), tick: AtomicU32::new(0) }
    }

    pub(super) fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Idle<C>>, foldhash::fast::RandomState>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool key for `authority` and the most recently used ready connection to it, if any.
    /// Closed and expired connections met on the way are dropped (which closes them).
    pub(super) fn checkout(&self, authority: &str) -> (Arc<str>, Option<C>) {
        let mut hosts = self.lock();
        let key = match hosts.get_key_value(authority) {
            Some((key, _)) => key.clone(),
            None => {
                let key: Arc<str> = Arc::from(authority);
                hosts.insert(key.clone(), Vec::new());
                key
            }
        };
        let tick = self.tick.load(Ordering::Relaxed);
        let mut found = None;
        if let Some(idle) = hosts.get_mut(authority) {
            // Most recently used first: the warmest, and the least likely to have been timed
            // out by the origin.
            let mut i = idle.len();
            while i > 0 {
                i -= 1;
                if idle[i].expired(tick) {
                    idle.swap_remove(i);
                    continue;
                }
                match idle[i].conn.health() {
                    Health::Gone => drop(idle.swap_remove(i)),
                    Health::Busy => {}
                    Health::Ready => {
                        found = Some(idle.swap_remove(i).conn);
                        break;
                    }
                }
            }
        }
        (key, found)
    }

    pub(super) fn give_back(&self, key: Arc<str>, conn: C) {
        let mut hosts = self.lock();
        let idle = hosts.entry(key).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle { conn, since: self.tick.load(Ordering::Relaxed) });
        }
    }

    /// Counts a tick and closes connections that are gone or idle past [`POOL_IDLE_TIMEOUT`].
    pub(super) fn reap(&self) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let mut hosts = self.lock();
        for idle in hosts.values_mut() {
            idle.retain_mut(|c| !c.expired(tick) && !matches!(c.conn.health(), Health::Gone));
        }
        hosts.retain(|_, idle| !idle.is_empty());
    }

    pub(super) fn idle(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }
}
