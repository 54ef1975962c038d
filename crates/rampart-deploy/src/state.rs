//! Small filesystem helpers for the state directory: names, atomic writes, secrets, an exclusive lock, JSON files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Largest JSON state file read (requests, MFA records, role lists).
const MAX_STATE_FILE: u64 = 1 << 20;

/// Checks a model name, version, principal or request id: `[A-Za-z0-9._@-]{1,64}`, not starting with `.`.
pub fn check_name(what: &'static str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(Error::Name {
            what,
            value: value.chars().take(80).collect(),
        })
    }
}

/// Writes `data` to a temporary file next to `path`, syncs it and renames it into place.
pub fn write_atomic(path: &Path, data: &[u8], secret: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".rampart-tmp-")
        .tempfile_in(dir)
        .map_err(Error::io("create a temporary file in", dir))?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(Error::io("protect", path))?;
    }
    tmp.write_all(data).map_err(Error::io("write", path))?;
    tmp.as_file().sync_all().map_err(Error::io("sync", path))?;
    tmp.persist(path)
        .map_err(|e| Error::io("write", path)(e.error))?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

/// Reads a JSON state file, or `None` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match read_limited(path, MAX_STATE_FILE) {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Writes a JSON state file atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T, secret: bool) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes, secret)
}

/// Reads at most `limit` bytes of a file; more is an error.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(Error::io("read", path))?;
    let mut data = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(Error::io("read", path))?;
    if data.len() as u64 > limit {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(data)
}

/// Random bytes as lowercase hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| Error::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An exclusive lock on the state directory, held while state changes (released on drop).
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Blocks until the lock on `dir/.lock` is ours.
    pub fn acquire(dir: &Path) -> Result<StateLock> {
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let path: PathBuf = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io("lock", &path)(e.into()))?;
        Ok(StateLock { _file: file })
    }
}
