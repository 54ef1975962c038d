//! One evaluation from start to verdict: the attacks at each epsilon, membership inference, extraction, the gates.
//!
//! Robust accuracy is always measured by querying the target on the adversarial examples the attack returned (for
//! white-box attacks on an ONNX file, by tract, an implementation independent of the gradient engine), after checking
//! that each example stays within its budget and the valid range. Nothing is inferred from the attack's own notes.

use std::time::Instant;

use serde::Serialize;

use crate::data::Dataset;
use crate::engine::Engine;
use crate::error::{EvalError, Result};
use crate::extraction::extraction;
use crate::hsj::{hop_skip_jump, HsjConfig};
use crate::membership::membership;
use crate::report::{AttackResult, Gate, Report};
use crate::square::{square_attack, SquareConfig};
use crate::target::{argmax_rows, Scorer};
use crate::whitebox::{distances, fgsm, pgd, Bounds, Norm, PgdConfig};

/// An attack the evaluation can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attack {
    /// Fast Gradient Sign Method (white-box).
    Fgsm,
    /// Projected Gradient Descent (white-box).
    Pgd,
    /// Square Attack (black-box, scores).
    Square,
    /// HopSkipJump (black-box, decisions).
    Hsj,
}

impl Attack {
    /// The attack's short name.
    pub fn as_str(self) -> &'static str {
        match self {
            Attack::Fgsm => "fgsm",
            Attack::Pgd => "pgd",
            Attack::Square => "square",
            Attack::Hsj => "hsj",
        }
    }

    /// Whether it needs gradients.
    pub fn white_box(self) -> bool {
        matches!(self, Attack::Fgsm | Attack::Pgd)
    }
}

/// What to run and the thresholds that decide the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The attacks, in order; the first one's examples at `eps` are the ones emitted.
    pub attacks: Vec<Attack>,
    /// The norm of every attack.
    pub norm: Norm,
    /// The main perturbation budget (gates apply here).
    pub eps: f32,
    /// More budgets for the robust-accuracy curve.
    pub sweep: Vec<f32>,
    /// PGD's step at `eps` (scaled in proportion at the sweep's budgets).
    pub step: f32,
    /// PGD's steps.
    pub steps: usize,
    /// PGD's restarts.
    pub restarts: usize,
    /// The black-box query budget per example.
    pub queries: usize,
    /// How the Square Attack lays an example out (channels, height, width).
    pub image: [usize; 3],
    /// The valid input range.
    pub bounds: Bounds,
    /// The seed of every random choice.
    pub seed: u64,
    /// Extraction: the largest query budget, when the study is asked for.
    pub extraction_queries: Option<usize>,
    /// The least robust accuracy allowed, for every attack at `eps`.
    pub min_robust_accuracy: Option<f64>,
    /// The least clean accuracy allowed.
    pub min_clean_accuracy: Option<f64>,
    /// The largest membership AUC allowed (over both attacks).
    pub max_membership_auc: Option<f64>,
    /// The largest membership TPR at 1% FPR allowed.
    pub max_membership_tpr: Option<f64>,
    /// The largest surrogate agreement allowed, at the largest budget.
    pub max_extraction_agreement: Option<f64>,
}

/// The model under test: an oracle that answers queries, and the gradient engine when the model is a file.
pub struct Target<'a> {
    /// Answers queries (tract in process, or a URL).
    pub oracle: &'a dyn Scorer,
    /// Gradients, for white-box attacks.
    pub engine: Option<&'a Engine>,
    /// The name shown in reports.
    pub name: String,
}

impl std::fmt::Debug for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("white_box", &self.engine.is_some())
            .finish()
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report with its gates.
    pub report: Report,
    /// The first attack's adversarial examples at `eps`, with the true labels.
    pub adversarial: Option<Vec<f32>>,
}

/// Runs the plan on `data`; `privacy` holds the member and non-member rows for membership inference.
pub fn evaluate(
    plan: &Plan,
    target: &Target<'_>,
    data: &Dataset,
    privacy: Option<(&Dataset, &Dataset)>,
    progress: &dyn Fn(&str),
) -> Result<Outcome> {
    let oracle = target.oracle;
    let f = oracle.features();
    let k = oracle.classes();
    if data.features() != f {
        return Err(EvalError::Mismatch(format!(
            "the model takes {f} features per example, the data has {}",
            data.features()
        )));
    }
    if let Some(&bad) = data.labels.iter().find(|&&l| l >= k) {
        return Err(EvalError::Mismatch(format!(
            "label {bad} is not one of the model's {k} classes (0 to {})",
            k - 1
        )));
    }
    let clean = oracle.scores(&data.x)?;
    let clean_pred = argmax_rows(&clean, k);
    let correct: Vec<bool> = clean_pred
        .iter()
        .zip(&data.labels)
        .map(|(p, l)| p == l)
        .collect();
    let clean_accuracy = correct.iter().filter(|&&c| c).count() as f64 / data.len() as f64;
    if let Some(engine) = target.engine {
        let mine = argmax_rows(&engine.logits(&data.x)?, k);
        let differ = mine.iter().zip(&clean_pred).filter(|(a, b)| a != b).count();
        if differ * 200 > data.len() {
            return Err(EvalError::Model(format!(
                "the gradient engine and tract disagree on {differ} of {} clean examples; white-box results would not be trustworthy",
                data.len()
            )));
        }
    }
    progress(&format!(
        "clean accuracy {clean_accuracy:.4} on {} examples",
        data.len()
    ));
    let mut report = Report {
        target: target.name.clone(),
        examples: data.len(),
        clean_accuracy,
        ..Report::default()
    };
    let mut budgets = plan.sweep.clone();
    budgets.push(plan.eps);
    budgets.sort_by(f32::total_cmp);
    budgets.dedup();
    let mut adversarial = None;
    for &attack in &plan.attacks {
        if attack == Attack::Hsj {
            let started = Instant::now();
            progress(&format!(
                "hsj {}: {} queries per example",
                plan.norm.as_str(),
                plan.queries
            ));
            let cfg = HsjConfig {
                norm: plan.norm,
                queries: plan.queries,
                init_evals: 100,
                max_evals: 1000,
                bounds: plan.bounds,
                seed: plan.seed,
            };
            let found = hop_skip_jump(oracle, &data.x, &data.labels, &cfg)?;
            // Confirm every example the attack claims, with one more query each.
            let check = argmax_rows(&oracle.scores(&found.x)?, k);
            let measured = distances(&found.x, &data.x, f, plan.norm);
            let seconds = started.elapsed().as_secs_f64();
            let mean_q = found.queries.iter().sum::<usize>() as f64 / data.len() as f64;
            for &eps in &budgets {
                let broken: Vec<bool> = check
                    .iter()
                    .zip(&data.labels)
                    .zip(&measured)
                    .zip(&found.distance)
                    .map(|(((p, l), d), claimed)| p != l && claimed.is_finite() && *d <= eps + 1e-6)
                    .collect();
                report.attacks.push(result(
                    attack,
                    plan,
                    eps,
                    &broken,
                    &correct,
                    mean_q,
                    seconds,
                    format!("queries={} init_evals=100 max_evals=1000", plan.queries),
                ));
            }
            if adversarial.is_none() {
                adversarial = Some(found.x);
            }
            continue;
        }
        for &eps in &budgets {
            let started = Instant::now();
            progress(&format!(
                "{} {} eps={eps}",
                attack.as_str(),
                plan.norm.as_str()
            ));
            let step = plan.step * eps / plan.eps;
            let (adv, mean_q, settings) = match attack {
                Attack::Fgsm | Attack::Pgd => {
                    let engine = target.engine.ok_or_else(|| {
                        EvalError::Setting(format!("`{}` is a white-box attack and needs the ONNX file (--model); with --url use --attacks square,hsj", attack.as_str()))
                    })?;
                    if attack == Attack::Fgsm {
                        let a = fgsm(engine, &data.x, &data.labels, plan.norm, eps, plan.bounds)?;
                        (a.x, a.gradients as f64, "one step of size eps".to_owned())
                    } else {
                        let cfg = PgdConfig {
                            norm: plan.norm,
                            eps,
                            step,
                            steps: plan.steps,
                            restarts: plan.restarts,
                            bounds: plan.bounds,
                            seed: plan.seed,
                        };
                        let a = pgd(engine, &data.x, &data.labels, &cfg)?;
                        (
                            a.x,
                            a.gradients as f64 / plan.restarts as f64,
                            format!(
                                "step={step} steps={} restarts={}",
                                plan.steps, plan.restarts
                            ),
                        )
                    }
                }
                Attack::Square | Attack::Hsj => {
                    let cfg = SquareConfig {
                        norm: plan.norm,
                        eps,
                        queries: plan.queries,
                        p_init: 0.8,
                        image: plan.image,
                        bounds: plan.bounds,
                        seed: plan.seed,
                    };
                    let a = square_attack(oracle, &data.x, &data.labels, &cfg)?;
                    let mean = a.queries.iter().sum::<usize>() as f64 / data.len() as f64;
                    let [c, h, w] = plan.image;
                    (
                        a.x,
                        mean,
                        format!("queries={} p_init=0.8 image={c}x{h}x{w}", plan.queries),
                    )
                }
            };
            check_budget(&adv, &data.x, f, plan.norm, eps, plan.bounds)?;
            let pred = argmax_rows(&oracle.scores(&adv)?, k);
            let broken: Vec<bool> = pred.iter().zip(&data.labels).map(|(p, l)| p != l).collect();
            let seconds = started.elapsed().as_secs_f64();
            report.attacks.push(result(
                attack, plan, eps, &broken, &correct, mean_q, seconds, settings,
            ));
            if adversarial.is_none() && eps == plan.eps {
                adversarial = Some(adv);
            }
        }
    }
    if let Some((members, outsiders)) = privacy {
        progress("membership inference");
        for (name, d) in [("member", members), ("non-member", outsiders)] {
            if d.features() != f {
                return Err(EvalError::Mismatch(format!(
                    "the {name} file has {} features, the model takes {f}",
                    d.features()
                )));
            }
            if d.labels.iter().any(|&l| l >= k) {
                return Err(EvalError::Mismatch(format!(
                    "the {name} file has a label outside the model's {k} classes"
                )));
            }
        }
        let sm = oracle.scores(&members.x)?;
        let so = oracle.scores(&outsiders.x)?;
        report.membership = Some(membership(&sm, &members.labels, &so, &outsiders.labels, k)?);
    }
    if let Some(max) = plan.extraction_queries {
        progress(&format!("extraction: surrogates from 10 to {max} queries"));
        let half = data.len() / 2;
        let (pool, holdout) = data.x.split_at(half * f);
        let labels = data.labels.get(half..).unwrap_or(&[]);
        report.extraction = Some(extraction(
            oracle,
            pool,
            holdout,
            labels,
            max,
            plan.bounds,
            plan.seed,
        )?);
    }
    gates(plan, &mut report);
    Ok(Outcome {
        report,
        adversarial,
    })
}

#[allow(clippy::too_many_arguments)]
fn result(
    attack: Attack,
    plan: &Plan,
    eps: f32,
    broken: &[bool],
    correct: &[bool],
    mean_q: f64,
    seconds: f64,
    settings: String,
) -> AttackResult {
    let n = broken.len().max(1) as f64;
    let robust = broken.iter().filter(|&&b| !b).count() as f64 / n;
    let correct_n = correct.iter().filter(|&&c| c).count();
    let turned = broken
        .iter()
        .zip(correct)
        .filter(|(b, c)| **b && **c)
        .count();
    AttackResult {
        attack: attack.as_str().to_owned(),
        norm: plan.norm.as_str().to_owned(),
        eps,
        examples: broken.len(),
        robust_accuracy: robust,
        success_rate: if correct_n == 0 {
            0.0
        } else {
            turned as f64 / correct_n as f64
        },
        mean_queries: mean_q,
        seconds,
        settings,
    }
}

/// Refuses adversarial examples outside the budget or the valid range: a bug, never a result.
fn check_budget(
    adv: &[f32],
    origin: &[f32],
    f: usize,
    norm: Norm,
    eps: f32,
    bounds: Bounds,
) -> Result<()> {
    let worst = distances(adv, origin, f, norm)
        .into_iter()
        .fold(0.0f32, f32::max);
    let out_of_range = adv
        .iter()
        .any(|v| *v < bounds.min || *v > bounds.max || !v.is_finite());
    if worst > eps * 1.0001 + 1e-6 || out_of_range || adv.len() != origin.len() {
        return Err(EvalError::Model(format!(
            "internal check failed: an adversarial example is {worst} away (budget {eps}) or outside the valid range; no result is reported"
        )));
    }
    Ok(())
}

fn gates(plan: &Plan, report: &mut Report) {
    let mut gates = Vec::new();
    if let Some(min) = plan.min_clean_accuracy {
        gates.push(Gate {
            name: "min-clean-accuracy".into(),
            threshold: min,
            value: report.clean_accuracy,
            passed: report.clean_accuracy >= min,
        });
    }
    if let Some(min) = plan.min_robust_accuracy {
        for a in report.attacks.iter().filter(|a| a.eps == plan.eps) {
            gates.push(Gate {
                name: format!("min-robust-accuracy {} {} eps={}", a.attack, a.norm, a.eps),
                threshold: min,
                value: a.robust_accuracy,
                passed: a.robust_accuracy >= min,
            });
        }
    }
    if let Some(m) = &report.membership {
        for r in m {
            if let Some(max) = plan.max_membership_auc {
                gates.push(Gate {
                    name: format!("max-membership-auc {}", r.attack),
                    threshold: max,
                    value: r.auc,
                    passed: r.auc <= max,
                });
            }
            if let Some(max) = plan.max_membership_tpr {
                gates.push(Gate {
                    name: format!("max-membership-tpr {}", r.attack),
                    threshold: max,
                    value: r.tpr_at_1pct_fpr,
                    passed: r.tpr_at_1pct_fpr <= max,
                });
            }
        }
    }
    if let (Some(max), Some(points)) = (plan.max_extraction_agreement, &report.extraction) {
        if let Some(last) = points.last() {
            gates.push(Gate {
                name: format!("max-extraction-agreement queries={}", last.queries),
                threshold: max,
                value: last.agreement,
                passed: last.agreement <= max,
            });
        }
    }
    report.gates = gates;
}
