//! `rampart-sign`: signatures in the OpenSSF model-signing v1.0 format, exactly as `model_signing` 1.1.x writes
//! them with its `key` method, so that either tool verifies what the other signed.
//!
//! - [`key`]: ECDSA P-256, P-384 and P-521 keys in PEM (SEC1 and PKCS#8 private keys, SubjectPublicKeyInfo public
//!   keys), and the key hint model_signing writes.
//! - [`bundle`]: the Sigstore bundle v0.3 JSON around a DSSE envelope; signatures over the DSSE PAE.
//! - [`statement`]: the in-toto Statement v1 with the `https://model_signing/signature/v1.0` predicate.
//! - [`verify`]: checking a directory against a verified manifest, naming every changed, missing and extra file.
//!
//! [`sign_dir`] and [`verify_bundle`] tie them together. Nothing in a bundle is trusted before its signature is
//! checked over the exact payload bytes; the payload is never re-serialised.

pub mod bundle;
mod error;
pub mod key;
pub mod statement;
pub mod verify;

use std::path::Path;

pub use bundle::Bundle;
pub use error::Error;
pub use key::{Curve, SigningKey, VerifyingKey};
pub use rampart_digest;
pub use statement::{read_statement, write_statement, Serialization, SignedManifest};
pub use verify::{check_dir, CheckOptions, Finding, Verdict};

use rampart_digest::{HashAlgorithm, IgnoreRules};

/// How to sign a directory.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// The hash of each file.
    pub algorithm: HashAlgorithm,
    /// Paths to skip (recorded in the signature, so that verification skips them too).
    pub ignore: IgnoreRules,
    /// Follow symlinks instead of refusing them.
    pub allow_symlinks: bool,
    /// Draw a progress bar when stderr is a terminal and the work is large.
    pub progress: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        Self {
            algorithm: HashAlgorithm::Sha256,
            ignore: IgnoreRules::git(),
            allow_symlinks: false,
            progress: false,
        }
    }
}

/// Hashes `root` and signs its manifest. An empty directory is an error: a signature over nothing proves nothing.
pub fn sign_dir(
    root: &Path,
    key: &SigningKey,
    options: &SignOptions,
) -> Result<(SignedManifest, Bundle), Error> {
    let manifest = rampart_digest::hash_dir(
        root,
        &rampart_digest::Options {
            algorithm: options.algorithm,
            ignore: options.ignore.clone(),
            allow_symlinks: options.allow_symlinks,
            progress: options.progress,
        },
    )?;
    if manifest.is_empty() {
        return Err(Error::NothingToSign {
            path: root.display().to_string(),
        });
    }
    let signed = SignedManifest {
        model_name: model_name(root),
        serialization: Serialization {
            hash: options.algorithm,
            allow_symlinks: options.allow_symlinks,
            ignore_paths: options.ignore.paths(),
        },
        manifest,
    };
    let bundle = Bundle::sign(write_statement(&signed)?, key)?;
    Ok((signed, bundle))
}

/// Checks the bundle's key hint and signature with `key`, then reads the verified payload.
pub fn verify_bundle(bundle: &Bundle, key: &VerifyingKey) -> Result<SignedManifest, Error> {
    read_statement(bundle.verify(key)?)
}

/// The directory's base name, as model_signing records it (`.` resolves to the real name).
pub fn model_name(root: &Path) -> String {
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    name(root)
        .filter(|n| n != "..")
        .or_else(|| root.canonicalize().ok().and_then(|p| name(&p)))
        .unwrap_or_default()
}
