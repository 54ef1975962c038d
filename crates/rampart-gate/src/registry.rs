//! The model registry over the KServe v2 API: versions stored signed and sealed under the state directory
//! (`rampart-deploy`'s [`Registry`]), uploaded, listed and served by version.
//!
//! - `PUT /v2/models/{name}/versions/{v}`: upload a version (Cedar action `push` on the model; the default policy
//!   grants it to the `publisher` role only). The body is the model directory as a tar stream, its `model.sig`
//!   included (`rampart_deploy::upload`), at most `registry.max_push_bytes`. It is streamed to a staging
//!   directory in the state directory, unpacked there with every hostile construct refused, and the deployment
//!   gate (signature against `deploy.trusted_keys`, scan, policy) runs on it **before** it is sealed and renamed
//!   into the registry. 201 with the version's record; 422 with a short reason when the upload or the gate
//!   refuses it; 409 when the version exists (versions are immutable). Nothing is left behind on a refusal, and
//!   every push that reaches this point is appended to the audit log with the SHA-256 of the bytes received.
//! - `GET /v2/models/{name}/versions`: the stored versions, JSON (Cedar `read_metadata`).
//! - `GET /v2/models/{name}/versions/{v}` (KServe metadata), `.../ready`, `POST .../infer`: the version, loaded on
//!   first use by unsealing it in memory (plaintext never touches the disk) and gating the plaintext again; a
//!   version the gate refuses is logged, answered 409 and never served. At most `registry.max_loaded` versions
//!   stay loaded, the least recently used is unloaded first (an unloaded version loads again on its next request).
//!
//! Every route runs the same pipeline as a configured model's (ban, per-IP rate, authentication, Cedar, per-principal
//! rate, quota and concurrency, audit). Cedar's resource is the model: the version is **not** an attribute of the
//! request, so every version of a model shares the model's permissions (what a principal may do with `digits`, it
//! may do with `digits` version 3), and the decision cache stays one entry per principal, action and model. The
//! version is recorded in the audit record of each request. A configured model's `[models.defend]` stages apply to
//! its registry versions too (same name, shared per-client state), so a version route is no way around them.
//! `deploy.verify = false` does not apply here: a registry version is always verified.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use hyper::{Request, StatusCode};
use rampart_deploy::{Error as DeployError, GateConfig, Registry, VersionInfo};
use rampart_infer::{Model, OnnxModel};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::config::{Config, ConfigError};
use crate::pipeline::{json_reply, Refusal, Reply, Route, Trace};
use crate::stages::infer::{Execution, ModelPool};
use crate::Gate;

/// Loads waiting for their turn at most; more are answered 503 at once (a flood of cold versions is shed).
const MAX_WAITING_LOADS: usize = 8;
/// Refused versions remembered (answered 409 without unsealing them again); forgotten all at once past this.
const MAX_REFUSED: usize = 1024;

/// `[registry]`: the versions pushed into the state directory's registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Versions kept loaded in memory (with their inference threads); past this the least recently used is
    /// unloaded.
    pub max_loaded: usize,
    /// Largest upload (`PUT /v2/models/{name}/versions/{v}`), in bytes.
    pub max_push_bytes: u64,
    /// Time allowed to receive an upload, in seconds.
    pub push_timeout_secs: u64,
    /// Inference threads of each loaded version.
    pub workers: usize,
    /// Requests waiting for a loaded version's threads; when full, new requests get 503.
    pub queue: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_loaded: 4,
            max_push_bytes: 2 << 30,
            push_timeout_secs: 600,
            workers: 2,
            queue: 256,
        }
    }
}

impl RegistryConfig {
    /// The checks made at load.
    pub fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: config.source.clone(),
            key: format!("registry.{key}"),
            message: message.into(),
        };
        if self.max_loaded == 0 {
            return Err(invalid("max_loaded", "keep at least 1 version loaded"));
        }
        if self.max_push_bytes == 0 || self.push_timeout_secs == 0 {
            return Err(invalid(
                if self.max_push_bytes == 0 {
                    "max_push_bytes"
                } else {
                    "push_timeout_secs"
                },
                "must be above 0",
            ));
        }
        if self.workers == 0 || self.queue == 0 {
            return Err(invalid(
                if self.workers == 0 {
                    "workers"
                } else {
                    "queue"
                },
                "must be above 0",
            ));
        }
        Ok(())
    }
}

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
enum Unservable {
    NotFound,
    Refused,
    Busy,
    Failed,
}

/// The registry as the gateway serves it: the stored versions and the loaded ones.
#[derive(Debug)]
pub struct Versions {
    registry: Registry,
    gate: GateConfig,
    config: RegistryConfig,
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

    fn cached(&self, key: &Key) -> Option<Arc<LoadedVersion>> {
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
    async fn get(
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
                ModelPool::start(
                    onnx,
                    self.config.workers,
                    self.config.queue,
                    Execution::Auto,
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

fn refusal(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new("registry", status, reason, message)
}

fn unknown_version() -> Refusal {
    refusal(
        StatusCode::NOT_FOUND,
        "unknown_version",
        "no such model version",
    )
    .strike()
}

fn json_value(status: StatusCode, value: &serde_json::Value) -> Reply {
    json_reply(status, value.to_string().into_bytes())
}

impl Gate {
    fn versions(&self) -> Result<&Arc<Versions>, Refusal> {
        self.registry
            .as_ref()
            .ok_or_else(|| refusal(StatusCode::NOT_FOUND, "no_registry", "no registry"))
    }

    /// Before Cedar: the route's model and version are valid names, and (except for a push) exist.
    pub(crate) fn registry_target(&self, route: &Route) -> Result<(), Refusal> {
        let versions = self.versions()?;
        let (Some(model), version) = (route.model(), route.version()) else {
            return Err(unknown_version());
        };
        match (route, version) {
            (Route::Push(..), Some(version)) => {
                for (what, name) in [("model name", model), ("version", version)] {
                    rampart_deploy::check_name(what, name).map_err(|err| {
                        refusal(StatusCode::BAD_REQUEST, "bad_name", err.to_string())
                    })?;
                }
                Ok(())
            }
            (_, Some(version)) => {
                let key = (model.to_owned(), version.to_owned());
                if versions.cached(&key).is_some() || versions.registry.exists(model, version) {
                    Ok(())
                } else {
                    Err(unknown_version())
                }
            }
            (_, None) => {
                let stored = rampart_deploy::check_name("model name", model).is_ok()
                    && versions
                        .registry
                        .dir()
                        .join("registry")
                        .join(model)
                        .is_dir();
                if stored || self.models.contains_key(model) {
                    Ok(())
                } else {
                    Err(crate::pipeline::unknown_model())
                }
            }
        }
    }

    /// A registry version, loaded through the deployment gate if it is not yet.
    pub(crate) async fn registry_version(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Arc<LoadedVersion>, Refusal> {
        let versions = self.versions()?;
        let deadline = Instant::now() + self.limits.request_timeout;
        match versions
            .get((model.to_owned(), version.to_owned()), deadline)
            .await
        {
            Ok(loaded) => Ok(loaded),
            Err(Unservable::NotFound) => Err(unknown_version()),
            Err(Unservable::Refused) => Err(refusal(
                StatusCode::CONFLICT,
                "version_refused",
                "the stored version fails the deployment gate and is not served",
            )),
            Err(Unservable::Busy) => Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "loading",
                "the version is loading, retry later",
            )
            .retry_after(Duration::from_secs(1))),
            Err(Unservable::Failed) => Err(refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "load_failed",
                "cannot load the version",
            )),
        }
    }

    /// The registry's routes other than inference.
    pub(crate) async fn registry_route<B>(
        &self,
        route: Route,
        request: Request<B>,
        started: Instant,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match route {
            Route::Versions(model) => self.list_versions(&model).await,
            Route::VersionMetadata(model, version) => {
                let loaded = self.registry_version(&model, &version).await?;
                let mut metadata = loaded.pool.model().metadata().clone();
                metadata.versions = vec![version];
                Ok(json_reply(
                    StatusCode::OK,
                    serde_json::to_vec(&metadata).unwrap_or_default(),
                ))
            }
            Route::VersionReady(model, version) => {
                self.registry_version(&model, &version).await?;
                let ready = self.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_value(
                    status,
                    &serde_json::json!({ "name": model, "version": version, "ready": ready }),
                ))
            }
            Route::Push(model, version) => {
                let _ = started;
                self.push(&model, &version, request, trace).await
            }
            _ => Err(crate::pipeline::unknown_model()),
        }
    }

    async fn list_versions(&self, model: &str) -> Result<Reply, Refusal> {
        let versions = Arc::clone(self.versions()?);
        let name = model.to_owned();
        let listed = tokio::task::spawn_blocking(move || versions.registry.list(Some(&name))).await;
        let stored = match listed {
            Ok(Ok(stored)) => stored,
            Ok(Err(DeployError::Name { .. })) => return Err(crate::pipeline::unknown_model()),
            _ => {
                return Err(refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "registry_failed",
                    "cannot read the registry",
                ))
            }
        };
        let loaded = self.versions()?.loaded();
        let list: Vec<serde_json::Value> = stored
            .iter()
            .map(|info| {
                let mut value = serde_json::to_value(info).unwrap_or_default();
                let is_loaded = loaded
                    .iter()
                    .any(|(m, v)| *m == info.model && *v == info.version);
                if let Some(object) = value.as_object_mut() {
                    object.insert("loaded".into(), is_loaded.into());
                }
                value
            })
            .collect();
        Ok(json_value(
            StatusCode::OK,
            &serde_json::json!({ "name": model, "versions": list }),
        ))
    }

    /// `PUT /v2/models/{name}/versions/{v}`: receive, unpack, gate, seal, store.
    async fn push<B>(
        &self,
        model: &str,
        version: &str,
        request: Request<B>,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let versions = Arc::clone(self.versions()?);
        let Some(pusher) = trace.principal.as_ref().map(|p| p.id.clone()) else {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "unauthenticated_push",
                "pushing a model needs an authenticated principal",
            ));
        };
        let limit = versions.config.max_push_bytes;
        check_upload_headers(request.headers(), limit)?;
        if versions.registry.exists(model, version) {
            let record = rampart_log::Record::new("registry.push", &pusher)
                .subject("model", model)
                .subject("version", version)
                .outcome("exists");
            let _ = versions.registry.audit(&record);
            return Err(exists(model, version));
        }
        let staging = staging_dir(versions.registry.dir())?;
        let upload = staging.path().join("upload.tar");
        let deadline = Instant::now() + Duration::from_secs(versions.config.push_timeout_secs);
        let (digest, bytes) = receive(request.into_body(), &upload, limit, deadline).await?;
        trace.input_sha256 = Some(digest.clone());
        tracing::info!(model, version, bytes, principal = %pusher, "upload received; running the deployment gate");
        let (model, version) = (model.to_owned(), version.to_owned());
        let pushed = tokio::task::spawn_blocking(move || {
            let unpacked = staging.path().join("model");
            let result = std::fs::File::open(&upload)
                .map_err(|e| DeployError::BadUpload(format!("cannot reopen the upload: {e}")))
                .and_then(|file| {
                    std::fs::create_dir(&unpacked).map_err(|e| {
                        DeployError::BadUpload(format!("cannot stage the upload: {e}"))
                    })?;
                    rampart_deploy::upload::unpack(
                        std::io::BufReader::new(file),
                        &unpacked,
                        &versions.gate.policy,
                    )
                })
                .and_then(|_| {
                    versions.registry.push_upload(
                        &unpacked,
                        &model,
                        &version,
                        &pusher,
                        &versions.gate,
                        Some(&digest),
                    )
                });
            if let Err(DeployError::BadUpload(reason)) = &result {
                let mut record = rampart_log::Record::new("registry.push", &pusher)
                    .subject("model", model.as_str())
                    .subject("version", version.as_str())
                    .subject("upload_sha256", digest.as_str())
                    .outcome("refused");
                record
                    .details
                    .insert("reason".into(), reason.clone().into());
                versions.registry.audit(&record)?;
            }
            // The staging directory (upload and plaintext) goes whatever the outcome.
            drop(staging);
            result.map(|info| (info, model, version))
        })
        .await
        .map_err(|_| {
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "the push failed; nothing was stored",
            )
        })?;
        match pushed {
            Ok((info, ..)) => Ok(json_value(
                StatusCode::CREATED,
                &serde_json::to_value(&info).unwrap_or_default(),
            )),
            Err(err) => Err(push_refusal(&err)),
        }
    }
}

/// No compression; a declared length within the limit.
fn check_upload_headers(headers: &hyper::HeaderMap, limit: u64) -> Result<(), Refusal> {
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed_body",
                "compressed uploads are not accepted",
            ));
        }
    }
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            None => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_length",
                    "invalid Content-Length",
                )
                .strike())
            }
            Some(n) if n > limit => return Err(too_large(limit)),
            Some(_) => {}
        }
    }
    Ok(())
}

fn too_large(limit: u64) -> Refusal {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!("the upload is larger than the gateway's registry.max_push_bytes = {limit}"),
    )
}

fn exists(model: &str, version: &str) -> Refusal {
    refusal(
        StatusCode::CONFLICT,
        "version_exists",
        format!("`{model}` version `{version}` already exists; versions are immutable, push a new version"),
    )
}

/// A private (0700) staging directory inside the registry, removed when dropped.
fn staging_dir(state_dir: &Path) -> Result<tempfile::TempDir, Refusal> {
    let parent: PathBuf = state_dir.join("registry");
    std::fs::create_dir_all(&parent)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(".upload-")
                .tempdir_in(&parent)
        })
        .map_err(|err| {
            tracing::error!(error = %err, dir = %parent.display(), "cannot stage an upload");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "cannot stage the upload",
            )
        })
}

/// Streams the body to `path`, at most `limit` bytes, by `deadline`; returns its hex SHA-256 and size.
async fn receive<B>(
    body: B,
    path: &Path,
    limit: u64,
    deadline: Instant,
) -> Result<(String, u64), Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let failed = || {
        refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "push_failed",
            "cannot store the upload",
        )
    };
    let mut file = tokio::fs::File::create(path).await.map_err(|_| failed())?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => {
                return Err(refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "upload_timeout",
                    "the upload came too slowly (registry.push_timeout_secs)",
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "body_error",
                    "the upload was cut off",
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size = size.saturating_add(data.len() as u64);
        if size > limit {
            return Err(too_large(limit));
        }
        hasher.update(&data);
        file.write_all(&data).await.map_err(|_| failed())?;
    }
    file.flush().await.map_err(|_| failed())?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// A refused push as an answer: 422 with the first reasons, 409 for an existing version, 400 for a bad name.
fn push_refusal(err: &DeployError) -> Refusal {
    match err {
        DeployError::BadUpload(reason) => refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_upload",
            short(&format!("bad upload: {reason}")),
        ),
        DeployError::Refused(report) => {
            let reasons: Vec<String> = report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.name,
                        c.problems.first().map_or("", |p| p.as_str())
                    )
                })
                .collect();
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused_by_gate",
                short(&format!(
                    "refused by the deployment gate: {}",
                    reasons.join(" | ")
                )),
            )
        }
        DeployError::Exists(message) => {
            refusal(StatusCode::CONFLICT, "version_exists", message.clone())
        }
        DeployError::Name { .. } => refusal(StatusCode::BAD_REQUEST, "bad_name", err.to_string()),
        other => {
            tracing::error!(error = %other, "push failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "the push failed; nothing was stored",
            )
        }
    }
}

/// At most 400 characters.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(400).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;

    #[test]
    fn versioned_routes_parse() {
        let parse = |m: Method, p: &str| Route::parse(&m, p).unwrap();
        assert_eq!(
            parse(Method::PUT, "/v2/models/d/versions/2"),
            Route::Push("d".into(), "2".into())
        );
        assert_eq!(
            parse(Method::GET, "/v2/models/d/versions/2"),
            Route::VersionMetadata("d".into(), "2".into())
        );
        assert_eq!(
            parse(Method::POST, "/v2/models/d/versions/2/infer"),
            Route::VersionInfer("d".into(), "2".into())
        );
        assert_eq!(
            parse(Method::GET, "/v2/models/d/versions"),
            Route::Versions("d".into())
        );
        assert!(Route::parse(&Method::POST, "/v2/models/d/versions/2").is_err());
    }

    #[test]
    fn short_reasons_stay_short() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"x".repeat(1000)).chars().count(), 401);
    }
}
