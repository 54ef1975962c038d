//! Building the defences of a model version: at start, and again at every reload for the new version (the
//! detector recalibrated on its answers), carrying over what was learnt about principals.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest extraction ban (`ban_secs`): ten years, far past any use, and far from an `Instant`'s overflow.
const MAX_BAN_SECS: u64 = 10 * 365 * 86_400;

use rampart_defend::anomaly::AnomalyMonitor;
use rampart_defend::detect::{Detector, DetectorConfig};
use rampart_defend::extraction::ExtractionMonitor;
use rampart_defend::profile::Profile;
use rampart_defend::sanitise::{ImageShape, Sanitiser};
use rampart_defend::schema::SchemaCheck;
use rampart_defend::watermark::{WatermarkKey, Watermarker};
use rampart_infer::{DataType, Model};

use super::config::{DefendConfig, DetectorStageConfig, Switch};
use super::extraction::ExtractionStage;
use super::record::Recorder;
use super::Defences;
use crate::config::{Config, ConfigError};
use crate::stages::infer::ModelPool;

/// Where a model's defences come from: its `[models.defend]` table and the config file around it.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    settings: DefendConfig,
    base_dir: PathBuf,
    state_dir: PathBuf,
    source: PathBuf,
    index: usize,
}

impl Origin {
    /// A path of the config, relative to the config's directory.
    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// An error about a key of this model's `[models.defend]` table.
    fn invalid(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            key: format!(
                "models[{}].defend{}{key}",
                self.index,
                if key.is_empty() { "" } else { "." }
            ),
            message,
        }
    }
}

/// Builds the defences of every model whose config has a `[models.defend]` table and attaches them to the version
/// of the model now served. Calibrates the detectors: blocking start-up work, before any request.
pub fn build_all(config: &Config, models: &HashMap<String, ModelPool>) -> Result<(), ConfigError> {
    for (index, spec) in config.models.iter().enumerate() {
        let (Some(defend), Some(pool)) = (&spec.defend, models.get(&spec.name)) else {
            continue;
        };
        let origin = Origin {
            settings: defend.clone(),
            base_dir: config.base_dir.clone(),
            state_dir: config.state_dir(),
            source: config.source.clone(),
            index,
        };
        let defences = Defences::build(origin, &spec.name, &*pool.model(), None)?;
        pool.attach(Arc::new(defences));
    }
    Ok(())
}

impl Defences {
    /// The defences of a new version of the model: built and calibrated on `model` from the same settings, with the
    /// extraction evidence, penalties and anomaly baselines of these. An error refuses the new version.
    pub fn for_version(&self, model: &dyn Model) -> Result<Defences, ConfigError> {
        Defences::build(self.origin.clone(), &self.model, model, Some(self))
    }

    fn build(
        origin: Origin,
        name: &str,
        model: &dyn Model,
        previous: Option<&Defences>,
    ) -> Result<Defences, ConfigError> {
        let defend = &origin.settings;
        let invalid = |key: &str, message: String| origin.invalid(key, message);
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
                let path = origin.resolve(path);
                let text = rampart_defend::read_bounded(&path, rampart_defend::MAX_PROFILE_BYTES)
                    .map_err(|e| {
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
        // Each step once on a blank row of the shape: one that cannot work on it (JPEG on two channels) stops the
        // start, instead of answering every request 503.
        let mut blank = vec![0.0_f32; shape.len()];
        for step in &sanitisers {
            step.validate()
                .and_then(|()| step.apply_batch(&mut blank, shape))
                .map_err(|e| invalid("sanitise.steps", e.to_string()))?;
        }
        let detector = match Switch::on(&defend.detector) {
            Some(d) => Some(build_detector(
                &origin,
                d,
                shape,
                need_profile("detector")?,
                &input.name,
                model,
                &sanitisers,
            )?),
            None => None,
        };
        let extraction = match (Switch::on(&defend.extraction), previous) {
            (Some(_), Some(p)) => p.extraction.clone(),
            (Some(e), None) => {
                let mut monitor = e.monitor.clone();
                monitor.shadow |= e.shadow;
                let ban_ok = (1..=MAX_BAN_SECS).contains(&e.ban_secs);
                let throttle_ok = e.throttle.per_second.is_finite()
                    && e.throttle.per_second > 0.0
                    && e.throttle.burst > 0;
                if !(ban_ok && throttle_ok) {
                    return Err(invalid(
                        "extraction",
                        format!(
                            "`ban_secs` must be from 1 to {MAX_BAN_SECS} (ten years), `throttle` positive"
                        ),
                    ));
                }
                let checker = ExtractionMonitor::new(monitor.clone(), need_profile("extraction")?)
                    .map_err(|e| invalid("extraction", e.to_string()))?;
                Some(Arc::new(ExtractionStage::new(
                    checker,
                    e.throttle,
                    monitor.max_principals,
                    Duration::from_secs(e.ban_secs),
                    monitor.shadow,
                )))
            }
            (None, _) => None,
        };
        let harden = Switch::on(&defend.harden).cloned();
        if let Some(h) = &harden {
            h.validate().map_err(|e| invalid("harden", e.to_string()))?;
        }
        let watermark = match Switch::on(&defend.watermark) {
            Some(w) => {
                let path = match &w.key {
                    Some(key) => origin.resolve(key),
                    None => {
                        let path = origin
                            .state_dir
                            .join("watermark")
                            .join(format!("{name}.key"));
                        create_key_once(&path).map_err(|e| {
                            invalid(
                                "watermark.key",
                                format!("cannot create `{}`: {e}", path.display()),
                            )
                        })?;
                        path
                    }
                };
                let text = rampart_defend::read_bounded(&path, rampart_defend::MAX_KEY_BYTES)
                    .map_err(|e| {
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
                // Whoever reads the key can tell which answers are watermarked and wash them out of a surrogate.
                #[cfg(unix)]
                if let Ok(meta) = std::fs::metadata(&path) {
                    use std::os::unix::fs::PermissionsExt;
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            model = name,
                            path = %path.display(),
                            "the watermark key is readable by other users: `chmod 600` it (rampart watermark keygen \
                             writes it so)"
                        );
                    }
                }
                Some(
                    Watermarker::new(key, w.fraction)
                        .map_err(|e| invalid("watermark.fraction", e.to_string()))?,
                )
            }
            None => None,
        };
        // One record per model, kept across versions of the same input width (a second writer would interleave).
        let record = match Switch::on(&defend.watermark).filter(|w| w.record) {
            Some(_) => match previous.and_then(|p| p.record.as_ref()) {
                Some(r) if r.width() == width => Some(Arc::clone(r)),
                _ => {
                    let path = origin
                        .state_dir
                        .join("watermark")
                        .join(format!("{name}.csv"));
                    Some(Arc::new(
                        Recorder::open(&path, width).map_err(|e| invalid("watermark.record", e))?,
                    ))
                }
            },
            None => None,
        };
        let anomaly = match (Switch::on(&defend.anomaly), previous) {
            (Some(_), Some(p)) => p.anomaly.clone(),
            (Some(a), None) => Some(Arc::new(Mutex::new(
                AnomalyMonitor::new(a.clone()).map_err(|e| invalid("anomaly", e.to_string()))?,
            ))),
            (None, _) => None,
        };
        // Decoded 8-bit images take values k/255; a profile quantised otherwise (the digits example's sixteenths)
        // puts nearly every image off its lattice: the off-support signals would then count every image query.
        if let (Some(_), Some(p)) = (Switch::on(&defend.images), &profile) {
            let on_bytes = |step: f64| ((step * 255.0) - (step * 255.0).round()).abs() < 1e-6;
            if let Some(f) = p
                .features
                .iter()
                .find(|f| f.step.is_some_and(|s| !on_bytes(s)))
            {
                tracing::warn!(
                    model = name,
                    feature = %f.name,
                    step = f.step,
                    "the profile's features are quantised to steps that 8-bit images do not fall on: with images, \
                     the off-support signals (schema with tolerance 0, detector, extraction) will count nearly every \
                     image query; profile the training images as the gateway decodes them (values k/255)"
                );
            }
        }
        tracing::info!(
            model = name,
            images = Switch::on(&defend.images).is_some(),
            schema = schema.is_some(),
            sanitisers = sanitisers.len(),
            detector = detector.is_some(),
            extraction = extraction.is_some(),
            harden = harden.is_some(),
            watermark = watermark.as_ref().map(Watermarker::key_id),
            watermark_record = record.as_ref().map(|r| r.path().display().to_string()),
            anomaly = anomaly.is_some(),
            "defences on"
        );
        let (output, on_error, images) = (
            defend.output.clone(),
            defend.on_error,
            Switch::on(&defend.images).copied(),
        );
        Ok(Defences {
            model: name.to_owned(),
            input: input.name.clone(),
            output,
            width,
            shape,
            on_error,
            images,
            schema,
            sanitisers,
            detector,
            extraction,
            harden,
            watermark,
            record,
            anomaly,
            origin,
            counters: Mutex::default(),
        })
    }
}

/// Creates a watermark key at `path`, in a private directory, unless one is there.
fn create_key_once(path: &Path) -> std::io::Result<()> {
    rampart_auth::ensure_private_dir(path.parent().unwrap_or(Path::new(".")))?;
    if let Some(key) = WatermarkKey::create_file(path)? {
        tracing::info!(path = %path.display(), key = %key.id(), "created a watermark key");
    }
    Ok(())
}

fn build_detector(
    origin: &Origin,
    d: &DetectorStageConfig,
    shape: ImageShape,
    profile: &Profile,
    input: &str,
    model: &dyn Model,
    sanitisers: &[Sanitiser],
) -> Result<Detector, ConfigError> {
    let invalid = |key: &str, message: String| origin.invalid(key, message);
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
    let path = origin.resolve(path);
    let file = std::fs::File::open(&path).map_err(|e| {
        invalid(
            "detector.calibration_data",
            format!("cannot read `{}`: {e}", path.display()),
        )
    })?;
    let (_, mut rows, _) = rampart_defend::profile::read_labelled_rows(file, &d.label_column)
        .map_err(|e| {
            invalid(
                "detector.calibration_data",
                format!("`{}`: {e}", path.display()),
            )
        })?;
    // The detector sees rows after the sanitisers: it is calibrated on clean rows as they will reach it.
    for step in sanitisers {
        step.apply_batch(&mut rows, shape)
            .map_err(|e| invalid("sanitise.steps", e.to_string()))?;
    }
    let threshold = detector
        .calibrate(model, &rows)
        .map_err(|e| invalid("detector.calibration_data", e.to_string()))?
        .threshold;
    tracing::info!(
        model = %model.metadata().name,
        threshold,
        rows = rows.len() / shape.len().max(1),
        "detector calibrated"
    );
    Ok(detector)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use std::net::{IpAddr, Ipv4Addr};

    use rampart_infer::{InferError, ModelMetadata, Tensor, TensorData, TensorSpec};

    use super::*;
    use crate::metrics::Metrics;

    /// A model of four inputs and three scores; the tests hand its answers to the output stages themselves.
    #[derive(Debug)]
    struct Fake(ModelMetadata);

    impl Model for Fake {
        fn metadata(&self) -> &ModelMetadata {
            &self.0
        }

        fn infer(&self, _: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
            Err(InferError::Upstream("not called".into()))
        }
    }

    fn defences(table: &str, state: &Path) -> Defences {
        let spec = |name: &str, width: i64| TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: vec![-1, width],
        };
        let model = Fake(ModelMetadata {
            name: "m".into(),
            versions: Vec::new(),
            platform: "fake".into(),
            inputs: vec![spec("x", 4)],
            outputs: vec![spec("y", 3)],
        });
        let origin = Origin {
            settings: toml::from_str(table).unwrap(),
            base_dir: state.to_owned(),
            state_dir: state.to_owned(),
            source: state.join("rampart.toml"),
            index: 0,
        };
        Defences::build(origin, "m", &model, None).unwrap()
    }

    #[test]
    fn a_missing_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watermark/m.key");
        create_key_once(&path).unwrap();
        let first = std::fs::read_to_string(&path).unwrap();
        assert!(WatermarkKey::from_hex(&first).is_ok());
        create_key_once(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        // No temporary file is left beside it.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unreadable_scores_fail_open_to_the_rows_asked_or_refuse_where_hardening_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::new();
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // Scores without a feature dimension cannot be read; the answer holds more rows than were asked (as when
        // squeezed copies ride in the batch).
        let unreadable =
            || vec![Tensor::new("y", vec![6], TensorData::Fp32(vec![0.5; 6])).unwrap()];
        let asked = || vec![Tensor::new("x", vec![2, 4], TensorData::Fp32(vec![0.25; 8])).unwrap()];

        let open = defences("on_error = \"allow\"", dir.path());
        let mut audit = None;
        let (_, pending) = open
            .before_infer(asked(), None, client, &mut audit, &metrics)
            .unwrap();
        let (answer, _) = pending
            .after_infer(unreadable(), &mut audit, &mut Vec::new(), &metrics)
            .unwrap();
        assert_eq!(answer[0].shape, vec![2]);
        assert_eq!(answer[0].data, TensorData::Fp32(vec![0.5; 2]));
        let undecided = audit.unwrap().undecided.unwrap();
        assert!(undecided.contains("failed open"), "{undecided}");

        let hardened = defences(
            "on_error = \"allow\"\n[harden]\ndefault = { mode = \"label_only\" }",
            dir.path(),
        );
        let mut audit = None;
        let (_, pending) = hardened
            .before_infer(asked(), None, client, &mut audit, &metrics)
            .unwrap();
        let refused = pending
            .after_infer(unreadable(), &mut audit, &mut Vec::new(), &metrics)
            .unwrap_err();
        assert_eq!(refused.status, hyper::StatusCode::SERVICE_UNAVAILABLE);
    }
}
