//! The injected clock (DESIGN.md invariant 5).

use std::time::{SystemTime, UNIX_EPOCH};
use swell_core::Timestamp;

/// Where the controller reads "now" from.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// Wall-clock time that advances with tokio's clock: real in production, and paused or
/// advanced together with `tokio::time` in tests, so timers and timestamps agree.
pub struct TokioClock {
    epoch_ms: i64,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock starting at the system's current time.
    pub fn new() -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        TokioClock {
            epoch_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.epoch_ms + self.start.elapsed().as_millis() as i64)
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]): for tests, and for
/// anything that must replay time.
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: Timestamp) -> Self {
        ManualClock(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now = now.add(by);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|poisoned| *poisoned.into_inner())
    }
}

/// RFC 3339 text for a timestamp (UTC), as the API shows times.
pub fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.as_millis())
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| t.as_millis().to_string())
}

/// Parses RFC 3339 text into a timestamp.
pub fn parse_rfc3339(text: &str) -> Result<Timestamp, String> {
    text.parse::<jiff::Timestamp>()
        .map(|ts| Timestamp::from_millis(ts.as_millisecond()))
        .map_err(|e| format!("`{text}` is not an RFC 3339 time (e.g. 2026-11-23T12:00:00Z): {e}"))
}
