#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsconsole::fuzzing::config_load(data));
