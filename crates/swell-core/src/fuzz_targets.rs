//! Fuzzing bodies for the core's parsers of outside input, shared by the `fuzz/` targets
//! (cargo-fuzz, nightly) and the stable replay test `tests/fuzz_corpus.rs`.
//!
//! Each body takes arbitrary bytes and panics only when an invariant breaks: the parser
//! itself must answer every input with a value or an error, never a panic, and what it
//! accepts must keep the properties the rest of Swell relies on. Not part of the API.

use crate::group::GroupSpec;
use crate::metrics::MetricWindow;
use crate::policy::{GroupState, PolicyEngine};
use crate::sim::{MAX_TRACE_SECONDS, Trace};
use crate::time::Timestamp;
use std::time::Duration;

/// `swell_core::sim::Trace::parse` (the CSV of `swell sim --trace`): an accepted trace
/// starts at 0, has strictly increasing finite times within [`MAX_TRACE_SECONDS`] and
/// finite values `>= 0`, and samples into a bounded series.
pub fn trace(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(trace) = Trace::parse(text) else {
        return;
    };
    let points = trace.points();
    assert_eq!(points.first().map(|p| p.0), Some(0.0), "{text:?}");
    for w in points.windows(2) {
        assert!(w[0].0 < w[1].0, "times must increase: {text:?}");
    }
    for &(t, v) in points {
        assert!(t.is_finite() && v.is_finite() && v >= 0.0, "{text:?}");
    }
    let last = trace.t_last();
    assert!((0.0..=MAX_TRACE_SECONDS).contains(&last), "{text:?}");
    assert!(trace.peak().is_finite());
    // A tick that gives at most ~1000 samples, as `swell sim`'s options check enforces.
    let tick = Duration::from_secs_f64((last / 1000.0).max(0.001));
    let samples = trace.sample(tick);
    assert!(
        !samples.is_empty() && samples.len() <= 1002,
        "{}",
        samples.len()
    );
    assert!(
        samples.iter().all(|v| v.is_finite() && *v >= 0.0),
        "{text:?}"
    );
}

/// `swell_core::top::parse_top` (a `top` output read from an instance over SSH): an
/// accepted output gives a busy share and a steal share within [0, 100], and the same
/// text parses the same way again.
pub fn top_output(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(reading) = crate::top::parse_top(&text) else {
        return;
    };
    assert!(
        (0.0..=100.0).contains(&reading.cpu),
        "{text:?}: {reading:?}"
    );
    if let Some(st) = reading.steal {
        assert!((0.0..=100.0).contains(&st), "{text:?}: {reading:?}");
    }
    assert_eq!(crate::top::parse_top(&text), Ok(reading), "{text:?}");
}

/// `swell_core::duration::parse`: an accepted duration formats back to text that parses
/// to the same duration, and fits in milliseconds (what timestamps and the store use).
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(d) = crate::duration::parse(text) else {
        return;
    };
    assert!(u64::try_from(d.as_millis()).is_ok(), "{text:?}");
    let formatted = crate::duration::format(d);
    assert_eq!(
        crate::duration::parse(&formatted),
        Ok(d),
        "{text:?} -> {formatted:?}"
    );
}

/// A group document as `POST /v1/groups` takes it (JSON), then `GroupSpec::validate`;
/// see [`check_valid_group`] for what a valid one must satisfy.
pub fn group_spec_json(data: &[u8]) {
    let Ok(spec) = serde_json::from_slice::<GroupSpec>(data) else {
        return;
    };
    if spec.validate().is_ok() {
        check_valid_group(&spec);
    }
}

/// What every group that passed `GroupSpec::validate` must satisfy, whichever parser
/// read it: it survives the JSON round trip the CLI → API → store path takes (serialize,
/// parse, validate) unchanged, and its policies build and decide once within its bounds.
pub fn check_valid_group(spec: &GroupSpec) {
    let json = serde_json::to_string(spec).expect("a group spec serializes");
    let back: GroupSpec = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("the serialized group does not parse: {e}: {json}"));
    assert_eq!(&back, spec, "{json}");
    back.validate()
        .unwrap_or_else(|e| panic!("the round-tripped group is invalid: {e}: {json}"));

    let capacity = spec.capacity().expect("validated");
    let mut engine = PolicyEngine::new(&spec.policies, capacity, spec.cooldown);
    let window = MetricWindow::new(engine.lookback());
    let desired = spec.initial_desired();
    let state = GroupState {
        desired_capacity: desired,
        provisioned: desired,
        ready: desired,
        last_scaling_at: None,
    };
    // 2026-12-02T08:00:00Z, a Wednesday.
    let decision = engine.decide(&state, &window, Timestamp::from_secs(1_796_198_400));
    assert!(
        (spec.min..=spec.max).contains(&decision.desired_capacity),
        "{decision:?} outside [{}, {}]",
        spec.min,
        spec.max
    );
}

/// The checked-in corpus of `target` (`fuzz/corpus/<target>/`, every file, by name):
/// what the stable replay tests run each body on. Panics when it is missing or empty.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| {
            let path = e.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files.sort();
    files
}

/// Runs `body` on every corpus file of `target`; a failure names the file.
pub fn replay(target: &str, body: fn(&[u8])) -> usize {
    let files = corpus(target);
    for (name, bytes) in &files {
        if let Err(panic) = std::panic::catch_unwind(|| body(bytes)) {
            eprintln!("fuzz corpus input {name} broke an invariant");
            std::panic::resume_unwind(panic);
        }
    }
    files.len()
}

/// `seed` after libFuzzer-like edits, each `(position, byte, kind)`: kind 0 overwrites a
/// byte, 1 inserts one, 2 deletes up to 8 bytes, 3 duplicates up to 16 bytes in place.
pub fn mutate(seed: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for &(pos, byte, kind) in edits {
        let at = if out.is_empty() { 0 } else { pos % out.len() };
        match kind % 4 {
            0 if !out.is_empty() => out[at] = byte,
            2 => {
                let end = (at + 1 + usize::from(byte % 8)).min(out.len());
                out.drain(at..end);
            }
            3 => {
                let end = (at + 1 + usize::from(byte % 16)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => out.insert(at, byte),
        }
    }
    out
}

/// Whether `path`, as `serde_path_to_error` prints it (`samples[0].value`; `.` for the
/// root; `?` for a step it could not follow), names a place in `doc`: what an error that
/// names its field must satisfy. Keys may hold `.` or `[`, so each step is matched
/// against the keys `doc` has rather than split from the text.
pub fn path_resolves(doc: &serde_json::Value, path: &str) -> bool {
    // `first`: no `.` before a key at the start of the path (the key may begin with one).
    fn walk(v: &serde_json::Value, rest: &str, first: bool) -> bool {
        if rest.is_empty() {
            return true;
        }
        let follows = |tail: &str| tail.is_empty() || tail.starts_with(['.', '[']);
        match v {
            serde_json::Value::Array(items) => {
                let Some((index, tail)) = rest.strip_prefix('[').and_then(|r| r.split_once(']'))
                else {
                    return false;
                };
                index
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .is_some_and(|item| walk(item, tail, false))
            }
            serde_json::Value::Object(map) => {
                let rest = if first {
                    rest
                } else {
                    match rest.strip_prefix('.') {
                        Some(r) => r,
                        None => return false,
                    }
                };
                if let Some(tail) = rest.strip_prefix('?')
                    && follows(tail)
                    && map.values().any(|item| walk(item, tail, false))
                {
                    return true;
                }
                // A key with a control character is named escaped, as errors show it.
                map.iter().any(|(key, item)| {
                    [key.clone(), crate::limits::shown_key(key)]
                        .iter()
                        .any(|k| {
                            rest.strip_prefix(k.as_str())
                                .is_some_and(|tail| follows(tail) && walk(item, tail, false))
                        })
                })
            }
            _ => false,
        }
    }
    path == "." || walk(doc, path, true)
}
