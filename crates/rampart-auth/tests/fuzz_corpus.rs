//! Replays the committed cargo-fuzz corpus (`fuzz/auth/corpus/`) through the same entry points as the fuzz targets,
//! so CI exercises every parser of hostile input on it.

#![allow(clippy::unwrap_used, reason = "test helpers outside #[test] functions")]

use std::fs;
use std::path::{Path, PathBuf};

use rampart_auth::{spiffe_id_from_der, ApiKeyStore, SpiffeId};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/auth/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    files
}

#[test]
fn api_key_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    store.add("fuzz", &["user".to_string()]).unwrap();
    for (path, bytes) in corpus("api_key") {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            assert!(store.verify(text).is_none(), "{}", path.display());
        }
    }
}

#[test]
fn jwt_corpus() {
    for (path, bytes) in corpus("jwt") {
        let accepted = rampart_auth::fuzz_jwt(&bytes);
        let name = path.file_name().unwrap().to_str().unwrap();
        // The corpus holds two usable key sets and no valid token.
        let expected = matches!(name, "jwks-ed25519" | "jwks-p256");
        assert_eq!(accepted, expected, "{name}");
    }
}

#[test]
fn spiffe_corpus() {
    for (path, bytes) in corpus("spiffe") {
        let name = path.file_name().unwrap().to_str().unwrap();
        let from_der = spiffe_id_from_der(&bytes);
        let from_text = std::str::from_utf8(&bytes).ok().map(SpiffeId::parse);
        match name {
            "svid.der" => assert_eq!(
                from_der.unwrap().to_string(),
                "spiffe://example.org/ns/prod/sa/web"
            ),
            "id" => assert!(from_text.unwrap().is_ok()),
            _ => assert!(
                from_der.is_err() && from_text.is_none_or(|r| r.is_err()),
                "{name}"
            ),
        }
    }
}
