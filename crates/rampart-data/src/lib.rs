//! `rampart-data`: validate a training data set before it trains anything.
//!
//! - [`load`]: streaming readers for CSV/TSV, JSON Lines and Parquet, with errors that name line and column.
//! - [`schema`]: TOML schemas (types, required columns, ranges, categories, patterns, uniqueness, null rates) and
//!   inference of a starting schema.
//! - [`checks`]: leaks of personal data and secrets, exact and near duplicates, leakage against another split,
//!   label audit by confident learning (cleanlab's `find_label_issues`), outliers, poisoning (spectral signatures,
//!   activation clustering).
//! - [`run`]: one pass over the file for the streaming checks, then the in-memory checks, into a [`Report`].
//! - [`report`] and [`html`]: text, JSON and a self-contained HTML report.
//!
//! Cargo features, both on by default and both built with the Rust toolchain and gcc only (zstd's C sources aside,
//! pure Rust): `parquet` (Parquet reading: uncompressed, snappy, gzip, lz4 and zstd pages) and `onnx`
//! (representations from an ONNX model's penultimate layer through tract). Built without them, a Parquet file or
//! `--model` is an error that names the missing feature.

pub mod checks;
pub mod error;
pub mod html;
pub mod load;
pub mod matrix;
pub mod report;
pub mod repr;
mod run;
pub mod schema;

pub use error::{DataError, Result};
pub use report::Report;
pub use run::{run, Check, Limit, Options, OutlierMethod};

pub(crate) use checks::leaks::excerpt;
