//! Label audit by confident learning, matching cleanlab's `filter.find_label_issues` with its defaults
//! (`filter_by="prune_by_noise_rate"`, `frac_noise=1.0`, `min_examples_per_class=1`, calibrated confident joint),
//! step for step: per-class thresholds (mean self-confidence), the confident joint, its calibration to the label
//! counts, the prune count per off-diagonal cell (`_keep_at_least_n_per_class`), pruning by largest margin
//! `p[j] - p[k]` within each given class, and finally un-flagging rows whose argmax equals their label.
//! Issues are ranked by self-confidence (cleanlab's `return_indices_ranked_by="self_confidence"`).

use serde::Serialize;

use crate::matrix::Matrix;

/// cleanlab's `FLOATING_POINT_COMPARISON`.
const EPS: f64 = 1e-6;
/// cleanlab's `CONFIDENT_THRESHOLDS_LOWER_BOUND`.
const THRESHOLD_FLOOR: f64 = 2.0 * EPS;

/// Outcome of the audit.
#[derive(Debug, Clone, Serialize)]
pub struct LabelAudit {
    /// Row indices (0-based, in data order) with a label issue, most suspicious first.
    pub issues: Vec<usize>,
    /// Self-confidence `p[given label]` of every row: the label quality score.
    pub self_confidence: Vec<f64>,
    /// The calibrated confident joint, `[given][true]`.
    pub confident_joint: Vec<Vec<i64>>,
    /// The label cleanlab's argmax suggests for every row.
    pub predicted: Vec<usize>,
}

/// `np.argmax`: first maximum.
fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    let mut value = f64::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > value {
            best = i;
            value = v;
        }
    }
    best
}

/// numpy's `round` (half to even).
fn round_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

/// cleanlab's `round_preserving_sum`.
fn round_preserving_sum(floats: &[f64]) -> Vec<i64> {
    let mut ints: Vec<f64> = floats.iter().map(|&f| round_even(f)).collect();
    let orig_sum = round_even(floats.iter().sum());
    let mut int_sum = round_even(ints.iter().sum());
    let mut guard = 0;
    while (int_sum - orig_sum).abs() > EPS && guard < 1000 {
        guard += 1;
        let diff = round_even(orig_sum - int_sum);
        let increment: f64 = if diff < 0.0 { -1.0 } else { 1.0 };
        let changes = (diff.abs() as usize).min(floats.len());
        // np.argsort(floats - ints)[::-increment][:changes]; argsort is stable for short rows.
        let mut order: Vec<usize> = (0..floats.len()).collect();
        let remainder =
            |i: usize| floats.get(i).copied().unwrap_or(0.0) - ints.get(i).copied().unwrap_or(0.0);
        order.sort_by(|&a, &b| remainder(a).total_cmp(&remainder(b)));
        if increment > 0.0 {
            order.reverse();
        }
        for &i in order.iter().take(changes) {
            if let Some(v) = ints.get_mut(i) {
                *v += increment;
            }
        }
        int_sum = round_even(ints.iter().sum());
    }
    ints.iter().map(|&v| v as i64).collect()
}

/// cleanlab's `compute_confident_joint(labels, pred_probs, calibrate=True)`, `[given][true]`.
pub fn confident_joint(labels: &[usize], probs: &Matrix) -> Vec<Vec<i64>> {
    let k = probs.cols();
    let mut sums = vec![0.0; k];
    let mut counts = vec![0usize; k];
    for (row, &label) in probs.iter_rows().zip(labels) {
        if let (Some(s), Some(c), Some(p)) =
            (sums.get_mut(label), counts.get_mut(label), row.get(label))
        {
            *s += p;
            *c += 1;
        }
    }
    // Missing classes get an unreachable threshold (cleanlab's BIG_VALUE = 2).
    let thresholds: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| {
            if c == 0 {
                2.0
            } else {
                (s / c as f64).max(THRESHOLD_FLOOR)
            }
        })
        .collect();
    let mut joint = vec![vec![0i64; k]; k];
    for (row, &label) in probs.iter_rows().zip(labels) {
        let confident: Vec<bool> = row
            .iter()
            .zip(&thresholds)
            .map(|(&p, &t)| p >= t - EPS)
            .collect();
        let n_confident = confident.iter().filter(|&&c| c).count();
        if n_confident == 0 {
            continue;
        }
        let guess = if n_confident > 1 {
            argmax(row)
        } else {
            confident.iter().position(|&c| c).unwrap_or(0)
        };
        if let Some(cell) = joint.get_mut(label).and_then(|r| r.get_mut(guess)) {
            *cell += 1;
        }
    }
    for (i, row) in joint.iter_mut().enumerate() {
        if let Some(d) = row.get_mut(i) {
            *d = (*d).max(1);
        }
    }
    calibrate(&joint, &counts)
}

/// cleanlab's `calibrate_confident_joint`.
fn calibrate(joint: &[Vec<i64>], label_counts: &[usize]) -> Vec<Vec<i64>> {
    let mut calibrated: Vec<Vec<f64>> = joint
        .iter()
        .zip(label_counts)
        .map(|(row, &count)| {
            let total = (row.iter().sum::<i64>() as f64).max(1e-100);
            row.iter()
                .map(|&v| v as f64 / total * count as f64)
                .collect()
        })
        .collect();
    let total: f64 = calibrated.iter().flatten().sum::<f64>().max(1e-100);
    let n: f64 = label_counts.iter().sum::<usize>() as f64;
    calibrated
        .iter_mut()
        .flatten()
        .for_each(|v| *v = *v / total * n);
    calibrated
        .iter()
        .map(|row| round_preserving_sum(row))
        .collect()
}

/// cleanlab's `_keep_at_least_n_per_class(confident_joint.T, n=1, frac_noise=1.0)`: `[true][given]` prune counts.
fn prune_counts(joint: &[Vec<i64>], n: i64) -> Vec<Vec<i64>> {
    let k = joint.len();
    // Transpose: m[true][given].
    let m: Vec<Vec<f64>> = (0..k)
        .map(|t| {
            (0..k)
                .map(|g| joint.get(g).and_then(|r| r.get(t)).copied().unwrap_or(0) as f64)
                .collect()
        })
        .collect();
    let at = |r: usize, c: usize| m.get(r).and_then(|row| row.get(c)).copied().unwrap_or(0.0);
    let mut out = vec![vec![0.0f64; k]; k];
    for col in 0..k {
        let diag = at(col, col);
        let new_diag = diag.max(n as f64);
        let diff = new_diag - diag;
        let nonzero = (0..k).filter(|&r| at(r, col) != 0.0).count() as f64;
        let per = (nonzero - 1.0).max(1.0);
        for row in 0..k {
            let v = if row == col {
                new_diag
            } else {
                (at(row, col) - diff / per).max(0.0)
            };
            if let Some(cell) = out.get_mut(row).and_then(|r| r.get_mut(col)) {
                *cell = v;
            }
        }
    }
    // `_reduce_prune_counts` with frac_noise = 1 truncates to integers; the final row rounding is then exact.
    out.iter()
        .map(|row| round_preserving_sum(&row.iter().map(|v| v.trunc()).collect::<Vec<_>>()))
        .collect()
}

/// Find label issues from out-of-fold predicted probabilities (`probs` rows sum to 1, columns are classes).
pub fn find_label_issues(labels: &[usize], probs: &Matrix) -> LabelAudit {
    let k = probs.cols();
    let joint = confident_joint(labels, probs);
    let prune = prune_counts(&joint, 1);
    let mut issue = vec![false; labels.len()];
    for given in 0..k {
        let members: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == given)
            .map(|(i, _)| i)
            .collect();
        if members.len() <= 1 {
            continue;
        }
        for true_class in 0..k {
            let count = prune
                .get(true_class)
                .and_then(|r| r.get(given))
                .copied()
                .unwrap_or(0);
            if true_class == given || count <= 0 {
                continue;
            }
            let margin = |i: usize| {
                let row = probs.row(i);
                row.get(true_class).copied().unwrap_or(0.0) - row.get(given).copied().unwrap_or(0.0)
            };
            let mut order = members.clone();
            // np.argsort(-margin): largest margin first.
            order.sort_by(|&a, &b| margin(b).total_cmp(&margin(a)));
            for &i in order.iter().take(count as usize) {
                if let Some(flag) = issue.get_mut(i) {
                    *flag = true;
                }
            }
        }
    }
    let predicted: Vec<usize> = probs.iter_rows().map(argmax).collect();
    for ((flag, &pred), &label) in issue.iter_mut().zip(&predicted).zip(labels) {
        if pred == label {
            *flag = false;
        }
    }
    let self_confidence: Vec<f64> = probs
        .iter_rows()
        .zip(labels)
        .map(|(row, &l)| row.get(l).copied().unwrap_or(0.0))
        .collect();
    let mut issues: Vec<usize> = issue
        .iter()
        .enumerate()
        .filter(|(_, &f)| f)
        .map(|(i, _)| i)
        .collect();
    issues.sort_by(|&a, &b| {
        let sa = self_confidence.get(a).copied().unwrap_or(0.0);
        let sb = self_confidence.get(b).copied().unwrap_or(0.0);
        sa.total_cmp(&sb).then(a.cmp(&b))
    });
    LabelAudit {
        issues,
        self_confidence,
        confident_joint: joint,
        predicted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_preserves_the_sum() {
        assert_eq!(round_preserving_sum(&[0.5, 1.5, 2.0]), vec![0, 2, 2]);
        assert_eq!(round_preserving_sum(&[1.4, 1.4, 1.2]), vec![1, 2, 1]);
        assert_eq!(
            round_preserving_sum(&[1.6, 1.6, 1.8]).iter().sum::<i64>(),
            5
        );
    }

    #[test]
    fn flags_the_flipped_label() {
        // Two clean classes and one row labelled 0 that the model puts firmly in class 1.
        let mut data = Vec::new();
        let mut labels = Vec::new();
        for i in 0..20 {
            let p = 0.9 - (i as f64) * 0.001;
            data.extend_from_slice(&[p, 1.0 - p]);
            labels.push(0);
            data.extend_from_slice(&[1.0 - p, p]);
            labels.push(1);
        }
        data.extend_from_slice(&[0.05, 0.95]);
        labels.push(0);
        let probs = Matrix::from_vec(labels.len(), 2, data).unwrap();
        let audit = find_label_issues(&labels, &probs);
        assert_eq!(audit.issues, vec![40]);
    }
}
