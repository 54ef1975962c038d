//! The age payload's rules, decided exactly as `age -d` (the Go CLI) decides them: every file here is
//! given to both, and Rampart must accept what age accepts (with the same plaintext) and refuse what it
//! refuses. Files come from the age CLI itself (then truncated, tampered with, extended) and from a small
//! encoder below with a known file key, for chunk layouts no honest encoder writes.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::ExposeSecret as _;
use base64::Engine as _;
use chacha20poly1305::aead::Aead as _;
use chacha20poly1305::KeyInit as _;
use hmac::Mac as _;
use rampart_seal::{identities_from_text, unseal, unseal_to_memory, Identities};

const CHUNK: usize = 64 * 1024;
const SEALED_CHUNK: usize = CHUNK + 16;

struct Env {
    dir: tempfile::TempDir,
    key_file: PathBuf,
    recipient: age::x25519::Recipient,
    ids: Identities,
    age: bool,
    n: usize,
}

fn key_file(dir: &Path, name: &str) -> (PathBuf, age::x25519::Identity) {
    let identity = age::x25519::Identity::generate();
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&path).unwrap();
    writeln!(f, "{}", identity.to_string().expose_secret()).unwrap();
    (path, identity)
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let (key_file, identity) = key_file(dir.path(), "key.txt");
    let mut ids = Identities::new();
    ids.extend(
        identities_from_text(identity.to_string().expose_secret(), Path::new("test key")).unwrap(),
    );
    Env {
        recipient: identity.to_public(),
        dir,
        key_file,
        ids,
        age: common::have_age("checking Rampart against the spec's verdicts only"),
        n: 0,
    }
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 977) as u8).collect()
}

impl Env {
    fn path(&mut self, what: &str) -> PathBuf {
        self.n += 1;
        self.dir.path().join(format!("{}-{what}", self.n))
    }

    /// Seals `data` with the age CLI (or, without it, the age crate).
    fn seal_with_age(&mut self, data: &[u8]) -> Vec<u8> {
        let input = self.path("plain");
        std::fs::write(&input, data).unwrap();
        if !self.age {
            let encryptor = age::Encryptor::with_recipients(std::iter::once(
                &self.recipient as &dyn age::Recipient,
            ))
            .unwrap();
            let mut out = Vec::new();
            let mut w = encryptor.wrap_output(&mut out).unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap();
            return out;
        }
        let output = self.path("sealed");
        let status = Command::new("age")
            .arg("-r")
            .arg(self.recipient.to_string())
            .arg("-o")
            .arg(&output)
            .arg(&input)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read(&output).unwrap()
    }

    /// What `age -d` makes of `sealed` with `key`: the plaintext, or `None` if it refuses.
    fn age_verdict(&self, sealed: &Path, key: &Path) -> Option<Vec<u8>> {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(key)
            .arg(sealed)
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// What Rampart makes of `sealed`, to a file and in memory (they must agree); a refusal leaves nothing.
    fn rampart_verdict(&mut self, sealed: &Path, ids: &Identities) -> Option<Vec<u8>> {
        let out = self.path("out");
        let to_file = unseal(sealed, ids, &out);
        let in_memory = unseal_to_memory(
            std::fs::File::open(sealed).unwrap(),
            ids,
            Path::new("m.bin.age"),
            1 << 30,
        );
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".rampart"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        match (to_file, in_memory) {
            (Ok(_), Ok(files)) => {
                let data = std::fs::read(&out).unwrap();
                assert_eq!(files.len(), 1);
                assert_eq!(files[0].data, data);
                Some(data)
            }
            (Err(a), Err(b)) => {
                assert!(!out.exists());
                assert_eq!(
                    a.to_string(),
                    b.to_string()
                        .replace("m.bin.age", &sealed.display().to_string())
                );
                None
            }
            (a, b) => panic!("to a file: {a:?}; in memory: {b:?}"),
        }
    }

    /// Rampart and age agree on `sealed`, and accept it (with `expected`) or refuse it (`None`).
    fn check(&mut self, case: &str, sealed: &[u8], expected: Option<&[u8]>) {
        let path = self.path("case.age");
        std::fs::write(&path, sealed).unwrap();
        let ids = std::mem::take(&mut self.ids);
        let ours = self.rampart_verdict(&path, &ids);
        self.ids = ids;
        assert_eq!(ours.as_deref(), expected, "{case}: Rampart's verdict");
        if self.age {
            let theirs = self.age_verdict(&path, &self.key_file.clone());
            assert_eq!(theirs.as_deref(), expected, "{case}: age's verdict");
        }
    }
}

/// Where the payload starts (after the header's MAC line; the 16-byte nonce comes first).
fn payload_start(sealed: &[u8]) -> usize {
    let mac = sealed.windows(5).position(|w| w == b"\n--- ").unwrap() + 5;
    mac + sealed[mac..].iter().position(|&b| b == b'\n').unwrap() + 1
}

#[test]
fn payload_sizes_at_chunk_and_batch_edges_open_as_age_opens_them() {
    let mut env = env();
    // 16 chunks make one of Rampart's batches: sizes either side of it exercise its look-ahead.
    for len in [
        0,
        1,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        16 * CHUNK,
        16 * CHUNK + 1,
        17 * CHUNK - 3,
        32 * CHUNK,
        32 * CHUNK + 1,
    ] {
        let data = plaintext(len);
        let sealed = env.seal_with_age(&data);
        env.check(&format!("{len} bytes"), &sealed, Some(&data));
    }
}

#[test]
fn truncation_tampering_and_trailing_data_are_refused_as_age_refuses_them() {
    let mut env = env();
    for len in [0, CHUNK, CHUNK + 1, 5 * CHUNK + 100, 17 * CHUNK] {
        let data = plaintext(len);
        let sealed = env.seal_with_age(&data);
        let start = payload_start(&sealed);
        let chunks = (sealed.len() - start - 16).div_ceil(SEALED_CHUNK);
        let mut cuts = vec![
            sealed.len() - 1,
            start,
            start + 8,
            start + 16,
            start + 16 + 15,
            payload_start(&sealed) - 10,
        ];
        if chunks > 1 {
            // The whole final chunk removed: what is left ends on a chunk that is not final.
            cuts.push(start + 16 + (chunks - 1) * SEALED_CHUNK);
            cuts.push(start + 16 + (chunks - 1) * SEALED_CHUNK + 10);
        }
        for cut in cuts {
            env.check(&format!("{len} bytes cut to {cut}"), &sealed[..cut], None);
        }
        let middle = start + 16 + (chunks / 2) * SEALED_CHUNK + 5;
        for at in [middle, sealed.len() - 1, start + 3, start - 20, 30] {
            let mut flipped = sealed.clone();
            flipped[at] ^= 0x10;
            env.check(&format!("{len} bytes, byte {at} flipped"), &flipped, None);
        }
        let last = start + 16 + (chunks - 1) * SEALED_CHUNK;
        for trailing in [&b"x"[..], &[0u8; 16][..], &sealed[last..]] {
            let mut extended = sealed.clone();
            extended.extend_from_slice(trailing);
            env.check(
                &format!("{len} bytes + {} trailing", trailing.len()),
                &extended,
                None,
            );
        }
    }
}

#[test]
fn a_wrong_key_is_refused_as_age_refuses_it() {
    let mut env = env();
    let data = plaintext(CHUNK + 5);
    let sealed = env.seal_with_age(&data);
    let path = env.path("sealed.age");
    std::fs::write(&path, &sealed).unwrap();
    let (other_file, other) = key_file(env.dir.path(), "other.txt");
    let mut ids = Identities::new();
    ids.extend(
        identities_from_text(other.to_string().expose_secret(), Path::new("other")).unwrap(),
    );
    assert_eq!(env.rampart_verdict(&path, &ids), None);
    let err = unseal(&path, &ids, &env.path("out")).unwrap_err();
    assert!(err.to_string().contains("none of the identities"), "{err}");
    if env.age {
        assert_eq!(env.age_verdict(&path, &other_file), None);
    }
}

/// An age file with a known file key and chosen chunks: `(plaintext, final flag)` each.
fn craft(recipient: &age::x25519::Recipient, chunks: &[(&[u8], bool)]) -> Vec<u8> {
    let file_key = age_core::format::FileKey::new(Box::new([7u8; 16]));
    let (stanzas, _) = age::Recipient::wrap_file_key(recipient, &file_key).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let mut out = b"age-encryption.org/v1\n".to_vec();
    for stanza in &stanzas {
        let args: Vec<&str> = std::iter::once(stanza.tag.as_str())
            .chain(stanza.args.iter().map(String::as_str))
            .collect();
        out.extend_from_slice(format!("-> {}\n", args.join(" ")).as_bytes());
        let body = b64.encode(&stanza.body);
        let mut rest = body.as_bytes();
        loop {
            let (line, tail) = rest.split_at(rest.len().min(64));
            out.extend_from_slice(line);
            out.push(b'\n');
            rest = tail;
            if line.len() < 64 {
                break;
            }
        }
    }
    out.extend_from_slice(b"---");
    let fk = file_key.expose_secret();
    let mac_key = age_core::primitives::hkdf(&[], b"header", fk);
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&mac_key).unwrap();
    mac.update(&out);
    out.extend_from_slice(format!(" {}\n", b64.encode(mac.finalize().into_bytes())).as_bytes());
    let nonce = [9u8; 16];
    out.extend_from_slice(&nonce);
    let key = age_core::primitives::hkdf(&nonce, b"payload", fk);
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    for (i, (data, last)) in chunks.iter().enumerate() {
        let mut n = [0u8; 12];
        n[3..11].copy_from_slice(&(i as u64).to_be_bytes());
        n[11] = u8::from(*last);
        out.extend_from_slice(&cipher.encrypt(&n.into(), *data).unwrap());
    }
    out
}

#[test]
fn chunk_layouts_no_honest_encoder_writes_are_judged_as_age_judges_them() {
    let mut env = env();
    let full = plaintext(CHUNK);
    let r = env.recipient.clone();
    // Accepted: the encoder itself is right.
    env.check(
        "one full final chunk",
        &craft(&r, &[(&full, true)]),
        Some(&full),
    );
    env.check("an empty payload", &craft(&r, &[(b"", true)]), Some(b""));
    let mut two = full.clone();
    two.extend_from_slice(b"abc");
    env.check(
        "a full chunk, then a short final one",
        &craft(&r, &[(&full, false), (b"abc", true)]),
        Some(&two),
    );
    // Refused.
    for (case, chunks) in [
        (
            "an empty final chunk after a full one",
            vec![(&full[..], false), (&b""[..], true)],
        ),
        ("no final flag on the only chunk", vec![(&full[..], false)]),
        ("no final flag on a short chunk", vec![(&b"abc"[..], false)]),
        (
            "a chunk after the final one",
            vec![(&full[..], true), (&b"abc"[..], true)],
        ),
        (
            "a short chunk that is not the last",
            vec![(&b"abc"[..], false), (&b"abc"[..], true)],
        ),
        (
            "a non-final empty chunk",
            vec![(&b""[..], false), (&b"abc"[..], true)],
        ),
        ("no chunk at all", vec![]),
    ] {
        env.check(case, &craft(&r, &chunks), None);
    }
}

#[test]
fn what_rampart_seals_at_chunk_and_batch_edges_opens_with_age() {
    let mut env = env();
    for len in [
        0,
        1,
        CHUNK,
        CHUNK + 1,
        16 * CHUNK,
        16 * CHUNK + 1,
        32 * CHUNK + 7,
    ] {
        let data = plaintext(len);
        let input = env.path("plain");
        std::fs::write(&input, &data).unwrap();
        let sealed = env.path("sealed.age");
        let mut recipients = rampart_seal::Recipients::new();
        recipients.push(Box::new(env.recipient.clone()));
        rampart_seal::seal(
            &input,
            &rampart_seal::SealTo::Recipients(recipients),
            &sealed,
        )
        .unwrap();
        let bytes = std::fs::read(&sealed).unwrap();
        // Full chunks, then a final one that is short (or full, or the one empty chunk of an empty file).
        let payload = bytes.len() - payload_start(&bytes) - 16;
        assert_eq!(payload, len + 16 * len.div_ceil(CHUNK).max(1), "{len}");
        env.check(
            &format!("sealed by Rampart, {len} bytes"),
            &bytes,
            Some(&data),
        );
    }
}

#[test]
fn a_passphrase_sealed_file_opens_with_the_age_crate() {
    let mut env = env();
    let data = plaintext(CHUNK + 3);
    let input = env.path("plain");
    std::fs::write(&input, &data).unwrap();
    let sealed = env.path("sealed.age");
    let passphrase = age::secrecy::SecretString::from("correct horse battery staple".to_owned());
    rampart_seal::seal(
        &input,
        &rampart_seal::SealTo::Passphrase(passphrase.clone()),
        &sealed,
    )
    .unwrap();
    let bytes = std::fs::read(&sealed).unwrap();
    let decryptor = age::Decryptor::new(&bytes[..]).unwrap();
    assert!(decryptor.is_scrypt());
    let identity = age::scrypt::Identity::new(passphrase);
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
    assert_eq!(out, data);
}
