//! Schemas: the TOML file a person writes (or edits after `rampart data schema`), and its streaming checks.
//!
//! ```toml
//! allow_extra_columns = false
//! min_rows = 100
//!
//! [[column]]
//! name = "age"
//! type = "int"          # int | float | string | bool
//! min = 0
//! max = 130
//! max_null_rate = 0.0   # fraction of rows that may be empty
//!
//! [[column]]
//! name = "country"
//! type = "string"
//! categories = ["DE", "FR", "US"]
//! pattern = "^[A-Z]{2}$"  # each value must match (whole value)
//! unique = false
//! ```

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::load::Row;

/// Value types a column may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int,
    Float,
    String,
    Bool,
}

/// One column's rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// The column must be present in the header (default true).
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default)]
    pub unique: bool,
    /// Largest allowed fraction of empty cells (default 0).
    #[serde(default)]
    pub max_null_rate: f64,
}

fn yes() -> bool {
    true
}

/// A data set's schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Columns not named in the schema are allowed (default false).
    #[serde(default)]
    pub allow_extra_columns: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u64>,
    #[serde(default, rename = "column")]
    pub columns: Vec<ColumnSpec>,
}

impl Schema {
    /// Read and validate a schema file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parse and validate schema text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let err = |message: String| DataError::Schema {
            path: path.to_path_buf(),
            message,
        };
        let schema: Self =
            toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
        let mut names = HashSet::new();
        for column in &schema.columns {
            if !names.insert(column.name.as_str()) {
                return Err(err(format!("column `{}` is declared twice", column.name)));
            }
            if let (Some(min), Some(max)) = (column.min, column.max) {
                if min > max {
                    return Err(err(format!(
                        "column `{}`: min {min} is above max {max}",
                        column.name
                    )));
                }
            }
            if !(0.0..=1.0).contains(&column.max_null_rate) {
                return Err(err(format!(
                    "column `{}`: max_null_rate must be between 0 and 1",
                    column.name
                )));
            }
            if let Some(pattern) = &column.pattern {
                regex::Regex::new(pattern)
                    .map_err(|e| err(format!("column `{}`: bad pattern: {e}", column.name)))?;
            }
            if (column.min.is_some() || column.max.is_some())
                && matches!(column.kind, ColumnType::String | ColumnType::Bool)
            {
                return Err(err(format!(
                    "column `{}`: min and max apply to int and float columns only",
                    column.name
                )));
            }
        }
        Ok(schema)
    }

    /// The schema as TOML text with a short guide on top.
    pub fn to_toml(&self) -> Result<String> {
        let body = toml::to_string(self)
            .map_err(|e| DataError::Invalid(format!("cannot write schema: {e}")))?;
        Ok(format!(
            "# Rampart data schema, inferred from the data: review every rule before relying on it.\n\
             # Keys per column: name, type (int|float|string|bool), required, min, max, categories, pattern,\n\
             # min_length, max_length, unique, max_null_rate.\n{body}"
        ))
    }
}

/// A rule broken, at a place.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// Line (or record) of the row, 0 for whole-file rules.
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

/// Whether `value` parses as the declared type; returns its numeric value for int and float.
pub(crate) fn parse_typed(kind: ColumnType, value: &str) -> Result<Option<f64>, &'static str> {
    match kind {
        ColumnType::Int => value
            .trim()
            .parse::<i64>()
            .map(|v| Some(v as f64))
            .map_err(|_| "not an integer"),
        ColumnType::Float => match parse_f64(value) {
            Some(v) if v.is_finite() => Ok(Some(v)),
            Some(_) => Err("not a finite number"),
            None => Err("not a number"),
        },
        ColumnType::Bool => {
            let value = value.trim();
            if ["true", "false", "0", "1", "yes", "no"]
                .iter()
                .any(|b| value.eq_ignore_ascii_case(b))
            {
                Ok(None)
            } else {
                Err("not a boolean")
            }
        }
        ColumnType::String => Ok(None),
    }
}

/// Powers of ten exact in `f64`.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// `value.trim().parse::<f64>()`, with a fast path for the plain decimals (`-12.345`) data sets are mostly made of:
/// with at most 15 digits the digits as an integer and the power of ten are both exact in `f64`, so one division,
/// rounded correctly by IEEE 754, gives the very value the standard parser gives. Anything else takes the standard
/// parser.
pub(crate) fn parse_f64(value: &str) -> Option<f64> {
    let bytes = value.as_bytes();
    let (negative, body) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    // Integer digits, then optionally a point and decimal digits, and nothing else.
    let digits = |from: usize, mantissa: &mut u64| {
        let mut at = from;
        while let Some(d) = body
            .get(at)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
        {
            *mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            at += 1;
        }
        at
    };
    let mut mantissa = 0u64;
    let whole = digits(0, &mut mantissa);
    let (end, decimals) = if body.get(whole) == Some(&b'.') {
        let end = digits(whole + 1, &mut mantissa);
        (end, end - whole - 1)
    } else {
        (whole, 0)
    };
    let exact = whole > 0 && end == body.len() && (end == whole || decimals > 0);
    if let (true, Some(scale)) = (exact && whole + decimals <= 15, POW10.get(decimals)) {
        let v = mantissa as f64 / scale;
        return Some(if negative { -v } else { v });
    }
    value.trim().parse::<f64>().ok()
}

struct Compiled {
    spec: ColumnSpec,
    index: Option<usize>,
    pattern: Option<regex::Regex>,
    /// Sorted, searched by bisection.
    categories: Option<Vec<String>>,
    /// 128-bit seeded hashes of the values of a unique column: a collision cannot report a repeat that is not one.
    seen: HashSet<u128, crate::checks::dedup::RowHashes>,
    nulls: u64,
}

/// Checks rows against a schema as they stream by.
pub struct SchemaChecker {
    columns: Vec<Compiled>,
    schema_min_rows: Option<u64>,
    schema_max_rows: Option<u64>,
    rows: u64,
    /// How many violations were found.
    pub count: u64,
    /// The first violations, in order (at most `keep`).
    pub violations: Vec<Violation>,
    keep: usize,
}

impl std::fmt::Debug for SchemaChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaChecker")
            .field("count", &self.count)
            .finish()
    }
}

impl SchemaChecker {
    /// Prepare the checks for a file with these columns; header-level violations are recorded at once.
    pub fn new(schema: &Schema, header: &[String], keep: usize) -> Self {
        let mut checker = Self {
            columns: Vec::new(),
            schema_min_rows: schema.min_rows,
            schema_max_rows: schema.max_rows,
            rows: 0,
            count: 0,
            violations: Vec::new(),
            keep,
        };
        for spec in &schema.columns {
            let index = header.iter().position(|h| *h == spec.name);
            if index.is_none() && spec.required {
                checker.record(
                    0,
                    Some(&spec.name),
                    "required column is missing".to_string(),
                );
            }
            checker.columns.push(Compiled {
                pattern: spec
                    .pattern
                    .as_deref()
                    .and_then(|p| regex::Regex::new(&format!("^(?:{p})$")).ok()),
                categories: spec.categories.as_ref().map(|c| {
                    let mut sorted = c.clone();
                    sorted.sort_unstable();
                    sorted
                }),
                spec: spec.clone(),
                index,
                seen: HashSet::default(),
                nulls: 0,
            });
        }
        if !schema.allow_extra_columns {
            for name in header {
                if !schema.columns.iter().any(|c| c.name == *name) {
                    checker.record(
                        0,
                        Some(name),
                        "column not in the schema (set allow_extra_columns = true to allow)"
                            .to_string(),
                    );
                }
            }
        }
        checker
    }

    fn record(&mut self, line: u64, column: Option<&str>, message: String) {
        self.count += 1;
        if self.violations.len() < self.keep {
            self.violations.push(Violation {
                line,
                column: column.map(str::to_string),
                message,
            });
        }
    }

    /// Check one row.
    pub fn check_row(&mut self, row: &Row) {
        self.rows += 1;
        let mut found: Vec<(String, String)> = Vec::new();
        for column in &mut self.columns {
            let Some(index) = column.index else { continue };
            let Some(value) = row.get(index) else {
                column.nulls += 1;
                continue;
            };
            let spec = &column.spec;
            match parse_typed(spec.kind, value) {
                Err(why) => found.push((
                    spec.name.clone(),
                    format!("{why}: {}", crate::excerpt(value)),
                )),
                Ok(number) => {
                    if let Some(v) = number {
                        if spec.min.is_some_and(|min| v < min)
                            || spec.max.is_some_and(|max| v > max)
                        {
                            found.push((
                                spec.name.clone(),
                                format!(
                                    "{v} is outside [{}, {}]",
                                    spec.min.map_or("-inf".into(), |m| m.to_string()),
                                    spec.max.map_or("inf".into(), |m| m.to_string())
                                ),
                            ));
                        }
                    }
                }
            }
            if let Some(categories) = &column.categories {
                if categories
                    .binary_search_by(|c| c.as_str().cmp(value))
                    .is_err()
                {
                    found.push((
                        spec.name.clone(),
                        format!("{} is not one of the categories", crate::excerpt(value)),
                    ));
                }
            }
            if let Some(pattern) = &column.pattern {
                if !pattern.is_match(value) {
                    found.push((
                        spec.name.clone(),
                        format!("{} does not match the pattern", crate::excerpt(value)),
                    ));
                }
            }
            // Characters are counted only when the byte length leaves the answer open (never fewer than bytes / 4).
            let (bytes, min, max) = (value.len(), spec.min_length, spec.max_length);
            if min.is_some_and(|m| bytes / 4 < m) || max.is_some_and(|m| bytes > m) {
                let length = value.chars().count();
                if min.is_some_and(|m| length < m) || max.is_some_and(|m| length > m) {
                    found.push((
                        spec.name.clone(),
                        format!("length {length} is outside the allowed lengths"),
                    ));
                }
            }
            if spec.unique && !column.seen.insert(crate::checks::dedup::hash_value(value)) {
                found.push((
                    spec.name.clone(),
                    format!(
                        "{} repeats an earlier value (unique column)",
                        crate::excerpt(value)
                    ),
                ));
            }
        }
        for (column, message) in found {
            self.record(row.line(), Some(&column), message);
        }
    }

    /// Whole-file rules (null rates, row counts), once all rows are seen.
    pub fn finish(&mut self) {
        let rows = self.rows;
        let mut found = Vec::new();
        for column in &self.columns {
            if column.index.is_none() || rows == 0 {
                continue;
            }
            let rate = column.nulls as f64 / rows as f64;
            if rate > column.spec.max_null_rate {
                found.push((
                    column.spec.name.clone(),
                    format!(
                        "{:.2}% of cells are empty; max_null_rate allows {:.2}%",
                        rate * 100.0,
                        column.spec.max_null_rate * 100.0
                    ),
                ));
            }
        }
        for (column, message) in found {
            self.record(0, Some(&column), message);
        }
        if let Some(min) = self.schema_min_rows.filter(|&m| rows < m) {
            self.record(
                0,
                None,
                format!("{rows} rows; the schema requires at least {min}"),
            );
        }
        if let Some(max) = self.schema_max_rows.filter(|&m| rows > m) {
            self.record(
                0,
                None,
                format!("{rows} rows; the schema allows at most {max}"),
            );
        }
    }
}

/// What a column held, for inferring a starting schema.
#[derive(Debug, Clone)]
pub struct ColumnProfile {
    pub name: String,
    pub count: u64,
    pub nulls: u64,
    all_int: bool,
    all_float: bool,
    all_bool: bool,
    pub min: f64,
    pub max: f64,
    distinct: HashSet<String>,
    distinct_overflow: bool,
    hashes: HashSet<u64>,
    repeats: bool,
    max_length: usize,
}

/// Most distinct values remembered per column for categories.
const MAX_CATEGORIES: usize = 20;
/// Most values hashed per column to decide uniqueness.
const MAX_UNIQUE_TRACK: usize = 1_000_000;

impl ColumnProfile {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            count: 0,
            nulls: 0,
            all_int: true,
            all_float: true,
            all_bool: true,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            distinct: HashSet::new(),
            distinct_overflow: false,
            hashes: HashSet::new(),
            repeats: false,
            max_length: 0,
        }
    }

    pub fn observe(&mut self, value: Option<&str>) {
        let Some(value) = value else {
            self.nulls += 1;
            return;
        };
        self.count += 1;
        if self.all_int && value.trim().parse::<i64>().is_err() {
            self.all_int = false;
        }
        if self.all_float || self.all_int {
            match parse_f64(value) {
                Some(v) if v.is_finite() => {
                    self.min = self.min.min(v);
                    self.max = self.max.max(v);
                }
                _ => {
                    self.all_float = false;
                    self.all_int = false;
                }
            }
        }
        if self.all_bool
            && !["true", "false"]
                .iter()
                .any(|b| value.trim().eq_ignore_ascii_case(b))
        {
            self.all_bool = false;
        }
        if !self.distinct_overflow {
            if self.distinct.len() < MAX_CATEGORIES || self.distinct.contains(value) {
                self.distinct.insert(value.to_string());
            } else {
                self.distinct_overflow = true;
                self.distinct.clear();
            }
        }
        if !self.repeats
            && self.hashes.len() < MAX_UNIQUE_TRACK
            && !self
                .hashes
                .insert(xxhash_rust::xxh3::xxh3_64(value.as_bytes()))
        {
            self.repeats = true;
            self.hashes = HashSet::new();
        }
        self.max_length = self.max_length.max(value.chars().count());
    }

    /// Whether every non-empty value is a finite number.
    pub fn is_numeric(&self) -> bool {
        self.count > 0 && (self.all_float || self.all_int)
    }

    /// The rule this profile suggests.
    pub fn infer(&self, rows: u64) -> ColumnSpec {
        let kind = if self.count == 0 {
            ColumnType::String
        } else if self.all_int {
            ColumnType::Int
        } else if self.all_float {
            ColumnType::Float
        } else if self.all_bool {
            ColumnType::Bool
        } else {
            ColumnType::String
        };
        let numeric = matches!(kind, ColumnType::Int | ColumnType::Float) && self.count > 0;
        let mut categories = None;
        if kind == ColumnType::String
            && !self.distinct_overflow
            && !self.distinct.is_empty()
            && self.count >= 2 * self.distinct.len() as u64
        {
            let mut values: Vec<String> = self.distinct.iter().cloned().collect();
            values.sort();
            categories = Some(values);
        }
        let null_rate = if rows == 0 {
            0.0
        } else {
            self.nulls as f64 / rows as f64
        };
        ColumnSpec {
            name: self.name.clone(),
            kind,
            required: true,
            min: numeric.then_some(self.min),
            max: numeric.then_some(self.max),
            categories,
            pattern: None,
            min_length: None,
            max_length: (kind == ColumnType::String).then_some(self.max_length),
            unique: !self.repeats
                && self.count > 1
                && self.hashes.len() < MAX_UNIQUE_TRACK
                && matches!(kind, ColumnType::Int | ColumnType::String)
                && self.nulls == 0,
            // Round up to the next percent so that the data it came from passes.
            max_null_rate: ((null_rate * 100.0).ceil() / 100.0).min(1.0),
        }
    }
}

/// Infer a starting schema by streaming the data once.
pub fn infer(path: &Path, format: Option<crate::load::Format>) -> Result<Schema> {
    let mut source = crate::load::open(path, format)?;
    let mut profiles: Vec<ColumnProfile> = source
        .columns()
        .iter()
        .map(|c| ColumnProfile::new(c))
        .collect();
    let mut row = Row::default();
    let mut rows = 0u64;
    while source.next_row(&mut row)? {
        rows += 1;
        for (profile, cell) in profiles.iter_mut().zip(row.cells()) {
            profile.observe(cell);
        }
    }
    Ok(Schema {
        allow_extra_columns: false,
        min_rows: Some(1),
        max_rows: None,
        columns: profiles.iter().map(|p| p.infer(rows)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_f64;

    #[test]
    fn the_fast_decimal_path_gives_the_standard_value() {
        let mut rng = crate::matrix::Rng::new(5);
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "1.",
            ".5",
            "1.5e3",
            "inf",
            "NaN",
            "-",
            "",
            " 2.5 ",
            "1..2",
            "12a",
            "0.1",
            "0.3",
            "123456789012345",
            "1234567890123456",
            "9007199254740993",
            "0.000000000000001",
            "99999999999999.9",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20_000 {
            let v = rng.next_u64();
            let decimals = (v % 17) as usize;
            let digits = format!("{}", v >> 4);
            let cut = digits.len().saturating_sub(decimals);
            let sign = if v % 3 == 0 { "-" } else { "" };
            cases.push(format!(
                "{sign}{}.{}",
                &digits[..cut.max(1)],
                &digits[cut.max(1)..]
            ));
            cases.push(format!("{sign}{}", &digits[..cut.max(1)]));
        }
        for case in &cases {
            let standard = case.trim().parse::<f64>().ok();
            let fast = parse_f64(case);
            assert_eq!(
                fast.map(f64::to_bits),
                standard.map(f64::to_bits),
                "{case:?}"
            );
        }
    }
}
