//! The CPU summary of `top`'s batch output, as the SSH metric source reads it from an
//! instance: procps-ng's (`%Cpu(s):  2.0 us,  1.0 sy, … 96.5 id, … 0.5 st`, and the
//! older `Cpu(s):  2.0%us, …`) and BusyBox's (`CPU:   2% usr   1% sys … 96% idle …`,
//! CirrOS's `top`). Pure: the text comes from a remote, untrusted machine.
//!
//! The last summary in the output wins, so `top -bn2 -d1` measures the last second
//! rather than the first frame (procps's first frame covers the time since boot).
//! Per-CPU lines (`%Cpu0 :`, `CPU0:`; top's `1` toggle) are averaged when a frame has
//! no aggregate line.

use std::fmt;

/// What one `top` frame says about the CPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopCpu {
    /// Busy share, percent: 100 − idle, within [0, 100].
    pub cpu: f64,
    /// Steal time, percent, within [0, 100]; `None` when this `top` does not report it
    /// (BusyBox).
    pub steal: Option<f64>,
}

/// Why an output was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopError {
    /// No line of the output is a CPU summary.
    #[error("no CPU summary line (`%Cpu(s):` or BusyBox `CPU:`) in the output")]
    NoCpuLine,
    /// A CPU summary line without an idle share.
    #[error("the CPU summary `{0}` has no idle share (`id`/`idle`)")]
    NoIdle(String),
    /// A share that is not a percentage.
    #[error("`{field}` in `{line}` is not a percentage between 0 and 100")]
    BadShare {
        /// The share's name (`id`, `st`, …).
        field: String,
        /// The line, cut to 80 characters.
        line: String,
    },
}

/// Longest output read (a `top` frame of a few hundred processes is well below it).
pub const MAX_TOP_OUTPUT: usize = 1 << 20;

/// The CPU summary of the last frame of `text`.
pub fn parse_top(text: &str) -> Result<TopCpu, TopError> {
    let text = cut(text, MAX_TOP_OUTPUT);
    let mut last: Option<TopCpu> = None;
    let mut per_cpu: Vec<TopCpu> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        match line_kind(line) {
            Some((aggregate, rest)) => {
                let reading = parse_shares(line, rest)?;
                if aggregate {
                    per_cpu.clear();
                    last = Some(reading);
                } else {
                    per_cpu.push(reading);
                }
            }
            None => {
                if let Some(avg) = average(&per_cpu) {
                    last = Some(avg);
                }
                per_cpu.clear();
            }
        }
    }
    if let Some(avg) = average(&per_cpu) {
        last = Some(avg);
    }
    last.ok_or(TopError::NoCpuLine)
}

/// `Some((is_aggregate, shares))` for a CPU summary line.
fn line_kind(line: &str) -> Option<(bool, &str)> {
    let (label, rest) = line.split_once(':')?;
    let label = label.trim_end();
    let name = label
        .strip_prefix("%Cpu")
        .or_else(|| label.strip_prefix("Cpu"))
        .or_else(|| label.strip_prefix("CPU"))?;
    if name == "(s)" || (name.is_empty() && label == "CPU") {
        Some((true, rest))
    } else if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        Some((false, rest))
    } else {
        None
    }
}

/// The shares of one summary line: pairs of a number (maybe with `%`) and a name, in
/// any of the three layouts.
fn parse_shares(line: &str, rest: &str) -> Result<TopCpu, TopError> {
    let mut idle = None;
    let mut steal = None;
    let mut pending: Option<&str> = None;
    for token in rest.split([',', ' ', '\t']).filter(|t| !t.is_empty()) {
        // `2.0%us` (old procps) is a number and a name in one token.
        let (number, name) = match token.split_once('%') {
            Some((n, name)) if !n.is_empty() => (Some(n), (!name.is_empty()).then_some(name)),
            Some((_, name)) => (None, (!name.is_empty()).then_some(name)),
            None if token.starts_with(|c: char| c.is_ascii_digit() || c == '.') => {
                (Some(token), None)
            }
            None => (None, Some(token)),
        };
        if let Some(n) = number {
            pending = Some(n);
        }
        let (Some(name), Some(n)) = (name, pending) else {
            continue;
        };
        pending = None;
        let slot = match name {
            "id" | "idle" => &mut idle,
            "st" => &mut steal,
            _ => continue,
        };
        let bad = || TopError::BadShare {
            field: name.to_string(),
            line: cut(line, 80).to_string(),
        };
        let value: f64 = n.parse().map_err(|_| bad())?;
        if !(0.0..=100.0).contains(&value) {
            return Err(bad());
        }
        *slot = Some(value);
    }
    let idle = idle.ok_or_else(|| TopError::NoIdle(cut(line, 80).to_string()))?;
    Ok(TopCpu {
        cpu: (100.0 - idle).clamp(0.0, 100.0),
        steal,
    })
}

fn average(readings: &[TopCpu]) -> Option<TopCpu> {
    if readings.is_empty() {
        return None;
    }
    let n = readings.len() as f64;
    let steal = if readings.iter().all(|r| r.steal.is_some()) {
        Some(readings.iter().filter_map(|r| r.steal).sum::<f64>() / n)
    } else {
        None
    };
    Some(TopCpu {
        cpu: readings.iter().map(|r| r.cpu).sum::<f64>() / n,
        steal,
    })
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl fmt::Display for TopCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu {:.1}%", self.cpu)?;
        if let Some(st) = self.steal {
            write!(f, ", steal {st:.1}%")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Result<(f64, Option<f64>), TopError>) {
        let got = parse_top(text).map(|r| (r.cpu, r.steal));
        match (&got, &expect) {
            (Ok((c, s)), Ok((ec, es))) => {
                assert!((c - ec).abs() < 1e-9, "{text:?}: cpu {c} != {ec}");
                match (s, es) {
                    (Some(s), Some(es)) => assert!((s - es).abs() < 1e-9, "{text:?}"),
                    (None, None) => {}
                    _ => panic!("{text:?}: steal {s:?} != {es:?}"),
                }
            }
            _ => assert_eq!(got, expect, "{text:?}"),
        }
    }

    /// Real outputs, captured on Debian 12 (procps-ng 4.0.2, BusyBox 1.35.0).
    #[test]
    fn real_outputs() {
        check(
            include_str!("../tests/data/top/procps-4.0.2-bn1.txt"),
            Ok((100.0, Some(0.0))),
        );
        // Two frames: the second (the last second) wins.
        check(
            include_str!("../tests/data/top/procps-4.0.2-bn2.txt"),
            Ok((100.0 - 10.9, Some(0.0))),
        );
        check(
            include_str!("../tests/data/top/busybox-1.35.0-bn1.txt"),
            Ok((100.0, None)),
        );
        check(
            include_str!("../tests/data/top/busybox-1.35.0-bn2.txt"),
            Ok((92.0, None)),
        );
    }

    #[test]
    fn layouts() {
        // procps, a steal-heavy VM; `100.0 id` glued to the comma.
        check(
            "%Cpu(s):  1.0 us,  2.0 sy,  0.0 ni, 72.0 id,  0.0 wa,  0.0 hi,  0.0 si, 25.0 st",
            Ok((28.0, Some(25.0))),
        );
        check(
            "%Cpu(s):  0.0 us,  0.0 sy,  0.0 ni,100.0 id,  0.0 wa,  0.0 hi,  0.0 si,  0.0 st",
            Ok((0.0, Some(0.0))),
        );
        // Old procps (3.2).
        check(
            "Cpu(s):  1.5%us,  0.5%sy,  0.0%ni, 97.9%id,  0.0%wa,  0.0%hi,  0.0%si,  0.1%st",
            Ok((2.1, Some(0.1))),
        );
        // BusyBox with decimals (FEATURE_TOP_DECIMALS), CirrOS's without.
        check(
            "CPU:  0.4% usr  0.2% sys  0.0% nic 99.3% idle  0.0% io  0.0% irq  0.0% sirq",
            Ok((100.0 - 99.3, None)),
        );
        check(
            "Mem: 1K used\nCPU:   0% usr   0% sys   0% nic 100% idle   0% io   0% irq   0% sirq\nLoad average: 0.00",
            Ok((0.0, None)),
        );
        // Per-CPU lines are averaged.
        check(
            "%Cpu0  : 10.0 us,  0.0 sy,  0.0 ni, 90.0 id,  0.0 wa,  0.0 hi,  0.0 si,  2.0 st\n\
             %Cpu1  : 30.0 us,  0.0 sy,  0.0 ni, 70.0 id,  0.0 wa,  0.0 hi,  0.0 si,  4.0 st\n\
             MiB Mem : 1.0 total",
            Ok((20.0, Some(3.0))),
        );
    }

    #[test]
    fn refusals() {
        check("", Err(TopError::NoCpuLine));
        check("sh: top: not found", Err(TopError::NoCpuLine));
        check(
            "%Cpu(s):  1.0 us",
            Err(TopError::NoIdle("%Cpu(s):  1.0 us".into())),
        );
        check(
            "%Cpu(s): 140.0 id",
            Err(TopError::BadShare {
                field: "id".into(),
                line: "%Cpu(s): 140.0 id".into(),
            }),
        );
        check(
            "CPU: 1.2.3% idle",
            Err(TopError::BadShare {
                field: "idle".into(),
                line: "CPU: 1.2.3% idle".into(),
            }),
        );
        // Not a summary: a process named CPU, the task line.
        check("Tasks: 1 total\n 12 root CPU", Err(TopError::NoCpuLine));
    }
}
