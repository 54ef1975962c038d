//! What an attack talks to: a [`Scorer`] answers class scores for a batch of flat examples. The differentiable
//! [`Engine`] is one; any `rampart_infer::Model` (tract in process, a KServe v2 URL) is another, through
//! [`InferScorer`].

use std::sync::atomic::{AtomicU64, Ordering};

use rampart_infer::{DataType, Model, Tensor, TensorData};

use crate::engine::Engine;
use crate::error::{EvalError, Result};

/// A classifier that scores batches of flat examples (`[n, features]` row-major in, `[n, classes]` out).
pub trait Scorer: Sync {
    /// Features per example.
    fn features(&self) -> usize;
    /// Classes scored.
    fn classes(&self) -> usize;
    /// Scores (logits or probabilities) for a batch.
    fn scores(&self, x: &[f32]) -> Result<Vec<f32>>;
}

impl Scorer for Engine {
    fn features(&self) -> usize {
        Engine::features(self)
    }
    fn classes(&self) -> usize {
        Engine::classes(self)
    }
    fn scores(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.logits(x)
    }
}

/// The largest batch sent in one request.
pub const MAX_BATCH: usize = 256;

/// A `rampart_infer::Model` seen as a [`Scorer`]: one FP32 input, the first output as scores. Counts its queries.
#[derive(Debug)]
pub struct InferScorer<M: Model> {
    model: M,
    input: String,
    input_shape: Vec<usize>,
    output: String,
    classes: usize,
    queries: AtomicU64,
}

impl<M: Model> InferScorer<M> {
    /// Wraps a model, reading its metadata; `features` (from the data) fills an input shape of `[-1, -1]`.
    pub fn new(model: M, features: usize) -> Result<InferScorer<M>> {
        let meta = model.metadata().clone();
        let [input] = meta.inputs.as_slice() else {
            return Err(EvalError::Mismatch(format!(
                "the model has {} inputs; attacks need exactly one",
                meta.inputs.len()
            )));
        };
        if input.datatype != DataType::Fp32 {
            return Err(EvalError::Mismatch(format!(
                "input `{}` is {}, attacks need FP32",
                input.name,
                input.datatype.as_str()
            )));
        }
        let output = meta
            .outputs
            .first()
            .ok_or_else(|| EvalError::Mismatch("the model declares no output".into()))?
            .name
            .clone();
        let rest = input.shape.get(1..).unwrap_or(&[]);
        let input_shape: Vec<usize> = if rest.iter().all(|&d| d > 0) && !rest.is_empty() {
            rest.iter().map(|&d| d as usize).collect()
        } else if rest.len() <= 1 {
            vec![features]
        } else {
            return Err(EvalError::Mismatch(format!(
                "input `{}` has the shape {:?} with free dimensions besides the batch; attacks need them fixed",
                input.name, input.shape
            )));
        };
        let declared: usize = input_shape.iter().product();
        if declared != features {
            return Err(EvalError::Mismatch(format!(
                "the model's input `{}` takes {declared} values per example ({:?}), the data has {features} feature columns",
                input.name, input.shape
            )));
        }
        let mut scorer = InferScorer {
            model,
            input: input.name.clone(),
            input_shape,
            output,
            classes: 0,
            queries: AtomicU64::new(0),
        };
        let probe = scorer.scores(&vec![0.0; features])?;
        scorer.classes = probe.len();
        scorer.queries.store(0, Ordering::Relaxed);
        if scorer.classes < 2 {
            return Err(EvalError::Mismatch(
                "the model must score at least two classes".into(),
            ));
        }
        Ok(scorer)
    }

    /// Examples sent to the model so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// The input's shape without the batch dimension.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    fn batch(&self, x: &[f32]) -> Result<Vec<f32>> {
        let f = self.features();
        let n = x.len() / f;
        let mut shape = vec![n];
        shape.extend_from_slice(&self.input_shape);
        let tensor = Tensor::new(self.input.clone(), shape, TensorData::Fp32(x.to_vec()))?;
        let outputs = self.model.infer(&[tensor])?;
        self.queries.fetch_add(n as u64, Ordering::Relaxed);
        let out = outputs
            .into_iter()
            .find(|t| t.name == self.output)
            .ok_or_else(|| {
                EvalError::Mismatch(format!("the answer has no output `{}`", self.output))
            })?;
        let values: Vec<f32> = match out.data {
            TensorData::Fp32(v) => v,
            TensorData::Fp64(v) => v.into_iter().map(|v| v as f32).collect(),
            _ => {
                return Err(EvalError::Mismatch(format!(
                    "output `{}` is {}, attacks need FP32 or FP64 scores",
                    self.output,
                    out.datatype().as_str()
                )))
            }
        };
        if n == 0 || values.len() % n != 0 || out.shape.first() != Some(&n) {
            return Err(EvalError::Mismatch(format!(
                "output `{}` has the shape {:?} for {n} examples; attacks need [N, classes]",
                self.output, out.shape
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(EvalError::Mismatch(format!(
                "output `{}` holds a value that is not finite",
                self.output
            )));
        }
        Ok(values)
    }
}

impl<M: Model> Scorer for InferScorer<M> {
    fn features(&self) -> usize {
        self.input_shape.iter().product()
    }
    fn classes(&self) -> usize {
        self.classes
    }
    fn scores(&self, x: &[f32]) -> Result<Vec<f32>> {
        let f = self.features();
        let mut out = Vec::with_capacity(x.len() / f.max(1) * self.classes.max(1));
        for chunk in x.chunks(f * MAX_BATCH) {
            let part = self.batch(chunk)?;
            if self.classes != 0 && part.len() != chunk.len() / f * self.classes {
                return Err(EvalError::Mismatch(
                    "the model changed its number of classes between answers".into(),
                ));
            }
            out.extend(part);
        }
        Ok(out)
    }
}

/// The index of the largest score in each row of `k`.
pub fn argmax_rows(scores: &[f32], k: usize) -> Vec<usize> {
    scores
        .chunks_exact(k.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// The fraction of rows whose top class is the label.
pub fn accuracy(scores: &[f32], k: usize, labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let hits = argmax_rows(scores, k)
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    hits as f64 / labels.len() as f64
}
