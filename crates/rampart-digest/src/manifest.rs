//! Manifests: `(path, digest)` pairs in model_signing's order, their root digest and their differences.

use std::collections::BTreeMap;

use sha2::Digest as _;

use crate::{Digest, Error, HashAlgorithm, ManifestPath};

/// The digest of every file of a directory, ordered by path component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    algorithm: HashAlgorithm,
    entries: BTreeMap<ManifestPath, Digest>,
}

/// One file whose digest differs between two manifests.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// The file.
    pub path: ManifestPath,
    /// Its digest in the older manifest.
    pub old: Digest,
    /// Its digest in the newer one.
    pub new: Digest,
}

/// What changed from one manifest to another.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ManifestDiff {
    /// Files only in the newer manifest.
    pub added: Vec<ManifestPath>,
    /// Files only in the older manifest.
    pub removed: Vec<ManifestPath>,
    /// Files in both whose content differs.
    pub changed: Vec<Change>,
}

impl ManifestDiff {
    /// Whether the two manifests list the same files with the same content.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl Manifest {
    /// An empty manifest.
    pub fn new(algorithm: HashAlgorithm) -> Self {
        Self {
            algorithm,
            entries: BTreeMap::new(),
        }
    }

    /// Adds or replaces one entry; returns the digest it replaced.
    pub fn insert(&mut self, path: ManifestPath, digest: Digest) -> Option<Digest> {
        self.entries.insert(path, digest)
    }

    /// The algorithm of every digest.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// The digest of one file.
    pub fn get(&self, path: &ManifestPath) -> Option<&Digest> {
        self.entries.get(path)
    }

    /// The entries in model_signing's order.
    pub fn iter(&self) -> impl Iterator<Item = (&ManifestPath, &Digest)> {
        self.entries.iter()
    }

    /// The number of files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// SHA-256 over the raw digests in order: the in-toto subject digest of a model_signing v1.0 signature.
    pub fn root_digest(&self) -> Digest {
        let mut hasher = sha2::Sha256::new();
        for digest in self.entries.values() {
            hasher.update(digest.0);
        }
        Digest(hasher.finalize().into())
    }

    /// What changed from `self` (older) to `newer`. Both must use the same algorithm.
    pub fn diff(&self, newer: &Manifest) -> Result<ManifestDiff, Error> {
        if self.algorithm != newer.algorithm {
            return Err(Error::AlgorithmMismatch {
                old: self.algorithm.name(),
                new: newer.algorithm.name(),
            });
        }
        let mut diff = ManifestDiff::default();
        for (path, old) in &self.entries {
            match newer.entries.get(path) {
                None => diff.removed.push(path.clone()),
                Some(new) if new != old => diff.changed.push(Change {
                    path: path.clone(),
                    old: *old,
                    new: *new,
                }),
                Some(_) => {}
            }
        }
        diff.added = newer
            .entries
            .keys()
            .filter(|path| !self.entries.contains_key(*path))
            .cloned()
            .collect();
        Ok(diff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(entries: &[(&str, u8)]) -> Manifest {
        let mut m = Manifest::new(HashAlgorithm::Sha256);
        for (path, byte) in entries {
            m.insert(ManifestPath::new(path).unwrap(), Digest([*byte; 32]));
        }
        m
    }

    #[test]
    fn diff_names_added_removed_changed() {
        let old = manifest(&[("a", 1), ("b", 2), ("c", 3)]);
        let new = manifest(&[("a", 1), ("b", 9), ("d", 4)]);
        let diff = old.diff(&new).unwrap();
        assert_eq!(diff.added, [ManifestPath::new("d").unwrap()]);
        assert_eq!(diff.removed, [ManifestPath::new("c").unwrap()]);
        assert_eq!(diff.changed.len(), 1);
        assert!(old.diff(&old).unwrap().is_empty());
    }

    #[test]
    fn diff_refuses_mixed_algorithms() {
        let old = manifest(&[("a", 1)]);
        let new = Manifest::new(HashAlgorithm::Blake3);
        assert!(old.diff(&new).is_err());
    }

    #[test]
    fn root_digest_matches_model_signing() {
        // From a model_signing 1.1.1 signature of {a/b: "x\n", a-b: "y\n", a.txt: "hi\n"}.
        let mut m = Manifest::new(HashAlgorithm::Sha256);
        for (path, hex) in [
            (
                "a.txt",
                "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4",
            ),
            (
                "a-b",
                "3bb2abb69ebb27fbfe63c7639624c6ec5e331b841a5bc8c3ebc10b9285e90877",
            ),
            (
                "a/b",
                "73cb3858a687a8494ca3323053016282f3dad39d42cf62ca4e79dda2aac7d9ac",
            ),
        ] {
            m.insert(
                ManifestPath::new(path).unwrap(),
                Digest::from_hex(hex).unwrap(),
            );
        }
        assert_eq!(
            m.root_digest().to_hex(),
            "ba418469e620b3aa16d853b9b64b1467940563aa9aaca0590b29d27c7fa2a573"
        );
    }
}
