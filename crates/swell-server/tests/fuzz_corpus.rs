//! The API's fuzz bodies (`swell_server::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target.

use proptest::prelude::*;
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use fuzz_inputs::inputs;
use swell_core::fuzz_targets::replay;
use swell_server::fuzz_targets as targets;

#[test]
fn the_corpus_replays() {
    assert!(replay("push_metrics", targets::push_metrics) >= 6);
    assert!(replay("api_query", targets::api_query) >= 6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn push_bodies_hold(data in inputs("push_metrics")) {
        targets::push_metrics(&data);
    }

    #[test]
    fn queries_hold(data in inputs("api_query")) {
        targets::api_query(&data);
    }
}
