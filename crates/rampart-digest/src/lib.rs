//! `rampart-digest`: hash every file under a directory, in parallel, the way OpenSSF `model_signing` does.
//!
//! - [`hash_dir`] walks a directory, applies the ignore rules ([`IgnoreRules`], `.git`, `.gitattributes`, `.github`
//!   and `.gitignore` by default), refuses symlinks unless allowed, and hashes each file with SHA-256 (default) or
//!   BLAKE3, one file per core, streaming with large reads.
//! - The result is a [`Manifest`]: `(path, digest)` pairs in model_signing's order (by path component, so
//!   `a/b` < `a-b` < `a.txt`), with [`Manifest::root_digest`] and [`Manifest::diff`].
//! - [`walk`] and [`hash_listing`] are the two halves, for callers that need to inspect the listing first
//!   (a verifier reports symlinks as findings instead of failing on them).
//! - A progress bar is drawn on stderr when [`Options::progress`] is set, stderr is a terminal and the work is large.
//!
//! Other crates (scan, deployment gate, audit log) use this crate to hash files and directories.

mod algorithm;
mod error;
mod hash;
mod manifest;
mod path;
mod walk;

pub use algorithm::{hash_file, hash_reader, Digest, HashAlgorithm};
pub use error::Error;
pub use hash::hash_listing;
pub use manifest::{Change, Manifest, ManifestDiff};
pub use path::ManifestPath;
pub use walk::{walk, FileEntry, IgnoreRules, Listing, WalkOptions};

use std::path::Path;

/// How to hash a directory.
#[derive(Debug, Clone)]
pub struct Options {
    /// The hash of each file.
    pub algorithm: HashAlgorithm,
    /// Which paths to skip.
    pub ignore: IgnoreRules,
    /// Follow symlinks (hashing their targets) instead of refusing them.
    pub allow_symlinks: bool,
    /// Draw a progress bar on stderr when it is a terminal and the work is large.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            algorithm: HashAlgorithm::Sha256,
            ignore: IgnoreRules::default(),
            allow_symlinks: false,
            progress: false,
        }
    }
}

/// Hashes every file under `root` (see the crate documentation). A symlink is an error unless
/// [`Options::allow_symlinks`] is set.
pub fn hash_dir(root: &Path, options: &Options) -> Result<Manifest, Error> {
    let listing = walk(
        root,
        &WalkOptions {
            ignore: options.ignore.clone(),
            follow_symlinks: options.allow_symlinks,
        },
    )?;
    if let Some(link) = listing.symlinks.first() {
        return Err(Error::Symlink {
            path: link.to_string(),
        });
    }
    hash_listing(&listing, options.algorithm, options.progress)
}
