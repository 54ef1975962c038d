//! CSV and TSV: RFC 4180 quoting, a header line, every record as wide as the header.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{check_columns, Row, RowSource};
use crate::error::{DataError, Result};

/// Streams a delimited text file.
pub(crate) struct CsvSource {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read + Send>>,
    since_record: Arc<AtomicU64>,
    columns: Vec<String>,
    record: csv::ByteRecord,
}

impl std::fmt::Debug for CsvSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvSource")
            .field("path", &self.path)
            .finish()
    }
}

impl CsvSource {
    pub(crate) fn open(path: &Path, delimiter: u8) -> Result<Self> {
        let (input, since_record) = super::open_text(path)?;
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(false)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let header = reader
            .byte_headers()
            .map_err(|e| csv_error(path, e))?
            .clone();
        let mut columns = Vec::with_capacity(header.len());
        for (index, name) in header.iter().enumerate() {
            let name = std::str::from_utf8(name).map_err(|_| {
                DataError::parse(
                    path,
                    1,
                    None,
                    format!(
                        "column {} name is not valid UTF-8; re-encode the file as UTF-8",
                        index + 1
                    ),
                )
            })?;
            let name = if index == 0 {
                name.trim_start_matches('\u{feff}')
            } else {
                name
            };
            columns.push(name.to_string());
        }
        if header.is_empty() || (header.len() == 1 && columns.first().is_some_and(|c| c.is_empty()))
        {
            return Err(DataError::parse(
                path,
                1,
                None,
                "empty file or empty header; the first line must name the columns",
            ));
        }
        check_columns(path, 1, &columns)?;
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            since_record,
            columns,
            record: csv::ByteRecord::new(),
        })
    }
}

fn csv_error(path: &Path, err: csv::Error) -> DataError {
    let line = err.position().map_or(0, csv::Position::line);
    match err.into_kind() {
        csv::ErrorKind::Io(e) => DataError::io(path, e),
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => DataError::parse(
            path,
            pos.map_or(line, |p| p.line()),
            None,
            format!("ragged row: {len} fields where the header has {expected_len}"),
        ),
        csv::ErrorKind::Utf8 { pos, err } => DataError::parse(
            path,
            pos.map_or(line, |p| p.line()),
            None,
            format!("field {} is not valid UTF-8", err.field() + 1),
        ),
        other => DataError::parse(path, line, None, format!("malformed CSV: {other:?}")),
    }
}

impl RowSource for CsvSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut Row) -> Result<bool> {
        let more = self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|e| csv_error(&self.path, e))?;
        if !more {
            return Ok(false);
        }
        self.since_record.store(0, Ordering::Relaxed);
        let line = self.record.position().map_or(0, csv::Position::line);
        // One validation of the whole record; only on failure look for the column at fault.
        let Ok(text) = std::str::from_utf8(self.record.as_slice()) else {
            let bad = self
                .record
                .iter()
                .position(|f| std::str::from_utf8(f).is_err())
                .unwrap_or(0);
            return Err(DataError::parse(
                &self.path,
                line,
                self.columns.get(bad).map(String::as_str),
                "not valid UTF-8; re-encode the file as UTF-8",
            ));
        };
        row.clear(line);
        row.text.push_str(text);
        let mut start = 0;
        for end in self.record.iter().map(<[u8]>::len) {
            let stop = start + end;
            if end == 0 {
                row.push_null();
            } else {
                row.cells.push(Some((start, stop)));
            }
            start = stop;
        }
        Ok(true)
    }

    fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
