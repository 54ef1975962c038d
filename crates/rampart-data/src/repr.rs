//! Representations for the poisoning check: the numeric features themselves, a file of vectors (one row per data
//! row), or the activations of an ONNX model's penultimate layer (feature `onnx`, through tract).

use std::path::Path;

use crate::error::{DataError, Result};
use crate::load::{self, Format};
use crate::matrix::Matrix;

/// Read a matrix of numbers (CSV with header, JSONL, Parquet): every cell must be a finite number. Keeps the first
/// `keep` rows and returns them with the number of rows in the file, which the caller checks against the data.
pub fn read_matrix(path: &Path, format: Option<Format>, keep: usize) -> Result<(Matrix, u64)> {
    let mut source = load::open(path, format)?;
    let cols = source.columns().len();
    let names = source.columns().to_vec();
    let mut data = Vec::new();
    let mut rows = 0usize;
    let mut total = 0u64;
    let mut row = load::Row::default();
    while source.next_row(&mut row)? {
        total += 1;
        if row.len() != cols {
            return Err(DataError::parse(
                path,
                row.line(),
                None,
                format!("{} values where the header has {cols}", row.len()),
            ));
        }
        for (c, cell) in row.cells().enumerate() {
            let value = cell
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    DataError::parse(
                        path,
                        row.line(),
                        names.get(c).map(String::as_str),
                        "expected a finite number",
                    )
                })?;
            if rows < keep {
                data.push(value);
            }
        }
        if rows < keep {
            rows += 1;
        }
    }
    let matrix = Matrix::from_vec(rows, cols, data).ok_or_else(|| DataError::Shape {
        path: path.to_path_buf(),
        message: "rows of unequal width".into(),
    })?;
    Ok((matrix, total))
}

/// Activations of the layer before the model's output (softmax and identity outputs are looked through).
#[cfg(feature = "onnx")]
pub fn penultimate(model_path: &Path, features: &Matrix) -> Result<Matrix> {
    use tract_onnx::prelude::*;
    let err = |message: String| DataError::Model {
        path: model_path.to_path_buf(),
        message,
    };
    let mut model = tract_onnx::onnx()
        .model_for_path(model_path)
        .map_err(|e| err(format!("cannot load ONNX: {e}")))?;
    let output = *model
        .output_outlets()
        .map_err(|e| err(e.to_string()))?
        .first()
        .ok_or_else(|| err("the model has no output".into()))?;
    let mut node = model.node(output.node);
    // Look through output-only ops to the node that computes the logits.
    for _ in 0..4 {
        let name = node.op.name();
        if !(name.contains("Softmax")
            || name.contains("Sigmoid")
            || name.contains("Identity")
            || name.contains("LogSoftmax"))
        {
            break;
        }
        let Some(input) = node.inputs.first() else {
            break;
        };
        node = model.node(input.node);
    }
    let penultimate = *node.inputs.first().ok_or_else(|| {
        err(format!(
            "output node `{}` has no input to cut at",
            node.name
        ))
    })?;
    let cut_name = model.node(penultimate.node).name.clone();
    model
        .select_output_outlets(&[penultimate])
        .map_err(|e| err(e.to_string()))?;
    let batch = 256usize;
    let d = features.cols();
    let shape = input_shape(&model, batch, d).map_err(err)?;
    model
        .set_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), shape.clone()))
        .map_err(|e| err(e.to_string()))?;
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(|e| {
            err(format!(
                "cannot prepare the model for {d} input features: {e}"
            ))
        })?;
    tracing::debug!(cut = %cut_name, "taking representations from the penultimate layer");
    let mut out: Vec<f64> = Vec::new();
    let mut width = 0usize;
    let mut start = 0usize;
    while start < features.rows() {
        let end = (start + batch).min(features.rows());
        let mut input = vec![0f32; batch * d];
        for (i, chunk) in (start..end).zip(input.chunks_exact_mut(d.max(1))) {
            for (dst, src) in chunk.iter_mut().zip(features.row(i)) {
                *dst = *src as f32;
            }
        }
        let tensor = Tensor::from_shape(&shape, &input).map_err(|e| err(e.to_string()))?;
        let result = plan
            .run(tvec!(tensor.into()))
            .map_err(|e| err(format!("inference failed: {e}")))?;
        let first = result.first().ok_or_else(|| err("no output".into()))?;
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| err(e.to_string()))?;
        let per_row: usize = view.shape().iter().skip(1).product();
        width = per_row;
        let flat: Vec<f32> = view.iter().copied().collect();
        for row in flat.chunks_exact(per_row.max(1)).take(end - start) {
            out.extend(row.iter().map(|&v| f64::from(v)));
        }
        start = end;
    }
    Matrix::from_vec(features.rows(), width, out)
        .ok_or_else(|| err("unexpected activation shape".into()))
}

/// The input shape to run `batch` rows of `d` features: `[batch, d]`, or the model's own shape with the batch first
/// when it declares one of `d` values per row (an image model's `[N, 1, 8, 8]` for 64 pixels).
#[cfg(feature = "onnx")]
fn input_shape(
    model: &tract_onnx::prelude::InferenceModel,
    batch: usize,
    d: usize,
) -> std::result::Result<Vec<usize>, String> {
    use tract_onnx::tract_hir::infer::Factoid;
    let fact = model.input_fact(0).map_err(|e| e.to_string())?;
    let declared: Option<Vec<usize>> = fact
        .shape
        .dims()
        .skip(1)
        .map(|dim| {
            dim.concretize()
                .and_then(|v| v.to_i64().ok())
                .and_then(|v| usize::try_from(v).ok())
        })
        .collect();
    match declared {
        Some(dims) if fact.shape.rank().concretize().is_some() && !dims.is_empty() => {
            let per_row: usize = dims.iter().product();
            if per_row != d {
                return Err(format!(
                    "its input takes {per_row} values per row ({}); the data has {d} numeric feature columns",
                    dims.iter().map(usize::to_string).collect::<Vec<_>>().join(" x ")
                ));
            }
            Ok(std::iter::once(batch).chain(dims).collect())
        }
        _ => Ok(vec![batch, d]),
    }
}

/// Without the `onnx` feature the model cannot be run.
#[cfg(not(feature = "onnx"))]
pub fn penultimate(model_path: &Path, _features: &Matrix) -> Result<Matrix> {
    Err(DataError::FeatureMissing {
        path: model_path.to_path_buf(),
        format: "ONNX",
        feature: "onnx",
    })
}
