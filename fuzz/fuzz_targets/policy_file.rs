//! `swell sim --policy-file` (body in `crates/swell/src/fuzz_targets.rs`).
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/swell/src/docs.rs"]
mod docs;
#[allow(dead_code)]
#[path = "../../crates/swell/src/fuzz_targets.rs"]
mod fuzz_targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::policy_file(data));
