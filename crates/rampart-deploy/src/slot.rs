//! [`ModelSlot`]: the one place a serving model lives. Readers take an `Arc` of the current version without
//! locking (arc-swap); a load reads the candidate into memory, runs the gate over exactly those bytes, builds
//! the model from them, and swaps it in only then. A refused or failing candidate changes nothing: the previous
//! version keeps serving. Every decision is appended to the audit log when one is attached.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use rampart_seal::MemoryFile;

use crate::config::GateConfig;
use crate::error::{Error, Result};
use crate::gate::{check_files, read_dir, GateReport};

/// A model that passed the gate, with the report that let it in.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The built model.
    pub model: T,
    /// The gate's report.
    pub report: GateReport,
}

/// Holds the serving version of one model.
pub struct ModelSlot<T> {
    current: ArcSwapOption<Loaded<T>>,
    config: GateConfig,
    log: Option<Arc<rampart_log::Log>>,
    actor: String,
    // Serialises loads so two reloads cannot interleave their gate and swap.
    loading: Mutex<()>,
}

impl<T> std::fmt::Debug for ModelSlot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSlot")
            .field("loaded", &self.current.load().is_some())
            .finish()
    }
}

impl<T> ModelSlot<T> {
    /// An empty slot gating with `config`, recording decisions in `log` (if any) as `actor`.
    pub fn new(
        config: GateConfig,
        log: Option<Arc<rampart_log::Log>>,
        actor: impl Into<String>,
    ) -> Self {
        ModelSlot {
            current: ArcSwapOption::empty(),
            config,
            log,
            actor: actor.into(),
            loading: Mutex::new(()),
        }
    }

    /// The serving version, if any.
    pub fn current(&self) -> Option<Arc<Loaded<T>>> {
        self.current.load_full()
    }

    /// Reads `model_dir` into memory, gates it and, if it passes, builds it with `build` and swaps it in.
    pub fn load_dir<E: std::fmt::Display>(
        &self,
        model_dir: &Path,
        build: impl FnOnce(&[MemoryFile]) -> std::result::Result<T, E>,
    ) -> Result<Arc<Loaded<T>>> {
        let files = match read_dir(model_dir, self.config.policy.max_bytes) {
            Ok(files) => files,
            Err(e) => {
                self.audit(
                    rampart_log::Record::new("deploy.load", &self.actor)
                        .subject("model", model_dir.display().to_string())
                        .outcome("error"),
                )?;
                return Err(e);
            }
        };
        self.load_files(&model_dir.display().to_string(), files, build)
    }

    /// Gates files already in memory (a sealed registry version) and, if they pass, builds and swaps them in.
    pub fn load_files<E: std::fmt::Display>(
        &self,
        name: &str,
        files: Vec<MemoryFile>,
        build: impl FnOnce(&[MemoryFile]) -> std::result::Result<T, E>,
    ) -> Result<Arc<Loaded<T>>> {
        let _guard = self
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let report = check_files(name, &files, &self.config);
        if !report.passed {
            self.audit(report.record(&self.actor))?;
            tracing::warn!(
                model = name,
                "deployment gate refused the model; the previous version keeps serving"
            );
            return Err(Error::Refused(Box::new(report)));
        }
        let model = match build(&files) {
            Ok(model) => model,
            Err(e) => {
                let mut record = report.record(&self.actor).outcome("error");
                record.action = "deploy.load".into();
                self.audit(record)?;
                return Err(Error::Denied(format!(
                    "`{name}` passed the gate but does not load: {e}"
                )));
            }
        };
        // Recorded before the swap: if the log cannot take it, the new version does not serve.
        let mut record = report.record(&self.actor);
        record.action = "deploy.load".into();
        self.audit(record)?;
        let loaded = Arc::new(Loaded { model, report });
        self.current.store(Some(Arc::clone(&loaded)));
        Ok(loaded)
    }

    fn audit(&self, record: rampart_log::Record) -> Result<()> {
        if let Some(log) = &self.log {
            log.append_json(&record)?;
        }
        Ok(())
    }
}
