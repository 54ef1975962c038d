//! Client certificates (DER) and SPIFFE ID strings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = rampart_auth::spiffe_id_from_der(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rampart_auth::SpiffeId::parse(text);
    }
});
