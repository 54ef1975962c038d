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
        let probs: Vec<Vec<f32>> = values.chunks(classes).map(to_probabilities).collect();
        let mut ranked: Vec<Vec<usize>> = Vec::with_capacity(rows);
        for p in &probs {
            let mut order: Vec<usize> = (0..classes).collect();
            // Stable sort: ties keep the lower label first, like argmax.
            order.sort_by(|&a, &b| {
                let (x, y) = (
                    p.get(a).copied().unwrap_or(0.0),
                    p.get(b).copied().unwrap_or(0.0),
                );
                y.total_cmp(&x)
            });
            ranked.push(order);
        }
        let labels: Vec<i64> = ranked
            .iter()
            .map(|o| o.first().copied().unwrap_or(0) as i64)
            .collect();
        let tensor = |name: &str, shape: Vec<usize>, data: TensorData| {
            Tensor::new(name, shape, data).map_err(|e| DefendError::Model(e.to_string()))
        };
        let mut out = vec![tensor("label", vec![rows], TensorData::Int64(labels))?];
        match *self {
            OutputPolicy::LabelOnly => {}
            OutputPolicy::Full { decimals } => {
                let flat = probs
                    .iter()
                    .flatten()
                    .map(|&p| round(p, decimals))
                    .collect();
                out.push(tensor(
                    "probabilities",
                    vec![rows, classes],
                    TensorData::Fp32(flat),
                )?);
            }
            OutputPolicy::TopK { k, decimals } => {
                let k = k.min(classes);
                let mut top_labels = Vec::with_capacity(rows * k);
                let mut top_probs = Vec::with_capacity(rows * k);
                for (order, p) in ranked.iter().zip(&probs) {
                    for &c in order.iter().take(k) {
                        top_labels.push(c as i64);
                        top_probs.push(round(p.get(c).copied().unwrap_or(0.0), decimals));
                    }
                }
                out.push(tensor(
                    "top_k_labels",
                    vec![rows, k],
                    TensorData::Int64(top_labels),
                )?);
                out.push(tensor(
                    "top_k_probabilities",
                    vec![rows, k],
                    TensorData::Fp32(top_probs),
                )?);
            }
        }
        Ok(out)
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
