//! The providers' fuzz bodies (`swell_providers::fuzz_targets`) on stable: every file of
//! the checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz`
//! included) and a few thousand random and mutated inputs per target.

#[macro_use]
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use swell_providers::fuzz_targets as targets;

fuzz_corpus_tests! { cases: 1500;
    keystone_tokens_hold: "keystone_token" => targets::keystone_token, at_least 6;
    openstack_answers_hold: "openstack_answer" => targets::openstack_answer, at_least 20;
    clouds_yamls_hold: "clouds_yaml" => targets::clouds_yaml, at_least 8;
    docker_answers_hold: "docker_answer" => targets::docker_answer, at_least 6;
    prometheus_answers_hold: "prometheus_answer" => targets::prometheus_answer, at_least 6;
}
