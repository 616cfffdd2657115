//! The fuzz targets' bodies (`swell_core::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target.

use proptest::prelude::*;
#[path = "support/fuzz_inputs.rs"]
mod fuzz_inputs;

use fuzz_inputs::inputs;
use swell_core::fuzz_targets::{self as targets, mutate, replay};

#[test]
fn the_corpus_replays() {
    assert!(replay("trace", targets::trace) >= 9);
    assert!(replay("duration", targets::duration) >= 5);
    assert!(replay("group_spec", targets::group_spec_json) >= 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn traces_hold(data in inputs("trace")) {
        targets::trace(&data);
    }

    #[test]
    fn durations_hold(data in inputs("duration")) {
        targets::duration(&data);
    }

    #[test]
    fn json_group_specs_hold(data in inputs("group_spec")) {
        targets::group_spec_json(&data);
    }
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
