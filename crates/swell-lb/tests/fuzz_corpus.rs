//! The fuzz targets' bodies (`swell_lb::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target.

use proptest::prelude::*;
use swell_core::fuzz_targets::{corpus, mutate, replay};
use swell_lb::fuzz_targets as targets;

#[test]
fn the_corpus_replays() {
    assert!(replay("h1_request", targets::h1_request) >= 5);
    assert!(replay("h1_response", targets::h1_response) >= 5);
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
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn request_heads_hold(data in inputs("h1_request")) {
        targets::h1_request(&data);
    }

    #[test]
    fn response_heads_hold(data in inputs("h1_response")) {
        targets::h1_response(&data);
    }
}
