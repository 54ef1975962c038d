//! The wire format of a registry upload: the model directory as a POSIX (ustar/pax or GNU) tar stream, its
//! signature (`model.sig`) included, paths relative to the model's root. [`unpack`] writes one into an empty
//! staging directory for the deployment gate, refusing anything a model directory cannot hold.
//!
//! Hostile input is the normal case: only regular files and directories are accepted (no links, devices or
//! FIFOs, so nothing can point outside the staging directory), every path is a clean relative path (no `..`, no
//! absolute path, no `.git`), a file appears once, and the number of files and their total size are bounded by the
//! gate's policy before a byte is written past it.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::config::Policy;
use crate::error::{Error, Result};

/// What an unpacked upload held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::BadUpload(reason.into())
}

/// A tar path as a safe relative path, or why not.
fn clean_path(raw: &Path) -> Result<PathBuf> {
    let shown = || {
        raw.display()
            .to_string()
            .chars()
            .take(120)
            .collect::<String>()
    };
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => {
                if part == ".git" {
                    return Err(bad(format!("`{}`: `.git` is not part of a model", shown())));
                }
                clean.push(part);
            }
            Component::CurDir => {}
            _ => {
                return Err(bad(format!(
                    "`{}`: only relative paths inside the model are allowed",
                    shown()
                )))
            }
        }
    }
    let text = clean
        .to_str()
        .ok_or_else(|| bad(format!("`{}`: the path is not UTF-8", shown())))?;
    if !text.is_empty() {
        rampart_digest::ManifestPath::new(text).map_err(|e| bad(format!("`{}`: {e}", shown())))?;
    }
    Ok(clean)
}

/// Unpacks a tar stream into `dest` (an empty directory), within `policy`'s file count and size.
pub fn unpack(reader: impl Read, dest: &Path, policy: &Policy) -> Result<Unpacked> {
    let mut archive = tar::Archive::new(reader);
    let mut done = Unpacked::default();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar stream: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| bad(format!("unreadable path in the tar stream: {e}")))?
            .into_owned();
        let path = clean_path(&raw)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            if !path.as_os_str().is_empty() {
                let dir = dest.join(&path);
                std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
            }
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "`{}`: only regular files and directories are accepted (no links or devices)",
                path.display()
            )));
        }
        if path.as_os_str().is_empty() {
            return Err(bad("a file entry without a name"));
        }
        let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
        done.files += 1;
        done.bytes = done.bytes.saturating_add(size);
        if done.files > policy.max_files {
            return Err(bad(format!(
                "more than the policy's max_files = {} files",
                policy.max_files
            )));
        }
        if done.bytes > policy.max_bytes {
            return Err(bad(format!(
                "more than the policy's max_bytes = {} bytes",
                policy.max_bytes
            )));
        }
        let target = dest.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        }
        // `create_new`: a second entry for the same path is refused rather than overwriting the first.
        let mut file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(bad(format!("`{}` appears twice", path.display())))
            }
            Err(e) => return Err(Error::io("create", &target)(e)),
        };
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut file)
            .map_err(|e| bad(format!("`{}`: truncated tar stream: {e}", path.display())))?;
        if copied != size {
            return Err(bad(format!("`{}`: truncated tar stream", path.display())));
        }
        file.flush().map_err(Error::io("write", &target))?;
    }
    if done.files == 0 {
        return Err(bad("the tar stream holds no file"));
    }
    Ok(done)
}

/// Writes `model_dir` as an upload (the format [`unpack`] reads): regular files only, sorted, with fixed owners,
/// modes and times so that the same directory always gives the same bytes. Symlinks are refused.
pub fn pack(model_dir: &Path, out: impl Write) -> Result<Unpacked> {
    let listing = rampart_digest::walk(
        model_dir,
        &rampart_digest::WalkOptions {
            ignore: rampart_digest::IgnoreRules::git(),
            follow_symlinks: false,
        },
    )
    .map_err(|e| Error::NotFound(format!("cannot read `{}`: {e}", model_dir.display())))?;
    if let Some(link) = listing.symlinks.first() {
        return Err(bad(format!(
            "`{link}` is a symlink; a model directory holds regular files only"
        )));
    }
    let mut files: Vec<_> = listing.files.iter().collect();
    files.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
    let mut builder = tar::Builder::new(out);
    let mut done = Unpacked::default();
    for entry in files {
        let file = std::fs::File::open(&entry.source).map_err(Error::io("read", &entry.source))?;
        let size = file
            .metadata()
            .map_err(Error::io("read", &entry.source))?
            .len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, entry.path.as_str(), file.take(size))
            .map_err(|e| bad(format!("cannot send `{}`: {e}", entry.path)))?;
        done.files += 1;
        done.bytes += size;
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| bad(format!("cannot send the model: {e}")))?;
    Ok(done)
}

/// Fuzzing entry point: unpacks `data` into a temporary directory with small limits. Never panics.
#[doc(hidden)]
pub fn fuzz_unpack(data: &[u8]) {
    if let Ok(dir) = tempfile::tempdir() {
        let policy = Policy {
            max_bytes: 1 << 20,
            max_files: 64,
            allowed_extensions: Vec::new(),
        };
        let _ = unpack(data, dir.path(), &policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            // Written raw so that hostile names (`..`, absolute) reach the unpacker as an attacker would send them.
            let name = header.as_old_mut();
            name.name.fill(0);
            name.name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn packs_and_unpacks_a_model_directory() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        std::fs::write(src.path().join("model.onnx"), b"onnx").unwrap();
        std::fs::write(src.path().join("sub/config.json"), b"{}").unwrap();
        let mut stream = Vec::new();
        let sent = pack(src.path(), &mut stream).unwrap();
        assert_eq!(sent, Unpacked { files: 2, bytes: 6 });
        let dest = tempfile::tempdir().unwrap();
        let got = unpack(stream.as_slice(), dest.path(), &Policy::default()).unwrap();
        assert_eq!(got, sent);
        assert_eq!(
            std::fs::read(dest.path().join("sub/config.json")).unwrap(),
            b"{}"
        );
        let mut again = Vec::new();
        pack(src.path(), &mut again).unwrap();
        assert_eq!(again, stream, "the same directory packs to the same bytes");
    }

    #[test]
    fn refuses_what_a_model_directory_cannot_hold() {
        let cases: [(&str, Vec<u8>); 6] = [
            (
                "escape",
                tar_of(&[("../evil", tar::EntryType::Regular, b"x")]),
            ),
            (
                "absolute",
                tar_of(&[("/etc/evil", tar::EntryType::Regular, b"x")]),
            ),
            ("symlink", tar_of(&[("link", tar::EntryType::Symlink, b"")])),
            ("hardlink", tar_of(&[("link", tar::EntryType::Link, b"")])),
            (
                "duplicate",
                tar_of(&[
                    ("a.onnx", tar::EntryType::Regular, b"x"),
                    ("a.onnx", tar::EntryType::Regular, b"y"),
                ]),
            ),
            ("empty", tar_of(&[])),
        ];
        for (what, stream) in cases {
            let dest = tempfile::tempdir().unwrap();
            let err = unpack(stream.as_slice(), dest.path(), &Policy::default()).unwrap_err();
            assert!(matches!(err, Error::BadUpload(_)), "{what}: {err}");
        }
        let dest = tempfile::tempdir().unwrap();
        let policy = Policy {
            max_bytes: 3,
            ..Policy::default()
        };
        let stream = tar_of(&[("a.onnx", tar::EntryType::Regular, b"four")]);
        assert!(unpack(stream.as_slice(), dest.path(), &policy).is_err());
        assert!(
            !dest.path().join("a.onnx").exists(),
            "nothing past the limit is written"
        );
        let garbage = vec![0x41u8; 700];
        assert!(unpack(garbage.as_slice(), dest.path(), &Policy::default()).is_err());
    }

    #[test]
    fn the_committed_fuzz_corpus_never_panics() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/deploy/corpus/unpack");
        for entry in std::fs::read_dir(dir).unwrap() {
            fuzz_unpack(&std::fs::read(entry.unwrap().path()).unwrap());
        }
    }
}
