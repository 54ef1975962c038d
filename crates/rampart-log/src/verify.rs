//! Full verification of a stored log: the checkpoint's signature, every entry against its leaf hash,
//! every hash tile against the tiles below it, the root against the checkpoint, and consistency with
//! checkpoints seen before (which is what catches a log rewritten by someone holding its key, or a fork
//! that shows different histories to different clients).

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::merkle::{leaf_hash, subtree_root, CompactRange};
use crate::note::VerifierKey;
use crate::tiles::{self, Kind, WIDTH};
use crate::view::LogView;

/// What verification found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// The verified checkpoint, if its signature held.
    pub checkpoint: Option<Checkpoint>,
    /// Entries recomputed.
    pub entries_checked: u64,
    /// The first problem found; `None` means the log verified.
    pub problem: Option<Problem>,
}

/// A reason the log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The first bad entry, when one can be named.
    pub index: Option<u64>,
    /// What is wrong, for people.
    pub reason: String,
}

fn problem(index: Option<u64>, reason: impl Into<String>) -> Option<Problem> {
    Some(Problem {
        index,
        reason: reason.into(),
    })
}

/// Verifies the log in `dir` with `key`, and its consistency with each of the `seen` checkpoints.
pub fn verify(dir: &Path, key: VerifierKey, seen: &[Checkpoint]) -> Result<Verification> {
    let view = match LogView::open(dir, key) {
        Ok(view) => view,
        Err(e @ (Error::BadSignature { .. } | Error::Malformed { .. })) => {
            return Ok(Verification {
                checkpoint: None,
                entries_checked: 0,
                problem: problem(None, e.to_string()),
            })
        }
        Err(e) => return Err(e),
    };
    let checkpoint = view.checkpoint().clone();
    let (entries_checked, mut found) = check_tree(dir, &checkpoint)?;
    if found.is_none() {
        found = check_seen(&view, seen)?;
    }
    Ok(Verification {
        checkpoint: Some(checkpoint),
        entries_checked,
        problem: found,
    })
}

fn check_tree(dir: &Path, checkpoint: &Checkpoint) -> Result<(u64, Option<Problem>)> {
    let size = checkpoint.size;
    let mut reader = tiles::Reader::new(dir, size);
    let mut range = CompactRange::new();
    for bundle in 0..size.div_ceil(WIDTH) {
        let first = bundle * WIDTH;
        let width = tiles::width_at(0, bundle, size);
        let (data, file_width) = match reader.read(Kind::Entries, bundle) {
            Ok(d) => d,
            Err(Error::Corrupt { reason, .. }) => return Ok((first, problem(Some(first), reason))),
            Err(e) => return Err(e),
        };
        let (entries, whole) = tiles::parse_bundle(&data);
        let stored = match reader.hashes(0, bundle) {
            Ok(h) => h.to_vec(),
            Err(Error::Corrupt { reason, .. }) => return Ok((first, problem(Some(first), reason))),
            Err(e) => return Err(e),
        };
        for (i, j) in (first..).zip(0..width as usize) {
            let Some(entry) = entries.get(j) else {
                return Ok((
                    i,
                    problem(
                        Some(i),
                        format!("entry {i} is missing from entry bundle {bundle}"),
                    ),
                ));
            };
            let leaf = leaf_hash(entry);
            if stored.get(j) != Some(&leaf) {
                return Ok((
                    i,
                    problem(Some(i), format!("entry {i} does not match its hash in tile 0/{bundle}: changed or removed")),
                ));
            }
            range.push(leaf);
        }
        if !whole || entries.len() as u64 != file_width {
            let i = first + entries.len().min(width as usize) as u64;
            return Ok((
                i,
                problem(
                    Some(i),
                    format!("entry bundle {bundle} holds extra or malformed data"),
                ),
            ));
        }
    }
    for level in 1..8u32 {
        let tiles_at_level = tiles::width_at(level, 0, size);
        if tiles_at_level == 0 {
            break;
        }
        let count = if level < 8 {
            (size >> (8 * level)).div_ceil(WIDTH)
        } else {
            0
        };
        for tile in 0..count {
            let stored = match reader.hashes(level, tile) {
                Ok(h) => h.to_vec(),
                Err(Error::Corrupt { index, reason, .. }) => {
                    return Ok((size, problem(Some(index), reason)))
                }
                Err(e) => return Err(e),
            };
            for (k, hash) in (0u64..).zip(&stored) {
                let below = tile * WIDTH + k;
                let first = below << (8 * level);
                let computed = match reader.hashes(level - 1, below) {
                    Ok(h) if h.len() as u64 == WIDTH => subtree_root(h),
                    Ok(_) => {
                        return Ok((
                            size,
                            problem(
                                Some(first),
                                format!("tile {}/{below} is not full", level - 1),
                            ),
                        ))
                    }
                    Err(Error::Corrupt { reason, .. }) => {
                        return Ok((size, problem(Some(first), reason)))
                    }
                    Err(e) => return Err(e),
                };
                if &computed != hash {
                    let reason = format!("hash tile {level}/{tile} does not match the tiles below it (entries from {first})");
                    return Ok((size, problem(Some(first), reason)));
                }
            }
        }
    }
    if range.root() != checkpoint.root {
        return Ok((
            size,
            problem(None, "the checkpoint's root hash does not match the entries: the checkpoint was rewritten"),
        ));
    }
    Ok((size, None))
}

fn check_seen(view: &LogView, seen: &[Checkpoint]) -> Result<Option<Problem>> {
    let current = view.checkpoint();
    for old in seen {
        if old.origin != current.origin {
            return Ok(problem(
                None,
                format!(
                    "a checkpoint seen before is of another log, `{}`",
                    old.origin
                ),
            ));
        }
        if old.size > current.size {
            return Ok(problem(
                Some(current.size),
                format!(
                    "the log shrank from {} entries (a checkpoint seen before) to {}: entries were removed",
                    old.size, current.size
                ),
            ));
        }
        if view.root_at(old.size)? != old.root {
            return Ok(problem(
                None,
                format!(
                    "the log's first {} entries differ from those of a checkpoint seen before: the log was rewritten or forked",
                    old.size
                ),
            ));
        }
    }
    Ok(None)
}
