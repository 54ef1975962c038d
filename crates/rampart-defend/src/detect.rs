//! Adversarial-input detection: feature squeezing plus two scores against the training data's reference sample,
//! combined into one score whose threshold is calibrated on clean data to a target false-positive rate.
//!
//! The components of a row `x` with predicted class `c`:
//! 1. **squeeze**: the largest L1 distance between the model's probabilities on `x` and on each squeezed copy
//!    (Xu et al., feature squeezing);
//! 2. **disagreement**: the fraction of `x`'s `k` nearest reference rows whose label is not `c` (an adversarial
//!    example sits among rows of its true class);
//! 3. **class distance**: the mean distance to the `k` nearest reference rows of class `c` over that to the `k`
//!    nearest of the other classes.
//!
//! Each component becomes an empirical tail probability `p_i` among the clean calibration rows; the score is Fisher's
//! `-Σ ln p_i`, and the threshold is the clean scores' `1 - target_fpr` quantile. A detector without calibration
//! refuses to decide ([`DefendError::Uncalibrated`]); the stage then fails closed.

use rampart_infer::Model;

use crate::knn::Reference;
use crate::sanitise::{ImageShape, Sanitiser};
use crate::stats::{quantile_sorted, tail_probability};
use crate::{argmax, predict, to_probabilities, DefendError};

/// Components per row.
pub const COMPONENTS: usize = 3;

/// What the gateway does with a row the detector flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse the request with 422.
    Reject,
    /// Answer, and mark the response (header) and the audit record.
    Flag,
}

/// The detector's settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// The squeezers compared with the original input.
    pub squeezers: Vec<Sanitiser>,
    /// The image layout of a row (for the spatial squeezers).
    pub shape: ImageShape,
    /// Neighbours consulted for the two reference scores.
    pub k: usize,
    /// The false-positive rate the threshold is calibrated to.
    pub target_fpr: f64,
    /// What happens to a flagged row.
    pub action: Action,
}

impl DetectorConfig {
    /// The defaults tuned on the digits example: 2-bit depth and a 2×2 median as squeezers, `k = 5`, 2% FPR.
    pub fn for_shape(shape: ImageShape) -> DetectorConfig {
        DetectorConfig {
            squeezers: vec![
                Sanitiser::BitDepth { bits: 2 },
                Sanitiser::Median { size: 2 },
            ],
            shape,
            k: 5,
            target_fpr: 0.02,
            action: Action::Reject,
        }
    }

    fn validate(&self) -> Result<(), DefendError> {
        self.squeezers.iter().try_for_each(Sanitiser::validate)?;
        if self.squeezers.is_empty()
            || self.k == 0
            || !(self.target_fpr > 0.0 && self.target_fpr < 0.5)
        {
            return Err(DefendError::Config(
                "the detector needs at least one squeezer, k >= 1 and 0 < target_fpr < 0.5".into(),
            ));
        }
        Ok(())
    }
}

/// The clean data's component values and the calibrated threshold; saved with the gateway's config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Each component's clean values, sorted.
    pub components: Vec<Vec<f64>>,
    /// Scores above this are flagged.
    pub threshold: f64,
    /// The false-positive rate it was calibrated to.
    pub target_fpr: f64,
}

/// One row's verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Assessment {
    /// The predicted class on the original input.
    pub predicted: usize,
    /// The raw components (squeeze, disagreement, class distance).
    pub components: [f64; COMPONENTS],
    /// The combined score.
    pub score: f64,
    /// Whether the score passes the threshold.
    pub adversarial: bool,
}

/// The detector: configuration, the reference sample and (once calibrated) the threshold.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    reference: Reference,
    input_name: String,
    calibration: Option<Calibration>,
}

impl Detector {
    /// A detector over `reference` (a profile's sample) for a model whose input is named `input_name`.
    pub fn new(
        config: DetectorConfig,
        reference: Reference,
        input_name: &str,
    ) -> Result<Detector, DefendError> {
        config.validate()?;
        if reference.is_empty() || reference.width != config.shape.len() {
            return Err(DefendError::Config(format!(
                "the reference sample has rows of {} values, the configured image shape {}",
                reference.width,
                config.shape.len()
            )));
        }
        Ok(Detector {
            config,
            reference,
            input_name: input_name.to_string(),
            calibration: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The calibration, if any.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Installs a saved calibration after checking it fits this detector.
    pub fn set_calibration(&mut self, calibration: Calibration) -> Result<(), DefendError> {
        if calibration.components.len() != COMPONENTS
            || calibration.components.iter().any(|c| c.len() < 10)
            || !calibration.threshold.is_finite()
        {
            return Err(DefendError::Uncalibrated(
                "the saved calibration is incomplete; recalibrate on clean data".into(),
            ));
        }
        self.calibration = Some(calibration);
        Ok(())
    }

    /// The raw components of each row of a flat batch.
    pub fn components(
        &self,
        model: &dyn Model,
        values: &[f32],
    ) -> Result<Vec<(usize, [f64; COMPONENTS])>, DefendError> {
        let width = self.config.shape.len();
        if values.is_empty() || values.len() % width != 0 {
            return Err(DefendError::Input(format!(
                "expected rows of {width} values, got {} values",
                values.len()
            )));
        }
        let rows = values.len() / width;
        let original = predict(model, &self.input_name, rows, width, values.to_vec())?;
        let original: Vec<Vec<f32>> = original.iter().map(|r| to_probabilities(r)).collect();
        let mut squeeze = vec![0.0_f64; rows];
        for squeezer in &self.config.squeezers {
            let mut squeezed = values.to_vec();
            squeezer.apply_batch(&mut squeezed, self.config.shape)?;
            let out = predict(model, &self.input_name, rows, width, squeezed)?;
            for ((s, a), b) in squeeze.iter_mut().zip(&original).zip(&out) {
                let b = to_probabilities(b);
                let l1: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| f64::from((x - y).abs()))
                    .sum();
                *s = s.max(l1);
            }
        }
        let k = self.config.k;
        let mut result = Vec::with_capacity(rows);
        for ((row, probs), s) in values.chunks_exact(width).zip(&original).zip(squeeze) {
            let predicted = argmax(probs)
                .ok_or_else(|| DefendError::Model("the model returned NaN scores".into()))?;
            let class = predicted as i64;
            let mut all = self.reference.distances(row);
            all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
            let disagree =
                all.iter().take(k).filter(|n| n.label != class).count() as f64 / k as f64;
            let mean_of = |same: bool| {
                let picked: Vec<f64> = all
                    .iter()
                    .filter(|n| (n.label == class) == same)
                    .take(k)
                    .map(|n| n.distance)
                    .collect();
                if picked.is_empty() {
                    f64::INFINITY
                } else {
                    picked.iter().sum::<f64>() / picked.len() as f64
                }
            };
            let (same, other) = (mean_of(true), mean_of(false));
            // A class absent from the reference is maximally suspicious; guard 0/0 for exact duplicates.
            let ratio = if same.is_infinite() {
                f64::MAX
            } else {
                same / other.max(1e-9)
            };
            result.push((predicted, [s, disagree, ratio]));
        }
        Ok(result)
    }

    /// Calibrates on clean rows that are NOT in the reference sample (a held-out split). Needs at least
    /// `2 / target_fpr` rows so the threshold's quantile is estimated, not guessed.
    pub fn calibrate(
        &mut self,
        model: &dyn Model,
        clean: &[f32],
    ) -> Result<&Calibration, DefendError> {
        let comps = self.components(model, clean)?;
        let needed = (2.0 / self.config.target_fpr).ceil() as usize;
        if comps.len() < needed.max(10) {
            return Err(DefendError::Uncalibrated(format!(
                "{} clean rows are too few for a {}% false-positive rate; give at least {needed}",
                comps.len(),
                self.config.target_fpr * 100.0
            )));
        }
        let mut components: Vec<Vec<f64>> = (0..COMPONENTS)
            .map(|i| {
                comps
                    .iter()
                    .map(|(_, c)| c.get(i).copied().unwrap_or(0.0))
                    .collect()
            })
            .collect();
        components
            .iter_mut()
            .for_each(|c| c.sort_by(f64::total_cmp));
        let mut scores: Vec<f64> = comps.iter().map(|(_, c)| fisher(&components, c)).collect();
        scores.sort_by(f64::total_cmp);
        let threshold = quantile_sorted(&scores, 1.0 - self.config.target_fpr)
            .ok_or_else(|| DefendError::Uncalibrated("no clean scores".into()))?;
        Ok(self.calibration.insert(Calibration {
            components,
            threshold,
            target_fpr: self.config.target_fpr,
        }))
    }

    /// Scores each row of a flat batch; fails closed without a calibration.
    pub fn assess(
        &self,
        model: &dyn Model,
        values: &[f32],
    ) -> Result<Vec<Assessment>, DefendError> {
        let calibration = self.calibration.as_ref().ok_or_else(|| {
            DefendError::Uncalibrated("calibrate it on clean held-out data before serving".into())
        })?;
        Ok(self
            .components(model, values)?
            .into_iter()
            .map(|(predicted, components)| {
                let score = fisher(&calibration.components, &components);
                Assessment {
                    predicted,
                    components,
                    score,
                    adversarial: score > calibration.threshold,
                }
            })
            .collect())
    }
}

/// Fisher's combination of the components' empirical tail probabilities.
fn fisher(clean: &[Vec<f64>], components: &[f64; COMPONENTS]) -> f64 {
    clean
        .iter()
        .zip(components)
        .map(|(sorted, &v)| -tail_probability(sorted, v).ln())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{digits, digits_model};

    #[test]
    fn calibrates_to_the_target_and_catches_perturbed_digits() {
        let model = digits_model();
        let (train, train_labels) = digits("train.csv");
        let (test, _) = digits("test.csv");
        let reference = Reference {
            width: 64,
            rows: train,
            labels: train_labels,
        };
        let shape = ImageShape {
            height: 8,
            width: 8,
            channels: 1,
        };
        let mut detector =
            Detector::new(DetectorConfig::for_shape(shape), reference, "input").unwrap();
        assert!(
            detector.assess(&model, test.get(..64).unwrap()).is_err(),
            "uncalibrated must fail closed"
        );
        let (cal, held) = test.split_at(225 * 64);
        let threshold = detector.calibrate(&model, cal).unwrap().threshold;
        assert!(threshold > 0.0);
        let clean = detector.assess(&model, held).unwrap();
        let fpr = clean.iter().filter(|a| a.adversarial).count() as f64 / clean.len() as f64;
        assert!(fpr <= 0.05, "held-out false-positive rate {fpr}");
        // Uniform noise is nothing like a digit: the neighbour scores flag nearly all of it.
        let noise: Vec<f32> = (0..64 * 50)
            .map(|i| ((i * 7919 % 101) as f32) / 100.0)
            .collect();
        let flagged = detector
            .assess(&model, &noise)
            .unwrap()
            .iter()
            .filter(|a| a.adversarial)
            .count();
        assert!(flagged >= 40, "only {flagged} of 50 noise rows flagged");
    }
}
