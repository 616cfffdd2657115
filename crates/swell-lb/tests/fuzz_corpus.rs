//! The fuzz targets' bodies (`swell_lb::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target.

#[macro_use]
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use swell_lb::fuzz_targets as targets;

fuzz_corpus_tests! { cases: 3000;
    request_heads_hold: "h1_request" => targets::h1_request, at_least 5;
    response_heads_hold: "h1_response" => targets::h1_response, at_least 5;
}
