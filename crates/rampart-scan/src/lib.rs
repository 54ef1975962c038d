//! `rampart-scan`: finds malicious content in model files without loading them.
//!
//! Formats are recognised by content, never by extension: pickles (protocols 0–5, back to back), PyTorch zip and
//! legacy checkpoints, NumPy `.npy`/`.npz`, joblib, zip and tar archives (nested, bounded), Keras HDF5 and `.keras`,
//! TensorFlow SavedModel, ONNX, GGUF and safetensors. Nothing is executed, imported or extracted to disk; every
//! parser is bounded in time and memory on hostile input.
//!
//! ```no_run
//! let report = rampart_scan::scan_path(std::path::Path::new("model.pt"), &rampart_scan::Options::default())?;
//! if report.verdict(rampart_scan::Severity::Medium) == rampart_scan::Verdict::Fail {
//!     for f in report.findings() { eprintln!("{f}"); }
//! }
//! # Ok::<(), rampart_scan::ScanError>(())
//! ```

mod archive;
mod detect;
mod finding;
mod formats;
mod input;
mod pickle;
mod protobuf;
mod scanner;

pub use finding::{Finding, Report, ScannedFile, Severity, Verdict, RULES};
pub use scanner::{scan_bytes, scan_path, Options, ScanError};

/// Entry points for the fuzz targets: each parser over arbitrary bytes. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::scanner::{fuzz_entry, FuzzParser};
}
