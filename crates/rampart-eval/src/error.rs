//! Why an evaluation could not be made.

/// Why an evaluation could not be made. Every variant is an error (exit 2), never a verdict about the model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The ONNX file is not a model this engine can differentiate.
    #[error("cannot load the model for gradients: {0}")]
    Model(String),
    /// The graph uses an operator the differentiable engine does not implement.
    #[error("unsupported operator `{op}` (node `{node}`): white-box attacks support Gemm, MatMul, Add, Relu, Conv, MaxPool, Flatten, Reshape, Softmax, Identity and Dropout; use a black-box attack (`--attacks square,hsj`) for this model")]
    UnsupportedOperator {
        /// The ONNX operator type.
        op: String,
        /// The node's name.
        node: String,
    },
    /// An operator's attribute or operand is outside what the engine implements.
    #[error("node `{node}` ({op}): {reason}")]
    UnsupportedNode {
        /// The ONNX operator type.
        op: String,
        /// The node's name.
        node: String,
        /// What is not supported.
        reason: String,
    },
    /// The data does not fit the model (wrong feature count, labels out of range).
    #[error("the data does not fit the model: {0}")]
    Mismatch(String),
    /// A data file could not be read or parsed.
    #[error("{0}")]
    Data(String),
    /// The model could not answer a query.
    #[error("{0}")]
    Infer(#[from] rampart_infer::InferError),
    /// An option is out of range.
    #[error("invalid setting: {0}")]
    Setting(String),
}

/// A shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
