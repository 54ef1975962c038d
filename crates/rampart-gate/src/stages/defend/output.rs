//! The stages after the model: detector, extraction evidence, watermark, hardening.

use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;
use rampart_defend::detect;
use rampart_defend::watermark::Mark;
use rampart_defend::DefendError;
use rampart_infer::{Tensor, TensorData};

use super::extraction::{ExtractionStage, Nearest};
use super::{DefendAudit, Pending};
use crate::metrics::Metrics;
use crate::pipeline::Refusal;

/// The output stages after the detector ([`Pending::assess`]).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "made and taken apart once a request, on the stack: a box would be an allocation a request"
)]
pub enum Assessed<'a> {
    /// The answer, already decided: the tensors and whether the client's list of wanted outputs still applies
    /// (the scores could not be read, and the defences failed open).
    Answered(Vec<Tensor>, bool),
    /// Assessed by the detector: the extraction monitor ([`Weighed::observe`], in the principal's turn), then the
    /// watermark and hardening ([`Weighed::finish`]) follow.
    Weighed(Weighed<'a>),
}

/// A request's answer between the detector and the extraction monitor.
#[derive(Debug)]
pub struct Weighed<'a> {
    pending: Pending<'a>,
    outputs: Vec<Tensor>,
    /// Which of `outputs` holds the scores.
    index: Option<usize>,
    /// The scores of the rows asked for (not of the squeezed copies).
    mine: Vec<Vec<f32>>,
    nearest: Option<Nearest>,
    /// The detector's refusal, given after the extraction monitor has counted the query.
    rejected: Option<Refusal>,
}

impl<'a> Pending<'a> {
    /// The output stages in one call, without the principal's turn: detector, extraction, watermark, hardening
    /// ([`Pending::assess`], [`Weighed::observe`], [`Weighed::finish`]). Returns the tensors to answer with and whether
    /// the client's list of wanted outputs still applies (not after hardening renames them). The gateway runs the
    /// three apart (`Gate::stage_defend_outputs`); tests call this.
    #[cfg(test)]
    pub fn after_infer(
        self,
        outputs: Vec<Tensor>,
        audit: &mut Option<DefendAudit>,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
        metrics: &Metrics,
    ) -> Result<(Vec<Tensor>, bool), Refusal> {
        match self.assess(outputs, audit, headers, metrics)? {
            Assessed::Answered(outputs, keep) => Ok((outputs, keep)),
            Assessed::Weighed(mut weighed) => {
                weighed.observe(audit, metrics)?;
                weighed.finish(audit, metrics)
            }
        }
    }

    /// The first output stage: reads the model's scores and runs the detector on them.
    pub fn assess(
        self,
        outputs: Vec<Tensor>,
        audit: &mut Option<DefendAudit>,
        headers: &mut Vec<(HeaderName, HeaderValue)>,
        metrics: &Metrics,
    ) -> Result<Assessed<'a>, Refusal> {
        let d = self.defences;
        let audit = audit.get_or_insert_with(DefendAudit::default);
        let model_error = |message: String| DefendError::Model(message);
        // The model scored the rows and (with the detector on) their squeezed copies: keep the scores of all for
        // the detector, answer with the rows' own.
        let mut outputs = outputs;
        let index = match &d.output {
            Some(name) => outputs.iter().position(|t| &t.name == name),
            None => (!outputs.is_empty()).then_some(0),
        };
        let scores = index
            .and_then(|i| outputs.get(i))
            .ok_or_else(|| model_error("the model returned no scores".into()))
            .and_then(rampart_defend::rows_of);
        let (all_rows, classes, all_scores) = match scores {
            Ok(s) => s,
            Err(err) => {
                d.undecided("detector", &err, audit, metrics)?;
                // Failed open (`on_error = "allow"`), still never more than was asked: the rows' own answers, not
                // the squeezed copies'; and never unhardened scores where hardening is configured.
                for t in &mut outputs {
                    keep_rows(t, self.rows);
                }
                if d.harden.is_some() {
                    return Err(Refusal::new(
                        "harden",
                        StatusCode::SERVICE_UNAVAILABLE,
                        "defence_undecided",
                        "the answer could not be hardened",
                    ));
                }
                return Ok(Assessed::Answered(outputs, true));
            }
        };
        for t in &mut outputs {
            keep_rows(t, self.rows);
        }
        let score_rows: Vec<Vec<f32>> = all_scores
            .chunks(classes.max(1))
            .map(<[f32]>::to_vec)
            .collect();
        // A refused query still counts for extraction: probing is a pattern even when it is not answered.
        let mut rejected = None;
        // The detector's search finds each row's nearest reference rows, and the extraction monitor needs the nearest
        // (same reference): as it is when the detector saw the rows as sent; when a sanitiser changed them, most
        // often among those rows, else from the start of a short search.
        let mut nearest = None;
        if let Some(detector) = &d.detector {
            match detector.assess_scores(&self.values, &score_rows) {
                Ok(mut verdicts) => {
                    if verdicts.len() == self.rows {
                        nearest = Some(if self.sent.is_none() {
                            Nearest::Found(
                                verdicts
                                    .iter()
                                    .map(|v| v.neighbours.first().copied())
                                    .collect(),
                            )
                        } else {
                            Nearest::Around(
                                verdicts
                                    .iter_mut()
                                    .map(|v| std::mem::take(&mut v.neighbours))
                                    .collect(),
                            )
                        });
                    }
                    let flagged = verdicts.iter().filter(|v| v.adversarial).count();
                    audit.detector_score = verdicts.iter().map(|v| v.score).reduce(f64::max);
                    audit.detector_threshold = detector.calibration().map(|c| c.threshold);
                    audit.adversarial_rows = Some(flagged);
                    if flagged > 0 {
                        if detector.config().action == detect::Action::Reject {
                            d.count(metrics, "detector", "rejected");
                            rejected = Some(Refusal::new(
                                "detector",
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "adversarial_input",
                                "the input looks adversarial",
                            ));
                        } else {
                            d.count(metrics, "detector", "flagged");
                            headers.push((
                                HeaderName::from_static("x-rampart-flag"),
                                HeaderValue::from_static("adversarial"),
                            ));
                        }
                    } else {
                        d.count(metrics, "detector", "passed");
                    }
                }
                Err(err) => d.undecided("detector", &err, audit, metrics)?,
            }
        } else if all_rows != self.rows {
            let err = model_error(format!("{all_rows} score rows for {} rows", self.rows));
            d.undecided("infer", &err, audit, metrics)?;
        }
        let mine: Vec<Vec<f32>> = score_rows.into_iter().take(self.rows).collect();
        Ok(Assessed::Weighed(Weighed {
            pending: self,
            outputs,
            index,
            mine,
            nearest,
            rejected,
        }))
    }
}

impl<'a> Weighed<'a> {
    /// This request's turn at the extraction monitor ([`ExtractionStage::turn`]): [`Weighed::observe`] is to run in
    /// it, and nothing else needs to; `None` without an extraction stage.
    pub async fn extraction_turn(&self) -> Option<tokio::sync::MutexGuard<'a, ()>> {
        let stage: &'a ExtractionStage = self.pending.defences.extraction.as_deref()?;
        stage.turn(&self.pending.principal).await
    }

    /// The extraction monitor's stage: the rows as evidence (a query the detector refused included), and the
    /// monitor's decision. Runs once; in the principal's turn ([`Weighed::extraction_turn`]).
    pub fn observe(
        &mut self,
        audit: &mut Option<DefendAudit>,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let audit = audit.get_or_insert_with(DefendAudit::default);
        let Some(stage) = &self.pending.defences.extraction else {
            return Ok(());
        };
        let nearest = self.nearest.take();
        self.pending
            .observe(stage, &self.mine, nearest, audit, metrics)
    }

    /// The last output stages: the detector's refusal, the watermark, hardening. Returns the tensors to answer with
    /// and whether the client's list of wanted outputs still applies (not after hardening renames them).
    pub fn finish(
        self,
        audit: &mut Option<DefendAudit>,
        metrics: &Metrics,
    ) -> Result<(Vec<Tensor>, bool), Refusal> {
        let audit = audit.get_or_insert_with(DefendAudit::default);
        let Weighed {
            pending,
            mut outputs,
            index,
            mut mine,
            nearest: _,
            rejected,
        } = self;
        let d = pending.defences;
        let model_error = |message: String| DefendError::Model(message);
        if let Some(refused) = rejected {
            return Err(refused);
        }
        if let Some(watermark) = &d.watermark {
            let mut marked = 0;
            for (row, scores) in pending.sent().chunks_exact(d.width).zip(mine.iter_mut()) {
                let mark = watermark.apply(row, scores);
                marked += usize::from(matches!(mark, Mark::Watermarked { .. }));
                if let (Some(record), Some(label)) = (&d.record, mark.kept_label()) {
                    if !record.record(&pending.principal, label, row) {
                        d.count(metrics, "watermark", "record_dropped");
                    }
                }
            }
            audit.watermark_key = Some(watermark.key_id());
            audit.watermarked_rows = Some(marked);
            if marked > 0 {
                d.count(metrics, "watermark", "applied");
            }
            if let Some(t) = index.and_then(|i| outputs.get_mut(i)) {
                let flat: Vec<f32> = mine.iter().flatten().copied().collect();
                t.data = match t.data {
                    TensorData::Fp64(_) => {
                        TensorData::Fp64(flat.iter().map(|&v| f64::from(v)).collect())
                    }
                    _ => TensorData::Fp32(flat),
                };
            }
        }
        if let Some(harden) = &d.harden {
            let roles: Vec<&str> = pending.roles.iter().map(String::as_str).collect();
            let policy = harden.policy_for(&roles);
            audit.hardening = Some(match policy {
                rampart_defend::harden::OutputPolicy::Full { .. } => "full",
                rampart_defend::harden::OutputPolicy::TopK { .. } => "top_k",
                rampart_defend::harden::OutputPolicy::LabelOnly => "label_only",
            });
            let scores = index.and_then(|i| outputs.get(i));
            match scores.map(|s| policy.apply(s)) {
                Some(Ok(hardened)) => return Ok((hardened, false)),
                Some(Err(err)) => d.undecided("harden", &err, audit, metrics)?,
                None => d.undecided("harden", &model_error("no scores".into()), audit, metrics)?,
            }
            // Failed open: never the raw scores; the label alone.
            let label_only = rampart_defend::harden::OutputPolicy::LabelOnly;
            if let Some(Ok(hardened)) = index
                .and_then(|i| outputs.get(i))
                .map(|s| label_only.apply(s))
            {
                return Ok((hardened, false));
            }
            return Err(Refusal::new(
                "harden",
                StatusCode::SERVICE_UNAVAILABLE,
                "defence_undecided",
                "the answer could not be hardened",
            ));
        }
        Ok((outputs, true))
    }
}

/// Keeps the first `rows` rows of a tensor whose first dimension is the batch.
fn keep_rows(tensor: &mut Tensor, rows: usize) {
    let Some(&batch) = tensor.shape.first() else {
        return;
    };
    if batch <= rows || batch == 0 {
        return;
    }
    let per_row = tensor.data.len() / batch;
    let keep = rows * per_row;
    match &mut tensor.data {
        TensorData::Bool(v) => v.truncate(keep),
        TensorData::Uint8(v) => v.truncate(keep),
        TensorData::Int32(v) => v.truncate(keep),
        TensorData::Int64(v) => v.truncate(keep),
        TensorData::Fp32(v) => v.truncate(keep),
        TensorData::Fp64(v) => v.truncate(keep),
        TensorData::Bytes(v) => v.truncate(keep),
    }
    if let Some(first) = tensor.shape.first_mut() {
        *first = rows;
    }
}
