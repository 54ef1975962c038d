//! White-box attacks with gradients through the model: FGSM and PGD (L∞ and L2), always against the true labels.
//!
//! PGD keeps, for every example, the first iterate that the model misclassifies (an attack is allowed to stop once it
//! has won); the final robust accuracy is measured again on what is returned, never inferred.

use serde::Serialize;

use crate::engine::Engine;
use crate::error::{EvalError, Result};
use crate::rng::Rng;
use crate::target::argmax_rows;

/// The norm that bounds a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// Every feature moves by at most `eps`.
    Linf,
    /// The perturbation's Euclidean length is at most `eps`.
    L2,
}

impl Norm {
    /// The name used on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::Linf => "linf",
            Norm::L2 => "l2",
        }
    }
}

/// The valid input range every adversarial example is clipped to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bounds {
    /// The smallest valid feature value.
    pub min: f32,
    /// The largest valid feature value.
    pub max: f32,
}

/// Settings of PGD (FGSM is PGD with one step of size `eps` and no random start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PgdConfig {
    /// The norm of the threat model.
    pub norm: Norm,
    /// The perturbation budget.
    pub eps: f32,
    /// The step size.
    pub step: f32,
    /// Steps per restart.
    pub steps: usize,
    /// Restarts; the first starts at the example, the others at a random point of the ball.
    pub restarts: usize,
    /// The valid input range.
    pub bounds: Bounds,
    /// The seed of the random starts.
    pub seed: u64,
}

impl PgdConfig {
    /// Checks the settings.
    pub fn check(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(EvalError::Setting(format!(
                "eps must be positive, not {}",
                self.eps
            )));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(EvalError::Setting(format!(
                "the step must be positive, not {}",
                self.step
            )));
        }
        if self.steps == 0 || self.steps > 100_000 || self.restarts == 0 || self.restarts > 1000 {
            return Err(EvalError::Setting(
                "steps must be in 1..=100000 and restarts in 1..=1000".into(),
            ));
        }
        if self.bounds.min.partial_cmp(&self.bounds.max) != Some(std::cmp::Ordering::Less) {
            return Err(EvalError::Setting(
                "--clip-min must be below --clip-max".into(),
            ));
        }
        Ok(())
    }
}

/// What a white-box attack produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Adversarial {
    /// One adversarial example per input example, row-major.
    pub x: Vec<f32>,
    /// Gradient evaluations per example (forward and backward passes).
    pub gradients: usize,
}

/// FGSM: one step of size `eps` along the sign of the gradient (L∞) or the normalised gradient (L2).
pub fn fgsm(
    engine: &Engine,
    x: &[f32],
    labels: &[usize],
    norm: Norm,
    eps: f32,
    bounds: Bounds,
) -> Result<Adversarial> {
    let config = PgdConfig {
        norm,
        eps,
        step: eps,
        steps: 1,
        restarts: 1,
        bounds,
        seed: 0,
    };
    config.check()?;
    let (_, grad) = engine.loss_gradient(x, labels)?;
    let mut adv = x.to_vec();
    step(&mut adv, &grad, engine.features(), norm, eps);
    project(&mut adv, x, engine.features(), &config);
    Ok(Adversarial {
        x: adv,
        gradients: 1,
    })
}

/// PGD with restarts. Examples already fooled are not attacked again.
pub fn pgd(
    engine: &Engine,
    x: &[f32],
    labels: &[usize],
    config: &PgdConfig,
) -> Result<Adversarial> {
    config.check()?;
    let f = engine.features();
    let k = engine.classes();
    let n = labels.len();
    let mut best = x.to_vec();
    let mut fooled = vec![false; n];
    let mut gradients = 0;
    for restart in 0..config.restarts {
        let open: Vec<usize> = (0..n)
            .filter(|&i| !fooled.get(i).copied().unwrap_or(true))
            .collect();
        if open.is_empty() {
            break;
        }
        let origin: Vec<f32> = open
            .iter()
            .flat_map(|&i| x.get(i * f..(i + 1) * f).unwrap_or(&[]).iter().copied())
            .collect();
        let open_labels: Vec<usize> = open
            .iter()
            .filter_map(|&i| labels.get(i).copied())
            .collect();
        let mut adv = origin.clone();
        if restart > 0 {
            let mut rng = Rng::fork(config.seed, restart);
            random_start(&mut adv, f, config, &mut rng);
            project(&mut adv, &origin, f, config);
        }
        let mut done = vec![false; open.len()];
        for _ in 0..config.steps {
            let (logits, grad) = engine.loss_gradient(&adv, &open_labels)?;
            gradients += 1;
            record(
                &adv,
                &logits,
                k,
                f,
                &open,
                &open_labels,
                &mut done,
                &mut fooled,
                &mut best,
            );
            step(&mut adv, &grad, f, config.norm, config.step);
            project(&mut adv, &origin, f, config);
        }
        let logits = engine.logits(&adv)?;
        record(
            &adv,
            &logits,
            k,
            f,
            &open,
            &open_labels,
            &mut done,
            &mut fooled,
            &mut best,
        );
        // Examples never fooled keep the last iterate of the last restart that ran on them.
        for (j, &i) in open.iter().enumerate() {
            if !done.get(j).copied().unwrap_or(true) {
                if let (Some(dst), Some(src)) = (
                    best.get_mut(i * f..(i + 1) * f),
                    adv.get(j * f..(j + 1) * f),
                ) {
                    dst.copy_from_slice(src);
                }
            }
        }
    }
    Ok(Adversarial { x: best, gradients })
}

/// Saves the iterates that fool the model, once per example.
#[allow(clippy::too_many_arguments)]
fn record(
    adv: &[f32],
    logits: &[f32],
    k: usize,
    f: usize,
    open: &[usize],
    labels: &[usize],
    done: &mut [bool],
    fooled: &mut [bool],
    best: &mut [f32],
) {
    for (j, pred) in argmax_rows(logits, k).into_iter().enumerate() {
        let (Some(&i), Some(&label), Some(d)) = (open.get(j), labels.get(j), done.get_mut(j))
        else {
            continue;
        };
        if *d || pred == label {
            continue;
        }
        *d = true;
        if let Some(flag) = fooled.get_mut(i) {
            *flag = true;
        }
        if let (Some(dst), Some(src)) = (
            best.get_mut(i * f..(i + 1) * f),
            adv.get(j * f..(j + 1) * f),
        ) {
            dst.copy_from_slice(src);
        }
    }
}

/// One ascent step on the loss.
fn step(adv: &mut [f32], grad: &[f32], f: usize, norm: Norm, size: f32) {
    match norm {
        Norm::Linf => {
            for (a, &g) in adv.iter_mut().zip(grad) {
                if g > 0.0 {
                    *a += size;
                } else if g < 0.0 {
                    *a -= size;
                }
            }
        }
        Norm::L2 => {
            for (row, g) in adv.chunks_exact_mut(f).zip(grad.chunks_exact(f)) {
                let len = g.iter().map(|v| v * v).sum::<f32>().sqrt();
                if len > 0.0 {
                    row.iter_mut()
                        .zip(g)
                        .for_each(|(a, &gv)| *a += size * gv / len);
                }
            }
        }
    }
}

/// A uniformly random start in the L∞ ball, or a random direction at a random radius in the L2 ball.
fn random_start(adv: &mut [f32], f: usize, config: &PgdConfig, rng: &mut Rng) {
    match config.norm {
        Norm::Linf => adv
            .iter_mut()
            .for_each(|a| *a += config.eps * (2.0 * rng.uniform() - 1.0)),
        Norm::L2 => {
            for row in adv.chunks_exact_mut(f) {
                let dir: Vec<f32> = (0..f).map(|_| rng.normal()).collect();
                let len = dir.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let radius = config.eps * rng.uniform().powf(1.0 / f as f32);
                row.iter_mut()
                    .zip(&dir)
                    .for_each(|(a, d)| *a += radius * d / len);
            }
        }
    }
}

/// Projects onto the eps-ball around `origin`, then clips to the valid range.
pub fn project(adv: &mut [f32], origin: &[f32], f: usize, config: &PgdConfig) {
    let Bounds { min, max } = config.bounds;
    match config.norm {
        Norm::Linf => {
            for (a, &o) in adv.iter_mut().zip(origin) {
                *a = a.clamp(o - config.eps, o + config.eps).clamp(min, max);
            }
        }
        Norm::L2 => {
            for (row, o) in adv.chunks_exact_mut(f).zip(origin.chunks_exact(f)) {
                let len = row
                    .iter()
                    .zip(o)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                if len > config.eps {
                    let scale = config.eps / len;
                    row.iter_mut()
                        .zip(o)
                        .for_each(|(a, &b)| *a = b + (*a - b) * scale);
                }
                row.iter_mut().for_each(|a| *a = a.clamp(min, max));
            }
        }
    }
}

/// The perturbation's size under `norm`, per example.
pub fn distances(adv: &[f32], origin: &[f32], f: usize, norm: Norm) -> Vec<f32> {
    adv.chunks_exact(f.max(1))
        .zip(origin.chunks_exact(f.max(1)))
        .map(|(a, o)| match norm {
            Norm::Linf => a
                .iter()
                .zip(o)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max),
            Norm::L2 => a
                .iter()
                .zip(o)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
        })
        .collect()
}
