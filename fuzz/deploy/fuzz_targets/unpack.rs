//! Registry uploads (tar streams of a model directory) from hostile bytes: no panic, nothing written outside the
//! staging directory, bounded size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_deploy::upload::fuzz_unpack(data);
});
