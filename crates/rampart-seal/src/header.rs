//! The age v1 header (c2sp.org/age, "Header"), parsed here rather than by the `age` crate so that the
//! payload key is ours and the payload can be decrypted in parallel (see `payload`). Unwrapping the file
//! key stays the `age` crate's job: its identities (X25519, scrypt) get the stanzas as they are.
//!
//! ```text
//! header   = v1-line 1*stanza end
//! v1-line  = "age-encryption.org/v1" LF
//! stanza   = "-> " argument *(SP argument) LF *(64base64char LF) *63base64char LF
//! end      = "--- " 43base64char LF
//! ```
//!
//! The MAC is HMAC-SHA-256 over the header up to and including `---`, keyed with
//! HKDF-SHA-256(file key, salt empty, info "header"); the payload key is HKDF-SHA-256(file key,
//! salt = the payload's 16-byte nonce, info "payload"). [`new_file`] writes such a header for sealing, the file
//! key wrapped by the `age` crate's recipients.

use std::io::{BufRead, Read};
use std::path::Path;

use age::secrecy::ExposeSecret as _;
use age_core::format::Stanza;
use base64::Engine as _;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use hmac::Mac as _;

use crate::error::{Error, Result};
use crate::keys::Identities;

const VERSION_LINE: &[u8] = b"age-encryption.org/v1";
const VERSION_PREFIX: &[u8] = b"age-encryption.org/";
const ARMOR_BEGIN: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
const STANZA_PREFIX: &[u8] = b"-> ";
const MAC_MARK: &[u8] = b"---";
/// Columns of a full stanza body line.
const BODY_COLUMNS: usize = 64;
/// Base64 characters of the 32-byte MAC.
const MAC_CHARS: usize = 43;
/// Bytes of the payload nonce that follows the header.
const NONCE_BYTES: usize = 16;
/// Longest header read: real ones are a few hundred bytes per recipient, so this only stops a hostile
/// file from making us buffer without bound.
const MAX_HEADER: u64 = 1 << 20;
/// The scrypt stanza's tag: it must be the only stanza (c2sp.org/age, "scrypt recipient stanza").
const SCRYPT_TAG: &str = "scrypt";

/// A parsed v1 header.
pub(crate) struct Header {
    stanzas: Vec<Stanza>,
    /// The header's bytes up to and including `---`: what the MAC covers.
    authenticated: Vec<u8>,
    mac: Vec<u8>,
}

/// What the start of a sealed file holds.
pub(crate) enum Start {
    /// A binary age v1 header, read up to its end.
    V1(Header),
    /// ASCII armor (`-----BEGIN AGE ENCRYPTED FILE-----`); nothing was consumed.
    Armored,
}

fn not_age(path: &Path, reason: impl Into<String>) -> Error {
    Error::NotAge {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Reads one LF-terminated line (LF included) onto `data`, within what is left of [`MAX_HEADER`]; returns
/// where it starts.
fn read_line(input: &mut impl BufRead, data: &mut Vec<u8>, path: &Path) -> Result<usize> {
    let start = data.len();
    let left = MAX_HEADER.saturating_sub(start as u64);
    input
        .take(left)
        .read_until(b'\n', data)
        .map_err(Error::io("read", path))?;
    if data.last() != Some(&b'\n') {
        return Err(if data.len() as u64 >= MAX_HEADER {
            not_age(
                path,
                format!("the header is longer than {MAX_HEADER} bytes"),
            )
        } else {
            not_age(path, "the file ends inside the header")
        });
    }
    Ok(start)
}

/// The line starting at `start`, without its LF.
fn line_at(data: &[u8], start: usize) -> &[u8] {
    let end = data.len().saturating_sub(1);
    data.get(start..end).unwrap_or(&[])
}

fn is_base64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Decodes unpadded, canonical base64, as the spec requires.
fn decode_base64(text: &[u8], what: &str, path: &Path) -> Result<Vec<u8>> {
    if !text.iter().all(|&b| is_base64_char(b)) {
        return Err(not_age(path, format!("{what} is not unpadded base64")));
    }
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text)
        .map_err(|_| not_age(path, format!("{what} is not canonical base64")))
}

/// Parses a stanza's argument line (after `-> `): one or more arguments of visible ASCII, single spaces.
fn arguments(line: &[u8], path: &Path) -> Result<Vec<String>> {
    line.split(|&b| b == b' ')
        .map(|arg| {
            if arg.is_empty() || !arg.iter().all(|b| (33..=126).contains(b)) {
                return Err(not_age(
                    path,
                    "a stanza argument is empty or holds a character other than visible ASCII",
                ));
            }
            Ok(String::from_utf8_lossy(arg).into_owned())
        })
        .collect()
}

/// Reads the header from the start of `input`, leaving `input` at the payload (or untouched if armored).
pub(crate) fn read(input: &mut impl BufRead, path: &Path) -> Result<Start> {
    let peek = input.fill_buf().map_err(Error::io("read", path))?;
    if peek.trim_ascii_start().starts_with(ARMOR_BEGIN) {
        return Ok(Start::Armored);
    }
    let mut data = Vec::new();
    let start = read_line(input, &mut data, path)?;
    let version = line_at(&data, start);
    if version != VERSION_LINE {
        return Err(if version.starts_with(VERSION_PREFIX) {
            not_age(
                path,
                format!(
                    "unsupported version `{}`",
                    String::from_utf8_lossy(version)
                        .chars()
                        .take(80)
                        .collect::<String>()
                ),
            )
        } else {
            not_age(path, "it does not start with `age-encryption.org/v1`")
        });
    }
    let mut stanzas = Vec::new();
    loop {
        let start = read_line(input, &mut data, path)?;
        let line = line_at(&data, start);
        if let Some(args) = line.strip_prefix(STANZA_PREFIX) {
            let mut args = arguments(args, path)?;
            let tag = args.remove(0);
            let mut body = Vec::new();
            loop {
                let start = read_line(input, &mut data, path)?;
                let line = line_at(&data, start);
                if line.len() > BODY_COLUMNS {
                    return Err(not_age(
                        path,
                        "a stanza body line is longer than 64 columns",
                    ));
                }
                body.extend_from_slice(line);
                if line.len() < BODY_COLUMNS {
                    break;
                }
            }
            let body = decode_base64(&body, "a stanza body", path)?;
            stanzas.push(Stanza { tag, args, body });
        } else if line.starts_with(MAC_MARK) {
            if stanzas.is_empty() {
                return Err(not_age(path, "the header has no recipient stanza"));
            }
            let encoded = match line.get(MAC_MARK.len()..) {
                Some([b' ', mac @ ..]) if mac.len() == MAC_CHARS => mac,
                _ => return Err(not_age(path, "the header's MAC line is malformed")),
            };
            let mac = decode_base64(encoded, "the header's MAC", path)?;
            data.truncate(start + MAC_MARK.len());
            return Ok(Start::V1(Header {
                stanzas,
                authenticated: data,
                mac,
            }));
        } else {
            return Err(not_age(
                path,
                "a header line starts with neither `->` nor `---`",
            ));
        }
    }
}

/// The keys of a new file: a fresh file key wrapped to `recipients` (all of them must accept being mixed, as
/// their labels say), the header with its MAC, and the payload cipher for a fresh nonce. Returns the header and
/// nonce (to write first) and the cipher.
pub(crate) fn new_file(recipients: &[&dyn age::Recipient]) -> Result<(Vec<u8>, ChaCha20Poly1305)> {
    let encrypt_error = |e: &dyn std::fmt::Display| Error::Encrypt(e.to_string());
    let mut file_key = [0u8; 16];
    getrandom::getrandom(&mut file_key).map_err(|e| encrypt_error(&e))?;
    let file_key = age_core::format::FileKey::new(Box::new(file_key));
    let mut stanzas = Vec::new();
    let mut labels = None;
    for recipient in recipients {
        let (mut wrapped, these) = recipient
            .wrap_file_key(&file_key)
            .map_err(|e| encrypt_error(&e))?;
        match &labels {
            Some(first) if *first != these => {
                return Err(Error::Encrypt(
                    "these recipients cannot be mixed in one file (a passphrase is always alone)"
                        .into(),
                ))
            }
            _ => labels = Some(these),
        }
        stanzas.append(&mut wrapped);
    }
    if stanzas.is_empty() {
        return Err(Error::NoRecipients);
    }
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut out = VERSION_LINE.to_vec();
    out.push(b'\n');
    for stanza in &stanzas {
        out.extend_from_slice(STANZA_PREFIX);
        out.extend_from_slice(stanza.tag.as_bytes());
        for arg in &stanza.args {
            out.push(b' ');
            out.extend_from_slice(arg.as_bytes());
        }
        out.push(b'\n');
        let body = b64.encode(&stanza.body);
        let mut rest = body.as_bytes();
        // Full 64-column lines, then a shorter (possibly empty) last one.
        loop {
            let (line, tail) = rest.split_at(rest.len().min(BODY_COLUMNS));
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = tail;
            if line.len() < BODY_COLUMNS {
                break;
            }
        }
    }
    out.extend_from_slice(MAC_MARK);
    let file_key = file_key.expose_secret();
    let mut mac = header_mac(file_key).map_err(|e| encrypt_error(&e))?;
    mac.update(&out);
    out.push(b' ');
    out.extend_from_slice(b64.encode(mac.finalize().into_bytes()).as_bytes());
    out.push(b'\n');
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::getrandom(&mut nonce).map_err(|e| encrypt_error(&e))?;
    out.extend_from_slice(&nonce);
    Ok((out, payload(file_key, &nonce)))
}

/// The header's MAC, unfed: HMAC-SHA-256 keyed with HKDF-SHA-256(file key, salt empty, info "header").
fn header_mac(
    file_key: &[u8],
) -> std::result::Result<hmac::Hmac<sha2::Sha256>, hmac::digest::InvalidLength> {
    let mac_key = age::secrecy::SecretBox::new(Box::new(age_core::primitives::hkdf(
        &[],
        b"header",
        file_key,
    )));
    <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(mac_key.expose_secret())
}

/// The payload cipher: ChaCha20-Poly1305 keyed with HKDF-SHA-256(file key, salt = the payload nonce, info
/// "payload").
fn payload(file_key: &[u8], nonce: &[u8; NONCE_BYTES]) -> ChaCha20Poly1305 {
    let payload_key = age::secrecy::SecretBox::new(Box::new(age_core::primitives::hkdf(
        nonce, b"payload", file_key,
    )));
    ChaCha20Poly1305::new(payload_key.expose_secret().into())
}

/// Reads the payload nonce, unwraps the file key with `keys`, checks the header's MAC and returns the
/// payload cipher.
pub(crate) fn payload_cipher(
    header: &Header,
    input: &mut impl Read,
    keys: &Identities,
    path: &Path,
) -> Result<ChaCha20Poly1305> {
    let scrypt = header.stanzas.iter().any(|s| s.tag == SCRYPT_TAG);
    if scrypt && header.stanzas.len() != 1 {
        return Err(not_age(
            path,
            "a passphrase (scrypt) stanza is mixed with other stanzas",
        ));
    }
    let passphrase_identity;
    let identities: Vec<&dyn age::Identity> = if scrypt {
        let Some(passphrase) = keys.passphrase() else {
            return Err(Error::NeedPassphrase {
                path: path.to_owned(),
            });
        };
        passphrase_identity = age::scrypt::Identity::new(passphrase.clone());
        vec![&passphrase_identity as &dyn age::Identity]
    } else {
        if keys.is_empty() {
            return Err(Error::NoIdentity {
                path: path.to_owned(),
            });
        }
        keys.iter().collect()
    };
    let file_key = identities
        .into_iter()
        .find_map(|key| key.unwrap_stanzas(&header.stanzas))
        .unwrap_or(Err(age::DecryptError::NoMatchingKeys))
        .map_err(|e| Error::from_decrypt(e, path))?;
    let file_key = file_key.expose_secret();

    let mut mac = header_mac(file_key).map_err(|_| not_age(path, "the header key is unusable"))?;
    mac.update(&header.authenticated);
    mac.verify_slice(&header.mac).map_err(|_| Error::Damaged {
        path: path.to_owned(),
        reason: "the header's MAC does not match (the header was modified)".into(),
    })?;

    let mut nonce = [0u8; NONCE_BYTES];
    input.read_exact(&mut nonce).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Damaged {
            path: path.to_owned(),
            reason: "the file was truncated before its payload".into(),
        },
        _ => Error::io("read", path)(e),
    })?;
    Ok(payload(file_key, &nonce))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn parse(text: &str) -> Result<Start> {
        read(&mut text.as_bytes(), Path::new("t.age"))
    }

    const GOOD: &str = "age-encryption.org/v1\n-> X25519 CJM36AHmTbdHSuOQL+NESqyVQE75f2e610iRdLPEN20\nC3ZAeY64NXS4QFrksLm3EGz+uPRyI0eQsWw7LWbbYig\n--- fgMiVLJHMlg9fW7CVG/hPS5EAU4Zeg19LyCP7SoH5nA\n";

    #[test]
    fn a_good_header_parses_and_keeps_what_the_mac_covers() {
        let Start::V1(h) = parse(GOOD).unwrap() else {
            panic!("not v1")
        };
        assert_eq!(h.stanzas.len(), 1);
        assert_eq!(h.stanzas[0].tag, "X25519");
        assert_eq!(h.stanzas[0].body.len(), 32);
        assert!(h.authenticated.ends_with(b"\n---"));
        assert_eq!(h.mac.len(), 32);
    }

    #[test]
    fn bad_headers_are_refused() {
        for bad in [
            "",
            "age-encryption.org/v2\n",
            "hello\n",
            "age-encryption.org/v1\n--- fgMiVLJHMlg9fW7CVG/hPS5EAU4Zeg19LyCP7SoH5nA\n",
            // padding, a double space, a long body line, a short MAC, no final LF
            &GOOD.replace("bYig\n", "bYig=\n"),
            &GOOD.replace("X25519 ", "X25519  "),
            &GOOD.replace("bYig\n", "bYigAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"),
            &GOOD.replace("5nA\n", "5n\n"),
            GOOD.trim_end(),
            // a non-canonical final base64 character
            &GOOD.replace("bYig\n", "bYih\n"),
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn armor_is_recognised_without_consuming() {
        let text = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n";
        let mut input = text.as_bytes();
        assert!(matches!(
            read(&mut input, Path::new("t")).unwrap(),
            Start::Armored
        ));
        assert_eq!(input, text.as_bytes());
    }
}
