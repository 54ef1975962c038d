//! JSON Lines: one object per line; the first object's keys are the columns.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{check_columns, Row, RowSource};
use crate::error::{DataError, Result};

/// Longest line accepted, so that a file without newlines cannot exhaust memory.
const MAX_LINE: usize = 64 << 20;

/// Streams a JSONL file.
pub(crate) struct JsonlSource {
    path: PathBuf,
    reader: BufReader<Box<dyn Read + Send>>,
    since_record: Arc<AtomicU64>,
    columns: Vec<String>,
    index: std::collections::HashMap<String, usize>,
    line: u64,
    bytes: u64,
    buf: Vec<u8>,
    /// The first record, read while finding the columns.
    pending: Option<serde_json::Map<String, serde_json::Value>>,
    cells: Vec<Option<String>>,
}

impl std::fmt::Debug for JsonlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlSource")
            .field("path", &self.path)
            .field("line", &self.line)
            .finish()
    }
}

impl JsonlSource {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let (input, since_record) = super::open_text(path)?;
        let mut source = Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, input),
            since_record,
            columns: Vec::new(),
            index: std::collections::HashMap::new(),
            line: 0,
            bytes: 0,
            buf: Vec::new(),
            pending: None,
            cells: Vec::new(),
        };
        let Some(first) = source.read_object()? else {
            return Err(DataError::parse(
                path,
                1,
                None,
                "empty file; JSONL needs one object per line",
            ));
        };
        source.columns = first.keys().cloned().collect();
        check_columns(path, source.line, &source.columns)?;
        source.index = source
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        source.pending = Some(first);
        Ok(source)
    }

    /// The next non-blank line as an object.
    fn read_object(&mut self) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
        loop {
            self.buf.clear();
            let n = (&mut self.reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| DataError::io(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            // Lines are bounded here (MAX_LINE); keep the reader's own guard from adding up whole files.
            self.since_record.store(0, Ordering::Relaxed);
            self.line += 1;
            self.bytes += n as u64;
            if n > MAX_LINE {
                return Err(DataError::parse(
                    &self.path,
                    self.line,
                    None,
                    "line longer than 64 MiB",
                ));
            }
            let text = std::str::from_utf8(&self.buf).map_err(|e| {
                DataError::parse(
                    &self.path,
                    self.line,
                    None,
                    format!(
                        "byte {} is not valid UTF-8; re-encode the file as UTF-8",
                        e.valid_up_to() + 1
                    ),
                )
            })?;
            if text.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                DataError::parse(
                    &self.path,
                    self.line,
                    None,
                    format!("invalid JSON at character {}: {e}", e.column()),
                )
            })?;
            match value {
                serde_json::Value::Object(map) => return Ok(Some(map)),
                _ => {
                    return Err(DataError::parse(
                        &self.path,
                        self.line,
                        None,
                        "expected a JSON object",
                    ))
                }
            }
        }
    }
}

fn cell_text(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

impl RowSource for JsonlSource {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut Row) -> Result<bool> {
        let object = match self.pending.take() {
            Some(object) => object,
            None => match self.read_object()? {
                Some(object) => object,
                None => return Ok(false),
            },
        };
        self.cells.clear();
        self.cells.resize(self.columns.len(), None);
        for (key, value) in object {
            let Some(&index) = self.index.get(&key) else {
                return Err(DataError::parse(
                    &self.path,
                    self.line,
                    Some(&key),
                    "key not present in the first record; every record must use the first record's keys",
                ));
            };
            if let Some(slot) = self.cells.get_mut(index) {
                *slot = cell_text(value);
            }
        }
        row.clear(self.line);
        for cell in &self.cells {
            row.push(cell.as_deref());
        }
        Ok(true)
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
