//! The fuzz targets' bodies (`swell_lb::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target.

use proptest::prelude::*;
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use fuzz_inputs::inputs;
use swell_core::fuzz_targets::replay;
use swell_lb::fuzz_targets as targets;

#[test]
fn the_corpus_replays() {
    assert!(replay("h1_request", targets::h1_request) >= 5);
    assert!(replay("h1_response", targets::h1_response) >= 5);
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
