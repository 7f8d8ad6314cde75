#![no_main]
//! Fuzz target: untrusted bytes into iddpm_data::fuzzing::image.

libfuzzer_sys::fuzz_target!(|data: &[u8]| iddpm_data::fuzzing::image(data));
