//! Adversarial-input detection: feature squeezing plus scores against the training data's profile, combined into one
//! score whose threshold is calibrated on clean data to a target false-positive rate.
//!
//! The components of a row `x` with predicted class `c` (each larger = more suspicious):
//! 1. **squeeze**: the largest L1 distance between the model's probabilities on `x` and on each squeezed copy
//!    (Xu et al., feature squeezing);
//! 2. **disagreement**: the fraction of `x`'s `k` nearest reference rows whose label is not `c` (an adversarial
//!    example sits among rows of its true class);
//! 3. **class distance**: the mean distance to the `k` nearest reference rows of class `c` over that to the `k`
//!    nearest of the other classes;
//! 4. **low margin**: one minus the gap between the two largest probabilities (attacks that stop once they win
//!    leave the input just across a decision boundary);
//! 5. **off-support**: how far `x` lies, feature by feature, outside the values the training data takes (its range,
//!    and the lattice of quantised features such as 8-bit pixels); see [`FeatureProfile::off_support`].
//!
//! Distances to reference rows are measured in the reference's principal coordinates ([`crate::knn`]): where a row
//! lies along the data's twelve main directions, and how far off them. On the digits benchmark (`bench/defend.sh`,
//! attacks at eps 0.1 on the MLP and the CNN) that finds as many attacks as the distance between the rows, or more
//! (PGD rounded onto the data's lattice: 0.57 against 0.33 on the MLP, 0.65 against 0.56 on the CNN), at a similar
//! false-positive rate, for about 60% of the search's time.
//!
//! Each enabled component becomes a tail probability `p_i` among the clean calibration rows (extrapolated beyond the
//! largest clean value, [`extrapolated_tail`]); the score is Fisher's `-Σ ln p_i`, and the threshold is the clean
//! scores' `1 - target_fpr` quantile. A detector without calibration refuses to decide
//! ([`DefendError::Uncalibrated`]); the stage then fails closed.
//!
//! The off-support component is only as strong as the attacker is naive: one who rounds the perturbation onto the
//! data's lattice zeroes it. The others still apply; the benchmark reports both.

use rampart_infer::Model;

use crate::knn::{Collector, Index, KBest, Neighbour};
use crate::profile::{FeatureProfile, Profile};
use crate::sanitise::{ImageShape, Sanitiser};
use crate::stats::extrapolated_tail;
use crate::{argmax, predict, to_probabilities, DefendError};

/// Components per row.
pub const COMPONENTS: usize = 5;

/// The most clean rows a calibration takes (it runs at every start and reload).
pub const MAX_CALIBRATION_ROWS: usize = 20_000;

/// One of the detector's scores, in the order of [`Assessment::components`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// Feature squeezing: the largest L1 change of the probabilities under a squeezer.
    Squeeze,
    /// The share of the nearest reference rows with another label.
    Disagreement,
    /// Distance to the predicted class over distance to the others.
    ClassDistance,
    /// One minus the top-two probability gap.
    LowMargin,
    /// Distance outside the training data's per-feature support.
    OffSupport,
}

impl Component {
    /// All components, in order.
    pub const ALL: [Component; COMPONENTS] = [
        Component::Squeeze,
        Component::Disagreement,
        Component::ClassDistance,
        Component::LowMargin,
        Component::OffSupport,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

fn all_components() -> Vec<Component> {
    Component::ALL.to_vec()
}

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
    /// The components combined into the score (all by default).
    #[serde(default = "all_components")]
    pub components: Vec<Component>,
}

impl DetectorConfig {
    /// The defaults tuned on the digits example: 2-bit depth and a 2×2 median as squeezers, `k = 5`, 2% FPR,
    /// every component.
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
            components: all_components(),
        }
    }

    fn validate(&self) -> Result<(), DefendError> {
        self.squeezers.iter().try_for_each(Sanitiser::validate)?;
        if self.squeezers.is_empty()
            || self.k == 0
            || !(self.target_fpr > 0.0 && self.target_fpr < 0.5)
            || self.components.is_empty()
        {
            return Err(DefendError::Config(
                "the detector needs at least one squeezer, at least one component, k >= 1 and 0 < target_fpr < 0.5"
                    .into(),
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
    /// The components the threshold was calibrated for.
    #[serde(default = "all_components")]
    pub enabled: Vec<Component>,
}

/// One row's verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Assessment {
    /// The predicted class on the original input.
    pub predicted: usize,
    /// The raw components, in the order of [`Component::ALL`].
    pub components: [f64; COMPONENTS],
    /// The combined score.
    pub score: f64,
    /// Whether the score passes the threshold.
    pub adversarial: bool,
    /// The row's `k` nearest reference rows, nearest first (every reference row nearer than the last is among
    /// them), found by the search the components need: the extraction monitor, which asks for the nearest row of
    /// the same reference, takes it from here ([`crate::knn::Index::nearest_near`] when a sanitiser changed the row).
    #[serde(skip)]
    pub neighbours: Vec<Neighbour>,
}

/// The detector: configuration, the profile's reference sample and features, and (once calibrated) the threshold.
#[derive(Debug, Clone)]
pub struct Detector {
    config: DetectorConfig,
    /// The profile's reference sample, laid out for search.
    index: Index,
    features: Vec<FeatureProfile>,
    input_name: String,
    calibration: Option<Calibration>,
}

impl Detector {
    /// A detector over a training-data `profile` for a model whose input is named `input_name`.
    pub fn new(
        config: DetectorConfig,
        profile: &Profile,
        input_name: &str,
    ) -> Result<Detector, DefendError> {
        config.validate()?;
        let reference = &profile.reference;
        if reference.is_empty()
            || reference.width != config.shape.len()
            || profile.features.len() != reference.width
        {
            return Err(DefendError::Config(format!(
                "the profile has rows of {} values, the configured image shape {}",
                reference.width,
                config.shape.len()
            )));
        }
        Ok(Detector {
            config,
            index: Index::new(reference),
            features: profile.features.clone(),
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
            || calibration.components.iter().any(|c| !c.is_sorted())
        {
            return Err(DefendError::Uncalibrated(
                "the saved calibration is incomplete; recalibrate on clean data".into(),
            ));
        }
        if calibration.enabled != self.config.components {
            return Err(DefendError::Uncalibrated(
                "the saved calibration was made for other components; recalibrate on clean data"
                    .into(),
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
        Ok(self
            .scored_rows(model, values)?
            .into_iter()
            .map(|r| (r.predicted, r.components))
            .collect())
    }

    /// The rows and their squeezed copies through the model, then [`Detector::scored`].
    fn scored_rows(&self, model: &dyn Model, values: &[f32]) -> Result<Vec<Scored>, DefendError> {
        let width = self.config.shape.len();
        let mut batch = values.to_vec();
        batch.extend(self.squeezed(values)?);
        let scores = predict(model, &self.input_name, batch.len() / width, width, batch)?;
        self.scored(values, &scores)
    }

    /// The squeezed copies of a flat batch, one after the other in the order of the configured squeezers: what the
    /// model must also score so that [`Detector::components_from_scores`] can compare. A gateway runs the original
    /// rows and these in one batch, so the detector costs no extra call to the model.
    pub fn squeezed(&self, values: &[f32]) -> Result<Vec<f32>, DefendError> {
        self.rows_in(values)?;
        let mut out = Vec::with_capacity(values.len() * self.config.squeezers.len());
        for squeezer in &self.config.squeezers {
            let start = out.len();
            out.extend_from_slice(values);
            if let Some(copy) = out.get_mut(start..) {
                squeezer.apply_batch(copy, self.config.shape)?;
            }
        }
        Ok(out)
    }

    fn rows_in(&self, values: &[f32]) -> Result<usize, DefendError> {
        let width = self.config.shape.len();
        if values.is_empty() || values.len() % width != 0 {
            return Err(DefendError::Input(format!(
                "expected rows of {width} values, got {} values",
                values.len()
            )));
        }
        Ok(values.len() / width)
    }

    /// The components of each row given the model's scores on the rows followed by its scores on each squeezed
    /// copy ([`Detector::squeezed`]): `rows × (1 + squeezers)` score rows.
    pub fn components_from_scores(
        &self,
        values: &[f32],
        scores: &[Vec<f32>],
    ) -> Result<Vec<(usize, [f64; COMPONENTS])>, DefendError> {
        Ok(self
            .scored(values, scores)?
            .into_iter()
            .map(|r| (r.predicted, r.components))
            .collect())
    }

    /// [`Detector::components_from_scores`], with each row's nearest reference row.
    fn scored(&self, values: &[f32], scores: &[Vec<f32>]) -> Result<Vec<Scored>, DefendError> {
        let rows = self.rows_in(values)?;
        let width = self.config.shape.len();
        if scores.len() != rows * (1 + self.config.squeezers.len()) {
            return Err(DefendError::Model(format!(
                "the model returned {} score rows for {rows} rows and {} squeezed copies",
                scores.len(),
                self.config.squeezers.len()
            )));
        }
        let (original, squeezed) = scores.split_at(rows);
        let original: Vec<Vec<f32>> = original.iter().map(|r| to_probabilities(r)).collect();
        let mut squeeze = vec![0.0_f64; rows];
        for out in squeezed.chunks(rows) {
            for ((s, a), b) in squeeze.iter_mut().zip(&original).zip(out) {
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
            // A model that answers NaN (to finite but extreme inputs: -3e38 everywhere) gave no answer to judge. The
            // row is as suspicious as a row can be, and the batch's other rows are still judged: failing the batch
            // would let one such row switch the detector off for the others where it fails open.
            let Some(predicted) = argmax(probs) else {
                result.push(Scored {
                    predicted: 0,
                    components: [f64::MAX; COMPONENTS],
                    neighbours: Vec::new(),
                });
                continue;
            };
            let class = predicted as i64;
            // The k nearest of the predicted class and of the others, in one search of the reference (ties keep the
            // earlier row, as a stable sort would); the k nearest overall are the k nearest of those.
            let mut near = Near {
                class,
                same: KBest::new(k),
                other: KBest::new(k),
            };
            self.index.search(row, &mut near);
            let Near { same, other, .. } = near;
            let mut all = KBest::new(k);
            for &(d, index, label) in same.items().iter().chain(other.items()) {
                all.push(d, index, label);
            }
            let disagree =
                all.items().iter().filter(|&&(_, _, l)| l != class).count() as f64 / k as f64;
            let (same, other) = (mean_distance(&same), mean_distance(&other));
            // A class absent from the reference is maximally suspicious; guard 0/0 for exact duplicates.
            let ratio = if same.is_infinite() {
                f64::MAX
            } else {
                same / other.max(1e-9)
            };
            let mut top = probs.iter().map(|&p| f64::from(p));
            let (mut first, mut second) = (top.next().unwrap_or(0.0), 0.0_f64);
            if let Some(p) = top.next() {
                (first, second) = (first.max(p), first.min(p));
            }
            for p in top {
                if p > first {
                    (first, second) = (p, first);
                } else if p > second {
                    second = p;
                }
            }
            let low_margin = 1.0 - (first - second);
            let off_support: f64 = self
                .features
                .iter()
                .zip(row)
                .map(|(f, &v)| f.off_support(f64::from(v)))
                .sum();
            result.push(Scored {
                predicted,
                components: [s, disagree, ratio, low_margin, off_support],
                neighbours: all.neighbours(),
            });
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
        let width = self.config.shape.len().max(1);
        let rows = clean.len() / width;
        if rows > MAX_CALIBRATION_ROWS {
            return Err(DefendError::Uncalibrated(format!(
                "{rows} clean rows; give at most {MAX_CALIBRATION_ROWS} (a sample: calibration runs at every start and reload)"
            )));
        }
        // Copies of a few rows say nothing of the clean scores' spread: the threshold would be theirs (all equal),
        // and most clean rows would cross it.
        let mut distinct: Vec<Vec<u32>> = clean
            .chunks_exact(width)
            .map(|r| r.iter().map(|v| (v + 0.0).to_bits()).collect())
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        let needed = (2.0 / self.config.target_fpr).ceil() as usize;
        if distinct.len() < needed.max(10) {
            return Err(DefendError::Uncalibrated(format!(
                "{} distinct clean rows are too few for a {}% false-positive rate; give at least {needed}",
                distinct.len(),
                self.config.target_fpr * 100.0
            )));
        }
        let comps = self.components(model, clean)?;
        if let Some(at) = comps
            .iter()
            .position(|(_, c)| c.iter().all(|&v| v == f64::MAX))
        {
            return Err(DefendError::Uncalibrated(format!(
                "the model answered NaN on clean row {}; calibrate on rows it answers",
                at + 1
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
        let enabled = &self.config.components;
        // Each clean row is scored against the OTHER clean rows (leave one out): scored against a sample that holds
        // it, a row's tail probabilities are never extreme, so the clean scores would run low and a new clean row,
        // which is not in the sample, would cross the threshold more often than the target.
        let mut scores: Vec<f64> = comps
            .iter()
            .map(|(_, c)| fisher_leave_one_out(&components, enabled, c))
            .collect();
        scores.sort_by(f64::total_cmp);
        // The conformal order statistic: the ⌈(1 - α)(n + 1)⌉-th smallest score, so that a new clean row exceeds it
        // with probability at most α (exchangeability), not just about α.
        let n = scores.len();
        let rank = ((1.0 - self.config.target_fpr) * (n + 1) as f64).ceil() as usize;
        let threshold = scores
            .get(rank.clamp(1, n) - 1)
            .copied()
            .ok_or_else(|| DefendError::Uncalibrated("no clean scores".into()))?;
        Ok(self.calibration.insert(Calibration {
            components,
            threshold,
            target_fpr: self.config.target_fpr,
            enabled: self.config.components.clone(),
        }))
    }

    /// Scores each row of a flat batch; fails closed without a calibration.
    pub fn assess(
        &self,
        model: &dyn Model,
        values: &[f32],
    ) -> Result<Vec<Assessment>, DefendError> {
        self.calibrated()?;
        let rows = self.scored_rows(model, values)?;
        self.verdicts(rows)
    }

    /// Like [`Detector::assess`], with the model's scores already computed on the rows and their squeezed copies
    /// (see [`Detector::components_from_scores`]).
    pub fn assess_scores(
        &self,
        values: &[f32],
        scores: &[Vec<f32>],
    ) -> Result<Vec<Assessment>, DefendError> {
        self.calibrated()?;
        let rows = self.scored(values, scores)?;
        self.verdicts(rows)
    }

    fn calibrated(&self) -> Result<&Calibration, DefendError> {
        self.calibration.as_ref().ok_or_else(|| {
            DefendError::Uncalibrated("calibrate it on clean held-out data before serving".into())
        })
    }

    fn verdicts(&self, rows: Vec<Scored>) -> Result<Vec<Assessment>, DefendError> {
        let calibration = self.calibrated()?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let Scored {
                    predicted,
                    components,
                    neighbours,
                } = row;
                let score = fisher(
                    &calibration.components,
                    &self.config.components,
                    &components,
                );
                Assessment {
                    predicted,
                    components,
                    score,
                    adversarial: score > calibration.threshold,
                    neighbours,
                }
            })
            .collect())
    }
}

/// Fisher's combination for a calibration row, each tail probability taken among the other calibration rows.
fn fisher_leave_one_out(
    clean: &[Vec<f64>],
    enabled: &[Component],
    components: &[f64; COMPONENTS],
) -> f64 {
    enabled
        .iter()
        .filter_map(|c| {
            let sorted = clean.get(c.index())?;
            let value = *components.get(c.index())?;
            let at = sorted.partition_point(|&x| x < value);
            let mut rest = Vec::with_capacity(sorted.len());
            rest.extend_from_slice(sorted.get(..at)?);
            rest.extend_from_slice(sorted.get(at + 1..)?);
            Some(-extrapolated_tail(&rest, value).ln())
        })
        .sum()
}

/// One row's components, before the calibration scores them.
struct Scored {
    predicted: usize,
    components: [f64; COMPONENTS],
    neighbours: Vec<Neighbour>,
}

/// What the detector keeps of one search: the `k` nearest rows of the predicted class and of the others.
struct Near {
    class: i64,
    same: KBest,
    other: KBest,
}

impl Collector for Near {
    fn bound(&self, label: i64) -> f32 {
        let own = if label == self.class {
            &self.same
        } else {
            &self.other
        };
        own.worst()
    }

    fn offer(&mut self, squared: f32, index: usize, label: i64) {
        if label == self.class {
            self.same.push(squared, index, label);
        } else {
            self.other.push(squared, index, label);
        }
    }
}

/// The mean distance of the kept rows; infinite when none.
fn mean_distance(best: &KBest) -> f64 {
    let items = best.items();
    if items.is_empty() {
        return f64::INFINITY;
    }
    items
        .iter()
        .map(|&(d, _, _)| f64::from(d).sqrt())
        .sum::<f64>()
        / items.len() as f64
}

/// Fisher's combination of the enabled components' tail probabilities among the clean rows.
fn fisher(clean: &[Vec<f64>], enabled: &[Component], components: &[f64; COMPONENTS]) -> f64 {
    enabled
        .iter()
        .filter_map(|c| {
            let sorted = clean.get(c.index())?;
            let value = components.get(c.index())?;
            Some(-extrapolated_tail(sorted, *value).ln())
        })
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
        let names: Vec<String> = (0..64).map(|i| format!("px{i}")).collect();
        let profile = Profile::from_rows(&names, "label", &train, &train_labels, 5000).unwrap();
        let shape = ImageShape {
            height: 8,
            width: 8,
            channels: 1,
        };
        let mut detector =
            Detector::new(DetectorConfig::for_shape(shape), &profile, "input").unwrap();
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
        // Each verdict carries the row's k nearest reference rows, the ones a search of its own finds: what
        // `Index::nearest_near` relies on.
        let index = Index::new(&profile.reference);
        for (row, verdict) in held.chunks_exact(64).zip(&clean) {
            assert_eq!(
                verdict.neighbours,
                index.nearest(row, detector.config().k, None)
            );
            assert_eq!(verdict.neighbours.len(), detector.config().k);
        }
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
        // Clean digits are sixteenths inside the training range: no off-support mass. Nudging every pixel by 0.02
        // (far less than the attacks' 0.1) leaves the lattice, which clean data never does.
        let first = held.get(..64).unwrap();
        let clean_row = detector.assess(&model, first).unwrap();
        assert_eq!(clean_row[0].components[Component::OffSupport.index()], 0.0);
        let nudged: Vec<f32> = first.iter().map(|v| (v + 0.02).min(1.0)).collect();
        let verdict = detector.assess(&model, &nudged).unwrap();
        assert!(verdict[0].components[Component::OffSupport.index()] > 0.5);
        assert!(verdict[0].adversarial, "{verdict:?}");
        // The margin component is one minus the top-two gap of the probabilities.
        let margin = clean_row[0].components[Component::LowMargin.index()];
        assert!((0.0..=1.0).contains(&margin));
        // A calibration made for all components does not fit a detector of fewer.
        let saved = detector.calibration().unwrap().clone();
        let mut config = DetectorConfig::for_shape(shape);
        config.components = vec![Component::Squeeze];
        let mut squeeze_only = Detector::new(config, &profile, "input").unwrap();
        assert!(squeeze_only.set_calibration(saved.clone()).is_err());
        assert!(detector.clone().set_calibration(saved).is_ok());
        // A row the model answers with NaN (finite but extreme values) is flagged, and the rows beside it in the
        // batch are judged as they are alone; it failed the whole batch before.
        let mut batch = first.to_vec();
        batch.extend(std::iter::repeat_n(-3e38_f32, 64));
        let scores = predict(&model, "input", 2, 64, batch.clone()).unwrap();
        assert!(scores[1].iter().any(|v| v.is_nan()), "{:?}", scores[1]);
        let verdicts = detector.assess(&model, &batch).unwrap();
        assert!(verdicts[1].adversarial);
        assert_eq!(
            (verdicts[0].predicted, verdicts[0].adversarial),
            (clean_row[0].predicted, clean_row[0].adversarial)
        );
        // Calibration on such a row is refused, and on copies of a few rows.
        let mut poisoned = held.to_vec();
        poisoned.extend(std::iter::repeat_n(-3e38_f32, 64));
        let err = detector
            .calibrate(&model, &poisoned)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NaN"), "{err}");
        let err = detector
            .calibrate(&model, &first.repeat(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("1 distinct clean rows"), "{err}");
    }
}
