//! The engine's input gradients against central finite differences, on graphs built by hand: dense layers, broadcast
//! additions, convolutions (padding, stride, dilation), max-pooling (overlapping windows, padding, ties), softmax.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failure is the test's verdict"
)]

use std::collections::HashMap;

use rampart_eval::graph::{Constant, Graph, Node, Op};
use rampart_eval::rng::Rng;
use rampart_eval::Engine;

struct G {
    graph: Graph,
    next: usize,
}

impl G {
    fn new(input_shape: Vec<usize>) -> G {
        G {
            graph: Graph {
                values: 1,
                constants: HashMap::new(),
                input: 0,
                input_name: "input".into(),
                input_shape,
                output: 0,
                output_name: "out".into(),
                nodes: Vec::new(),
            },
            next: 1,
        }
    }
    fn value(&mut self) -> usize {
        let id = self.next;
        self.next += 1;
        self.graph.values = self.next;
        id
    }
    fn constant(&mut self, shape: Vec<usize>, rng: &mut Rng, scale: f32) -> usize {
        let id = self.value();
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.normal() * scale).collect();
        self.graph.constants.insert(
            id,
            Constant {
                shape,
                data,
                ints: None,
            },
        );
        id
    }
    fn ints(&mut self, v: Vec<i64>) -> usize {
        let id = self.value();
        let data = v.iter().map(|&x| x as f32).collect();
        self.graph.constants.insert(
            id,
            Constant {
                shape: vec![v.len()],
                data,
                ints: Some(v),
            },
        );
        id
    }
    fn node(&mut self, op: Op, inputs: Vec<usize>) -> usize {
        let out = self.value();
        self.graph.nodes.push(Node {
            name: format!("n{out}"),
            op,
            inputs,
            output: out,
        });
        self.graph.output = out;
        out
    }
    fn engine(self) -> Engine {
        Engine::new(self.graph).unwrap()
    }
}

fn cross_entropy(engine: &Engine, x: &[f32], labels: &[usize]) -> f64 {
    let k = engine.classes();
    let logits = engine.logits(x).unwrap();
    logits
        .chunks(k)
        .zip(labels)
        .map(|(row, &l)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            -(row[l] as f64 - max - sum.ln())
        })
        .sum()
}

/// Checks every input coordinate of `n` random examples against central differences.
fn check(engine: &Engine, n: usize, seed: u64) {
    let f = engine.features();
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..n * f).map(|_| rng.uniform()).collect();
    let labels: Vec<usize> = (0..n).map(|i| i % engine.classes()).collect();
    let (_, grad) = engine.loss_gradient(&x, &labels).unwrap();
    let h = 1e-3f32;
    let mut worst = 0.0f64;
    for i in 0..n * f {
        let mut plus = x.clone();
        plus[i] += h;
        let mut minus = x.clone();
        minus[i] -= h;
        let fd = (cross_entropy(engine, &plus, &labels) - cross_entropy(engine, &minus, &labels))
            / (2.0 * h as f64);
        let err = (fd - grad[i] as f64).abs() / (1.0f64).max(fd.abs());
        worst = worst.max(err);
        assert!(
            err < 2e-2,
            "coordinate {i}: finite difference {fd}, engine {}",
            grad[i]
        );
    }
    assert!(worst < 2e-2);
}

#[test]
fn dense_layers_with_a_final_softmax() {
    let mut rng = Rng::new(1);
    let mut g = G::new(vec![6]);
    let w0 = g.constant(vec![5, 6], &mut rng, 0.7);
    let b0 = g.constant(vec![5], &mut rng, 0.1);
    let h = g.node(
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        vec![0, w0, b0],
    );
    let r = g.node(Op::Relu, vec![h]);
    let w1 = g.constant(vec![5, 4], &mut rng, 0.7);
    let m = g.node(Op::MatMul, vec![r, w1]);
    let b1 = g.constant(vec![1, 4], &mut rng, 0.1);
    let a = g.node(Op::Add, vec![m, b1]);
    let w2 = g.constant(vec![3, 4], &mut rng, 0.7);
    let out = g.node(
        Op::Gemm {
            alpha: 0.5,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        vec![a, w2],
    );
    g.node(Op::Softmax, vec![out]);
    let engine = g.engine();
    assert_eq!(engine.classes(), 3);
    check(&engine, 5, 2);
}

#[test]
fn a_skip_connection_adds_both_paths() {
    let mut rng = Rng::new(3);
    let mut g = G::new(vec![4]);
    let w = g.constant(vec![4, 4], &mut rng, 0.5);
    let h = g.node(Op::MatMul, vec![0, w]);
    let r = g.node(Op::Relu, vec![h]);
    let s = g.node(Op::Add, vec![r, 0]);
    let w2 = g.constant(vec![4, 3], &mut rng, 0.5);
    g.node(Op::MatMul, vec![s, w2]);
    check(&g.engine(), 4, 4);
}

fn cnn(stride: usize, dilation: usize, pool: Op, seed: u64) -> Engine {
    let mut rng = Rng::new(seed);
    let mut g = G::new(vec![36]);
    let shape = g.ints(vec![-1, 1, 6, 6]);
    let img = g.node(
        Op::Reshape {
            shape: vec![-1, 1, 6, 6],
        },
        vec![0, shape],
    );
    let w = g.constant(vec![3, 1, 3, 3], &mut rng, 0.6);
    let b = g.constant(vec![3], &mut rng, 0.1);
    let conv = g.node(
        Op::Conv {
            strides: [stride, stride],
            pads: [1, 1, 1, 1],
            dilations: [dilation, dilation],
        },
        vec![img, w, b],
    );
    let r = g.node(Op::Relu, vec![conv]);
    let p = g.node(pool, vec![r]);
    let flat = g.node(Op::Flatten { axis: 1 }, vec![p]);
    let engine_probe = Engine::new(g.graph.clone());
    let width = {
        // The flattened width depends on the geometry: learn it from a probe graph ending at `flat`.
        let e = engine_probe.unwrap();
        e.classes()
    };
    let w2 = g.constant(vec![4, width], &mut rng, 0.4);
    g.node(
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        },
        vec![flat, w2],
    );
    g.engine()
}

#[test]
fn convolution_and_max_pooling() {
    let pool = Op::MaxPool {
        kernel: [2, 2],
        strides: [2, 2],
        pads: [0, 0, 0, 0],
    };
    check(&cnn(1, 1, pool, 5), 3, 6);
}

#[test]
fn strided_dilated_convolution_and_overlapping_padded_pooling() {
    let pool = Op::MaxPool {
        kernel: [3, 3],
        strides: [1, 1],
        pads: [1, 1, 1, 1],
    };
    check(&cnn(2, 2, pool, 7), 3, 8);
}

/// A 2x2 max-pool with a unique maximum must pass the gradient through unscaled (candle 0.11 scales it by 1/4), and
/// tied maxima must share it: the shares add up to the upstream gradient, which is what the directional derivative
/// along "raise every tied element together" measures.
#[test]
fn max_pooling_with_and_without_ties() {
    let mut g = G::new(vec![4]);
    let shape = g.ints(vec![-1, 1, 2, 2]);
    let img = g.node(
        Op::Reshape {
            shape: vec![-1, 1, 2, 2],
        },
        vec![0, shape],
    );
    let p = g.node(
        Op::MaxPool {
            kernel: [2, 2],
            strides: [2, 2],
            pads: [0; 4],
        },
        vec![img],
    );
    let flat = g.node(Op::Flatten { axis: 1 }, vec![p]);
    let mut rng = Rng::new(1);
    let zero = g.constant(vec![2], &mut rng, 0.0);
    let w = g.value();
    g.graph.constants.insert(
        w,
        Constant {
            shape: vec![1, 2],
            data: vec![1.0, -1.0],
            ints: None,
        },
    );
    g.node(
        Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        },
        vec![flat, w, zero],
    );
    let engine = g.engine();
    // logits = [m, -m] with m the max; seed the logits' gradient with [1, 0]: d m / d x.
    let unique = [0.1f32, 0.9, 0.3, 0.2];
    let grad = engine.logits_vjp(&unique, &[1.0, 0.0]).unwrap();
    assert_eq!(grad, vec![0.0, 1.0, 0.0, 0.0]);
    let h = 1e-3f32;
    let mut plus = unique;
    plus[1] += h;
    let fd = (engine.logits(&plus).unwrap()[0] - engine.logits(&unique).unwrap()[0]) / h;
    assert!((fd - 1.0).abs() < 1e-2, "finite difference {fd}");

    let tied = [0.5f32, 0.9, 0.9, 0.9];
    let grad = engine.logits_vjp(&tied, &[1.0, 0.0]).unwrap();
    assert_eq!(grad[0], 0.0);
    for g in &grad[1..] {
        assert!(
            (g - 1.0 / 3.0).abs() < 1e-6,
            "each of three tied maxima gets a third, got {grad:?}"
        );
    }
    let sum: f32 = grad.iter().sum();
    assert!((sum - 1.0).abs() < 1e-6);
    let mut raised = tied;
    for v in &mut raised[1..] {
        *v += h;
    }
    let fd = (engine.logits(&raised).unwrap()[0] - engine.logits(&tied).unwrap()[0]) / h;
    assert!(
        (fd - sum).abs() < 1e-2,
        "directional derivative {fd}, gradient sum {sum}"
    );
    // Lowering one tied element leaves the max unchanged: a one-sided derivative of 0, within the subgradient.
    let mut lowered = tied;
    lowered[2] -= h;
    assert_eq!(
        engine.logits(&lowered).unwrap()[0],
        engine.logits(&tied).unwrap()[0]
    );
}
