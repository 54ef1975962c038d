//! ONNX models run in process by tract.

use std::collections::HashMap;
use std::path::Path;

use std::sync::{Arc, Mutex};

use tract_onnx::prelude::{
    tvec, DatumType, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Symbol, TDim, TValue,
    TVec, TypedModel, TypedRunnableModel, TypedSimpleState,
};

use crate::{DataType, InferError, Model, ModelMetadata, Tensor, TensorData, TensorSpec};

type Plan = Arc<TypedRunnableModel>;

/// An ONNX model loaded into tract, optimised once at load.
#[derive(Debug)]
pub struct OnnxModel {
    metadata: ModelMetadata,
    /// The plan for inputs of any batch size.
    plan: Runner,
    /// Plans for batches of `SMALLEST_SPECIALISED..=SPECIALISED` rows, when every input's first dimension is the one
    /// symbolic batch dimension and the model is small ([`SPECIALISE_UP_TO_BYTES`]): with the batch size known when
    /// it optimises, tract chooses its kernels and sizes its buffers once rather than on every run. On the digits MLP
    /// a batch of three rows (one row and a detector's two squeezed copies) ran in 3.9 µs instead of 5.4 µs.
    by_batch: Vec<Runner>,
}

/// A plan and its run states, kept between requests: a fresh state per run costs more than a small model's
/// arithmetic (its session, its per-op states and its matrix scratch space). A state whose run failed is dropped, not
/// kept.
#[derive(Debug)]
struct Runner {
    plan: Plan,
    states: Mutex<Vec<TypedSimpleState>>,
}

impl Runner {
    fn new(plan: Plan) -> Runner {
        Runner {
            plan,
            states: Mutex::new(Vec::new()),
        }
    }

    fn run(&self, values: TVec<TValue>) -> Result<TVec<TValue>, InferError> {
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
        Ok(outputs)
    }
}

/// States kept at most per plan; more concurrent runs than this make (and then drop) their own.
const MAX_IDLE_STATES: usize = 16;

/// Batch sizes with a plan of their own: up to one row with three squeezed copies. Not one row alone: tract's plan
/// for a batch of one ran as fast as the general plan in a loop of its own, but in the gateway, among everything else
/// a request does, it cost 2.5 µs more (the gateway of bench/defend-gateway.sh without defences: 31.4 against 28.7 µs
/// of CPU a request).
const SMALLEST_SPECIALISED: usize = 2;
const SPECIALISED: usize = 4;

/// Models up to this size (the ONNX file) get plans per batch size; each is a copy of the weights as tract lays them
/// out, and an optimisation at load. The gain is tract's fixed cost per run, which only counts for small models: for
/// a batch of three rows, 5.1 against 6.6 µs on a 100 KiB MLP, 15.4 against 15.7 µs on a 0.9 MiB one (which pays
/// 3 MiB more memory and 3 ms more load for it); a 15 MiB MLP would hold 40 MiB more and gain nothing measurable.
const SPECIALISE_UP_TO_BYTES: usize = 1 << 20;

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
        let by_batch = if bytes.len() <= SPECIALISE_UP_TO_BYTES {
            batch_symbol(&typed)
                .map(|batch| specialise(name, &typed, &batch))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
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
            plan: Runner::new(plan),
            by_batch,
        })
    }

    /// The plan for a run on `inputs`: the one for their batch size if there is one.
    fn runner(&self, inputs: &[Tensor]) -> &Runner {
        inputs
            .first()
            .and_then(|t| t.shape.first())
            .and_then(|&rows| rows.checked_sub(SMALLEST_SPECIALISED))
            .and_then(|i| self.by_batch.get(i))
            .unwrap_or(&self.plan)
    }
}

/// The symbol of the batch dimension: the only symbol in the inputs' shapes, and the whole first dimension of each.
fn batch_symbol(model: &TypedModel) -> Option<Symbol> {
    let mut batch: Option<&Symbol> = None;
    for outlet in model.input_outlets().ok()? {
        let fact = model.outlet_fact(*outlet).ok()?;
        let (first, rest) = fact.shape.dims().split_first()?;
        let TDim::Sym(symbol) = first else {
            return None;
        };
        if rest.iter().any(|d| !matches!(d, TDim::Val(_))) || *batch.get_or_insert(symbol) != symbol
        {
            return None;
        }
    }
    batch.cloned()
}

/// Plans for batches of `SMALLEST_SPECIALISED..=SPECIALISED` rows; none if tract cannot make one (the general plan
/// then serves all). They are an optimisation only: an error, or a panic inside tract on a graph it optimised in
/// general but not for one batch size, leaves the model served by its general plan rather than refused (and logged:
/// small batches then run slower, which an operator should be able to explain).
fn specialise(name: &str, model: &TypedModel, batch: &Symbol) -> Vec<Runner> {
    // Unwind-safe in effect: the graph is only read; what a panic leaves half-built is the new plan, which is dropped,
    // and the symbol table the copies share sits behind a lock whose guard the unwinding releases.
    let plans = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (SMALLEST_SPECIALISED..=SPECIALISED)
            .map(|rows| {
                let subs = HashMap::from([(batch.clone(), TDim::Val(rows as i64))]);
                let plan = model
                    .set_symbols(&subs)
                    .and_then(|m| m.into_optimized())
                    .and_then(|m| m.into_runnable());
                crate::vector_state::clear();
                plan.map(Runner::new)
            })
            .collect::<Result<Vec<Runner>, _>>()
    }));
    match plans {
        Ok(Ok(plans)) => plans,
        Ok(Err(err)) => {
            tracing::warn!(model = name, error = %format!("{err:#}"), "no plan per batch size: every batch runs on the general plan");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(
                model = name,
                "tract panicked planning per batch size: every batch runs on the general plan"
            );
            Vec::new()
        }
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
        let outputs = self.runner(inputs).run(values)?;
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
    fn plans_per_batch_size_answer_as_the_general_plan() {
        let model = digits();
        assert_eq!(model.by_batch.len(), SPECIALISED + 1 - SMALLEST_SPECIALISED);
        let csv = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/test.csv"),
        )
        .unwrap();
        let rows: Vec<f32> = csv
            .lines()
            .skip(1)
            .take(SPECIALISED + 2)
            .flat_map(|line| {
                line.split(',')
                    .take(64)
                    .map(|v| v.parse::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        for n in 1..=SPECIALISED + 2 {
            let input = Tensor::new(
                "input",
                vec![n, 64],
                TensorData::Fp32(rows[..n * 64].to_vec()),
            )
            .unwrap();
            let runner = model.runner(std::slice::from_ref(&input));
            match model.by_batch.get(n.wrapping_sub(SMALLEST_SPECIALISED)) {
                Some(own) => assert!(std::ptr::eq(runner, own), "batch {n} has a plan of its own"),
                None => assert!(
                    std::ptr::eq(runner, &model.plan),
                    "batch {n} takes the general plan"
                ),
            }
            let out = model.infer(std::slice::from_ref(&input)).unwrap();
            let general = model.plan.run(tvec![to_tract(&input).unwrap()]).unwrap();
            let general = from_tract("logits", &general[0]).unwrap();
            assert_eq!(out[0].shape, vec![n, 10]);
            let (TensorData::Fp32(a), TensorData::Fp32(b)) = (&out[0].data, &general.data) else {
                panic!("logits are FP32")
            };
            // Other kernels may sum in another order: equal to rounding.
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "batch {n}: {x} against {y}"
                );
            }
        }
        // A wrong shape is still refused with a plan per batch size.
        let input = Tensor::new("input", vec![3, 63], TensorData::Fp32(vec![0.0; 189])).unwrap();
        assert!(matches!(
            model.infer(&[input]),
            Err(InferError::InvalidInput(_))
        ));
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
