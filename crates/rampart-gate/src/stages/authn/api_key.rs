//! API keys: `Authorization: Bearer rk_<id>_<secret>` or `X-API-Key: rk_<id>_<secret>`.
//!
//! The store keeps only keyed hashes (SHA-256 over a per-store secret and the key), found by the key's public id and
//! compared in constant time. The file is written to a temporary file and renamed, mode 0600.

use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{bearer, Authenticator, AuthnError, Credentials, Principal};

/// One stored key (its hash only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredKey {
    /// The public id (the part after `rk_`).
    pub id: String,
    /// The principal the key authenticates as.
    pub principal: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Hex SHA-256 of the store secret and the whole key.
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    secret: String,
    keys: Vec<StoredKey>,
}

/// Why the key store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// Reading or writing failed.
    #[error("key store `{path}`: {source}")]
    Io {
        /// The store.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a key store.
    #[error("key store `{path}` is malformed: {reason}; restore it from a backup or move it away to start afresh")]
    Malformed {
        /// The store.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The API key store. `Debug` shows neither the secret nor the hashes.
#[derive(Clone)]
pub struct KeyStore {
    path: PathBuf,
    file: StoreFile,
    secret: Vec<u8>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("keys", &self.file.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the store at `path`, creating an empty one if there is none.
    pub fn open(path: &Path) -> Result<KeyStore, KeyStoreError> {
        let io = |source| KeyStoreError::Io {
            path: path.to_owned(),
            source,
        };
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<StoreFile>(&bytes).map_err(|err| {
                KeyStoreError::Malformed {
                    path: path.to_owned(),
                    reason: err.to_string(),
                }
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut secret);
                let store = StoreFile {
                    version: 1,
                    secret: hex::encode(secret),
                    keys: Vec::new(),
                };
                write_private(path, &store).map_err(io)?;
                store
            }
            Err(err) => return Err(io(err)),
        };
        let secret = hex::decode(&file.secret).map_err(|_| KeyStoreError::Malformed {
            path: path.to_owned(),
            reason: "the secret is not hex".into(),
        })?;
        Ok(KeyStore {
            path: path.to_owned(),
            file,
            secret,
        })
    }

    /// The stored keys.
    pub fn keys(&self) -> &[StoredKey] {
        &self.file.keys
    }

    fn hash(&self, key: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"rampart api key v1\0");
        hasher.update(&self.secret);
        hasher.update(key.as_bytes());
        hasher.finalize().into()
    }

    /// Creates a key for `principal` with `roles`, saves the store and returns the key (shown once, never stored).
    pub fn add(&mut self, principal: &str, roles: &[String]) -> Result<String, KeyStoreError> {
        let mut id = [0u8; 6];
        let mut secret = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex::encode(id);
        let key = format!("rk_{id}_{}", hex::encode(secret));
        self.file.keys.push(StoredKey {
            id,
            principal: principal.to_owned(),
            roles: roles.to_vec(),
            hash: hex::encode(self.hash(&key)),
        });
        write_private(&self.path, &self.file).map_err(|source| KeyStoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        Ok(key)
    }

    /// The principal of a presented key, if it is valid.
    pub fn verify(&self, key: &str) -> Option<&StoredKey> {
        let id = key.strip_prefix("rk_")?.split('_').next()?;
        let stored = self.file.keys.iter().find(|k| k.id == id)?;
        let expected = hex::decode(&stored.hash).ok()?;
        let actual = self.hash(key);
        bool::from(actual.as_slice().ct_eq(expected.as_slice())).then_some(stored)
    }
}

fn write_private(path: &Path, store: &StoreFile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(store).map_err(std::io::Error::other)?;
    write_file_private(&tmp, &bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes a file readable by its owner only.
pub(crate) fn write_file_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Authenticates API keys against a store.
#[derive(Debug)]
pub struct ApiKeys {
    store: KeyStore,
}

impl ApiKeys {
    /// Uses `store`.
    pub fn new(store: KeyStore) -> ApiKeys {
        ApiKeys { store }
    }
}

impl Authenticator for ApiKeys {
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Option<Principal>, AuthnError> {
        let presented = credentials
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| bearer(credentials.headers).filter(|t| t.starts_with("rk_")));
        let Some(key) = presented else {
            return Ok(None);
        };
        match self.store.verify(key) {
            Some(stored) => Ok(Some(Principal {
                id: stored.principal.clone(),
                roles: stored.roles.clone(),
                method: "api_key",
            })),
            None => Err(AuthnError("unknown or revoked API key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_and_a_tampered_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut store = KeyStore::open(&path).unwrap();
        let key = store.add("alice", &["infer".into()]).unwrap();
        let store = KeyStore::open(&path).unwrap();
        assert_eq!(store.verify(&key).unwrap().principal, "alice");
        let mut tampered = key.clone();
        tampered.pop();
        tampered.push('x');
        assert!(store.verify(&tampered).is_none());
        assert!(store.verify("rk_").is_none());
        assert!(!std::fs::read_to_string(&path).unwrap().contains(&key));
    }
}
