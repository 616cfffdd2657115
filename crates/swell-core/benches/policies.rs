//! `cargo bench -p swell-core`: the cost of one decision and of a 14-day simulation.
//!
//! A plain `harness = false` bench (no extra dependency): each case runs for about two
//! seconds after a warm-up and prints the median of 15 batches.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};
use swell_core::metrics::{Metric, MetricSample, MetricWindow};
use swell_core::policy::{GroupState, PolicyEngine, PolicySpec, SwellPolicy};
use swell_core::sim::{SimOptions, SimPolicy, Trace, simulate};
use swell_core::{Capacity, Timestamp};

/// Runs `f` in batches and prints the median time per call.
fn bench(name: &str, mut f: impl FnMut() -> u64) {
    // Warm up and size a batch to ~100 ms.
    let mut per_batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..per_batch {
            black_box(f());
        }
        if t.elapsed() > Duration::from_millis(100) || per_batch > 1 << 30 {
            break;
        }
        per_batch *= 2;
    }
    let mut samples = vec![];
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..per_batch {
            black_box(f());
        }
        samples.push(t.elapsed().as_secs_f64() / per_batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let (value, unit) = if median < 1e-6 {
        (median * 1e9, "ns")
    } else if median < 1e-3 {
        (median * 1e6, "µs")
    } else if median < 1.0 {
        (median * 1e3, "ms")
    } else {
        (median, "s")
    };
    println!("{name:<48} {value:>10.2} {unit} (median of 15 batches of {per_batch})");
}

/// An engine whose policy has a day of history, and the window it reads.
fn warmed(spec: PolicySpec) -> (PolicyEngine, MetricWindow, GroupState, i64) {
    let mut e = PolicyEngine::new(
        &[spec],
        Capacity::new(1, 1000).expect("bounds"),
        Duration::from_secs(120),
    );
    let mut w = MetricWindow::new(e.lookback() + Duration::from_secs(60));
    let state = GroupState {
        desired_capacity: 20,
        provisioned: 20,
        ready: 20,
        last_scaling_at: None,
    };
    let mut t = 0;
    // A day at the controller's cadence: a sample every 5 s, a decision every 10 s.
    while t < 86_400 {
        let phase = (t as f64 / 86_400.0 * std::f64::consts::TAU).sin();
        w.push(MetricSample {
            at: Timestamp::from_secs(t),
            metric: Metric::Cpu,
            value: 60.0 + 10.0 * phase,
            instances: 20,
        });
        if t % 10 == 0 {
            e.decide(&state, &w, Timestamp::from_secs(t));
        }
        t += 5;
    }
    (e, w, state, t)
}

fn main() {
    for (name, spec) in [
        ("decide: swell (a day of history)", PolicySpec::Swell(SwellPolicy::default())),
        (
            "decide: target",
            serde_json::from_value(serde_json::json!({"type": "target", "target": 70}))
                .expect("spec"),
        ),
        (
            "decide: threshold",
            serde_json::from_value(
                serde_json::json!({"type": "threshold", "scale_out_above": 70, "scale_in_below": 30}),
            )
            .expect("spec"),
        ),
    ] {
        let (mut e, mut w, state, mut t) = warmed(spec);
        bench(name, || {
            // One controller step: a new sample, then a decision.
            w.push(MetricSample {
                at: Timestamp::from_secs(t),
                metric: Metric::Cpu,
                value: 65.0,
                instances: 20,
            });
            let d = e.decide(&state, &w, Timestamp::from_secs(t));
            t += 10;
            u64::from(d.desired_capacity)
        });
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../traces/worldcup98_1998-06-21_14d_1min.csv");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!(
            "(skipping the simulation benchmark: {} not found)",
            path.display()
        );
        return;
    };
    let trace = Trace::parse(&text).expect("a valid trace");
    let opts = SimOptions::default();
    for name in ["swell", "hpa", "aws-target", "oracle"] {
        let policy = SimPolicy::named(name).expect("a named policy");
        bench(&format!("simulate 14 d worldcup98 @ 15 s: {name}"), || {
            simulate(&trace, "worldcup98", &policy, &opts)
                .map(|r| r.scaling_actions)
                .unwrap_or(0)
        });
    }
}
