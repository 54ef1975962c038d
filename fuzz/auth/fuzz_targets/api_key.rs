//! Presented API keys: any string must be refused or verified without panicking.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rampart_auth::ApiKeyStore;

fn store() -> &'static ApiKeyStore {
    static STORE: OnceLock<ApiKeyStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rampart-auth-fuzz-{}", std::process::id()));
        let store = ApiKeyStore::open(&dir).unwrap();
        store.add("fuzz", &["user".to_string()]).unwrap();
        store
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(store().verify(text).is_none());
    }
});
