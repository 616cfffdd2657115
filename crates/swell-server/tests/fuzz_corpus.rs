//! The API's fuzz bodies (`swell_server::fuzz_targets`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target.

#[macro_use]
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use swell_server::fuzz_targets as targets;

fuzz_corpus_tests! { cases: 2000;
    push_bodies_hold: "push_metrics" => targets::push_metrics, at_least 6;
    queries_hold: "api_query" => targets::api_query, at_least 6;
}
