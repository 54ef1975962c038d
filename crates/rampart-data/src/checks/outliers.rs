//! Outliers: isolation forest and k-nearest-neighbour distance over rows of numeric features (or embeddings), and
//! robust z-scores (median and MAD) per column.

use rayon::prelude::*;
use serde::Serialize;

use crate::matrix::{dist2, median, Matrix, Rng};

/// Average path length of an unsuccessful search in a binary search tree of `n` points (the iForest `c(n)`).
fn c_factor(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

enum Node {
    Leaf(usize),
    Split {
        feature: usize,
        value: f64,
        left: Box<Node>,
        right: Box<Node>,
    },
}

fn build(x: &Matrix, rows: &mut [usize], depth: usize, max_depth: usize, rng: &mut Rng) -> Node {
    if rows.len() <= 1 || depth >= max_depth {
        return Node::Leaf(rows.len());
    }
    // Features that still vary among these rows.
    let d = x.cols();
    let mut candidates = Vec::new();
    for f in 0..d {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &r in rows.iter() {
            let v = x.row(r).get(f).copied().unwrap_or(0.0);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if hi > lo {
            candidates.push((f, lo, hi));
        }
    }
    let Some(&(feature, lo, hi)) = candidates.get(rng.below(candidates.len())) else {
        return Node::Leaf(rows.len());
    };
    let value = lo + rng.next_f64() * (hi - lo);
    let mut split = 0;
    for i in 0..rows.len() {
        let r = rows.get(i).copied().unwrap_or(0);
        if x.row(r).get(feature).copied().unwrap_or(0.0) < value {
            rows.swap(i, split);
            split += 1;
        }
    }
    let (left_rows, right_rows) = rows.split_at_mut(split);
    Node::Split {
        feature,
        value,
        left: Box::new(build(x, left_rows, depth + 1, max_depth, rng)),
        right: Box::new(build(x, right_rows, depth + 1, max_depth, rng)),
    }
}

fn path_length(node: &Node, row: &[f64], depth: f64) -> f64 {
    match node {
        Node::Leaf(size) => depth + c_factor(*size),
        Node::Split {
            feature,
            value,
            left,
            right,
        } => {
            if row.get(*feature).copied().unwrap_or(0.0) < *value {
                path_length(left, row, depth + 1.0)
            } else {
                path_length(right, row, depth + 1.0)
            }
        }
    }
}

/// Isolation-forest anomaly scores in (0, 1]; around 0.5 is ordinary, near 1 is isolated quickly.
pub fn isolation_forest(x: &Matrix, trees: usize, seed: u64) -> Vec<f64> {
    let n = x.rows();
    if n < 2 {
        return vec![0.5; n];
    }
    let sample = n.min(256);
    let max_depth = (sample as f64).log2().ceil() as usize;
    let forest: Vec<Node> = (0..trees)
        .into_par_iter()
        .map(|t| {
            let mut rng = Rng::new(seed ^ (t as u64).wrapping_mul(0x9E37_79B9));
            let mut all: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut all);
            all.truncate(sample);
            build(x, &mut all, 0, max_depth, &mut rng)
        })
        .collect();
    let c = c_factor(sample);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let mean = forest
                .iter()
                .map(|tree| path_length(tree, x.row(i), 0.0))
                .sum::<f64>()
                / trees.max(1) as f64;
            2f64.powf(-mean / c)
        })
        .collect()
}

/// Mean distance to the `k` nearest other rows (brute force, parallel).
pub fn knn_distance(x: &Matrix, k: usize) -> Vec<f64> {
    let n = x.rows();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let a = x.row(i);
            let mut best: Vec<f64> = Vec::with_capacity(k + 1);
            for j in 0..n {
                if j == i {
                    continue;
                }
                let d = dist2(a, x.row(j));
                if best.len() < k {
                    best.push(d);
                    best.sort_by(f64::total_cmp);
                } else if best.last().is_some_and(|&w| d < w) {
                    best.pop();
                    let at = best.partition_point(|&v| v < d);
                    best.insert(at, d);
                }
            }
            best.iter().map(|d| d.sqrt()).sum::<f64>() / best.len().max(1) as f64
        })
        .collect()
}

/// Modified z-scores `0.6745 (x - median) / MAD`; with a zero MAD the mean absolute deviation stands in
/// (`(x - median) / (1.2533 * meanAD)`); all zeros when the values do not vary.
pub fn robust_z(values: &[f64]) -> Vec<f64> {
    let med = median(values);
    let deviations: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&deviations);
    if mad > 0.0 {
        return values.iter().map(|v| 0.6745 * (v - med) / mad).collect();
    }
    let mean_ad = deviations.iter().sum::<f64>() / deviations.len().max(1) as f64;
    if mean_ad > 0.0 {
        values
            .iter()
            .map(|v| (v - med) / (1.253_314 * mean_ad))
            .collect()
    } else {
        vec![0.0; values.len()]
    }
}

/// Per-column summary of robust z-score outliers.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnOutliers {
    pub column: String,
    pub count: usize,
    pub max_abs_z: f64,
    /// Line of the most extreme value.
    pub line: u64,
}

/// Cells with |robust z| above `threshold`, per column.
pub fn column_outliers(
    x: &Matrix,
    names: &[String],
    lines: &[u64],
    threshold: f64,
) -> Vec<ColumnOutliers> {
    let mut out = Vec::new();
    for (c, name) in names.iter().enumerate().take(x.cols()) {
        let values: Vec<f64> = x
            .iter_rows()
            .map(|r| r.get(c).copied().unwrap_or(0.0))
            .collect();
        let z = robust_z(&values);
        let mut count = 0;
        let mut worst = (0.0f64, 0usize);
        for (i, v) in z.iter().enumerate() {
            if v.abs() > threshold {
                count += 1;
            }
            if v.abs() > worst.0 {
                worst = (v.abs(), i);
            }
        }
        if count > 0 {
            out.push(ColumnOutliers {
                column: name.clone(),
                count,
                max_abs_z: worst.0,
                line: lines.get(worst.1).copied().unwrap_or(0),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_forest_and_knn_rank_the_far_point_first() {
        let mut rng = Rng::new(3);
        let mut data: Vec<f64> = (0..400).map(|_| rng.normal()).collect();
        data.extend_from_slice(&[12.0, -12.0]);
        let x = Matrix::from_vec(201, 2, data).unwrap();
        let s = isolation_forest(&x, 100, 7);
        let top = (0..201).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
        assert_eq!(top, 200);
        assert!(s[200] > 0.7, "{}", s[200]);
        let k = knn_distance(&x, 5);
        let top = (0..201).max_by(|&a, &b| k[a].total_cmp(&k[b])).unwrap();
        assert_eq!(top, 200);
    }

    #[test]
    fn robust_z_handles_constant_and_sparse_columns() {
        assert_eq!(robust_z(&[1.0, 1.0, 1.0]), vec![0.0; 3]);
        let z = robust_z(&[0.0, 0.0, 0.0, 0.0, 5.0]);
        assert!(z[4] > 3.5);
    }
}
