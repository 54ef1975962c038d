//! Walking a directory: ignore rules, symlink policy, special files, loops.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{Error, ManifestPath};

/// The paths model_signing ignores by default.
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// Paths to skip, relative to the hashed directory. A path that is a directory skips everything under it, and
/// the walk never descends into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreRules {
    paths: Vec<ManifestPath>,
}

impl Default for IgnoreRules {
    /// model_signing's default: the git paths.
    fn default() -> Self {
        Self::git()
    }
}

impl IgnoreRules {
    /// Ignore nothing.
    pub fn none() -> Self {
        Self { paths: Vec::new() }
    }

    /// `.git`, `.gitattributes`, `.github` and `.gitignore`.
    pub fn git() -> Self {
        let mut rules = Self::none();
        for path in GIT_PATHS {
            rules.add(ManifestPath::trusted(path));
        }
        rules
    }

    /// Adds one path (a file or a directory).
    pub fn add(&mut self, path: ManifestPath) {
        if !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    /// Whether `path` is ignored.
    pub fn is_ignored(&self, path: &ManifestPath) -> bool {
        self.paths.iter().any(|base| path.starts_with(base))
    }

    /// The rules, sorted.
    pub fn paths(&self) -> Vec<ManifestPath> {
        let mut paths = self.paths.clone();
        paths.sort();
        paths
    }
}

/// How to walk.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Paths to skip.
    pub ignore: IgnoreRules,
    /// Follow symlinks; otherwise they are listed in [`Listing::symlinks`] and not followed.
    pub follow_symlinks: bool,
}

/// One regular file found by the walk.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Its path inside the directory.
    pub path: ManifestPath,
    /// Where to read it.
    pub source: PathBuf,
    /// Its size when listed.
    pub size: u64,
}

/// What a walk found, in model_signing's order.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The regular files (including symlink targets when symlinks are followed).
    pub files: Vec<FileEntry>,
    /// Symlinks that were not followed.
    pub symlinks: Vec<ManifestPath>,
}

impl Listing {
    /// The total size of the files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Lists every regular file under `root` that is not ignored. Empty directories contribute nothing.
/// Sockets, pipes and devices are errors, as are symlink loops and broken symlinks when symlinks are followed.
pub fn walk(root: &Path, options: &WalkOptions) -> Result<Listing, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let meta = fs::metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut listing = Listing::default();
    // Each pending directory carries the (device, inode) of its ancestors, to detect symlink loops.
    let mut pending: Vec<PendingDir> =
        vec![(root.to_path_buf(), None, vec![(meta.dev(), meta.ino())])];
    while let Some((dir, prefix, ancestors)) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(io(&dir))?;
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let source = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(Error::NonUtf8Path { path: source });
            };
            let path = match &prefix {
                Some(prefix) => prefix.join(&name)?,
                None => ManifestPath::new(&name)?,
            };
            if options.ignore.is_ignored(&path) {
                continue;
            }
            let kind = entry.file_type().map_err(io(&source))?;
            let meta = if kind.is_symlink() {
                if !options.follow_symlinks {
                    listing.symlinks.push(path);
                    continue;
                }
                match fs::metadata(&source) {
                    Ok(meta) => meta,
                    Err(e) if e.raw_os_error() == Some(ELOOP) => {
                        return Err(Error::SymlinkLoop {
                            path: path.to_string(),
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::BrokenSymlink {
                            path: path.to_string(),
                        })
                    }
                    Err(e) => return Err(io(&source)(e)),
                }
            } else {
                entry.metadata().map_err(io(&source))?
            };
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if ancestors.contains(&id) {
                    return Err(Error::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                let mut chain = ancestors.clone();
                chain.push(id);
                pending.push((source, Some(path), chain));
            } else if meta.is_file() {
                listing.files.push(FileEntry {
                    path,
                    source,
                    size: meta.len(),
                });
            } else {
                return Err(Error::SpecialFile {
                    path: path.to_string(),
                });
            }
        }
    }
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    listing.symlinks.sort();
    dedup_check(&listing)?;
    Ok(listing)
}

/// A directory still to read: where it is, its path in the manifest (`None` for the root), and the
/// (device, inode) of it and its ancestors.
type PendingDir = (PathBuf, Option<ManifestPath>, Vec<(u64, u64)>);

/// `ELOOP` on Linux and the BSDs' value differ; Linux is the platform this is built for.
const ELOOP: i32 = 40;

/// Paths are unique by construction; this guards the invariant the manifest relies on.
fn dedup_check(listing: &Listing) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for file in &listing.files {
        if !seen.insert(file.path.as_str()) {
            return Err(Error::InvalidPath {
                path: file.path.to_string(),
                reason: "listed twice",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(listing: &Listing) -> Vec<&str> {
        listing.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn lists_in_model_signing_order_and_skips_git() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("a")).unwrap();
        fs::create_dir_all(d.join(".git/objects")).unwrap();
        fs::create_dir_all(d.join("empty")).unwrap();
        for f in [
            "a/b",
            "a-b",
            "a.txt",
            ".git/objects/x",
            ".gitignore",
            ".gitignored",
        ] {
            fs::write(d.join(f), f).unwrap();
        }
        let listing = walk(d, &WalkOptions::default()).unwrap();
        assert_eq!(names(&listing), [".gitignored", "a/b", "a-b", "a.txt"]);
    }

    #[test]
    fn extra_ignores_cover_directories() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("cache/deep")).unwrap();
        fs::write(d.join("cache/deep/x"), "x").unwrap();
        fs::write(d.join("keep"), "k").unwrap();
        let mut ignore = IgnoreRules::git();
        ignore.add(ManifestPath::new("cache").unwrap());
        let listing = walk(
            d,
            &WalkOptions {
                ignore,
                follow_symlinks: false,
            },
        )
        .unwrap();
        assert_eq!(names(&listing), ["keep"]);
    }

    #[test]
    fn symlinks_are_listed_not_followed_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("f"), "f").unwrap();
        symlink("f", d.join("link")).unwrap();
        let listing = walk(d, &WalkOptions::default()).unwrap();
        assert_eq!(names(&listing), ["f"]);
        assert_eq!(listing.symlinks, [ManifestPath::new("link").unwrap()]);
        let follow = WalkOptions {
            follow_symlinks: true,
            ..WalkOptions::default()
        };
        assert_eq!(names(&walk(d, &follow).unwrap()), ["f", "link"]);
    }

    #[test]
    fn symlink_loops_and_broken_links_are_errors_when_followed() {
        let follow = WalkOptions {
            follow_symlinks: true,
            ..WalkOptions::default()
        };
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        symlink("..", dir.path().join("sub/up")).unwrap();
        let err = walk(dir.path(), &follow).unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");

        let dir = tempfile::tempdir().unwrap();
        symlink("self", dir.path().join("self")).unwrap();
        let err = walk(dir.path(), &follow).unwrap_err();
        assert!(matches!(err, Error::SymlinkLoop { .. }), "{err}");

        let dir = tempfile::tempdir().unwrap();
        symlink("nowhere", dir.path().join("dangling")).unwrap();
        let err = walk(dir.path(), &follow).unwrap_err();
        assert!(matches!(err, Error::BrokenSymlink { .. }), "{err}");
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), "f").unwrap();
        let err = walk(&dir.path().join("f"), &WalkOptions::default()).unwrap_err();
        assert!(matches!(err, Error::NotADirectory { .. }));
    }
}
