//! The single writer's state: the right edge of the tree, the partial tiles, the write-ahead file, and
//! how a checkpoint is made durable. Owned by the committer thread; nothing here is shared.

use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::fsutil::{sync_dir, write_atomic};
use crate::merkle::{leaf_hash, subtree_root, CompactRange, Hash};
use crate::note::SignerKey;
use crate::tiles::{self, Kind, WIDTH};
use crate::wal::{self, Wal};

/// Tile levels: 8 × 8 bits cover 2^64 entries.
const LEVELS: usize = 8;

#[derive(Debug)]
pub(crate) struct Writer {
    dir: PathBuf,
    key: SignerKey,
    wal: Wal,
    range: CompactRange,
    /// The hashes of the incomplete tile at each level.
    partial: Vec<Vec<Hash>>,
    /// The incomplete entry bundle.
    bundle: Vec<u8>,
    /// Files written since the last checkpoint, not yet fsynced.
    unsynced: Vec<PathBuf>,
    /// Tiles completed since the last checkpoint: their partial versions go once it is durable.
    completed: Vec<(Kind, u64)>,
    checkpointed: u64,
}

impl Writer {
    /// Rebuilds the writer from the tiles of the last checkpoint and replays the write-ahead file.
    pub(crate) fn recover(dir: &Path, key: SignerKey, checkpoint: &Checkpoint) -> Result<Writer> {
        let size = checkpoint.size;
        let corrupt = |index: u64, reason: String| Error::Corrupt {
            dir: dir.to_owned(),
            index,
            reason,
        };
        // A full tile at the right edge was written after the checkpoint and never fsynced: after a power
        // loss it may be empty or torn. The checkpoint's partial tiles are durable; the replay rewrites it.
        for level in 0..LEVELS as u32 {
            let index = tile_index(level, size);
            if (1..WIDTH).contains(&tiles::width_at(level, index, size)) {
                remove_if_present(&tiles::path(dir, Kind::Hashes(level), index, WIDTH))?;
            }
        }
        if size % WIDTH > 0 {
            remove_if_present(&tiles::path(dir, Kind::Entries, size / WIDTH, WIDTH))?;
        }
        let mut reader = tiles::Reader::new(dir, size);
        let range = CompactRange::from_source(size, &mut reader)?;
        if range.root() != checkpoint.root {
            return Err(corrupt(
                0,
                "the tiles do not hash to the checkpoint's root".into(),
            ));
        }
        let mut partial = vec![Vec::new(); LEVELS];
        for (level, slot) in (0u32..).zip(partial.iter_mut()) {
            let index = tile_index(level, size);
            if tiles::width_at(level, index, size) > 0 {
                *slot = reader.hashes(level, index)?.to_vec();
            }
        }
        let mut bundle = Vec::new();
        let index = size / WIDTH;
        if size % WIDTH > 0 {
            let entries = reader.entries(index)?;
            for (i, entry) in (index * WIDTH..).zip(&entries) {
                if partial.first().and_then(|p| p.get((i % WIDTH) as usize))
                    != Some(&leaf_hash(entry))
                {
                    return Err(corrupt(
                        i,
                        "the entry does not match its hash in the level 0 tile".into(),
                    ));
                }
                tiles::push_entry(&mut bundle, entry)?;
            }
        }
        let (wal, recovered) = Wal::open(dir)?;
        let mut writer = Writer {
            dir: dir.to_owned(),
            key,
            wal,
            range,
            partial,
            bundle,
            unsynced: Vec::new(),
            completed: Vec::new(),
            checkpointed: size,
        };
        if recovered.start > size {
            return Err(corrupt(
                size,
                "the write-ahead file starts after the checkpoint: entries are missing".into(),
            ));
        }
        let skip = usize::try_from(size - recovered.start).unwrap_or(usize::MAX);
        if skip > recovered.entries.len() {
            return Err(corrupt(
                recovered.start + recovered.entries.len() as u64,
                "the write-ahead file lost entries the checkpoint covers".into(),
            ));
        }
        let replay = recovered.entries.get(skip..).unwrap_or(&[]);
        for (entry, leaf) in replay {
            writer.apply(entry, *leaf)?;
        }
        if !replay.is_empty() || recovered.torn > 0 || recovered.start != size {
            tracing::info!(
                replayed = replay.len(),
                torn_bytes = recovered.torn,
                "recovered the audit log"
            );
            writer.checkpoint()?;
        }
        Ok(writer)
    }

    /// A new, empty log.
    pub(crate) fn create(dir: &Path, key: SignerKey) -> Result<Writer> {
        let wal = Wal::create(dir, 0)?;
        let mut writer = Writer {
            dir: dir.to_owned(),
            key,
            wal,
            range: CompactRange::new(),
            partial: vec![Vec::new(); LEVELS],
            bundle: Vec::new(),
            unsynced: Vec::new(),
            completed: Vec::new(),
            checkpointed: u64::MAX,
        };
        writer.checkpoint()?;
        Ok(writer)
    }

    pub(crate) fn size(&self) -> u64 {
        self.range.size()
    }

    pub(crate) fn checkpointed(&self) -> u64 {
        self.checkpointed
    }

    /// Makes a batch durable in the write-ahead file (one fsync), then adds it to the tree and tiles.
    pub(crate) fn commit(&mut self, batch: &[Vec<u8>]) -> Result<()> {
        let mut records = Vec::with_capacity(batch.iter().map(|e| e.len() + 10).sum());
        let mut leaves = Vec::with_capacity(batch.len());
        for entry in batch {
            let leaf = leaf_hash(entry);
            wal::encode(&mut records, entry, &leaf)?;
            leaves.push(leaf);
        }
        self.wal.append(&records)?;
        for (entry, leaf) in batch.iter().zip(leaves) {
            self.apply(entry, leaf)?;
        }
        Ok(())
    }

    fn apply(&mut self, entry: &[u8], leaf: Hash) -> Result<()> {
        tiles::push_entry(&mut self.bundle, entry)?;
        self.range.push(leaf);
        self.push_hash(0, leaf)?;
        let size = self.range.size();
        if size % WIDTH == 0 {
            let bundle = std::mem::take(&mut self.bundle);
            self.write_tile(Kind::Entries, size / WIDTH - 1, WIDTH, &bundle)?;
        }
        Ok(())
    }

    fn push_hash(&mut self, level: u32, hash: Hash) -> Result<()> {
        let Some(slot) = self.partial.get_mut(level as usize) else {
            return Err(Error::Failed("the log is full".into()));
        };
        slot.push(hash);
        if slot.len() as u64 == WIDTH {
            let hashes = std::mem::take(slot);
            let index = tile_index(level, self.range.size()) - 1;
            self.write_tile(Kind::Hashes(level), index, WIDTH, &hashes.concat())?;
            self.push_hash(level + 1, subtree_root(&hashes))?;
        }
        Ok(())
    }

    fn write_tile(&mut self, kind: Kind, index: u64, width: u64, data: &[u8]) -> Result<()> {
        let path = tiles::path(&self.dir, kind, index, width);
        write_atomic(&path, data, false)?;
        self.unsynced.push(path);
        if width == WIDTH {
            self.completed.push((kind, index));
        }
        Ok(())
    }

    /// Writes the partial tiles of the current size, fsyncs every tile written since the last checkpoint,
    /// signs and durably writes the checkpoint, then starts a fresh write-ahead file.
    pub(crate) fn checkpoint(&mut self) -> Result<Checkpoint> {
        let size = self.range.size();
        for level in 0..LEVELS {
            let hashes = self
                .partial
                .get(level)
                .map(|p| p.concat())
                .unwrap_or_default();
            if !hashes.is_empty() {
                let level = level as u32;
                let index = tile_index(level, size);
                self.write_tile(
                    Kind::Hashes(level),
                    index,
                    (hashes.len() / 32) as u64,
                    &hashes,
                )?;
            }
        }
        if size % WIDTH > 0 {
            let bundle = std::mem::take(&mut self.bundle);
            let written = self.write_tile(Kind::Entries, size / WIDTH, size % WIDTH, &bundle);
            self.bundle = bundle;
            written?;
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for path in self.unsynced.drain(..) {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("sync", &path))?;
            if let Some(parent) = path.parent() {
                if !dirs.iter().any(|d| d == parent) {
                    dirs.push(parent.to_owned());
                }
            }
        }
        for dir in &dirs {
            sync_dir(dir)?;
        }
        let checkpoint = Checkpoint {
            origin: self.key.name().to_owned(),
            size,
            root: self.range.root(),
        };
        write_atomic(
            &self.dir.join("checkpoint"),
            checkpoint.sign(&self.key)?.as_bytes(),
            true,
        )?;
        self.wal = Wal::create(&self.dir, size)?;
        self.checkpointed = size;
        for (kind, index) in self.completed.drain(..) {
            let full = tiles::path(&self.dir, kind, index, WIDTH);
            let mut partials = full.into_os_string();
            partials.push(".p");
            match std::fs::remove_dir_all(&partials) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove superseded partial tiles"),
            }
        }
        Ok(checkpoint)
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// The index of the tile at `level` that holds position `size` (the first incomplete one).
fn tile_index(level: u32, size: u64) -> u64 {
    let shift = 8 * (u64::from(level) + 1);
    if shift >= 64 {
        0
    } else {
        size >> shift
    }
}
