//! What can go wrong. [`Error::is_denial`] separates a refusal (exit 1) from an error (exit 2).

use std::path::PathBuf;

use crate::gate::GateReport;

/// Errors of the gate, the registry and export control.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The gate configuration is unusable.
    #[error("bad gate configuration `{path}`: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A name (model, version, principal, request id) is not acceptable.
    #[error("invalid {what} `{value}`: use 1 to 64 letters, digits, `.`, `_`, `-` or `@`, not starting with `.`")]
    Name { what: &'static str, value: String },
    /// A state file is corrupt.
    #[error("corrupt state file `{path}`: {reason}; restore it from a backup")]
    Corrupt { path: PathBuf, reason: String },
    /// The model did not pass the deployment gate.
    #[error("refused by the deployment gate: {}", .0.summary())]
    Refused(Box<GateReport>),
    /// An operation was denied by export control (no grant, bad approval, bad TOTP code, ...).
    #[error("denied: {0}")]
    Denied(String),
    /// Something that should exist does not.
    #[error("{0}")]
    NotFound(String),
    /// Something that must not exist yet does.
    #[error("{0}")]
    Exists(String),
    /// A registry upload is not a model directory this registry accepts (bad tar stream, links, paths, sizes).
    #[error("bad upload: {0}")]
    BadUpload(String),
    /// Sealing or unsealing failed.
    #[error(transparent)]
    Seal(#[from] rampart_seal::Error),
    /// The audit log failed: the action is not completed (fail closed).
    #[error("cannot record the action in the audit log: {0}")]
    Audit(#[from] rampart_log::Error),
    /// The operating system's random source failed.
    #[error("no randomness available: {0}")]
    Random(String),
}

impl Error {
    /// A refusal or denial (exit 1), rather than an error (exit 2).
    pub fn is_denial(&self) -> bool {
        matches!(self, Error::Refused(_) | Error::Denied(_))
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_owned();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
