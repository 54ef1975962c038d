//! The model runtime abstraction shared by the gateway (`rampart-gate`) and the evaluator (`rampart-eval`).
//!
//! A [`Model`] takes named tensors in the KServe v2 Open Inference Protocol's vocabulary ([`Tensor`], [`DataType`])
//! and returns named tensors. Implementations:
//!
//! - [`OnnxModel`]: an ONNX file run in process by tract (the embedded default);
//! - [`UpstreamModel`]: a model behind an upstream KServe v2 HTTP server (Triton, KServe, MLServer, another Rampart).
//!
//! [`kserve`] is the protocol's JSON codec, bounded for hostile input: the gateway parses client requests with it,
//! the upstream client parses the upstream's answers with it.
//!
//! Inference is synchronous and CPU-bound; async callers run it on a blocking pool.

pub mod kserve;
mod onnx;
mod tensor;
mod upstream;
mod vector_state;

pub use onnx::OnnxModel;

/// A client's or a file's string as an error message quotes it: at most 64 characters, and `…` when cut (a 3 MB
/// tensor name made a 3 MB error body, a 50 MB CSV field a 50 MB error line).
pub fn clip(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}
pub use tensor::{DataType, Tensor, TensorData, TensorSpec};
pub use upstream::UpstreamModel;

/// What a model declares about itself: the KServe v2 model metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelMetadata {
    /// The model's name as clients address it.
    pub name: String,
    /// Available versions, newest last (may be empty).
    pub versions: Vec<String>,
    /// The runtime, such as `onnx` or `kserve-v2`.
    pub platform: String,
    /// The inputs the model expects.
    pub inputs: Vec<TensorSpec>,
    /// The outputs it returns.
    pub outputs: Vec<TensorSpec>,
}

/// Why an inference could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// The model file or bytes could not be loaded.
    #[error("cannot load model `{name}`: {reason}")]
    Load {
        /// The model's name or path.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The request's tensors do not match the model's inputs (the client's fault).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The runtime failed while running a valid request.
    #[error("inference failed: {0}")]
    Runtime(String),
    /// An upstream model server could not be reached or answered badly.
    #[error("upstream model server: {0}")]
    Upstream(String),
}

/// A model that answers inference requests.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// The model's metadata: name, platform, inputs and outputs.
    fn metadata(&self) -> &ModelMetadata;

    /// Runs one request. `inputs` are validated against [`Model::metadata`] before they reach the runtime.
    fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError>;
}
