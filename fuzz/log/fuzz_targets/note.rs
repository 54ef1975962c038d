//! Signed notes, checkpoints and verifier keys from hostile bytes: no panic, bounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_log::fuzz_note(data);
});
