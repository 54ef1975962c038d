//! A profile of the training data: per-feature ranges, quantiles, means and variances, per-class centroids, and a
//! labelled reference sample for the neighbour-based detectors. Built from a CSV file by `rampart profile`.

use std::io::Read;

use crate::knn::Reference;
use crate::DefendError;

/// The format version written in every profile.
pub const PROFILE_VERSION: u32 = 1;

/// The quantiles recorded per feature.
pub const QUANTILES: [f64; 7] = [0.001, 0.01, 0.05, 0.5, 0.95, 0.99, 0.999];

/// Most values a profile is built from (rows × features), to bound memory.
pub const MAX_CELLS: usize = 50_000_000;
/// The most rows a profile's reference sample may hold: the extraction monitor's start searches every row's nearest
/// neighbour among the others (about a second at 20,000 rows of 64 values; minutes at 100,000).
pub const MAX_REFERENCE: usize = 20_000;

/// What the training data looks like, feature by feature.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// [`PROFILE_VERSION`].
    pub version: u32,
    /// Rows the profile was built from.
    pub rows: usize,
    /// The label column's name.
    pub label_column: String,
    /// One entry per feature, in column order.
    pub features: Vec<FeatureProfile>,
    /// One entry per label, in ascending label order.
    pub classes: Vec<ClassProfile>,
    /// A labelled sample of the rows (every row up to the cap, then an even stride).
    pub reference: Reference,
}

/// One feature's statistics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureProfile {
    /// The column's name.
    pub name: String,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Population variance.
    pub variance: f64,
    /// Values at [`QUANTILES`].
    pub quantiles: Vec<f64>,
    /// The quantisation step, when every value is `min + k × step` (pixels stored as 8-bit or as sixteenths,
    /// counts); absent for continuous features and for those with fewer than two distinct values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
}

impl FeatureProfile {
    /// How far `value` lies from the values this feature takes in the training data: the distance outside
    /// `[min, max]` plus, for a quantised feature, the distance to the nearest step. Zero for a value the data could
    /// hold.
    pub fn off_support(&self, value: f64) -> f64 {
        if !value.is_finite() {
            return f64::INFINITY;
        }
        let inside = value.clamp(self.min, self.max);
        let outside = (value - inside).abs();
        let off_step = match self.step {
            Some(step) if step > 0.0 => {
                let k = ((inside - self.min) / step).round();
                let nearest = (self.min + k * step).min(self.max);
                (inside - nearest).abs()
            }
            _ => 0.0,
        };
        outside + off_step
    }
}

/// The largest number of steps a quantised feature may span (beyond it the feature is treated as continuous).
const MAX_STEPS: f64 = 65_536.0;

/// The quantisation step of a sorted column, if every value sits on `min + k × step` for the smallest gap `step`.
fn quantisation_step(sorted: &[f64]) -> Option<f64> {
    let (min, max) = (*sorted.first()?, *sorted.last()?);
    let span = max - min;
    if span <= 0.0 || !span.is_finite() {
        return None;
    }
    // Values read as f32: differences below this are representation error, not distinct values.
    let noise = span * 1e-6;
    let step = sorted
        .windows(2)
        .filter_map(|w| match w {
            [a, b] if b - a > noise => Some(b - a),
            _ => None,
        })
        .reduce(f64::min)?;
    if span / step > MAX_STEPS {
        return None;
    }
    let on_lattice = sorted.iter().all(|&v| {
        let k = (v - min) / step;
        (k - k.round()).abs() <= 1e-3
    });
    on_lattice.then_some(step)
}

/// One class's statistics.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassProfile {
    /// The label.
    pub label: i64,
    /// Rows with this label.
    pub count: usize,
    /// The mean row of the class.
    pub centroid: Vec<f64>,
}

impl Profile {
    /// Builds a profile from CSV with a header row, numeric feature columns and an integer label column.
    /// At most `max_reference` rows are kept as the reference sample.
    pub fn from_csv(
        input: impl Read,
        label_column: &str,
        max_reference: usize,
    ) -> Result<Profile, DefendError> {
        let (names, values, labels) = read_labelled_rows(input, label_column)?;
        Profile::from_rows(&names, label_column, &values, &labels, max_reference)
    }

    /// Builds a profile from rows already in memory (flattened, `names.len()` values per row).
    pub fn from_rows(
        names: &[String],
        label_column: &str,
        values: &[f32],
        labels: &[i64],
        max_reference: usize,
    ) -> Result<Profile, DefendError> {
        let width = names.len();
        let rows = labels.len();
        if rows < 2 || width == 0 || values.len() != rows * width {
            return Err(DefendError::Read {
                what: "the data set".into(),
                reason: format!("need at least 2 rows of {width} features, got {rows}"),
            });
        }
        let mut features = Vec::with_capacity(width);
        for (j, name) in names.iter().enumerate() {
            let mut column: Vec<f64> = values
                .iter()
                .skip(j)
                .step_by(width)
                .map(|&v| f64::from(v))
                .collect();
            let mean = column.iter().sum::<f64>() / rows as f64;
            let variance =
                column.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / rows as f64;
            column.sort_by(f64::total_cmp);
            let quantiles = QUANTILES
                .iter()
                .filter_map(|&q| crate::stats::quantile_sorted(&column, q))
                .collect();
            features.push(FeatureProfile {
                name: name.clone(),
                min: column.first().copied().unwrap_or(0.0),
                max: column.last().copied().unwrap_or(0.0),
                mean,
                variance,
                quantiles,
                step: quantisation_step(&column),
            });
        }
        let mut distinct: Vec<i64> = labels.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let classes = distinct
            .iter()
            .map(|&label| {
                let mut centroid = vec![0.0_f64; width];
                let mut count = 0;
                for (row, _) in values
                    .chunks_exact(width)
                    .zip(labels)
                    .filter(|pair| *pair.1 == label)
                {
                    count += 1;
                    for (c, &v) in centroid.iter_mut().zip(row) {
                        *c += f64::from(v);
                    }
                }
                centroid.iter_mut().for_each(|c| *c /= count.max(1) as f64);
                ClassProfile {
                    label,
                    count,
                    centroid,
                }
            })
            .collect();
        let stride = rows.div_ceil(max_reference.max(1));
        let mut reference = Reference {
            width,
            rows: Vec::new(),
            labels: Vec::new(),
        };
        for (row, &label) in values.chunks_exact(width).zip(labels).step_by(stride) {
            reference.rows.extend_from_slice(row);
            reference.labels.push(label);
        }
        Ok(Profile {
            version: PROFILE_VERSION,
            rows,
            label_column: label_column.to_string(),
            features,
            classes,
            reference,
        })
    }

    /// Reads and checks a profile written by [`Profile::to_json`].
    pub fn from_json(text: &str) -> Result<Profile, DefendError> {
        let profile: Profile = serde_json::from_str(text).map_err(|e| DefendError::Read {
            what: "the profile".into(),
            reason: format!("{e}; rebuild it with `rampart profile`"),
        })?;
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks the internal consistency a hand-edited or foreign profile may lack.
    pub fn validate(&self) -> Result<(), DefendError> {
        let bad = |reason: &str| DefendError::Read {
            what: "the profile".into(),
            reason: reason.into(),
        };
        if self.version != PROFILE_VERSION {
            return Err(bad(
                "unsupported version; rebuild it with `rampart profile`",
            ));
        }
        let width = self.features.len();
        if width == 0 || self.reference.width != width {
            return Err(bad(
                "the reference sample's width differs from the feature count",
            ));
        }
        if self.reference.rows.len() != self.reference.labels.len() * width
            || self.reference.is_empty()
        {
            return Err(bad("the reference sample is empty or truncated"));
        }
        if self.reference.len() > MAX_REFERENCE {
            return Err(bad(&format!(
                "the reference sample has {} rows, more than {MAX_REFERENCE}: the detectors' start (a leave-one-out \
                 search of every row) would take minutes; profile again with `--max-reference {MAX_REFERENCE}` or less",
                self.reference.len()
            )));
        }
        if self
            .features
            .iter()
            .any(|f| !(f.min.is_finite() && f.max.is_finite() && f.min <= f.max))
        {
            return Err(bad("a feature has no finite range"));
        }
        if self
            .features
            .iter()
            .any(|f| f.step.is_some_and(|s| !(s.is_finite() && s > 0.0)))
        {
            return Err(bad(
                "a feature's quantisation step is not a positive number",
            ));
        }
        if self.classes.iter().any(|c| c.centroid.len() != width) {
            return Err(bad("a class centroid has the wrong width"));
        }
        Ok(())
    }

    /// The feature count.
    pub fn width(&self) -> usize {
        self.features.len()
    }
}

/// Feature names, rows (flattened) and labels.
pub type LabelledRows = (Vec<String>, Vec<f32>, Vec<i64>);

/// Reads CSV with a header row, numeric feature columns and an integer label column: the feature names, the rows
/// (flattened) and the labels. Bounded by [`MAX_CELLS`]; the error names the row.
pub fn read_labelled_rows(
    input: impl Read,
    label_column: &str,
) -> Result<LabelledRows, DefendError> {
    let bad = |reason: String| DefendError::Read {
        what: "the data set".into(),
        reason,
    };
    let (mut reader, header, label_at) = labelled_csv(input, label_column, &bad)?;
    let names: Vec<String> = header
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != label_at)
        .map(|(_, h)| h.to_string())
        .collect();
    if names.is_empty() {
        return Err(bad("there is no feature column besides the label".into()));
    }
    let width = names.len();
    let mut values: Vec<f32> = Vec::new();
    let mut labels: Vec<i64> = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("row {}: {e}", line + 2)))?;
        if record.len() != width + 1 {
            return Err(bad(format!(
                "row {} has {} fields, the header {}",
                line + 2,
                record.len(),
                width + 1
            )));
        }
        if values.len() + width > MAX_CELLS {
            return Err(bad(format!(
                "more than {MAX_CELLS} values; profile a sample of the rows"
            )));
        }
        for (i, field) in record.iter().enumerate() {
            if i == label_at {
                let label = field.trim().parse::<i64>().map_err(|_| {
                    bad(format!(
                        "row {}: label `{}` is not an integer",
                        line + 2,
                        crate::clip(field)
                    ))
                })?;
                labels.push(label);
            } else {
                let v = field
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "row {}: `{}` in column `{}` is not a finite number",
                            line + 2,
                            crate::clip(field),
                            crate::clip(header.get(i).unwrap_or("?"))
                        ))
                    })?;
                values.push(v);
            }
        }
    }
    Ok((names, values, labels))
}

/// Opens a CSV with a header row and finds its label column: the reader, the header and the label's index.
/// `bad` says what is being read in the error.
pub(crate) fn labelled_csv<R: Read>(
    input: R,
    label_column: &str,
    bad: &impl Fn(String) -> DefendError,
) -> Result<(csv::Reader<R>, csv::StringRecord, usize), DefendError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let header = reader
        .headers()
        .map_err(|e| bad(format!("the header row: {e}")))?
        .clone();
    let label_at = header
        .iter()
        .position(|h| h == label_column)
        .ok_or_else(|| {
            bad(format!(
                "no column `{label_column}`; pass the label column's name with --label-column"
            ))
        })?;
    Ok((reader, header, label_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_past_the_cap_and_a_long_field_are_refused_briefly() {
        let n = MAX_REFERENCE + 1;
        let values: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let names = vec!["x".to_owned()];
        let err = Profile::from_rows(&names, "label", &values, &labels, n)
            .and_then(|p| p.validate().map(|()| p))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-reference"), "{err}");
        let csv = format!("x,label\n{},1\n", "7".repeat(10_000) + "z");
        let err = read_labelled_rows(csv.as_bytes(), "label")
            .unwrap_err()
            .to_string();
        assert!(
            err.len() < 300 && err.contains("not a finite number"),
            "{err}"
        );
    }

    #[test]
    fn builds_statistics_from_csv() {
        let csv = "a,label,b\n0,1,10\n1,0,20\n2,1,30\n3,0,40\n";
        let p = Profile::from_csv(csv.as_bytes(), "label", 2).unwrap();
        assert_eq!(p.rows, 4);
        assert_eq!(p.features[0].name, "a");
        assert_eq!((p.features[0].min, p.features[0].max), (0.0, 3.0));
        assert_eq!(p.features[1].mean, 25.0);
        assert_eq!(p.features[1].variance, 125.0);
        assert_eq!(p.features[0].quantiles[3], 1.5);
        assert_eq!(p.classes[0].label, 0);
        assert_eq!(p.classes[0].centroid, vec![2.0, 30.0]);
        assert_eq!(p.reference.labels, vec![1, 1]);
        let again = Profile::from_json(&p.to_json()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn refuses_bad_data_with_the_row() {
        let err = |csv: &str| {
            Profile::from_csv(csv.as_bytes(), "label", 10)
                .unwrap_err()
                .to_string()
        };
        assert!(err("a,b\n1,2\n").contains("no column `label`"));
        assert!(err("a,label\n1,0\nx,1\n").contains("row 3"));
        assert!(err("a,label\n1,0\nNaN,1\n").contains("finite"));
        assert!(err("a,label\n1,0.5\n2,1\n").contains("not an integer"));
        assert!(err("a,label\n1,0,3\n").contains("fields"));
        assert!(err("a,label\n1,0\n").contains("at least 2 rows"));
        assert!(Profile::from_json("{\"version\": 1}").is_err());
    }

    #[test]
    fn profiles_the_digits_training_set() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/digits/train.csv"
        );
        let p = Profile::from_csv(std::fs::File::open(path).unwrap(), "label", 5000).unwrap();
        assert_eq!((p.rows, p.width(), p.classes.len()), (1347, 64, 10));
        assert_eq!(p.reference.len(), 1347);
        // px0 is always blank in the digits data; px36 spans the full range.
        assert_eq!((p.features[0].min, p.features[0].max), (0.0, 0.0));
        assert_eq!((p.features[36].min, p.features[36].max), (0.0, 1.0));
        assert_eq!(p.classes.iter().map(|c| c.count).sum::<usize>(), 1347);
        // The pixels are sixteenths: a blank column has no step, the others step by 1/16.
        assert_eq!(p.features[0].step, None);
        assert_eq!(p.features[36].step, Some(0.0625));
        assert_eq!(p.features[36].off_support(0.5), 0.0);
        assert!((p.features[36].off_support(0.52) - 0.02).abs() < 1e-6);
        assert!((p.features[36].off_support(0.55) - 0.0125).abs() < 1e-6);
        assert!((p.features[36].off_support(1.1) - 0.1).abs() < 1e-9);
        assert!((p.features[0].off_support(0.1) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn finds_the_quantisation_step_only_on_a_lattice() {
        assert_eq!(quantisation_step(&[0.0, 0.25, 0.75, 1.0]), Some(0.25));
        assert_eq!(quantisation_step(&[2.0, 2.0, 5.0, 11.0]), Some(3.0));
        assert_eq!(quantisation_step(&[0.0, 0.25, 0.6, 1.0]), None);
        assert_eq!(quantisation_step(&[3.0, 3.0]), None);
        let bytes: Vec<f64> = (0..=255).map(|b| f64::from(b as f32 / 255.0)).collect();
        assert!(quantisation_step(&bytes).is_some_and(|s| (s - 1.0 / 255.0).abs() < 1e-7));
        let continuous: Vec<f64> = (0..1000)
            .map(|i| f64::from(i) * 0.001 + (f64::from(i) * 0.37).sin() * 1e-4)
            .collect();
        assert_eq!(quantisation_step(&continuous), None);
    }
}
