//! One run of `rampart data check`: a streaming pass (schema, leaks, exact duplicates, leakage, class balance),
//! then the checks that need the rows in memory (near duplicates, labels, outliers, poisoning) on the first
//! `max_rows` rows.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use crate::checks::dedup::{self, hash_cells, Against, ExactDuplicates};
use crate::checks::leaks::LeakScanner;
use crate::checks::poison::PoisonOptions;
use crate::error::{DataError, Result};
use crate::load::{self, Format, Row};
use crate::matrix::Matrix;
use crate::report::{self, CheckResult, Report, Status};
use crate::schema::{Schema, SchemaChecker};

mod in_memory;

use in_memory::{label_audit, outlier_check, poisoning, representations};

/// The checks, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    Schema,
    Leaks,
    Duplicates,
    NearDuplicates,
    Leakage,
    Labels,
    Outliers,
    Poisoning,
}

impl Check {
    pub const ALL: [Check; 8] = [
        Check::Schema,
        Check::Leaks,
        Check::Duplicates,
        Check::NearDuplicates,
        Check::Leakage,
        Check::Labels,
        Check::Outliers,
        Check::Poisoning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Check::Schema => "schema",
            Check::Leaks => "leaks",
            Check::Duplicates => "duplicates",
            Check::NearDuplicates => "near-duplicates",
            Check::Leakage => "leakage",
            Check::Labels => "labels",
            Check::Outliers => "outliers",
            Check::Poisoning => "poisoning",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Findings allowed before the check fails, by default.
    pub fn default_limit(self) -> Limit {
        match self {
            Check::Schema
            | Check::Leaks
            | Check::Duplicates
            | Check::Leakage
            | Check::Poisoning => Limit::Count(0),
            Check::NearDuplicates => Limit::Percent(1.0),
            Check::Labels => Limit::Percent(3.0),
            Check::Outliers => Limit::Percent(2.0),
        }
    }
}

/// How many findings a check tolerates: a count, or a percentage of the rows checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Count(u64),
    Percent(f64),
}

impl Limit {
    /// `"0"`, `"25"` or `"2.5%"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| (0.0..=100.0).contains(v))
                .map(Limit::Percent),
            None => text.trim().parse::<u64>().ok().map(Limit::Count),
        }
    }

    fn allows(self, findings: u64, rows: u64) -> bool {
        match self {
            Limit::Count(n) => findings <= n,
            Limit::Percent(p) => (findings as f64) <= p / 100.0 * rows as f64,
        }
    }

    fn describe(self) -> String {
        match self {
            Limit::Count(n) => n.to_string(),
            Limit::Percent(p) => format!("{p}%"),
        }
    }
}

/// Outlier scoring method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierMethod {
    IsolationForest,
    Knn,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub data: PathBuf,
    pub format: Option<Format>,
    pub schema: Option<(PathBuf, Schema)>,
    /// Label column; `label` when present and none is named.
    pub label: Option<String>,
    /// Checks asked for by name; `None` runs every check that applies.
    pub checks: Option<Vec<Check>>,
    pub against: Option<PathBuf>,
    pub pred_probs: Option<PathBuf>,
    pub representations: Option<PathBuf>,
    pub model: Option<PathBuf>,
    /// Rows kept in memory for the in-memory checks.
    pub max_rows: usize,
    /// Rows used by the quadratic checks (numeric near duplicates, k-NN outliers).
    pub max_pairwise_rows: usize,
    pub folds: usize,
    pub near_duplicate_similarity: f64,
    pub near_duplicate_distance: f64,
    pub outlier_method: OutlierMethod,
    pub iforest_threshold: f64,
    pub knn_z: f64,
    pub column_z: f64,
    pub poison: PoisonOptions,
    pub limits: BTreeMap<Check, Limit>,
    /// Findings listed per check (all are counted).
    pub keep: usize,
}

impl Options {
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            format: None,
            schema: None,
            label: None,
            checks: None,
            against: None,
            pred_probs: None,
            representations: None,
            model: None,
            max_rows: 200_000,
            max_pairwise_rows: 10_000,
            folds: 5,
            near_duplicate_similarity: 0.8,
            near_duplicate_distance: 0.01,
            outlier_method: OutlierMethod::IsolationForest,
            iforest_threshold: 0.62,
            knn_z: 5.0,
            column_z: 5.0,
            poison: PoisonOptions::default(),
            limits: BTreeMap::new(),
            keep: 1000,
        }
    }

    fn wants(&self, check: Check) -> bool {
        self.checks.as_ref().is_none_or(|c| c.contains(&check))
    }

    fn explicit(&self, check: Check) -> bool {
        self.checks.as_ref().is_some_and(|c| c.contains(&check))
    }
}

/// Rows held in memory for the second phase.
#[derive(Debug, Default)]
struct Memory {
    lines: Vec<u64>,
    features: Vec<f64>,
    labels: Vec<Option<String>>,
    texts: Vec<(u64, String)>,
}

const SNIFF_ROWS: usize = 1000;
/// Labels counted in a short list before the hash map takes the others.
const FEW_CLASSES: usize = 16;

/// Run the checks; `progress(bytes, rows)` is called now and then during the streaming pass.
pub fn run(opts: &Options, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    let started = Instant::now();
    let mut source = load::open(&opts.data, opts.format)?;
    let columns = source.columns().to_vec();
    let label_index = match &opts.label {
        Some(name) => Some(columns.iter().position(|c| c == name).ok_or_else(|| {
            DataError::Invalid(format!(
                "label column `{name}` is not in `{}`; columns are: {}",
                opts.data.display(),
                columns.join(", ")
            ))
        })?),
        None => columns.iter().position(|c| c == "label"),
    };
    // Sniff the first rows to tell numeric feature columns from text columns.
    let mut buffered: Vec<Row> = Vec::new();
    loop {
        let mut row = Row::default();
        if buffered.len() >= SNIFF_ROWS || !source.next_row(&mut row)? {
            break;
        }
        buffered.push(row);
    }
    let mut numeric = Vec::new();
    let mut text = Vec::new();
    for c in (0..columns.len()).filter(|&c| Some(c) != label_index) {
        let values: Vec<&str> = buffered.iter().filter_map(|r| r.get(c)).collect();
        if !values.is_empty()
            && values
                .iter()
                .all(|v| v.trim().parse::<f64>().is_ok_and(f64::is_finite))
        {
            numeric.push(c);
        } else if !values.is_empty() {
            text.push(c);
        }
    }
    let feature_columns: Vec<usize> = (0..columns.len())
        .filter(|&c| Some(c) != label_index)
        .collect();
    let against = match (&opts.against, opts.wants(Check::Leakage)) {
        (Some(path), true) => Some(load_against(path, opts.format, &columns, &feature_columns)?),
        _ => None,
    };
    let mut schema = opts
        .schema
        .as_ref()
        .map(|(_, s)| SchemaChecker::new(s, &columns, opts.keep));
    let mut leaks = opts.wants(Check::Leaks).then(|| {
        LeakScanner::new(
            &columns,
            &label_index.into_iter().collect::<Vec<_>>(),
            opts.keep,
        )
    });
    let want_duplicates = opts.wants(Check::Duplicates);
    let mut exact = if want_duplicates {
        ExactDuplicates::with_capacity(opts.keep, expected_rows(opts, &*source, buffered.len()))
    } else {
        ExactDuplicates::new(opts.keep)
    };
    let mut leaked: Vec<u64> = Vec::new();
    let mut leaked_count = 0u64;
    let mut class_counts: HashMap<String, u64> = HashMap::new();
    // The first few labels are counted here, found by comparison: no hashing of the label on every row.
    let mut few_classes: Vec<(String, u64)> = Vec::new();
    let mut memory = Memory::default();
    let mut rows = 0u64;
    let mut scratch = Vec::new();
    let mut visit = |row: &Row, memory: &mut Memory| {
        if let Some(s) = schema.as_mut() {
            s.check_row(row);
        }
        if let Some(l) = leaks.as_mut() {
            l.scan_row(row);
        }
        let label_value = label_index.and_then(|i| row.get(i));
        if want_duplicates || against.is_some() {
            // The features are every column but the label's.
            let features_hash = dedup::hash_all_but(row, label_index, &mut scratch);
            if want_duplicates {
                let label_hash = label_index.map_or(0, |_| dedup::hash_label(label_value));
                exact.observe(row.line(), features_hash, label_hash);
            }
            if let Some(a) = &against {
                if a.hashes.contains(&features_hash) {
                    leaked_count += 1;
                    if leaked.len() < opts.keep {
                        leaked.push(row.line());
                    }
                }
            }
        }
        if let Some(label) = label_value {
            // Look up before inserting: no allocation for a label already counted.
            if let Some((_, count)) = few_classes.iter_mut().find(|(l, _)| l == label) {
                *count += 1;
            } else if let Some(count) = class_counts.get_mut(label) {
                *count += 1;
            } else if few_classes.len() < FEW_CLASSES {
                few_classes.push((label.to_string(), 1));
            } else if class_counts.len() + few_classes.len() < 10_000 {
                class_counts.insert(label.to_string(), 1);
            }
        }
        if memory.lines.len() < opts.max_rows {
            memory.lines.push(row.line());
            memory.features.extend(numeric.iter().map(|&c| {
                row.get(c)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                    .unwrap_or(f64::NAN)
            }));
            memory.labels.push(label_value.map(str::to_string));
            if !text.is_empty() {
                let joined: Vec<&str> = text.iter().filter_map(|&c| row.get(c)).collect();
                memory.texts.push((row.line(), joined.join(" ")));
            }
        }
    };
    for row in &buffered {
        visit(row, &mut memory);
        rows += 1;
    }
    drop(buffered);
    let mut row = Row::default();
    while source.next_row(&mut row)? {
        visit(&row, &mut memory);
        rows += 1;
        if rows % 65_536 == 0 {
            progress(source.bytes_read(), rows);
        }
    }
    let bytes = source.bytes_read();
    progress(bytes, rows);
    if let Some(s) = schema.as_mut() {
        s.finish();
    }
    exact.finish();
    class_counts.extend(few_classes);
    let streamed_seconds = started.elapsed().as_secs_f64();

    let mut report = Report::new(&opts.data, &columns, rows, bytes);
    report.streaming_seconds = streamed_seconds;
    report.label_column = label_index.and_then(|i| columns.get(i).cloned());
    report.numeric_columns = numeric
        .iter()
        .filter_map(|&c| columns.get(c).cloned())
        .collect();
    report.text_columns = text
        .iter()
        .filter_map(|&c| columns.get(c).cloned())
        .collect();
    report.in_memory_rows = memory.lines.len();
    let mut results: Vec<CheckResult> = Vec::new();
    let limit = |check: Check| {
        opts.limits
            .get(&check)
            .copied()
            .unwrap_or(check.default_limit())
    };
    let mut judge = |check: Check, findings: u64, checked: u64, note: Option<String>| {
        let limit = limit(check);
        results.push(CheckResult {
            check: check.name(),
            status: if limit.allows(findings, checked) {
                Status::Pass
            } else {
                Status::Fail
            },
            findings,
            checked,
            limit: limit.describe(),
            note,
        });
    };
    let mut not_run: Vec<(Check, String)> = Vec::new();

    // Streaming checks.
    match (&schema, opts.wants(Check::Schema)) {
        (Some(s), true) => {
            judge(Check::Schema, s.count, rows, None);
            report.schema = Some(report::SchemaSection {
                violations: s.count,
                listed: s.violations.clone(),
            });
        }
        (None, true) => not_run.push((
            Check::Schema,
            "no schema given (--schema FILE; `rampart data schema DATA` writes one)".into(),
        )),
        _ => {}
    }
    if let Some(l) = &leaks {
        judge(Check::Leaks, l.total, rows, None);
        report.leaks = Some(report::LeakSection {
            total: l.total,
            by_kind: l
                .counts
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            listed: l.findings.clone(),
        });
    }
    if opts.wants(Check::Duplicates) {
        judge(
            Check::Duplicates,
            exact.count,
            rows,
            (exact.conflicting > 0)
                .then(|| format!("{} with a different label", exact.conflicting)),
        );
        report.duplicates = Some(report::DuplicateSection {
            count: exact.count,
            conflicting_labels: exact.conflicting,
            listed: exact.findings.clone(),
        });
    }
    match (&against, opts.wants(Check::Leakage)) {
        (Some(a), true) => {
            judge(Check::Leakage, leaked_count, rows, None);
            report.leakage = Some(report::LeakageSection {
                against: opts
                    .against
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                against_rows: a.rows,
                count: leaked_count,
                lines: leaked,
            });
        }
        (None, true) if opts.explicit(Check::Leakage) => not_run.push((
            Check::Leakage,
            "no other split given (--against FILE)".into(),
        )),
        _ => {}
    }

    // Class balance and the in-memory data.
    let (classes, class_of) = classes(&memory.labels, class_counts.len());
    report.classes = classes.clone();
    report.class_counts = classes
        .iter()
        .map(|c| class_counts.get(c).copied().unwrap_or(0))
        .collect();
    let n = memory.lines.len();
    let mut features = Matrix::from_vec(n, numeric.len(), std::mem::take(&mut memory.features))
        .unwrap_or_default();
    impute_missing(&mut features);
    let sampled = (rows as usize) > n;
    report.sampled = sampled;
    let labelled: Option<Vec<usize>> = class_of
        .as_ref()
        .and_then(|c| c.iter().copied().collect::<Option<Vec<usize>>>());

    if opts.wants(Check::NearDuplicates) {
        let mut pairs = Vec::new();
        if !memory.texts.is_empty() {
            pairs.extend(dedup::near_duplicate_texts(
                &memory.texts,
                opts.near_duplicate_similarity,
            ));
        }
        if features.cols() > 0 && n > 1 {
            let m = n.min(opts.max_pairwise_rows);
            let idx: Vec<usize> = (0..m).collect();
            pairs.extend(dedup::near_duplicate_rows(
                &features.select(&idx),
                memory.lines.get(..m).unwrap_or_default(),
                opts.near_duplicate_distance,
            ));
        }
        if memory.texts.is_empty() && features.cols() == 0 {
            not_run.push((Check::NearDuplicates, "no text or numeric columns".into()));
        } else {
            let flagged_rows = pairs
                .iter()
                .map(|p| p.line)
                .collect::<std::collections::BTreeSet<_>>()
                .len() as u64;
            judge(
                Check::NearDuplicates,
                flagged_rows,
                n as u64,
                (n > opts.max_pairwise_rows && features.cols() > 0).then(|| {
                    format!(
                        "numeric pairs searched among the first {} rows",
                        opts.max_pairwise_rows
                    )
                }),
            );
            report.near_duplicates = Some(report::NearDuplicateSection {
                rows: flagged_rows,
                listed: pairs.into_iter().take(opts.keep).collect(),
            });
        }
    }

    if opts.wants(Check::Labels) {
        match label_audit(opts, &features, labelled.as_deref(), classes.len(), rows, n) {
            Ok(section) => {
                let count = section.count as u64;
                judge(
                    Check::Labels,
                    count,
                    n as u64,
                    sampled.then(|| format!("first {n} rows")),
                );
                report.labels = Some(section.with_lines(&memory.lines, &classes));
            }
            Err(DataError::CannotRun { reason, .. }) => not_run.push((Check::Labels, reason)),
            Err(other) => return Err(other),
        }
    }

    // Learned representations (a file or the model's penultimate layer), computed once for outliers and poisoning.
    let learned = if opts.wants(Check::Outliers) || opts.wants(Check::Poisoning) {
        match representations(opts, &features, rows, n) {
            Ok(learned) => learned,
            Err(DataError::CannotRun { reason, .. }) => {
                not_run.push((Check::Poisoning, reason));
                None
            }
            Err(other) => return Err(other),
        }
    } else {
        None
    };

    if opts.wants(Check::Outliers) {
        let (basis, names, described) = match &learned {
            Some((reps, source)) => (
                reps,
                (1..=reps.cols()).map(|i| format!("dim{i}")).collect(),
                Some(format!("on the representations from {source}")),
            ),
            None => (&features, report.numeric_columns.clone(), None),
        };
        if basis.cols() == 0 || n < 10 {
            not_run.push((
                Check::Outliers,
                "needs numeric columns (or --representations) and at least 10 rows".into(),
            ));
        } else {
            let section = outlier_check(opts, basis, &memory.lines, &names);
            judge(Check::Outliers, section.count, n as u64, described);
            report.outliers = Some(section);
        }
    }

    if opts.wants(Check::Poisoning) && !not_run.iter().any(|(c, _)| *c == Check::Poisoning) {
        match poisoning(
            opts,
            &features,
            learned.as_ref(),
            labelled.as_deref(),
            classes.len(),
        ) {
            Ok((source, result)) => {
                judge(
                    Check::Poisoning,
                    result.flagged.len() as u64,
                    n as u64,
                    Some(format!("representations: {source}")),
                );
                report.poisoning = Some(report::PoisonSection::new(
                    source,
                    result,
                    &memory.lines,
                    &classes,
                ));
            }
            Err(DataError::CannotRun { reason, .. }) => not_run.push((Check::Poisoning, reason)),
            Err(other) => return Err(other),
        }
    }

    for (check, reason) in not_run {
        if opts.explicit(check) {
            return Err(DataError::CannotRun {
                check: check.name(),
                reason,
            });
        }
        results.push(CheckResult {
            check: check.name(),
            status: Status::NotRun,
            findings: 0,
            checked: 0,
            limit: limit(check).describe(),
            note: Some(reason),
        });
    }
    results.sort_by_key(|r| Check::parse(r.check));
    report.checks = results;
    report.seconds = started.elapsed().as_secs_f64();
    report.finish();
    Ok(report)
}

/// Most rows the duplicate table is sized for up front (32 bytes each); a larger file grows it as it goes.
const MAX_EXPECTED_ROWS: u64 = 1 << 24;

/// Rows the file probably holds, from its size and the bytes per row of the first `sniffed` rows.
fn expected_rows(opts: &Options, source: &dyn load::RowSource, sniffed: usize) -> usize {
    let size = std::fs::metadata(&opts.data).map_or(0, |m| m.len());
    let per_row = source.bytes_read() / (sniffed as u64).max(1);
    let rows = size.checked_div(per_row).unwrap_or(sniffed as u64);
    usize::try_from(rows.clamp(sniffed as u64, MAX_EXPECTED_ROWS)).unwrap_or(sniffed)
}

fn load_against(
    path: &std::path::Path,
    format: Option<Format>,
    columns: &[String],
    features: &[usize],
) -> Result<Against> {
    let mut source = load::open(path, format)?;
    let theirs = source.columns().to_vec();
    let mapping: Vec<usize> = features
        .iter()
        .filter_map(|&c| columns.get(c))
        .map(|name| {
            theirs
                .iter()
                .position(|t| t == name)
                .ok_or_else(|| DataError::Shape {
                    path: path.to_path_buf(),
                    message: format!(
                        "column `{name}` is missing; --against needs the same feature columns"
                    ),
                })
        })
        .collect::<Result<_>>()?;
    let mut against = Against::default();
    let mut row = Row::default();
    let mut scratch = Vec::new();
    while source.next_row(&mut row)? {
        against.rows += 1;
        against
            .hashes
            .insert(hash_cells(&row, Some(&mapping), &mut scratch));
    }
    Ok(against)
}

/// Class names and each row's class index. Non-negative integer labels are their own index (so that column `j` of a
/// probabilities file is class `j`); other labels are sorted. `None` when there are too many distinct labels.
fn classes(
    labels: &[Option<String>],
    distinct: usize,
) -> (Vec<String>, Option<Vec<Option<usize>>>) {
    if labels.iter().all(Option::is_none) || distinct > 1000 {
        return (Vec::new(), None);
    }
    let ints: Option<Vec<Option<usize>>> = labels
        .iter()
        .map(|l| match l {
            None => Some(None),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&v| v < 1000)
                .map(Some),
        })
        .collect();
    if let Some(ints) = ints {
        let k = ints.iter().flatten().max().map_or(0, |m| m + 1);
        return ((0..k).map(|i| i.to_string()).collect(), Some(ints));
    }
    let mut names: Vec<String> = labels.iter().flatten().cloned().collect();
    names.sort();
    names.dedup();
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let of = labels
        .iter()
        .map(|l| l.as_deref().and_then(|v| index.get(v).copied()))
        .collect();
    (names, Some(of))
}

/// Replace missing numeric cells with their column's mean.
fn impute_missing(x: &mut Matrix) {
    let cols = x.cols();
    let mut sums = vec![(0.0, 0usize); cols];
    for row in x.iter_rows() {
        for (s, v) in sums.iter_mut().zip(row) {
            if !v.is_nan() {
                s.0 += v;
                s.1 += 1;
            }
        }
    }
    let means: Vec<f64> = sums
        .iter()
        .map(|(s, n)| if *n > 0 { s / *n as f64 } else { 0.0 })
        .collect();
    for i in 0..x.rows() {
        for (v, m) in x.row_mut(i).iter_mut().zip(&means) {
            if v.is_nan() {
                *v = *m;
            }
        }
    }
}
