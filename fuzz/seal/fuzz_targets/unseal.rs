//! Sealed files from hostile bytes (the age v1 header parser, the parallel STREAM payload decryption, armor,
//! tar archives inside): no panic, bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_seal::fuzz_unseal(data);
});
