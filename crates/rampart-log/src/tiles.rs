//! C2SP tlog-tiles on disk: `tile/<L>/<N>[.p/<W>]` hash tiles and `tile/entries/<N>[.p/<W>]` entry bundles,
//! 256 hashes (or entries) wide, and a reader that serves subtree hashes from them at a given tree size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::merkle::{subtree_root, Hash, HashSource};

/// Hashes (or entries) per full tile: tile height 8.
pub const WIDTH: u64 = 256;
/// Bytes of a full hash tile.
const FULL_TILE_BYTES: usize = 256 * 32;
/// Highest tile level: 8 levels of 256 cover 2^64 entries.
const MAX_LEVEL: u32 = 7;

/// Which kind of tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Hashes at tile level L.
    Hashes(u32),
    /// The entries themselves.
    Entries,
}

/// The path of a tile: `width` 256 is a full tile, 1..=255 a partial one.
pub fn path(dir: &Path, kind: Kind, index: u64, width: u64) -> PathBuf {
    let mut p = dir.join("tile");
    match kind {
        Kind::Hashes(level) => p.push(level.to_string()),
        Kind::Entries => p.push("entries"),
    }
    let mut elems = vec![format!("{:03}", index % 1000)];
    let mut n = index / 1000;
    while n > 0 {
        elems.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    for e in elems.iter().rev() {
        p.push(e);
    }
    if width < WIDTH {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        p.set_file_name(format!("{name}.p"));
        p.push(width.to_string());
    }
    p
}

/// The width of tile `index` at tile level `level` in a tree of `size` entries (0 if the tile is beyond it).
pub fn width_at(level: u32, index: u64, size: u64) -> u64 {
    let shift = 8 * u64::from(level);
    let count = if shift >= 64 { 0 } else { size >> shift };
    count.saturating_sub(index.saturating_mul(WIDTH)).min(WIDTH)
}

/// Encodes an entry bundle: big-endian uint16 length-prefixed entries.
pub fn push_entry(bundle: &mut Vec<u8>, entry: &[u8]) -> Result<()> {
    let len = u16::try_from(entry.len()).map_err(|_| Error::EntryTooLarge { len: entry.len() })?;
    bundle.extend_from_slice(&len.to_be_bytes());
    bundle.extend_from_slice(entry);
    Ok(())
}

/// Splits an entry bundle into entries; `None` if it is not exactly `count` well-formed entries.
pub fn split_bundle(data: &[u8], count: u64) -> Option<Vec<&[u8]>> {
    let (entries, whole) = parse_bundle(data);
    (whole && entries.len() as u64 == count).then_some(entries)
}

/// Splits as much of an entry bundle as is well formed; the flag says whether all of it was.
pub fn parse_bundle(mut data: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some((len, rest)) = data.split_first_chunk::<2>() else {
            return (out, false);
        };
        let len = usize::from(u16::from_be_bytes(*len));
        let Some((entry, rest)) = rest.split_at_checked(len) else {
            return (out, false);
        };
        out.push(entry);
        data = rest;
    }
    (out, true)
}

/// Decodes a hash tile's bytes.
pub fn decode_hashes(data: &[u8]) -> Option<Vec<Hash>> {
    if data.len() % 32 != 0 || data.len() > FULL_TILE_BYTES {
        return None;
    }
    Some(
        data.chunks_exact(32)
            .filter_map(|c| Hash::try_from(c).ok())
            .collect(),
    )
}

/// Reads tiles of the tree of `size` entries; a full tile is preferred to a partial one (its prefix is the same).
#[derive(Debug)]
pub struct Reader<'a> {
    dir: &'a Path,
    size: u64,
    cache: HashMap<(u32, u64), Vec<Hash>>,
}

impl<'a> Reader<'a> {
    /// A reader of the tree of `size` entries stored in `dir`.
    pub fn new(dir: &'a Path, size: u64) -> Reader<'a> {
        Reader {
            dir,
            size,
            cache: HashMap::new(),
        }
    }

    fn corrupt(&self, index: u64, reason: String) -> Error {
        Error::Corrupt {
            dir: self.dir.to_owned(),
            index,
            reason,
        }
    }

    /// Reads the bytes of a tile at this tree size: the full tile if it exists, else the partial one.
    pub fn read(&self, kind: Kind, index: u64) -> Result<(Vec<u8>, u64)> {
        let level = match kind {
            Kind::Hashes(l) => l,
            Kind::Entries => 0,
        };
        let width = width_at(level, index, self.size);
        if width == 0 {
            return Err(Error::OutOfRange {
                what: "tile",
                value: index,
                size: self.size,
            });
        }
        let full = path(self.dir, kind, index, WIDTH);
        match std::fs::read(&full) {
            Ok(data) => return Ok((data, WIDTH)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && width < WIDTH => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let first = index.saturating_mul(WIDTH << (8 * level));
                return Err(self.corrupt(first, format!("tile `{}` is missing", full.display())));
            }
            Err(e) => return Err(Error::io("read", full)(e)),
        }
        let partial = path(self.dir, kind, index, width);
        match std::fs::read(&partial) {
            Ok(data) => Ok((data, width)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let first = index.saturating_mul(WIDTH << (8 * level));
                Err(self.corrupt(first, format!("tile `{}` is missing", partial.display())))
            }
            Err(e) => Err(Error::io("read", partial)(e)),
        }
    }

    /// The hashes of hash tile `index` at tile level `level`.
    pub fn hashes(&mut self, level: u32, index: u64) -> Result<&[Hash]> {
        if !self.cache.contains_key(&(level, index)) {
            let (data, width) = self.read(Kind::Hashes(level), index)?;
            let need = width_at(level, index, self.size) as usize;
            let mut hashes = decode_hashes(&data)
                .filter(|h| h.len() as u64 == width)
                .ok_or_else(|| {
                    self.corrupt(
                        index << (8 * (level + 1)),
                        format!("hash tile {level}/{index} has the wrong size"),
                    )
                })?;
            hashes.truncate(need);
            if self.cache.len() >= 64 {
                self.cache.clear();
            }
            self.cache.insert((level, index), hashes);
        }
        Ok(self
            .cache
            .get(&(level, index))
            .map(Vec::as_slice)
            .unwrap_or(&[]))
    }

    /// The entries of bundle `index`.
    pub fn entries(&self, index: u64) -> Result<Vec<Vec<u8>>> {
        let (data, width) = self.read(Kind::Entries, index)?;
        let need = width_at(0, index, self.size) as usize;
        let mut entries: Vec<Vec<u8>> = split_bundle(&data, width)
            .map(|v| v.into_iter().map(<[u8]>::to_vec).collect())
            .ok_or_else(|| {
                self.corrupt(index * WIDTH, format!("entry bundle {index} is malformed"))
            })?;
        entries.truncate(need);
        Ok(entries)
    }
}

impl HashSource for Reader<'_> {
    fn subtree(&mut self, level: u32, index: u64) -> Result<Hash> {
        let tile_level = level / 8;
        if tile_level > MAX_LEVEL {
            return Err(Error::OutOfRange {
                what: "level",
                value: u64::from(level),
                size: self.size,
            });
        }
        let r = level % 8;
        let start = index << r;
        let (tile, offset) = (start / WIDTH, (start % WIDTH) as usize);
        let hashes = self.hashes(tile_level, tile)?;
        let span = hashes
            .get(offset..offset + (1usize << r))
            .ok_or(Error::OutOfRange {
                what: "subtree",
                value: index << level,
                size: 0,
            })?;
        Ok(subtree_root(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_spec() {
        let d = Path::new("/l");
        assert_eq!(
            path(d, Kind::Hashes(0), 1_234_067, 256),
            Path::new("/l/tile/0/x001/x234/067")
        );
        assert_eq!(
            path(d, Kind::Hashes(1), 5, 17),
            Path::new("/l/tile/1/005.p/17")
        );
        assert_eq!(
            path(d, Kind::Entries, 1000, 3),
            Path::new("/l/tile/entries/x001/000.p/3")
        );
    }

    #[test]
    fn widths_follow_the_spec() {
        // A tree of 70,000: 273 full level 0 tiles, one of 112; one full level 1 tile, one of 17; one level 2 of 1.
        assert_eq!(width_at(0, 272, 70_000), 256);
        assert_eq!(width_at(0, 273, 70_000), 112);
        assert_eq!(width_at(1, 0, 70_000), 256);
        assert_eq!(width_at(1, 1, 70_000), 17);
        assert_eq!(width_at(2, 0, 70_000), 1);
        assert_eq!(width_at(3, 0, 70_000), 0);
    }
}
