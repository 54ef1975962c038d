//! Sealed files (age headers, STREAM payloads, tar archives inside) from hostile bytes: no panic, bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_seal::fuzz_unseal(data);
});
