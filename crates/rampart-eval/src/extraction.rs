//! Extraction risk: how many queries does it take to copy the model?
//!
//! For each budget N (a log scale: 10, 30, 100, 300, ...), an attacker queries the target on N inputs drawn from a
//! pool of unlabelled rows (rows past the pool's size are pool rows plus Gaussian noise, clipped to the valid range),
//! and trains a surrogate (an MLP with one hidden layer of 64 ReLU units, Adam, soft labels from the target's
//! scores) on the answers. Reported per budget: the surrogate's agreement with the target and its accuracy, both on
//! held-out rows the attacker never queried.

use ndarray::{Array2, Axis};
use serde::Serialize;

use crate::error::{EvalError, Result};
use crate::membership::probabilities;
use crate::ops::softmax_rows;
use crate::rng::Rng;
use crate::target::{argmax_rows, Scorer};
use crate::whitebox::Bounds;

/// One point of the extraction curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExtractionPoint {
    /// Queries the attacker made.
    pub queries: usize,
    /// The fraction of held-out rows where the surrogate predicts the target's class.
    pub agreement: f64,
    /// The surrogate's accuracy on the held-out rows' true labels.
    pub accuracy: f64,
}

/// The budgets of the log scale up to `max`: 10, 30, 100, 300, ... and `max` itself.
pub fn budgets(max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut b = 10usize;
    while b < max {
        out.push(b);
        b = if out.len() % 2 == 1 {
            b * 3
        } else {
            b / 3 * 10
        };
    }
    out.push(max);
    out
}

/// Runs the extraction study.
pub fn extraction(
    target: &dyn Scorer,
    pool: &[f32],
    holdout: &[f32],
    holdout_labels: &[usize],
    max_queries: usize,
    bounds: Bounds,
    seed: u64,
) -> Result<Vec<ExtractionPoint>> {
    let f = target.features();
    let k = target.classes();
    let pool_rows = pool.len() / f.max(1);
    if pool_rows == 0 || holdout_labels.is_empty() {
        return Err(EvalError::Setting(
            "extraction needs rows to query and held-out rows to judge the copy".into(),
        ));
    }
    if !(10..=1_000_000).contains(&max_queries) {
        return Err(EvalError::Setting(
            "--extraction-queries must be between 10 and 1,000,000".into(),
        ));
    }
    let target_pred = argmax_rows(&target.scores(holdout)?, k);
    let mut rng = Rng::new(seed);
    let mut queries = Vec::with_capacity(max_queries * f);
    for i in 0..max_queries {
        let row = pool
            .get((i % pool_rows) * f..(i % pool_rows + 1) * f)
            .unwrap_or(&[]);
        if i < pool_rows {
            queries.extend_from_slice(row);
        } else {
            let sigma = 0.05 * (bounds.max - bounds.min);
            queries.extend(
                row.iter()
                    .map(|&v| (v + sigma * rng.normal()).clamp(bounds.min, bounds.max)),
            );
        }
    }
    let answers = probabilities(&target.scores(&queries)?, k);
    let mut out = Vec::new();
    for n in budgets(max_queries) {
        let x = queries.get(..n * f).unwrap_or(&[]);
        let y = answers.get(..n * k).unwrap_or(&[]);
        let surrogate = Mlp::train(x, y, f, k, seed)?;
        let pred = argmax_rows(&surrogate.predict(holdout)?, k);
        let total = holdout_labels.len() as f64;
        out.push(ExtractionPoint {
            queries: n,
            agreement: pred
                .iter()
                .zip(&target_pred)
                .filter(|(a, b)| a == b)
                .count() as f64
                / total,
            accuracy: pred
                .iter()
                .zip(holdout_labels)
                .filter(|(a, b)| a == b)
                .count() as f64
                / total,
        });
    }
    Ok(out)
}

/// A one-hidden-layer MLP, the surrogate.
#[derive(Debug, Clone)]
struct Mlp {
    w1: Array2<f32>,
    b1: Array2<f32>,
    w2: Array2<f32>,
    b2: Array2<f32>,
}

const HIDDEN: usize = 64;
const STEPS: usize = 600;
const BATCH: usize = 64;

fn shape_err(e: ndarray::ShapeError) -> EvalError {
    EvalError::Setting(format!("surrogate shapes: {e}"))
}

impl Mlp {
    fn forward(&self, x: &Array2<f32>) -> (Array2<f32>, Array2<f32>) {
        let h = (x.dot(&self.w1) + &self.b1).mapv(|v| v.max(0.0));
        let z = h.dot(&self.w2) + &self.b2;
        (h, z)
    }

    fn predict(&self, x: &[f32]) -> Result<Vec<f32>> {
        let f = self.w1.nrows();
        let x = Array2::from_shape_vec((x.len() / f, f), x.to_vec()).map_err(shape_err)?;
        Ok(self.forward(&x).1.iter().copied().collect())
    }

    fn train(x: &[f32], y: &[f32], f: usize, k: usize, seed: u64) -> Result<Mlp> {
        let n = x.len() / f;
        let mut rng = Rng::new(seed ^ 0x5EED);
        let he = |fan_in: usize, rng: &mut Rng| rng.normal() * (2.0 / fan_in as f32).sqrt();
        let mut m = Mlp {
            w1: Array2::from_shape_fn((f, HIDDEN), |_| he(f, &mut rng)),
            b1: Array2::zeros((1, HIDDEN)),
            w2: Array2::from_shape_fn((HIDDEN, k), |_| he(HIDDEN, &mut rng)),
            b2: Array2::zeros((1, k)),
        };
        let xs = Array2::from_shape_vec((n, f), x.to_vec()).map_err(shape_err)?;
        let ys = Array2::from_shape_vec((n, k), y.to_vec()).map_err(shape_err)?;
        let mut adam = [
            Adam::new(m.w1.dim()),
            Adam::new(m.b1.dim()),
            Adam::new(m.w2.dim()),
            Adam::new(m.b2.dim()),
        ];
        for t in 1..=STEPS {
            let idx: Vec<usize> = (0..BATCH.min(n)).map(|_| rng.below(n)).collect();
            let xb = xs.select(Axis(0), &idx);
            let yb = ys.select(Axis(0), &idx);
            let (h, z) = m.forward(&xb);
            let p = softmax_rows(z.as_slice().unwrap_or(&[]), k);
            let p = Array2::from_shape_vec(z.dim(), p).map_err(shape_err)?;
            let dz = (p - &yb) / idx.len() as f32;
            let dw2 = h.t().dot(&dz);
            let db2 = dz.sum_axis(Axis(0)).insert_axis(Axis(0));
            let dh = dz.dot(&m.w2.t()) * h.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
            let dw1 = xb.t().dot(&dh);
            let db1 = dh.sum_axis(Axis(0)).insert_axis(Axis(0));
            let [a1, a2, a3, a4] = &mut adam;
            a1.step(&mut m.w1, &dw1, t);
            a2.step(&mut m.b1, &db1, t);
            a3.step(&mut m.w2, &dw2, t);
            a4.step(&mut m.b2, &db2, t);
        }
        Ok(m)
    }
}

#[derive(Debug, Clone)]
struct Adam {
    m: Array2<f32>,
    v: Array2<f32>,
}

impl Adam {
    fn new(dim: (usize, usize)) -> Adam {
        Adam {
            m: Array2::zeros(dim),
            v: Array2::zeros(dim),
        }
    }

    fn step(&mut self, w: &mut Array2<f32>, g: &Array2<f32>, t: usize) {
        let (lr, b1, b2, eps) = (0.01f32, 0.9f32, 0.999f32, 1e-8f32);
        self.m = &self.m * b1 + g * (1.0 - b1);
        self.v = &self.v * b2 + &(g * g) * (1.0 - b2);
        let c1 = 1.0 - b1.powi(t as i32);
        let c2 = 1.0 - b2.powi(t as i32);
        ndarray::Zip::from(w)
            .and(&self.m)
            .and(&self.v)
            .for_each(|w, &m, &v| {
                *w -= lr * (m / c1) / ((v / c2).sqrt() + eps);
            });
    }
}
