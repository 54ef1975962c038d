//! Reading a log without writing it: its checkpoint, entries and proofs. Needs no lock; a writer may be
//! appending meanwhile (the tiles of a checkpoint are durable before the checkpoint is).

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::merkle::{self, Hash};
use crate::note::VerifierKey;
use crate::tiles::{self, WIDTH};

/// A log opened for reading at its current checkpoint.
#[derive(Debug)]
pub struct LogView {
    dir: PathBuf,
    key: VerifierKey,
    signed: String,
    checkpoint: Checkpoint,
}

/// Reads a verifier key: the text itself, or a file holding it.
pub fn read_verifier(dir: &Path, key: Option<&str>) -> Result<VerifierKey> {
    match key {
        Some(k) if VerifierKey::parse(k).is_ok() => VerifierKey::parse(k),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
            VerifierKey::parse(&text)
        }
        None => {
            let path = crate::log::vkey_path(dir);
            let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotALog {
                    dir: dir.to_owned(),
                },
                _ => Error::io("read", &path)(e),
            })?;
            VerifierKey::parse(&text)
        }
    }
}

impl LogView {
    /// Opens the log in `dir`, checking its checkpoint's signature with `key`.
    pub fn open(dir: &Path, key: VerifierKey) -> Result<LogView> {
        let path = dir.join("checkpoint");
        let signed = read_note(&path).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Error::NotALog {
                    dir: dir.to_owned(),
                }
            }
            other => other,
        })?;
        let checkpoint = Checkpoint::open(&signed, &key, &path)?;
        Ok(LogView {
            dir: dir.to_owned(),
            key,
            signed,
            checkpoint,
        })
    }

    /// The checkpoint (verified).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The checkpoint as the signed note on disk.
    pub fn signed_checkpoint(&self) -> &str {
        &self.signed
    }

    /// The trusted key.
    pub fn key(&self) -> &VerifierKey {
        &self.key
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn reader(&self, size: u64) -> tiles::Reader<'_> {
        tiles::Reader::new(&self.dir, size)
    }

    /// Entry `index`, checked against its leaf hash in the tiles.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>> {
        let size = self.checkpoint.size;
        if index >= size {
            return Err(Error::OutOfRange {
                what: "index",
                value: index,
                size,
            });
        }
        let mut reader = self.reader(size);
        let entries = reader.entries(index / WIDTH)?;
        let entry = entries
            .get((index % WIDTH) as usize)
            .cloned()
            .ok_or_else(|| Error::Corrupt {
                dir: self.dir.clone(),
                index,
                reason: "the entry is missing from its bundle".into(),
            })?;
        let stored = reader
            .hashes(0, index / WIDTH)?
            .get((index % WIDTH) as usize)
            .copied();
        if stored != Some(merkle::leaf_hash(&entry)) {
            return Err(Error::Corrupt {
                dir: self.dir.clone(),
                index,
                reason: "the entry does not match its hash in the level 0 tile".into(),
            });
        }
        Ok(entry)
    }

    /// The root of the tree of `size` entries (at most the checkpoint's).
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        merkle::root_at(&mut self.reader(self.checkpoint.size), size)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        merkle::inclusion_proof(&mut self.reader(self.checkpoint.size), index, size)
    }

    /// The consistency proof from the tree of `old` entries to that of `new`.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_size(new)?;
        merkle::consistency_proof(&mut self.reader(self.checkpoint.size), old, new)
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.checkpoint.size {
            return Err(Error::OutOfRange {
                what: "tree size",
                value: size,
                size: self.checkpoint.size,
            });
        }
        Ok(())
    }
}

/// Reads a signed note, refusing anything larger than a note can be.
pub fn read_note(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(Error::io("read", path))?;
    let mut text = String::new();
    file.take(crate::note::MAX_NOTE as u64 + 1)
        .read_to_string(&mut text)
        .map_err(Error::io("read", path))?;
    if text.len() > crate::note::MAX_NOTE {
        return Err(Error::malformed(
            "note",
            format!("`{}` is larger than a note can be", path.display()),
        ));
    }
    Ok(text)
}
