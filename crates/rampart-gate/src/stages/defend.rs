//! The inference-time defences of `rampart-defend` as gateway stages, configured per model in `[models.defend]`.
//!
//! Around the model call, in this order (`pipeline.rs` makes one call per group):
//! 1. **images** (inside validate, before the tensors are checked against the model): PNG/JPEG in a `BYTES` tensor
//!    decoded to the model's `FP32` rows within limits;
//! 2. **extraction penalties**: a principal banned or throttled by the extraction monitor is refused (403 / 429);
//! 3. **schema**: value ranges against the training data's profile (422);
//! 4. **sanitise**: the configured sanitisers, in order, on every row;
//! 5. **infer**: the rows and, when the detector is on, their squeezed copies in ONE batch (the detector costs no
//!    second trip to the model);
//! 6. **detector**: the combined score; over the calibrated threshold the request is refused (422) or answered with
//!    `x-rampart-flag: adversarial`, as configured;
//! 7. **extraction**: each row observed for the principal (the client address without authentication);
//!    throttle and ban decisions apply to the principal's later requests, a ban to this one too; shadow mode records;
//! 8. **watermark**: DAWN's keyed wrong label swapped into the scores, so the hardened answer carries it;
//! 9. **harden**: label only, top-k or rounded probabilities for the principal's role;
//! 10. **anomaly** (when the answer is recorded): rate, rows, error ratio and addresses per principal and model.
//!
//! A stage that cannot decide (an uncalibrated detector, a model answer of the wrong shape) refuses the request
//! (503, `fail_closed`) unless `on_error = "allow"`; either way the audit record says so. Extraction bans are per
//! principal, kept here, and do not strike the address: clients behind one address (a NAT, a proxy) are not banned
//! for one thief among them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use rampart_auth::Principal;
use rampart_defend::anomaly::{AnomalyConfig, AnomalyMonitor};
use rampart_defend::detect::{self, Component, Detector, DetectorConfig};
use rampart_defend::extraction::{self, ExtractionConfig, ExtractionMonitor, Signal};
use rampart_defend::harden::Hardening;
use rampart_defend::image_input::{self, ImageLimits};
use rampart_defend::profile::Profile;
use rampart_defend::sanitise::{ImageShape, Sanitiser};
use rampart_defend::schema::SchemaCheck;
use rampart_defend::watermark::{WatermarkKey, Watermarker};
use rampart_defend::DefendError;
use rampart_infer::{DataType, Model, Tensor, TensorData};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{Config, ConfigError, Rate};
use crate::metrics::{DefendLabels, Metrics};
use crate::pipeline::Refusal;
use crate::stages::rate::{Gcra, RateDecision};

/// A stage's table with an `enabled` switch (default `true`) beside the stage's own keys.
#[derive(Debug, Clone)]
pub struct Switch<T> {
    /// Whether the stage runs.
    pub enabled: bool,
    /// The stage's settings.
    pub settings: T,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Switch<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = toml::Table::deserialize(deserializer)?;
        let enabled = match table.remove("enabled") {
            None => true,
            Some(toml::Value::Boolean(on)) => on,
            Some(_) => return Err(D::Error::custom("`enabled` must be true or false")),
        };
        let settings = T::deserialize(toml::Value::Table(table)).map_err(D::Error::custom)?;
        Ok(Switch { enabled, settings })
    }
}

impl<T> Switch<T> {
    fn on(switch: &Option<Switch<T>>) -> Option<&T> {
        switch.as_ref().filter(|s| s.enabled).map(|s| &s.settings)
    }
}

/// What a stage that cannot decide does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refuse the request (503): fail closed.
    #[default]
    Reject,
    /// Serve it without that stage's verdict (recorded in the audit trail).
    Allow,
}

/// `[models.defend]`: the defences of one model. Each stage is a sub-table; absent or `enabled = false`: off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefendConfig {
    /// The training data's profile (`rampart profile DATA -o profile.json`); the schema check, the detector and
    /// the extraction monitor need it.
    pub profile: Option<PathBuf>,
    /// The model input the defences read (default: the model's only input).
    pub input: Option<String>,
    /// The model output holding the class scores (default: the model's first output).
    pub output: Option<String>,
    /// The image layout of one row (default: a square grey image, 8x8 for 64 values).
    pub shape: Option<ImageShape>,
    /// A stage that cannot decide: `reject` (default, 503) or `allow`.
    #[serde(default)]
    pub on_error: OnError,
    /// `[models.defend.images]`: PNG/JPEG inputs in `BYTES` tensors, with these limits.
    pub images: Option<Switch<ImageLimits>>,
    /// `[models.defend.schema]`: value ranges from the profile.
    pub schema: Option<Switch<SchemaConfig>>,
    /// `[models.defend.sanitise]`: sanitisers applied to every row.
    pub sanitise: Option<Switch<SanitiseConfig>>,
    /// `[models.defend.detector]`: adversarial-input detection.
    pub detector: Option<Switch<DetectorStageConfig>>,
    /// `[models.defend.extraction]`: extraction detection per principal.
    pub extraction: Option<Switch<ExtractionStageConfig>>,
    /// `[models.defend.harden]`: what each role receives (`default`, `[models.defend.harden.roles]`).
    pub harden: Option<Switch<Hardening>>,
    /// `[models.defend.watermark]`: DAWN output watermarking.
    pub watermark: Option<Switch<WatermarkConfig>>,
    /// `[models.defend.anomaly]`: access-pattern monitoring.
    pub anomaly: Option<Switch<AnomalyConfig>>,
}

/// `[models.defend.schema]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaConfig {
    /// Slack outside the training range, as a fraction of each feature's range (0: the range exactly).
    pub tolerance: f64,
}

/// `[models.defend.sanitise]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanitiseConfig {
    /// The sanitisers in order: `{ kind = "bit_depth", bits = 4 }`, `median` (`size`), `gaussian` (`sigma`),
    /// `low_pass` (`cutoff`), `jpeg` (`quality`).
    pub steps: Vec<Sanitiser>,
}

/// `[models.defend.detector]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorStageConfig {
    /// `reject` (422) or `flag` (header and audit record).
    pub action: detect::Action,
    /// The false-positive rate the threshold is calibrated to.
    pub target_fpr: f64,
    /// Squeezers compared with the input (default: 2-bit depth and a 2x2 median).
    pub squeezers: Option<Vec<Sanitiser>>,
    /// Neighbours consulted (default 5).
    pub k: Option<usize>,
    /// Components combined (default: all).
    pub components: Option<Vec<Component>>,
    /// Clean held-out rows (CSV with the profile's columns and a label column), NOT the profile's training rows:
    /// the threshold is calibrated on them at start.
    pub calibration_data: Option<PathBuf>,
    /// The label column of `calibration_data`.
    pub label_column: String,
}

impl Default for DetectorStageConfig {
    fn default() -> Self {
        DetectorStageConfig {
            action: detect::Action::Reject,
            target_fpr: 0.02,
            squeezers: None,
            k: None,
            components: None,
            calibration_data: None,
            label_column: "label".into(),
        }
    }
}

/// `[models.defend.extraction]`; the monitor's own settings in `[models.defend.extraction.monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionStageConfig {
    /// Record decisions without acting on them.
    pub shadow: bool,
    /// How long an extraction ban lasts, in seconds.
    pub ban_secs: u64,
    /// The rate a throttled principal is held to.
    pub throttle: Rate,
    /// PRADA and signal thresholds.
    pub monitor: ExtractionConfig,
}

impl Default for ExtractionStageConfig {
    fn default() -> Self {
        ExtractionStageConfig {
            shadow: false,
            ban_secs: 3600,
            throttle: Rate {
                per_second: 1.0,
                burst: 10,
            },
            monitor: ExtractionConfig::default(),
        }
    }
}

/// `[models.defend.watermark]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// The key file (`rampart watermark keygen -o FILE`; relative to the config's directory).
    pub key: PathBuf,
    /// The fraction of queries answered with the keyed wrong label.
    #[serde(default = "default_fraction")]
    pub fraction: f64,
}

fn default_fraction() -> f64 {
    0.05
}

/// What the defences decided about one request, for its audit record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DefendAudit {
    /// Rows the defences saw.
    pub rows: usize,
    /// Images decoded from `BYTES`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Whether sanitisers ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sanitised: bool,
    /// The highest detector score of the rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_score: Option<f64>,
    /// The calibrated threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_threshold: Option<f64>,
    /// Rows over the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adversarial_rows: Option<usize>,
    /// `allow`, `throttle` or `ban`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extraction: Option<extraction::Action>,
    /// What would have been done (differs in shadow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extraction_would: Option<extraction::Action>,
    /// The principal's extraction signals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extraction_signals: Vec<Signal>,
    /// The output policy applied (`label_only`, `top_k`, `full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardening: Option<&'static str>,
    /// The watermark key's id, when watermarking is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark_key: Option<String>,
    /// Rows answered with the watermark's wrong label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermarked_rows: Option<usize>,
    /// A stage that could not decide, and what was done (`stage: reason; failed closed|open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecided: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Penalty {
    Throttle,
    Ban(Instant),
}

#[derive(Debug)]
struct ExtractionStage {
    monitor: Mutex<ExtractionMonitor>,
    penalties: Mutex<HashMap<String, Penalty>>,
    throttle: Gcra<String>,
    ban: Duration,
    shadow: bool,
}

/// The defences of one model, built at start.
#[derive(Debug)]
pub struct Defences {
    model: String,
    input: String,
    output: Option<String>,
    width: usize,
    shape: ImageShape,
    on_error: OnError,
    images: Option<ImageLimits>,
    schema: Option<SchemaCheck>,
    sanitisers: Vec<Sanitiser>,
    detector: Option<Detector>,
    extraction: Option<ExtractionStage>,
    harden: Option<Hardening>,
    watermark: Option<Watermarker>,
    anomaly: Option<Mutex<AnomalyMonitor>>,
}

/// A request between the input stages and the output stages.
#[derive(Debug)]
pub struct Pending<'a> {
    defences: &'a Defences,
    principal: String,
    roles: Vec<String>,
    rows: usize,
    values: Vec<f32>,
}

/// Builds the defences of every model whose config has a `[models.defend]` table.
pub fn build_all(
    config: &Config,
    models: &HashMap<String, crate::stages::infer::ModelPool>,
) -> Result<HashMap<String, Defences>, ConfigError> {
    let mut all = HashMap::new();
    for (i, spec) in config.models.iter().enumerate() {
        let (Some(defend), Some(pool)) = (&spec.defend, models.get(&spec.name)) else {
            continue;
        };
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: config.source.clone(),
            key: format!(
                "models[{i}].defend{}{key}",
                if key.is_empty() { "" } else { "." }
            ),
            message,
        };
        let defences = Defences::build(config, &spec.name, defend, &*pool.model(), &invalid)?;
        all.insert(spec.name.clone(), defences);
    }
    Ok(all)
}

impl Defences {
    fn build(
        config: &Config,
        name: &str,
        defend: &DefendConfig,
        model: &dyn Model,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<Defences, ConfigError> {
        let meta = model.metadata();
        let input = match (&defend.input, meta.inputs.as_slice()) {
            (Some(input), _) => meta.inputs.iter().find(|s| &s.name == input),
            (None, [only]) => Some(only),
            (None, _) => None,
        }
        .filter(|_| meta.inputs.len() == 1)
        .ok_or_else(|| {
            invalid(
                "input",
                "the defences need a model with one input (FP32 rows); name it with `input`".into(),
            )
        })?;
        if input.datatype != DataType::Fp32 {
            return Err(invalid(
                "input",
                format!("input `{}` must be FP32 to be defended", input.name),
            ));
        }
        if let Some(output) = &defend.output {
            if !meta.outputs.iter().any(|s| &s.name == output) {
                return Err(invalid(
                    "output",
                    format!("the model has no output `{output}`"),
                ));
            }
        }
        let profile = match &defend.profile {
            Some(path) => {
                let path = config.resolve(path);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid("profile", format!("cannot read `{}`: {e}", path.display()))
                })?;
                Some(
                    Profile::from_json(&text)
                        .map_err(|e| invalid("profile", format!("`{}`: {e}", path.display())))?,
                )
            }
            None => None,
        };
        let declared = input
            .shape
            .iter()
            .skip(1)
            .try_fold(1_usize, |acc, &d| usize::try_from(d).ok().map(|d| acc * d));
        let width = match (declared, &profile) {
            (Some(w), _) if w > 0 => w,
            (_, Some(p)) => p.width(),
            _ => {
                return Err(invalid(
                    "profile",
                    "the model's input width is not fixed; give a profile".into(),
                ))
            }
        };
        let shape = defend.shape.unwrap_or_else(|| {
            let side = (width as f64).sqrt().round() as usize;
            if side * side == width {
                ImageShape {
                    height: side,
                    width: side,
                    channels: 1,
                }
            } else {
                ImageShape {
                    height: 1,
                    width,
                    channels: 1,
                }
            }
        });
        if shape.len() != width {
            return Err(invalid(
                "shape",
                format!(
                    "{}x{}x{} is not the input's {width} values per row",
                    shape.height, shape.width, shape.channels
                ),
            ));
        }
        if let Some(p) = &profile {
            if p.width() != width {
                return Err(invalid(
                    "profile",
                    format!(
                        "the profile has {} features, the model's input {width}",
                        p.width()
                    ),
                ));
            }
        }
        let need_profile = |stage: &str| {
            profile.as_ref().ok_or_else(|| {
                invalid(
                    stage,
                    "needs the training data's profile: set `profile` (made by `rampart profile DATA`)"
                        .into(),
                )
            })
        };
        let schema = match Switch::on(&defend.schema) {
            Some(s) => Some(
                SchemaCheck::new(need_profile("schema")?, s.tolerance)
                    .map_err(|e| invalid("schema.tolerance", e.to_string()))?,
            ),
            None => None,
        };
        let sanitisers = Switch::on(&defend.sanitise)
            .map(|s| s.steps.clone())
            .unwrap_or_default();
        for step in &sanitisers {
            step.validate()
                .map_err(|e| invalid("sanitise.steps", e.to_string()))?;
        }
        let detector = match Switch::on(&defend.detector) {
            Some(d) => Some(build_detector(
                config,
                d,
                shape,
                need_profile("detector")?,
                &input.name,
                model,
                invalid,
            )?),
            None => None,
        };
        let extraction = match Switch::on(&defend.extraction) {
            Some(e) => {
                let mut monitor = e.monitor.clone();
                monitor.shadow |= e.shadow;
                if e.ban_secs == 0
                    || !(e.throttle.per_second.is_finite() && e.throttle.per_second > 0.0)
                    || e.throttle.burst == 0
                {
                    return Err(invalid(
                        "extraction",
                        "`ban_secs` must be at least 1, `throttle` positive".into(),
                    ));
                }
                let reference = need_profile("extraction")?.reference.clone();
                Some(ExtractionStage {
                    monitor: Mutex::new(
                        ExtractionMonitor::new(monitor.clone(), reference)
                            .map_err(|e| invalid("extraction", e.to_string()))?,
                    ),
                    penalties: Mutex::new(HashMap::new()),
                    throttle: Gcra::new(e.throttle, monitor.max_principals),
                    ban: Duration::from_secs(e.ban_secs),
                    shadow: monitor.shadow,
                })
            }
            None => None,
        };
        let harden = Switch::on(&defend.harden).cloned();
        if let Some(h) = &harden {
            h.validate().map_err(|e| invalid("harden", e.to_string()))?;
        }
        let watermark = match Switch::on(&defend.watermark) {
            Some(w) => {
                let path = config.resolve(&w.key);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    invalid(
                        "watermark.key",
                        format!(
                            "cannot read `{}`: {e}; create it with `rampart watermark keygen -o FILE`",
                            path.display()
                        ),
                    )
                })?;
                let key = WatermarkKey::from_hex(&text)
                    .map_err(|e| invalid("watermark.key", e.to_string()))?;
                Some(
                    Watermarker::new(key, w.fraction)
                        .map_err(|e| invalid("watermark.fraction", e.to_string()))?,
                )
            }
            None => None,
        };
        let anomaly = match Switch::on(&defend.anomaly) {
            Some(a) => Some(Mutex::new(
                AnomalyMonitor::new(a.clone()).map_err(|e| invalid("anomaly", e.to_string()))?,
            )),
            None => None,
        };
        tracing::info!(
            model = name,
            images = Switch::on(&defend.images).is_some(),
            schema = schema.is_some(),
            sanitisers = sanitisers.len(),
            detector = detector.is_some(),
            extraction = extraction.is_some(),
            harden = harden.is_some(),
            watermark = watermark.as_ref().map(Watermarker::key_id),
            anomaly = anomaly.is_some(),
            "defences on"
        );
        Ok(Defences {
            model: name.to_owned(),
            input: input.name.clone(),
            output: defend.output.clone(),
            width,
            shape,
            on_error: defend.on_error,
            images: Switch::on(&defend.images).copied(),
            schema,
            sanitisers,
            detector,
            extraction,
            harden,
            watermark,
            anomaly,
        })
    }

    /// The images stage (run inside validate): every `BYTES` tensor named as the defended input becomes `FP32` rows.
    pub fn decode_images(
        &self,
        inputs: &mut [Tensor],
        audit: &mut Option<DefendAudit>,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let Some(limits) = &self.images else {
            return Ok(());
        };
        for tensor in inputs.iter_mut() {
            if tensor.name != self.input || !matches!(tensor.data, TensorData::Bytes(_)) {
                continue;
            }
            let decoded = image_input::decode_images(tensor, self.shape, limits, &self.input)
                .map_err(|e| {
                    self.count(metrics, "images", "refused");
                    Refusal::new(
                        "images",
                        StatusCode::BAD_REQUEST,
                        "bad_image",
                        e.to_string(),
                    )
                })?;
            audit.get_or_insert_with(DefendAudit::default).images = decoded.shape.first().copied();
            self.count(metrics, "images", "decoded");
            *tensor = decoded;
        }
        Ok(())
    }

    fn count(&self, metrics: &Metrics, stage: &'static str, outcome: &'static str) {
        metrics
            .defend
            .get_or_create(&DefendLabels {
                model: self.model.clone(),
                stage: stage.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A stage could not decide: refused (fail closed) or allowed, as configured; recorded either way.
    fn undecided(
        &self,
        stage: &'static str,
        err: &DefendError,
        audit: &mut DefendAudit,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        tracing::error!(model = %self.model, stage, error = %err, "a defence could not decide");
        let closed = self.on_error == OnError::Reject;
        audit.undecided = Some(format!(
            "{stage}: {err}; failed {}",
            if closed { "closed" } else { "open" }
        ));
        self.count(metrics, stage, "undecided");
        if closed {
            Err(Refusal::new(
                stage,
                StatusCode::SERVICE_UNAVAILABLE,
                "defence_undecided",
                "the request could not be checked; retry later",
            ))
        } else {
            Ok(())
        }
    }

    /// The input stages: extraction penalties, schema, sanitisers, then the squeezed copies the detector needs
    /// appended to the batch. Returns the inputs for the model.
    pub fn before_infer<'a>(
        &'a self,
        mut inputs: Vec<Tensor>,
        principal: Option<&Principal>,
        ip: IpAddr,
        audit: &mut Option<DefendAudit>,
        metrics: &Metrics,
    ) -> Result<(Vec<Tensor>, Pending<'a>), Refusal> {
        let (key, roles) = match principal {
            Some(p) => (p.id.clone(), p.roles.clone()),
            None => (
                format!("ip:{}", crate::stages::ban::canonical(ip)),
                Vec::new(),
            ),
        };
        let audit = audit.get_or_insert_with(DefendAudit::default);
        self.stage_penalties(&key, metrics)?;
        let tensor = inputs
            .iter_mut()
            .find(|t| t.name == self.input)
            .ok_or_else(|| {
                Refusal::new(
                    "validate",
                    StatusCode::BAD_REQUEST,
                    "bad_tensor",
                    format!("missing input `{}`", self.input),
                )
            })?;
        if let Some(schema) = &self.schema {
            schema.check(tensor).map_err(|e| {
                self.count(metrics, "schema", "refused");
                Refusal::new(
                    "schema",
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "outside_profile",
                    e.to_string(),
                )
            })?;
        }
        let TensorData::Fp32(values) = &mut tensor.data else {
            return Err(Refusal::new(
                "validate",
                StatusCode::BAD_REQUEST,
                "bad_tensor",
                format!("input `{}` must be FP32", self.input),
            ));
        };
        if values.is_empty() || values.len() % self.width != 0 {
            return Err(Refusal::new(
                "validate",
                StatusCode::BAD_REQUEST,
                "bad_tensor",
                format!(
                    "input `{}` must be rows of {} values",
                    self.input, self.width
                ),
            ));
        }
        let rows = values.len() / self.width;
        audit.rows = rows;
        for step in &self.sanitisers {
            if let Err(err) = step.apply_batch(values, self.shape) {
                self.undecided("sanitise", &err, audit, metrics)?;
            }
        }
        audit.sanitised = !self.sanitisers.is_empty();
        let kept = values.clone();
        if let Some(detector) = &self.detector {
            match detector.squeezed(&kept) {
                Ok(squeezed) => {
                    values.extend_from_slice(&squeezed);
                    // The batch grows; the per-row dimensions ([N, 64] or [N, 1, 8, 8]) stay.
                    if let Some(batch) = tensor.shape.first_mut() {
                        *batch = values.len() / self.width;
                    }
                }
                Err(err) => self.undecided("detector", &err, audit, metrics)?,
            }
        }
        Ok((
            inputs,
            Pending {
                defences: self,
                principal: key,
                roles,
                rows,
                values: kept,
            },
        ))
    }

    fn stage_penalties(&self, key: &str, metrics: &Metrics) -> Result<(), Refusal> {
        let Some(stage) = &self.extraction else {
            return Ok(());
        };
        let penalty = {
            let mut penalties = stage.penalties.lock().unwrap_or_else(|p| p.into_inner());
            match penalties.get(key).copied() {
                Some(Penalty::Ban(until)) if until <= Instant::now() => {
                    // The ban has run out: the principal starts afresh.
                    penalties.remove(key);
                    if let Ok(mut monitor) = stage.monitor.lock() {
                        monitor.forget(key);
                    }
                    None
                }
                other => other,
            }
        };
        match penalty {
            None => Ok(()),
            Some(Penalty::Ban(until)) => {
                self.count(metrics, "extraction", "banned");
                let wait = until.saturating_duration_since(Instant::now());
                let mut r = Refusal::new(
                    "extraction",
                    StatusCode::FORBIDDEN,
                    "extraction_banned",
                    "banned: the query pattern looks like model extraction",
                );
                r.headers.push((
                    hyper::header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().max(1)),
                ));
                Err(r)
            }
            Some(Penalty::Throttle) => match stage.throttle.check(&key.to_owned()) {
                RateDecision::Allow { .. } => Ok(()),
                RateDecision::Deny { retry_after, .. } => {
                    self.count(metrics, "extraction", "throttled");
                    let mut r = Refusal::new(
                        "extraction",
                        StatusCode::TOO_MANY_REQUESTS,
                        "extraction_throttled",
                        "throttled: the query pattern looks like model extraction",
                    );
                    r.headers.push((
                        hyper::header::RETRY_AFTER,
                        HeaderValue::from(retry_after.as_secs().max(1)),
                    ));
                    Err(r)
                }
            },
        }
    }

    /// The anomaly stage: records the answered request; alerts are logged by the monitor and counted here.
    pub fn record_access(
        &self,
        principal: Option<&Principal>,
        ip: IpAddr,
        rows: usize,
        failed: bool,
        metrics: &Metrics,
    ) -> Vec<rampart_defend::anomaly::Alert> {
        let Some(anomaly) = &self.anomaly else {
            return Vec::new();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ip = crate::stages::ban::canonical(ip).to_string();
        let key = principal.map_or_else(|| format!("ip:{ip}"), |p| p.id.clone());
        let alerts = anomaly.lock().unwrap_or_else(|p| p.into_inner()).record(
            now,
            &key,
            &self.model,
            rows as u64,
            failed,
            &ip,
        );
        for _ in &alerts {
            self.count(metrics, "anomaly", "alert");
        }
        alerts
    }
}

fn build_detector(
    config: &Config,
    d: &DetectorStageConfig,
    shape: ImageShape,
    profile: &Profile,
    input: &str,
    model: &dyn Model,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Detector, ConfigError> {
    let mut settings = DetectorConfig::for_shape(shape);
    settings.action = d.action;
    settings.target_fpr = d.target_fpr;
    if let Some(s) = &d.squeezers {
        settings.squeezers = s.clone();
    }
    if let Some(k) = d.k {
        settings.k = k;
    }
    if let Some(c) = &d.components {
        settings.components = c.clone();
    }
    let mut detector =
        Detector::new(settings, profile, input).map_err(|e| invalid("detector", e.to_string()))?;
    let path = d.calibration_data.as_ref().ok_or_else(|| {
        invalid(
            "detector.calibration_data",
            "the detector cannot decide without calibration: name clean held-out rows (CSV, not the training rows)"
                .into(),
        )
    })?;
    let path = config.resolve(path);
    let file = std::fs::File::open(&path).map_err(|e| {
        invalid(
            "detector.calibration_data",
            format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    let (_, rows, _) =
        rampart_defend::profile::read_labelled_rows(file, &d.label_column).map_err(|e| {
            invalid(
                "detector.calibration_data",
                format!("`{}`: {e}", path.display()),
            )
        })?;
    let threshold = detector
        .calibrate(model, &rows)
        .map_err(|e| invalid("detector.calibration_data", e.to_string()))?
        .threshold;
    tracing::info!(
        threshold,
        rows = rows.len() / shape.len().max(1),
        "detector calibrated"
    );
    Ok(detector)
}

impl Pending<'_> {
    /// The output stages: detector, extraction, watermark, hardening. Returns the tensors to answer with and
    /// whether the client's list of wanted outputs still applies (not after hardening renames them).
    pub fn after_infer(
        self,
        outputs: Vec<Tensor>,
        audit: &mut Option<DefendAudit>,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
        metrics: &Metrics,
    ) -> Result<(Vec<Tensor>, bool), Refusal> {
        let d = self.defences;
        let audit = audit.get_or_insert_with(DefendAudit::default);
        let model_error = |message: String| DefendError::Model(message);
        // The model scored the rows and (with the detector on) their squeezed copies: keep the scores of all for
        // the detector, answer with the rows' own.
        let mut outputs = outputs;
        let index = match &d.output {
            Some(name) => outputs.iter().position(|t| &t.name == name),
            None => (!outputs.is_empty()).then_some(0),
        };
        let scores = index
            .and_then(|i| outputs.get(i))
            .ok_or_else(|| model_error("the model returned no scores".into()))
            .and_then(rampart_defend::rows_of);
        let (all_rows, classes, all_scores) = match scores {
            Ok(s) => s,
            Err(err) => {
                d.undecided("detector", &err, audit, metrics)?;
                return Ok((outputs, true));
            }
        };
        for t in &mut outputs {
            keep_rows(t, self.rows);
        }
        let score_rows: Vec<Vec<f32>> = all_scores
            .chunks(classes.max(1))
            .map(<[f32]>::to_vec)
            .collect();
        // A refused query still counts for extraction: probing is a pattern even when it is not answered.
        let mut rejected = None;
        if let Some(detector) = &d.detector {
            match detector.assess_scores(&self.values, &score_rows) {
                Ok(verdicts) => {
                    let flagged = verdicts.iter().filter(|v| v.adversarial).count();
                    audit.detector_score = verdicts.iter().map(|v| v.score).reduce(f64::max);
                    audit.detector_threshold = detector.calibration().map(|c| c.threshold);
                    audit.adversarial_rows = Some(flagged);
                    if flagged > 0 {
                        if detector.config().action == detect::Action::Reject {
                            d.count(metrics, "detector", "rejected");
                            rejected = Some(Refusal::new(
                                "detector",
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "adversarial_input",
                                "the input looks adversarial",
                            ));
                        } else {
                            d.count(metrics, "detector", "flagged");
                            headers.push((
                                HeaderName::from_static("x-rampart-flag"),
                                HeaderValue::from_static("adversarial"),
                            ));
                        }
                    } else {
                        d.count(metrics, "detector", "passed");
                    }
                }
                Err(err) => d.undecided("detector", &err, audit, metrics)?,
            }
        } else if all_rows != self.rows {
            let err = model_error(format!("{all_rows} score rows for {} rows", self.rows));
            d.undecided("infer", &err, audit, metrics)?;
        }
        let mut mine: Vec<Vec<f32>> = score_rows.into_iter().take(self.rows).collect();
        if let Some(stage) = &d.extraction {
            self.observe(stage, &mine, audit, metrics)?;
        }
        if let Some(refused) = rejected {
            return Err(refused);
        }
        if let Some(watermark) = &d.watermark {
            let mut marked = 0;
            for (row, scores) in self.values.chunks_exact(d.width).zip(mine.iter_mut()) {
                marked += usize::from(watermark.apply(row, scores).is_some());
            }
            audit.watermark_key = Some(watermark.key_id());
            audit.watermarked_rows = Some(marked);
            if marked > 0 {
                d.count(metrics, "watermark", "applied");
            }
            if let Some(t) = index.and_then(|i| outputs.get_mut(i)) {
                let flat: Vec<f32> = mine.iter().flatten().copied().collect();
                t.data = match t.data {
                    TensorData::Fp64(_) => {
                        TensorData::Fp64(flat.iter().map(|&v| f64::from(v)).collect())
                    }
                    _ => TensorData::Fp32(flat),
                };
            }
        }
        if let Some(harden) = &d.harden {
            let roles: Vec<&str> = self.roles.iter().map(String::as_str).collect();
            let policy = harden.policy_for(&roles);
            audit.hardening = Some(match policy {
                rampart_defend::harden::OutputPolicy::Full { .. } => "full",
                rampart_defend::harden::OutputPolicy::TopK { .. } => "top_k",
                rampart_defend::harden::OutputPolicy::LabelOnly => "label_only",
            });
            let scores = index.and_then(|i| outputs.get(i));
            match scores.map(|s| policy.apply(s)) {
                Some(Ok(hardened)) => return Ok((hardened, false)),
                Some(Err(err)) => d.undecided("harden", &err, audit, metrics)?,
                None => d.undecided("harden", &model_error("no scores".into()), audit, metrics)?,
            }
            // Failed open: never the raw scores; the label alone.
            let label_only = rampart_defend::harden::OutputPolicy::LabelOnly;
            if let Some(Ok(hardened)) = index
                .and_then(|i| outputs.get(i))
                .map(|s| label_only.apply(s))
            {
                return Ok((hardened, false));
            }
            return Err(Refusal::new(
                "harden",
                StatusCode::SERVICE_UNAVAILABLE,
                "defence_undecided",
                "the answer could not be hardened",
            ));
        }
        Ok((outputs, true))
    }

    fn observe(
        &self,
        stage: &ExtractionStage,
        scores: &[Vec<f32>],
        audit: &mut DefendAudit,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let d = self.defences;
        let mut last = None;
        {
            let mut monitor = stage.monitor.lock().unwrap_or_else(|p| p.into_inner());
            for (row, s) in self.values.chunks_exact(d.width).zip(scores) {
                let Some(predicted) = rampart_defend::argmax(s) else {
                    continue;
                };
                match monitor.observe(&self.principal, row, predicted) {
                    Ok(decision) => {
                        let worse = last
                            .as_ref()
                            .is_none_or(|l: &extraction::Decision| decision.would >= l.would);
                        if worse {
                            last = Some(decision);
                        }
                    }
                    Err(err) => {
                        drop(monitor);
                        return d.undecided("extraction", &err, audit, metrics);
                    }
                }
            }
        }
        let Some(decision) = last else {
            return Ok(());
        };
        audit.extraction = Some(decision.action);
        audit.extraction_would = Some(decision.would);
        audit.extraction_signals = decision.signals.clone();
        let outcome = match (decision.would, stage.shadow) {
            (extraction::Action::Allow, _) => "allowed",
            (_, true) => "shadow_flagged",
            (extraction::Action::Throttle, false) => "throttle",
            (extraction::Action::Ban, false) => "ban",
        };
        d.count(metrics, "extraction", outcome);
        let penalty = match decision.action {
            extraction::Action::Allow => return Ok(()),
            extraction::Action::Throttle => Penalty::Throttle,
            extraction::Action::Ban => Penalty::Ban(Instant::now() + stage.ban),
        };
        let mut penalties = stage.penalties.lock().unwrap_or_else(|p| p.into_inner());
        let first = !matches!(penalties.get(&self.principal), Some(Penalty::Ban(_)));
        if penalties.len() < 100_000 || penalties.contains_key(&self.principal) {
            penalties.insert(self.principal.clone(), penalty);
        }
        drop(penalties);
        if let Penalty::Ban(_) = penalty {
            if first {
                tracing::warn!(principal = %self.principal, model = %d.model, signals = ?decision.signals, queries = decision.queries, "extraction: principal banned");
            }
            return Err(Refusal::new(
                "extraction",
                StatusCode::FORBIDDEN,
                "extraction_banned",
                "banned: the query pattern looks like model extraction",
            ));
        }
        Ok(())
    }
}

/// Keeps the first `rows` rows of a tensor whose first dimension is the batch.
fn keep_rows(tensor: &mut Tensor, rows: usize) {
    let Some(&batch) = tensor.shape.first() else {
        return;
    };
    if batch <= rows || batch == 0 {
        return;
    }
    let per_row = tensor.data.len() / batch;
    let keep = rows * per_row;
    match &mut tensor.data {
        TensorData::Bool(v) => v.truncate(keep),
        TensorData::Uint8(v) => v.truncate(keep),
        TensorData::Int32(v) => v.truncate(keep),
        TensorData::Int64(v) => v.truncate(keep),
        TensorData::Fp32(v) => v.truncate(keep),
        TensorData::Fp64(v) => v.truncate(keep),
        TensorData::Bytes(v) => v.truncate(keep),
    }
    if let Some(first) = tensor.shape.first_mut() {
        *first = rows;
    }
}
