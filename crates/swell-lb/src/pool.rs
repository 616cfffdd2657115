//! Pool membership, balancing, health state, per-backend accounting and the
//! in-flight guard.
//!
//! The *configured* pool (what the controller set, with weights) and the
//! *routing* snapshot (the configured members that are healthy and not
//! ejected, plus a precomputed weighted round-robin schedule) are kept apart.
//! The routing snapshot is immutable (`Arc<Routing>`) and swapped under a lock
//! on every membership or health change, so readers never block writers for
//! long and a membership change never touches an open connection.
//!
//! Every backend ever seen also has a [`BackendState`], whose mutex is the one
//! place where "may this backend take a new request?" and "how many requests
//! does it have in flight?" are decided together. That is what makes the drain
//! contract exact: once [`BackendState::leave`] has run,
//! [`BackendState::try_acquire`] refuses the backend, and every request
//! acquired before it is counted in `in_flight`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::SystemTime;

use tokio::sync::{Notify, watch};

use crate::traffic::RateWindow;
use crate::{Algorithm, Backend, BackendStats, Health, WeightedBackend};

/// The largest weight honoured; larger ones are clamped to it (it bounds the
/// size of the round-robin schedule).
pub(crate) const MAX_WEIGHT: u32 = 100;

/// One entry of the configured pool.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) id: String,
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) state: Arc<BackendState>,
}

impl Member {
    /// The backend's current health.
    pub(crate) fn state_health(&self) -> Health {
        lock(&self.state.counters).health
    }
}

/// What requests are spread over: the routable members and, for weighted
/// round robin, the order in which they are visited.
pub(crate) struct Routing {
    pub(crate) members: Vec<Member>,
    /// Indices into `members`, each appearing `weight` times, interleaved
    /// smoothly (nginx's smooth weighted round robin, precomputed).
    schedule: Vec<usize>,
}

/// Accounting and health for one backend id, kept for as long as the load
/// balancer lives.
pub(crate) struct BackendState {
    id: String,
    counters: Mutex<Counters>,
    /// Mirror of `counters.in_flight`, read lock-free by least-outstanding.
    outstanding: AtomicU64,
    /// Consecutive failed requests (passive health); reset by a success.
    passive_failures: AtomicU32,
    /// Requests per second over the last minute.
    pub(crate) rate: RateWindow,
    /// Woken whenever `in_flight` drops to zero.
    idle: Notify,
}

#[derive(Default)]
struct Counters {
    addr: Option<SocketAddr>,
    weight: u32,
    /// In the current pool: may take new requests. Never true while draining.
    in_pool: bool,
    draining_since: Option<SystemTime>,
    requests: u64,
    in_flight: u64,
    failures: u64,
    last_request_at: Option<SystemTime>,
    requests_after_drain: u64,
    health: Health,
    /// When the backend last became unhealthy or was ejected.
    unhealthy_since: Option<SystemTime>,
    /// Consecutive active-check results of the current kind.
    checks_ok: u32,
    checks_failed: u32,
    /// Taken out of routing by passive ejection until re-admitted.
    ejected: bool,
    ejections: u64,
}

impl Counters {
    fn routable(&self) -> bool {
        self.health == Health::Healthy && !self.ejected
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the counters
    // half-updated in a way that matters more than losing the whole LB would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BackendState {
    fn new(id: &str, health: Health) -> Self {
        Self {
            id: id.to_owned(),
            counters: Mutex::new(Counters {
                health,
                ..Counters::default()
            }),
            outstanding: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            rate: RateWindow::new(),
            idle: Notify::new(),
        }
    }

    /// Marks the backend as a pool member at `addr`; clears any drain mark.
    fn join(&self, addr: SocketAddr, weight: u32) {
        let mut c = lock(&self.counters);
        c.addr = Some(addr);
        c.weight = weight;
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

    fn routable(&self) -> bool {
        lock(&self.counters).routable()
    }

    /// Dispatches one request to this backend, or refuses if it has left the
    /// pool or stopped being routable (unhealthy, ejected).
    pub(crate) fn try_acquire(self: &Arc<Self>, addr: SocketAddr) -> Option<InFlightGuard> {
        // Read before the lock, which every worker takes: the shorter the
        // critical section, the less likely a worker is descheduled inside it
        // while another waits.
        let now = SystemTime::now();
        let mut c = lock(&self.counters);
        if !c.in_pool || !c.routable() {
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
        c.last_request_at = Some(now);
        drop(c);
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        self.rate.record();
        Some(InFlightGuard {
            state: Arc::clone(self),
            addr,
        })
    }

    /// The backend's last known address.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        lock(&self.counters).addr
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
            weight: c.weight,
            in_pool: c.in_pool,
            requests: c.requests,
            in_flight: c.in_flight,
            failures: c.failures,
            last_request_at: c.last_request_at,
            draining_since: c.draining_since,
            requests_after_drain: c.requests_after_drain,
            health: c.health,
            ejected: c.ejected,
            ejections: c.ejections,
            unhealthy_since: c.unhealthy_since,
            request_rate: self.rate.per_second(),
        }
    }
}

/// Proof that one request (or, in TCP mode, one connection) is in flight to
/// one backend. Dropping it ends it for the accounting (and may complete a
/// drain).
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

    pub(crate) fn state(&self) -> &Arc<BackendState> {
        &self.state
    }

    /// Counts one failed attempt (connect error, upstream error, timeout).
    pub(crate) fn record_failure(&self) {
        lock(&self.state.counters).failures += 1;
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state.outstanding.fetch_sub(1, Ordering::Relaxed);
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

/// What the controller configured, plus every backend ever seen.
struct Configured {
    members: Vec<Member>,
    states: HashMap<String, Arc<BackendState>>,
}

/// Which state a backend is in after a health event, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    BecameHealthy,
    BecameUnhealthy,
}

/// The configured pool, the routing snapshot and every backend ever seen.
pub(crate) struct Pool {
    routing: RwLock<Arc<Routing>>,
    /// Serialises membership and health changes.
    configured: Mutex<Configured>,
    next: AtomicUsize,
    algorithm: Algorithm,
    /// Health a backend starts with when first seen: `Healthy` when active
    /// checks are off, `Pending` when an instance must pass them first.
    initial_health: Health,
    /// Bumped on every health change (and on every membership change).
    changes: watch::Sender<u64>,
}

impl Pool {
    pub(crate) fn new(algorithm: Algorithm, initial_health: Health) -> Self {
        Self {
            routing: RwLock::new(Arc::new(Routing {
                members: Vec::new(),
                schedule: Vec::new(),
            })),
            configured: Mutex::new(Configured {
                members: Vec::new(),
                states: HashMap::new(),
            }),
            next: AtomicUsize::new(0),
            algorithm,
            initial_health,
            changes: watch::Sender::new(0),
        }
    }

    /// The current routing snapshot.
    pub(crate) fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configured pool, routable or not.
    pub(crate) fn configured(&self) -> Vec<Member> {
        lock(&self.configured).members.clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// Recomputes the routing snapshot from the configured pool.
    fn rebuild(&self, configured: &Configured) {
        let members: Vec<Member> = configured
            .members
            .iter()
            .filter(|m| m.state.routable())
            .cloned()
            .collect();
        let weights: Vec<u32> = members.iter().map(|m| m.weight).collect();
        let schedule = smooth_schedule(&weights);
        *self.routing.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Routing { members, schedule });
    }

    /// Replaces the configured pool. Returns the ids that joined and the ids
    /// that left.
    pub(crate) fn set(&self, backends: Vec<WeightedBackend>) -> (Vec<String>, Vec<String>) {
        let mut conf = lock(&self.configured);
        let mut members: Vec<Member> = Vec::with_capacity(backends.len());
        for WeightedBackend {
            backend: Backend { id, addr },
            weight,
        } in backends
        {
            if members.iter().any(|m| m.id == id) {
                tracing::warn!(backend = %id, "duplicate backend id in pool update; keeping the first");
                continue;
            }
            let initial = self.initial_health;
            let state = Arc::clone(
                conf.states
                    .entry(id.clone())
                    .or_insert_with(|| Arc::new(BackendState::new(&id, initial))),
            );
            members.push(Member {
                id,
                addr,
                weight: weight.clamp(1, MAX_WEIGHT),
                state,
            });
        }
        // Joiners are marked before they become visible, leavers after they have
        // vanished from the snapshot; `try_acquire` closes the remaining window.
        for m in &members {
            m.state.join(m.addr, m.weight);
        }
        let old = std::mem::replace(&mut conf.members, members);
        let joined = conf
            .members
            .iter()
            .filter(|m| !old.iter().any(|o| o.id == m.id))
            .map(|m| m.id.clone())
            .collect();
        let left: Vec<Member> = old
            .into_iter()
            .filter(|o| !conf.members.iter().any(|m| m.id == o.id))
            .collect();
        self.rebuild(&conf);
        for m in &left {
            m.state.leave(false);
        }
        drop(conf);
        self.bump();
        (joined, left.into_iter().map(|m| m.id).collect())
    }

    /// Removes `id` from the pool (if present) and marks it draining.
    /// Returns its state, or `None` for an id never seen.
    pub(crate) fn begin_drain(&self, id: &str) -> Option<Arc<BackendState>> {
        let mut conf = lock(&self.configured);
        let state = Arc::clone(conf.states.get(id)?);
        if conf.members.iter().any(|m| m.id == id) {
            conf.members.retain(|m| m.id != id);
            self.rebuild(&conf);
        }
        state.leave(true);
        drop(conf);
        self.bump();
        Some(state)
    }

    /// Picks a backend by the pool's algorithm, skipping `exclude` and any
    /// backend that left the pool after the snapshot was taken.
    pub(crate) fn acquire(&self, exclude: Option<&str>) -> Option<InFlightGuard> {
        // A refusal means the pool changed under us: look again at a fresh snapshot.
        for _ in 0..2 {
            let routing = self.routing();
            if routing.members.is_empty() {
                return None;
            }
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            if self.algorithm == Algorithm::LeastOutstanding
                && let Some(best) = least_outstanding(&routing.members, start, exclude)
                && let Some(guard) = best.state.try_acquire(best.addr)
            {
                return Some(guard);
            }
            // Round robin (also the fallback when the least loaded one refused).
            let schedule = &routing.schedule;
            for k in 0..schedule.len() {
                let m = &routing.members[schedule[start.wrapping_add(k) % schedule.len()]];
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
        lock(&self.configured).states.get(id).cloned()
    }

    pub(crate) fn stats(&self) -> Vec<BackendStats> {
        let states: Vec<Arc<BackendState>> =
            lock(&self.configured).states.values().cloned().collect();
        let mut stats: Vec<BackendStats> = states.iter().map(|s| s.stats()).collect();
        stats.sort_by(|a, b| a.id.cmp(&b.id));
        stats
    }

    /// Applies one active health-check result to `id`.
    pub(crate) fn record_check(
        &self,
        id: &str,
        ok: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Transition {
        let conf = lock(&self.configured);
        let Some(state) = conf.states.get(id) else {
            return Transition::None;
        };
        let transition = {
            let mut c = lock(&state.counters);
            if ok {
                c.checks_ok = c.checks_ok.saturating_add(1);
                c.checks_failed = 0;
                if c.health != Health::Healthy && c.checks_ok >= healthy_threshold.max(1) {
                    c.health = Health::Healthy;
                    c.unhealthy_since = None;
                    // An instance that recovered is trusted again by passive checks.
                    c.ejected = false;
                    state.passive_failures.store(0, Ordering::Relaxed);
                    Transition::BecameHealthy
                } else {
                    Transition::None
                }
            } else {
                c.checks_failed = c.checks_failed.saturating_add(1);
                c.checks_ok = 0;
                if c.health != Health::Unhealthy && c.checks_failed >= unhealthy_threshold.max(1) {
                    c.health = Health::Unhealthy;
                    c.unhealthy_since.get_or_insert_with(SystemTime::now);
                    Transition::BecameUnhealthy
                } else {
                    Transition::None
                }
            }
        };
        if transition != Transition::None {
            self.rebuild(&conf);
            drop(conf);
            self.bump();
        }
        transition
    }

    /// Records the outcome of one request to `state`'s backend for passive
    /// health. Returns true when this failure ejected the backend: the caller
    /// re-admits it later with [`Pool::readmit`].
    pub(crate) fn record_outcome(
        &self,
        state: &Arc<BackendState>,
        ok: bool,
        threshold: u32,
    ) -> bool {
        if ok {
            if state.passive_failures.load(Ordering::Relaxed) != 0 {
                state.passive_failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let failures = state.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold.max(1) {
            return false;
        }
        let conf = lock(&self.configured);
        // Never eject the last routable backend: that would turn a struggling
        // service into one that serves nothing at all.
        let routable_others = conf
            .members
            .iter()
            .filter(|m| !Arc::ptr_eq(&m.state, state) && m.state.routable())
            .count();
        if routable_others == 0 {
            return false;
        }
        {
            let mut c = lock(&state.counters);
            if c.ejected || !c.in_pool {
                return false;
            }
            c.ejected = true;
            c.ejections += 1;
            c.unhealthy_since.get_or_insert_with(SystemTime::now);
        }
        state.passive_failures.store(0, Ordering::Relaxed);
        self.rebuild(&conf);
        drop(conf);
        self.bump();
        true
    }

    /// Ends a passive ejection of `state`'s backend.
    pub(crate) fn readmit(&self, state: &Arc<BackendState>) {
        let conf = lock(&self.configured);
        {
            let mut c = lock(&state.counters);
            if !c.ejected {
                return;
            }
            c.ejected = false;
            if c.health == Health::Healthy {
                c.unhealthy_since = None;
            }
        }
        self.rebuild(&conf);
        drop(conf);
        self.bump();
    }

    /// Configured backends that are unhealthy or ejected, with since when.
    pub(crate) fn unhealthy(&self) -> Vec<(String, SystemTime)> {
        let conf = lock(&self.configured);
        let mut out: Vec<(String, SystemTime)> = conf
            .members
            .iter()
            .filter_map(|m| {
                let c = lock(&m.state.counters);
                let bad = c.health == Health::Unhealthy || c.ejected;
                bad.then(|| {
                    (
                        m.id.clone(),
                        c.unhealthy_since.unwrap_or_else(SystemTime::now),
                    )
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// The routable member with the fewest requests in flight relative to its
/// weight, scanning from `start` so that ties rotate.
fn least_outstanding<'a>(
    members: &'a [Member],
    start: usize,
    exclude: Option<&str>,
) -> Option<&'a Member> {
    let n = members.len();
    let mut best: Option<(&Member, u64)> = None;
    for k in 0..n {
        let m = &members[start.wrapping_add(k) % n];
        if exclude == Some(m.id.as_str()) {
            continue;
        }
        let out = m.state.outstanding.load(Ordering::Relaxed);
        // out / weight < best_out / best_weight, without division.
        let better = match best {
            None => true,
            Some((b, b_out)) => out * u64::from(b.weight) < b_out * u64::from(m.weight),
        };
        if better {
            best = Some((m, out));
        }
    }
    best.map(|(m, _)| m)
}

/// nginx's smooth weighted round robin, unrolled into one full cycle: each
/// index appears `weights[i]` times, spread as evenly as possible.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, port: u16) -> WeightedBackend {
        weighted(id, port, 1)
    }

    fn weighted(id: &str, port: u16, weight: u32) -> WeightedBackend {
        WeightedBackend {
            backend: Backend {
                id: id.to_owned(),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            },
            weight,
        }
    }

    fn pool() -> Pool {
        Pool::new(Algorithm::RoundRobin, Health::Healthy)
    }

    #[test]
    fn round_robin_visits_every_member_in_turn() {
        let pool = pool();
        pool.set(vec![backend("a", 1), backend("b", 2), backend("c", 3)]);
        let ids: Vec<String> = (0..6)
            .map(|_| pool.acquire(None).unwrap().id().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn smooth_schedule_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[1, 1, 1]), [0, 1, 2]);
        assert_eq!(smooth_schedule(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[3, 1]), [0, 0, 1, 0]);
        assert!(smooth_schedule(&[]).is_empty());
    }

    #[test]
    fn weighted_round_robin_follows_the_weights() {
        let pool = pool();
        pool.set(vec![weighted("a", 1, 3), weighted("b", 2, 1)]);
        let mut counts = HashMap::<String, u32>::new();
        for _ in 0..400 {
            *counts
                .entry(pool.acquire(None).unwrap().id().to_owned())
                .or_default() += 1;
        }
        assert_eq!(counts["a"], 300);
        assert_eq!(counts["b"], 100);
    }

    #[test]
    fn least_outstanding_prefers_the_idle_backend() {
        let pool = Pool::new(Algorithm::LeastOutstanding, Health::Healthy);
        pool.set(vec![backend("a", 1), backend("b", 2)]);
        let held = pool.acquire(None).unwrap();
        let busy = held.id().to_owned();
        // While one request is held, every new one goes to the other backend.
        for _ in 0..5 {
            let g = pool.acquire(None).unwrap();
            assert_ne!(g.id(), busy);
        }
        drop(held);
    }

    #[test]
    fn least_outstanding_honours_weights() {
        let pool = Pool::new(Algorithm::LeastOutstanding, Health::Healthy);
        pool.set(vec![weighted("a", 1, 2), weighted("b", 2, 1)]);
        let held: Vec<InFlightGuard> = (0..6).map(|_| pool.acquire(None).unwrap()).collect();
        let a = held.iter().filter(|g| g.id() == "a").count();
        assert_eq!(a, 4, "a has twice b's weight, so twice its share in flight");
    }

    #[test]
    fn exclude_skips_the_failed_backend() {
        let pool = pool();
        pool.set(vec![backend("a", 1), backend("b", 2)]);
        for _ in 0..4 {
            assert_eq!(pool.acquire(Some("a")).unwrap().id(), "b");
        }
        pool.set(vec![backend("a", 1)]);
        assert!(pool.acquire(Some("a")).is_none());
    }

    #[test]
    fn a_leaver_refuses_new_requests_even_from_an_old_snapshot() {
        let pool = pool();
        pool.set(vec![backend("a", 1), backend("b", 2)]);
        let old = pool.routing();
        let held = pool.acquire(None).unwrap();
        assert_eq!(held.id(), "a");
        let state = pool.begin_drain("a").unwrap();
        // A request that picked `a` from the stale snapshot is refused.
        let m = &old.members[0];
        assert!(m.state.try_acquire(m.addr).is_none());
        assert_eq!(state.in_flight(), 1);
        drop(held);
        assert_eq!(state.in_flight(), 0);
        assert_eq!(state.requests_after_drain(), 0);
        let stats = pool.stats();
        assert!(stats[0].draining_since.is_some());
        assert!(!stats[0].in_pool);
        assert_eq!(pool.routing().members.len(), 1);
    }

    #[test]
    fn set_reports_joiners_and_leavers_and_rejoin_clears_drain() {
        let pool = pool();
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
        let pool = pool();
        pool.set(vec![backend("a", 1), backend("a", 2)]);
        let conf = pool.configured();
        assert_eq!(conf.len(), 1);
        assert_eq!(conf[0].addr.port(), 1);
    }

    #[test]
    fn pending_backends_join_routing_only_once_healthy() {
        let pool = Pool::new(Algorithm::RoundRobin, Health::Pending);
        pool.set(vec![backend("a", 1)]);
        assert!(pool.acquire(None).is_none());
        assert_eq!(pool.record_check("a", true, 2, 3), Transition::None);
        assert!(pool.acquire(None).is_none());
        assert_eq!(
            pool.record_check("a", true, 2, 3),
            Transition::BecameHealthy
        );
        assert!(pool.acquire(None).is_some());
        for _ in 0..2 {
            assert_eq!(pool.record_check("a", false, 2, 3), Transition::None);
        }
        assert!(pool.unhealthy().is_empty());
        assert_eq!(
            pool.record_check("a", false, 2, 3),
            Transition::BecameUnhealthy
        );
        assert!(pool.acquire(None).is_none());
        assert_eq!(pool.unhealthy().len(), 1);
    }

    #[test]
    fn passive_ejection_never_ejects_the_last_backend() {
        let pool = pool();
        pool.set(vec![backend("a", 1), backend("b", 2)]);
        let a = pool.state("a").unwrap();
        let b = pool.state("b").unwrap();
        assert!(!pool.record_outcome(&a, false, 2));
        assert!(
            !pool.record_outcome(&a, true, 2),
            "a success resets the count"
        );
        assert!(!pool.record_outcome(&a, false, 2));
        assert!(pool.record_outcome(&a, false, 2));
        assert_eq!(pool.routing().members.len(), 1);
        assert_eq!(pool.unhealthy()[0].0, "a");
        for _ in 0..5 {
            assert!(!pool.record_outcome(&b, false, 2));
        }
        assert_eq!(pool.routing().members[0].id, "b");
        pool.readmit(&a);
        assert_eq!(pool.routing().members.len(), 2);
        assert!(pool.unhealthy().is_empty());
    }

    #[tokio::test]
    async fn idle_wakes_when_the_last_request_ends() {
        let pool = pool();
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
