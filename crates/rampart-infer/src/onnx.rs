//! ONNX models run in process by tract.

use std::path::Path;

use std::sync::{Arc, Mutex};

use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TDim, TValue, TVec,
    TypedModel, TypedRunnableModel, TypedSimpleState,
};

use crate::{DataType, InferError, Model, ModelMetadata, Tensor, TensorData, TensorSpec};

type Plan = Arc<TypedRunnableModel>;

/// An ONNX model loaded into tract, optimised once at load.
#[derive(Debug)]
pub struct OnnxModel {
    metadata: ModelMetadata,
    plan: Plan,
    /// Run states kept between requests: a fresh state per run costs more than a small model's arithmetic (its
    /// session, its per-op states and its matrix scratch space). A state whose run failed is dropped, not kept.
    states: Mutex<Vec<TypedSimpleState>>,
}

/// States kept at most; more concurrent runs than this make (and then drop) their own.
const MAX_IDLE_STATES: usize = 16;

impl OnnxModel {
    /// Loads an ONNX file. `name` is the name clients use for the model.
    pub fn from_path(name: &str, path: &Path) -> Result<OnnxModel, InferError> {
        let bytes = std::fs::read(path).map_err(|err| InferError::Load {
            name: name.to_owned(),
            reason: format!("cannot read `{}`: {err}", path.display()),
        })?;
        OnnxModel::from_bytes(name, &bytes)
    }

    /// Loads an ONNX model from memory (a model decrypted in memory is never written to disk).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<OnnxModel, InferError> {
        let load = |reason: String| InferError::Load {
            name: name.to_owned(),
            reason,
        };
        let model = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(bytes))
            .map_err(|err| load(format!("not a valid ONNX model: {err:#}")))?;
        let typed = model
            .into_typed()
            .map_err(|err| load(format!("cannot type the graph: {err:#}")))?;
        let inputs = io_specs(
            &typed,
            typed.input_outlets().map_err(|e| load(e.to_string()))?,
        )
        .map_err(load)?;
        let outputs = io_specs(
            &typed,
            typed.output_outlets().map_err(|e| load(e.to_string()))?,
        )
        .map_err(load)?;
        let plan = typed.into_optimized().and_then(|m| m.into_runnable());
        // Optimising folds constants with tract's kernels.
        crate::vector_state::clear();
        let plan = plan.map_err(|err| load(format!("cannot optimise the graph: {err:#}")))?;
        let metadata = ModelMetadata {
            name: name.to_owned(),
            versions: Vec::new(),
            platform: "onnx".to_owned(),
            inputs,
            outputs,
        };
        Ok(OnnxModel {
            metadata,
            plan,
            states: Mutex::new(Vec::new()),
        })
    }
}

fn io_specs(
    model: &TypedModel,
    outlets: &[tract_onnx::prelude::OutletId],
) -> Result<Vec<TensorSpec>, String> {
    outlets
        .iter()
        .map(|outlet| {
            let fact = model.outlet_fact(*outlet).map_err(|e| e.to_string())?;
            let node = model.node(outlet.node);
            let name = model.outlet_label(*outlet).unwrap_or(&node.name).to_owned();
            let datatype = match fact.datum_type {
                DatumType::F32 => DataType::Fp32,
                DatumType::F64 => DataType::Fp64,
                DatumType::I64 => DataType::Int64,
                DatumType::I32 => DataType::Int32,
                DatumType::U8 => DataType::Uint8,
                DatumType::Bool => DataType::Bool,
                other => {
                    return Err(format!(
                        "tensor `{name}` has the unsupported type {other:?}"
                    ))
                }
            };
            let shape = fact
                .shape
                .iter()
                .map(|dim| match dim {
                    TDim::Val(v) => *v,
                    _ => -1,
                })
                .collect();
            Ok(TensorSpec {
                name,
                datatype,
                shape,
            })
        })
        .collect()
}

fn to_tract(tensor: &Tensor) -> Result<TValue, InferError> {
    let bad = |err: tract_onnx::prelude::TractError| {
        InferError::InvalidInput(format!("tensor `{}`: {err}", tensor.name))
    };
    let shape = &tensor.shape;
    let t = match &tensor.data {
        TensorData::Fp32(v) => tract_onnx::prelude::Tensor::from_shape(shape, v).map_err(bad)?,
        TensorData::Fp64(v) => tract_onnx::prelude::Tensor::from_shape(shape, v).map_err(bad)?,
        TensorData::Int64(v) => tract_onnx::prelude::Tensor::from_shape(shape, v).map_err(bad)?,
        TensorData::Int32(v) => tract_onnx::prelude::Tensor::from_shape(shape, v).map_err(bad)?,
        TensorData::Uint8(v) => tract_onnx::prelude::Tensor::from_shape(shape, v).map_err(bad)?,
        TensorData::Bool(v) => tract_onnx::prelude::Tensor::from_shape(shape, v).map_err(bad)?,
        TensorData::Bytes(_) => {
            return Err(InferError::InvalidInput(format!(
                "tensor `{}`: BYTES inputs are not supported by ONNX models",
                tensor.name
            )))
        }
    };
    Ok(t.into_tvalue())
}

fn from_tract(name: &str, value: &TValue) -> Result<Tensor, InferError> {
    let runtime = |err: tract_onnx::prelude::TractError| {
        InferError::Runtime(format!("output `{name}`: {err}"))
    };
    let shape = value.shape().to_vec();
    let data = match value.datum_type() {
        DatumType::F32 => TensorData::Fp32(
            value
                .to_plain_array_view::<f32>()
                .map_err(runtime)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::F64 => TensorData::Fp64(
            value
                .to_plain_array_view::<f64>()
                .map_err(runtime)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::I64 => TensorData::Int64(
            value
                .to_plain_array_view::<i64>()
                .map_err(runtime)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::I32 => TensorData::Int32(
            value
                .to_plain_array_view::<i32>()
                .map_err(runtime)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::U8 => TensorData::Uint8(
            value
                .to_plain_array_view::<u8>()
                .map_err(runtime)?
                .iter()
                .copied()
                .collect(),
        ),
        DatumType::Bool => TensorData::Bool(
            value
                .to_plain_array_view::<bool>()
                .map_err(runtime)?
                .iter()
                .copied()
                .collect(),
        ),
        other => {
            return Err(InferError::Runtime(format!(
                "output `{name}` has the unsupported type {other:?}"
            )))
        }
    };
    Tensor::new(name, shape, data)
}

impl Model for OnnxModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
        let mut values: TVec<TValue> = tvec![];
        for spec in &self.metadata.inputs {
            let tensor = inputs.iter().find(|t| t.name == spec.name).ok_or_else(|| {
                InferError::InvalidInput(format!("missing input `{}`", spec.name))
            })?;
            spec.check(tensor)?;
            values.push(to_tract(tensor)?);
        }
        if inputs.len() != self.metadata.inputs.len() {
            return Err(InferError::InvalidInput(format!(
                "the model takes {} input(s), the request has {}",
                self.metadata.inputs.len(),
                inputs.len()
            )));
        }
        let runtime =
            |err: tract_onnx::prelude::TractError| InferError::Runtime(format!("{err:#}"));
        let idle = self.states.lock().ok().and_then(|mut states| states.pop());
        let mut state = match idle {
            Some(state) => state,
            None => self.plan.spawn().map_err(runtime)?,
        };
        let outputs = state.run(values);
        crate::vector_state::clear();
        let outputs = outputs.map_err(runtime)?;
        if let Ok(mut states) = self.states.lock() {
            if states.len() < MAX_IDLE_STATES {
                states.push(state);
            }
        }
        self.metadata
            .outputs
            .iter()
            .zip(outputs.iter())
            .map(|(spec, value)| from_tract(&spec.name, value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> OnnxModel {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/model/model.onnx");
        OnnxModel::from_path("digits", &path).unwrap()
    }

    #[test]
    fn digits_metadata_names_its_tensors() {
        let model = digits();
        let meta = model.metadata();
        assert_eq!(meta.inputs[0].name, "input");
        assert_eq!(meta.inputs[0].datatype, DataType::Fp32);
        assert_eq!(meta.inputs[0].shape, vec![-1, 64]);
        assert_eq!(meta.outputs[0].name, "logits");
    }

    #[test]
    fn digits_classifies_the_test_split_as_recorded() {
        let model = digits();
        let csv = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/test.csv"),
        )
        .unwrap();
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for line in csv.lines().skip(1) {
            let values: Vec<f32> = line.split(',').map(|v| v.parse().unwrap()).collect();
            labels.push(values[64] as usize);
            rows.extend_from_slice(&values[..64]);
        }
        let n = labels.len();
        let input = Tensor::new("input", vec![n, 64], TensorData::Fp32(rows)).unwrap();
        let out = model.infer(&[input]).unwrap();
        let TensorData::Fp32(logits) = &out[0].data else {
            panic!("logits are FP32")
        };
        assert_eq!(out[0].shape, vec![n, 10]);
        let correct = logits
            .chunks(10)
            .zip(&labels)
            .filter(|(row, &label)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap()
                    .0;
                best == label
            })
            .count();
        let accuracy = correct as f64 / n as f64;
        assert!((accuracy - 0.9733).abs() < 0.001, "accuracy {accuracy}");
    }

    #[test]
    fn garbage_bytes_are_a_load_error() {
        assert!(matches!(
            OnnxModel::from_bytes("x", b"not onnx"),
            Err(InferError::Load { .. })
        ));
    }

    #[test]
    fn a_wrong_shape_is_the_clients_error() {
        let model = digits();
        let input = Tensor::new("input", vec![1, 63], TensorData::Fp32(vec![0.0; 63])).unwrap();
        assert!(matches!(
            model.infer(&[input]),
            Err(InferError::InvalidInput(_))
        ));
    }
}
