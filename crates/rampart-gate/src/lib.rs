//! Rampart's secure inference gateway, as a library: the binary's `rampart serve` starts it, tests drive it in
//! process through [`Gate::handle`] or over sockets through [`Prepared::serve`].
//!
//! - `config`: the TOML schema, validated once at load;
//! - `tls`: TLS 1.3 only, certificates from files (reloaded) or self-signed, mTLS;
//! - `listener`: accept loop, connection caps, handshake/header/body/idle timeouts, HTTP/1.1 and HTTP/2 limits;
//! - `pipeline`: the order of the stages; `stages/*`: one module per decision;
//! - `audit`: the trail of decisions behind [`audit::AuditSink`]; `trail`: the tamper-evident log as that sink (the
//!   default) and the record of events that are not requests; `metrics`, `admin`: Prometheus on its own listener;
//! - `deploy`: the deployment gate (signature, scan, policy) before every model load and reload, sealed models
//!   decrypted in memory only;
//! - `registry`: model versions pushed over HTTPS (`PUT /v2/models/{name}/versions/{v}`), listed and served by
//!   version, loaded through the same gate; `push`: the client side of that upload (`rampart push --url`).

pub mod admin;
pub mod audit;
pub mod config;
pub mod deploy;
pub mod exports;
pub mod jwks;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod push;
pub mod registry;
pub mod stages;
pub mod tls;
pub mod trail;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rampart_auth::{ApiKeyStore, Authorizer, JwksFetcher, JwksFile, JwtVerifier, PolicyFiles};
use rampart_infer::{Model, OnnxModel, UpstreamModel};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::audit::{AuditSink, Auditor, JsonLinesSink};
use crate::config::Config;
use crate::deploy::{Deployer, Source};
use crate::metrics::Metrics;
use crate::stages::authn::Authn;
use crate::stages::ban::Bans;
use crate::stages::infer::ModelPool;
use crate::stages::rate::{Concurrency, DailyQuota, Gcra};
use crate::trail::Trail;

pub use crate::pipeline::{ConnInfo, Reply};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A model could not be loaded.
    #[error(transparent)]
    Model(#[from] rampart_infer::InferError),
    /// A model was refused by the deployment gate, or could not be read, unsealed or recorded.
    #[error(transparent)]
    Deploy(#[from] deploy::DeployError),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The API key store could not be used.
    #[error(transparent)]
    Keys(#[from] rampart_auth::KeyStoreError),
    /// The Cedar schema, policies or entities are invalid.
    #[error(transparent)]
    Policy(#[from] rampart_auth::PolicyError),
    /// The JWT configuration or its JWKS is unusable.
    #[error("JWT: {0}")]
    Jwt(#[from] rampart_auth::JwtError),
    /// A listener could not be bound, or a file written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The limits in force, resolved from the config.
#[derive(Debug)]
pub struct Limits {
    /// Per-IP GCRA.
    pub per_ip: Option<Gcra<std::net::IpAddr>>,
    /// Per-principal GCRA.
    pub per_principal: Option<Gcra<String>>,
    /// Per-principal daily quota.
    pub daily_quota: Option<DailyQuota>,
    /// Per-principal requests in flight.
    pub concurrency: Concurrency,
    /// Open connections in total.
    pub max_connections: u32,
    /// Open connections per IP.
    pub max_connections_per_ip: u32,
    /// An IPv6 client is this prefix of its address ([`stages::ban::client`]).
    pub ipv6_client_prefix: u8,
    /// TLS handshake.
    pub handshake_timeout: Duration,
    /// Request headers.
    pub header_timeout: Duration,
    /// Request body.
    pub body_timeout: Duration,
    /// Connection idle.
    pub idle_timeout: Duration,
    /// Whole request.
    pub request_timeout: Duration,
    /// Header bytes.
    pub max_header_bytes: usize,
    /// Header count.
    pub max_headers: usize,
    /// Body bytes.
    pub max_body_bytes: usize,
    /// JSON nesting.
    pub max_json_depth: usize,
    /// Elements per tensor.
    pub max_tensor_elements: usize,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 client resets pending.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2 server error resets.
    pub h2_max_local_error_reset_streams: usize,
}

impl Limits {
    fn from_config(config: &Config) -> Limits {
        let l = &config.limits;
        let ms = Duration::from_millis;
        Limits {
            per_ip: l.rate_per_ip.map(|r| Gcra::new(r, l.max_tracked_clients)),
            per_principal: l
                .rate_per_principal
                .map(|r| Gcra::new(r, l.max_tracked_clients)),
            daily_quota: l.daily_quota.map(DailyQuota::new),
            concurrency: Concurrency::new(l.concurrency_per_principal),
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            ipv6_client_prefix: l.ipv6_client_prefix,
            handshake_timeout: ms(l.handshake_timeout_ms),
            header_timeout: ms(l.header_timeout_ms),
            body_timeout: ms(l.body_timeout_ms),
            idle_timeout: ms(l.idle_timeout_ms),
            request_timeout: ms(l.request_timeout_ms),
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers,
            max_body_bytes: l.max_body_bytes,
            max_json_depth: l.max_json_depth,
            max_tensor_elements: l.max_tensor_elements,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            h2_max_pending_reset_streams: l.h2_max_pending_reset_streams,
            h2_max_local_error_reset_streams: l.h2_max_local_error_reset_streams,
        }
    }
}

/// The gateway: its models, stages and shared state.
#[derive(Debug)]
pub struct Gate {
    models: HashMap<String, ModelPool>,
    authn: Authn,
    authorizer: Arc<Authorizer>,
    /// The limits in force.
    pub limits: Limits,
    /// The ban list.
    pub bans: Bans,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    audit: Auditor,
    /// Refuse requests while the audit trail cannot be written (`[audit] on_failure = "refuse"`).
    audit_refuses: bool,
    trail: Trail,
    policy_error: std::sync::Mutex<Option<String>>,
    policy_files: PolicyFiles,
    exports: Option<Arc<exports::Exports>>,
    registry: Option<Arc<registry::Versions>>,
    public_routes: HashSet<String>,
    security: bool,
    ready: AtomicBool,
}

/// The parts of a gate that are chosen by the embedding program rather than the config file.
#[derive(Debug, Default)]
pub struct Parts {
    /// Authentication; `None`: the methods the config turns on.
    pub authn: Option<Authn>,
    /// The Cedar authorizer; `None`: the config's `[policy]` files (or the embedded defaults).
    pub authorizer: Option<Arc<Authorizer>>,
    /// The audit sink; `None`: the config's JSON-lines file.
    pub audit_sink: Option<Arc<dyn AuditSink>>,
    /// Where events other than requests (model loads, policy reloads) are recorded; `None`: nowhere.
    pub trail: Option<Trail>,
    /// Export control over the registry (`/v2/exports`); `None`: those routes answer 404.
    pub exports: Option<Arc<exports::Exports>>,
    /// The registry's versions (`/v2/models/{name}/versions/...`); `None`: those routes answer 404.
    pub registry: Option<Arc<registry::Versions>>,
}

/// A local model the gateway watches for new versions.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Its name.
    pub name: String,
    /// Where its bytes come from.
    pub source: Source,
    /// The fingerprint of the files when the serving version was read.
    pub fingerprint: Option<u64>,
    /// The gate's verdict on the serving version, one line.
    pub summary: String,
}

/// Loads the models a config names through the deployment gate and starts their inference threads.
pub fn load_models(
    config: &Config,
    deployer: &Deployer,
) -> Result<(HashMap<String, ModelPool>, Vec<Watched>), GateError> {
    let mut models = HashMap::new();
    let mut watched = Vec::new();
    for spec in &config.models {
        let model: Arc<dyn Model> = match (Source::of(config, spec), &spec.upstream) {
            (Some(source), _) => {
                // Taken before the read: a change made while reading is seen by the next poll.
                let fingerprint = source.fingerprint();
                let deployed = deployer.load(&spec.name, &source)?;
                watched.push(Watched {
                    name: spec.name.clone(),
                    source,
                    fingerprint,
                    summary: verdict(&deployed.report),
                });
                deployed.model
            }
            (None, Some(url)) => Arc::new(UpstreamModel::connect(
                &spec.name,
                url,
                spec.upstream_model.as_deref().unwrap_or(&spec.name),
                Duration::from_millis(config.limits.request_timeout_ms),
            )?),
            (None, None) => continue,
        };
        let pool = ModelPool::start_batching(
            model,
            spec.workers,
            spec.queue,
            spec.execution,
            spec.max_batch,
        )
        .map_err(|source| GateError::Io {
            what: format!("cannot start the inference threads of `{}`", spec.name),
            source,
        })?;
        models.insert(spec.name.clone(), pool);
    }
    Ok((models, watched))
}

/// Loads one ONNX file without the deployment gate (tests and tools that build a [`Gate`] themselves).
pub fn load_onnx_unchecked(name: &str, path: &Path) -> Result<Arc<dyn Model>, GateError> {
    Ok(Arc::new(OnnxModel::from_path(name, path)?))
}

impl Gate {
    /// Builds a gate. Must run inside a Tokio runtime (the audit writer is a task); the returned handle ends when
    /// the gate is dropped, after writing every record.
    pub fn build(
        config: &Config,
        models: HashMap<String, ModelPool>,
        parts: Parts,
    ) -> Result<(Gate, Option<tokio::task::JoinHandle<()>>), GateError> {
        let authorizer = match parts.authorizer {
            Some(authorizer) => authorizer,
            None => Arc::new(Authorizer::load(policy_files(config))?),
        };
        let metrics = Arc::new(Metrics::new());
        let (audit, audit_task) = if config.audit.enabled {
            let sink: Arc<dyn AuditSink> = match parts.audit_sink {
                Some(sink) => sink,
                None => {
                    let path = audit_path(config);
                    Arc::new(JsonLinesSink::open(&path).map_err(|source| GateError::Io {
                        what: format!("cannot open the audit trail `{}`", path.display()),
                        source,
                    })?)
                }
            };
            let (auditor, task) = Auditor::start(
                sink,
                config.audit.batch,
                Duration::from_millis(config.audit.flush_ms.max(1)),
                Arc::clone(&metrics),
            );
            (auditor, Some(task))
        } else {
            (Auditor::disabled(), None)
        };
        let security = !config.server.disable_security_stages;
        if !security {
            tracing::warn!("security stages are OFF (server.disable_security_stages): no authentication, policy or limits");
        }
        for (name, pool) in &models {
            pool.count_runs(
                metrics
                    .model_runs
                    .get_or_create(&crate::metrics::ModelLabels {
                        model: name.clone(),
                    })
                    .clone(),
            );
        }
        // Calibrates the detectors on the models: blocking start-up work, before any request.
        stages::defend::build_all(config, &models)?;
        let gate = Gate {
            models,
            authn: parts.authn.unwrap_or_default(),
            authorizer,
            limits: Limits::from_config(config),
            bans: Bans::new(
                &config.bans,
                config.limits.max_tracked_clients,
                config.limits.ipv6_client_prefix,
            ),
            metrics,
            audit,
            audit_refuses: config.audit.on_failure == config::AuditFailure::Refuse,
            trail: parts.trail.unwrap_or(Trail::Off),
            policy_error: std::sync::Mutex::new(None),
            policy_files: policy_files(config),
            exports: parts.exports,
            registry: parts.registry,
            public_routes: config.server.public_routes.iter().cloned().collect(),
            security,
            ready: AtomicBool::new(true),
        };
        Ok((gate, audit_task))
    }

    /// Whether the gateway takes inference requests: false while draining, and while it refuses them because its
    /// audit trail cannot be written ([`Gate::audit_blocked`]).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.audit_blocked()
    }

    /// Whether requests are refused now because the audit trail cannot be written and the config says not to act
    /// unaudited (`[audit] on_failure = "refuse"`, the default).
    pub fn audit_blocked(&self) -> bool {
        self.audit_refuses && !self.audit.is_healthy()
    }

    /// Picks up changed API keys and Cedar files; a bad new file is logged and the one in force kept. Each change
    /// taken, and each new refusal, is recorded in the audit trail.
    pub fn reload_auth(&self) {
        if let Some(store) = &self.authn.api_keys {
            match store.reload_if_changed() {
                Ok(false) => {}
                Ok(true) => {
                    let active = store.list().iter().filter(|k| !k.revoked).count();
                    let file = store.dir().join(rampart_auth::KEY_STORE_FILE);
                    let mut record = rampart_log::Record::new("keys.reload", "gateway")
                        .subject("key_store", file_digest(&file));
                    record.details.insert("active_keys".into(), active.into());
                    self.record_event(&record);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot reload the API keys; keeping those in force");
                }
            }
        }
        // The authorizer logs its own failures and keeps the policy in force.
        let outcome = self.authorizer.reload_if_changed();
        let mut last_error = self
            .policy_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let record = || {
            let mut record = rampart_log::Record::new("policy.reload", "gateway");
            for (name, path) in [
                ("schema", &self.policy_files.schema),
                ("policies", &self.policy_files.policies),
                ("entities", &self.policy_files.entities),
            ] {
                if let Some(path) = path {
                    record = record.subject(name, file_digest(path));
                }
            }
            record
        };
        match outcome {
            Ok(false) => {}
            Ok(true) => {
                *last_error = None;
                self.record_event(&record());
            }
            Err(err) => {
                let reason = err.to_string();
                // A broken file is polled again and again: record the refusal once per distinct error.
                if last_error.as_deref() != Some(reason.as_str()) {
                    let mut record = record().outcome("refused");
                    record
                        .details
                        .insert("reason".into(), reason.clone().into());
                    self.record_event(&record);
                    *last_error = Some(reason);
                }
            }
        }
    }

    /// Records an event that is not a request; a failure is logged and counted (the change already took effect).
    fn record_event(&self, record: &rampart_log::Record) {
        if let Err(err) = self.trail.append(record) {
            self.metrics.audit_errors.inc();
            tracing::error!(error = %err, action = %record.action, "cannot record in the audit trail");
        }
    }

    /// Swaps in a new version of `name` (which passed the deployment gate) with its defences rebuilt for it (the
    /// detector recalibrated on its answers). Blocking: the calibration runs the model. If the defences cannot be
    /// built, the new version is refused (recorded in the audit trail) and the old one keeps serving with its own.
    pub fn swap_model(&self, name: &str, model: Arc<dyn Model>) -> Result<(), GateError> {
        let Some(pool) = self.models.get(name) else {
            return Ok(());
        };
        let defences = match pool.defences() {
            Some(old) => match old.for_version(&*model) {
                Ok(new) => Some(Arc::new(new)),
                Err(err) => {
                    let mut record = rampart_log::Record::new("defend.recalibrate", "gateway")
                        .subject("model", name)
                        .outcome("error");
                    record
                        .details
                        .insert("reason".into(), err.to_string().into());
                    self.record_event(&record);
                    tracing::error!(model = name, error = %err, "the new version's defences cannot be built; it is refused");
                    return Err(err.into());
                }
            },
            None => None,
        };
        pool.swap(model, defences).map_err(|source| GateError::Io {
            what: format!("cannot start the new version of `{name}`"),
            source,
        })?;
        Ok(())
    }
}

/// One line on a model the gate let in.
fn verdict(report: &rampart_deploy::GateReport) -> String {
    match (&report.signer, &report.root_digest) {
        (Some(signer), Some(root)) => format!(
            "`{}` passed the deployment gate (signed by `{signer}`, {root})",
            report.model
        ),
        _ => format!(
            "`{}` passed the deployment gate (signature NOT verified: deploy.verify = false)",
            report.model
        ),
    }
}

/// `sha256:` of a file's contents, or `missing` when it cannot be read.
fn file_digest(path: &Path) -> String {
    use sha2::Digest as _;
    match std::fs::read(path) {
        Ok(bytes) => format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes))),
        Err(_) => "missing".into(),
    }
}

fn policy_files(config: &Config) -> PolicyFiles {
    let resolve = |p: &Option<PathBuf>| p.as_deref().map(|p| config.resolve(p));
    PolicyFiles {
        schema: resolve(&config.policy.schema),
        policies: resolve(&config.policy.policies),
        entities: resolve(&config.policy.entities),
    }
}

/// Builds the authentication methods the config turns on: opens (and, when empty and asked, seeds) the API key
/// store, loads the JWKS once. Returns the methods and a key created now, if any.
async fn build_authn(
    config: &Config,
    state_dir: &Path,
) -> Result<(Authn, Option<String>), GateError> {
    let mut new_key = None;
    let api_keys = if config.auth.api_keys {
        let store = ApiKeyStore::open(state_dir)?;
        if store.list().iter().all(|k| k.revoked) && config.auth.create_first_key {
            new_key = Some(store.add("admin", &["admin".to_owned()])?.key);
        }
        Some(Arc::new(store))
    } else {
        None
    };
    let jwt = match &config.auth.jwt {
        None => None,
        Some(jwt) => {
            let fetcher: Arc<dyn JwksFetcher> =
                match (&config.auth.jwks_file, &config.auth.jwks_url) {
                    (Some(file), _) => Arc::new(JwksFile::new(config.resolve(file))),
                    (None, Some(url)) => Arc::new(jwks::JwksUrl::new(url)),
                    (None, None) => {
                        return Err(config::ConfigError::Invalid {
                            path: config.source.clone(),
                            key: "auth.jwt".into(),
                            message: "set `auth.jwks_file` or `auth.jwks_url`".into(),
                        }
                        .into())
                    }
                };
            Some(Arc::new(JwtVerifier::new(jwt.clone(), fetcher).await?))
        }
    };
    let mtls = (config.auth.mtls && config.tls.client_ca.is_some() && !config.server.plain_http)
        .then(|| config.auth.mtls_trust_domains.clone());
    Ok((
        Authn {
            api_keys,
            jwt,
            mtls,
        },
        new_key,
    ))
}

fn audit_path(config: &Config) -> PathBuf {
    match &config.audit.path {
        Some(path) => config.resolve(path),
        None => config.state_dir().join("audit.jsonl"),
    }
}

/// A gateway ready to serve: listeners bound, certificate loaded, models running.
pub struct Prepared {
    gate: Arc<Gate>,
    audit_task: Option<tokio::task::JoinHandle<()>>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    tls: Option<(Arc<tls::ServerCert>, tokio_rustls::TlsAcceptor)>,
    reload_every: Duration,
    auth_reload_every: Duration,
    model_reload_every: Option<Duration>,
    deployer: Deployer,
    grace: Duration,
    /// Where clients connect.
    pub address: SocketAddr,
    /// Where the admin listener is.
    pub admin_address: Option<SocketAddr>,
    /// The certificate's SHA-256 fingerprint (TLS only).
    pub fingerprint: Option<String>,
    /// Whether the certificate was generated.
    pub self_signed: bool,
    /// The certificate's file (TLS only): what a client trusts for a self-signed one.
    pub cert_path: Option<PathBuf>,
    /// An API key created at this start (the store had no active key), shown once.
    pub new_api_key: Option<String>,
    /// The API key store's file, when API keys are on.
    pub key_store: Option<PathBuf>,
    /// The audit trail, if it is a JSON-lines file.
    pub audit_path: Option<PathBuf>,
    /// The tamper-evident audit log's directory and verifier key, if it is the trail.
    pub audit_log: Option<(PathBuf, String)>,
    /// The local models, watched for new versions, with the gate's verdict.
    pub watched: Vec<Watched>,
    /// The models served.
    pub models: Vec<String>,
}

/// Loads everything a config names and binds the listeners.
pub async fn prepare(config: &Config, mut parts: Parts) -> Result<Prepared, GateError> {
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir).map_err(|source| GateError::Io {
        what: format!(
            "cannot create the state directory `{}`",
            state_dir.display()
        ),
        source,
    })?;
    let mut new_api_key = None;
    let mut key_store = None;
    if parts.authn.is_none() {
        let (authn, new_key) = build_authn(config, &state_dir).await?;
        new_api_key = new_key;
        key_store = authn
            .api_keys
            .as_ref()
            .map(|store| store.dir().join(rampart_auth::KEY_STORE_FILE));
        parts.authn = Some(authn);
    }
    let mut audit_file = None;
    let mut audit_log = None;
    if config.audit.enabled && parts.audit_sink.is_none() {
        let json_path = audit_path(config);
        let (sink, trail) = trail::open(config, &json_path).map_err(|source| GateError::Io {
            what: "cannot open the audit trail".into(),
            source,
        })?;
        match trail.log() {
            Some(log) => audit_log = Some((log.dir().to_owned(), log.verifier().to_text())),
            None => audit_file = Some(json_path),
        }
        parts.audit_sink = Some(sink);
        parts.trail = Some(trail);
    }
    let deployer = Deployer::new(config, parts.trail.clone().unwrap_or(Trail::Off))?;
    if parts.exports.is_none() {
        parts.exports = Some(Arc::new(exports::Exports::new(
            &state_dir,
            parts.trail.as_ref().and_then(Trail::log).cloned(),
            deployer.gate_config().clone(),
        )));
    }
    if parts.registry.is_none() {
        parts.registry = Some(Arc::new(registry::Versions::new(
            &state_dir,
            parts.trail.as_ref().and_then(Trail::log).cloned(),
            deployer.gate_config().clone(),
            config.registry.clone(),
        )));
    }
    let config_models = config.clone();
    let loader = deployer.clone();
    let (models, watched) =
        tokio::task::spawn_blocking(move || load_models(&config_models, &loader))
            .await
            .map_err(|err| GateError::Io {
                what: "loading the models".into(),
                source: std::io::Error::other(err.to_string()),
            })??;
    let model_names = config.models.iter().map(|m| m.name.clone()).collect();
    let (gate, audit_task) = Gate::build(config, models, parts)?;
    let tls = if config.server.plain_http {
        None
    } else {
        let cert = Arc::new(tls::server_cert(config, &state_dir)?);
        let server = tls::server_config(config, &cert)?;
        Some((cert, tokio_rustls::TlsAcceptor::from(Arc::new(server))))
    };
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| GateError::Io {
                what: format!("cannot listen on `{addr}`"),
                source,
            })
    };
    let listener = bind(config.server.listen).await?;
    let admin = match config.server.admin_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let local = |l: &TcpListener| {
        l.local_addr().map_err(|source| GateError::Io {
            what: "cannot read the listening address".into(),
            source,
        })
    };
    let address = local(&listener)?;
    let admin_address = admin.as_ref().map(local).transpose()?;
    Ok(Prepared {
        gate: Arc::new(gate),
        audit_task,
        address,
        admin_address,
        fingerprint: tls.as_ref().map(|(cert, _)| cert.fingerprint()),
        self_signed: tls.as_ref().is_some_and(|(cert, _)| cert.self_signed),
        cert_path: tls.as_ref().map(|(cert, _)| cert.cert_path.clone()),
        tls,
        listener,
        admin,
        reload_every: Duration::from_secs(config.tls.reload_secs),
        auth_reload_every: Duration::from_secs(config.policy.reload_secs),
        model_reload_every: (config.deploy.reload_secs > 0)
            .then(|| Duration::from_secs(config.deploy.reload_secs)),
        deployer,
        watched,
        audit_log,
        grace: Duration::from_secs(config.server.shutdown_grace_secs),
        new_api_key,
        key_store,
        audit_path: audit_file,
        models: model_names,
    })
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("address", &self.address)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// The gate (for in-process checks).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// Serves until `shutdown` turns true, then stops accepting, drains in-flight requests (up to the grace period)
    /// and flushes the audit trail.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) {
        let Prepared {
            gate,
            audit_task,
            listener,
            admin,
            tls,
            reload_every,
            auth_reload_every,
            model_reload_every,
            deployer,
            watched,
            grace,
            ..
        } = self;
        let model_watcher = model_reload_every
            .map(|every| tokio::spawn(watch_models(Arc::clone(&gate), deployer, watched, every)));
        let reload_gate = Arc::clone(&gate);
        let auth_watcher = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(auth_reload_every);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let gate = Arc::clone(&reload_gate);
                // File reads and Cedar validation are blocking work.
                let _ = tokio::task::spawn_blocking(move || gate.reload_auth()).await;
            }
        });
        let (acceptor, watcher) = match tls {
            Some((cert, acceptor)) => (
                Some(acceptor),
                Some(tokio::spawn(tls::watch(cert, reload_every))),
            ),
            None => (None, None),
        };
        let admin_task = admin.map(|admin| {
            tokio::spawn(listener::serve_admin(
                Arc::clone(&gate),
                admin,
                shutdown.clone(),
            ))
        });
        let mut ready_watch = shutdown.clone();
        let ready_gate = Arc::clone(&gate);
        let ready_task = tokio::spawn(async move {
            let _ = ready_watch.wait_for(|stop| *stop).await;
            ready_gate.ready.store(false, Ordering::Relaxed);
        });
        let server = Arc::new(listener::Listener::new(Arc::clone(&gate), acceptor));
        server.serve(listener, shutdown, grace).await;
        ready_task.abort();
        auth_watcher.abort();
        if let Some(task) = model_watcher {
            task.abort();
            let _ = task.await;
        }
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        if let Some(task) = admin_task {
            task.abort();
        }
        let trail = gate.trail.clone();
        drop(gate);
        if let Some(task) = audit_task {
            // Every connection task holding the gate has ended or is past the grace period; give the writer a moment.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // The last records are durable; sign a checkpoint over them.
        let _ = tokio::task::spawn_blocking(move || trail.checkpoint()).await;
    }
}

/// Polls the local models' files; a changed model goes through the deployment gate again and is swapped in only
/// if it passes. A refused or broken version is recorded and the serving one stays.
async fn watch_models(
    gate: Arc<Gate>,
    deployer: Deployer,
    mut watched: Vec<Watched>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        for model in &mut watched {
            let source = model.source.clone();
            let fingerprint = tokio::task::spawn_blocking(move || source.fingerprint())
                .await
                .ok()
                .flatten();
            if fingerprint == model.fingerprint {
                continue;
            }
            // Remembered whatever the verdict: a refused version is not retried until the files change again.
            model.fingerprint = fingerprint;
            let (name, source, loader) =
                (model.name.clone(), model.source.clone(), deployer.clone());
            let loaded = tokio::task::spawn_blocking(move || loader.load(&name, &source)).await;
            match loaded {
                Ok(Ok(deployed)) => {
                    let (gate, name) = (Arc::clone(&gate), model.name.clone());
                    let swapped =
                        tokio::task::spawn_blocking(move || gate.swap_model(&name, deployed.model))
                            .await;
                    match swapped {
                        Ok(Ok(())) => {
                            model.summary = verdict(&deployed.report);
                            tracing::info!(model = %model.name, "new version passed the deployment gate and is serving");
                        }
                        Ok(Err(err)) => {
                            tracing::error!(model = %model.name, error = %err, "cannot start the new version; the previous one keeps serving")
                        }
                        Err(err) => {
                            tracing::error!(model = %model.name, error = %err, "reload failed; the previous version keeps serving")
                        }
                    }
                }
                Ok(Err(err)) => {
                    tracing::error!(model = %model.name, error = %err, "reload refused; the previous version keeps serving")
                }
                Err(err) => {
                    tracing::error!(model = %model.name, error = %err, "reload failed; the previous version keeps serving")
                }
            }
        }
    }
}
