//! Directories as a tar stream inside the age file. The first entry is an empty file named [`MARKER`], so
//! that unsealing knows to restore a directory (`age -d FILE | tar x` works too, and yields the marker).
//! Only regular files and directories are sealed or restored; paths must be relative and stay inside.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The name of the first entry of a sealed directory.
pub const MARKER: &str = ".rampart-sealed-directory";

/// A file unsealed into memory.
#[derive(Clone, PartialEq, Eq)]
pub struct MemoryFile {
    /// Its path inside the sealed directory (or its name).
    pub path: PathBuf,
    /// Its contents.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for MemoryFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFile")
            .field("path", &self.path)
            .field("len", &self.data.len())
            .finish()
    }
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `dir` as a tar stream; returns the stream's bytes and the number of files.
pub(crate) fn write_tar(dir: &Path, out: &mut impl Write) -> Result<(u64, u64)> {
    let mut counting = Counting {
        inner: out,
        count: 0,
    };
    let mut builder = tar::Builder::new(&mut counting);
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, MARKER, std::io::empty())
        .map_err(Error::io("write the archive of", dir))?;
    let mut files = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&abs)
            .map_err(Error::io("read", &abs))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .map_err(Error::io("read", &abs))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel.join(&name);
            let abs = dir.join(&rel);
            let meta = std::fs::symlink_metadata(&abs).map_err(Error::io("read", &abs))?;
            if meta.is_dir() {
                builder
                    .append_dir(&rel, &abs)
                    .map_err(Error::io("archive", &abs))?;
                subdirs.push(rel);
            } else if meta.is_file() {
                let mut file = File::open(&abs).map_err(Error::io("read", &abs))?;
                builder
                    .append_file(&rel, &mut file)
                    .map_err(Error::io("archive", &abs))?;
                files += 1;
            } else {
                return Err(Error::SpecialFile { path: abs });
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    builder
        .finish()
        .map_err(Error::io("write the archive of", dir))?;
    drop(builder);
    Ok((counting.count, files))
}

/// Whether the plaintext starts with a tar header naming [`MARKER`] (peeks without consuming).
pub(crate) fn starts_with_marker(reader: &mut impl BufRead) -> std::io::Result<bool> {
    let buf = reader.fill_buf()?;
    let (Some(name), Some(magic)) = (buf.get(..100), buf.get(257..262)) else {
        return Ok(false);
    };
    let name = name.split(|&b| b == 0).next().unwrap_or(&[]);
    Ok(magic == b"ustar" && name == MARKER.as_bytes())
}

/// A relative path that stays inside the destination, or an error.
fn safe_path(path: &Path, sealed: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => {
                return Err(Error::BadArchive {
                    path: sealed.to_owned(),
                    reason: format!("entry `{}` leaves the destination", path.display()),
                })
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(Error::BadArchive {
            path: sealed.to_owned(),
            reason: "an entry has an empty path".into(),
        });
    }
    Ok(out)
}

fn archive_error(e: std::io::Error, sealed: &Path) -> Error {
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            Error::from_stream(e, sealed)
        }
        _ => {
            // The tar crate wraps read errors; look for the age stream's error inside.
            let text = e.to_string();
            if text.contains("tag") || text.contains("truncat") || text.contains("chunk") {
                Error::Damaged {
                    path: sealed.to_owned(),
                    reason: text,
                }
            } else {
                Error::BadArchive {
                    path: sealed.to_owned(),
                    reason: text,
                }
            }
        }
    }
}

/// Visits every entry after the marker: `(path, is_dir, reader)`; then reads to the end so the last chunk
/// of the age stream is authenticated too.
fn for_each_entry<R: Read>(
    reader: R,
    sealed: &Path,
    mut visit: impl FnMut(PathBuf, bool, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut first = true;
    for entry in archive.entries().map_err(|e| archive_error(e, sealed))? {
        let mut entry = entry.map_err(|e| archive_error(e, sealed))?;
        let path = entry
            .path()
            .map_err(|e| archive_error(e, sealed))?
            .into_owned();
        if std::mem::take(&mut first) {
            continue; // the marker, checked before
        }
        let path = safe_path(&path, sealed)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => visit(path, true, &mut std::io::empty())?,
            tar::EntryType::Regular | tar::EntryType::Continuous => visit(path, false, &mut entry)?,
            other => {
                return Err(Error::BadArchive {
                    path: sealed.to_owned(),
                    reason: format!(
                        "entry `{}` is of type {other:?}; only files and directories are restored",
                        path.display()
                    ),
                })
            }
        }
    }
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(|e| Error::from_stream(e, sealed))?;
    Ok(())
}

/// Restores a sealed directory to `output` through a temporary directory renamed into place at the end.
pub(crate) fn extract(reader: &mut impl Read, sealed: &Path, output: &Path) -> Result<(u64, u64)> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".rampart-unseal-")
        .tempdir_in(parent)
        .map_err(Error::io("create a temporary directory in", parent))?;
    let (mut bytes, mut files) = (0u64, 0u64);
    for_each_entry(reader, sealed, |path, is_dir, data| {
        let dest = tmp.path().join(&path);
        if is_dir {
            return std::fs::create_dir_all(&dest).map_err(Error::io("create", &dest));
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let file = options.open(&dest).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::BadArchive {
                path: sealed.to_owned(),
                reason: format!("entry `{}` appears twice", path.display()),
            },
            _ => Error::io("create", &dest)(e),
        })?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
        bytes += crate::copy_stream(data, &mut out, sealed, &dest)?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io("write", &dest)(e.into_error()))?;
        file.sync_all().map_err(Error::io("sync", &dest))?;
        files += 1;
        Ok(())
    })?;
    let kept = tmp.keep();
    if let Err(e) = std::fs::rename(&kept, output) {
        let _ = std::fs::remove_dir_all(&kept);
        return Err(Error::io("rename into", output)(e));
    }
    Ok((bytes, files))
}

/// Reads a sealed directory into memory, refusing more than `limit` bytes in all.
pub(crate) fn read_to_memory(
    reader: &mut impl Read,
    sealed: &Path,
    limit: u64,
) -> Result<Vec<MemoryFile>> {
    let mut files = Vec::new();
    let mut total = 0u64;
    for_each_entry(reader, sealed, |path, is_dir, data| {
        if is_dir {
            return Ok(());
        }
        let mut buf = Vec::new();
        let left = limit.saturating_sub(total);
        data.take(left.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| Error::from_stream(e, sealed))?;
        total += buf.len() as u64;
        if total > limit {
            return Err(Error::TooLarge {
                path: sealed.to_owned(),
                limit,
            });
        }
        files.push(MemoryFile { path, data: buf });
        Ok(())
    })?;
    Ok(files)
}
