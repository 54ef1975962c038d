//! Rampart's own model for the label audit: multinomial logistic regression (softmax, L2 penalty `1/(2C)`, like
//! scikit-learn's `LogisticRegression(C=1)`), fitted by L-BFGS on standardised features, and stratified k-fold
//! cross-validation that yields out-of-fold predicted probabilities. Folds run in parallel, and so does each gradient.

use rayon::prelude::*;

use crate::matrix::{dot, Matrix, Rng};

/// Fitting options.
#[derive(Debug, Clone, Copy)]
pub struct LogRegOptions {
    /// Inverse regularisation strength.
    pub c: f64,
    pub max_iter: usize,
    /// Stop when the gradient's largest component falls below this.
    pub tol: f64,
}

impl Default for LogRegOptions {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 200,
            tol: 1e-5,
        }
    }
}

/// A fitted model: weights `[class][feature]` then one bias per class, over standardised features.
#[derive(Debug, Clone)]
pub struct LogReg {
    classes: usize,
    features: usize,
    params: Vec<f64>,
    mean: Vec<f64>,
    scale: Vec<f64>,
}

fn softmax_in_place(z: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    z.iter_mut().for_each(|v| *v /= sum);
}

/// Loss (mean cross-entropy plus penalty) and its gradient.
fn loss_grad(x: &Matrix, y: &[usize], k: usize, params: &[f64], c: f64) -> (f64, Vec<f64>) {
    let d = x.cols();
    let n = x.rows().max(1) as f64;
    let (weights, bias) = params.split_at(k * d);
    let chunk = 256;
    let (loss, mut grad) = (0..x.rows().div_ceil(chunk))
        .into_par_iter()
        .map(|c0| {
            let mut grad = vec![0.0; params.len()];
            let mut loss = 0.0;
            let mut z = vec![0.0; k];
            for i in c0 * chunk..((c0 + 1) * chunk).min(x.rows()) {
                let row = x.row(i);
                for ((zc, w), b) in z.iter_mut().zip(weights.chunks_exact(d.max(1))).zip(bias) {
                    *zc = dot(w, row) + b;
                }
                softmax_in_place(&mut z);
                let label = y.get(i).copied().unwrap_or(0);
                loss -= z.get(label).copied().unwrap_or(1.0).max(1e-300).ln();
                let (gw, gb) = grad.split_at_mut(k * d);
                for (class, ((p, gw_c), gb_c)) in z
                    .iter()
                    .zip(gw.chunks_exact_mut(d.max(1)))
                    .zip(gb.iter_mut())
                    .enumerate()
                {
                    let r = p - if class == label { 1.0 } else { 0.0 };
                    for (g, v) in gw_c.iter_mut().zip(row) {
                        *g += r * v;
                    }
                    *gb_c += r;
                }
            }
            (loss, grad)
        })
        .reduce(
            || (0.0, vec![0.0; params.len()]),
            |(la, mut ga), (lb, gb)| {
                ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
                (la + lb, ga)
            },
        );
    let penalty = 1.0 / (c * n);
    let mut loss = loss / n;
    for (i, g) in grad.iter_mut().enumerate() {
        *g /= n;
        if i < k * d {
            let w = params.get(i).copied().unwrap_or(0.0);
            *g += penalty * w;
            loss += 0.5 * penalty * w * w;
        }
    }
    (loss, grad)
}

/// Minimise with L-BFGS (memory 10, backtracking Armijo line search).
fn lbfgs(x: &Matrix, y: &[usize], k: usize, opts: LogRegOptions) -> Vec<f64> {
    let dim = k * x.cols() + k;
    let mut params = vec![0.0; dim];
    let (mut f, mut g) = loss_grad(x, y, k, &params, opts.c);
    let mut history: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    for _ in 0..opts.max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < opts.tol {
            break;
        }
        // Two-loop recursion.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, yv, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        if let Some((s, yv, _)) = history.back() {
            let gamma = dot(s, yv) / dot(yv, yv).max(1e-300);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, yv, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&direction, &g);
        if slope >= 0.0 {
            direction = g.iter().map(|v| -v).collect();
            slope = dot(&direction, &g);
            history.clear();
        }
        let mut step = if history.is_empty() {
            1.0 / g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..30 {
            let trial: Vec<f64> = params
                .iter()
                .zip(&direction)
                .map(|(p, d)| p + step * d)
                .collect();
            let (ft, gt) = loss_grad(x, y, k, &trial, opts.c);
            if ft <= f + 1e-4 * step * slope {
                accepted = Some((trial, ft, gt));
                break;
            }
            step *= 0.5;
        }
        let Some((trial, ft, gt)) = accepted else {
            break;
        };
        let s: Vec<f64> = trial.iter().zip(&params).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            if history.len() == 10 {
                history.pop_front();
            }
            history.push_back((s, yv, 1.0 / sy));
        }
        let improvement = f - ft;
        params = trial;
        f = ft;
        g = gt;
        if improvement.abs() < 1e-12 * f.abs().max(1.0) {
            break;
        }
    }
    params
}

impl LogReg {
    /// Fit on rows `x` with labels in `0..classes`.
    pub fn fit(x: &Matrix, y: &[usize], classes: usize, opts: LogRegOptions) -> Self {
        let d = x.cols();
        let mean = x.column_means();
        let mut scale = vec![0.0; d];
        for row in x.iter_rows() {
            for ((s, v), m) in scale.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let n = x.rows().max(1) as f64;
        scale.iter_mut().for_each(|s| {
            let sd = (*s / n).sqrt();
            *s = if sd > 1e-12 { 1.0 / sd } else { 0.0 };
        });
        let mut model = Self {
            classes,
            features: d,
            params: Vec::new(),
            mean,
            scale,
        };
        let z = model.standardise(x);
        model.params = lbfgs(&z, y, classes, opts);
        model
    }

    fn standardise(&self, x: &Matrix) -> Matrix {
        let mut z = x.clone();
        for i in 0..z.rows() {
            for ((v, m), s) in z.row_mut(i).iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) * s;
            }
        }
        z
    }

    /// Class probabilities per row.
    pub fn predict_proba(&self, x: &Matrix) -> Matrix {
        let z = self.standardise(x);
        let k = self.classes;
        let d = self.features;
        let (weights, bias) = self.params.split_at((k * d).min(self.params.len()));
        let mut out = Matrix::zeros(x.rows(), k);
        for i in 0..x.rows() {
            let row = z.row(i);
            let o = out.row_mut(i);
            for ((oc, w), b) in o.iter_mut().zip(weights.chunks_exact(d.max(1))).zip(bias) {
                *oc = dot(w, row) + b;
            }
            softmax_in_place(o);
        }
        out
    }
}

/// Stratified fold of every row: each class is shuffled (seeded) and dealt round-robin over the folds.
pub fn stratified_folds(labels: &[usize], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut fold = vec![0; labels.len()];
    let mut rng = Rng::new(seed);
    let mut next = 0;
    for class in 0..classes {
        let mut members: Vec<usize> = labels
            .iter()
            .enumerate()
            .filter(|(_, &l)| l == class)
            .map(|(i, _)| i)
            .collect();
        rng.shuffle(&mut members);
        for i in members {
            if let Some(f) = fold.get_mut(i) {
                *f = next % folds.max(1);
            }
            next += 1;
        }
    }
    fold
}

/// Out-of-fold predicted probabilities by k-fold cross-validation.
pub fn cross_val_proba(
    x: &Matrix,
    y: &[usize],
    classes: usize,
    folds: usize,
    opts: LogRegOptions,
) -> Matrix {
    let fold_of = stratified_folds(y, classes, folds, 0x0c1e_a41a);
    let parts: Vec<(Vec<usize>, Matrix)> = (0..folds)
        .into_par_iter()
        .map(|f| {
            let train: Vec<usize> = (0..y.len())
                .filter(|&i| fold_of.get(i) != Some(&f))
                .collect();
            let test: Vec<usize> = (0..y.len())
                .filter(|&i| fold_of.get(i) == Some(&f))
                .collect();
            let labels: Vec<usize> = train
                .iter()
                .map(|&i| y.get(i).copied().unwrap_or(0))
                .collect();
            let model = LogReg::fit(&x.select(&train), &labels, classes, opts);
            (test.clone(), model.predict_proba(&x.select(&test)))
        })
        .collect();
    let mut out = Matrix::zeros(x.rows(), classes);
    for (test, probs) in parts {
        for (j, &i) in test.iter().enumerate() {
            out.row_mut(i).copy_from_slice(probs.row(j));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_two_blobs() {
        let mut rng = Rng::new(1);
        let mut data = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let c = i % 2;
            data.push(rng.normal() + if c == 1 { 4.0 } else { 0.0 });
            data.push(rng.normal());
            y.push(c);
        }
        let x = Matrix::from_vec(200, 2, data).unwrap();
        let p = cross_val_proba(&x, &y, 2, 5, LogRegOptions::default());
        let correct = (0..200)
            .filter(|&i| (p.row(i)[1] > 0.5) == (y[i] == 1))
            .count();
        assert!(correct > 190, "{correct}");
    }
}
