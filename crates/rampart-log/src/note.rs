//! C2SP signed notes with Ed25519 keys, and their text keys in the format Go's `sumdb/note` uses:
//! a verifier key `name+hex(key id)+base64(0x01 ‖ public key)`, a signer key `PRIVATE+KEY+` followed by
//! the same fields with the 32-byte seed.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
/// Notes larger than this are rejected unread (a checkpoint is a few hundred bytes).
pub const MAX_NOTE: usize = 64 * 1024;
/// At most this many signature lines are read.
const MAX_SIGNATURES: usize = 64;

/// Key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4], big-endian.
fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(public);
    let d = h.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(d.get(..4).unwrap_or(&[0; 4]));
    u32::from_be_bytes(id)
}

/// Key names are non-empty and hold no Unicode space and no `+`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(Error::malformed(
            "key name",
            format!("`{name}` is empty or holds a space or `+`"),
        ));
    }
    Ok(())
}

/// A public key that verifies notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl VerifierKey {
    /// Parses `name+hex8+base64(0x01 ‖ key)`.
    pub fn parse(text: &str) -> Result<VerifierKey> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::malformed(
                "verifier key",
                "expected `name+keyid+key`",
            ));
        };
        check_name(name)?;
        let id = u32::from_str_radix(id, 16)
            .ok()
            .filter(|_| id.len() == 8)
            .ok_or_else(|| Error::malformed("verifier key", "the key ID is not 8 hex digits"))?;
        let raw = B64
            .decode(key)
            .map_err(|_| Error::malformed("verifier key", "the key is not base64"))?;
        let (Some(&ED25519), Ok(public)) = (
            raw.first(),
            <[u8; 32]>::try_from(raw.get(1..).unwrap_or(&[])),
        ) else {
            return Err(Error::malformed(
                "verifier key",
                "not an Ed25519 key (type 0x01, 32 bytes)",
            ));
        };
        if key_id(name, &public) != id {
            return Err(Error::malformed(
                "verifier key",
                "the key ID does not match the key",
            ));
        }
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| Error::malformed("verifier key", "not a valid Ed25519 point"))?;
        Ok(VerifierKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// The key's name, which is also the log's origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }
}

/// A private key that signs notes. Its `Debug` shows the name only.
pub struct SignerKey {
    name: String,
    id: u32,
    key: SigningKey,
}

impl std::fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SignerKey {
    /// A fresh key from the system's random number generator.
    pub fn generate(name: &str) -> Result<SignerKey> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(SignerKey {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+name+hex8+base64(0x01 ‖ seed)`.
    pub fn parse(text: &str) -> Result<SignerKey> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| {
            Error::malformed("signer key", "expected `PRIVATE+KEY+name+keyid+key`")
        })?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::malformed(
                "signer key",
                "expected `PRIVATE+KEY+name+keyid+key`",
            ));
        };
        check_name(name)?;
        let raw = B64
            .decode(key)
            .map_err(|_| Error::malformed("signer key", "the key is not base64"))?;
        let (Some(&ED25519), Ok(seed)) = (
            raw.first(),
            <[u8; 32]>::try_from(raw.get(1..).unwrap_or(&[])),
        ) else {
            return Err(Error::malformed(
                "signer key",
                "not an Ed25519 key (type 0x01, 32 bytes)",
            ));
        };
        let key = SigningKey::from_bytes(&seed);
        let want = key_id(name, key.verifying_key().as_bytes());
        if u32::from_str_radix(id, 16).ok() != Some(want) {
            return Err(Error::malformed(
                "signer key",
                "the key ID does not match the key",
            ));
        }
        Ok(SignerKey {
            name: name.to_owned(),
            id: want,
            key,
        })
    }

    /// The text form (a secret: write it to a file of mode 0600).
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            B64.encode(raw)
        )
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline) and returns the whole signed note.
    pub fn sign(&self, text: &str) -> Result<String> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.id.to_be_bytes().to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(raw)
        ))
    }
}

fn check_text(text: &str) -> Result<()> {
    if !text.ends_with('\n') {
        return Err(Error::malformed(
            "note",
            "the text does not end in a newline",
        ));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(Error::malformed(
            "note",
            "the text holds a control character",
        ));
    }
    Ok(())
}

/// Opens a signed note: returns its text once a signature by `key` verifies.
///
/// Signatures by other keys are ignored, as the spec requires; a signature that claims to be by `key`
/// (same name and key ID) but does not verify rejects the whole note.
pub fn open<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, OpenError> {
    if note.len() > MAX_NOTE {
        return Err(OpenError::Malformed("the note is too large".into()));
    }
    if note.chars().any(|c| c < ' ' && c != '\n') {
        return Err(OpenError::Malformed(
            "the note holds a control character".into(),
        ));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| OpenError::Malformed("no blank line before the signatures".into()))?;
    let (text, sigs) = note.split_at(split + 1);
    let sigs = sigs.strip_prefix('\n').unwrap_or(sigs);
    if !sigs.ends_with('\n') || sigs.len() < 2 {
        return Err(OpenError::Malformed(
            "the signature lines do not end in a newline".into(),
        ));
    }
    let mut verified = false;
    for (n, line) in sigs.trim_end_matches('\n').split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(OpenError::Malformed("too many signatures".into()));
        }
        let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| {
            OpenError::Malformed("a signature line does not start with an em dash".into())
        })?;
        let (name, sig) = rest
            .split_once(' ')
            .ok_or_else(|| OpenError::Malformed("a signature line has no signature".into()))?;
        if check_name(name).is_err() {
            return Err(OpenError::Malformed(format!("bad key name `{name}`")));
        }
        let raw = B64
            .decode(sig)
            .map_err(|_| OpenError::Malformed("a signature is not base64".into()))?;
        let Some((id, sig)) = raw.split_first_chunk::<4>() else {
            return Err(OpenError::Malformed("a signature is too short".into()));
        };
        let id = u32::from_be_bytes(*id);
        if name != key.name || id != key.id {
            continue;
        }
        let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| OpenError::BadSignature)?;
        key.key
            .verify(text.as_bytes(), &sig)
            .map_err(|_| OpenError::BadSignature)?;
        verified = true;
    }
    if verified {
        Ok(text)
    } else {
        Err(OpenError::BadSignature)
    }
}

/// Why a note did not open.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not a signed note.
    Malformed(String),
    /// No valid signature by the key, or a bad one claiming to be by it.
    BadSignature,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_and_reject() {
        let signer = SignerKey::generate("example.com/log").unwrap();
        let verifier = VerifierKey::parse(&signer.verifier().to_text()).unwrap();
        assert_eq!(verifier, signer.verifier());
        let again = SignerKey::parse(&signer.to_text()).unwrap();
        assert_eq!(again.verifier(), verifier);
        let note = signer.sign("example.com/log\n3\nabc=\n").unwrap();
        assert_eq!(
            open(&note, &verifier).unwrap(),
            "example.com/log\n3\nabc=\n"
        );
        let tampered = note.replace("\n3\n", "\n4\n");
        assert_eq!(open(&tampered, &verifier), Err(OpenError::BadSignature));
        let other = SignerKey::generate("example.com/log").unwrap().verifier();
        assert_eq!(open(&note, &other), Err(OpenError::BadSignature));
        assert!(open("garbage", &verifier).is_err());
        assert!(SignerKey::generate("bad name").is_err());
    }

    /// The example key and note of Go's `sumdb/note` documentation.
    #[test]
    fn go_documentation_vector() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
        let note = format!("{text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n");
        let key = VerifierKey::parse(vkey).unwrap();
        assert_eq!(open(&note, &key).unwrap(), text);
        let skey = SignerKey::parse(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )
        .unwrap();
        assert_eq!(skey.verifier(), key);
        assert_eq!(skey.sign(text).unwrap(), note);
    }
}
