//! `rampart-log`: the tamper-evident audit log every part of Rampart records into.
//!
//! In public formats, so that verifiers we did not write can check it:
//! - an RFC 6962 Merkle tree over the entries ([`merkle`]);
//! - checkpoints as C2SP signed notes (`tlog-checkpoint`, Ed25519, key IDs per `signed-note`) ([`checkpoint`], [`note`]);
//! - entries and hashes stored on disk as C2SP `tlog-tiles` ([`tiles`]): a log directory can be served as is.
//!
//! Appends are group-committed ([`Log`]): many threads append at once and share one `fdatasync`; an index
//! is returned only once the entry is durable, and a torn tail left by a crash is cut off on open without
//! losing an acknowledged entry. [`verify`] recomputes everything and names the first bad entry.
//!
//! The audit sink of the gateway and the command line is this, shared behind an `Arc` (for async code, call
//! [`Log::submit`] and wait on the [`Receipt`] from a blocking task):
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let log = rampart_log::Log::create(dir.path(), "example.com/audit", Default::default())?;
//! let record = rampart_log::Record::new("deploy", "ci@example.com").subject("model", "sha256:0123");
//! assert_eq!(log.append_json(&record)?, 0); // returned once durable
//! let checkpoint = log.close()?;
//! assert_eq!(checkpoint.size, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A log directory holds `checkpoint`, `tile/…`, `wal` (the write-ahead file), `log.vkey` (the verifier key)
//! and `log.key` (the signer key, mode 0600; keep a copy elsewhere and restrict who can read it).

pub mod checkpoint;
mod error;
mod fsutil;
mod log;
pub mod merkle;
pub mod note;
pub mod record;
pub mod tiles;
mod verify;
mod view;
mod wal;
mod writer;

pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use log::{random_origin, vkey_path, Log, Options, Receipt};
pub use merkle::Hash;
pub use note::{SignerKey, VerifierKey};
pub use record::Record;
pub use verify::{verify, Problem, Verification};
pub use view::{read_note, read_verifier, LogView};

/// Serializes a hash as standard base64, as checkpoints and proofs show it.
pub fn serialize_hash<S: serde::Serializer>(
    hash: &Hash,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(hash))
}

/// Fuzzing entry point: parses `data` as a signed checkpoint, a note and a verifier key. Never panics.
#[doc(hidden)]
pub fn fuzz_note(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = VerifierKey::parse(text);
    let _ = SignerKey::parse(text);
    let _ = Checkpoint::parse(text);
    // A fixed key: signatures by it will not verify, but every parsing path before that is exercised.
    if let Ok(key) =
        VerifierKey::parse("example.com/fuzz+3aa5b8c8+AfeVRtXhA8FLNYsEjJFRyBhvPSUxxtnEYDUXjIM0BzgU")
    {
        let _ = Checkpoint::open(text, &key, std::path::Path::new("fuzz"));
    }
}

/// Fuzzing entry point: parses `data` as an entry bundle and a hash tile. Never panics.
#[doc(hidden)]
pub fn fuzz_bundle(data: &[u8]) {
    let (entries, _) = tiles::parse_bundle(data);
    let _ = tiles::split_bundle(data, entries.len() as u64);
    if let Some(hashes) = tiles::decode_hashes(data) {
        let _ = merkle::subtree_root(&hashes);
    }
}
