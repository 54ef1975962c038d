//! The one error type of sealing and unsealing.

use std::path::PathBuf;

/// What can go wrong while sealing or unsealing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No recipient was given.
    #[error("no recipient: give at least one `-r age1…` or use a passphrase")]
    NoRecipients,
    /// A recipient could not be parsed.
    #[error("`{0}` is not an age recipient (expected `age1…`)")]
    BadRecipient(String),
    /// An identity file holds nothing usable.
    #[error("no usable identity in `{}`: {reason}", path.display())]
    BadIdentity {
        /// The identity file (or the variable's name).
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An identity file can be read by others.
    #[error("identity file `{}` can be read by others (mode {mode:o}); run `chmod 600` on it", path.display())]
    IdentityPermissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// Encryption could not start.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// The input is not something sealable.
    #[error("`{}` is neither a regular file nor a directory", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
    },
    /// A directory holds a symlink or special file, which is not sealed (fail closed).
    #[error("`{}` is a symlink or special file; only regular files and directories are sealed", path.display())]
    SpecialFile {
        /// The path.
        path: PathBuf,
    },
    /// The destination exists.
    #[error("`{}` already exists; choose another output or remove it", path.display())]
    OutputExists {
        /// The path.
        path: PathBuf,
    },
    /// The file is not an age file.
    #[error("`{}` is not an age-encrypted file: {reason}", path.display())]
    NotAge {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        reason: String,
    },
    /// No identity matched.
    #[error("none of the identities opens `{}`; check the identity file (`-i`)", path.display())]
    NoMatchingKey {
        /// The file.
        path: PathBuf,
    },
    /// The passphrase is wrong.
    #[error("wrong passphrase for `{}`", path.display())]
    WrongPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// A passphrase-sealed file needs a passphrase.
    #[error("`{}` is sealed with a passphrase; use `-p` (or set RAMPART_PASSPHRASE)", path.display())]
    NeedPassphrase {
        /// The file.
        path: PathBuf,
    },
    /// A recipient-sealed file needs an identity.
    #[error("`{}` is sealed to recipients; give an identity with `-i FILE` (or RAMPART_AGE_IDENTITY)", path.display())]
    NoIdentity {
        /// The file.
        path: PathBuf,
    },
    /// The ciphertext is truncated or was modified.
    #[error("`{}` is truncated or was tampered with: {reason}; nothing was written", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The reason.
        reason: String,
    },
    /// The sealed directory's archive is unsafe or malformed.
    #[error("sealed archive in `{}` is unsafe or malformed: {reason}", path.display())]
    BadArchive {
        /// The sealed file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plaintext is larger than the caller allows in memory.
    #[error("`{}` holds more than {limit} bytes of plaintext", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
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

    pub(crate) fn from_decrypt(e: age::DecryptError, path: &std::path::Path) -> Error {
        let path = path.to_owned();
        match e {
            age::DecryptError::NoMatchingKeys => Error::NoMatchingKey { path },
            age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
                Error::WrongPassphrase { path }
            }
            age::DecryptError::Io(e) => Error::from_stream(e, &path),
            other => Error::NotAge {
                path,
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn from_stream(e: std::io::Error, path: &std::path::Path) -> Error {
        match e.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => Error::Damaged {
                path: path.to_owned(),
                reason: e.to_string(),
            },
            _ => Error::Io {
                action: "read",
                path: path.to_owned(),
                source: e,
            },
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
