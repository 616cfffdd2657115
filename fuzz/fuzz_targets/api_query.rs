//! `swell_server::fuzz_targets::api_query` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| swell_server::fuzz_targets::api_query(data));
