#![no_main]
//! Fuzz target: untrusted bytes into iddpm_data::fuzzing::idx.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iddpm_data::fuzzing::idx(data));
