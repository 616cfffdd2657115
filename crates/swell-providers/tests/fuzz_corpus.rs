//! The providers' fuzz bodies (`swell_providers::fuzz_targets`) on stable: every file of
//! the checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz`
//! included) and a few thousand random and mutated inputs per target.

use proptest::prelude::*;
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

use fuzz_inputs::inputs;
use swell_core::fuzz_targets::replay;
use swell_providers::fuzz_targets as targets;

#[test]
fn the_corpus_replays() {
    assert!(replay("keystone_token", targets::keystone_token) >= 6);
    assert!(replay("openstack_answer", targets::openstack_answer) >= 20);
    assert!(replay("clouds_yaml", targets::clouds_yaml) >= 8);
    assert!(replay("docker_answer", targets::docker_answer) >= 6);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn keystone_tokens_hold(data in inputs("keystone_token")) {
        targets::keystone_token(&data);
    }

    #[test]
    fn openstack_answers_hold(data in inputs("openstack_answer")) {
        targets::openstack_answer(&data);
    }

    #[test]
    fn clouds_yamls_hold(data in inputs("clouds_yaml")) {
        targets::clouds_yaml(&data);
    }

    #[test]
    fn docker_answers_hold(data in inputs("docker_answer")) {
        targets::docker_answer(&data);
    }
}
