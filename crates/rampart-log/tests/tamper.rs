//! Tampering with a stored log is detected, and the first bad entry is named.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

mod common;

use std::path::Path;

use rampart_log::{tiles, verify, Checkpoint, SignerKey};

fn key(dir: &Path) -> rampart_log::VerifierKey {
    rampart_log::read_verifier(dir, None).unwrap()
}

fn problem(dir: &Path, seen: &[Checkpoint]) -> Option<rampart_log::Problem> {
    verify(dir, key(dir), seen).unwrap().problem
}

fn setup(n: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    common::make_log(&dir, n).close().unwrap();
    assert_eq!(problem(&dir, &[]), None);
    (tmp, dir)
}

#[test]
fn a_flipped_byte_in_an_entry_names_it() {
    let (_tmp, dir) = setup(600);
    let bundle = tiles::path(&dir, tiles::Kind::Entries, 1, 256);
    let mut data = std::fs::read(&bundle).unwrap();
    // Entry 256 + 10: each entry `{"n":2xx}` is 9 bytes plus a 2-byte length.
    data[10 * 11 + 2 + 5] ^= 0x01;
    std::fs::write(&bundle, data).unwrap();
    let p = problem(&dir, &[]).unwrap();
    assert_eq!(p.index, Some(266), "{p:?}");
}

#[test]
fn a_flipped_byte_in_a_hash_tile_is_found() {
    let (_tmp, dir) = setup(600);
    let tile = tiles::path(&dir, tiles::Kind::Hashes(0), 0, 256);
    let mut data = std::fs::read(&tile).unwrap();
    data[32 * 7] ^= 0x80;
    std::fs::write(&tile, data).unwrap();
    assert_eq!(problem(&dir, &[]).unwrap().index, Some(7));
}

#[test]
fn a_removed_entry_is_found() {
    let (_tmp, dir) = setup(600);
    let bundle = tiles::path(&dir, tiles::Kind::Entries, 0, 256);
    let data = std::fs::read(&bundle).unwrap();
    let (entries, _) = tiles::parse_bundle(&data);
    let mut rewritten = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if i != 42 {
            tiles::push_entry(&mut rewritten, e).unwrap();
        }
    }
    std::fs::write(&bundle, rewritten).unwrap();
    assert_eq!(problem(&dir, &[]).unwrap().index, Some(42));
}

#[test]
fn a_rewritten_checkpoint_is_refused() {
    let (_tmp, dir) = setup(100);
    let text = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    // Without the key: the signature no longer verifies.
    std::fs::write(
        dir.join("checkpoint"),
        text.replacen("\n100\n", "\n99\n", 1),
    )
    .unwrap();
    let p = problem(&dir, &[]).unwrap();
    assert!(p.reason.contains("not signed by the trusted key"), "{p:?}");
    // With the key (an administrator): a root that is not the entries' is found.
    let signer = SignerKey::parse(&std::fs::read_to_string(dir.join("log.key")).unwrap()).unwrap();
    let forged = Checkpoint {
        origin: signer.name().into(),
        size: 100,
        root: [7; 32],
    };
    std::fs::write(dir.join("checkpoint"), forged.sign(&signer).unwrap()).unwrap();
    let p = problem(&dir, &[]).unwrap();
    assert!(p.reason.contains("root hash does not match"), "{p:?}");
}

#[test]
fn a_fork_shown_to_two_clients_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = common::make_log(&dir, 300);
    // Client A sees the log at 300 entries and keeps that checkpoint.
    let seen_by_a = log.checkpoint().unwrap();
    log.close().unwrap();
    // The operator (holding the key) rewrites history: entry 123 changed, the tiles and checkpoint redone.
    let forked = tmp.path().join("forked");
    std::fs::create_dir(&forked).unwrap();
    std::fs::copy(dir.join("log.key"), forked.join("log.key")).unwrap();
    std::fs::copy(dir.join("log.vkey"), forked.join("log.vkey")).unwrap();
    let signer = SignerKey::parse(&std::fs::read_to_string(dir.join("log.key")).unwrap()).unwrap();
    rebuild_with(&forked, &signer, 320, |i| {
        if i == 123 {
            b"{\"n\":\"rewritten\"}".to_vec()
        } else {
            format!("{{\"n\":{i}}}").into_bytes()
        }
    });
    // The forked log is self-consistent: alone, it verifies.
    assert_eq!(problem(&forked, &[]), None);
    // Client B sees the fork; A's checkpoint shows it is not an extension of what A saw.
    let seen_by_b = common::view(&forked).checkpoint().clone();
    let p = problem(&forked, std::slice::from_ref(&seen_by_a)).unwrap();
    assert!(p.reason.contains("rewritten or forked"), "{p:?}");
    // And the honest log is inconsistent with what B saw: the two clients comparing notes find the fork.
    let p = problem(&dir, &[seen_by_b]).unwrap();
    assert!(
        p.reason.contains("shrank") || p.reason.contains("forked"),
        "{p:?}"
    );
    // A log truncated back (entries removed, re-signed) is caught by the size.
    let truncated = tmp.path().join("truncated");
    std::fs::create_dir(&truncated).unwrap();
    std::fs::copy(dir.join("log.key"), truncated.join("log.key")).unwrap();
    std::fs::copy(dir.join("log.vkey"), truncated.join("log.vkey")).unwrap();
    rebuild_with(&truncated, &signer, 250, |i| {
        format!("{{\"n\":{i}}}").into_bytes()
    });
    let p = problem(&truncated, &[seen_by_a]).unwrap();
    assert!(p.reason.contains("shrank"), "{p:?}");
    assert_eq!(p.index, Some(250));
}

/// Writes a complete, validly signed log of `n` entries with the given key (what an operator could forge).
fn rebuild_with(dir: &Path, signer: &SignerKey, n: u64, entry: impl Fn(u64) -> Vec<u8>) {
    let scratch = tempfile::tempdir().unwrap();
    let inner = scratch.path().join("l");
    let log = rampart_log::Log::create(&inner, signer.name(), common::options()).unwrap();
    for i in 0..n {
        log.append(&entry(i)).unwrap();
    }
    log.close().unwrap();
    // Copy its tiles and re-sign its checkpoint with the real key.
    copy_dir(&inner.join("tile"), &dir.join("tile"));
    let own = rampart_log::read_verifier(&inner, None).unwrap();
    let text = std::fs::read_to_string(inner.join("checkpoint")).unwrap();
    let c = Checkpoint::open(&text, &own, &inner.join("checkpoint")).unwrap();
    std::fs::write(dir.join("checkpoint"), c.sign(signer).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
