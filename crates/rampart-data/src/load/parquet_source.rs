//! Parquet, read row group by row group through the `parquet` crate's record API (no Arrow).

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::reader::RowIter;
use parquet::record::Field;

use super::{check_columns, Row, RowSource};
use crate::error::{DataError, Result};

/// Streams the records of a Parquet file; top-level fields are the columns.
pub(crate) struct ParquetSource {
    path: PathBuf,
    columns: Vec<String>,
    rows: RowIter<'static>,
    record: u64,
    total_bytes: u64,
    total_rows: u64,
}

impl std::fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSource")
            .field("path", &self.path)
            .finish()
    }
}

impl ParquetSource {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let bad = |e: parquet::errors::ParquetError| {
            DataError::record(path, 0, None, format!("not a readable Parquet file: {e}"))
        };
        let reader = guarded(path, 0, || SerializedFileReader::new(file))?.map_err(bad)?;
        let metadata = reader.metadata().file_metadata();
        let total_rows = u64::try_from(metadata.num_rows()).unwrap_or(0);
        let columns: Vec<String> = metadata
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        check_columns(path, 0, &columns)?;
        let rows = RowIter::from_file_into(Box::new(reader));
        Ok(Self {
            path: path.to_path_buf(),
            columns,
            rows,
            record: 0,
            total_bytes,
            total_rows,
        })
    }
}

impl RowSource for ParquetSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut Row) -> Result<bool> {
        let rows = &mut self.rows;
        let Some(next) = guarded(&self.path, self.record + 1, || rows.next())? else {
            return Ok(false);
        };
        self.record += 1;
        let record = next.map_err(|e| {
            DataError::record(
                &self.path,
                self.record,
                None,
                format!("unreadable record: {e}"),
            )
        })?;
        row.clear(self.record);
        let mut text = String::new();
        for (_, field) in record.get_column_iter() {
            if matches!(field, Field::Null) {
                row.push_null();
            } else {
                text.clear();
                cell_text(field, &mut text);
                row.push(Some(&text));
            }
        }
        Ok(true)
    }

    fn bytes_read(&self) -> u64 {
        // Parquet is columnar: report progress in proportion to records read.
        self.total_bytes
            .saturating_mul(self.record)
            .checked_div(self.total_rows)
            .unwrap_or(0)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

/// Run a call into the `parquet` crate, turning a panic on a malformed file into an error: its decoders are not
/// hardened against hostile input everywhere, and a data check must fail with a message, not abort.
///
/// The panic is also kept off stderr: the process's panic hook is wrapped (once) so that it stays silent, logging
/// at debug level instead, while this thread is inside such a call; every other panic goes to the hook as before.
fn guarded<T>(path: &Path, record: u64, f: impl FnOnce() -> T) -> Result<T> {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_DECODER.with(std::cell::Cell::get) {
                tracing::debug!("the Parquet decoder gave up: {info}");
            } else {
                previous(info);
            }
        }));
    });
    IN_DECODER.with(|flag| flag.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_DECODER.with(|flag| flag.set(false));
    outcome.map_err(|_| {
        DataError::record(
            path,
            record,
            None,
            "malformed Parquet data (the decoder gave up); the file is corrupt or not Parquet",
        )
    })
}

static QUIET_HOOK: std::sync::Once = std::sync::Once::new();

thread_local! {
    /// Whether this thread is inside [`guarded`].
    static IN_DECODER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A field as the text the checks see: numbers in their shortest round-trip form (the parquet crate's `Display`
/// writes `0E0` for zero), strings without quotes, binary as UTF-8 when it is, else as hex.
fn cell_text(field: &Field, out: &mut String) {
    use std::fmt::Write;
    let _ = match field {
        Field::Str(value) => {
            out.push_str(value);
            Ok(())
        }
        Field::Double(value) => write!(out, "{}", Float(*value)),
        Field::Float(value) => write!(out, "{}", Float(f64::from(*value))),
        Field::Float16(value) => write!(out, "{}", Float(f64::from(*value))),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(value) => {
                out.push_str(value);
                Ok(())
            }
            Err(_) => {
                out.push_str("0x");
                bytes.data().iter().try_for_each(|b| write!(out, "{b:02x}"))
            }
        },
        other => write!(out, "{other}"),
    };
}

/// Shortest decimal that reads back to the same value; exponent form only for very small or large magnitudes.
struct Float(f64);

impl std::fmt::Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.0;
        let magnitude = v.abs();
        if v == 0.0 || !v.is_finite() || (1e-6..1e16).contains(&magnitude) {
            write!(f, "{v}")
        } else {
            write!(f, "{v:e}")
        }
    }
}
