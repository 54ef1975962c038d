//! The one error type of the log.

use std::path::PathBuf;

/// What can go wrong while writing, reading or verifying a log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the log could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done: "read", "write", "sync", ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A signed note or a key is not in the C2SP signed-note format.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// "note", "checkpoint", "verifier key", ...
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// No signature by the trusted key verified.
    #[error("checkpoint `{}` is not signed by the trusted key `{key}`; the log was rewritten or the key is wrong", path.display())]
    BadSignature {
        /// The checkpoint file.
        path: PathBuf,
        /// The trusted key's name.
        key: String,
    },
    /// The stored log does not match its own checkpoint or tiles.
    #[error("log `{}` is corrupt at entry {index}: {reason}; run `rampart audit verify` and restore from a backup", dir.display())]
    Corrupt {
        /// The log directory.
        dir: PathBuf,
        /// The first entry that does not check out.
        index: u64,
        /// What is wrong.
        reason: String,
    },
    /// A log directory already holds a log.
    #[error("`{}` already holds a log; open it instead", dir.display())]
    Exists {
        /// The log directory.
        dir: PathBuf,
    },
    /// A log directory holds no log.
    #[error("`{}` holds no log (no checkpoint); create one with `rampart audit init`", dir.display())]
    NotALog {
        /// The log directory.
        dir: PathBuf,
    },
    /// Another process has the log open for writing.
    #[error("log `{}` is open for writing by another process", dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// An entry is larger than a tlog-tiles entry bundle allows.
    #[error("entry of {len} bytes is larger than the limit of 65535 bytes")]
    EntryTooLarge {
        /// The entry's size.
        len: usize,
    },
    /// An index or size outside the tree.
    #[error("{what} {value} is outside the log of {size} entries")]
    OutOfRange {
        /// "index", "tree size", ...
        what: &'static str,
        /// The value asked for.
        value: u64,
        /// The log's checkpointed size.
        size: u64,
    },
    /// A proof did not verify.
    #[error("{0}")]
    Proof(String),
    /// The log stopped accepting appends after a write failure (fail closed).
    #[error("the log stopped after a write failure: {0}")]
    Failed(String),
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// A record could not be encoded as JSON.
    #[error("cannot encode the record as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The system's random number generator failed.
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Error {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
