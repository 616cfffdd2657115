//! `swell_providers::fuzz_targets::prometheus_answer` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| swell_providers::fuzz_targets::prometheus_answer(data));
