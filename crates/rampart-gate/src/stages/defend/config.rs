//! `[models.defend]`: which stages run for a model and their settings, each stage a sub-table with `enabled`.

use std::path::PathBuf;

use rampart_defend::anomaly::AnomalyConfig;
use rampart_defend::detect::{self, Component};
use rampart_defend::extraction::ExtractionConfig;
use rampart_defend::harden::Hardening;
use rampart_defend::image_input::ImageLimits;
use rampart_defend::sanitise::{ImageShape, Sanitiser};
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use crate::config::Rate;

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
    pub(super) fn on(switch: &Option<Switch<T>>) -> Option<&T> {
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
    /// The key file (`rampart watermark keygen -o FILE`; relative to the config's directory). Default: the state
    /// directory's `watermark/<model>.key`, created (mode 0600) on the first start.
    pub key: Option<PathBuf>,
    /// The fraction of queries answered with the keyed wrong label.
    #[serde(default = "default_fraction")]
    pub fraction: f64,
    /// Record the watermarked rows and as many controls, with the principal and the model's own label, in
    /// `<state_dir>/watermark/<model>.csv` (mode 0600): the query log `rampart watermark verify` needs.
    #[serde(default = "default_record")]
    pub record: bool,
}

fn default_record() -> bool {
    true
}

fn default_fraction() -> f64 {
    0.05
}
