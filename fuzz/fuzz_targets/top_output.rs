//! `swell_core::fuzz_targets::top_output` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| swell_core::fuzz_targets::top_output(data));
