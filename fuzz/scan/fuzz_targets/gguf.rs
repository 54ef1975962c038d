//! Fuzz target: the gguf parser of rampart-scan over arbitrary bytes. It must end in a report, never a panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_scan::fuzzing::{fuzz_entry, FuzzParser};

fuzz_target!(|data: &[u8]| {
    let _ = fuzz_entry(FuzzParser::Gguf, data);
});
