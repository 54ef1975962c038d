//! API keys: `rmp_<id>_<secret>`, stored only as keyed hashes, compared in constant time.
//!
//! The state directory holds two files:
//! - `api-keys.json` (mode 0600, always replaced atomically): per key its id, principal, roles, creation time, revoked
//!   flag and `hmac-sha256:<hex>`, the HMAC-SHA256 of the key under the server secret. The key itself is never stored.
//! - `api-key-secret` (mode 0600, 32 random bytes in hex): the server secret. Without it no stored key can be checked;
//!   losing it revokes every key, leaking it lets an attacker who also has the key store guess keys offline (they are
//!   still 256-bit random, so this is a defence in depth, not the only barrier).
//!
//! A key is looked up by its id; the secret part is compared with `subtle`, and the same work is done whether the id
//! exists, the key was revoked or the secret is wrong, so timing tells nothing about which one failed.

use std::collections::HashMap;
use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

use crate::files::{self, FileStamp};
use crate::principal::{valid_name, Principal, Source};

/// The key store's file name inside the state directory.
pub const KEY_STORE_FILE: &str = "api-keys.json";
/// The server secret's file name inside the state directory.
pub const SERVER_SECRET_FILE: &str = "api-key-secret";
const LOCK_FILE: &str = "api-keys.lock";
const KEY_PREFIX: &str = "rmp_";
const ID_HEX_LEN: usize = 12;
const SECRET_HEX_LEN: usize = 64;
/// Exactly `rmp_` + 12 + `_` + 64.
const KEY_LEN: usize = KEY_PREFIX.len() + ID_HEX_LEN + 1 + SECRET_HEX_LEN;
const HASH_PREFIX: &str = "hmac-sha256:";
const STORE_VERSION: u32 = 1;
const MAX_STORE_BYTES: u64 = 16 << 20;
const MAX_KEYS: usize = 100_000;
const MAX_ROLES: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was attempted (`read`, `write`, `lock`, `create`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key store file is not valid.
    #[error("key store `{path}` is malformed: {reason}; restore it from a backup, or move it away and issue new keys")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The server secret is missing or unusable.
    #[error("server secret `{path}` {reason}; without it no API key can be checked (issue new keys if it is lost)")]
    Secret {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A principal or role name is not acceptable.
    #[error("invalid {what} `{value}`: use 1 to 256 printable ASCII characters without spaces, quotes or backslashes")]
    InvalidName {
        /// `principal` or `role`.
        what: &'static str,
        /// The name given.
        value: String,
    },
    /// Too many roles on one key.
    #[error("too many roles ({count}); at most {MAX_ROLES} per key")]
    TooManyRoles {
        /// How many were given.
        count: usize,
    },
    /// No key has this id.
    #[error("no API key with id `{id}`; `rampart keys list` shows the ids")]
    UnknownKey {
        /// The id given.
        id: String,
    },
}

/// What `rampart keys list` shows about a key: everything but its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id (the part after `rmp_`), not secret.
    pub id: String,
    /// The principal the key authenticates as.
    pub principal: String,
    /// The principal's roles.
    pub roles: Vec<String>,
    /// When it was created (RFC 3339, UTC).
    pub created: String,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was revoked (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A key just created: the only moment its full text exists. `Debug` does not show it.
pub struct NewKey {
    /// The full key, `rmp_<id>_<secret>`: hand it to the client once.
    pub key: String,
    /// What the store records about it.
    pub info: KeyInfo,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// What `revoke` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The key was active and is now revoked.
    Now,
    /// The key had been revoked before; nothing changed.
    Already,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRecord {
    id: String,
    principal: String,
    roles: Vec<String>,
    created: String,
    revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
    hash: String,
}

impl KeyRecord {
    fn info(&self) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            principal: self.principal.clone(),
            roles: self.roles.clone(),
            created: self.created.clone(),
            revoked: self.revoked,
            revoked_at: self.revoked_at.clone(),
        }
    }
}

/// One key ready for verification.
#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    revoked: bool,
    principal: Principal,
}

/// The loaded state: replaced as a whole on reload.
#[derive(Debug, Default)]
struct Snapshot {
    stamp: Option<FileStamp>,
    records: Vec<KeyRecord>,
    by_id: HashMap<String, Entry>,
    secret: Option<ServerSecret>,
}

#[derive(Clone)]
struct ServerSecret(HmacSha256);

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

impl ServerSecret {
    fn hash(&self, id: &str, secret: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(b"rampart api key v1\0");
        mac.update(id.as_bytes());
        mac.update(b"\0");
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The API key store of one state directory.
///
/// Cheap to share (`Arc<ApiKeyStore>`); [`verify`](Self::verify) takes a read lock only. Call
/// [`reload_if_changed`](Self::reload_if_changed) periodically (it costs one `stat`) to pick up keys added or revoked
/// by `rampart keys` in another process.
#[derive(Debug)]
pub struct ApiKeyStore {
    dir: PathBuf,
    state: RwLock<Arc<Snapshot>>,
}

impl ApiKeyStore {
    /// Open the store in `state_dir`. A missing directory or key file is an empty store; nothing is created until a
    /// key is added.
    ///
    /// A store holding keys but no server secret is an error: no key could ever verify.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Self, KeyStoreError> {
        let store = Self::open_admin(state_dir)?;
        let snapshot = store.snapshot();
        if snapshot.secret.is_none() && !snapshot.records.is_empty() {
            return Err(KeyStoreError::Secret {
                path: store.dir.join(SERVER_SECRET_FILE),
                reason: "is missing".to_string(),
            });
        }
        Ok(store)
    }

    /// Open the store for listing and revoking only: the server secret is not needed (nor checked) unless a key is
    /// added.
    pub fn open_admin(state_dir: impl Into<PathBuf>) -> Result<Self, KeyStoreError> {
        let dir = state_dir.into();
        let snapshot = load(&dir)?;
        Ok(Self {
            dir,
            state: RwLock::new(Arc::new(snapshot)),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The principal a presented key authenticates, or `None` (malformed, unknown, revoked or wrong key: the caller
    /// answers all of them with the same 401).
    pub fn verify(&self, presented: &str) -> Option<Principal> {
        let snapshot = self.snapshot();
        let secret = snapshot.secret.as_ref()?;
        let (id, key_secret) = parse_key(presented)?;
        let computed = secret.hash(id, key_secret);
        match snapshot.by_id.get(id) {
            Some(entry) => {
                let ok = computed.as_slice().ct_eq(entry.hash.as_slice())
                    & Choice::from(u8::from(!entry.revoked));
                bool::from(ok).then(|| entry.principal.clone())
            }
            None => {
                // Same work as a known id, so an unknown id is not faster to refuse.
                let _ = computed.as_slice().ct_eq([0u8; 32].as_slice());
                None
            }
        }
    }

    /// Reload the key file if it changed since the last load (one `stat` when it did not). Returns whether it
    /// reloaded. On error the keys loaded before stay in force.
    pub fn reload_if_changed(&self) -> Result<bool, KeyStoreError> {
        let path = self.dir.join(KEY_STORE_FILE);
        let stamp = FileStamp::of(&path).map_err(|source| KeyStoreError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        if stamp == self.snapshot().stamp {
            return Ok(false);
        }
        let fresh = load(&self.dir)?;
        if fresh.secret.is_none() && !fresh.records.is_empty() {
            return Err(KeyStoreError::Secret {
                path: self.dir.join(SERVER_SECRET_FILE),
                reason: "is missing".to_string(),
            });
        }
        self.replace(fresh);
        tracing::info!(path = %path.display(), "reloaded API keys");
        Ok(true)
    }

    /// Every key, active and revoked, in creation order.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.snapshot()
            .records
            .iter()
            .map(KeyRecord::info)
            .collect()
    }

    /// Create a key for `principal` with `roles`, creating the state directory and server secret if needed.
    pub fn add(&self, principal: &str, roles: &[String]) -> Result<NewKey, KeyStoreError> {
        check_name("principal", principal)?;
        if roles.len() > MAX_ROLES {
            return Err(KeyStoreError::TooManyRoles { count: roles.len() });
        }
        for role in roles {
            check_name("role", role)?;
        }
        let mut roles = roles.to_vec();
        roles.sort_unstable();
        roles.dedup();
        files::ensure_private_dir(&self.dir).map_err(|source| KeyStoreError::Io {
            action: "create",
            path: self.dir.clone(),
            source,
        })?;
        let _lock = self.lock()?;
        let mut snapshot = load(&self.dir)?;
        if snapshot.secret.is_none() && !snapshot.records.is_empty() {
            // A new secret would silently invalidate every existing key.
            return Err(KeyStoreError::Secret {
                path: self.dir.join(SERVER_SECRET_FILE),
                reason: "is missing while keys exist".to_string(),
            });
        }
        let secret = ensure_server_secret(&self.dir)?;
        let id = loop {
            let candidate = hex::encode(random::<{ ID_HEX_LEN / 2 }>()?);
            if !snapshot.by_id.contains_key(&candidate) {
                break candidate;
            }
        };
        let key_secret = hex::encode(random::<{ SECRET_HEX_LEN / 2 }>()?);
        let hash = secret.hash(&id, &key_secret);
        let record = KeyRecord {
            id: id.clone(),
            principal: principal.to_string(),
            roles,
            created: now_rfc3339(),
            revoked: false,
            revoked_at: None,
            hash: format!("{HASH_PREFIX}{}", hex::encode(hash)),
        };
        let info = record.info();
        snapshot.records.push(record);
        self.save(&snapshot.records)?;
        self.replace(load(&self.dir)?);
        tracing::info!(id = %id, principal = %principal, "added API key");
        Ok(NewKey {
            key: format!("{KEY_PREFIX}{id}_{key_secret}"),
            info,
        })
    }

    /// Revoke the key with this id. A revoked key stays listed (for the audit trail) but never verifies again.
    pub fn revoke(&self, id: &str) -> Result<Revoked, KeyStoreError> {
        let _lock = self.lock()?;
        let mut snapshot = load(&self.dir)?;
        let record = snapshot
            .records
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| KeyStoreError::UnknownKey { id: id.to_string() })?;
        if record.revoked {
            return Ok(Revoked::Already);
        }
        record.revoked = true;
        record.revoked_at = Some(now_rfc3339());
        self.save(&snapshot.records)?;
        self.replace(load(&self.dir)?);
        tracing::info!(id = %id, "revoked API key");
        Ok(Revoked::Now)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.state.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        match self.state.write() {
            Ok(mut guard) => *guard = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// An exclusive lock on the store, held while reading, changing and writing it, so two `rampart keys` runs do not
    /// lose each other's changes. Released when the returned file is dropped.
    fn lock(&self) -> Result<std::fs::File, KeyStoreError> {
        let path = self.dir.join(LOCK_FILE);
        let io_err = |action, source| KeyStoreError::Io {
            action,
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(|e| io_err("open", e))?;
        file.lock().map_err(|e| io_err("lock", e))?;
        Ok(file)
    }

    fn save(&self, records: &[KeyRecord]) -> Result<(), KeyStoreError> {
        let path = self.dir.join(KEY_STORE_FILE);
        let file = StoreFile {
            version: STORE_VERSION,
            keys: records.to_vec(),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| KeyStoreError::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        files::write_private_atomic(&path, &json).map_err(|source| KeyStoreError::Io {
            action: "write",
            path,
            source,
        })
    }
}

/// Split `rmp_<12 hex>_<64 hex>` into id and secret; anything else is `None`.
pub(crate) fn parse_key(presented: &str) -> Option<(&str, &str)> {
    if presented.len() != KEY_LEN {
        return None;
    }
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(ID_HEX_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (lower_hex(id) && secret.len() == SECRET_HEX_LEN && lower_hex(secret)).then_some((id, secret))
}

fn check_name(what: &'static str, value: &str) -> Result<(), KeyStoreError> {
    if valid_name(value) {
        Ok(())
    } else {
        Err(KeyStoreError::InvalidName {
            what,
            value: value.chars().take(80).collect(),
        })
    }
}

fn random<const N: usize>() -> Result<[u8; N], KeyStoreError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyStoreError::Io {
        action: "draw random bytes for",
        path: PathBuf::from("the key"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(bytes)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Read the server secret, creating it (32 random bytes, mode 0600) if it does not exist yet.
fn ensure_server_secret(dir: &Path) -> Result<ServerSecret, KeyStoreError> {
    let path = dir.join(SERVER_SECRET_FILE);
    if let Some(secret) = read_server_secret(&path)? {
        return Ok(secret);
    }
    let bytes = random::<32>()?;
    let text = format!("{}\n", hex::encode(bytes));
    files::write_private_atomic(&path, text.as_bytes()).map_err(|source| KeyStoreError::Io {
        action: "write",
        path: path.clone(),
        source,
    })?;
    tracing::info!(path = %path.display(), "created the API key server secret");
    read_server_secret(&path)?.ok_or_else(|| KeyStoreError::Secret {
        path,
        reason: "vanished right after it was written".to_string(),
    })
}

fn read_server_secret(path: &Path) -> Result<Option<ServerSecret>, KeyStoreError> {
    let secret_err = |reason: String| KeyStoreError::Secret {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = match files::read_bounded(path, 1024) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(secret_err(format!("cannot be read: {e}"))),
    };
    files::check_private_mode(path).map_err(|e| secret_err(format!("is not private: {e}")))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| secret_err("is not hex text".to_string()))?;
    let raw = hex::decode(text.trim()).map_err(|_| secret_err("is not hex text".to_string()))?;
    if raw.len() < 32 {
        return Err(secret_err(format!(
            "holds {} bytes, at least 32 are needed",
            raw.len()
        )));
    }
    let mac = HmacSha256::new_from_slice(&raw).map_err(|e| secret_err(e.to_string()))?;
    Ok(Some(ServerSecret(mac)))
}

/// Load the store of `dir`: the key file (missing = empty) and, if present, the server secret.
fn load(dir: &Path) -> Result<Snapshot, KeyStoreError> {
    let path = dir.join(KEY_STORE_FILE);
    let malformed = |reason: String| KeyStoreError::Malformed {
        path: path.clone(),
        reason,
    };
    let io_err = |source| KeyStoreError::Io {
        action: "read",
        path: path.clone(),
        source,
    };
    let stamp = FileStamp::of(&path).map_err(io_err)?;
    let records = match files::read_bounded(&path, MAX_STORE_BYTES) {
        Ok(bytes) => {
            let file: StoreFile =
                serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
            if file.version != STORE_VERSION {
                return Err(malformed(format!(
                    "version {} is not supported (expected {STORE_VERSION})",
                    file.version
                )));
            }
            file.keys
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(e)),
    };
    if records.len() > MAX_KEYS {
        return Err(malformed(format!("more than {MAX_KEYS} keys")));
    }
    let mut by_id = HashMap::with_capacity(records.len());
    for record in &records {
        let entry = check_record(record)
            .map_err(|reason| malformed(format!("key `{}`: {reason}", record.id)))?;
        if by_id.insert(record.id.clone(), entry).is_some() {
            return Err(malformed(format!("key id `{}` appears twice", record.id)));
        }
    }
    let secret = read_server_secret(&dir.join(SERVER_SECRET_FILE))?;
    Ok(Snapshot {
        stamp,
        records,
        by_id,
        secret,
    })
}

fn check_record(record: &KeyRecord) -> Result<Entry, String> {
    if record.id.len() != ID_HEX_LEN
        || !record
            .id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err("the id is not 12 lowercase hex digits".to_string());
    }
    if !valid_name(&record.principal) {
        return Err("the principal name is invalid".to_string());
    }
    if record.roles.len() > MAX_ROLES || !record.roles.iter().all(|r| valid_name(r)) {
        return Err("a role name is invalid".to_string());
    }
    let hash = record
        .hash
        .strip_prefix(HASH_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(|| format!("the hash is not `{HASH_PREFIX}` and 64 hex digits"))?;
    Ok(Entry {
        hash,
        revoked: record.revoked,
        principal: Principal::new(
            record.principal.clone(),
            record.roles.iter().cloned(),
            Source::ApiKey,
        ),
    })
}

#[cfg(test)]
#[path = "api_key_tests.rs"]
mod tests;
