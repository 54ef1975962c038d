//! The errors of the defences.

/// Why a defence could not decide or refused its input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DefendError {
    /// The client's input is malformed, oversized or outside the profile (a 4xx for the client).
    #[error("invalid input: {0}")]
    Input(String),
    /// An encoded image was refused: undecodable, not PNG or JPEG, or past a limit.
    #[error("image {index}: {reason}")]
    Image {
        /// The element of the `BYTES` tensor.
        index: usize,
        /// What was wrong.
        reason: String,
    },
    /// The operator's configuration is invalid (a start-up error).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A profile, key or query log could not be read.
    #[error("cannot read {what}: {reason}")]
    Read {
        /// Which file or data.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// The model failed while a defence ran it.
    #[error("model: {0}")]
    Model(String),
    /// A detector has no calibration and cannot decide (fail closed).
    #[error("detector is not calibrated: {0}")]
    Uncalibrated(String),
}
