#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| opsconsole::fuzzing::replication_wire(data));
