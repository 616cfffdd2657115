//! Login rate limiting: a token bucket per key (source address, user + source, user) on
//! the injected clock, so tests move time instead of sleeping.
//!
//! Each limiter holds at most a fixed number of buckets ([`MAX_BUCKETS`] unless told
//! otherwise): when it is full, buckets that have refilled (they carry no information)
//! are dropped first, then the least recently used eighth. Keys are short by
//! construction (the caller validates user names before any lookup), so a limiter's
//! memory is bounded by its capacity times the longest key.

use crate::clock::Clock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How many attempts a bucket holds and how fast it refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Attempts allowed in a burst.
    pub burst: u32,
    /// Milliseconds to earn one attempt back.
    pub refill_ms: i64,
}

/// Buckets a limiter keeps at most (by default).
pub const MAX_BUCKETS: usize = 10_000;

/// What a limiter holds now: for tests and for the memory bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterSize {
    /// Buckets held.
    pub keys: usize,
    /// Bytes of their keys.
    pub key_bytes: usize,
}

/// Token buckets by key, at most `capacity` of them.
pub struct Limiter {
    rate: Rate,
    clock: Arc<dyn Clock>,
    capacity: usize,
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl Limiter {
    /// A limiter at `rate` on `clock`, holding at most [`MAX_BUCKETS`] buckets.
    pub fn new(rate: Rate, clock: Arc<dyn Clock>) -> Self {
        Self::with_capacity(rate, clock, MAX_BUCKETS)
    }

    /// A limiter holding at most `capacity` buckets (at least 8).
    pub fn with_capacity(rate: Rate, clock: Arc<dyn Clock>, capacity: usize) -> Self {
        Limiter {
            rate,
            clock,
            capacity: capacity.max(8),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How many buckets it holds and how many bytes their keys take.
    pub fn size(&self) -> LimiterSize {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        LimiterSize {
            keys: buckets.len(),
            key_bytes: buckets.keys().map(String::len).sum(),
        }
    }

    /// Whether `key` has an attempt left, without taking it; `Err(seconds)` as in
    /// [`Limiter::check`].
    pub fn peek(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now().as_millis();
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(key) {
            None => Ok(()),
            Some(&(tokens, at)) => self.verdict(self.refilled(tokens, at, now)),
        }
    }

    fn per_ms(&self) -> f64 {
        1.0 / self.rate.refill_ms.max(1) as f64
    }

    fn refilled(&self, tokens: f64, at: i64, now: i64) -> f64 {
        (tokens + (now - at).max(0) as f64 * self.per_ms()).min(f64::from(self.rate.burst))
    }

    fn verdict(&self, tokens: f64) -> Result<(), u64> {
        if tokens >= 1.0 {
            Ok(())
        } else {
            let wait_ms = (1.0 - tokens) / self.per_ms();
            Err((wait_ms / 1000.0).ceil().max(1.0) as u64)
        }
    }

    /// Takes one attempt for `key`; `Err(seconds)` says when the next one is allowed.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now().as_millis();
        let burst = f64::from(self.rate.burst);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.capacity {
            self.evict(&mut buckets, now);
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = self.refilled(*tokens, *at, now);
        *at = now;
        let verdict = self.verdict(*tokens);
        if verdict.is_ok() {
            *tokens -= 1.0;
        }
        verdict
    }

    /// Makes room: refilled buckets go first, then the least recently used eighth.
    fn evict(&self, buckets: &mut HashMap<String, (f64, i64)>, now: i64) {
        let burst = f64::from(self.rate.burst);
        buckets.retain(|_, (tokens, at)| self.refilled(*tokens, *at, now) < burst);
        if buckets.len() < self.capacity {
            return;
        }
        let mut ats: Vec<i64> = buckets.values().map(|(_, at)| *at).collect();
        let n = (self.capacity / 8).max(1).min(ats.len() - 1);
        let (_, cut, _) = ats.select_nth_unstable(n);
        let cut = *cut;
        buckets.retain(|_, (_, at)| *at > cut);
        // Many buckets touched in the same millisecond: drop arbitrary ones to fit.
        while buckets.len() >= self.capacity {
            let Some(k) = buckets.keys().next().cloned() else {
                break;
            };
            buckets.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, Ordering};
    use swell_core::Timestamp;

    struct Manual(AtomicI64);
    impl Clock for Manual {
        fn now(&self) -> Timestamp {
            Timestamp::from_millis(self.0.load(Ordering::SeqCst))
        }
    }

    #[test]
    fn burst_then_refill_per_key() {
        let clock = Arc::new(Manual(AtomicI64::new(0)));
        let l = Limiter::new(
            Rate {
                burst: 3,
                refill_ms: 10_000,
            },
            clock.clone(),
        );
        for _ in 0..3 {
            assert_eq!(l.check("ann"), Ok(()));
        }
        assert_eq!(l.check("ann"), Err(10));
        assert_eq!(l.peek("ann"), Err(10));
        assert_eq!(l.check("bob"), Ok(()), "keys are independent");
        clock.0.store(5_000, Ordering::SeqCst);
        assert_eq!(l.check("ann"), Err(5));
        clock.0.store(10_000, Ordering::SeqCst);
        assert_eq!(l.peek("ann"), Ok(()));
        assert_eq!(l.check("ann"), Ok(()));
        assert!(l.check("ann").is_err());
    }

    /// Unique keys never grow the map beyond its capacity, even when no bucket has
    /// refilled; the most recently used buckets (an attacker's empty one) survive.
    #[test]
    fn capacity_is_a_hard_bound_and_recent_buckets_survive() {
        let clock = Arc::new(Manual(AtomicI64::new(0)));
        let rate = Rate {
            burst: 2,
            refill_ms: 30_000,
        };
        let l = Limiter::with_capacity(rate, clock.clone(), 100);
        for i in 0..10_000 {
            clock.0.store(i, Ordering::SeqCst);
            let _ = l.check(&format!("junk-{i}"));
            assert!(l.size().keys <= 100, "at {i}: {:?}", l.size());
            if i % 50 == 0 {
                // A key in use stays: its bucket is among the most recent.
                let _ = l.check("attacker");
            }
        }
        let _ = l.check("attacker");
        assert!(l.check("attacker").is_err(), "the busy bucket was kept");
        let size = l.size();
        assert!(size.keys <= 100 && size.key_bytes <= 100 * 10, "{size:?}");
    }
}
