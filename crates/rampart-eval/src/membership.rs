//! Membership inference: does the model answer its training rows differently from rows it never saw?
//!
//! Two score attacks, each calibrated per class: the loss attack (a member has a lower cross-entropy loss) and the
//! confidence attack (a member gets a higher probability for its true class). Calibration subtracts the class's mean
//! score over reference rows, which removes "this class is easy" from the signal. The reference rows are the other
//! half of the data (two-fold: each half is scored with the other half's class means), so no row calibrates itself.
//! Reported: the ROC AUC (0.5 = no leak) and the true-positive rate at a 1% false-positive rate.

use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::ops::softmax_rows;

/// The result of one membership attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipScore {
    /// The attack: `loss` or `confidence`.
    pub attack: String,
    /// The area under the ROC curve.
    pub auc: f64,
    /// The true-positive rate at a false-positive rate of at most 1%.
    pub tpr_at_1pct_fpr: f64,
}

/// Turns model scores into probabilities: rows that already are probabilities are kept, logits go through softmax.
pub fn probabilities(scores: &[f32], k: usize) -> Vec<f32> {
    let is_prob = scores.chunks_exact(k.max(1)).all(|row| {
        row.iter().all(|&v| (0.0..=1.0).contains(&v))
            && (row.iter().sum::<f32>() - 1.0).abs() < 1e-3
    });
    if is_prob {
        scores.to_vec()
    } else {
        softmax_rows(scores, k)
    }
}

/// Runs both attacks. `members` and `outsiders` are the model's scores (`[n, k]`) on member and non-member rows.
pub fn membership(
    members: &[f32],
    member_labels: &[usize],
    outsiders: &[f32],
    outsider_labels: &[usize],
    k: usize,
) -> Result<Vec<MembershipScore>> {
    if member_labels.len() < 10 || outsider_labels.len() < 10 {
        return Err(EvalError::Setting(
            "membership inference needs at least 10 member and 10 non-member rows".into(),
        ));
    }
    let pm = probabilities(members, k);
    let po = probabilities(outsiders, k);
    let true_prob = |p: &[f32], labels: &[usize]| -> Vec<f64> {
        p.chunks_exact(k)
            .zip(labels)
            .map(|(row, &l)| f64::from(row.get(l).copied().unwrap_or(0.0)).max(1e-12))
            .collect()
    };
    let tm = true_prob(&pm, member_labels);
    let to = true_prob(&po, outsider_labels);
    let mut out = Vec::new();
    for (attack, score) in [
        ("loss", (|p: f64| p.ln()) as fn(f64) -> f64),
        ("confidence", (|p: f64| p) as fn(f64) -> f64),
    ] {
        let sm: Vec<f64> = tm.iter().map(|&p| score(p)).collect();
        let so: Vec<f64> = to.iter().map(|&p| score(p)).collect();
        let (cm, co) = calibrate(&sm, member_labels, &so, outsider_labels, k);
        let (auc, tpr) = roc(&cm, &co);
        out.push(MembershipScore {
            attack: attack.to_owned(),
            auc,
            tpr_at_1pct_fpr: tpr,
        });
    }
    Ok(out)
}

/// Two-fold per-class calibration: each half's scores minus the other half's per-class mean over all rows.
fn calibrate(sm: &[f64], lm: &[usize], so: &[f64], lo: &[usize], k: usize) -> (Vec<f64>, Vec<f64>) {
    let means = |fold: usize| -> Vec<f64> {
        let mut sum = vec![0.0; k];
        let mut count = vec![0usize; k];
        for (scores, labels) in [(sm, lm), (so, lo)] {
            for (i, (&s, &l)) in scores.iter().zip(labels).enumerate() {
                if i % 2 == fold {
                    if let (Some(a), Some(c)) = (sum.get_mut(l), count.get_mut(l)) {
                        *a += s;
                        *c += 1;
                    }
                }
            }
        }
        sum.iter()
            .zip(&count)
            .map(|(s, &c)| if c == 0 { 0.0 } else { s / c as f64 })
            .collect()
    };
    let folds = [means(0), means(1)];
    let apply = |scores: &[f64], labels: &[usize]| -> Vec<f64> {
        scores
            .iter()
            .zip(labels)
            .enumerate()
            .map(|(i, (&s, &l))| {
                let other = folds
                    .get(1 - i % 2)
                    .and_then(|m| m.get(l))
                    .copied()
                    .unwrap_or(0.0);
                s - other
            })
            .collect()
    };
    (apply(sm, lm), apply(so, lo))
}

/// ROC AUC (ties count one half) and the TPR at FPR <= 1%, for "higher score = member".
pub fn roc(positives: &[f64], negatives: &[f64]) -> (f64, f64) {
    let mut all: Vec<(f64, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (p, n) = (positives.len() as f64, negatives.len() as f64);
    if p == 0.0 || n == 0.0 {
        return (0.5, 0.0);
    }
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    let mut auc = 0.0;
    let mut best_tpr = 0.0f64;
    let mut i = 0;
    while i < all.len() {
        let score = all.get(i).map_or(0.0, |a| a.0);
        let (mut dtp, mut dfp) = (0.0, 0.0);
        while let Some(&(s, pos)) = all.get(i) {
            if s != score {
                break;
            }
            if pos {
                dtp += 1.0;
            } else {
                dfp += 1.0;
            }
            i += 1;
        }
        auc += dfp * (tp + dtp / 2.0);
        tp += dtp;
        fp += dfp;
        if fp / n <= 0.01 {
            best_tpr = best_tpr.max(tp / p);
        }
    }
    (auc / (p * n), best_tpr)
}
