//! Durable file writes: temp file, fsync, rename, fsync of the directory.

use std::io::Write as _;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes a directory's entries (renames, creations) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

/// Writes `data` to `path` atomically; `durable` also fsyncs the file and its directory.
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(Error::io("create a temporary file in", dir))?;
    tmp.write_all(data).map_err(Error::io("write", path))?;
    if durable {
        tmp.as_file().sync_all().map_err(Error::io("sync", path))?;
    }
    tmp.persist(path)
        .map_err(|e| Error::io("rename", path)(e.error))?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Writes a secret to a new file of mode 0600 (never replaces an existing one).
pub fn write_secret(path: &Path, data: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(Error::io("create", path))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", path))
}
