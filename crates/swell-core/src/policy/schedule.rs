//! `schedule`: a cron expression in an IANA time zone opens a window of `duration` during
//! which the group's `min`, `max` and/or `desired` are overridden. Seed 2's rule: where a
//! schedule and a dynamic policy conflict, the schedule's count is the dynamic policies'
//! floor — the engine raises the group to it and lets the other policies scale above it.
//!
//! The time zone database is embedded (jiff's `tzdb-bundle-always`), so a schedule means
//! the same on every machine; daylight-saving gaps and folds follow jiff's rules.

use super::{CapacityOverride, GroupState, Policy, Recommendation};
use crate::duration::serde_human;
use crate::error::ValidationError;
use crate::event::Cause;
use crate::metrics::MetricWindow;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::time::Duration;

/// The schedule policy's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulePolicy {
    /// A cron expression (`minute hour day-of-month month day-of-week`, an optional
    /// leading seconds field), e.g. `0 8 * * MON-FRI`.
    pub cron: String,
    /// The IANA time zone the expression is read in (`UTC` by default).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How long each occurrence lasts.
    #[serde(with = "serde_human")]
    pub duration: Duration,
    /// The group's floor during the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// The group's ceiling during the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// The count the group is raised to during the window; dynamic policies may go
    /// above it, never below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
}

fn default_timezone() -> String {
    "UTC".into()
}

/// A schedule ready to evaluate: the parsed expression and zone, and the override of the
/// last evaluation.
#[derive(Debug, Clone)]
pub struct ScheduleRunner {
    spec: SchedulePolicy,
    cron: croner::Cron,
    zone: jiff::tz::TimeZone,
    active: Option<CapacityOverride>,
}

impl SchedulePolicy {
    /// Checks the policy's rules (the expression parses, the zone exists, the counts fit).
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.runner().map(|_| ())
    }

    /// The parsed schedule.
    pub fn runner(&self) -> Result<ScheduleRunner, ValidationError> {
        let cron = croner::Cron::from_str(&self.cron).map_err(|e| {
            ValidationError::new(
                "cron",
                format!("`{}` is not a cron expression: {e}", self.cron),
            )
        })?;
        let zone = jiff::tz::TimeZone::get(&self.timezone).map_err(|_| {
            ValidationError::new(
                "timezone",
                format!(
                    "`{}` is not an IANA time zone (e.g. Europe/Paris, UTC)",
                    self.timezone
                ),
            )
        })?;
        if self.duration.is_zero() {
            return Err(ValidationError::new("duration", "must be > 0"));
        }
        if self.min.is_none() && self.max.is_none() && self.desired.is_none() {
            return Err(ValidationError::new(
                "desired",
                "a schedule needs min, max, desired or several of them",
            ));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && max < min
        {
            return Err(ValidationError::new(
                "max",
                format!("max ({max}) must be >= min ({min})"),
            ));
        }
        if let (Some(d), Some(max)) = (self.desired, self.max)
            && d > max
        {
            return Err(ValidationError::new(
                "desired",
                format!("desired ({d}) must be <= max ({max})"),
            ));
        }
        Ok(ScheduleRunner {
            spec: self.clone(),
            cron,
            zone,
            active: None,
        })
    }
}

impl ScheduleRunner {
    /// The start of the occurrence whose window contains `now`, if any.
    pub fn active_since(&self, now: Timestamp) -> Option<Timestamp> {
        let instant = jiff::Timestamp::from_millisecond(now.as_millis()).ok()?;
        let zoned = instant.to_zoned(self.zone.clone());
        let start = self.cron.find_previous_occurrence(&zoned, true).ok()?;
        let start = Timestamp::from_millis(start.timestamp().as_millisecond());
        (now.since(start) < self.spec.duration && start <= now).then_some(start)
    }

    /// The override in force at `now`, if the schedule is active.
    pub fn override_at(&self, now: Timestamp) -> Option<CapacityOverride> {
        self.active_since(now).map(|_| CapacityOverride {
            min: self.spec.min,
            max: self.spec.max,
            desired: self.spec.desired,
        })
    }
}

impl Policy for ScheduleRunner {
    fn name(&self) -> &'static str {
        "schedule"
    }

    fn lookback(&self) -> Duration {
        Duration::ZERO
    }

    fn evaluate(
        &mut self,
        state: &GroupState,
        _window: &MetricWindow,
        now: Timestamp,
    ) -> Recommendation {
        self.active = self.override_at(now);
        let reason = match self.active {
            Some(o) => format!(
                "`{}` ({}) is active: {o}",
                self.spec.cron, self.spec.timezone
            ),
            None => format!(
                "`{}` ({}) is not active",
                self.spec.cron, self.spec.timezone
            ),
        };
        Recommendation {
            desired: None,
            cause: Cause {
                policy: "schedule".into(),
                before: state.desired_capacity,
                after: state.desired_capacity,
                reason,
                ..Cause::default()
            },
        }
    }

    fn capacity_override(&self) -> Option<CapacityOverride> {
        self.active
    }

    fn votes(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str, secs: u64, desired: Option<u32>) -> SchedulePolicy {
        SchedulePolicy {
            cron: cron.into(),
            timezone: tz.into(),
            duration: Duration::from_secs(secs),
            min: None,
            max: None,
            desired,
        }
    }

    fn at(iso: &str) -> Timestamp {
        let ts: jiff::Timestamp = iso.parse().unwrap();
        Timestamp::from_millis(ts.as_millisecond())
    }

    #[test]
    fn window_in_a_time_zone() {
        // 08:00 Paris on weekdays for 2 h; 2026-01-05 is a Monday, Paris is UTC+1 in winter.
        let r = schedule("0 8 * * MON-FRI", "Europe/Paris", 7200, Some(10))
            .runner()
            .unwrap();
        assert_eq!(r.override_at(at("2026-01-05T06:59:59Z")), None);
        assert!(r.override_at(at("2026-01-05T07:00:00Z")).is_some());
        assert!(r.override_at(at("2026-01-05T08:59:59Z")).is_some());
        assert_eq!(r.override_at(at("2026-01-05T09:00:00Z")), None);
        // Saturday: nothing.
        assert_eq!(r.override_at(at("2026-01-10T07:30:00Z")), None);
        // Summer: Paris is UTC+2, so the window opens at 06:00 UTC.
        assert!(r.override_at(at("2026-07-06T06:30:00Z")).is_some());
        assert_eq!(r.override_at(at("2026-07-06T05:30:00Z")), None);
    }

    #[test]
    fn windows_longer_than_the_period_overlap() {
        let r = schedule("*/10 * * * *", "UTC", 3600, Some(3))
            .runner()
            .unwrap();
        assert!(r.override_at(at("2026-01-05T12:34:56Z")).is_some());
    }

    #[test]
    fn bad_specs_name_the_field() {
        let err = |s: SchedulePolicy| s.validate().unwrap_err().field;
        assert_eq!(err(schedule("61 * * * *", "UTC", 60, Some(1))), "cron");
        assert_eq!(
            err(schedule("0 8 * * *", "Mars/Olympus", 60, Some(1))),
            "timezone"
        );
        assert_eq!(err(schedule("0 8 * * *", "UTC", 0, Some(1))), "duration");
        assert_eq!(err(schedule("0 8 * * *", "UTC", 60, None)), "desired");
        let mut s = schedule("0 8 * * *", "UTC", 60, None);
        s.min = Some(5);
        s.max = Some(2);
        assert_eq!(err(s), "max");
    }
}
