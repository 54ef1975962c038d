//! The one error type of this crate.

/// What can go wrong while reading keys, signing, or verifying a signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key file is not a PEM key this crate can use.
    #[error("{0}")]
    Key(String),
    /// The signature file is not a model-signing bundle this crate can read.
    #[error("malformed signature file: {0}")]
    Malformed(String),
    /// The bundle was made with a method other than a plain key (certificate or Sigstore keyless).
    #[error("the signature uses {0}; only signatures made with a key (`model_signing sign key`) are supported")]
    UnsupportedMethod(&'static str),
    /// The signed statement uses a serialization or algorithm this crate does not support.
    #[error("unsupported signature content: {0}")]
    Unsupported(String),
    /// The bundle names a different public key than the one given.
    #[error("key mismatch: the signature was made with another key (its key hint is `{hint}`, this public key's is `{actual}`)")]
    KeyMismatch { hint: String, actual: String },
    /// The signature does not verify over the payload: the payload or the signature was altered, or the key is wrong.
    #[error("invalid signature: the signed payload was altered or was not signed by this key")]
    BadSignature,
    /// The signed statement is internally inconsistent (its root digest does not match its resources).
    #[error("inconsistent manifest: {0}")]
    Inconsistent(String),
    /// Nothing to sign: the directory is empty or every file in it is ignored.
    #[error("`{path}` holds no file to sign (it is empty, or every file in it is ignored)")]
    NothingToSign { path: String },
    /// Hashing the directory failed.
    #[error(transparent)]
    Digest(#[from] rampart_digest::Error),
}

impl Error {
    /// Whether this error means the signature was checked and rejected (exit 1), as opposed to input that could
    /// not be read or used (exit 2).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::KeyMismatch { .. } | Self::BadSignature | Self::Inconsistent(_)
        )
    }
}
