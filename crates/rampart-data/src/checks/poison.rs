//! Poisoning: within each class, backdoored rows leave a trace in the learned representation.
//!
//! - Spectral signatures (Tran, Li, Madry 2018): centre the class's representations, take the top singular vector;
//!   the squared projection on it is the row's score. Rampart flags rows whose projection is far from the class's
//!   median in robust units (`0.6745 |p - median| / MAD`), rather than a fixed share of every class, so that clean
//!   classes keep few false alarms.
//! - Activation clustering (Chen et al. 2018): reduce the class to its top principal components, split it in two
//!   with k-means; the smaller cluster is a candidate when it is small (relative size at most `max_cluster_share`)
//!   and separated (silhouette at least `min_silhouette`). Separation alone cannot tell poison from a natural
//!   sub-style of a class: on the digits' backdoored model a clean class of 9s splits as cleanly (silhouette 0.42) as
//!   the class of 0s holding the backdoor (0.41). So a candidate is then tested in the *input* space, where a
//!   backdoor's triggered rows still look like what they really are: for each of its rows, do its 10 nearest rows
//!   (on the input features scaled to [0, 1]) mostly carry the same label? When less than `max_agreement` of the
//!   cluster's rows agree with their neighbours, the cluster is flagged whole (a backdoor's triggered rows, or rows
//!   relabelled wholesale). A sub-style's rows have neighbours of their own style and class (agreement 0.85-1.0 on the
//!   digits; the backdoor's cluster 0.20). This is the idea of the paper's exclusionary reclassification (does the
//!   rest of the data support the cluster's label?) with a nearest-neighbour vote instead of retraining: a model
//!   retrained without a sub-style misclassifies it as readily as it does poison.

use rayon::prelude::*;
use serde::Serialize;

use crate::checks::outliers::robust_z;
use crate::matrix::{dist2, dot, Matrix, Rng};

/// Thresholds of the poisoning check.
#[derive(Debug, Clone, Copy)]
pub struct PoisonOptions {
    /// Robust z of the spectral projection from which a row is flagged.
    pub spectral_z: f64,
    /// Largest share of a class the smaller activation cluster may have to be flagged.
    pub max_cluster_share: f64,
    /// Smallest silhouette score of the two-cluster split to test its smaller cluster.
    pub min_silhouette: f64,
    /// A candidate cluster is flagged when less than this share of its rows agree with the labels of their nearest
    /// rows in the input space.
    pub max_agreement: f64,
    /// Principal components kept for clustering.
    pub components: usize,
}

impl Default for PoisonOptions {
    fn default() -> Self {
        Self {
            spectral_z: 5.0,
            max_cluster_share: 0.35,
            min_silhouette: 0.25,
            max_agreement: 0.5,
            components: 10,
        }
    }
}

/// Per-class results.
#[derive(Debug, Clone, Serialize)]
pub struct ClassPoison {
    pub class: usize,
    pub rows: usize,
    /// Spectral-signature scores (squared projections), in the order of `members`.
    #[serde(skip)]
    pub spectral_scores: Vec<f64>,
    #[serde(skip)]
    pub members: Vec<usize>,
    pub spectral_flagged: usize,
    /// Share of the class in the smaller activation cluster.
    pub cluster_share: f64,
    pub silhouette: f64,
    /// Share of the candidate cluster whose nearest rows in the input space mostly carry its label (when tested).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_agreement: Option<f64>,
    pub cluster_flagged: usize,
}

/// Result over all classes.
#[derive(Debug, Clone, Serialize)]
pub struct PoisonReport {
    pub classes: Vec<ClassPoison>,
    /// Row indices flagged by either method, ascending.
    pub flagged: Vec<usize>,
}

/// Top `m` eigenvectors of the covariance of centred rows (power iteration with deflation).
fn principal_components(centred: &Matrix, m: usize) -> Vec<Vec<f64>> {
    let d = centred.cols();
    let chunk = 512;
    let cov = (0..centred.rows().div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0.0; d * d];
            for i in c * chunk..((c + 1) * chunk).min(centred.rows()) {
                let r = centred.row(i);
                for (a, ra) in acc.chunks_exact_mut(d.max(1)).zip(r) {
                    for (x, rb) in a.iter_mut().zip(r) {
                        *x += ra * rb;
                    }
                }
            }
            acc
        })
        .reduce(
            || vec![0.0; d * d],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut cov = Matrix::from_vec(d, d, cov).unwrap_or_else(|| Matrix::zeros(d, d));
    let mut out = Vec::new();
    let mut rng = Rng::new(11);
    for _ in 0..m.min(d) {
        let mut v: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        let mut lambda = 0.0;
        for _ in 0..300 {
            let mut w: Vec<f64> = cov.iter_rows().map(|row| dot(row, &v)).collect();
            let norm = dot(&w, &w).sqrt();
            if norm < 1e-300 {
                break;
            }
            w.iter_mut().for_each(|x| *x /= norm);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            lambda = norm;
            if delta < 1e-10 {
                break;
            }
        }
        // Deflate: cov -= lambda v v^T.
        for i in 0..d {
            let vi = v.get(i).copied().unwrap_or(0.0);
            for (x, vj) in cov.row_mut(i).iter_mut().zip(&v) {
                *x -= lambda * vi * vj;
            }
        }
        out.push(v);
    }
    out
}

/// Two-means clustering (k-means++ start, a few restarts); returns the assignment.
fn two_means(z: &Matrix, rng: &mut Rng) -> Vec<usize> {
    let n = z.rows();
    let mut best: (f64, Vec<usize>) = (f64::INFINITY, vec![0; n]);
    for _ in 0..4 {
        let first = rng.below(n);
        let d0: Vec<f64> = (0..n).map(|i| dist2(z.row(i), z.row(first))).collect();
        let total: f64 = d0.iter().sum();
        let mut target = rng.next_f64() * total;
        let mut second = 0;
        for (i, d) in d0.iter().enumerate() {
            target -= d;
            if target <= 0.0 {
                second = i;
                break;
            }
        }
        let mut centres = [z.row(first).to_vec(), z.row(second).to_vec()];
        let mut assign = vec![0usize; n];
        for _ in 0..100 {
            let mut changed = false;
            for (i, a) in assign.iter_mut().enumerate() {
                let [c0, c1] = &centres;
                let c = usize::from(dist2(z.row(i), c1) < dist2(z.row(i), c0));
                if c != *a {
                    *a = c;
                    changed = true;
                }
            }
            for (c, centre) in centres.iter_mut().enumerate() {
                let members: Vec<usize> = (0..n).filter(|&i| assign.get(i) == Some(&c)).collect();
                if members.is_empty() {
                    continue;
                }
                centre.iter_mut().for_each(|v| *v = 0.0);
                for &i in &members {
                    centre.iter_mut().zip(z.row(i)).for_each(|(a, b)| *a += b);
                }
                centre.iter_mut().for_each(|v| *v /= members.len() as f64);
            }
            if !changed {
                break;
            }
        }
        let inertia: f64 = (0..n)
            .map(|i| {
                dist2(
                    z.row(i),
                    centres
                        .get(assign.get(i).copied().unwrap_or(0))
                        .map_or(&[][..], |c| c.as_slice()),
                )
            })
            .sum();
        if inertia < best.0 {
            best = (inertia, assign);
        }
    }
    best.1
}

/// Mean silhouette of a two-cluster assignment (on at most 1500 rows for bounded time).
fn silhouette(z: &Matrix, assign: &[usize]) -> f64 {
    let n = z.rows();
    let step = n.div_ceil(1500).max(1);
    let sample: Vec<usize> = (0..n).step_by(step).collect();
    let values: Vec<f64> = sample
        .par_iter()
        .map(|&i| {
            let own = assign.get(i).copied().unwrap_or(0);
            let (mut same, mut same_n, mut other, mut other_n) = (0.0f64, 0usize, 0.0f64, 0usize);
            for &j in &sample {
                if i == j {
                    continue;
                }
                let d = dist2(z.row(i), z.row(j)).sqrt();
                if assign.get(j).copied().unwrap_or(0) == own {
                    same += d;
                    same_n += 1;
                } else {
                    other += d;
                    other_n += 1;
                }
            }
            if same_n == 0 || other_n == 0 {
                return 0.0;
            }
            let a = same / same_n as f64;
            let b = other / other_n as f64;
            (b - a) / a.max(b).max(1e-300)
        })
        .collect();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Neighbours that vote on a row's label.
const NEIGHBOURS: usize = 10;
/// Rows the neighbours are searched among, and cluster rows tested, at most (strided samples beyond), for bounded time.
const REFERENCE_ROWS: usize = 10_000;
const TESTED_ROWS: usize = 2_000;

/// The share of `cluster` (row indices) whose nearest rows in `inputs` mostly carry label `class` (a tie counts as
/// agreement, so that only a clear disagreement can flag).
fn neighbours_agree(inputs: &Matrix, labels: &[usize], cluster: &[usize], class: usize) -> f64 {
    let n = inputs.rows();
    let reference: Vec<usize> = (0..n).step_by(n.div_ceil(REFERENCE_ROWS).max(1)).collect();
    let tested: Vec<usize> = cluster
        .iter()
        .copied()
        .step_by(cluster.len().div_ceil(TESTED_ROWS).max(1))
        .collect();
    let agree = tested
        .par_iter()
        .filter(|&&i| {
            // The NEIGHBOURS nearest, as (distance, label), kept sorted.
            let mut nearest: Vec<(f64, usize)> = Vec::with_capacity(NEIGHBOURS + 1);
            for &j in &reference {
                if j == i {
                    continue;
                }
                let d = dist2(inputs.row(i), inputs.row(j));
                if nearest.len() < NEIGHBOURS || nearest.last().is_some_and(|l| d < l.0) {
                    let at = nearest.partition_point(|e| e.0 <= d);
                    nearest.insert(at, (d, labels.get(j).copied().unwrap_or(usize::MAX)));
                    nearest.truncate(NEIGHBOURS);
                }
            }
            let mut votes: std::collections::HashMap<usize, usize> =
                std::collections::HashMap::new();
            for (_, label) in &nearest {
                *votes.entry(*label).or_default() += 1;
            }
            let own = votes.get(&class).copied().unwrap_or(0);
            votes.values().all(|&v| v <= own)
        })
        .count();
    agree as f64 / tested.len().max(1) as f64
}

/// Run both methods on every class with at least 10 rows. `reps` are the representations the clusters are found
/// in; `inputs` the input features (one row per row of `reps`, scaled) a candidate cluster's labels are tested in.
pub fn detect(
    reps: &Matrix,
    inputs: &Matrix,
    labels: &[usize],
    classes: usize,
    opts: PoisonOptions,
) -> PoisonReport {
    let per_class: Vec<(ClassPoison, Vec<usize>)> = (0..classes)
        .into_par_iter()
        .map(|class| {
            let members: Vec<usize> = labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l == class)
                .map(|(i, _)| i)
                .collect();
            let mut result = ClassPoison {
                class,
                rows: members.len(),
                spectral_scores: Vec::new(),
                members: members.clone(),
                spectral_flagged: 0,
                cluster_share: 0.0,
                silhouette: 0.0,
                label_agreement: None,
                cluster_flagged: 0,
            };
            if members.len() < 10 {
                return (result, Vec::new());
            }
            let mut r = reps.select(&members);
            let mean = r.column_means();
            for i in 0..r.rows() {
                r.row_mut(i)
                    .iter_mut()
                    .zip(&mean)
                    .for_each(|(v, m)| *v -= m);
            }
            let pcs = principal_components(&r, opts.components);
            let Some(top) = pcs.first() else {
                return (result, Vec::new());
            };
            let projection: Vec<f64> = r.iter_rows().map(|row| dot(row, top)).collect();
            result.spectral_scores = projection.iter().map(|p| p * p).collect();
            let z = robust_z(&projection);
            let mut flagged: Vec<usize> = Vec::new();
            for (k, zk) in z.iter().enumerate() {
                if zk.abs() >= opts.spectral_z {
                    result.spectral_flagged += 1;
                    flagged.push(k);
                }
            }
            // Activation clustering on the top components.
            let m = pcs.len();
            let mut reduced = Matrix::zeros(r.rows(), m);
            for i in 0..r.rows() {
                let row: Vec<f64> = pcs.iter().map(|pc| dot(r.row(i), pc)).collect();
                reduced.row_mut(i).copy_from_slice(&row);
            }
            let mut rng = Rng::new(0xac ^ class as u64);
            let assign = two_means(&reduced, &mut rng);
            let ones = assign.iter().filter(|&&a| a == 1).count();
            let small = usize::from(ones * 2 < assign.len());
            let small_count = if small == 1 {
                ones
            } else {
                assign.len() - ones
            };
            result.cluster_share = small_count as f64 / assign.len().max(1) as f64;
            result.silhouette = silhouette(&reduced, &assign);
            if result.cluster_share <= opts.max_cluster_share
                && result.silhouette >= opts.min_silhouette
                && small_count > 0
            {
                let cluster: Vec<usize> = assign
                    .iter()
                    .zip(&members)
                    .filter(|(a, _)| **a == small)
                    .map(|(_, &m)| m)
                    .collect();
                let agreement = neighbours_agree(inputs, labels, &cluster, class);
                result.label_agreement = Some(agreement);
                if agreement < opts.max_agreement {
                    for (k, a) in assign.iter().enumerate() {
                        if *a == small {
                            result.cluster_flagged += 1;
                            flagged.push(k);
                        }
                    }
                }
            }
            let rows: Vec<usize> = flagged
                .iter()
                .filter_map(|&k| members.get(k).copied())
                .collect();
            (result, rows)
        })
        .collect();
    let mut classes = Vec::new();
    let mut flagged = Vec::new();
    for (class, rows) in per_class {
        classes.push(class);
        flagged.extend(rows);
    }
    flagged.sort_unstable();
    flagged.dedup();
    PoisonReport { classes, flagged }
}
