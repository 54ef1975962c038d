//! The one error type of the crate: every variant names the place (file, line, column) where it can.

use std::path::PathBuf;

/// Why loading or checking a data set failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file name gives no format Rampart reads.
    #[error("`{path}`: unknown data format; use a .csv, .tsv, .jsonl/.ndjson or .parquet file, or pass --input-format")]
    UnknownFormat { path: PathBuf },
    /// A format that this build leaves out.
    #[error("`{path}`: {format} support is not in this build (cargo feature `{feature}`)")]
    FeatureMissing {
        path: PathBuf,
        format: &'static str,
        feature: &'static str,
    },
    /// A malformed record, with its place.
    #[error("`{path}`{place}{column}: {message}")]
    Parse {
        path: PathBuf,
        /// The line (CSV, JSONL) or record number (Parquet); 0 for the file as a whole.
        line: u64,
        /// Empty, ` line N` or ` record N`.
        place: String,
        /// Empty, or `, column `name``.
        column: String,
        message: String,
    },
    /// The schema file is not valid.
    #[error("schema `{path}`: {message}")]
    Schema { path: PathBuf, message: String },
    /// Predicted probabilities or representations do not fit the data.
    #[error("`{path}`: {message}")]
    Shape { path: PathBuf, message: String },
    /// A check was asked for but cannot run on this data.
    #[error("check `{check}` cannot run: {reason}")]
    CannotRun { check: &'static str, reason: String },
    /// Invalid option values.
    #[error("{0}")]
    Invalid(String),
    /// Reading the ONNX model or running it failed.
    #[error("model `{path}`: {message}")]
    Model { path: PathBuf, message: String },
}

impl DataError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parse(
        path: &std::path::Path,
        line: u64,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::located(path, "line", line, column, message)
    }

    /// A malformed Parquet record (numbered from 1), or the file as a whole (0).
    #[cfg(feature = "parquet")]
    pub(crate) fn record(
        path: &std::path::Path,
        record: u64,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::located(path, "record", record, column, message)
    }

    fn located(
        path: &std::path::Path,
        unit: &str,
        line: u64,
        column: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Self::Parse {
            path: path.to_path_buf(),
            line,
            place: if line == 0 {
                String::new()
            } else {
                format!(" {unit} {line}")
            },
            column: column
                .map(|c| format!(", column `{c}`"))
                .unwrap_or_default(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
