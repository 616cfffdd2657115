//! The development set the `swell` policy is tuned on (docs/policies.md): synthetic traces
//! from `swell_core::sim::synth`, never the real traces in `traces/`.
//!
//! - `dev_traces_match_the_generator` keeps the saved files reproducible;
//! - `write_dev_traces` (ignored) writes them again;
//! - `dev_set_report` (ignored; run it in release) prints issue 3's goals per trace for
//!   the dev seeds, or for the held-out seeds with `SWELL_SET=held-out`:
//!
//! ```text
//! cargo test --release -p swell-core --test dev_set -- --ignored --nocapture dev_set_report
//! SWELL_SET=held-out cargo test --release -p swell-core --test dev_set -- --ignored --nocapture dev_set_report
//! ```

use std::path::PathBuf;
use swell_core::sim::synth::{SynthKind, file_name, generate, to_csv};
use swell_core::sim::{SimOptions, SimPolicy, SimReport, Trace, simulate};

/// The seeds saved in `tests/data/dev-traces/` and tuned on.
const DEV_SEEDS: [u64; 2] = [1, 2];
/// Seeds looked at only to check that what was tuned generalises.
const HELD_OUT_SEEDS: [u64; 3] = [101, 102, 103];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dev-traces")
}

#[test]
fn dev_traces_match_the_generator() {
    for kind in SynthKind::ALL {
        let name = file_name(kind, DEV_SEEDS[0]);
        let saved = std::fs::read_to_string(dir().join(&name))
            .unwrap_or_else(|e| panic!("{name}: {e} (run write_dev_traces)"));
        assert!(
            saved == to_csv(&generate(kind, DEV_SEEDS[0])),
            "{name} differs from the generator"
        );
        Trace::parse(&saved).unwrap();
    }
}

#[test]
#[ignore]
fn write_dev_traces() {
    std::fs::create_dir_all(dir()).unwrap();
    for kind in SynthKind::ALL {
        let name = file_name(kind, DEV_SEEDS[0]);
        std::fs::write(dir().join(name), to_csv(&generate(kind, DEV_SEEDS[0]))).unwrap();
    }
}

struct Row {
    name: String,
    swell: SimReport,
    hpa: SimReport,
    aws: SimReport,
    oracle: SimReport,
}

/// `swell` with its defaults, or the fields of `SWELL_SPEC` (a JSON object of the
/// `swell` policy's fields) to compare a variant without rebuilding.
fn swell(opts: &SimOptions) -> SimPolicy {
    match std::env::var("SWELL_SPEC") {
        Ok(json) => {
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v["type"] = "swell".into();
            v["target"] = opts.target.into();
            if v.get("provisioning_delay").is_none() {
                v["provisioning_delay"] = format!("{}s", opts.provision_delay.as_secs()).into();
            }
            SimPolicy::Specs(vec![serde_json::from_value(v).unwrap()])
        }
        Err(_) => SimPolicy::Swell,
    }
}

fn run(name: String, trace: &Trace, opts: &SimOptions) -> Row {
    let sim = |p: SimPolicy| simulate(trace, &name, &p, opts).unwrap();
    let mut swell_opts = opts.clone();
    if let Ok(c) = std::env::var("SWELL_COOLDOWN") {
        swell_opts.cooldown = std::time::Duration::from_secs(c.parse().unwrap());
    }
    Row {
        swell: simulate(trace, &name, &swell(opts), &swell_opts).unwrap(),
        hpa: sim(SimPolicy::Hpa),
        aws: sim(SimPolicy::AwsTarget),
        oracle: sim(SimPolicy::Oracle),
        name,
    }
}

#[test]
#[ignore]
fn dev_set_report() {
    let set = std::env::var("SWELL_SET").unwrap_or_else(|_| "dev".into());
    let seeds: &[u64] = if set == "held-out" {
        &HELD_OUT_SEEDS
    } else {
        &DEV_SEEDS
    };
    let mut opts = SimOptions::default();
    if let Ok(d) = std::env::var("SWELL_DELAY") {
        opts.provision_delay = std::time::Duration::from_secs(d.parse().unwrap());
    }
    if let Ok(t) = std::env::var("SWELL_TICK") {
        opts.tick = std::time::Duration::from_secs(t.parse().unwrap());
    }
    let jobs: Vec<(SynthKind, u64)> = seeds
        .iter()
        .flat_map(|&s| SynthKind::ALL.iter().map(move |&k| (k, s)))
        .collect();
    // Two workers: the development machine has two cores.
    let rows: Vec<Row> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..2)
            .map(|w| {
                let jobs = &jobs;
                let opts = &opts;
                sc.spawn(move || {
                    jobs.iter()
                        .skip(w)
                        .step_by(2)
                        .map(|&(k, s)| {
                            let t = Trace::from_points(generate(k, s)).unwrap();
                            run(file_name(k, s).replace(".csv", ""), &t, opts)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    println!(
        "\n| trace | × hpa | × aws | × oracle | hpa × oracle | under % swell / hpa / aws | misses |"
    );
    println!("|---|---:|---:|---:|---:|---|---|");
    let (mut lh, mut lo) = (0.0, 0.0);
    let (mut under, mut cost, mut oracle) = (0, 0, 0);
    for r in &rows {
        let xh = r.swell.instance_hours / r.hpa.instance_hours;
        let xa = r.swell.instance_hours / r.aws.instance_hours;
        let xo = r.swell.instance_hours / r.oracle.instance_hours;
        let u = |x: &SimReport| x.under_time_share * 100.0;
        let mut miss = vec![];
        if u(&r.swell) > u(&r.hpa).min(u(&r.aws)) + 0.1 {
            miss.push(format!(
                "under +{:.3}pp",
                u(&r.swell) - u(&r.hpa).min(u(&r.aws))
            ));
            under += 1;
        }
        if xh > 1.0 || xa > 1.0 {
            miss.push("cost > baseline".into());
            cost += 1;
        }
        if xo > 1.3 {
            miss.push("× oracle".into());
            oracle += 1;
        }
        lh += xh.ln();
        lo += xo.ln();
        println!(
            "| {} | {xh:.3} | {xa:.3} | {xo:.3} | {:.3} | {:.3} / {:.3} / {:.3} | {} |",
            r.name,
            r.hpa.instance_hours / r.oracle.instance_hours,
            u(&r.swell),
            u(&r.hpa),
            u(&r.aws),
            miss.join(", ")
        );
    }
    let n = rows.len() as f64;
    println!(
        "\n{set}: geo-mean × hpa {:.3}, × oracle {:.3}; of {} traces, under-provisioned more \
         than hpa/aws-target + 0.1 pp on {under}, costlier than hpa or aws-target on {cost}, \
         over 1.3 × oracle on {oracle}",
        (lh / n).exp(),
        (lo / n).exp(),
        rows.len()
    );
}

/// How cheap can a simple causal policy be on a trace at `hpa`'s under-provisioned time?
/// A reference point for issue 3's "within 1.3 × oracle" goal that does not depend on
/// swell's design (docs/policies.md, "What the oracle goal asks on noisy loads").
///
/// The rule: every tick, ask for `ceil(L + m × sqrt(L))` instances, `L` the mean load
/// (in instances) of the last `w` ticks seen (metrics arrive one tick late); scale out to
/// it at once, scale in to the largest count asked for over the last `hold` ticks; an
/// instance is ready `provision_delay` after it was asked for; removals are immediate.
/// Run without a cooldown (as `hpa` runs) and with the product's 120 s group cooldown (as
/// `swell` runs). For every `w` in {1, 2, 4} and `hold` in {1, 8, 20} ticks the smallest
/// margin `m` (steps of 0.1) whose under-provisioned time is within `hpa`'s + 0.1 pp is
/// found — a margin chosen *per trace with hindsight*, which no online policy has — and
/// the cheapest cost is printed as × oracle. Also printed: the same rule fed a
/// *non-causal* level (the mean of ±`w` ticks around `t`: it knows the coming minutes'
/// average, not their noise) and ready at once.
///
/// ```text
/// cargo test --release -p swell-core --test dev_set -- --ignored --nocapture causal_frontier
/// SWELL_TRACES=traces cargo test ... causal_frontier   # any folder of CSVs
/// ```
#[test]
#[ignore]
fn causal_frontier() {
    let opts = SimOptions::default();
    let traces: Vec<(String, Trace)> = match std::env::var("SWELL_TRACES") {
        Ok(d) => {
            let mut files: Vec<_> = std::fs::read_dir(&d)
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "csv"))
                .collect();
            files.sort();
            files
                .iter()
                .map(|p| {
                    let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                    (
                        name,
                        Trace::parse(&std::fs::read_to_string(p).unwrap()).unwrap(),
                    )
                })
                .collect()
        }
        Err(_) => SynthKind::ALL
            .iter()
            .map(|&k| {
                let name = file_name(k, DEV_SEEDS[0]).replace(".csv", "");
                (name, Trace::from_points(generate(k, DEV_SEEDS[0])).unwrap())
            })
            .collect(),
    };
    let tick = opts.tick.as_secs_f64();
    let delay = (opts.provision_delay.as_secs_f64() / tick).round() as usize;
    let cooldown = (opts.cooldown.as_secs_f64() / tick).round() as usize;
    println!(
        "\n| trace | hpa × oracle | swell × oracle | rule, no cooldown | rule, 120 s cooldown | non-causal ±1 min | ±5 min |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let opts = &opts;
    let rows: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = traces
            .iter()
            .map(|(name, trace)| sc.spawn(move || frontier_row(name, trace, opts, delay, cooldown)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in rows {
        println!("{r}");
    }
}

fn frontier_row(
    name: &str,
    trace: &Trace,
    opts: &SimOptions,
    delay: usize,
    cooldown: usize,
) -> String {
    let oracle = simulate(trace, name, &SimPolicy::Oracle, opts).unwrap();
    let hpa = simulate(trace, name, &SimPolicy::Hpa, opts).unwrap();
    let swell = simulate(trace, name, &SimPolicy::Swell, opts).unwrap();
    let series = swell_core::sim::simulate_series(trace, &SimPolicy::Oracle, opts).unwrap();
    let cap = trace.peak() / 50.0;
    let x: Vec<f64> = series.load.iter().map(|l| l / cap).collect();
    let n = x.len();
    let allowed = hpa.under_time_share + 0.001;
    let hours = |sum: f64| sum * opts.tick.as_secs_f64() / 3600.0 / oracle.instance_hours;
    let fmt = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
    let ask = |l: f64, m: f64| (l + m * l.max(1.0).sqrt() - 1e-9).ceil().max(0.0) as u32;
    // The cheapest margin meeting `allowed` for the causal rule.
    let causal = |lv: &[f64], hold: usize, cool: usize| -> Option<f64> {
        (0..100).find_map(|mi| {
            let m = f64::from(mi) * 0.1;
            let mut ready = series.demand[0];
            let mut booting: std::collections::VecDeque<usize> = Default::default();
            let mut asked: std::collections::VecDeque<(usize, u32)> = Default::default();
            let (mut desired, mut last) = (ready, None::<usize>);
            let (mut under, mut cost) = (0usize, 0.0);
            for (i, (&level, &need)) in lv.iter().zip(&series.demand).enumerate() {
                if i > 0 {
                    while booting.front().is_some_and(|&r| r <= i) {
                        booting.pop_front();
                        ready += 1;
                    }
                    let raw = ask(level, m);
                    asked.push_back((i, raw));
                    while asked.front().is_some_and(|&(j, _)| j + hold <= i) {
                        asked.pop_front();
                    }
                    let held = asked.iter().map(|a| a.1).max().unwrap_or(raw);
                    let want = if raw > desired {
                        raw
                    } else {
                        held.min(desired)
                    };
                    if want != desired && last.is_none_or(|l| i - l >= cool) {
                        last = Some(i);
                        let prov = ready + booting.len() as u32;
                        if want > prov {
                            booting.extend(std::iter::repeat_n(i + delay, (want - prov) as usize));
                        } else {
                            let mut r = prov - want;
                            while r > 0 && booting.pop_back().is_some() {
                                r -= 1;
                            }
                            ready -= r.min(ready);
                        }
                        desired = want;
                    }
                }
                under += usize::from(ready < need);
                cost += f64::from(ready + booting.len() as u32);
            }
            ((under as f64) / (n as f64) <= allowed).then(|| hours(cost))
        })
    };
    let trailing = |w: usize| -> Vec<f64> {
        // Seen at `i`: ticks up to i - 1.
        (0..n)
            .map(|i| {
                let b = i.saturating_sub(1);
                let a = (b + 1).saturating_sub(w);
                x[a..=b].iter().sum::<f64>() / (b - a + 1) as f64
            })
            .collect()
    };
    let best = |cool: usize| {
        [1usize, 2, 4]
            .iter()
            .flat_map(|&w| {
                let lv = trailing(w);
                [1usize, 8, 20].map(|h| causal(&lv, h, cool))
            })
            .flatten()
            .reduce(f64::min)
    };
    let centred = |w: usize| -> Option<f64> {
        let lv: Vec<f64> = (0..n)
            .map(|i| {
                let (a, b) = (i.saturating_sub(w), (i + w).min(n - 1));
                x[a..=b].iter().sum::<f64>() / (b - a + 1) as f64
            })
            .collect();
        (0..100).find_map(|mi| {
            let m = f64::from(mi) * 0.1;
            let asks: Vec<u32> = lv.iter().map(|&l| ask(l, m)).collect();
            let under = (0..n).filter(|&i| asks[i] < series.demand[i]).count();
            ((under as f64) / (n as f64) <= allowed)
                .then(|| hours(asks.iter().map(|&a| f64::from(a)).sum()))
        })
    };
    format!(
        "| {name} | {:.3} | {:.3} | {} | {} | {} | {} |",
        hpa.instance_hours / oracle.instance_hours,
        swell.instance_hours / oracle.instance_hours,
        fmt(best(0)),
        fmt(best(cooldown)),
        fmt(centred(4)),
        fmt(centred(20)),
    )
}
