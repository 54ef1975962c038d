//! Shared fixtures: a signing key, a gate configuration trusting it, and model directories.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};

use rampart_deploy::{GateConfig, TrustedKey};
use rampart_sign::{sign_dir, Curve, SignOptions, SigningKey};

/// The example ONNX model (a real model the scanner knows).
pub fn onnx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/model/model.onnx")
}

pub fn key() -> SigningKey {
    SigningKey::generate(Curve::P256)
}

pub fn config(key: &SigningKey) -> GateConfig {
    GateConfig::new(vec![TrustedKey {
        name: "release.pub".into(),
        key: key.verifying_key(),
    }])
}

/// Writes `files` under `dir`.
pub fn write_model(dir: &Path, files: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, data) in files {
        std::fs::write(dir.join(name), data).unwrap();
    }
}

/// Signs `dir` into `dir/model.sig`.
pub fn sign(dir: &Path, key: &SigningKey) {
    let mut options = SignOptions::default();
    options
        .ignore
        .add(rampart_digest::ManifestPath::new("model.sig").unwrap());
    let (_, bundle) = sign_dir(dir, key, &options).unwrap();
    std::fs::write(dir.join("model.sig"), bundle.to_json().unwrap()).unwrap();
}

/// A signed copy of the example model with a config file; `tag` changes the config so versions differ.
pub fn good_model(dir: &Path, key: &SigningKey, tag: &str) {
    let onnx = std::fs::read(onnx()).unwrap();
    let config = format!("{{\"version\": \"{tag}\"}}");
    write_model(
        dir,
        &[("model.onnx", &onnx), ("config.json", config.as_bytes())],
    );
    sign(dir, key);
}

/// A pickle that runs `os.system` when loaded.
pub const MALICIOUS_PICKLE: &[u8] = b"cos\nsystem\n(S'echo pwned'\ntR.";
