//! Cost: instance-hours and what they cost, from instances' lifetimes and the prices an
//! admin set, per group over a period; and what the same period would have cost at the
//! group's peak size (the saving autoscaling made, seed 3's argument).
//!
//! Pure: the server reads the lifetimes (the instance rows) and the price changes from
//! the store and passes `since`/`until` in. Every instance is counted from its create
//! intent to its end (`terminated` or `failed`) or, while it lives, to `until`: booting
//! and draining instances are paid for, like the simulator's `instance_hours`.

use crate::{Timestamp, ValidationError};
use std::time::Duration;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// One instance's life as far as cost goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Lifetime {
    /// When it was created (its create intent; it is paid for while it boots).
    pub start: Timestamp,
    /// When it ended (terminated or failed); `None` while it lives.
    pub end: Option<Timestamp>,
    /// Its provider's name (`process`, `openstack-acme`).
    pub provider: String,
    /// Its size where its provider has sizes (the OpenStack flavor), else `None`.
    pub size: Option<String>,
}

/// A price set by an admin: from `from` on, one instance-hour on `provider` (of `size`,
/// or of any size when `None`) costs `per_hour`, until the next change of the same key.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceChange {
    /// The provider's name.
    pub provider: String,
    /// The size it is for; `None`: every size without a price of its own.
    pub size: Option<String>,
    /// When it takes effect.
    pub from: Timestamp,
    /// The price of one instance-hour, in the operator's currency.
    pub per_hour: f64,
}

/// Checks a price: a finite number, zero or more.
pub fn check_price(per_hour: f64) -> Result<(), ValidationError> {
    if !per_hour.is_finite() || per_hour < 0.0 {
        return Err(ValidationError::new(
            "per_hour",
            format!("must be a number >= 0 (got {per_hour})"),
        ));
    }
    Ok(())
}

/// The price of one instance-hour of `provider`/`size` at `at`: the latest change of
/// that size in force, else the latest provider-wide one, else `None` (unpriced).
pub fn price_at(
    prices: &[PriceChange],
    provider: &str,
    size: Option<&str>,
    at: Timestamp,
) -> Option<f64> {
    let latest = |want: Option<&str>| {
        prices
            .iter()
            .filter(|p| p.provider == provider && p.size.as_deref() == want && p.from <= at)
            .max_by_key(|p| p.from)
            .map(|p| p.per_hour)
    };
    size.and_then(|s| latest(Some(s))).or_else(|| latest(None))
}

/// One step of a group's usage over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Where the step starts (its end is the next one's start, or the period's end).
    pub start: Timestamp,
    /// Instance-hours within the step.
    pub instance_hours: f64,
    /// What they cost.
    pub cost: f64,
}

/// A group's usage over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// Instance-hours within the period.
    pub instance_hours: f64,
    /// What they cost at the prices in force.
    pub cost: f64,
    /// Instance-hours on a provider (and size) without a price: not in `cost`.
    pub unpriced_hours: f64,
    /// The most instances alive at once within the period.
    pub peak_instances: u32,
    /// What the period would have cost with `peak_instances` instances throughout, at
    /// the group's own provider and size's prices.
    pub peak_cost: f64,
    /// `peak_cost - cost`: what scaling saved against holding the peak size.
    pub saving: f64,
    /// The period in steps (aligned to multiples of the step since the epoch, so days
    /// start at midnight UTC; the first and last may be partial).
    pub buckets: Vec<Bucket>,
}

/// What to compute over.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    /// Start (inclusive).
    pub since: Timestamp,
    /// End (exclusive); an instance still alive counts up to here.
    pub until: Timestamp,
    /// The step of [`Usage::buckets`].
    pub step: Duration,
}

/// The group's usage over `period`: the lifetimes' instance-hours, their cost at the
/// prices in force at each moment (a price change mid-life splits the life), the peak,
/// and what `peak_instances` on `own` (the group's provider and size) would have cost.
pub fn usage(
    lifetimes: &[Lifetime],
    prices: &[PriceChange],
    own: (&str, Option<&str>),
    period: &Period,
) -> Usage {
    let (since, until) = (period.since, period.until.max(period.since));
    let step = (period.step.as_millis().clamp(1, i64::MAX as u128)) as i64;
    let mut buckets = Vec::new();
    let mut edge = since.0.div_euclid(step) * step;
    while edge < until.0 {
        buckets.push(Bucket {
            start: Timestamp(edge.max(since.0)),
            instance_hours: 0.0,
            cost: 0.0,
        });
        edge = edge.saturating_add(step);
    }
    let bucket_of =
        |t: i64| ((t.div_euclid(step) * step - since.0.div_euclid(step) * step) / step) as usize;
    let mut out = Usage {
        instance_hours: 0.0,
        cost: 0.0,
        unpriced_hours: 0.0,
        peak_instances: 0,
        peak_cost: 0.0,
        saving: 0.0,
        buckets: Vec::new(),
    };
    // Where a price can change: every change's time, within the period.
    let mut changes: Vec<i64> = prices
        .iter()
        .map(|p| p.from.0)
        .filter(|t| *t > since.0 && *t < until.0)
        .collect();
    changes.sort_unstable();
    changes.dedup();
    let segments = |a: i64, b: i64| {
        // [a, b) cut at every bucket edge and price change inside it.
        let mut cuts: Vec<i64> = changes
            .iter()
            .copied()
            .filter(|t| *t > a && *t < b)
            .collect();
        let mut e = (a.div_euclid(step) + 1).saturating_mul(step);
        while e < b {
            cuts.push(e);
            e = e.saturating_add(step);
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut points = vec![a];
        points.extend(cuts);
        points.push(b);
        points.windows(2).map(|w| (w[0], w[1])).collect::<Vec<_>>()
    };
    let mut marks: Vec<(i64, i32)> = Vec::new();
    for life in lifetimes {
        let a = life.start.0.max(since.0);
        let b = life.end.unwrap_or(until).0.min(until.0);
        if b <= a {
            continue;
        }
        marks.push((a, 1));
        marks.push((b, -1));
        for (x, y) in segments(a, b) {
            let hours = (y - x) as f64 / MS_PER_HOUR;
            out.instance_hours += hours;
            let bucket = &mut buckets[bucket_of(x)];
            bucket.instance_hours += hours;
            match price_at(prices, &life.provider, life.size.as_deref(), Timestamp(x)) {
                Some(price) => {
                    out.cost += hours * price;
                    bucket.cost += hours * price;
                }
                None => out.unpriced_hours += hours,
            }
        }
    }
    // Ends before starts at the same moment: a replacement is not an overlap.
    marks.sort_unstable();
    let mut alive = 0i32;
    for (_, d) in marks {
        alive += d;
        out.peak_instances = out.peak_instances.max(alive.max(0) as u32);
    }
    let mut one_instance = 0.0;
    if since < until {
        let mut points = vec![since.0];
        points.extend(changes.iter().copied());
        points.push(until.0);
        for w in points.windows(2) {
            let price = price_at(prices, own.0, own.1, Timestamp(w[0])).unwrap_or(0.0);
            one_instance += (w[1] - w[0]) as f64 / MS_PER_HOUR * price;
        }
    }
    out.peak_cost = f64::from(out.peak_instances) * one_instance;
    out.saving = out.peak_cost - out.cost;
    out.buckets = buckets;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn t(hours: f64) -> Timestamp {
        Timestamp((hours * H as f64) as i64)
    }

    fn life(start: f64, end: Option<f64>, provider: &str, size: Option<&str>) -> Lifetime {
        Lifetime {
            start: t(start),
            end: end.map(t),
            provider: provider.into(),
            size: size.map(Into::into),
        }
    }

    fn price(provider: &str, size: Option<&str>, from: f64, per_hour: f64) -> PriceChange {
        PriceChange {
            provider: provider.into(),
            size: size.map(Into::into),
            from: t(from),
            per_hour,
        }
    }

    /// (instance-hours, cost, unpriced hours, peak, peak cost), each to 1e-9.
    type Expected = (f64, f64, f64, u32, f64);

    /// A case: its name, the lives, the prices, the period in hours, what is expected.
    type Case = (
        &'static str,
        Vec<Lifetime>,
        Vec<PriceChange>,
        (f64, f64),
        Expected,
    );

    fn check(cases: Vec<Case>) {
        for (name, lifetimes, prices, (since, until), expected) in cases {
            let period = Period {
                since: t(since),
                until: t(until),
                step: Duration::from_secs(3600),
            };
            let u = usage(&lifetimes, &prices, ("p", None), &period);
            let got = (
                u.instance_hours,
                u.cost,
                u.unpriced_hours,
                u.peak_instances,
                u.peak_cost,
            );
            let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
            assert!(
                close(got.0, expected.0)
                    && close(got.1, expected.1)
                    && close(got.2, expected.2)
                    && got.3 == expected.3
                    && close(got.4, expected.4),
                "{name}: got {got:?}, expected {expected:?}"
            );
            assert!(close(u.saving, u.peak_cost - u.cost), "{name}: saving");
            let sum_h: f64 = u.buckets.iter().map(|b| b.instance_hours).sum();
            let sum_c: f64 = u.buckets.iter().map(|b| b.cost).sum();
            assert!(close(sum_h, u.instance_hours), "{name}: buckets' hours");
            assert!(close(sum_c, u.cost), "{name}: buckets' cost");
        }
    }

    #[test]
    fn cost_by_hand() {
        let p1 = || vec![price("p", None, 0.0, 1.0)];
        check(vec![
            (
                "nothing ran",
                vec![],
                p1(),
                (0.0, 10.0),
                (0.0, 0.0, 0.0, 0, 0.0),
            ),
            (
                "one instance, whole period",
                vec![life(0.0, Some(10.0), "p", None)],
                p1(),
                (0.0, 10.0),
                (10.0, 10.0, 0.0, 1, 10.0),
            ),
            (
                // 0-4 and 2-6 overlap for 2 h: 8 h, peak 2, 2 × 6 h at peak.
                "overlapping instances",
                vec![
                    life(0.0, Some(4.0), "p", None),
                    life(2.0, Some(6.0), "p", None),
                ],
                p1(),
                (0.0, 6.0),
                (8.0, 8.0, 0.0, 2, 12.0),
            ),
            (
                // Still running at `until` (8 h): counted 5-8.
                "one still running",
                vec![life(1.0, Some(3.0), "p", None), life(5.0, None, "p", None)],
                p1(),
                (0.0, 8.0),
                (5.0, 5.0, 0.0, 1, 8.0),
            ),
            (
                // 1 until 4 h, then 3: 4 × 1 + 6 × 3 = 22; peak 1 costs the same.
                "a price change mid-period",
                vec![life(0.0, Some(10.0), "p", None)],
                vec![price("p", None, 0.0, 1.0), price("p", None, 4.0, 3.0)],
                (0.0, 10.0),
                (10.0, 22.0, 0.0, 1, 22.0),
            ),
            (
                // Lives 0-10; the period 3-7 keeps 4 h of it.
                "the period cuts an instance's life",
                vec![life(0.0, Some(10.0), "p", None)],
                p1(),
                (3.0, 7.0),
                (4.0, 4.0, 0.0, 1, 4.0),
            ),
            (
                "a replacement at the same moment is no overlap",
                vec![
                    life(0.0, Some(2.0), "p", None),
                    life(2.0, Some(4.0), "p", None),
                ],
                p1(),
                (0.0, 4.0),
                (4.0, 4.0, 0.0, 1, 4.0),
            ),
            (
                // The flavor's own price wins over the provider-wide one; another
                // provider without a price counts hours but no cost.
                "per size, and unpriced",
                vec![
                    life(0.0, Some(2.0), "p", Some("m1.large")),
                    life(0.0, Some(2.0), "p", Some("m1.tiny")),
                    life(0.0, Some(2.0), "q", None),
                ],
                vec![
                    price("p", None, 0.0, 1.0),
                    price("p", Some("m1.large"), 0.0, 4.0),
                ],
                (0.0, 2.0),
                (6.0, 10.0, 2.0, 3, 6.0),
            ),
            (
                // No price before 1 h: that hour is unpriced.
                "a price that starts late",
                vec![life(0.0, Some(2.0), "p", None)],
                vec![price("p", None, 1.0, 2.0)],
                (0.0, 2.0),
                (2.0, 2.0, 1.0, 1, 2.0),
            ),
            (
                "ended before the period",
                vec![life(0.0, Some(1.0), "p", None)],
                p1(),
                (2.0, 3.0),
                (0.0, 0.0, 0.0, 0, 0.0),
            ),
        ]);
    }

    #[test]
    fn buckets_split_at_step_edges() {
        let u = usage(
            &[life(0.5, Some(2.25), "p", None)],
            &[price("p", None, 0.0, 2.0)],
            ("p", None),
            &Period {
                since: t(0.25),
                until: t(3.0),
                step: Duration::from_secs(3600),
            },
        );
        let got: Vec<(i64, f64, f64)> = u
            .buckets
            .iter()
            .map(|b| (b.start.0, b.instance_hours, b.cost))
            .collect();
        assert_eq!(
            got,
            vec![(H / 4, 0.5, 1.0), (H, 1.0, 2.0), (2 * H, 0.25, 0.5)]
        );
    }

    #[test]
    fn prices_are_checked() {
        assert!(check_price(0.0).is_ok());
        assert!(check_price(0.12).is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let e = check_price(bad).unwrap_err();
            assert_eq!(e.field, "per_hour");
            assert!(e.rule.contains(">= 0"), "{e}");
        }
    }
}
