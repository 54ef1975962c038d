//! Streaming readers: one record at a time, whatever the size of the file.
//!
//! Every reader yields [`Row`]s: the cells of one record as UTF-8 text (numbers in their textual form), a missing or
//! empty cell as `None`, and the line (CSV, JSONL) or record number (Parquet) for error messages and findings.

mod csv_source;
mod jsonl_source;
#[cfg(feature = "parquet")]
mod parquet_source;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{DataError, Result};

/// Longest record (line, or CSV record with quoted newlines) accepted, so that a file without record breaks cannot
/// exhaust memory.
pub(crate) const MAX_RECORD: u64 = 64 << 20;

/// The file formats Rampart reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Tsv,
    Jsonl,
    Parquet,
}

impl Format {
    /// Guess the format from the file name.
    pub fn from_path(path: &Path) -> Result<Self> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") {
            Ok(Self::Csv)
        } else if name.ends_with(".tsv") || name.ends_with(".tab") {
            Ok(Self::Tsv)
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json") {
            Ok(Self::Jsonl)
        } else if name.ends_with(".parquet") || name.ends_with(".pq") {
            Ok(Self::Parquet)
        } else {
            Err(DataError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    }

    /// Parse a format name given on the command line.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "csv" => Some(Self::Csv),
            "tsv" => Some(Self::Tsv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            "parquet" => Some(Self::Parquet),
            _ => None,
        }
    }
}

/// One record: its cells, as text, in column order.
#[derive(Debug, Default, Clone)]
pub struct Row {
    line: u64,
    text: String,
    /// End offset in `text` of each cell; `None` marks a missing cell.
    cells: Vec<Option<(usize, usize)>>,
}

impl Row {
    /// The line (CSV, JSONL; 1-based, the header is line 1 in CSV) or the record number (Parquet).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Number of cells.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the row has no cells.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// The cell in column `index`, `None` when missing, null or empty.
    pub fn get(&self, index: usize) -> Option<&str> {
        let (start, end) = (*self.cells.get(index)?)?;
        self.text.get(start..end)
    }

    /// All cells in order.
    pub fn cells(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        (0..self.cells.len()).map(|i| self.get(i))
    }

    /// The text of every cell but `skip`, as two slices: cells are stored back to back, in order (nulls take no
    /// bytes), so this is the concatenation of those cells.
    pub(crate) fn text_without(&self, skip: Option<usize>) -> (&str, &str) {
        match skip.and_then(|i| self.cells.get(i).copied().flatten()) {
            Some((start, end)) => (
                self.text.get(..start).unwrap_or_default(),
                self.text.get(end..).unwrap_or_default(),
            ),
            None => (self.text.as_str(), ""),
        }
    }

    /// Each cell's length in bytes, `None` for a missing one.
    pub(crate) fn lengths(&self) -> impl Iterator<Item = Option<usize>> + '_ {
        self.cells.iter().map(|c| c.map(|(start, end)| end - start))
    }

    pub(crate) fn clear(&mut self, line: u64) {
        self.line = line;
        self.text.clear();
        self.cells.clear();
    }

    pub(crate) fn push(&mut self, cell: Option<&str>) {
        match cell {
            Some(value) if !value.is_empty() => {
                let start = self.text.len();
                self.text.push_str(value);
                self.cells.push(Some((start, self.text.len())));
            }
            _ => self.cells.push(None),
        }
    }

    pub(crate) fn push_null(&mut self) {
        self.cells.push(None);
    }

    /// Build a row from cells (tests and callers that hold records in memory).
    pub fn from_cells<'a>(line: u64, cells: impl IntoIterator<Item = Option<&'a str>>) -> Self {
        let mut row = Self::default();
        row.clear(line);
        for cell in cells {
            row.push(cell);
        }
        row
    }
}

/// A stream of rows from one file.
pub trait RowSource: Send {
    /// The column names, in order.
    fn columns(&self) -> &[String];
    /// Read the next row into `row`; `false` at the end.
    fn next_row(&mut self, row: &mut Row) -> Result<bool>;
    /// Bytes consumed so far (for progress and throughput), when known.
    fn bytes_read(&self) -> u64;
    /// The file being read.
    fn path(&self) -> &Path;
}

/// Open a data file for streaming; `format` overrides the guess from the file name.
pub fn open(path: &Path, format: Option<Format>) -> Result<Box<dyn RowSource>> {
    let format = match format {
        Some(format) => format,
        None => Format::from_path(path)?,
    };
    match format {
        Format::Csv => Ok(Box::new(csv_source::CsvSource::open(path, b',')?)),
        Format::Tsv => Ok(Box::new(csv_source::CsvSource::open(path, b'\t')?)),
        Format::Jsonl => Ok(Box::new(jsonl_source::JsonlSource::open(path)?)),
        #[cfg(feature = "parquet")]
        Format::Parquet => Ok(Box::new(parquet_source::ParquetSource::open(path)?)),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(DataError::FeatureMissing {
            path: path.to_path_buf(),
            format: "Parquet",
            feature: "parquet",
        }),
    }
}

/// The bytes of a text data file (CSV, TSV, JSONL), decompressed on the fly when it is gzip (`.gz` or not: the magic
/// bytes decide), and the counter of bytes read since the caller last reset it (the record-length guard).
pub(crate) fn open_text(path: &Path) -> Result<(Box<dyn Read + Send>, Arc<AtomicU64>)> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let gzip = reader
        .fill_buf()
        .map_err(|e| DataError::io(path, e))?
        .starts_with(&[0x1f, 0x8b]);
    let since_record = Arc::new(AtomicU64::new(0));
    let inner: Box<dyn Read + Send> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    Ok((
        Box::new(Capped {
            inner,
            since_record: Arc::clone(&since_record),
        }),
        since_record,
    ))
}

/// Fails a read once more than [`MAX_RECORD`] bytes have passed since the reader last finished a record.
struct Capped {
    inner: Box<dyn Read + Send>,
    since_record: Arc<AtomicU64>,
}

impl Read for Capped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since_record.load(Ordering::Relaxed) > MAX_RECORD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a record longer than 64 MiB; check the format (a CSV quote left open runs to the end of the file)",
            ));
        }
        let n = self.inner.read(buf)?;
        self.since_record.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Check that the header names are usable: non-empty and unique.
pub(crate) fn check_columns(path: &Path, line: u64, columns: &[String]) -> Result<()> {
    if columns.is_empty() {
        return Err(DataError::parse(
            path,
            line,
            None,
            "no columns; the file needs a header",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, name) in columns.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(DataError::parse(
                path,
                line,
                None,
                format!(
                    "column {} has an empty name; name every column in the header",
                    index + 1
                ),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(DataError::parse(
                path,
                line,
                Some(name),
                "duplicate column name; column names must be unique",
            ));
        }
    }
    Ok(())
}

/// Read a whole (small) file into rows, for callers that need random access.
pub fn read_all(
    path: &Path,
    format: Option<Format>,
    max_rows: usize,
) -> Result<(Vec<String>, Vec<Row>)> {
    let mut source = open(path, format)?;
    let mut rows = Vec::new();
    loop {
        let mut row = Row::default();
        if !source.next_row(&mut row)? {
            break;
        }
        if rows.len() >= max_rows {
            return Err(DataError::Invalid(format!(
                "`{}` has more than {max_rows} rows; raise --max-rows",
                path.display()
            )));
        }
        rows.push(row);
    }
    Ok((source.columns().to_vec(), rows))
}
