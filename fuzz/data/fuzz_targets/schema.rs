//! Any text as a schema file: parsed and validated, or refused with an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rampart_data::schema::Schema::parse(std::path::Path::new("fuzz.toml"), text);
    }
});
