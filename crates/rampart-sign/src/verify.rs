//! Checking a directory against a verified manifest: changed, missing and extra files, and symlinks, each named.

use std::path::Path;

use rampart_digest::{
    hash_listing, walk, Digest, IgnoreRules, Manifest, ManifestPath, WalkOptions,
};

use crate::{Error, SignedManifest};

/// How to check a directory.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Files the signature does not list are not findings (model_signing's `--ignore_unsigned_files`).
    pub ignore_unsigned_files: bool,
    /// Skip `.git`, `.gitattributes`, `.github` and `.gitignore` (on by default, as in model_signing).
    pub ignore_git_paths: bool,
    /// More paths to skip (the signature file itself when it lies inside the directory).
    pub ignore_paths: Vec<ManifestPath>,
    /// Draw a progress bar when stderr is a terminal and the work is large.
    pub progress: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            ignore_unsigned_files: false,
            ignore_git_paths: true,
            ignore_paths: Vec::new(),
            progress: false,
        }
    }
}

/// One way a directory differs from its signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The file's content changed.
    Changed {
        path: ManifestPath,
        expected: Digest,
        actual: Digest,
    },
    /// A signed file is gone (deleted or renamed).
    Missing { path: ManifestPath },
    /// A file the signature does not list.
    Extra { path: ManifestPath },
    /// A symlink, and the signature does not allow symlinks.
    Symlink { path: ManifestPath },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Changed {
                path,
                expected,
                actual,
            } => write!(f, "changed: `{path}` (signed {expected}, now {actual})"),
            Self::Missing { path } => write!(f, "missing: `{path}` is signed but not present"),
            Self::Extra { path } => write!(f, "extra: `{path}` is not in the signature"),
            Self::Symlink { path } => write!(
                f,
                "symlink: `{path}` (the signature does not allow symlinks)"
            ),
        }
    }
}

/// The result of checking a directory: empty `findings` means it matches its signature.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Every difference, symlinks first, then in path order.
    pub findings: Vec<Finding>,
    /// What the directory holds now.
    pub actual: Manifest,
}

/// Hashes `root` the way `signed` says it was hashed and compares. The signed ignore paths are honoured, the
/// hash algorithm and symlink policy are the signed ones.
pub fn check_dir(
    root: &Path,
    signed: &SignedManifest,
    options: &CheckOptions,
) -> Result<Verdict, Error> {
    let mut ignore = if options.ignore_git_paths {
        IgnoreRules::git()
    } else {
        IgnoreRules::none()
    };
    for path in signed
        .serialization
        .ignore_paths
        .iter()
        .chain(&options.ignore_paths)
    {
        ignore.add(path.clone());
    }
    let mut listing = walk(
        root,
        &WalkOptions {
            ignore,
            follow_symlinks: signed.serialization.allow_symlinks,
        },
    )?;
    if options.ignore_unsigned_files {
        listing
            .files
            .retain(|f| signed.manifest.get(&f.path).is_some());
        listing
            .symlinks
            .retain(|p| signed.manifest.get(p).is_some());
    }
    let mut findings: Vec<Finding> = listing
        .symlinks
        .iter()
        .map(|path| Finding::Symlink { path: path.clone() })
        .collect();
    let actual = hash_listing(&listing, signed.serialization.hash, options.progress)?;
    let diff = signed.manifest.diff(&actual)?;
    for change in diff.changed {
        findings.push(Finding::Changed {
            path: change.path,
            expected: change.old,
            actual: change.new,
        });
    }
    for path in diff.removed {
        // A symlink in place of a signed file is reported once, as a symlink.
        if !listing.symlinks.contains(&path) {
            findings.push(Finding::Missing { path });
        }
    }
    for path in diff.added {
        findings.push(Finding::Extra { path });
    }
    Ok(Verdict { findings, actual })
}
