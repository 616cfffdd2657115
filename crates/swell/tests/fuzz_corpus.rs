//! The CLI's document fuzz bodies (`src/fuzz_targets.rs`) on stable: every file of the
//! checked-in corpus (`fuzz/corpus/<target>/`, crashes found by `scripts/fuzz` included)
//! and a few thousand random and mutated inputs per target. `swell` is a binary crate,
//! so the parser and the bodies are included by path, as the fuzz targets do.

#[allow(dead_code)]
#[path = "../src/docs.rs"]
mod docs;
#[path = "../src/fuzz_targets.rs"]
mod fuzz_targets;

#[macro_use]
#[path = "../../swell-core/tests/support/fuzz_inputs.rs"]
mod fuzz_inputs;

fuzz_corpus_tests! { cases: 1500;
    yaml_group_specs_hold: "group_spec" => fuzz_targets::group_spec_yaml, at_least 3;
    policy_files_hold: "policy_file" => fuzz_targets::policy_file, at_least 3;
}
