//! Entry points shared by the cargo-fuzz targets (`fuzz/auth`) and the test that replays their corpus.

use std::sync::{Arc, OnceLock};

use crate::jwt::{JwksFile, JwtConfig, JwtVerifier};

/// One Ed25519 key (RFC 8037's example public key) under kid `ed`.
const JWKS: &[u8] = br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed",
  "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

fn config() -> JwtConfig {
    JwtConfig::new("https://idp.example", ["rampart"])
}

fn verifier() -> Option<&'static JwtVerifier> {
    static VERIFIER: OnceLock<Option<JwtVerifier>> = OnceLock::new();
    VERIFIER
        .get_or_init(|| {
            JwtVerifier::with_jwks(config(), JWKS, Arc::new(JwksFile::new("/nonexistent"))).ok()
        })
        .as_ref()
}

/// First byte 0: the rest is a JWKS document; otherwise the rest is a token checked against a fixed key set.
/// Returns whether the input was accepted (a JWKS with usable keys, or a valid token).
#[doc(hidden)]
pub fn fuzz_jwt(data: &[u8]) -> bool {
    match data.split_first() {
        Some((0, jwks)) => {
            JwtVerifier::with_jwks(config(), jwks, Arc::new(JwksFile::new("/nonexistent"))).is_ok()
        }
        Some((_, token)) => match (std::str::from_utf8(token), verifier()) {
            (Ok(token), Some(verifier)) => verifier.verify_cached(token).is_ok(),
            _ => false,
        },
        None => false,
    }
}
