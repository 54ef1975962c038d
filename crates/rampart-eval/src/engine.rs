//! The differentiable engine: runs a [`Graph`] forward on a batch, remembers what each operation needs, and takes the
//! gradient of the cross-entropy loss with respect to the input.
//!
//! A final `Softmax` is dropped so that the loss is taken on logits (the same gradient direction, without the
//! saturation of `log(softmax)` on probabilities). Batches are split across threads with rayon.

use rayon::prelude::*;

use crate::error::{EvalError, Result};
use crate::graph::{Graph, Node, Op};
use crate::ops::{self, PoolTape, Tensor, Window};

/// Examples per parallel chunk: large enough for the matrix kernels, small enough to spread over the cores.
const CHUNK: usize = 32;

/// A differentiable classifier loaded from an ONNX graph.
#[derive(Debug, Clone)]
pub struct Engine {
    graph: Graph,
    /// The value holding the logits (the input of a final `Softmax`, else the graph's output).
    logits: usize,
    /// How many nodes to run (a final `Softmax` is left out).
    nodes: usize,
    /// Whether each value depends on the input (only those get gradients).
    live: Vec<bool>,
    classes: usize,
}

/// What the forward pass keeps for the backward pass, per value.
#[derive(Debug, Default)]
struct Tape {
    values: Vec<Option<Tensor>>,
    pools: Vec<Option<PoolTape>>,
}

impl Engine {
    /// Builds the engine from ONNX bytes, checking every operator up front.
    pub fn from_onnx(bytes: &[u8]) -> Result<Engine> {
        Engine::new(Graph::from_onnx(bytes)?)
    }

    /// Builds the engine from a graph; runs one example of zeros to learn the number of classes and check shapes.
    pub fn new(graph: Graph) -> Result<Engine> {
        let mut nodes = graph.nodes.len();
        let mut logits = graph.output;
        if let Some(last) = graph.nodes.last() {
            if last.op == Op::Softmax && last.output == graph.output {
                if let Some(&input) = last.inputs.first() {
                    logits = input;
                    nodes -= 1;
                }
            }
        }
        let mut live = vec![false; graph.values];
        if let Some(slot) = live.get_mut(graph.input) {
            *slot = true;
        }
        for node in &graph.nodes {
            let depends = node
                .inputs
                .iter()
                .any(|&i| live.get(i).copied().unwrap_or(false));
            if let Some(slot) = live.get_mut(node.output) {
                *slot = depends;
            }
        }
        if !live.get(logits).copied().unwrap_or(false) {
            return Err(EvalError::Model(
                "the output does not depend on the input".into(),
            ));
        }
        let mut engine = Engine {
            graph,
            logits,
            nodes,
            live,
            classes: 0,
        };
        let probe = engine.forward_chunk(&vec![0.0; engine.features()], 1)?;
        let tape_out = probe.values.get(logits).and_then(Option::as_ref);
        let Some(out) = tape_out else {
            return Err(EvalError::Model("the output is never computed".into()));
        };
        if out.shape.len() != 2 || out.shape.first() != Some(&1) {
            return Err(EvalError::Model(format!(
                "the output must be [N, classes] scores, it is {:?} for one example",
                out.shape
            )));
        }
        engine.classes = out.data.len();
        if engine.classes < 2 {
            return Err(EvalError::Model(
                "the model must score at least two classes".into(),
            ));
        }
        Ok(engine)
    }

    /// Features per example.
    pub fn features(&self) -> usize {
        self.graph.features()
    }

    /// The number of classes the model scores.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The input's name in the graph.
    pub fn input_name(&self) -> &str {
        &self.graph.input_name
    }

    /// The input's shape without the batch dimension.
    pub fn input_shape(&self) -> &[usize] {
        &self.graph.input_shape
    }

    /// Logits for `n` examples (`x` is `[n, features]`, row-major).
    pub fn logits(&self, x: &[f32]) -> Result<Vec<f32>> {
        let f = self.features();
        let parts: Vec<Result<Vec<f32>>> = x
            .par_chunks(f * CHUNK)
            .map(|chunk| {
                let tape = self.forward_chunk(chunk, chunk.len() / f)?;
                Ok(self.take_logits(tape)?.data)
            })
            .collect();
        let mut out = Vec::with_capacity(x.len() / f * self.classes);
        for part in parts {
            out.extend(part?);
        }
        Ok(out)
    }

    /// Logits and the gradient of the summed cross-entropy loss against `labels`, with respect to the input.
    pub fn loss_gradient(&self, x: &[f32], labels: &[usize]) -> Result<(Vec<f32>, Vec<f32>)> {
        let f = self.features();
        if x.len() != labels.len() * f {
            return Err(EvalError::Mismatch(format!(
                "{} labels for {} values",
                labels.len(),
                x.len()
            )));
        }
        let parts: Vec<Result<(Vec<f32>, Vec<f32>)>> = x
            .par_chunks(f * CHUNK)
            .zip(labels.par_chunks(CHUNK))
            .map(|(chunk, labels)| self.gradient_chunk(chunk, labels))
            .collect();
        let mut logits = Vec::with_capacity(labels.len() * self.classes);
        let mut grad = Vec::with_capacity(x.len());
        for part in parts {
            let (l, g) = part?;
            logits.extend(l);
            grad.extend(g);
        }
        Ok((logits, grad))
    }

    /// The gradient of `sum_i dot(seed_i, logits_i)` with respect to the input (a vector-Jacobian product).
    pub fn logits_vjp(&self, x: &[f32], seed: &[f32]) -> Result<Vec<f32>> {
        let f = self.features();
        let n = x.len() / f.max(1);
        let tape = self.forward_chunk(x, n)?;
        if seed.len() != n * self.classes {
            return Err(EvalError::Mismatch(
                "the seed does not match the logits".into(),
            ));
        }
        self.backward(tape, seed.to_vec(), n)
    }

    fn gradient_chunk(&self, x: &[f32], labels: &[usize]) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = labels.len();
        let mut tape = self.forward_chunk(x, n)?;
        let logits = tape
            .values
            .get_mut(self.logits)
            .and_then(Option::take)
            .ok_or_else(|| EvalError::Model("the logits were not computed".into()))?;
        let k = self.classes;
        let mut seed = ops::softmax_rows(&logits.data, k);
        for (row, &label) in seed.chunks_exact_mut(k).zip(labels) {
            let slot = row.get_mut(label).ok_or_else(|| {
                EvalError::Mismatch(format!(
                    "label {label} is not one of the model's {k} classes"
                ))
            })?;
            *slot -= 1.0;
        }
        let grad = self.backward(tape, seed, n)?;
        Ok((logits.data, grad))
    }

    fn take_logits(&self, mut tape: Tape) -> Result<Tensor> {
        tape.values
            .get_mut(self.logits)
            .and_then(Option::take)
            .ok_or_else(|| EvalError::Model("the logits were not computed".into()))
    }

    fn value<'a>(&'a self, tape: &'a Tape, id: usize) -> Option<&'a Tensor> {
        tape.values.get(id).and_then(Option::as_ref)
    }

    fn constant_tensor(&self, id: usize) -> Option<Tensor> {
        self.graph.constants.get(&id).map(|c| Tensor {
            shape: c.shape.clone(),
            data: c.data.clone(),
        })
    }

    fn forward_chunk(&self, x: &[f32], n: usize) -> Result<Tape> {
        let mut tape = Tape {
            values: vec![None; self.graph.values],
            pools: vec![None; self.graph.values],
        };
        for (&id, _) in self.graph.constants.iter() {
            if let Some(slot) = tape.values.get_mut(id) {
                *slot = self.constant_tensor(id);
            }
        }
        let mut shape = vec![n];
        shape.extend_from_slice(&self.graph.input_shape);
        if let Some(slot) = tape.values.get_mut(self.graph.input) {
            *slot = Some(Tensor {
                shape,
                data: x.to_vec(),
            });
        }
        for node in self.graph.nodes.iter().take(self.nodes) {
            let (out, pool) =
                self.forward_node(node, &tape)
                    .map_err(|reason| EvalError::UnsupportedNode {
                        op: op_name(&node.op).to_owned(),
                        node: node.name.clone(),
                        reason,
                    })?;
            if let Some(slot) = tape.values.get_mut(node.output) {
                *slot = Some(out);
            }
            if let Some(slot) = tape.pools.get_mut(node.output) {
                *slot = pool;
            }
        }
        Ok(tape)
    }

    fn forward_node(
        &self,
        node: &Node,
        tape: &Tape,
    ) -> ops::KernelResult<(Tensor, Option<PoolTape>)> {
        let arg = |i: usize| -> ops::KernelResult<&Tensor> {
            node.inputs
                .get(i)
                .and_then(|&id| self.value(tape, id))
                .ok_or_else(|| format!("operand {i} is missing"))
        };
        let x = arg(0)?;
        let out = match &node.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let b = arg(1)?;
                let (m, k) = dims2(&x.shape, *trans_a)?;
                let (kb, n) = dims2(&b.shape, *trans_b)?;
                if k != kb {
                    return Err(format!("cannot multiply {:?} by {:?}", x.shape, b.shape));
                }
                let mut out = Tensor::zeros(vec![m, n]);
                if let Ok(c) = arg(2) {
                    let index = ops::broadcast_index(&c.shape, &out.shape)?;
                    for (o, &i) in out.data.iter_mut().zip(&index) {
                        *o = beta * c.data.get(i).copied().unwrap_or(0.0);
                    }
                }
                ops::matmul(
                    *alpha,
                    &x.data,
                    *trans_a,
                    &b.data,
                    *trans_b,
                    (m, k, n),
                    1.0,
                    &mut out.data,
                )?;
                out
            }
            Op::MatMul => {
                let b = arg(1)?;
                let (k, n) = dims2(&b.shape, false)?;
                let (lead, m) = leading(&x.shape, k)?;
                let mut shape = lead;
                shape.push(n);
                let mut out = Tensor::zeros(shape);
                ops::matmul(
                    1.0,
                    &x.data,
                    false,
                    &b.data,
                    false,
                    (m, k, n),
                    0.0,
                    &mut out.data,
                )?;
                out
            }
            Op::Add => {
                let b = arg(1)?;
                let shape = ops::broadcast_shape(&x.shape, &b.shape)?;
                let ia = ops::broadcast_index(&x.shape, &shape)?;
                let ib = ops::broadcast_index(&b.shape, &shape)?;
                let data = ia
                    .iter()
                    .zip(&ib)
                    .map(|(&i, &j)| {
                        x.data.get(i).copied().unwrap_or(0.0)
                            + b.data.get(j).copied().unwrap_or(0.0)
                    })
                    .collect();
                Tensor { shape, data }
            }
            Op::Relu => Tensor {
                shape: x.shape.clone(),
                data: x.data.iter().map(|&v| v.max(0.0)).collect(),
            },
            Op::Identity => x.clone(),
            Op::Flatten { axis } => {
                if *axis > x.shape.len() {
                    return Err(format!("axis {axis} is beyond the rank of {:?}", x.shape));
                }
                let (a, b) = x.shape.split_at(*axis);
                Tensor {
                    shape: vec![a.iter().product(), b.iter().product()],
                    data: x.data.clone(),
                }
            }
            Op::Reshape { shape } => Tensor {
                shape: reshape(&x.shape, shape)?,
                data: x.data.clone(),
            },
            Op::Softmax => {
                let k = x.shape.last().copied().unwrap_or(1);
                Tensor {
                    shape: x.shape.clone(),
                    data: ops::softmax_rows(&x.data, k),
                }
            }
            Op::Conv {
                strides,
                pads,
                dilations,
            } => {
                let w = arg(1)?;
                let g = window(&x.shape, &w.shape, *strides, *pads, *dilations)?;
                ops::conv_forward(x, w, arg(2).ok(), &g)?
            }
            Op::MaxPool {
                kernel,
                strides,
                pads,
            } => {
                let &[_, c, h, w] = x.shape.as_slice() else {
                    return Err(format!(
                        "max-pooling needs an NCHW input, not {:?}",
                        x.shape
                    ));
                };
                let g = Window {
                    c,
                    h,
                    w,
                    kernel: *kernel,
                    strides: *strides,
                    pads: *pads,
                    dilations: [1, 1],
                };
                let (out, pool) = ops::maxpool_forward(x, &g)?;
                return Ok((out, Some(pool)));
            }
        };
        Ok((out, None))
    }

    fn backward(&self, mut tape: Tape, seed: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; self.graph.values];
        if let Some(slot) = grads.get_mut(self.logits) {
            *slot = Some(seed);
        }
        for node in self.graph.nodes.iter().take(self.nodes).rev() {
            let Some(dy) = grads.get_mut(node.output).and_then(Option::take) else {
                continue;
            };
            let pool = tape.pools.get_mut(node.output).and_then(Option::take);
            let parts = self
                .backward_node(node, &tape, &dy, pool)
                .map_err(|reason| EvalError::UnsupportedNode {
                    op: op_name(&node.op).to_owned(),
                    node: node.name.clone(),
                    reason,
                })?;
            for (id, g) in parts {
                if !self.live.get(id).copied().unwrap_or(false) {
                    continue;
                }
                match grads.get_mut(id) {
                    Some(Some(acc)) => acc.iter_mut().zip(&g).for_each(|(a, b)| *a += b),
                    Some(slot) => *slot = Some(g),
                    None => {}
                }
            }
            if let Some(slot) = tape.values.get_mut(node.output) {
                *slot = None;
            }
        }
        let grad = grads
            .get_mut(self.graph.input)
            .and_then(Option::take)
            .unwrap_or_else(|| vec![0.0; n * self.features()]);
        Ok(grad)
    }

    /// The gradients a node sends to its live operands.
    fn backward_node(
        &self,
        node: &Node,
        tape: &Tape,
        dy: &[f32],
        pool: Option<PoolTape>,
    ) -> ops::KernelResult<Vec<(usize, Vec<f32>)>> {
        let id = |i: usize| {
            node.inputs
                .get(i)
                .copied()
                .ok_or_else(|| format!("operand {i} is missing"))
        };
        let arg = |i: usize| -> ops::KernelResult<&Tensor> {
            self.value(tape, id(i)?)
                .ok_or_else(|| format!("operand {i} was not kept"))
        };
        let live = |i: usize| id(i).is_ok_and(|v| self.live.get(v).copied().unwrap_or(false));
        let x = arg(0)?;
        let mut out = Vec::new();
        match &node.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let b = arg(1)?;
                let (m, k) = dims2(&x.shape, *trans_a)?;
                let (_, n) = dims2(&b.shape, *trans_b)?;
                if live(0) {
                    let mut dx = vec![0.0; x.data.len()];
                    if *trans_a {
                        // A is [k, m]: dA = alpha * op(B) dY^T.
                        ops::matmul(*alpha, &b.data, *trans_b, dy, true, (k, n, m), 0.0, &mut dx)?;
                    } else {
                        // dA = alpha * dY op(B)^T.
                        ops::matmul(
                            *alpha,
                            dy,
                            false,
                            &b.data,
                            !*trans_b,
                            (m, n, k),
                            0.0,
                            &mut dx,
                        )?;
                    }
                    out.push((id(0)?, dx));
                }
                if live(1) {
                    let mut db = vec![0.0; b.data.len()];
                    if *trans_b {
                        ops::matmul(*alpha, dy, true, &x.data, *trans_a, (n, m, k), 0.0, &mut db)?;
                    } else {
                        ops::matmul(
                            *alpha,
                            &x.data,
                            !*trans_a,
                            dy,
                            false,
                            (k, m, n),
                            0.0,
                            &mut db,
                        )?;
                    }
                    out.push((id(1)?, db));
                }
                if live(2) {
                    let c = arg(2)?;
                    let index = ops::broadcast_index(&c.shape, &[m, n])?;
                    let mut dc = ops::unbroadcast(dy, &index, c.data.len());
                    dc.iter_mut().for_each(|v| *v *= beta);
                    out.push((id(2)?, dc));
                }
            }
            Op::MatMul => {
                let b = arg(1)?;
                let (k, n) = dims2(&b.shape, false)?;
                let (_, m) = leading(&x.shape, k)?;
                if live(0) {
                    let mut dx = vec![0.0; x.data.len()];
                    ops::matmul(1.0, dy, false, &b.data, true, (m, n, k), 0.0, &mut dx)?;
                    out.push((id(0)?, dx));
                }
                if live(1) {
                    let mut db = vec![0.0; b.data.len()];
                    ops::matmul(1.0, &x.data, true, dy, false, (k, m, n), 0.0, &mut db)?;
                    out.push((id(1)?, db));
                }
            }
            Op::Add => {
                let b = arg(1)?;
                let shape = ops::broadcast_shape(&x.shape, &b.shape)?;
                for (i, t) in [(0, x), (1, b)] {
                    if live(i) {
                        let index = ops::broadcast_index(&t.shape, &shape)?;
                        out.push((id(i)?, ops::unbroadcast(dy, &index, t.data.len())));
                    }
                }
            }
            Op::Relu => {
                let dx = x
                    .data
                    .iter()
                    .zip(dy)
                    .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
                    .collect();
                out.push((id(0)?, dx));
            }
            Op::Identity | Op::Flatten { .. } | Op::Reshape { .. } => {
                out.push((id(0)?, dy.to_vec()))
            }
            Op::Softmax => {
                let y = self
                    .value(tape, node.output)
                    .ok_or("the softmax output was not kept")?;
                let k = y.shape.last().copied().unwrap_or(1);
                out.push((id(0)?, ops::softmax_backward(&y.data, dy, k)));
            }
            Op::Conv {
                strides,
                pads,
                dilations,
            } => {
                let w = arg(1)?;
                let g = window(&x.shape, &w.shape, *strides, *pads, *dilations)?;
                let n = x.shape.first().copied().unwrap_or(0);
                out.push((id(0)?, ops::conv_backward(dy, w, &g, n)?));
            }
            Op::MaxPool { .. } => {
                let pool = pool.ok_or("the pooling tape was not kept")?;
                out.push((id(0)?, ops::maxpool_backward(dy, &pool, x.data.len())));
            }
        }
        Ok(out)
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Gemm { .. } => "Gemm",
        Op::MatMul => "MatMul",
        Op::Add => "Add",
        Op::Relu => "Relu",
        Op::Conv { .. } => "Conv",
        Op::MaxPool { .. } => "MaxPool",
        Op::Flatten { .. } => "Flatten",
        Op::Reshape { .. } => "Reshape",
        Op::Softmax => "Softmax",
        Op::Identity => "Identity",
    }
}

/// Rows and columns of a 2-D operand, as used (transposed or not).
fn dims2(shape: &[usize], transposed: bool) -> ops::KernelResult<(usize, usize)> {
    match shape {
        &[r, c] => Ok(if transposed { (c, r) } else { (r, c) }),
        _ => Err(format!("expected a matrix, got shape {shape:?}")),
    }
}

/// Splits `[.., k]` into its leading dimensions and their product.
fn leading(shape: &[usize], k: usize) -> ops::KernelResult<(Vec<usize>, usize)> {
    match shape.split_last() {
        Some((&last, lead)) if last == k => Ok((lead.to_vec(), lead.iter().product())),
        _ => Err(format!("cannot multiply {shape:?} by a matrix of {k} rows")),
    }
}

fn window(
    x: &[usize],
    w: &[usize],
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
) -> ops::KernelResult<Window> {
    match (x, w) {
        (&[_, c, h, wd], &[_, _, kh, kw]) => Ok(Window {
            c,
            h,
            w: wd,
            kernel: [kh, kw],
            strides,
            pads,
            dilations,
        }),
        _ => Err(format!(
            "convolution needs NCHW input and weights, got {x:?} and {w:?}"
        )),
    }
}

/// ONNX `Reshape`: `0` copies the input's dimension, one `-1` takes the rest.
fn reshape(input: &[usize], target: &[i64]) -> ops::KernelResult<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut shape = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            0 => shape.push(
                input
                    .get(i)
                    .copied()
                    .ok_or("a 0 in the shape has no input dimension")?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                shape.push(1);
            }
            d => shape.push(usize::try_from(d).map_err(|_| format!("invalid dimension {d}"))?),
        }
    }
    let known: usize = shape.iter().product();
    if let Some(i) = infer {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} to {target:?}"));
        }
        if let Some(slot) = shape.get_mut(i) {
            *slot = total / known;
        }
    }
    if shape.iter().product::<usize>() != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(shape)
}
