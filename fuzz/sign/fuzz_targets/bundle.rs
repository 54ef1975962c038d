//! Parses arbitrary bytes as a signature file, then its payload as a statement: must never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = rampart_sign::Bundle::parse(data) {
        let _ = bundle.to_json();
        let _ = rampart_sign::read_statement(&bundle.payload);
    }
    let _ = rampart_sign::read_statement(data);
});
