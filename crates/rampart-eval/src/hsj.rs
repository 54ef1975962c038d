//! HopSkipJump (Chen, Jordan and Wainwright, 2020): a decision-based attack that needs only the predicted class.
//!
//! It finds a misclassified starting point, walks to the decision boundary by binary search, and repeatedly estimates
//! the boundary's normal from the signs of `num_evals` random probes (sent as one batch), steps along it and searches
//! the boundary again, shrinking the distance to the example. It is a minimum-norm attack: an example counts as broken
//! at `eps` only when an adversarial example at most `eps` away was found and confirmed within the query budget.

use rayon::prelude::*;

use crate::error::{EvalError, Result};
use crate::rng::Rng;
use crate::target::{argmax_rows, Scorer};
use crate::whitebox::{Bounds, Norm};

/// Settings of HopSkipJump.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HsjConfig {
    /// The norm the distance is measured in.
    pub norm: Norm,
    /// Queries per example.
    pub queries: usize,
    /// Probes of the first gradient estimate (grows with the square root of the iteration).
    pub init_evals: usize,
    /// The most probes of one gradient estimate.
    pub max_evals: usize,
    /// The valid input range.
    pub bounds: Bounds,
    /// The seed.
    pub seed: u64,
}

/// What HopSkipJump found for each example.
#[derive(Debug, Clone, PartialEq)]
pub struct HsjResult {
    /// The closest confirmed adversarial example, or the example itself when none was found.
    pub x: Vec<f32>,
    /// Its distance to the example (`0` when the example was already misclassified, infinite when none was found).
    pub distance: Vec<f32>,
    /// Queries spent per example.
    pub queries: Vec<usize>,
}

/// Runs HopSkipJump on every example, in parallel.
pub fn hop_skip_jump(
    scorer: &dyn Scorer,
    x: &[f32],
    labels: &[usize],
    config: &HsjConfig,
) -> Result<HsjResult> {
    if config.queries < 20 || config.queries > 1_000_000 {
        return Err(EvalError::Setting(
            "HopSkipJump needs a budget of 20 to 1,000,000 queries".into(),
        ));
    }
    let f = scorer.features();
    let parts: Vec<Result<(Vec<f32>, f32, usize)>> = x
        .par_chunks(f)
        .zip(labels.par_iter())
        .enumerate()
        .map(|(i, (row, &label))| {
            let mut one = One {
                scorer,
                origin: row,
                label,
                cfg: config,
                used: 0,
                rng: Rng::fork(config.seed, i),
            };
            one.run()
        })
        .collect();
    let mut out = HsjResult {
        x: Vec::with_capacity(x.len()),
        distance: Vec::new(),
        queries: Vec::new(),
    };
    for part in parts {
        let (adv, d, q) = part?;
        out.x.extend(adv);
        out.distance.push(d);
        out.queries.push(q);
    }
    Ok(out)
}

struct One<'a> {
    scorer: &'a dyn Scorer,
    origin: &'a [f32],
    label: usize,
    cfg: &'a HsjConfig,
    used: usize,
    rng: Rng,
}

impl One<'_> {
    fn left(&self) -> usize {
        self.cfg.queries.saturating_sub(self.used)
    }

    /// Whether each candidate is misclassified; `None` once the budget cannot pay for them.
    fn adversarial(&mut self, batch: &[f32]) -> Result<Option<Vec<bool>>> {
        let f = self.origin.len().max(1);
        let n = batch.len() / f;
        if n == 0 || n > self.left() {
            return Ok(None);
        }
        self.used += n;
        let scores = self.scorer.scores(batch)?;
        Ok(Some(
            argmax_rows(&scores, self.scorer.classes())
                .into_iter()
                .map(|p| p != self.label)
                .collect(),
        ))
    }

    fn distance(&self, x: &[f32]) -> f32 {
        match self.cfg.norm {
            Norm::L2 => x
                .iter()
                .zip(self.origin)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt(),
            Norm::Linf => x
                .iter()
                .zip(self.origin)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max),
        }
    }

    /// The point at fraction `t` of the way from the origin to `x` (L2: on the segment; L∞: a box of shrinking size).
    fn blend(&self, x: &[f32], t: f32) -> Vec<f32> {
        match self.cfg.norm {
            Norm::L2 => x
                .iter()
                .zip(self.origin)
                .map(|(a, o)| o + t * (a - o))
                .collect(),
            Norm::Linf => {
                let r = t * self.distance(x);
                x.iter()
                    .zip(self.origin)
                    .map(|(a, o)| a.clamp(o - r, o + r))
                    .collect()
            }
        }
    }

    fn theta(&self) -> f32 {
        let d = self.origin.len() as f32;
        match self.cfg.norm {
            Norm::L2 => 1.0 / (d * d.sqrt()),
            Norm::Linf => 1.0 / (d * d),
        }
    }

    /// Binary search between the origin (correct) and `adv` (misclassified) for the boundary.
    fn boundary(&mut self, adv: &[f32]) -> Result<Vec<f32>> {
        let (mut low, mut high) = (0.0f32, 1.0f32);
        let theta = self.theta().max(1e-6);
        let mut best = adv.to_vec();
        while high - low > theta {
            let mid = (low + high) / 2.0;
            let cand = self.blend(adv, mid);
            match self.adversarial(&cand)? {
                Some(v) if v.first() == Some(&true) => {
                    high = mid;
                    best = cand;
                }
                Some(_) => low = mid,
                None => break,
            }
        }
        Ok(best)
    }

    fn clip(&self, x: &mut [f32]) {
        let Bounds { min, max } = self.cfg.bounds;
        x.iter_mut().for_each(|v| *v = v.clamp(min, max));
    }

    fn run(&mut self) -> Result<(Vec<f32>, f32, usize)> {
        let f = self.origin.len();
        let none = (self.origin.to_vec(), f32::INFINITY);
        match self.adversarial(self.origin)? {
            Some(v) if v.first() == Some(&true) => {
                return Ok((self.origin.to_vec(), 0.0, self.used))
            }
            Some(_) => {}
            None => return Ok((none.0, none.1, self.used)),
        }
        // A misclassified start: uniform noise over the valid range, ten candidates per query batch.
        let Bounds { min, max } = self.cfg.bounds;
        let mut start = None;
        for _ in 0..10 {
            let batch: Vec<f32> = (0..10 * f)
                .map(|_| min + (max - min) * self.rng.uniform())
                .collect();
            let Some(flags) = self.adversarial(&batch)? else {
                break;
            };
            if let Some(j) = flags.iter().position(|&b| b) {
                start = batch.get(j * f..(j + 1) * f).map(<[f32]>::to_vec);
                break;
            }
        }
        let Some(start) = start else {
            return Ok((none.0, none.1, self.used));
        };
        let mut adv = self.boundary(&start)?;
        let mut dist = self.distance(&adv);
        let d = f as f32;
        for t in 1..=10_000usize {
            if self.left() < 3 {
                break;
            }
            let delta = if t == 1 {
                0.1 * (max - min)
            } else {
                match self.cfg.norm {
                    Norm::L2 => d.sqrt() * self.theta() * dist,
                    Norm::Linf => d * self.theta() * dist,
                }
            };
            let evals = ((self.cfg.init_evals as f32 * (t as f32).sqrt()) as usize)
                .min(self.cfg.max_evals)
                .min(self.left().saturating_sub(2))
                .max(1);
            // Probe the boundary around `adv`.
            let mut probes = Vec::with_capacity(evals * f);
            let mut dirs = Vec::with_capacity(evals * f);
            for _ in 0..evals {
                let dir: Vec<f32> = match self.cfg.norm {
                    Norm::L2 => (0..f).map(|_| self.rng.normal()).collect(),
                    Norm::Linf => (0..f).map(|_| 2.0 * self.rng.uniform() - 1.0).collect(),
                };
                let len = dir.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                let mut p: Vec<f32> = adv
                    .iter()
                    .zip(&dir)
                    .map(|(a, u)| a + delta * u / len)
                    .collect();
                self.clip(&mut p);
                dirs.extend(p.iter().zip(&adv).map(|(a, b)| (a - b) / delta));
                probes.extend(p);
            }
            let Some(flags) = self.adversarial(&probes)? else {
                break;
            };
            let phi: Vec<f32> = flags.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
            let mean = phi.iter().sum::<f32>() / phi.len().max(1) as f32;
            let mut grad = vec![0.0f32; f];
            for (p, dir) in phi.iter().zip(dirs.chunks_exact(f)) {
                let weight = if mean.abs() == 1.0 { *p } else { p - mean };
                grad.iter_mut().zip(dir).for_each(|(g, u)| *g += weight * u);
            }
            let update: Vec<f32> = match self.cfg.norm {
                Norm::L2 => {
                    let len = grad.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    grad.iter().map(|g| g / len).collect()
                }
                Norm::Linf => grad
                    .iter()
                    .map(|g| g.signum() * if *g == 0.0 { 0.0 } else { 1.0 })
                    .collect(),
            };
            // Geometric step search: halve until the step stays adversarial.
            let mut size = dist / (t as f32).sqrt();
            let mut moved = None;
            for _ in 0..20 {
                let mut cand: Vec<f32> =
                    adv.iter().zip(&update).map(|(a, u)| a + size * u).collect();
                self.clip(&mut cand);
                match self.adversarial(&cand)? {
                    Some(v) if v.first() == Some(&true) => {
                        moved = Some(cand);
                        break;
                    }
                    Some(_) => size /= 2.0,
                    None => break,
                }
            }
            let Some(next) = moved else { break };
            let next = self.boundary(&next)?;
            let nd = self.distance(&next);
            if nd < dist {
                adv = next;
                dist = nd;
            }
        }
        Ok((adv, dist, self.used))
    }
}
