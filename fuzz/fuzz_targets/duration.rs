//! `swell_core::fuzz_targets::duration` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| swell_core::fuzz_targets::duration(data));
