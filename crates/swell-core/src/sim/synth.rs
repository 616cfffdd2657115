//! Synthetic load traces: a development set to tune policies on without tuning them to
//! the real traces they are judged on (docs/policies.md, "How the parameters were
//! chosen").
//!
//! Each [`SynthKind`] is a family of loads seen in practice — request counts at a few per
//! second or at thousands, a cluster's CPU, flash crowds, plateaus with step changes, a
//! growth trend, a VM fleet sampled every 5 minutes, hourly page views — and a seed picks
//! one member: the phases, amplitudes, noise levels and event times are drawn from ranges,
//! so that no two seeds share a shape. The same seed always gives the same trace (a
//! SplitMix64 generator, no dependency), so a result can be reproduced from its name.
//!
//! The ingredients, multiplied together as a rate `λ(t)`:
//! daily seasonality (two harmonics, random phase) and weekly (a weekend dip), a trend,
//! AR(1) log-noise at the sampling step (correlated wobble, not just white noise), and
//! events (bursts and flash crowds: a linear rise then an exponential decay). Count traces
//! then draw the value as Poisson(`λ`) — the counting noise of requests arriving at
//! random, which dominates at low rates — while utilisation traces add Gaussian noise.

use std::f64::consts::TAU;

/// A family of synthetic loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthKind {
    /// Requests per minute at tens per minute: diurnal, weekly, bursty, Poisson counts.
    WebLow,
    /// Requests per minute at tens of thousands: diurnal with evening event peaks.
    WebHigh,
    /// A cluster's mean CPU % per minute: mild diurnal, correlated noise, short ramps.
    CpuCluster,
    /// Requests per minute with rare flash crowds of 3-10 × that rise within minutes.
    FlashCrowd,
    /// Plateaus of 2-12 hours at random levels, step changes between them, no season.
    Steps,
    /// Diurnal requests per minute growing 2-4 × over two weeks.
    Trend,
    /// A few requests per minute with frequent short bursts of 5-20 ×.
    BurstyLow,
    /// A VM fleet's total CPU every 5 minutes: smooth diurnal and weekly, small noise.
    SmoothVm,
    /// Page views per hour for a month: smooth diurnal and weekly.
    Hourly,
}

impl SynthKind {
    /// Every family, in a fixed order.
    pub const ALL: [SynthKind; 9] = [
        SynthKind::WebLow,
        SynthKind::WebHigh,
        SynthKind::CpuCluster,
        SynthKind::FlashCrowd,
        SynthKind::Steps,
        SynthKind::Trend,
        SynthKind::BurstyLow,
        SynthKind::SmoothVm,
        SynthKind::Hourly,
    ];

    /// The family's name in file names (`web-low`, …).
    pub fn name(self) -> &'static str {
        match self {
            SynthKind::WebLow => "web-low",
            SynthKind::WebHigh => "web-high",
            SynthKind::CpuCluster => "cpu-cluster",
            SynthKind::FlashCrowd => "flash-crowd",
            SynthKind::Steps => "steps",
            SynthKind::Trend => "trend",
            SynthKind::BurstyLow => "bursty-low",
            SynthKind::SmoothVm => "smooth-vm",
            SynthKind::Hourly => "hourly",
        }
    }
}

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_B00C)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-300);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (TAU * v).cos()
    }

    /// Poisson(`mean`): Knuth's product method for small means, the normal
    /// approximation (which is within a fraction of a count there) above 40.
    fn poisson(&mut self, mean: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        if mean > 40.0 {
            return (mean + mean.sqrt() * self.normal()).round().max(0.0);
        }
        let limit = (-mean).exp();
        let mut k = 0.0;
        let mut p = self.unit();
        while p > limit {
            k += 1.0;
            p *= self.unit();
        }
        k
    }

    /// Exponential with the given mean.
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// One event: from `start` the rate rises linearly by `amp` × over `rise` seconds, then
/// decays exponentially with time constant `decay`.
#[derive(Debug, Clone, Copy)]
struct Event {
    start: f64,
    rise: f64,
    decay: f64,
    amp: f64,
}

impl Event {
    fn factor(&self, t: f64) -> f64 {
        let dt = t - self.start;
        if dt < 0.0 {
            0.0
        } else if dt < self.rise {
            self.amp * dt / self.rise
        } else {
            self.amp * (-(dt - self.rise) / self.decay).exp()
        }
    }
}

/// What a family is made of (drawn per seed).
struct Recipe {
    step: f64,
    days: f64,
    base: f64,
    daily: f64,
    daily2: f64,
    peak_hour: f64,
    weekend: f64,
    growth: f64,
    ar_phi: f64,
    ar_sigma: f64,
    /// Counts (Poisson) or a utilisation with Gaussian noise of this relative size.
    counts: bool,
    white: f64,
    events: Vec<Event>,
    /// Plateau levels (multipliers) and the times they start; empty for none.
    plateaus: Vec<(f64, f64)>,
    decimals: usize,
}

fn events(
    rng: &mut Rng,
    days: f64,
    per_day: (f64, f64),
    amp: (f64, f64),
    rise: (f64, f64),
    decay: (f64, f64),
) -> Vec<Event> {
    let per_day = rng.range(per_day.0, per_day.1);
    let mut out = vec![];
    let end = days * 86_400.0;
    let mut t = rng.exp(86_400.0 / per_day);
    while t < end {
        // Log-uniform amplitude: small bursts are common, large ones rare.
        let amp = (rng.range(amp.0.ln(), amp.1.ln())).exp();
        out.push(Event {
            start: t,
            rise: rng.range(rise.0, rise.1),
            decay: rng.range(decay.0, decay.1),
            amp,
        });
        t += rng.exp(86_400.0 / per_day);
    }
    out
}

fn recipe(kind: SynthKind, rng: &mut Rng) -> Recipe {
    let mut r = Recipe {
        step: 60.0,
        days: 10.0,
        base: 100.0,
        daily: rng.range(0.3, 0.7),
        daily2: rng.range(0.0, 0.2),
        peak_hour: rng.range(11.0, 21.0),
        weekend: rng.range(0.6, 0.95),
        growth: 1.0,
        ar_phi: rng.range(0.6, 0.95),
        ar_sigma: 0.05,
        counts: true,
        white: 0.0,
        events: vec![],
        plateaus: vec![],
        decimals: 0,
    };
    match kind {
        SynthKind::WebLow => {
            r.base = rng.range(25.0, 80.0);
            r.ar_sigma = rng.range(0.1, 0.25);
            r.events = events(
                rng,
                r.days,
                (2.0, 8.0),
                (0.5, 4.0),
                (60.0, 600.0),
                (120.0, 1800.0),
            );
        }
        SynthKind::WebHigh => {
            r.base = rng.range(5_000.0, 40_000.0);
            r.ar_sigma = rng.range(0.02, 0.08);
            r.events = events(
                rng,
                r.days,
                (0.5, 2.0),
                (1.0, 5.0),
                (300.0, 1200.0),
                (1800.0, 5400.0),
            );
        }
        SynthKind::CpuCluster => {
            r.days = 8.0;
            r.base = rng.range(25.0, 50.0);
            r.daily = rng.range(0.05, 0.25);
            r.weekend = rng.range(0.9, 1.0);
            r.ar_sigma = rng.range(0.04, 0.12);
            r.counts = false;
            r.white = rng.range(0.01, 0.05);
            r.events = events(
                rng,
                r.days,
                (4.0, 24.0),
                (0.1, 0.6),
                (60.0, 300.0),
                (120.0, 1200.0),
            );
            r.decimals = 2;
        }
        SynthKind::FlashCrowd => {
            r.base = rng.range(300.0, 3_000.0);
            r.ar_sigma = rng.range(0.03, 0.1);
            r.events = events(
                rng,
                r.days,
                (0.3, 1.0),
                (2.0, 9.0),
                (120.0, 900.0),
                (1800.0, 7200.0),
            );
        }
        SynthKind::Steps => {
            r.days = 7.0;
            r.base = rng.range(100.0, 1_000.0);
            r.daily = 0.0;
            r.daily2 = 0.0;
            r.weekend = 1.0;
            r.ar_sigma = rng.range(0.03, 0.12);
            let mut t = 0.0;
            while t < r.days * 86_400.0 {
                r.plateaus
                    .push((t, rng.range(0.4f64.ln(), 2.5f64.ln()).exp()));
                t += rng.range(2.0, 12.0) * 3600.0;
            }
        }
        SynthKind::Trend => {
            r.days = 14.0;
            r.base = rng.range(100.0, 600.0);
            r.growth = rng.range(2.0, 4.0);
            r.ar_sigma = rng.range(0.03, 0.12);
            r.events = events(
                rng,
                r.days,
                (0.5, 3.0),
                (0.5, 2.0),
                (120.0, 900.0),
                (600.0, 3600.0),
            );
        }
        SynthKind::BurstyLow => {
            r.days = 7.0;
            r.base = rng.range(5.0, 20.0);
            r.ar_sigma = rng.range(0.1, 0.3);
            r.events = events(
                rng,
                r.days,
                (6.0, 20.0),
                (4.0, 19.0),
                (30.0, 180.0),
                (60.0, 600.0),
            );
        }
        SynthKind::SmoothVm => {
            r.step = 300.0;
            r.days = 30.0;
            r.base = rng.range(1e6, 1e7);
            r.daily = rng.range(0.05, 0.2);
            r.weekend = rng.range(0.85, 1.0);
            r.ar_phi = rng.range(0.8, 0.98);
            r.ar_sigma = rng.range(0.01, 0.03);
            r.counts = false;
            r.white = rng.range(0.002, 0.01);
        }
        SynthKind::Hourly => {
            r.step = 3600.0;
            r.days = 31.0;
            r.base = rng.range(1e6, 1e7);
            r.daily = rng.range(0.2, 0.5);
            r.ar_phi = rng.range(0.5, 0.9);
            r.ar_sigma = rng.range(0.01, 0.04);
            r.counts = false;
            r.white = rng.range(0.002, 0.01);
        }
    }
    r
}

/// The trace of family `kind` drawn with `seed`: `(t_seconds, value)` rows from 0.
pub fn generate(kind: SynthKind, seed: u64) -> Vec<(f64, f64)> {
    let mut rng = Rng::new(seed.wrapping_mul(0x100_0000_01B3) ^ kind as u64);
    let r = recipe(kind, &mut rng);
    let rows = (r.days * 86_400.0 / r.step).round() as usize;
    let scale = 10f64.powi(r.decimals as i32);
    let mut ar = 0.0;
    let mut plateau = 0;
    let mut out = Vec::with_capacity(rows);
    for i in 0..rows {
        let t = i as f64 * r.step;
        let hour = (t / 3600.0) % 24.0;
        let day = ((t / 86_400.0).floor() as i64) % 7;
        let phase = TAU * (hour - r.peak_hour) / 24.0;
        let season = (1.0 + r.daily * phase.cos() + r.daily2 * (2.0 * phase).cos()).max(0.05);
        let week = if day >= 5 { r.weekend } else { 1.0 };
        let trend = 1.0 + (r.growth - 1.0) * t / (r.days * 86_400.0);
        ar = r.ar_phi * ar + (1.0 - r.ar_phi * r.ar_phi).sqrt() * r.ar_sigma * rng.normal();
        while plateau + 1 < r.plateaus.len() && r.plateaus[plateau + 1].0 <= t {
            plateau += 1;
        }
        let level = r.plateaus.get(plateau).map_or(1.0, |p| p.1);
        let burst: f64 = r.events.iter().map(|e| e.factor(t)).sum();
        let rate = r.base * season * week * trend * level * ar.exp() * (1.0 + burst);
        let v = if r.counts {
            rng.poisson(rate)
        } else {
            (rate * (1.0 + r.white * rng.normal())).max(0.0)
        };
        out.push((t, (v * scale).round() / scale));
    }
    out
}

/// The file name of a generated trace: `<family>-s<seed>.csv`.
pub fn file_name(kind: SynthKind, seed: u64) -> String {
    format!("{}-s{seed}.csv", kind.name())
}

/// A trace's rows as the simulator's CSV (`t_seconds,value` header).
pub fn to_csv(points: &[(f64, f64)]) -> String {
    let mut s = String::from("t_seconds,value\n");
    for (t, v) in points {
        s.push_str(&format!("{t},{v}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        for kind in SynthKind::ALL {
            let a = generate(kind, 1);
            assert_eq!(a, generate(kind, 1), "{}", kind.name());
            assert_ne!(a, generate(kind, 2), "{}", kind.name());
            assert!(a.iter().all(|&(_, v)| v >= 0.0 && v.is_finite()));
            assert_eq!(a[0].0, 0.0);
        }
    }

    #[test]
    fn poisson_has_its_mean_and_variance() {
        let mut rng = Rng::new(7);
        for mean in [3.0, 20.0, 200.0] {
            let xs: Vec<f64> = (0..20_000).map(|_| rng.poisson(mean)).collect();
            let m = xs.iter().sum::<f64>() / xs.len() as f64;
            let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64;
            assert!((m / mean - 1.0).abs() < 0.03, "{mean}: mean {m}");
            assert!((v / mean - 1.0).abs() < 0.1, "{mean}: variance {v}");
        }
    }

    #[test]
    fn an_event_rises_then_decays() {
        let e = Event {
            start: 100.0,
            rise: 100.0,
            decay: 50.0,
            amp: 4.0,
        };
        assert_eq!(e.factor(50.0), 0.0);
        assert_eq!(e.factor(150.0), 2.0);
        assert_eq!(e.factor(200.0), 4.0);
        assert!((e.factor(250.0) - 4.0 * (-1f64).exp()).abs() < 1e-12);
    }
}
