//! The inputs every crate's `fuzz_corpus` test draws (included by path, since proptest is
//! only a dev-dependency and stays out of the pure core).

use proptest::prelude::*;
use swell_core::fuzz_targets::{corpus, mutate};

/// Random bytes, or a corpus file of `target` after a few edits.
pub fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> + use<> {
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
