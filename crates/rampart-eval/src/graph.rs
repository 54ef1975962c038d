//! An ONNX graph read into the differentiable engine's form: constants (initializers and `Constant` nodes) and a
//! list of operations in topological order, each naming the values it reads and writes.
//!
//! The protobuf is decoded with the prost types that `tract-onnx` ships (`tract_onnx::pb`); nothing here runs tract.

use std::collections::HashMap;

use prost::Message;
use tract_onnx::pb;

use crate::error::{EvalError, Result};

/// The largest ONNX file the engine reads (the digits models are a few hundred KiB).
pub const MAX_MODEL_BYTES: usize = 512 * 1024 * 1024;
/// The largest tensor (in elements) a constant may declare.
const MAX_CONSTANT_ELEMENTS: usize = 64 * 1024 * 1024;

/// A constant tensor: shape and row-major elements (integers are stored as `f32` where they are used as data and
/// kept as `i64` in `ints` for shape operands).
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Its elements as `f32`.
    pub data: Vec<f32>,
    /// Its elements as `i64` when the tensor is an integer tensor.
    pub ints: Option<Vec<i64>>,
}

/// One operation of the graph. Operands are indices into the graph's value table.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `Y = alpha * A' B' + beta * C`.
    Gemm {
        /// Scale of the product.
        alpha: f32,
        /// Scale of `C`.
        beta: f32,
        /// Whether `A` is transposed.
        trans_a: bool,
        /// Whether `B` is transposed.
        trans_b: bool,
    },
    /// Matrix product of a `[.., K]` tensor with a `[K, N]` matrix.
    MatMul,
    /// Element-wise sum with broadcasting.
    Add,
    /// `max(x, 0)`.
    Relu,
    /// 2-D convolution (NCHW).
    Conv {
        /// Stride along H and W.
        strides: [usize; 2],
        /// Padding: top, left, bottom, right.
        pads: [usize; 4],
        /// Dilation along H and W.
        dilations: [usize; 2],
    },
    /// 2-D max pooling (NCHW).
    MaxPool {
        /// Kernel height and width.
        kernel: [usize; 2],
        /// Stride along H and W.
        strides: [usize; 2],
        /// Padding: top, left, bottom, right.
        pads: [usize; 4],
    },
    /// Flattens to 2-D at `axis`.
    Flatten {
        /// The first axis of the second dimension.
        axis: usize,
    },
    /// Reshapes to a constant shape (ONNX semantics for `0` and `-1`).
    Reshape {
        /// The target shape as declared.
        shape: Vec<i64>,
    },
    /// Softmax over the last axis.
    Softmax,
    /// Passes its input through (`Identity`, and `Dropout` at inference).
    Identity,
}

/// A node: an operation, its operand values and its output value.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The node's name (or its output's name when unnamed), for messages.
    pub name: String,
    /// What it computes.
    pub op: Op,
    /// The values it reads.
    pub inputs: Vec<usize>,
    /// The value it writes.
    pub output: usize,
}

/// A graph ready to run: one input, one output.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The value table's size.
    pub values: usize,
    /// Constants by value index.
    pub constants: HashMap<usize, Constant>,
    /// The input's value index.
    pub input: usize,
    /// The input's name.
    pub input_name: String,
    /// The input's declared shape without the batch dimension.
    pub input_shape: Vec<usize>,
    /// The output's value index.
    pub output: usize,
    /// The output's name.
    pub output_name: String,
    /// The nodes in an order where every operand is computed before it is read.
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Decodes an ONNX model's bytes.
    pub fn from_onnx(bytes: &[u8]) -> Result<Graph> {
        if bytes.len() > MAX_MODEL_BYTES {
            return Err(EvalError::Model(format!(
                "the file is {} bytes, more than the {MAX_MODEL_BYTES} this engine reads",
                bytes.len()
            )));
        }
        let model = pb::ModelProto::decode(bytes)
            .map_err(|err| EvalError::Model(format!("not a valid ONNX protobuf: {err}")))?;
        let graph = model
            .graph
            .ok_or_else(|| EvalError::Model("the model has no graph".into()))?;
        Builder::default().build(graph)
    }

    /// The number of features of one example (the product of the input's non-batch dimensions).
    pub fn features(&self) -> usize {
        self.input_shape.iter().product()
    }
}

#[derive(Default)]
struct Builder {
    ids: HashMap<String, usize>,
    constants: HashMap<usize, Constant>,
    defined: Vec<bool>,
}

impl Builder {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.ids.len();
        self.ids.insert(name.to_owned(), id);
        self.defined.push(false);
        id
    }

    fn define(&mut self, name: &str) -> Result<usize> {
        let id = self.id(name);
        match self.defined.get_mut(id) {
            Some(slot) if !*slot => {
                *slot = true;
                Ok(id)
            }
            _ => Err(EvalError::Model(format!("value `{name}` is defined twice"))),
        }
    }

    fn build(mut self, graph: pb::GraphProto) -> Result<Graph> {
        for init in &graph.initializer {
            let id = self.define(&init.name)?;
            self.constants.insert(id, constant(init)?);
        }
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|v| !graph.initializer.iter().any(|i| i.name == v.name))
            .collect();
        let [input_info] = inputs.as_slice() else {
            return Err(EvalError::Model(format!(
                "the graph has {} inputs; white-box attacks need exactly one",
                inputs.len()
            )));
        };
        let input = self.define(&input_info.name)?;
        let input_shape = input_dims(input_info)?;
        let [output_info] = graph.output.as_slice() else {
            return Err(EvalError::Model(format!(
                "the graph has {} outputs; white-box attacks need exactly one",
                graph.output.len()
            )));
        };
        let mut nodes = Vec::new();
        for node in &graph.node {
            let name = if node.name.is_empty() {
                node.output.first().cloned().unwrap_or_default()
            } else {
                node.name.clone()
            };
            if !node.domain.is_empty() && node.domain != "ai.onnx" {
                return Err(EvalError::UnsupportedOperator {
                    op: format!("{}:{}", node.domain, node.op_type),
                    node: name,
                });
            }
            let [output_name] = node.output.as_slice() else {
                return Err(unsupported(
                    node,
                    &name,
                    "only nodes with one output are supported",
                ));
            };
            if node.op_type == "Constant" {
                let id = self.define(output_name)?;
                let value = node
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| {
                        unsupported(node, &name, "only tensor constants are supported")
                    })?;
                self.constants.insert(id, constant(value)?);
                continue;
            }
            let mut operands = Vec::new();
            for operand in node.input.iter().filter(|n| !n.is_empty()) {
                let id = self.id(operand);
                if !self.defined.get(id).copied().unwrap_or(false) {
                    return Err(EvalError::Model(format!(
                        "node `{name}` reads `{operand}` before it is computed (the graph is not in topological order or the value is missing)"
                    )));
                }
                operands.push(id);
            }
            let op = self.op(node, &name, &operands)?;
            let output = self.define(output_name)?;
            nodes.push(Node {
                name,
                op,
                inputs: operands,
                output,
            });
        }
        let output = *self.ids.get(&output_info.name).ok_or_else(|| {
            EvalError::Model(format!(
                "the output `{}` is never computed",
                output_info.name
            ))
        })?;
        Ok(Graph {
            values: self.ids.len(),
            constants: self.constants,
            input,
            input_name: input_info.name.clone(),
            input_shape,
            output,
            output_name: output_info.name.clone(),
            nodes,
        })
    }

    fn op(&self, node: &pb::NodeProto, name: &str, operands: &[usize]) -> Result<Op> {
        let arity = |min: usize, max: usize| {
            if operands.len() < min || operands.len() > max {
                Err(unsupported(
                    node,
                    name,
                    &format!("takes {min} to {max} operands, has {}", operands.len()),
                ))
            } else {
                Ok(())
            }
        };
        let op = match node.op_type.as_str() {
            "Gemm" => {
                arity(2, 3)?;
                Op::Gemm {
                    alpha: attr_f(node, "alpha").unwrap_or(1.0),
                    beta: attr_f(node, "beta").unwrap_or(1.0),
                    trans_a: attr_i(node, "transA").unwrap_or(0) != 0,
                    trans_b: attr_i(node, "transB").unwrap_or(0) != 0,
                }
            }
            "MatMul" => {
                arity(2, 2)?;
                Op::MatMul
            }
            "Add" => {
                arity(2, 2)?;
                Op::Add
            }
            "Relu" => {
                arity(1, 1)?;
                Op::Relu
            }
            "Identity" | "Dropout" => {
                arity(1, 3)?;
                Op::Identity
            }
            "Flatten" => {
                arity(1, 1)?;
                let axis = attr_i(node, "axis").unwrap_or(1);
                Op::Flatten {
                    axis: usize::try_from(axis)
                        .map_err(|_| unsupported(node, name, "a negative axis is not supported"))?,
                }
            }
            "Softmax" => {
                arity(1, 1)?;
                let axis = attr_i(node, "axis").unwrap_or(-1);
                if axis != -1 && axis != 1 {
                    return Err(unsupported(
                        node,
                        name,
                        "only the last axis (of a [N, K] tensor) is supported",
                    ));
                }
                Op::Softmax
            }
            "Reshape" => {
                arity(2, 2)?;
                let shape = operands
                    .get(1)
                    .and_then(|id| self.constants.get(id))
                    .and_then(|c| c.ints.clone())
                    .ok_or_else(|| {
                        unsupported(
                            node,
                            name,
                            "the target shape must be a constant INT64 tensor",
                        )
                    })?;
                Op::Reshape { shape }
            }
            "Conv" => {
                arity(2, 3)?;
                if attr_i(node, "group").unwrap_or(1) != 1 {
                    return Err(unsupported(
                        node,
                        name,
                        "grouped convolutions are not supported",
                    ));
                }
                check_auto_pad(node, name)?;
                let weight = operands.get(1).and_then(|id| self.constants.get(id));
                if weight.is_none_or(|w| w.shape.len() != 4) {
                    return Err(unsupported(
                        node,
                        name,
                        "only 2-D convolutions with constant weights are supported",
                    ));
                }
                Op::Conv {
                    strides: pair(node, name, "strides", 1)?,
                    pads: quad(node, name)?,
                    dilations: pair(node, name, "dilations", 1)?,
                }
            }
            "MaxPool" => {
                arity(1, 1)?;
                check_auto_pad(node, name)?;
                if attr_i(node, "ceil_mode").unwrap_or(0) != 0 {
                    return Err(unsupported(node, name, "ceil_mode is not supported"));
                }
                if attr_ints(node, "dilations").is_some_and(|d| d.iter().any(|&v| v != 1)) {
                    return Err(unsupported(node, name, "dilated pooling is not supported"));
                }
                if attr_i(node, "storage_order").unwrap_or(0) != 0 {
                    return Err(unsupported(node, name, "storage_order 1 is not supported"));
                }
                let kernel = attr_ints(node, "kernel_shape")
                    .ok_or_else(|| unsupported(node, name, "kernel_shape is required"))?;
                let kernel = dims2(node, name, kernel)?;
                Op::MaxPool {
                    kernel,
                    strides: pair(node, name, "strides", 1)?,
                    pads: quad(node, name)?,
                }
            }
            other => {
                return Err(EvalError::UnsupportedOperator {
                    op: other.to_owned(),
                    node: name.to_owned(),
                })
            }
        };
        Ok(op)
    }
}

fn unsupported(node: &pb::NodeProto, name: &str, reason: &str) -> EvalError {
    EvalError::UnsupportedNode {
        op: node.op_type.clone(),
        node: name.to_owned(),
        reason: reason.to_owned(),
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_f(node: &pb::NodeProto, name: &str) -> Option<f32> {
    attr(node, name).map(|a| a.f)
}

fn attr_i(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn attr_ints<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a [i64]> {
    attr(node, name).map(|a| a.ints.as_slice())
}

fn check_auto_pad(node: &pb::NodeProto, name: &str) -> Result<()> {
    match attr(node, "auto_pad").map(|a| a.s.as_slice()) {
        None | Some(b"NOTSET") | Some(b"VALID") | Some(b"") => Ok(()),
        Some(_) => Err(unsupported(
            node,
            name,
            "auto_pad SAME_UPPER/SAME_LOWER is not supported; export with explicit pads",
        )),
    }
}

/// A small positive dimension (kernel, stride, dilation, padding) read from an attribute.
fn small(node: &pb::NodeProto, name: &str, v: i64, min: i64) -> Result<usize> {
    if !(min..=4096).contains(&v) {
        return Err(unsupported(
            node,
            name,
            &format!("the attribute value {v} is out of range"),
        ));
    }
    usize::try_from(v).map_err(|_| unsupported(node, name, "a negative attribute"))
}

fn dims2(node: &pb::NodeProto, name: &str, v: &[i64]) -> Result<[usize; 2]> {
    match v {
        [a, b] => Ok([small(node, name, *a, 1)?, small(node, name, *b, 1)?]),
        _ => Err(unsupported(
            node,
            name,
            "only 2-D (NCHW) operations are supported",
        )),
    }
}

fn pair(node: &pb::NodeProto, name: &str, attribute: &str, default: usize) -> Result<[usize; 2]> {
    match attr_ints(node, attribute) {
        None | Some([]) => Ok([default, default]),
        Some(v) => dims2(node, name, v),
    }
}

fn quad(node: &pb::NodeProto, name: &str) -> Result<[usize; 4]> {
    match attr_ints(node, "pads") {
        None | Some([]) => Ok([0; 4]),
        Some([a, b, c, d]) => Ok([
            small(node, name, *a, 0)?,
            small(node, name, *b, 0)?,
            small(node, name, *c, 0)?,
            small(node, name, *d, 0)?,
        ]),
        Some(_) => Err(unsupported(node, name, "only 2-D padding is supported")),
    }
}

fn input_dims(info: &pb::ValueInfoProto) -> Result<Vec<usize>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    let bad = |why: &str| EvalError::Model(format!("input `{}`: {why}", info.name));
    let Some(TypeValue::TensorType(tensor)) = info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(bad("not a tensor"));
    };
    if tensor.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(bad("white-box attacks need an FP32 input"));
    }
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .ok_or_else(|| bad("the shape is not declared"))?;
    let Some((_batch, rest)) = dims.split_first() else {
        return Err(bad("the input has no batch dimension"));
    };
    rest.iter()
        .map(|d| match d.value {
            Some(Value::DimValue(v)) if (1..=1 << 24).contains(&v) => {
                usize::try_from(v).map_err(|_| bad("a dimension is out of range"))
            }
            _ => Err(bad(
                "every dimension but the batch must be a fixed positive number",
            )),
        })
        .collect()
}

fn constant(t: &pb::TensorProto) -> Result<Constant> {
    use pb::tensor_proto::DataType;
    let bad = |why: &str| EvalError::Model(format!("constant `{}`: {why}", t.name));
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
        || !t.external_data.is_empty()
    {
        return Err(bad(
            "external data files are not supported; save the model with its weights inside",
        ));
    }
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad("a negative dimension")))
        .collect::<Result<_>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&c| c <= MAX_CONSTANT_ELEMENTS)
        .ok_or_else(|| bad("too many elements"))?;
    let (data, ints) = if t.data_type == DataType::Float as i32 {
        let data = if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            raw(&t.raw_data, count, &bad)?
                .into_iter()
                .map(f32::from_le_bytes)
                .collect()
        };
        (data, None)
    } else if t.data_type == DataType::Int64 as i32 {
        let ints: Vec<i64> = if t.raw_data.is_empty() {
            t.int64_data.clone()
        } else {
            raw(&t.raw_data, count, &bad)?
                .into_iter()
                .map(i64::from_le_bytes)
                .collect()
        };
        (ints.iter().map(|&v| v as f32).collect(), Some(ints))
    } else {
        return Err(bad(&format!(
            "data type {} is not supported (FP32 and INT64 are)",
            t.data_type
        )));
    };
    if data.len() != count {
        return Err(bad(&format!(
            "declares {count} elements but holds {}",
            data.len()
        )));
    }
    Ok(Constant { shape, data, ints })
}

/// Splits little-endian raw data into `count` elements of `N` bytes, refusing a length that does not match.
fn raw<const N: usize>(
    bytes: &[u8],
    count: usize,
    bad: &dyn Fn(&str) -> EvalError,
) -> Result<Vec<[u8; N]>> {
    if Some(bytes.len()) != count.checked_mul(N) {
        return Err(bad(&format!(
            "raw data of {} bytes does not hold {count} elements",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(N)
        .filter_map(|c| <[u8; N]>::try_from(c).ok())
        .collect())
}
