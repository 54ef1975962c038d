//! The write-ahead file: what makes an append durable before it reaches the tiles and a checkpoint.
//!
//! A header `rampart-log wal v1\n` and the big-endian index of its first entry, then records
//! `u16 length ‖ entry ‖ first 8 bytes of the entry's leaf hash`. Appends are written in batches and made
//! durable with one `fdatasync` per batch (group commit). A record cut short or failing its check at the
//! end of the file is a torn tail from a crash during a write that was never acknowledged: it is cut off.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::merkle::{leaf_hash, Hash};

const MAGIC: &[u8] = b"rampart-log wal v1\n";
const HEADER: usize = MAGIC.len() + 8;

/// An open write-ahead file.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
}

/// What was found in a write-ahead file.
#[derive(Debug)]
pub struct Recovered {
    /// Index of the first entry in the file.
    pub start: u64,
    /// The entries with their leaf hashes.
    pub entries: Vec<(Vec<u8>, Hash)>,
    /// Bytes cut off as a torn tail.
    pub torn: u64,
}

/// Encodes one record.
pub fn encode(buf: &mut Vec<u8>, entry: &[u8], leaf: &Hash) -> Result<()> {
    crate::tiles::push_entry(buf, entry)?;
    buf.extend_from_slice(leaf.get(..8).unwrap_or(&[]));
    Ok(())
}

impl Wal {
    /// Creates (replaces) the write-ahead file with an empty one starting at `start`, durably.
    pub fn create(dir: &Path, start: u64) -> Result<Wal> {
        let path = dir.join("wal");
        let tmp = dir.join("wal.tmp");
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&start.to_be_bytes());
        let mut file = File::create(&tmp).map_err(Error::io("create", &tmp))?;
        file.write_all(&header).map_err(Error::io("write", &tmp))?;
        file.sync_all().map_err(Error::io("sync", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(Error::io("rename", &tmp))?;
        crate::fsutil::sync_dir(dir)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        Ok(Wal { file, path })
    }

    /// Opens the write-ahead file, cuts off a torn tail, and returns what it holds.
    pub fn open(dir: &Path) -> Result<(Wal, Recovered)> {
        let path = dir.join("wal");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(Error::io("read", &path))?;
        let (header, mut rest) = data
            .split_at_checked(HEADER)
            .ok_or_else(|| Error::Corrupt {
                dir: dir.to_owned(),
                index: 0,
                reason: "the write-ahead file has no header".into(),
            })?;
        let (magic, start) = header.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(Error::Corrupt {
                dir: dir.to_owned(),
                index: 0,
                reason: "the write-ahead file has a bad header".into(),
            });
        }
        let start = u64::from_be_bytes(start.try_into().unwrap_or([0; 8]));
        let mut entries = Vec::new();
        let mut good = HEADER;
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let len = usize::from(u16::from_be_bytes(*len));
            let Some((entry, tail)) = tail.split_at_checked(len) else {
                break;
            };
            let Some((check, tail)) = tail.split_first_chunk::<8>() else {
                break;
            };
            let leaf = leaf_hash(entry);
            if leaf.get(..8) != Some(check.as_slice()) {
                break;
            }
            entries.push((entry.to_vec(), leaf));
            good += 2 + len + 8;
            rest = tail;
        }
        let torn = (data.len() - good) as u64;
        if torn > 0 {
            tracing::warn!(
                bytes = torn,
                "cutting a torn tail off the audit log's write-ahead file"
            );
            file.set_len(good as u64)
                .map_err(Error::io("truncate", &path))?;
            file.sync_all().map_err(Error::io("sync", &path))?;
        }
        Ok((
            Wal { file, path },
            Recovered {
                start,
                entries,
                torn,
            },
        ))
    }

    /// Appends encoded records and makes them durable.
    pub fn append(&mut self, records: &[u8]) -> Result<()> {
        self.file
            .write_all(records)
            .map_err(Error::io("write", &self.path))?;
        self.file.sync_data().map_err(Error::io("sync", &self.path))
    }
}
