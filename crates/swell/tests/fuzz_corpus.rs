//! The CLI's document fuzz bodies (`src/fuzz_targets.rs`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target. `swell` is a binary crate,
//! so the parser and the bodies are included by path, as the fuzz targets do.

#[allow(dead_code)]
#[path = "../src/docs.rs"]
mod docs;
#[path = "../src/fuzz_targets.rs"]
mod fuzz_targets;

use proptest::prelude::*;
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use fuzz_inputs::inputs;
use swell_core::fuzz_targets::replay;

#[test]
fn the_corpus_replays() {
    assert!(replay("group_spec", fuzz_targets::group_spec_yaml) >= 3);
    assert!(replay("policy_file", fuzz_targets::policy_file) >= 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn yaml_group_specs_hold(data in inputs("group_spec")) {
        fuzz_targets::group_spec_yaml(&data);
    }

    #[test]
    fn policy_files_hold(data in inputs("policy_file")) {
        fuzz_targets::policy_file(&data);
    }
}
