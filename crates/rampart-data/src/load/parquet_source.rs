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
            DataError::parse(path, 0, None, format!("not a readable Parquet file: {e}"))
        };
        let reader = SerializedFileReader::new(file).map_err(bad)?;
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
        let Some(next) = self.rows.next() else {
            return Ok(false);
        };
        self.record += 1;
        let record = next.map_err(|e| {
            DataError::parse(
                &self.path,
                self.record,
                None,
                format!("unreadable record: {e}"),
            )
        })?;
        row.clear(self.record);
        let mut text = String::new();
        for (_, field) in record.get_column_iter() {
            match field {
                Field::Null => row.push_null(),
                Field::Str(value) => row.push(Some(value)),
                other => {
                    text.clear();
                    use std::fmt::Write;
                    let _ = write!(text, "{other}");
                    row.push(Some(&text));
                }
            }
        }
        Ok(true)
    }

    fn bytes_read(&self) -> u64 {
        // Parquet is columnar: report progress in proportion to records read.
        if self.total_rows == 0 {
            0
        } else {
            self.total_bytes.saturating_mul(self.record) / self.total_rows
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
