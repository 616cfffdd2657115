//! A group document through the API's JSON parse and the CLI's YAML parse, then
//! `GroupSpec::validate` (bodies in `swell_core::fuzz_targets` and
//! `crates/swell/src/fuzz_targets.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/swell/src/docs.rs"]
mod docs;
#[allow(dead_code)]
#[path = "../../crates/swell/src/fuzz_targets.rs"]
mod fuzz_targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    swell_core::fuzz_targets::group_spec_json(data);
    fuzz_targets::group_spec_yaml(data);
});
