//! `swell_server::fuzz_targets::push_metrics` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| swell_server::fuzz_targets::push_metrics(data));
