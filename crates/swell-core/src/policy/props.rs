//! Property tests over every policy: the engine's guarantees hold whatever the input.

use super::*;
use crate::metrics::{Metric, MetricSample};
use proptest::prelude::*;

fn specs(target: f64) -> Vec<PolicySpec> {
    let json = [
        serde_json::json!({"type": "threshold", "scale_out_above": 60, "scale_in_below": 20, "step": 3}),
        serde_json::json!({"type": "proportional", "target": target}),
        serde_json::json!({"type": "target", "target": target, "max_step": 5}),
        serde_json::json!({"type": "predictive", "target": target}),
        serde_json::json!({"type": "swell", "target": target}),
    ];
    json.into_iter()
        .map(|j| serde_json::from_value(j).unwrap())
        .collect()
}

/// Drives an engine over a random CPU series; returns every (state, decision).
fn drive(
    engine: &mut PolicyEngine,
    cpu: &[f64],
    start: u32,
) -> Vec<(Timestamp, GroupState, Decision)> {
    let mut w = MetricWindow::new(Duration::from_secs(600));
    let mut desired = start;
    let mut last = None;
    let mut out = vec![];
    for (i, &v) in cpu.iter().enumerate() {
        let now = Timestamp::from_secs(i as i64 * 10);
        w.push(MetricSample {
            at: now,
            metric: Metric::Cpu,
            value: v,
            instances: desired.max(1),
        });
        let state = GroupState {
            desired_capacity: desired,
            provisioned: desired,
            ready: desired,
            last_scaling_at: last,
        };
        let d = engine.decide(&state, &w, now);
        if d.desired_capacity != desired {
            // Bounds and schedules move the group even in cooldown; policies do not.
            if d.cause.policy != "bounds" && d.cause.policy != "schedule" {
                last = Some(now);
            }
            desired = d.desired_capacity;
        }
        out.push((now, state, d));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn desired_within_bounds_for_every_policy(
        cpu in proptest::collection::vec(0.0f64..400.0, 1..80),
        min in 0u32..5, extra in 0u32..20, start in 0u32..40, which in 0usize..5,
    ) {
        let cap = Capacity::new(min, min + extra).unwrap();
        let mut e = PolicyEngine::new(&specs(60.0)[which..=which], cap, Duration::ZERO);
        for (_, _, d) in drive(&mut e, &cpu, start) {
            prop_assert!(d.desired_capacity >= min && d.desired_capacity <= min + extra);
        }
    }

    #[test]
    fn no_policy_action_inside_a_cooldown(
        cpu in proptest::collection::vec(0.0f64..400.0, 1..80),
        which in 0usize..5, cooldown in 10u64..200,
    ) {
        let cap = Capacity::new(1, 50).unwrap();
        let mut e = PolicyEngine::new(&specs(60.0)[which..=which], cap, Duration::from_secs(cooldown));
        let mut previous = DecisionKind::Idle;
        for (now, state, d) in drive(&mut e, &cpu, 5) {
            if d.kind == DecisionKind::Idle {
                continue;
            }
            // The exceptions: a scale-out right after a scale-in, or one sized from the load.
            let sized = ["target", "predictive", "swell"].contains(&d.cause.policy.as_str());
            let excepted = d.kind == DecisionKind::ScaleOut
                && (previous == DecisionKind::ScaleIn || sized);
            if let Some(last) = state.last_scaling_at && !excepted {
                prop_assert!(now.since(last) >= Duration::from_secs(cooldown), "{}", d.cause.reason);
            }
            previous = d.kind;
        }
    }

    #[test]
    fn a_schedule_floor_always_holds(
        cpu in proptest::collection::vec(0.0f64..400.0, 1..80),
        which in 0usize..5, floor in 1u32..30, start in 1u32..40,
    ) {
        // Active all the time: every minute for an hour.
        let mut all = specs(60.0)[which..=which].to_vec();
        all.push(serde_json::from_value(serde_json::json!({
            "type": "schedule", "cron": "* * * * *", "duration": "1h", "desired": floor
        })).unwrap());
        let cap = Capacity::new(1, 40).unwrap();
        let mut e = PolicyEngine::new(&all, cap, Duration::from_secs(120));
        for (_, _, d) in drive(&mut e, &cpu, start) {
            prop_assert!(d.desired_capacity >= floor, "{} < {floor}: {}", d.desired_capacity, d.cause.reason);
        }
    }

    /// Several policies of any kinds: the largest scale-out wins; a scale-in happens only
    /// when every policy asks for less, and goes no further than the least eager of them
    /// (the flapping check may stop it earlier, never later); otherwise nothing changes.
    #[test]
    fn several_policies_combine_by_the_engine_rules(
        cpu in proptest::collection::vec(0.0f64..400.0, 1..60),
        kinds in proptest::collection::vec(0usize..5, 2..4),
        start in 1u32..40,
    ) {
        let all = specs(60.0);
        let chosen: Vec<PolicySpec> = kinds.iter().map(|&k| all[k].clone()).collect();
        let cap = Capacity::new(1, 50).unwrap();
        let mut e = PolicyEngine::new(&chosen, cap, Duration::ZERO);
        // Twins of the engine's policies, fed the same inputs, say what each one asked.
        let mut twins: Vec<Box<dyn Policy>> = chosen.iter().map(PolicySpec::build).collect();
        let mut w = MetricWindow::new(Duration::from_secs(600));
        let mut desired = start;
        for (i, &v) in cpu.iter().enumerate() {
            let now = Timestamp::from_secs(i as i64 * 10);
            w.push(MetricSample { at: now, metric: Metric::Cpu, value: v, instances: desired });
            let state = GroupState {
                desired_capacity: desired, provisioned: desired, ready: desired, last_scaling_at: None,
            };
            let asked: Vec<Option<u32>> =
                twins.iter_mut().map(|p| p.evaluate(&state, &w, now).desired).collect();
            let d = e.decide(&state, &w, now);
            let largest_out = asked.iter().flatten().copied().filter(|&a| a > desired).max();
            let all_in = asked.iter().all(|a| a.is_some_and(|a| a < desired));
            if let Some(out) = largest_out {
                prop_assert_eq!(d.desired_capacity, cap.clamp(out), "{:?}: {}", asked, d.cause.reason);
            } else if all_in {
                let least_eager = asked.iter().flatten().copied().max().unwrap_or(desired);
                prop_assert!(d.desired_capacity >= cap.clamp(least_eager) && d.desired_capacity <= desired,
                    "{:?} → {}: {}", asked, d.desired_capacity, d.cause.reason);
            } else {
                prop_assert_eq!(d.kind, DecisionKind::Idle, "{:?}: {}", asked, d.cause.reason);
            }
            desired = d.desired_capacity;
        }
    }

    #[test]
    fn a_forecast_never_scales_in_by_itself(
        history in proptest::collection::vec(0.0f64..2000.0, 10..200),
        now_load in 0.0f64..2000.0, n in 1u32..30,
    ) {
        // Whatever the past (a load that fell, rose or jumped), if the present load needs
        // at least the current count at the target, the predictive policy does not go below it.
        let spec: PolicySpec = serde_json::from_value(serde_json::json!({
            "type": "predictive", "target": 50, "min_history": "0s"
        })).unwrap();
        let mut p = spec.build();
        let mut w = MetricWindow::new(Duration::from_secs(120));
        let step = 900; // 15 min between history points: the past spans days
        for (i, &l) in history.iter().enumerate() {
            let at = Timestamp::from_secs(i as i64 * step);
            w.push(MetricSample { at, metric: Metric::Cpu, value: l / f64::from(n), instances: n });
            let st = GroupState { desired_capacity: n, provisioned: n, ready: n, last_scaling_at: None };
            p.evaluate(&st, &w, at);
        }
        let at = Timestamp::from_secs(history.len() as i64 * step);
        w.push(MetricSample { at, metric: Metric::Cpu, value: now_load / f64::from(n), instances: n });
        let st = GroupState { desired_capacity: n, provisioned: n, ready: n, last_scaling_at: None };
        let r = p.evaluate(&st, &w, at);
        let reactive = (now_load / 50.0 - 1e-9).ceil() as u32;
        if reactive >= n {
            prop_assert!(r.desired.is_none_or(|d| d >= n), "{:?} {}", r.desired, r.cause.reason);
        }
    }
}

#[test]
fn a_group_without_policies_gets_swell() {
    let g: crate::group::GroupSpec = serde_json::from_value(serde_json::json!({
        "name": "web", "template": {"command": ["app"]}, "max": 5
    }))
    .unwrap();
    assert_eq!(g.policies, default_policies());
    assert!(matches!(g.policies[..], [PolicySpec::Swell(_)]));
    g.validate().unwrap();
}

/// Seed 2: the schedule's count is the dynamic policies' floor; they may go above it.
#[test]
fn schedule_floor_with_a_dynamic_policy_by_hand() {
    let specs: Vec<PolicySpec> = serde_json::from_value(serde_json::json!([
        {"type": "target", "target": 50, "tolerance": 0},
        {"type": "schedule", "cron": "* * * * *", "duration": "1h", "desired": 5}
    ]))
    .unwrap();
    let cap = Capacity::new(1, 20).unwrap();
    let now = Timestamp::from_secs(600);
    let w = |v: f64| {
        let mut w = MetricWindow::new(Duration::from_secs(600));
        w.push(MetricSample {
            at: now,
            metric: Metric::Cpu,
            value: v,
            instances: 5,
        });
        w
    };
    let st = |n: u32| GroupState {
        desired_capacity: n,
        provisioned: n,
        ready: n,
        last_scaling_at: None,
    };
    // Below the floor: raised to 5 by the schedule.
    let mut e = PolicyEngine::new(&specs, cap, Duration::from_secs(120));
    let d = e.decide(&st(2), &w(50.0), now);
    assert_eq!(
        (d.desired_capacity, d.cause.policy.as_str()),
        (5, "schedule")
    );
    // Target wants ceil(5 × 80 / 50) = 8: above the floor, allowed.
    let mut e = PolicyEngine::new(&specs, cap, Duration::from_secs(120));
    assert_eq!(e.decide(&st(5), &w(80.0), now).desired_capacity, 8);
    // Target wants ceil(5 × 10 / 50) = 1 (after its stabilisation): held at the floor.
    let mut e = PolicyEngine::new(&specs, cap, Duration::from_secs(120));
    let d = e.decide(&st(5), &w(10.0), now);
    assert_eq!((d.desired_capacity, d.kind), (5, DecisionKind::Idle));
}

/// Learned states are keyed by policy name and rank among that name's policies, so an
/// edit that adds or removes a policy of another kind hands each state to its own policy;
/// a policy whose basis changed does not take it.
#[test]
fn learned_states_follow_their_policy() {
    let cap = Capacity::new(1, 50).unwrap();
    let mut all = specs(60.0);
    all.push(
        serde_json::from_value(serde_json::json!({"type": "swell", "provisioning_delay": "60s"}))
            .unwrap(),
    );
    let mut e = PolicyEngine::new(&all, cap, Duration::from_secs(120));
    drive(&mut e, &[50.0; 30], 5);
    let learned = e.learned();
    let keys: Vec<&str> = learned.iter().map(|s| s.policy.as_str()).collect();
    assert_eq!(keys, ["predictive#0", "swell#0", "swell#1"]);

    // The edit drops the threshold policy and changes the second swell's delay.
    let mut edited = all[1..].to_vec();
    edited[4] =
        serde_json::from_value(serde_json::json!({"type": "swell", "provisioning_delay": "90s"}))
            .unwrap();
    let mut e = PolicyEngine::new(&edited, cap, Duration::from_secs(120));
    assert_eq!(e.relearn(&learned), ["predictive#0", "swell#0"]);
}

fn specs_of(json: serde_json::Value) -> Vec<PolicySpec> {
    serde_json::from_value(json).unwrap()
}

fn settled(n: u32) -> GroupState {
    GroupState {
        desired_capacity: n,
        provisioned: n,
        ready: n,
        last_scaling_at: None,
    }
}

/// A window with one sample per metric at `now`, measured over `n` instances.
fn readings(now: Timestamp, n: u32, values: &[(Metric, f64)]) -> MetricWindow {
    let mut w = MetricWindow::new(Duration::from_secs(600));
    for &(metric, value) in values {
        w.push(MetricSample {
            at: now,
            metric,
            value,
            instances: n,
        });
    }
    w
}

/// HPA's and KEDA's conservative rule: a policy with no data has no opinion, and no
/// opinion blocks every scale-in (but not a scale-out another policy asks for).
#[test]
fn a_policy_without_data_blocks_every_scale_in() {
    let specs = specs_of(serde_json::json!([
        {"type": "target", "target": 50, "scale_in_stabilization": "10s"},
        {"type": "threshold", "metric": "memory", "scale_out_above": 800, "scale_in_below": 200}
    ]));
    let cap = Capacity::new(1, 50).unwrap();
    let now = Timestamp::from_secs(600);
    let decide = |values: &[(Metric, f64)]| {
        let mut e = PolicyEngine::new(&specs, cap, Duration::ZERO);
        e.decide(&settled(10), &readings(now, 10, values), now)
    };
    // CPU 10 % asks for 2; memory has no samples: nothing happens.
    let d = decide(&[(Metric::Cpu, 10.0)]);
    assert_eq!(
        (d.kind, d.desired_capacity),
        (DecisionKind::Idle, 10),
        "{}",
        d.cause.reason
    );
    assert!(
        d.cause.reason.contains("no memory samples"),
        "{}",
        d.cause.reason
    );
    // With memory low too, both agree: in, as far as the least eager (threshold: 10 - 1).
    let d = decide(&[(Metric::Cpu, 10.0), (Metric::Memory, 100.0)]);
    assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleIn, 9));
    // CPU 100 % asks for 20: a scale-out does not wait for the silent policy.
    let d = decide(&[(Metric::Cpu, 100.0)]);
    assert_eq!((d.kind, d.desired_capacity), (DecisionKind::ScaleOut, 20));
}

/// Azure autoscale's flapping estimate: before a scale-in the engine projects the
/// reading onto the instances that would be left; a scale-in that would put it above a
/// policy's scale-out threshold goes only as far as it does not, or not at all.
#[test]
fn no_scale_in_that_would_cross_a_scale_out_threshold() {
    let cap = Capacity::new(1, 50).unwrap();
    let now = Timestamp::from_secs(600);
    let check = |spec: serde_json::Value, n: u32, cpu: f64, expected: (DecisionKind, u32)| {
        let mut e = PolicyEngine::new(&specs_of(serde_json::json!([spec])), cap, Duration::ZERO);
        let d = e.decide(&settled(n), &readings(now, n, &[(Metric::Cpu, cpu)]), now);
        assert_eq!(
            (d.kind, d.desired_capacity),
            expected,
            "{spec} {n} {cpu}: {}",
            d.cause.reason
        );
        d
    };
    let band = |out: u32, step: u32| serde_json::json!({"type": "threshold", "scale_out_above": out, "scale_in_below": 30, "step": step});
    // 10 at 25 %, step 5: 250 on 5 is 50 % <= 60: the whole step.
    check(band(60, 5), 10, 25.0, (DecisionKind::ScaleIn, 5));
    // Step 8 would leave 2 at 125 %: only to ceil(250 / 60) = 5.
    let d = check(band(60, 8), 10, 25.0, (DecisionKind::ScaleIn, 5));
    assert!(d.cause.reason.contains("flapping"), "{}", d.cause.reason);
    // A narrow band: 290 on 5 is 58 % > 40: only to ceil(290 / 40) = 8.
    check(band(40, 5), 10, 29.0, (DecisionKind::ScaleIn, 8));
    // 2 at 29 %: 58 on 1 is 58 % > 40: no scale-in at all.
    let d = check(band(40, 1), 2, 29.0, (DecisionKind::Idle, 2));
    assert!(d.cause.reason.contains("flapping"), "{}", d.cause.reason);
}
