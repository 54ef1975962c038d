//! Training-data CSV for `rampart profile`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_defend::profile::Profile;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Profile::from_csv(data, "label", 16) {
        let _ = Profile::from_json(&p.to_json());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Profile::from_json(text);
    }
});
