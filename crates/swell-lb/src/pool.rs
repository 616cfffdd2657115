//! Pool membership, per-backend accounting and the in-flight guard.
//!
//! The pool is an immutable snapshot (`Arc<[Member]>`) swapped under a lock, so
//! readers never block writers for long. Every backend ever seen also has a
//! [`BackendState`], whose mutex is the one place where "may this backend take a
//! new request?" and "how many requests does it have in flight?" are decided
//! together. That is what makes the drain contract exact: once
//! [`BackendState::leave`] has run, [`BackendState::try_acquire`] refuses the
//! backend, and every request acquired before it is counted in `in_flight`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::{Backend, BackendStats};

/// One entry of a pool snapshot.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<BackendState>,
}

/// Accounting for one backend id, kept for as long as the load balancer lives.
pub(crate) struct BackendState {
    id: String,
    counters: Mutex<Counters>,
    /// Woken whenever `in_flight` drops to zero.
    idle: Notify,
}

#[derive(Default)]
struct Counters {
    addr: Option<SocketAddr>,
    /// In the current pool: may take new requests. Never true while draining.
    in_pool: bool,
    draining_since: Option<SystemTime>,
    requests: u64,
    in_flight: u64,
    failures: u64,
    last_request_at: Option<SystemTime>,
    requests_after_drain: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the counters
    // half-updated in a way that matters more than losing the whole LB would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BackendState {
    fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            counters: Mutex::new(Counters::default()),
            idle: Notify::new(),
        }
    }

    /// Marks the backend as a pool member at `addr`; clears any drain mark.
    fn join(&self, addr: SocketAddr) {
        let mut c = lock(&self.counters);
        c.addr = Some(addr);
        c.in_pool = true;
        c.draining_since = None;
    }

    /// Takes the backend out of service: no new request will be acquired for it.
    /// With `drain`, also records when its drain began (the first time only).
    fn leave(&self, drain: bool) {
        let mut c = lock(&self.counters);
        c.in_pool = false;
        if drain && c.draining_since.is_none() {
            c.draining_since = Some(SystemTime::now());
        }
    }

    /// Dispatches one request to this backend, or refuses if it has left the pool.
    pub(crate) fn try_acquire(self: &Arc<Self>, addr: SocketAddr) -> Option<InFlightGuard> {
        let mut c = lock(&self.counters);
        if !c.in_pool {
            return None;
        }
        if c.draining_since.is_some() {
            // Unreachable while `leave`/`join` keep `draining => !in_pool`; counted
            // rather than asserted so that a regression shows up in the stats.
            c.requests_after_drain += 1;
            tracing::error!(backend = %self.id, "request dispatched to a draining backend");
        }
        c.requests += 1;
        c.in_flight += 1;
        c.last_request_at = Some(SystemTime::now());
        Some(InFlightGuard {
            state: Arc::clone(self),
            addr,
        })
    }

    pub(crate) fn in_flight(&self) -> u64 {
        lock(&self.counters).in_flight
    }

    pub(crate) fn requests_after_drain(&self) -> u64 {
        lock(&self.counters).requests_after_drain
    }

    /// Waits until nothing is in flight. Cancel-safe; no wake-up can be lost.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn stats(&self) -> BackendStats {
        let c = lock(&self.counters);
        BackendStats {
            id: self.id.clone(),
            addr: c.addr,
            in_pool: c.in_pool,
            requests: c.requests,
            in_flight: c.in_flight,
            failures: c.failures,
            last_request_at: c.last_request_at,
            draining_since: c.draining_since,
            requests_after_drain: c.requests_after_drain,
        }
    }
}

/// Proof that one request is in flight to one backend. Dropping it ends the
/// request for the accounting (and may complete a drain).
pub(crate) struct InFlightGuard {
    state: Arc<BackendState>,
    addr: SocketAddr,
}

impl InFlightGuard {
    pub(crate) fn id(&self) -> &str {
        &self.state.id
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts one failed attempt (connect error, upstream error, timeout).
    pub(crate) fn record_failure(&self) {
        lock(&self.state.counters).failures += 1;
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let now_idle = {
            let mut c = lock(&self.state.counters);
            c.in_flight -= 1;
            c.in_flight == 0
        };
        if now_idle {
            self.state.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("backend", &self.state.id)
            .field("addr", &self.addr)
            .finish()
    }
}

/// The current pool plus every backend ever seen.
pub(crate) struct Pool {
    snapshot: RwLock<Arc<[Member]>>,
    /// Serialises membership changes; holds the per-id accounting.
    states: Mutex<HashMap<String, Arc<BackendState>>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new() -> Self {
        Self {
            snapshot: RwLock::new(Arc::from(Vec::new())),
            states: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<[Member]> {
        Arc::clone(&self.snapshot.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn store(&self, members: Vec<Member>) {
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::from(members);
    }

    /// Replaces the pool. Returns the ids that joined and the ids that left.
    pub(crate) fn set(&self, backends: Vec<Backend>) -> (Vec<String>, Vec<String>) {
        let mut states = lock(&self.states);
        let old = self.snapshot();
        let mut members: Vec<Member> = Vec::with_capacity(backends.len());
        for b in backends {
            if members.iter().any(|m| m.id == b.id) {
                tracing::warn!(backend = %b.id, "duplicate backend id in pool update; keeping the first");
                continue;
            }
            let state = Arc::clone(
                states
                    .entry(b.id.clone())
                    .or_insert_with(|| Arc::new(BackendState::new(&b.id))),
            );
            members.push(Member {
                id: b.id,
                addr: b.addr,
                state,
            });
        }
        // Joiners are marked before they become visible, leavers after they have
        // vanished from the snapshot; `try_acquire` closes the remaining window.
        for m in &members {
            m.state.join(m.addr);
        }
        let joined = members
            .iter()
            .filter(|m| !old.iter().any(|o| o.id == m.id))
            .map(|m| m.id.clone())
            .collect();
        let left: Vec<Member> = old
            .iter()
            .filter(|o| !members.iter().any(|m| m.id == o.id))
            .cloned()
            .collect();
        self.store(members);
        for m in &left {
            m.state.leave(false);
        }
        (joined, left.into_iter().map(|m| m.id).collect())
    }

    /// Removes `id` from the pool (if present) and marks it draining.
    /// Returns its state, or `None` for an id never seen.
    pub(crate) fn begin_drain(&self, id: &str) -> Option<Arc<BackendState>> {
        let states = lock(&self.states);
        let state = Arc::clone(states.get(id)?);
        let old = self.snapshot();
        if old.iter().any(|m| m.id == id) {
            self.store(old.iter().filter(|m| m.id != id).cloned().collect());
        }
        state.leave(true);
        Some(state)
    }

    /// Round robin over the current pool, skipping `exclude` and any backend that
    /// left the pool after the snapshot was taken.
    pub(crate) fn acquire(&self, exclude: Option<&str>) -> Option<InFlightGuard> {
        // A refusal means the pool changed under us: look again at a fresh snapshot.
        for _ in 0..2 {
            let pool = self.snapshot();
            if pool.is_empty() {
                return None;
            }
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            for k in 0..pool.len() {
                let m = &pool[start.wrapping_add(k) % pool.len()];
                if exclude == Some(m.id.as_str()) {
                    continue;
                }
                if let Some(guard) = m.state.try_acquire(m.addr) {
                    return Some(guard);
                }
            }
        }
        None
    }

    pub(crate) fn state(&self, id: &str) -> Option<Arc<BackendState>> {
        lock(&self.states).get(id).cloned()
    }

    pub(crate) fn stats(&self) -> Vec<BackendStats> {
        let states: Vec<Arc<BackendState>> = lock(&self.states).values().cloned().collect();
        let mut stats: Vec<BackendStats> = states.iter().map(|s| s.stats()).collect();
        stats.sort_by(|a, b| a.id.cmp(&b.id));
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, port: u16) -> Backend {
        Backend {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn round_robin_visits_every_member_in_turn() {
        let pool = Pool::new();
        pool.set(vec![backend("a", 1), backend("b", 2), backend("c", 3)]);
        let ids: Vec<String> = (0..6)
            .map(|_| pool.acquire(None).unwrap().id().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn exclude_skips_the_failed_backend() {
        let pool = Pool::new();
        pool.set(vec![backend("a", 1), backend("b", 2)]);
        for _ in 0..4 {
            assert_eq!(pool.acquire(Some("a")).unwrap().id(), "b");
        }
        pool.set(vec![backend("a", 1)]);
        assert!(pool.acquire(Some("a")).is_none());
    }

    #[test]
    fn a_leaver_refuses_new_requests_even_from_an_old_snapshot() {
        let pool = Pool::new();
        pool.set(vec![backend("a", 1), backend("b", 2)]);
        let old = pool.snapshot();
        let held = pool.acquire(None).unwrap();
        assert_eq!(held.id(), "a");
        let state = pool.begin_drain("a").unwrap();
        // A request that picked `a` from the stale snapshot is refused.
        assert!(old[0].state.try_acquire(old[0].addr).is_none());
        assert_eq!(state.in_flight(), 1);
        drop(held);
        assert_eq!(state.in_flight(), 0);
        assert_eq!(state.requests_after_drain(), 0);
        let stats = pool.stats();
        assert!(stats[0].draining_since.is_some());
        assert!(!stats[0].in_pool);
        assert_eq!(pool.snapshot().len(), 1);
    }

    #[test]
    fn set_reports_joiners_and_leavers_and_rejoin_clears_drain() {
        let pool = Pool::new();
        let (joined, left) = pool.set(vec![backend("a", 1), backend("b", 2)]);
        assert_eq!((joined, left), (vec!["a".into(), "b".into()], vec![]));
        pool.begin_drain("a");
        let (joined, left) = pool.set(vec![backend("a", 1), backend("c", 3)]);
        assert_eq!(joined, vec!["a".to_owned(), "c".to_owned()]);
        assert_eq!(left, vec!["b".to_owned()]);
        let a = pool.stats().into_iter().find(|s| s.id == "a").unwrap();
        assert!(a.in_pool && a.draining_since.is_none());
    }

    #[test]
    fn duplicate_ids_keep_the_first() {
        let pool = Pool::new();
        pool.set(vec![backend("a", 1), backend("a", 2)]);
        let snap = pool.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].addr.port(), 1);
    }

    #[tokio::test]
    async fn idle_wakes_when_the_last_request_ends() {
        let pool = Pool::new();
        pool.set(vec![backend("a", 1)]);
        let g1 = pool.acquire(None).unwrap();
        let g2 = pool.acquire(None).unwrap();
        let state = pool.begin_drain("a").unwrap();
        let waiter = tokio::spawn({
            let state = Arc::clone(&state);
            async move { state.idle().await }
        });
        drop(g1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(g2);
        waiter.await.unwrap();
    }
}
