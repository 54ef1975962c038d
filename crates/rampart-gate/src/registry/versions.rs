//! The registry's versions in memory: loaded on demand through the deployment gate, at most
//! `registry.max_loaded` at once, the least recently used unloaded first; one load at a time.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rampart_deploy::{Error as DeployError, GateConfig, Registry, VersionInfo};
use rampart_infer::{Model, OnnxModel};

use super::RegistryConfig;
use crate::stages::infer::{Execution, ModelPool};

/// Loads waiting for their turn at most; more are answered 503 at once (a flood of cold versions is shed).
const MAX_WAITING_LOADS: usize = 8;
/// Refused versions remembered (answered 409 without unsealing them again); forgotten all at once past this.
const MAX_REFUSED: usize = 1024;

/// A registry version that passed the gate, running.
#[derive(Debug)]
pub struct LoadedVersion {
    /// Its inference threads.
    pub pool: ModelPool,
    /// What the registry records about it.
    pub info: VersionInfo,
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Lru {
    tick: u64,
    versions: HashMap<Key, (u64, Arc<LoadedVersion>)>,
}

/// Why a version cannot be served.
#[derive(Debug)]
pub(crate) enum Unservable {
    NotFound,
    Refused,
    Busy,
    Failed,
}

/// The registry as the gateway serves it: the stored versions and the loaded ones.
#[derive(Debug)]
pub struct Versions {
    pub(crate) registry: Registry,
    pub(crate) gate: GateConfig,
    pub(crate) config: RegistryConfig,
    loaded: Mutex<Lru>,
    refused: Mutex<HashSet<Key>>,
    // One load at a time: with `max_loaded`, what bounds the memory the registry's models take.
    loading: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
}

impl Versions {
    /// The registry in `state_dir`, gating with `gate`, recording in `log` (else its own log in the state
    /// directory).
    pub fn new(
        state_dir: &Path,
        log: Option<Arc<rampart_log::Log>>,
        gate: GateConfig,
        config: RegistryConfig,
    ) -> Versions {
        remove_stale_uploads(&state_dir.join("registry"));
        let registry = match log {
            Some(log) => Registry::with_log(state_dir, log),
            None => Registry::open(state_dir),
        };
        Versions {
            registry,
            gate,
            config,
            loaded: Mutex::new(Lru::default()),
            refused: Mutex::new(HashSet::new()),
            loading: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The versions loaded now, least recently used first.
    pub fn loaded(&self) -> Vec<(String, String)> {
        let lru = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = lru.versions.iter().map(|(k, (t, _))| (*t, k)).collect();
        all.sort();
        all.into_iter().map(|(_, k)| k.clone()).collect()
    }

    pub(crate) fn cached(&self, key: &Key) -> Option<Arc<LoadedVersion>> {
        let mut lru = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        lru.versions.get_mut(key).map(|(used, version)| {
            *used = tick;
            Arc::clone(version)
        })
    }

    fn is_refused(&self, key: &Key) -> bool {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn remember_refused(&self, key: Key) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.len() >= MAX_REFUSED {
            refused.clear();
        }
        refused.insert(key);
    }

    /// The version, loading it if needed (waiting no later than `deadline`; the load goes on after that).
    pub(crate) async fn get(
        self: &Arc<Self>,
        key: Key,
        deadline: Instant,
    ) -> Result<Arc<LoadedVersion>, Unservable> {
        if let Some(version) = self.cached(&key) {
            return Ok(version);
        }
        if self.is_refused(&key) {
            return Err(Unservable::Refused);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING_LOADS {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Unservable::Busy);
        }
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let guard = this.loading.lock().await;
            this.waiting.fetch_sub(1, Ordering::AcqRel);
            if let Some(version) = this.cached(&key) {
                return Ok(version);
            }
            if this.is_refused(&key) {
                return Err(Unservable::Refused);
            }
            let loader = Arc::clone(&this);
            let loaded = tokio::task::spawn_blocking(move || loader.load(key))
                .await
                .unwrap_or(Err(Unservable::Failed));
            drop(guard);
            loaded
        });
        match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Unservable::Failed),
            Err(_) => Err(Unservable::Busy),
        }
    }

    /// Unseals, gates (recorded by the registry) and starts a version; evicts the least recently used past the
    /// bound. Blocking.
    fn load(&self, key: Key) -> Result<Arc<LoadedVersion>, Unservable> {
        let (model, version) = (&key.0, &key.1);
        let info = match self.registry.info(model, version) {
            Ok(info) => info,
            Err(DeployError::NotFound(_) | DeployError::Name { .. }) => {
                return Err(Unservable::NotFound)
            }
            Err(err) => {
                tracing::error!(model, version, error = %err, "cannot read the registry");
                return Err(Unservable::Failed);
            }
        };
        let files = match self.registry.load(model, version, "gateway", &self.gate) {
            Ok(files) => files,
            Err(DeployError::Refused(report)) => {
                tracing::warn!(model, version, reason = %report.summary(), "the deployment gate refused a registry version; it is not served");
                self.remember_refused(key);
                return Err(Unservable::Refused);
            }
            Err(err) => {
                tracing::error!(model, version, error = %err, "cannot load a registry version");
                return Err(Unservable::Failed);
            }
        };
        let started = only_onnx(&files)
            .ok_or_else(|| "it holds no single `.onnx` file".to_owned())
            .and_then(|data| OnnxModel::from_bytes(model, data).map_err(|e| e.to_string()))
            .and_then(|onnx| {
                let onnx: Arc<dyn Model> = Arc::new(onnx);
                ModelPool::start_batching(
                    onnx,
                    self.config.workers,
                    self.config.queue,
                    Execution::Auto,
                    self.config.max_batch,
                )
                .map_err(|e| e.to_string())
            });
        drop(files);
        let pool = match started {
            Ok(pool) => pool,
            Err(reason) => {
                tracing::error!(model, version, %reason, "a registry version passed the gate but does not load");
                let mut record = rampart_log::Record::new("registry.load", "gateway")
                    .subject("model", model.as_str())
                    .subject("version", version.as_str())
                    .outcome("error");
                record.details.insert("reason".into(), reason.into());
                if let Err(err) = self.registry.audit(&record) {
                    tracing::error!(error = %err, "cannot record in the audit log");
                }
                self.remember_refused(key);
                return Err(Unservable::Refused);
            }
        };
        tracing::info!(
            model,
            version,
            "registry version loaded from its sealed copy"
        );
        let loaded = Arc::new(LoadedVersion { pool, info });
        let mut lru = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        lru.tick += 1;
        let tick = lru.tick;
        lru.versions.insert(key, (tick, Arc::clone(&loaded)));
        while lru.versions.len() > self.config.max_loaded {
            let oldest = lru
                .versions
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            lru.versions.remove(&oldest);
            tracing::info!(model = %oldest.0, version = %oldest.1, "unloaded the least recently used registry version");
        }
        Ok(loaded)
    }
}

/// Removes the staging directories of uploads cut short by a crash (they may hold a model in plaintext).
fn remove_stale_uploads(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".upload-") {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::warn!(dir = %entry.path().display(), "removed an interrupted upload")
                }
                Err(err) => {
                    tracing::error!(dir = %entry.path().display(), error = %err, "cannot remove an interrupted upload")
                }
            }
        }
    }
}

/// The only `.onnx` file of a version.
fn only_onnx(files: &[rampart_seal::MemoryFile]) -> Option<&[u8]> {
    let mut onnx = files.iter().filter(|f| {
        f.path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    });
    let first = onnx.next()?;
    onnx.next().is_none().then_some(first.data.as_slice())
}
