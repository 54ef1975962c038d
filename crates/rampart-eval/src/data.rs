//! Labelled examples read from CSV: numeric feature columns and one integer label column.

use std::io::Write;
use std::path::Path;

use crate::error::{EvalError, Result};

/// The largest CSV file read (bounded memory).
pub const MAX_CSV_BYTES: u64 = 1 << 30;

/// Examples and their true labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The feature columns' names, in file order.
    pub columns: Vec<String>,
    /// The label column's name.
    pub label_column: String,
    /// Row-major features, `rows * columns.len()` values.
    pub x: Vec<f32>,
    /// One label per row.
    pub labels: Vec<usize>,
}

impl Dataset {
    /// Features per example.
    pub fn features(&self) -> usize {
        self.columns.len()
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Reads a CSV file with a header row.
    pub fn from_path(path: &Path, label_column: &str) -> Result<Dataset> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|err| EvalError::Data(format!("cannot read `{shown}`: {err}")))?
            .len();
        if size > MAX_CSV_BYTES {
            return Err(EvalError::Data(format!(
                "`{shown}` is larger than {MAX_CSV_BYTES} bytes"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|err| EvalError::Data(format!("cannot read `{shown}`: {err}")))?;
        Dataset::parse(&text, label_column)
            .map_err(|err| EvalError::Data(format!("`{shown}`: {err}")))
    }

    /// Parses CSV text: a header, then numeric rows. Quoted fields are not numbers and are refused.
    pub fn parse(text: &str, label_column: &str) -> std::result::Result<Dataset, String> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines
            .next()
            .ok_or("the file is empty; it needs a header row")?;
        let names: Vec<&str> = header.split(',').map(str::trim).collect();
        let label_at = names
            .iter()
            .position(|n| *n == label_column)
            .ok_or_else(|| format!("no column `{label_column}` in the header; set --label-column to one of the columns"))?;
        let columns: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != label_at)
            .map(|(_, n)| (*n).to_owned())
            .collect();
        if columns.is_empty() {
            return Err("there are no feature columns".into());
        }
        let mut x = Vec::new();
        let mut labels = Vec::new();
        for (number, line) in lines {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if fields.len() != names.len() {
                return Err(format!(
                    "line {}: {} fields, the header has {}",
                    number + 1,
                    fields.len(),
                    names.len()
                ));
            }
            for (i, field) in fields.iter().enumerate() {
                if i == label_at {
                    let label: f64 = field.parse().map_err(|_| {
                        format!("line {}: label `{field}` is not a class number", number + 1)
                    })?;
                    if label < 0.0 || label.fract() != 0.0 || label > 1e6 {
                        return Err(format!(
                            "line {}: label `{field}` is not a class number (0, 1, 2, ...)",
                            number + 1
                        ));
                    }
                    labels.push(label as usize);
                } else {
                    let v: f32 = field.parse().map_err(|_| {
                        format!(
                            "line {}: `{field}` in column `{}` is not a number",
                            number + 1,
                            names.get(i).unwrap_or(&"")
                        )
                    })?;
                    if !v.is_finite() {
                        return Err(format!(
                            "line {}: `{field}` is not a finite number",
                            number + 1
                        ));
                    }
                    x.push(v);
                }
            }
        }
        if labels.is_empty() {
            return Err("the file has a header but no rows".into());
        }
        Ok(Dataset {
            columns,
            label_column: label_column.to_owned(),
            x,
            labels,
        })
    }

    /// Keeps the first `n` examples.
    pub fn truncate(&mut self, n: usize) {
        let f = self.features();
        self.labels.truncate(n);
        self.x.truncate(n * f);
    }

    /// Checks that every value lies in `[lo, hi]`, the range attacks clip to.
    pub fn check_range(&self, lo: f32, hi: f32) -> Result<()> {
        if let Some((i, v)) = self
            .x
            .iter()
            .enumerate()
            .find(|(_, v)| **v < lo || **v > hi)
        {
            let f = self.features();
            return Err(EvalError::Mismatch(format!(
                "row {} column `{}` is {v}, outside the valid input range [{lo}, {hi}]; set --clip-min/--clip-max to the model's input range",
                i / f + 1,
                self.columns.get(i % f).map_or("", String::as_str)
            )));
        }
        Ok(())
    }
}

/// Writes examples as CSV (the same header as the input) to `path` through a temporary file and a rename.
pub fn write_csv(
    path: &Path,
    columns: &[String],
    label_column: &str,
    x: &[f32],
    labels: &[usize],
) -> Result<()> {
    let io =
        |err: std::io::Error| EvalError::Data(format!("cannot write `{}`: {err}", path.display()));
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        let mut header: Vec<&str> = columns.iter().map(String::as_str).collect();
        header.push(label_column);
        writeln!(out, "{}", header.join(",")).map_err(io)?;
        let f = columns.len().max(1);
        for (row, label) in x.chunks_exact(f).zip(labels) {
            let mut line = String::with_capacity(f * 8);
            for v in row {
                line.push_str(&format!("{v},"));
            }
            line.push_str(&label.to_string());
            writeln!(out, "{line}").map_err(io)?;
        }
        out.flush().map_err(io)?;
    }
    tmp.persist(path).map_err(|err| io(err.error))?;
    Ok(())
}
