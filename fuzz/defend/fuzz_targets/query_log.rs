//! Query logs and key files for `rampart watermark verify`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_defend::watermark::{read_query_log, WatermarkKey};

fuzz_target!(|data: &[u8]| {
    let _ = read_query_log(data, "label");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = WatermarkKey::from_hex(text);
    }
});
