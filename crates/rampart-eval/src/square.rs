//! Square Attack (Andriushchenko et al., 2020): a score-based random search under a query budget.
//!
//! Examples are viewed as `[channels, height, width]` images (`--image-shape`); a flat tabular example is a
//! `[1, 1, features]` "image", where the square becomes a run of neighbouring features. Each iteration changes one
//! square window per still-correct example and keeps the change when the margin (true class score minus the best other)
//! drops; the queries of all examples in a chunk go out as one batch, and chunks run in parallel.
//!
//! L∞ follows the paper: vertical-stripe start, `±eps` per channel inside the window. L2 is a simplified form of the
//! paper's: a stripe start scaled to `eps`, then each window receives the L2 budget left outside it, as a random
//! per-channel sign pattern (the paper also moves mass from a second window; noted in the report's settings).

use rayon::prelude::*;

use crate::error::{EvalError, Result};
use crate::rng::Rng;
use crate::target::{argmax_rows, Scorer};
use crate::whitebox::{Bounds, Norm};

/// Examples per chunk: one batched query per chunk and iteration.
const CHUNK: usize = 16;

/// Settings of the Square Attack.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquareConfig {
    /// The norm of the threat model.
    pub norm: Norm,
    /// The perturbation budget.
    pub eps: f32,
    /// Queries per example, the initial one included.
    pub queries: usize,
    /// The initial fraction of features a square covers (0.8 in the paper and in ART).
    pub p_init: f32,
    /// How an example is laid out: channels, height, width.
    pub image: [usize; 3],
    /// The valid input range.
    pub bounds: Bounds,
    /// The seed.
    pub seed: u64,
}

/// What a black-box attack produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BlackBoxResult {
    /// One example per input example (the adversarial one where the attack won, else its last candidate).
    pub x: Vec<f32>,
    /// Queries spent per example.
    pub queries: Vec<usize>,
}

/// The paper's schedule of the square's size, on a budget of 10,000 iterations rescaled to `total`.
fn p_selection(p_init: f32, it: usize, total: usize) -> f32 {
    let it = (it as f64 / total.max(1) as f64 * 10_000.0) as usize;
    let div = match it {
        0..=10 => 1.0,
        11..=50 => 2.0,
        51..=200 => 4.0,
        201..=500 => 8.0,
        501..=1000 => 16.0,
        1001..=2000 => 32.0,
        2001..=4000 => 64.0,
        4001..=6000 => 128.0,
        6001..=8000 => 256.0,
        _ => 512.0,
    };
    p_init / div
}

fn margins(scores: &[f32], k: usize, labels: &[usize]) -> Vec<f32> {
    scores
        .chunks_exact(k.max(1))
        .zip(labels)
        .map(|(row, &label)| {
            let own = row.get(label).copied().unwrap_or(f32::NEG_INFINITY);
            let other = row
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != label)
                .map(|(_, &v)| v)
                .fold(f32::NEG_INFINITY, f32::max);
            own - other
        })
        .collect()
}

/// Runs the attack on every example.
pub fn square_attack(
    scorer: &dyn Scorer,
    x: &[f32],
    labels: &[usize],
    config: &SquareConfig,
) -> Result<BlackBoxResult> {
    let f = scorer.features();
    let [c, h, w] = config.image;
    if c * h * w != f {
        return Err(EvalError::Setting(format!(
            "the image shape {c}x{h}x{w} does not hold the model's {f} features"
        )));
    }
    if !(config.eps.is_finite() && config.eps > 0.0)
        || config.queries < 2
        || config.queries > 1_000_000
    {
        return Err(EvalError::Setting(
            "Square Attack needs eps > 0 and a budget of 2 to 1,000,000 queries".into(),
        ));
    }
    let parts: Vec<Result<BlackBoxResult>> = x
        .par_chunks(f * CHUNK)
        .zip(labels.par_chunks(CHUNK))
        .enumerate()
        .map(|(i, (xc, lc))| chunk(scorer, xc, lc, config, Rng::fork(config.seed, i)))
        .collect();
    let mut out = BlackBoxResult {
        x: Vec::with_capacity(x.len()),
        queries: Vec::with_capacity(labels.len()),
    };
    for part in parts {
        let part = part?;
        out.x.extend(part.x);
        out.queries.extend(part.queries);
    }
    Ok(out)
}

fn chunk(
    scorer: &dyn Scorer,
    x: &[f32],
    labels: &[usize],
    cfg: &SquareConfig,
    mut rng: Rng,
) -> Result<BlackBoxResult> {
    let f = scorer.features();
    let k = scorer.classes();
    let n = labels.len();
    let [c, h, w] = cfg.image;
    let Bounds { min, max } = cfg.bounds;
    let mut queries = vec![1usize; n];
    let clean = scorer.scores(x)?;
    let mut fooled: Vec<bool> = argmax_rows(&clean, k)
        .iter()
        .zip(labels)
        .map(|(p, l)| p != l)
        .collect();
    // The start: vertical stripes of +-eps (L2: scaled to an L2 length of eps).
    let mut adv = x.to_vec();
    for (e, row) in adv.chunks_exact_mut(f).enumerate() {
        if fooled.get(e).copied().unwrap_or(true) {
            continue;
        }
        let signs: Vec<f32> = (0..c * w).map(|_| rng.sign()).collect();
        let scale = match cfg.norm {
            Norm::Linf => cfg.eps,
            Norm::L2 => cfg.eps / (f as f32).sqrt(),
        };
        for ch in 0..c {
            for y in 0..h {
                for xx in 0..w {
                    if let (Some(v), Some(s)) =
                        (row.get_mut(ch * h * w + y * w + xx), signs.get(ch * w + xx))
                    {
                        *v = (*v + scale * s).clamp(min, max);
                    }
                }
            }
        }
    }
    let active: Vec<usize> = (0..n)
        .filter(|&e| !fooled.get(e).copied().unwrap_or(true))
        .collect();
    let mut margin = vec![f32::INFINITY; n];
    if !active.is_empty() {
        let batch: Vec<f32> = active
            .iter()
            .flat_map(|&e| adv.get(e * f..(e + 1) * f).unwrap_or(&[]).iter().copied())
            .collect();
        let active_labels: Vec<usize> = active
            .iter()
            .filter_map(|&e| labels.get(e).copied())
            .collect();
        let scores = scorer.scores(&batch)?;
        for (j, m) in margins(&scores, k, &active_labels).into_iter().enumerate() {
            if let Some(&e) = active.get(j) {
                if let (Some(slot), Some(q), Some(fl)) =
                    (margin.get_mut(e), queries.get_mut(e), fooled.get_mut(e))
                {
                    *slot = m;
                    *q += 1;
                    *fl = m < 0.0;
                }
            }
        }
    }
    let iterations = cfg.queries.saturating_sub(2);
    let side = if h == 1 { w } else { h.min(w) };
    for it in 0..iterations {
        let active: Vec<usize> = (0..n)
            .filter(|&e| !fooled.get(e).copied().unwrap_or(true))
            .collect();
        if active.is_empty() {
            break;
        }
        let p = p_selection(cfg.p_init, it, iterations);
        let s = if h == 1 {
            ((p * w as f32).round() as usize).clamp(1, w.saturating_sub(1).max(1))
        } else {
            ((p * (h * w) as f32).sqrt().round() as usize).clamp(1, side.saturating_sub(1).max(1))
        };
        let (sh, sw) = if h == 1 { (1, s) } else { (s, s) };
        let mut batch = Vec::with_capacity(active.len() * f);
        for &e in &active {
            let (Some(orig), Some(cur)) = (x.get(e * f..(e + 1) * f), adv.get(e * f..(e + 1) * f))
            else {
                continue;
            };
            let mut cand = cur.to_vec();
            for _try in 0..10 {
                let top = rng.below(h - sh + 1);
                let left = rng.below(w - sw + 1);
                propose(
                    &mut cand,
                    orig,
                    cur,
                    cfg,
                    [c, h, w],
                    [top, left, sh, sw],
                    &mut rng,
                );
                if cand.iter().zip(cur).any(|(a, b)| (a - b).abs() > 1e-7) {
                    break;
                }
            }
            batch.extend_from_slice(&cand);
        }
        let active_labels: Vec<usize> = active
            .iter()
            .filter_map(|&e| labels.get(e).copied())
            .collect();
        let scores = scorer.scores(&batch)?;
        for (j, m) in margins(&scores, k, &active_labels).into_iter().enumerate() {
            let Some(&e) = active.get(j) else { continue };
            if let Some(q) = queries.get_mut(e) {
                *q += 1;
            }
            if m < margin.get(e).copied().unwrap_or(f32::INFINITY) {
                if let (Some(dst), Some(src)) = (
                    adv.get_mut(e * f..(e + 1) * f),
                    batch.get(j * f..(j + 1) * f),
                ) {
                    dst.copy_from_slice(src);
                }
                if let (Some(slot), Some(fl)) = (margin.get_mut(e), fooled.get_mut(e)) {
                    *slot = m;
                    *fl = m < 0.0;
                }
            }
        }
    }
    Ok(BlackBoxResult { x: adv, queries })
}

/// Writes a candidate: `cur` with the window `[top, left, height, width]` replaced by a new perturbation of `orig`.
fn propose(
    cand: &mut [f32],
    orig: &[f32],
    cur: &[f32],
    cfg: &SquareConfig,
    [c, h, w]: [usize; 3],
    win: [usize; 4],
    rng: &mut Rng,
) {
    let [top, left, sh, sw] = win;
    let Bounds { min, max } = cfg.bounds;
    cand.copy_from_slice(cur);
    let inside = |y: usize, xx: usize| y >= top && y < top + sh && xx >= left && xx < left + sw;
    let signs: Vec<f32> = (0..c).map(|_| rng.sign()).collect();
    match cfg.norm {
        Norm::Linf => {
            for ch in 0..c {
                for y in top..top + sh {
                    for xx in left..left + sw {
                        let i = ch * h * w + y * w + xx;
                        if let (Some(v), Some(&o), Some(&s)) =
                            (cand.get_mut(i), orig.get(i), signs.get(ch))
                        {
                            *v = (o + cfg.eps * s)
                                .clamp(min, max)
                                .clamp(o - cfg.eps, o + cfg.eps);
                        }
                    }
                }
            }
        }
        Norm::L2 => {
            // The L2 budget left outside the window goes into it, as a random pattern.
            let mut outside = 0.0f32;
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        if !inside(y, xx) {
                            let i = ch * h * w + y * w + xx;
                            let d = cur.get(i).copied().unwrap_or(0.0)
                                - orig.get(i).copied().unwrap_or(0.0);
                            outside += d * d;
                        }
                    }
                }
            }
            let budget = (cfg.eps * cfg.eps - outside).max(0.0).sqrt();
            let pattern: Vec<f32> = (0..c * sh * sw)
                .map(|i| signs.get(i / (sh * sw)).copied().unwrap_or(1.0) * (0.5 + rng.uniform()))
                .collect();
            let len = pattern.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            let mut p = 0;
            for ch in 0..c {
                for y in top..top + sh {
                    for xx in left..left + sw {
                        let i = ch * h * w + y * w + xx;
                        if let (Some(v), Some(&o), Some(&d)) =
                            (cand.get_mut(i), orig.get(i), pattern.get(p))
                        {
                            *v = (o + budget * d / len).clamp(min, max);
                        }
                        p += 1;
                    }
                }
            }
        }
    }
}
