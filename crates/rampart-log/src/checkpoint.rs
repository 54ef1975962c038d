//! C2SP tlog-checkpoint: the signed note `origin\nsize\nbase64(root)\n` that commits to the whole tree.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::note::{self, OpenError, SignerKey, VerifierKey};

/// A tree head: the log's origin, its size and its root hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// The log's identity, also the name of its key.
    pub origin: String,
    /// The number of entries.
    pub size: u64,
    /// The RFC 6962 root hash over those entries.
    #[serde(serialize_with = "crate::serialize_hash")]
    pub root: Hash,
}

impl Checkpoint {
    /// The note text.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Signs the checkpoint into a signed note.
    pub fn sign(&self, key: &SignerKey) -> Result<String> {
        key.sign(&self.body())
    }

    /// Parses a checkpoint's note text (after its signature was checked). Extension lines are ignored.
    pub fn parse(text: &str) -> Result<Checkpoint> {
        let bad = |why: &str| Error::malformed("checkpoint", why);
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no size line"))?;
        if size.is_empty()
            || (size.starts_with('0') && size != "0")
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad(
                "the size is not a decimal number without leading zeros",
            ));
        }
        let size: u64 = size.parse().map_err(|_| bad("the size is too large"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// Opens a signed checkpoint: checks the signature by `key` and that the origin is the key's name.
    pub fn open(signed: &str, key: &VerifierKey, path: &Path) -> Result<Checkpoint> {
        let text = note::open(signed, key).map_err(|e| match e {
            OpenError::Malformed(reason) => Error::Malformed {
                what: "checkpoint",
                reason,
            },
            OpenError::BadSignature => Error::BadSignature {
                path: path.to_owned(),
                key: key.name().to_owned(),
            },
        })?;
        let checkpoint = Checkpoint::parse(text)?;
        if checkpoint.origin != key.name() {
            return Err(Error::malformed(
                "checkpoint",
                format!(
                    "origin `{}` is not the key's name `{}`",
                    checkpoint.origin,
                    key.name()
                ),
            ));
        }
        Ok(checkpoint)
    }
}
