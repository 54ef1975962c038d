//! The Sigstore bundle v0.3 JSON with a DSSE envelope, exactly as model_signing 1.1.x writes it for the `key` method.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::{Error, SigningKey, VerifyingKey};

/// The bundle media type model_signing writes and requires.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The largest signature file read (a manifest of a million files is about 200 MB).
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;

/// DSSE pre-authentication encoding: `DSSEv1 SP len(type) SP type SP len(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleJson {
    media_type: String,
    verification_material: MaterialJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dsse_envelope: Option<EnvelopeJson>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MaterialJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<PublicKeyJson>,
    #[serde(default, skip_serializing)]
    x509_certificate_chain: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    certificate: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PublicKeyJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeJson {
    payload: String,
    payload_type: String,
    signatures: Vec<SignatureJson>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SignatureJson {
    sig: String,
    #[serde(default)]
    keyid: Option<String>,
}

/// A parsed signature file: a DSSE envelope plus the key hint. Nothing in it is trusted until [`Bundle::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The hex SHA-256 of the signer's public key PEM, when the bundle names it.
    pub hint: Option<String>,
    /// The exact payload bytes that were signed.
    pub payload: Vec<u8>,
    /// The DSSE payload type.
    pub payload_type: String,
    /// DER ECDSA signatures over the PAE of the payload.
    pub signatures: Vec<Vec<u8>>,
}

impl Bundle {
    /// Signs `payload` (an in-toto statement) with `key`.
    pub fn sign(payload: Vec<u8>, key: &SigningKey) -> Result<Self, Error> {
        let signature = key.sign(&pae(PAYLOAD_TYPE, &payload));
        Ok(Self {
            hint: Some(key.verifying_key().hint()?),
            payload,
            payload_type: PAYLOAD_TYPE.to_string(),
            signatures: vec![signature],
        })
    }

    /// Parses a signature file. Signatures made with a certificate or Sigstore keyless are refused by name.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(Error::Malformed(format!(
                "larger than {} MiB",
                MAX_BUNDLE_BYTES >> 20
            )));
        }
        let json: BundleJson = serde_json::from_slice(bytes)
            .map_err(|e| Error::Malformed(format!("not a Sigstore bundle: {e}")))?;
        if json.media_type != BUNDLE_MEDIA_TYPE {
            return Err(Error::Malformed(format!(
                "media type `{}`, expected `{BUNDLE_MEDIA_TYPE}`",
                json.media_type
            )));
        }
        let material = json.verification_material;
        let public_key = match material.public_key {
            Some(key) => key,
            None if material.x509_certificate_chain.is_some() => {
                return Err(Error::UnsupportedMethod("a certificate chain"))
            }
            None if material.certificate.is_some() => {
                return Err(Error::UnsupportedMethod("Sigstore keyless signing"))
            }
            None => {
                return Err(Error::Malformed(
                    "no `publicKey` in `verificationMaterial`".into(),
                ))
            }
        };
        let envelope = json.dsse_envelope.ok_or_else(|| {
            Error::Malformed(
                "no `dsseEnvelope` (message signatures are not model signatures)".into(),
            )
        })?;
        let payload = STANDARD
            .decode(&envelope.payload)
            .map_err(|e| Error::Malformed(format!("the payload is not base64: {e}")))?;
        if envelope.signatures.is_empty() {
            return Err(Error::Malformed("the envelope has no signature".into()));
        }
        let signatures = envelope
            .signatures
            .iter()
            .map(|s| {
                STANDARD
                    .decode(&s.sig)
                    .map_err(|e| Error::Malformed(format!("a signature is not base64: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            hint: public_key.hint.filter(|h| !h.is_empty()),
            payload,
            payload_type: envelope.payload_type,
            signatures,
        })
    }

    /// The signature file's bytes: compact JSON, fields in model_signing's order, no final newline.
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        let json = BundleJson {
            media_type: BUNDLE_MEDIA_TYPE.to_string(),
            verification_material: MaterialJson {
                public_key: Some(PublicKeyJson {
                    hint: self.hint.clone(),
                }),
                x509_certificate_chain: None,
                certificate: None,
                tlog_entries: Vec::new(),
            },
            dsse_envelope: Some(EnvelopeJson {
                payload: STANDARD.encode(&self.payload),
                payload_type: self.payload_type.clone(),
                signatures: self
                    .signatures
                    .iter()
                    .map(|sig| SignatureJson {
                        sig: STANDARD.encode(sig),
                        keyid: Some(String::new()),
                    })
                    .collect(),
            }),
        };
        serde_json::to_vec(&json).map_err(|e| Error::Malformed(format!("cannot encode: {e}")))
    }

    /// Checks the key hint, then the signature over the exact payload bytes. Returns the verified payload.
    pub fn verify(&self, key: &VerifyingKey) -> Result<&[u8], Error> {
        let actual = key.hint()?;
        if let Some(hint) = &self.hint {
            if *hint != actual {
                return Err(Error::KeyMismatch {
                    hint: hint.clone(),
                    actual,
                });
            }
        }
        let message = pae(&self.payload_type, &self.payload);
        if !self.signatures.iter().any(|sig| key.verify(&message, sig)) {
            return Err(Error::BadSignature);
        }
        if self.payload_type != PAYLOAD_TYPE {
            return Err(Error::Malformed(format!(
                "payload type `{}`, expected `{PAYLOAD_TYPE}`",
                self.payload_type
            )));
        }
        Ok(&self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Curve;

    #[test]
    fn pae_matches_the_dsse_spec() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn written_bundles_parse_and_verify() {
        let key = SigningKey::generate(Curve::P256);
        let bundle = Bundle::sign(b"{}".to_vec(), &key).unwrap();
        let json = bundle.to_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.starts_with(
            r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{"hint":""#
        ), "{text}");
        assert!(text.ends_with(r#"","keyid":""}]}}"#), "{text}");
        let parsed = Bundle::parse(&json).unwrap();
        assert_eq!(parsed, bundle);
        assert_eq!(parsed.verify(&key.verifying_key()).unwrap(), b"{}");
        let other = SigningKey::generate(Curve::P256).verifying_key();
        assert!(matches!(
            parsed.verify(&other),
            Err(Error::KeyMismatch { .. })
        ));
        let mut tampered = parsed.clone();
        tampered.payload = b"{ }".to_vec();
        assert!(matches!(
            tampered.verify(&key.verifying_key()),
            Err(Error::BadSignature)
        ));
    }

    #[test]
    fn malformed_bundles_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"[]",
            br#"{"mediaType":"x","verificationMaterial":{}}"#,
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"publicKey":{}}}"#,
            br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"x509CertificateChain":{}},"dsseEnvelope":{"payload":"","payloadType":"","signatures":[]}}"#,
        ] {
            assert!(Bundle::parse(bad).is_err());
        }
    }
}
