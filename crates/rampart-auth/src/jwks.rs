//! JSON Web Key Sets: which public keys may sign tokens, each bound to exactly one algorithm.
//!
//! A key's algorithm comes from its own type (`kty`, `crv`) and, when present, its `alg` member; a token whose header
//! names another algorithm is refused. Symmetric (`oct`) keys are never accepted from a JWKS, so a public key can
//! never be turned into an HMAC secret, and RSA keys must have at least 2048 bits.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;
const MAX_KEYS: usize = 100;
const MIN_RSA_BYTES: usize = 256;
const MAX_RSA_BYTES: usize = 512;

/// The signature algorithms Rampart accepts on JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// ECDSA over P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 to 4096 bits.
    RS256,
    /// Ed25519.
    EdDSA,
}

impl JwtAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [JwtAlgorithm; 3] = [
        JwtAlgorithm::ES256,
        JwtAlgorithm::RS256,
        JwtAlgorithm::EdDSA,
    ];

    /// The JOSE name (`ES256`, `RS256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// The algorithm of this JOSE name, if supported (case-sensitive, as JOSE is).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One usable verification key.
pub(crate) struct VerifyKey {
    pub(crate) alg: JwtAlgorithm,
    pub(crate) key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS document.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub(crate) by_kid: HashMap<String, VerifyKey>,
    /// Keys without a `kid`: usable only by tokens without one, and only when the set holds a single key.
    pub(crate) unnamed: Vec<VerifyKey>,
}

impl KeySet {
    pub(crate) fn len(&self) -> usize {
        self.by_kid.len() + self.unnamed.len()
    }

    /// The only key of the set, for a token without `kid`.
    pub(crate) fn single(&self) -> Option<&VerifyKey> {
        if self.len() != 1 {
            return None;
        }
        self.by_kid.values().next().or(self.unnamed.first())
    }

    /// Parse a JWKS document. Keys Rampart cannot use safely are skipped (and logged); a document with no usable key,
    /// a duplicate `kid` or more than 100 keys is an error.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
        if doc.keys.len() > MAX_KEYS {
            return Err(format!("more than {MAX_KEYS} keys"));
        }
        let mut set = KeySet::default();
        for (index, jwk) in doc.keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(Value::as_str);
            match parse_jwk(jwk) {
                Ok(key) => match kid {
                    Some(kid) => {
                        if set.by_kid.insert(kid.to_string(), key).is_some() {
                            return Err(format!("key id `{kid}` appears twice"));
                        }
                    }
                    None => set.unnamed.push(key),
                },
                Err(reason) => {
                    tracing::warn!(index, kid = kid.unwrap_or(""), %reason, "skipping a JWKS key");
                }
            }
        }
        if set.len() == 0 {
            return Err(
                "no usable key (ES256 P-256, RS256 of 2048 bits or more, or EdDSA Ed25519)"
                    .to_string(),
            );
        }
        Ok(set)
    }
}

fn member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, String> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string member `{name}`"))
}

fn b64(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(member(jwk, name)?)
        .map_err(|_| format!("member `{name}` is not base64url"))
}

fn parse_jwk(jwk: &Value) -> Result<VerifyKey, String> {
    if let Some(usage) = jwk.get("use") {
        if usage.as_str() != Some("sig") {
            return Err("`use` is not `sig`".to_string());
        }
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("`key_ops` does not include `verify`".to_string());
        }
    }
    let (alg, key) = match member(jwk, "kty")? {
        "RSA" => {
            let n = b64(jwk, "n")?;
            let e = b64(jwk, "e")?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_BYTES {
                return Err(format!(
                    "RSA key of {} bits, at least 2048 are required",
                    significant * 8
                ));
            }
            if significant > MAX_RSA_BYTES || e.is_empty() || e.len() > 8 {
                return Err("RSA key parameters out of range".to_string());
            }
            (
                JwtAlgorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        "EC" => {
            if member(jwk, "crv")? != "P-256" {
                return Err("EC key not on curve P-256".to_string());
            }
            let (x, y) = (b64(jwk, "x")?, b64(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates are not 32 bytes".to_string());
            }
            let key = DecodingKey::from_ec_components(member(jwk, "x")?, member(jwk, "y")?)
                .map_err(|e| format!("invalid EC key: {e}"))?;
            (JwtAlgorithm::ES256, key)
        }
        "OKP" => {
            if member(jwk, "crv")? != "Ed25519" {
                return Err("OKP key is not Ed25519".to_string());
            }
            if b64(jwk, "x")?.len() != 32 {
                return Err("Ed25519 key is not 32 bytes".to_string());
            }
            let key = DecodingKey::from_ed_components(member(jwk, "x")?)
                .map_err(|e| format!("invalid Ed25519 key: {e}"))?;
            (JwtAlgorithm::EdDSA, key)
        }
        "oct" => return Err("symmetric keys are never accepted from a JWKS".to_string()),
        other => return Err(format!("key type `{other}` is not supported")),
    };
    if let Some(declared) = jwk.get("alg") {
        if declared.as_str() != Some(alg.as_str()) {
            return Err(format!("`alg` does not match a {alg} key"));
        }
    }
    Ok(VerifyKey { alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(keys: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "keys": keys })).unwrap()
    }

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn unusable_keys_are_skipped() {
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "ed"});
        let bad = [
            json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
            json!({"kty": "OKP", "crv": "X25519", "x": X, "kid": "x"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "enc", "use": "enc"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "hs", "alg": "HS256"}),
            json!({"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "ops", "key_ops": ["sign"]}),
            json!({"kty": "EC", "crv": "P-384", "x": X, "y": X, "kid": "p384"}),
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB", "kid": "rsa1024"}),
        ];
        let mut keys = vec![ed];
        keys.extend(bad);
        let set = KeySet::parse(&doc(Value::Array(keys))).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.by_kid.get("ed").unwrap().alg, JwtAlgorithm::EdDSA);
        assert!(set.single().is_some());
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(KeySet::parse(b"not json").is_err());
        assert!(KeySet::parse(&doc(json!([]))).is_err());
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "same"});
        assert!(KeySet::parse(&doc(json!([ed, ed])))
            .unwrap_err()
            .contains("twice"));
        assert!(KeySet::parse(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
    }
}
