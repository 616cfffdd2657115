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
use swell_core::fuzz_targets::{corpus, mutate, replay};

#[test]
fn the_corpus_replays() {
    assert!(replay("group_spec", fuzz_targets::group_spec_yaml) >= 3);
    assert!(replay("policy_file", fuzz_targets::policy_file) >= 3);
}

/// Random bytes, or a corpus file of `target` after a few edits.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = corpus(target);
    let n = seeds.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..128),
        (
            0..n,
            proptest::collection::vec(any::<(usize, u8, u8)>(), 0..8)
        )
            .prop_map(move |(i, edits)| mutate(&seeds[i].1, &edits)),
    ]
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
