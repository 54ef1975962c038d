//! Rampart's model evaluator: attack a classifier before attackers do.
//!
//! - [`engine`]: a small differentiable engine that loads an ONNX graph (Gemm, MatMul, Add, Relu, Conv, MaxPool,
//!   Flatten, Reshape, Softmax, Identity/Dropout) and takes input gradients, checked against finite differences;
//! - [`whitebox`]: FGSM and PGD (L∞, L2) through those gradients, always against the true labels;
//! - [`square`] and [`hsj`]: black-box attacks (Square Attack, HopSkipJump) over any [`target::Scorer`], including
//!   an ONNX file run by tract or a live KServe v2 endpoint ([`kserve`]);
//! - [`membership`]: calibrated loss and confidence membership inference (AUC, TPR at 1% FPR);
//! - [`extraction`]: surrogate models trained from N queries, agreement and accuracy per budget;
//! - [`report`]: the report and its renderings (text, JSON, JUnit XML, self-contained HTML).

pub mod data;
pub mod engine;
pub mod error;
pub mod extraction;
pub mod graph;
pub mod hsj;
pub mod kserve;
pub mod membership;
pub mod ops;
pub mod plan;
pub mod report;
pub mod rng;
pub mod square;
pub mod target;
pub mod whitebox;

pub use engine::Engine;
pub use error::{EvalError, Result};
