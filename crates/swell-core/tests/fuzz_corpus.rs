//! The fuzz targets' bodies (`swell_core::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target (`fuzz_corpus_tests!` in
//! `swell-core/tests/support/fuzz_inputs.rs`).

#[macro_use]
#[path = "support/fuzz_inputs.rs"]
mod fuzz_inputs;

use swell_core::fuzz_targets::{self as targets, mutate, replay};

fuzz_corpus_tests! { cases: 2000;
    traces_hold: "trace" => targets::trace, at_least 9;
    durations_hold: "duration" => targets::duration, at_least 5;
    json_group_specs_hold: "group_spec" => targets::group_spec_json, at_least 3;
    top_outputs_hold: "top_output" => targets::top_output, at_least 6;
}

/// The replay and the mutations must be able to fail: an invariant broken on purpose is
/// caught and names its input.
#[test]
fn a_broken_invariant_is_caught() {
    let caught = std::panic::catch_unwind(|| replay("duration", |_| panic!("on purpose")));
    assert!(caught.is_err());
    assert_eq!(mutate(b"abc", &[(1, b'X', 0)]), b"aXc");
    assert_eq!(mutate(b"abc", &[(0, 1, 2)]), b"c");
}
