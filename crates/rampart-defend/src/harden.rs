//! Output hardening: return less of the model's output than it computes (label only, top-k, rounded probabilities),
//! per model and per role. Fewer bits per answer make extraction and membership inference cost more queries.

use std::collections::BTreeMap;

use rampart_infer::{Tensor, TensorData};

use crate::{rows_of, to_probabilities, DefendError};

/// What one role receives.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputPolicy {
    /// The probabilities of every class, rounded to `decimals` when set.
    Full {
        /// Decimal places kept (none: as computed).
        #[serde(default)]
        decimals: Option<u32>,
    },
    /// The `k` most likely labels and their probabilities, rounded to `decimals` when set.
    TopK {
        /// Labels returned.
        k: usize,
        /// Decimal places kept.
        #[serde(default)]
        decimals: Option<u32>,
    },
    /// The predicted label only.
    LabelOnly,
}

/// A model's hardening: a default policy and overrides per role.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hardening {
    /// The policy for roles without an override. Safe default: label only.
    #[serde(default = "label_only")]
    pub default: OutputPolicy,
    /// Per-role overrides.
    #[serde(default)]
    pub roles: BTreeMap<String, OutputPolicy>,
}

fn label_only() -> OutputPolicy {
    OutputPolicy::LabelOnly
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            default: OutputPolicy::LabelOnly,
            roles: BTreeMap::new(),
        }
    }
}

impl Hardening {
    /// The policy of a principal with `roles` (the first role with an override wins, in the order given).
    pub fn policy_for<'a>(&'a self, roles: &[&str]) -> &'a OutputPolicy {
        roles
            .iter()
            .find_map(|r| self.roles.get(*r))
            .unwrap_or(&self.default)
    }

    /// Checks the settings at configuration load.
    pub fn validate(&self) -> Result<(), DefendError> {
        for policy in std::iter::once(&self.default).chain(self.roles.values()) {
            let decimals = match policy {
                OutputPolicy::Full { decimals } => *decimals,
                OutputPolicy::TopK { k, decimals } => {
                    if *k == 0 {
                        return Err(DefendError::Config("top-k needs k >= 1".into()));
                    }
                    *decimals
                }
                OutputPolicy::LabelOnly => None,
            };
            if decimals.is_some_and(|d| d > 9) {
                return Err(DefendError::Config(
                    "rounding keeps at most 9 decimals".into(),
                ));
            }
        }
        Ok(())
    }
}

impl OutputPolicy {
    /// Hardens a `[N, classes]` score tensor (logits or probabilities). Returns the tensors the client receives:
    /// `label` (INT64 `[N]`) always; `probabilities` (FP32 `[N, classes]`) for full; `top_k_labels` (INT64) and
    /// `top_k_probabilities` (FP32), both `[N, k]`, for top-k.
    pub fn apply(&self, scores: &Tensor) -> Result<Vec<Tensor>, DefendError> {
        let (rows, classes, values) = rows_of(scores)?;
        if classes == 0 {
            return Err(DefendError::Model("the model returned no classes".into()));
        }
        // The labels ranked by each row's probabilities; only as many as are returned.
        let ranked = match *self {
            OutputPolicy::TopK { k, .. } => k.min(classes),
            OutputPolicy::Full { .. } | OutputPolicy::LabelOnly => 1,
        };
        let mut labels = Vec::with_capacity(rows);
        let mut kept = Vec::with_capacity(rows * ranked);
        let mut probabilities = Vec::with_capacity(values.len());
        let mut order = Vec::with_capacity(classes);
        for row in values.chunks(classes) {
            let p = to_probabilities(row);
            rank(&p, ranked, &mut order);
            labels.push(order.first().map_or(0, |&c| c as i64));
            match self {
                OutputPolicy::TopK { .. } => {
                    kept.extend(order.iter().map(|&c| c as i64));
                    probabilities.extend(order.iter().map(|&c| p.get(c).copied().unwrap_or(0.0)));
                }
                OutputPolicy::Full { .. } => probabilities.extend_from_slice(&p),
                OutputPolicy::LabelOnly => {}
            }
        }
        let tensor = |name: &str, shape: Vec<usize>, data: TensorData| {
            Tensor::new(name, shape, data).map_err(|e| DefendError::Model(e.to_string()))
        };
        let mut out = vec![tensor("label", vec![rows], TensorData::Int64(labels))?];
        match *self {
            OutputPolicy::LabelOnly => {}
            OutputPolicy::Full { decimals } => {
                probabilities
                    .iter_mut()
                    .for_each(|p| *p = round(*p, decimals));
                out.push(tensor(
                    "probabilities",
                    vec![rows, classes],
                    TensorData::Fp32(probabilities),
                )?);
            }
            OutputPolicy::TopK { decimals, .. } => {
                probabilities
                    .iter_mut()
                    .for_each(|p| *p = round(*p, decimals));
                out.push(tensor(
                    "top_k_labels",
                    vec![rows, ranked],
                    TensorData::Int64(kept),
                )?);
                out.push(tensor(
                    "top_k_probabilities",
                    vec![rows, ranked],
                    TensorData::Fp32(probabilities),
                )?);
            }
        }
        Ok(out)
    }
}

/// The `k` most probable classes of `p` into `order`, most probable first; ties keep the lower class first (as a
/// stable sort, and argmax, do). Top-3 of 10 classes picks three times instead of sorting ten.
fn rank(p: &[f32], k: usize, order: &mut Vec<usize>) {
    /// At most this many are picked one by one (each pick reads the whole row); more are sorted.
    const PICKED: usize = 8;
    order.clear();
    if k > PICKED || k >= p.len() / 2 {
        order.extend(0..p.len());
        order.sort_by(|&a, &b| {
            let (x, y) = (
                p.get(a).copied().unwrap_or(0.0),
                p.get(b).copied().unwrap_or(0.0),
            );
            y.total_cmp(&x)
        });
        order.truncate(k);
        return;
    }
    // A few of many: pick the best of the rest k times.
    for _ in 0..k {
        let best = p
            .iter()
            .enumerate()
            .filter(|(c, _)| !order.contains(c))
            .fold(None, |best: Option<(usize, f32)>, (c, &v)| match best {
                Some((_, b)) if v.total_cmp(&b).is_le() => best,
                _ => Some((c, v)),
            });
        match best {
            Some((c, _)) => order.push(c),
            None => break,
        }
    }
}

/// Rounds to `decimals` places, ties to even.
fn round(p: f32, decimals: Option<u32>) -> f32 {
    match decimals {
        None => p,
        Some(d) => {
            let scale = 10_f64.powi(d as i32);
            ((f64::from(p) * scale).round_ties_even() / scale) as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores() -> Tensor {
        // Row 0 is probabilities; row 1 logits whose softmax is [0.0900, 0.2447, 0.6652].
        Tensor::new(
            "logits",
            vec![2, 3],
            TensorData::Fp32(vec![0.125, 0.5, 0.375, 0.0, 1.0, 2.0]),
        )
        .unwrap()
    }

    #[test]
    fn label_only_top_k_and_rounding() {
        let out = OutputPolicy::LabelOnly.apply(&scores()).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data, TensorData::Int64(vec![1, 2]));
        let out = OutputPolicy::TopK {
            k: 2,
            decimals: Some(2),
        }
        .apply(&scores())
        .unwrap();
        assert_eq!(out[1].data, TensorData::Int64(vec![1, 2, 2, 1]));
        // 0.375 rounds to 0.38 (ties to even on 37.5), 0.6652 to 0.67, 0.2447 to 0.24.
        assert_eq!(out[2].data, TensorData::Fp32(vec![0.5, 0.38, 0.67, 0.24]));
        let out = OutputPolicy::Full { decimals: Some(1) }
            .apply(&scores())
            .unwrap();
        assert_eq!(
            out[1].data,
            TensorData::Fp32(vec![0.1, 0.5, 0.4, 0.1, 0.2, 0.7])
        );
    }

    #[test]
    fn ranking_is_a_stable_sort_by_probability_for_every_k() {
        // Rows with ties, a NaN, infinities and zeros; every k from 1 past the width.
        let mut seed = 7_u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for width in [1, 2, 3, 5, 8, 13, 17, 20, 40] {
            for _ in 0..50 {
                let p: Vec<f32> = (0..width)
                    .map(|_| match next() % 9 {
                        0 => 0.25,
                        1 => 0.0,
                        2 => f32::NAN,
                        3 => f32::INFINITY,
                        _ => (next() % 1000) as f32 / 1000.0,
                    })
                    .collect();
                let mut sorted: Vec<usize> = (0..width).collect();
                sorted.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
                for k in 1..width + 2 {
                    let mut order = Vec::new();
                    rank(&p, k.min(width), &mut order);
                    assert_eq!(order, sorted[..k.min(width)], "{p:?} k={k}");
                }
            }
        }
    }

    #[test]
    fn roles_pick_their_policy_and_default_is_label_only() {
        let h: Hardening = serde_json::from_str(
            r#"{"roles": {"analyst": {"mode": "top_k", "k": 3}, "admin": {"mode": "full"}}}"#,
        )
        .unwrap();
        assert_eq!(h.policy_for(&["viewer"]), &OutputPolicy::LabelOnly);
        assert_eq!(
            h.policy_for(&["viewer", "admin"]),
            &OutputPolicy::Full { decimals: None }
        );
        assert!(h.validate().is_ok());
        let bad: Hardening =
            serde_json::from_str(r#"{"default": {"mode": "top_k", "k": 0}}"#).unwrap();
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Hardening>(r#"{"defualt": {"mode": "full"}}"#).is_err());
    }
}
