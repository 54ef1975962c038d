//! ECDSA keys over P-256, P-384 and P-521, read from and written to PEM, as model_signing's `key` method uses them.

use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use pkcs8::der::Decode;
use sha2::Digest as _;

use crate::Error;

/// The curves model_signing accepts, each with its hash (SHA-256, SHA-384, SHA-512).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 with SHA-256.
    P256,
    /// NIST P-384 with SHA-384.
    P384,
    /// NIST P-521 with SHA-512.
    P521,
}

impl Curve {
    /// `P-256`, `P-384` or `P-521`.
    pub fn name(self) -> &'static str {
        match self {
            Self::P256 => "P-256",
            Self::P384 => "P-384",
            Self::P521 => "P-521",
        }
    }
}

/// A private key. Its bytes are never logged or printed (`Debug` shows only the curve).
pub enum SigningKey {
    /// P-256.
    P256(p256::ecdsa::SigningKey),
    /// P-384.
    P384(p384::ecdsa::SigningKey),
    /// P-521.
    P521(p521::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.curve().name())
    }
}

/// A public key.
#[derive(Clone)]
pub enum VerifyingKey {
    /// P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// P-384.
    P384(p384::ecdsa::VerifyingKey),
    /// P-521.
    P521(p521::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.curve().name())
    }
}

const OID_EC: &str = "1.2.840.10045.2.1";

/// Names an algorithm or curve OID for an error message.
fn describe(algorithm: &str, curve: Option<String>) -> String {
    match (algorithm, curve.as_deref()) {
        ("1.2.840.113549.1.1.1", _) => "an RSA key".into(),
        ("1.3.101.112", _) => "an Ed25519 key".into(),
        ("1.3.101.113", _) => "an Ed448 key".into(),
        (OID_EC, Some("1.3.132.0.10")) => "an EC key on secp256k1".into(),
        (OID_EC, Some(curve)) => format!("an EC key on curve `{curve}`"),
        (other, _) => format!("a key of algorithm `{other}`"),
    }
}

const SUPPORTED: &str = "model signing keys are ECDSA P-256, P-384 or P-521";

/// The label of the first PEM block, if any.
fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = text.get(start..)?;
    let end = rest.find("-----")?;
    rest.get(..end)
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(curve: Curve) -> Self {
        let mut rng = rand_core::OsRng;
        match curve {
            Curve::P256 => Self::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            Curve::P384 => Self::P384(p384::ecdsa::SigningKey::random(&mut rng)),
            Curve::P521 => Self::P521(p521::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// Reads a private key from PEM: SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`), unencrypted.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        match pem_label(text) {
            Some("EC PRIVATE KEY") => {
                if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
                    return Ok(Self::P256(k.into()));
                }
                if let Ok(k) = p384::SecretKey::from_sec1_pem(text) {
                    return Ok(Self::P384(k.into()));
                }
                if let Ok(k) = p521::SecretKey::from_sec1_pem(text) {
                    return Self::from_p521(&k);
                }
                Err(Error::Key(format!(
                    "the private key is not on a supported curve or is corrupt; {SUPPORTED}"
                )))
            }
            Some("PRIVATE KEY") => {
                if let Ok(k) = p256::SecretKey::from_pkcs8_pem(text) {
                    return Ok(Self::P256(k.into()));
                }
                if let Ok(k) = p384::SecretKey::from_pkcs8_pem(text) {
                    return Ok(Self::P384(k.into()));
                }
                if let Ok(k) = p521::SecretKey::from_pkcs8_pem(text) {
                    return Self::from_p521(&k);
                }
                let what = pkcs8::SecretDocument::from_pem(text)
                    .ok()
                    .and_then(|(_, doc)| {
                        let info = pkcs8::PrivateKeyInfo::from_der(doc.as_bytes()).ok()?;
                        let curve = info
                            .algorithm
                            .parameters_oid()
                            .ok()
                            .map(|oid| oid.to_string());
                        Some(describe(&info.algorithm.oid.to_string(), curve))
                    })
                    .unwrap_or_else(|| "corrupt".into());
                Err(Error::Key(format!(
                    "the private key is {what}; {SUPPORTED}"
                )))
            }
            Some("ENCRYPTED PRIVATE KEY") => Err(Error::Key(
                "the private key is encrypted; decrypt it first (`openssl pkey -in KEY -out PLAIN`)".into(),
            )),
            Some("RSA PRIVATE KEY") => Err(Error::Key(format!("the private key is an RSA key; {SUPPORTED}"))),
            Some("PUBLIC KEY") => Err(Error::Key(
                "this is a public key; signing needs the private key".into(),
            )),
            Some(other) => Err(Error::Key(format!(
                "expected a PEM private key, found a `{other}` block"
            ))),
            None => Err(Error::Key("not a PEM file: no `-----BEGIN` line".into())),
        }
    }

    fn from_p521(key: &p521::SecretKey) -> Result<Self, Error> {
        p521::ecdsa::SigningKey::from_bytes(&key.to_bytes())
            .map(Self::P521)
            .map_err(|_| Error::Key("the P-521 private key is invalid".into()))
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        match self {
            Self::P256(_) => Curve::P256,
            Self::P384(_) => Curve::P384,
            Self::P521(_) => Curve::P521,
        }
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Self::P256(k) => VerifyingKey::P256(*k.verifying_key()),
            Self::P384(k) => VerifyingKey::P384(*k.verifying_key()),
            Self::P521(k) => VerifyingKey::P521(p521::ecdsa::VerifyingKey::from(k)),
        }
    }

    /// The private key as PKCS#8 PEM (what `openssl genpkey` writes). Keep it secret.
    pub fn to_pkcs8_pem(&self) -> Result<String, Error> {
        let fail = |_| Error::Key("cannot encode the private key".into());
        let doc = match self {
            Self::P256(k) => p256::SecretKey::from(k)
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(fail)?,
            Self::P384(k) => p384::SecretKey::from(k)
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(fail)?,
            Self::P521(k) => p521::SecretKey::from_bytes(&k.to_bytes())
                .map_err(|_| Error::Key("cannot encode the private key".into()))?
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(fail)?,
        };
        Ok(doc.to_string())
    }

    /// A DER ECDSA signature over `message`, hashed with the curve's hash.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        match self {
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            Self::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
            Self::P521(k) => {
                let sig: p521::ecdsa::Signature = k.sign(message);
                sig.to_der().as_bytes().to_vec()
            }
        }
    }
}

impl VerifyingKey {
    /// Reads a SubjectPublicKeyInfo PEM (`PUBLIC KEY`).
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        match pem_label(text) {
            Some("PUBLIC KEY") => {
                if let Ok(k) = p256::PublicKey::from_public_key_pem(text) {
                    return Ok(Self::P256(k.into()));
                }
                if let Ok(k) = p384::PublicKey::from_public_key_pem(text) {
                    return Ok(Self::P384(k.into()));
                }
                if let Ok(k) = p521::PublicKey::from_public_key_pem(text) {
                    let point = k.to_sec1_bytes();
                    return p521::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map(Self::P521)
                        .map_err(|_| Error::Key("the P-521 public key is invalid".into()));
                }
                let what = spki::Document::from_pem(text)
                    .ok()
                    .and_then(|(_, doc)| {
                        let info = spki::SubjectPublicKeyInfoRef::from_der(doc.as_bytes()).ok()?;
                        let curve = info
                            .algorithm
                            .parameters_oid()
                            .ok()
                            .map(|oid| oid.to_string());
                        Some(describe(&info.algorithm.oid.to_string(), curve))
                    })
                    .unwrap_or_else(|| "corrupt".into());
                Err(Error::Key(format!("the public key is {what}; {SUPPORTED}")))
            }
            Some(
                "EC PRIVATE KEY" | "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY",
            ) => Err(Error::Key(
                "this is a private key; verification needs the public key (`public.pem`)".into(),
            )),
            Some("RSA PUBLIC KEY") => Err(Error::Key(format!(
                "the public key is an RSA key; {SUPPORTED}"
            ))),
            Some(other) => Err(Error::Key(format!(
                "expected a PEM public key, found a `{other}` block"
            ))),
            None => Err(Error::Key("not a PEM file: no `-----BEGIN` line".into())),
        }
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        match self {
            Self::P256(_) => Curve::P256,
            Self::P384(_) => Curve::P384,
            Self::P521(_) => Curve::P521,
        }
    }

    /// The canonical SubjectPublicKeyInfo PEM (64-column lines, LF), as OpenSSL and `cryptography` write it.
    pub fn to_pem(&self) -> Result<String, Error> {
        let fail = |_| Error::Key("cannot encode the public key".into());
        match self {
            Self::P256(k) => p256::PublicKey::from(k)
                .to_public_key_pem(LineEnding::LF)
                .map_err(fail),
            Self::P384(k) => p384::PublicKey::from(k)
                .to_public_key_pem(LineEnding::LF)
                .map_err(fail),
            Self::P521(k) => p521::PublicKey::from_sec1_bytes(k.to_encoded_point(false).as_bytes())
                .map_err(|_| Error::Key("cannot encode the public key".into()))?
                .to_public_key_pem(LineEnding::LF)
                .map_err(fail),
        }
    }

    /// The key hint of a model_signing bundle: hex SHA-256 of [`Self::to_pem`].
    pub fn hint(&self) -> Result<String, Error> {
        Ok(hex::encode(sha2::Sha256::digest(self.to_pem()?.as_bytes())))
    }

    /// Checks a DER ECDSA signature over `message`. High-S signatures are accepted, as OpenSSL accepts them.
    pub fn verify(&self, message: &[u8], der: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        match self {
            Self::P256(k) => p256::ecdsa::Signature::from_der(der).is_ok_and(|sig| {
                let sig = sig.normalize_s().unwrap_or(sig);
                k.verify(message, &sig).is_ok()
            }),
            Self::P384(k) => p384::ecdsa::Signature::from_der(der).is_ok_and(|sig| {
                let sig = sig.normalize_s().unwrap_or(sig);
                k.verify(message, &sig).is_ok()
            }),
            Self::P521(k) => p521::ecdsa::Signature::from_der(der).is_ok_and(|sig| {
                let sig = sig.normalize_s().unwrap_or(sig);
                k.verify(message, &sig).is_ok()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_curve_round_trips_through_pem_and_signs() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let key = SigningKey::generate(curve);
            let again = SigningKey::from_pem(&key.to_pkcs8_pem().unwrap()).unwrap();
            assert_eq!(again.curve(), curve);
            let public = VerifyingKey::from_pem(&key.verifying_key().to_pem().unwrap()).unwrap();
            let sig = again.sign(b"message");
            assert!(public.verify(b"message", &sig));
            assert!(!public.verify(b"messagf", &sig));
            assert!(!public.verify(b"message", b"\x30\x00"));
        }
    }

    #[test]
    fn wrong_key_types_are_named() {
        let err = SigningKey::from_pem("hello").unwrap_err().to_string();
        assert!(err.contains("not a PEM"), "{err}");
        let public = SigningKey::generate(Curve::P256)
            .verifying_key()
            .to_pem()
            .unwrap();
        let err = SigningKey::from_pem(&public).unwrap_err().to_string();
        assert!(err.contains("public key"), "{err}");
        // An Ed25519 PKCS#8 key (RFC 8410 example).
        let ed = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
        let err = SigningKey::from_pem(ed).unwrap_err().to_string();
        assert!(err.contains("Ed25519"), "{err}");
    }
}
