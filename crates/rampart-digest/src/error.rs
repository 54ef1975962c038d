//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong while walking or hashing. Paths are shown as given or relative to the hashed directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file or a directory failed.
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path to hash is not a directory.
    #[error("`{path}` is not a directory")]
    NotADirectory { path: PathBuf },
    /// A symlink was found and symlinks are not allowed.
    #[error("`{path}` is a symlink; symlinks are refused unless allowed")]
    Symlink { path: String },
    /// Following symlinks leads back into a directory being walked.
    #[error("`{path}` is a symlink loop")]
    SymlinkLoop { path: String },
    /// A symlink points to nothing.
    #[error("`{path}` is a broken symlink")]
    BrokenSymlink { path: String },
    /// A socket, pipe or device: not a file that can be signed.
    #[error("`{path}` is neither a file nor a directory (socket, pipe or device)")]
    SpecialFile { path: String },
    /// A file name that is not UTF-8 cannot be written in a manifest.
    #[error("`{path}` has a name that is not UTF-8; rename it")]
    NonUtf8Path { path: PathBuf },
    /// A manifest path that is empty, absolute or escapes the directory.
    #[error("invalid path `{path}`: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// An algorithm name this crate does not know.
    #[error("unsupported hash algorithm `{name}` (supported: sha256, blake3)")]
    UnknownAlgorithm { name: String },
    /// Two manifests hashed with different algorithms cannot be compared file by file.
    #[error("cannot compare a `{old}` manifest with a `{new}` manifest")]
    AlgorithmMismatch {
        old: &'static str,
        new: &'static str,
    },
}
