//! `swell_lb::fuzz_targets::h1_request` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| swell_lb::fuzz_targets::h1_request(data));
