//! Login rate limiting: a token bucket per key (user name, source address) on the
//! injected clock, so tests move time instead of sleeping.

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

/// Buckets kept before idle, full ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// Token buckets by key.
pub struct Limiter {
    rate: Rate,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl Limiter {
    /// A limiter at `rate` on `clock`.
    pub fn new(rate: Rate, clock: Arc<dyn Clock>) -> Self {
        Limiter {
            rate,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one attempt for `key`; `Err(seconds)` says when the next one is allowed.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = self.clock.now().as_millis();
        let Rate { burst, refill_ms } = self.rate;
        let burst = f64::from(burst);
        let per_ms = 1.0 / refill_ms.max(1) as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, (tokens, at)| *tokens + (now - *at) as f64 * per_ms < burst);
        }
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + (now - *at).max(0) as f64 * per_ms).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - *tokens) / per_ms;
            Err((wait_ms / 1000.0).ceil().max(1.0) as u64)
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
        assert_eq!(l.check("bob"), Ok(()), "keys are independent");
        clock.0.store(5_000, Ordering::SeqCst);
        assert_eq!(l.check("ann"), Err(5));
        clock.0.store(10_000, Ordering::SeqCst);
        assert_eq!(l.check("ann"), Ok(()));
        assert!(l.check("ann").is_err());
    }
}
