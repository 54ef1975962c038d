//! Entry bundles and hash tiles from hostile bytes: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_log::fuzz_bundle(data);
});
