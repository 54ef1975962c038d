//! The deployment gate in front of every model the gateway loads or reloads.
//!
//! A model's files are read into memory (a sealed model is decrypted there, never onto the disk), checked by
//! `rampart-deploy`'s gate (the signature of a trusted key over every file, a clean `rampart-scan`, the size and
//! format policy), and the model is built from exactly the bytes that were checked. Every decision is recorded
//! in the audit trail before it takes effect; a refused version is never served, and on a reload the previous
//! version keeps serving.
//!
//! `[deploy]` configures it. Verification is on by default: a gateway with local models and no trusted key does
//! not start. `verify = false` skips the signature only (the scan and the policy still run) and is warned about.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rampart_deploy::{GateConfig, GateReport, Policy, TrustedKey};
use rampart_infer::{Model, OnnxModel};
use rampart_seal::MemoryFile;
use serde::Deserialize;

use crate::config::{Config, ConfigError, ModelConfig};
use crate::trail::Trail;

/// The environment variable holding an age identity for sealed models whose config names no identity file.
pub const IDENTITY_ENV: &str = "RAMPART_AGE_IDENTITY";

/// `[deploy]`: the deployment gate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Verify each model's signature against `trusted_keys`; `false` serves unsigned models (scan and policy
    /// still run).
    pub verify: bool,
    /// PEM public keys (ECDSA, as `rampart keygen` writes them) whose signature is accepted; any one suffices.
    pub trusted_keys: Vec<PathBuf>,
    /// The signature file inside the model directory (an OpenSSF model-signing bundle).
    pub signature: String,
    /// Scan findings at or above this severity refuse the model: `info`, `low`, `medium`, `high`, `critical`.
    pub fail_on: String,
    /// Size and format policy: `max_bytes`, `max_files`, `allowed_extensions`.
    pub policy: Policy,
    /// How often model files are checked for changes, in seconds (0: never reload).
    pub reload_secs: u64,
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            verify: true,
            trusted_keys: Vec::new(),
            signature: "model.sig".into(),
            fail_on: "medium".into(),
            policy: Policy::default(),
            reload_secs: 2,
        }
    }
}

impl DeployConfig {
    /// The checks made at load, before any file is read.
    pub fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: config.source.clone(),
            key: key.into(),
            message,
        };
        if rampart_deploy::config::parse_severity(&self.fail_on).is_none() {
            return Err(invalid(
                "deploy.fail_on",
                format!(
                    "`{}` is not one of info, low, medium, high, critical",
                    self.fail_on
                ),
            ));
        }
        if let Err(err) = rampart_digest::ManifestPath::new(&self.signature) {
            return Err(invalid("deploy.signature", err.to_string()));
        }
        let local = config.models.iter().any(|m| m.upstream.is_none());
        if self.verify && local && self.trusted_keys.is_empty() {
            return Err(invalid(
                "deploy.trusted_keys",
                "models are verified before they are served, and no key is trusted: name the signers' public \
                 keys (`rampart keygen`, then `rampart sign MODEL_DIR --key KEY`) in `deploy.trusted_keys` (for a \
                 model directory served without a config: its `release.pub`), or set `deploy.verify = false` to \
                 serve unsigned models"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Reads the trusted keys and builds the gate's configuration.
    pub fn gate_config(&self, config: &Config) -> Result<GateConfig, DeployError> {
        let mut keys = Vec::new();
        for path in &self.trusted_keys {
            let full = config.resolve(path);
            let text = std::fs::read_to_string(&full).map_err(|err| DeployError::Key {
                path: full.clone(),
                reason: err.to_string(),
            })?;
            let key =
                rampart_sign::VerifyingKey::from_pem(&text).map_err(|err| DeployError::Key {
                    path: full.clone(),
                    reason: err.to_string(),
                })?;
            keys.push(TrustedKey {
                name: path.display().to_string(),
                key,
            });
        }
        let mut gate = GateConfig::new(keys);
        gate.signature.clone_from(&self.signature);
        gate.policy = self.policy.clone();
        if let Some(severity) = rampart_deploy::config::parse_severity(&self.fail_on) {
            gate.fail_on = severity;
        }
        Ok(gate)
    }
}

/// Why a model was not loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The gate refused it.
    #[error("the deployment gate refused model `{model}`: {summary}")]
    Refused {
        /// The model.
        model: String,
        /// Every failed check.
        summary: String,
    },
    /// A trusted key could not be read.
    #[error("cannot read the trusted key `{}`: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model's files could not be read.
    #[error("cannot read model `{model}`: {reason}")]
    Read {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// A sealed model could not be decrypted.
    #[error("cannot unseal model `{model}`: {reason}")]
    Unseal {
        /// The model.
        model: String,
        /// Why, and what to do.
        reason: String,
    },
    /// It passed the gate but the runtime cannot load it.
    #[error("model `{model}` passed the deployment gate but does not load: {reason}")]
    Build {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// The decision could not be recorded, so it did not take effect.
    #[error("cannot record the deployment of model `{model}` in the audit trail: {source}")]
    Audit {
        /// The model.
        model: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where a local model's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A model directory on disk, signed as a whole; `file` is the ONNX file inside it.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The ONNX file, relative to `dir`.
        file: PathBuf,
    },
    /// An age-sealed model (a sealed directory holding the signature, or one file).
    Sealed {
        /// The sealed file.
        path: PathBuf,
        /// The identity file (mode 0600); `None`: `$RAMPART_AGE_IDENTITY`.
        identity: Option<PathBuf>,
        /// The ONNX file inside; `None`: the only `.onnx` file.
        entry: Option<PathBuf>,
    },
}

impl Source {
    /// The source of a configured model; `None` for an upstream one.
    pub fn of(config: &Config, spec: &ModelConfig) -> Option<Source> {
        if let Some(sealed) = &spec.sealed {
            return Some(Source::Sealed {
                path: config.resolve(sealed),
                identity: spec.identity.as_deref().map(|p| config.resolve(p)),
                entry: spec.entry.clone(),
            });
        }
        let onnx = config.resolve(spec.onnx.as_deref()?);
        let dir = onnx
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let file = PathBuf::from(onnx.file_name()?);
        Some(Source::Dir { dir, file })
    }

    /// A cheap summary of the files' sizes and modification times: when it changes, the model is checked again.
    pub fn fingerprint(&self) -> Option<u64> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        let mut stamp = |path: &Path| -> Option<()> {
            let meta = std::fs::metadata(path).ok()?;
            path.hash(&mut hasher);
            meta.len().hash(&mut hasher);
            meta.modified().ok().hash(&mut hasher);
            Some(())
        };
        match self {
            Source::Sealed { path, .. } => stamp(path)?,
            Source::Dir { dir, .. } => {
                let listing = rampart_digest::walk(
                    dir,
                    &rampart_digest::WalkOptions {
                        ignore: rampart_digest::IgnoreRules::git(),
                        follow_symlinks: false,
                    },
                )
                .ok()?;
                for entry in &listing.files {
                    stamp(&entry.source)?;
                }
                listing.symlinks.len().hash(&mut hasher);
            }
        }
        Some(hasher.finish())
    }
}

/// Loads models through the gate and records every decision.
#[derive(Debug, Clone)]
pub struct Deployer {
    gate: GateConfig,
    verify: bool,
    trail: Trail,
}

/// A model that passed the gate.
#[derive(Debug)]
pub struct Deployed {
    /// The model, built from the checked bytes.
    pub model: Arc<dyn Model>,
    /// The gate's report.
    pub report: GateReport,
}

impl Deployer {
    /// A deployer for `config`'s `[deploy]`, recording into `trail`.
    pub fn new(config: &Config, trail: Trail) -> Result<Deployer, DeployError> {
        if !config.deploy.verify {
            tracing::warn!(
                "model signatures are NOT verified (deploy.verify = false); the scan and the policy still run"
            );
        }
        Ok(Deployer {
            gate: config.deploy.gate_config(config)?,
            verify: config.deploy.verify,
            trail,
        })
    }

    /// The gate's configuration (trusted keys, scan severity, policy).
    pub fn gate_config(&self) -> &GateConfig {
        &self.gate
    }

    /// Reads, gates and builds `name` from `source`; records the decision before returning it.
    pub fn load(&self, name: &str, source: &Source) -> Result<Deployed, DeployError> {
        let files = match self.read(name, source) {
            Ok(files) => files,
            Err(err) => {
                self.record(
                    rampart_log::Record::new("deploy.load", "gateway")
                        .subject("model", name)
                        .outcome("error"),
                    name,
                )?;
                return Err(err);
            }
        };
        let mut report = rampart_deploy::check_files(name, &files, &self.gate);
        if !self.verify {
            report.passed = report
                .checks
                .iter()
                .filter(|c| c.name != "signature")
                .all(|c| c.passed);
        }
        let mut record = report.record("gateway");
        record.action = "deploy.load".into();
        if !report.passed {
            self.record(record, name)?;
            tracing::warn!(model = name, reason = %report.summary(), "the deployment gate refused the model");
            return Err(DeployError::Refused {
                model: name.to_owned(),
                summary: report.summary(),
            });
        }
        let built = entry(source, &files)
            .ok_or_else(|| "no ONNX file in the model (name it with `entry`)".to_owned())
            .and_then(|file| {
                OnnxModel::from_bytes(name, &file.data).map_err(|err| err.to_string())
            });
        match built {
            Ok(model) => {
                if !self.verify {
                    record = record.subject("signature", "not verified");
                }
                self.record(record, name)?;
                Ok(Deployed {
                    model: Arc::new(model),
                    report,
                })
            }
            Err(reason) => {
                self.record(record.outcome("error"), name)?;
                Err(DeployError::Build {
                    model: name.to_owned(),
                    reason,
                })
            }
        }
    }

    fn record(&self, record: rampart_log::Record, model: &str) -> Result<(), DeployError> {
        self.trail
            .append(&record)
            .map_err(|source| DeployError::Audit {
                model: model.to_owned(),
                source,
            })
    }

    fn read(&self, name: &str, source: &Source) -> Result<Vec<MemoryFile>, DeployError> {
        let limit = self.gate.policy.max_bytes;
        match source {
            Source::Dir { dir, .. } => {
                rampart_deploy::gate::read_dir(dir, limit).map_err(|err| DeployError::Read {
                    model: name.to_owned(),
                    reason: err.to_string(),
                })
            }
            Source::Sealed { path, identity, .. } => {
                let unseal = |reason: String| DeployError::Unseal {
                    model: name.to_owned(),
                    reason,
                };
                let keys = identities(identity.as_deref()).map_err(unseal)?;
                let file = std::fs::File::open(path)
                    .map_err(|err| unseal(format!("cannot read `{}`: {err}", path.display())))?;
                rampart_seal::unseal_to_memory(file, &keys, path, limit)
                    .map_err(|err| unseal(err.to_string()))
            }
        }
    }
}

/// The identities that open a sealed model: the file (which must be mode 0600), else `$RAMPART_AGE_IDENTITY`.
fn identities(file: Option<&Path>) -> Result<rampart_seal::Identities, String> {
    let mut keys = rampart_seal::Identities::new();
    match file {
        Some(path) => keys.extend(rampart_seal::load_identities(path).map_err(|e| e.to_string())?),
        None => match std::env::var(IDENTITY_ENV) {
            Ok(text) if !text.trim().is_empty() => keys.extend(
                rampart_seal::identities_from_text(&text, Path::new(IDENTITY_ENV))
                    .map_err(|e| e.to_string())?,
            ),
            _ => {
                return Err(format!(
                "no identity: set the model's `identity` to an age identity file of mode 0600, or \
                     ${IDENTITY_ENV}"
            ))
            }
        },
    }
    Ok(keys)
}

/// The ONNX file to run among a model's files.
fn entry<'a>(source: &Source, files: &'a [MemoryFile]) -> Option<&'a MemoryFile> {
    let named = match source {
        Source::Dir { file, .. } => Some(file.as_path()),
        Source::Sealed { entry, .. } => entry.as_deref(),
    };
    match named {
        Some(name) => files.iter().find(|f| f.path == name),
        None => {
            let mut onnx = files.iter().filter(|f| {
                f.path
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
            });
            let first = onnx.next();
            if onnx.next().is_some() {
                return None;
            }
            first
        }
    }
}
