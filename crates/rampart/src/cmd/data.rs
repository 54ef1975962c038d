//! `rampart data`: validate a training data set (`check`) and infer a starting schema (`schema`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use rampart_data::load::Format;
use rampart_data::{Check, Limit, OutlierMethod};

use crate::Outcome;

/// Subcommands of `rampart data`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check a data set: schema, leaks of personal data and secrets, duplicates, leakage, labels, outliers, poisoning
    ///
    /// Exit status: 0 when every check is within its limit, 1 when one is not, 2 on error.
    Check(Box<CheckArgs>),
    /// Write a starting schema (TOML) inferred from a data set, for a person to review and edit
    Schema(SchemaArgs),
}

/// Report formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Html,
}

/// Outlier methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Outliers {
    /// Isolation forest score at or above --iforest-threshold
    Iforest,
    /// Mean distance to the 5 nearest rows, robust z-score at or above --knn-z
    Knn,
}

/// Arguments of `rampart data check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The data set: .csv, .tsv, .jsonl/.ndjson or .parquet (streamed; files larger than memory work)
    pub data: PathBuf,
    /// TOML schema to validate against (write a first one with `rampart data schema DATA`)
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Label column (default: `label` when present)
    #[arg(long, value_name = "COLUMN")]
    pub label: Option<String>,
    /// Run only these checks (comma separated): schema, leaks, duplicates, near-duplicates, leakage, labels,
    /// outliers, poisoning. A check named here that cannot run is an error (exit 2).
    #[arg(long, value_delimiter = ',', value_name = "CHECKS")]
    pub checks: Option<Vec<String>>,
    /// Another split (e.g. the test set): rows of DATA whose features also appear there are leakage
    #[arg(long, value_name = "FILE")]
    pub against: Option<PathBuf>,
    /// Out-of-fold predicted probabilities for the label audit: one row per data row, one column per class
    /// (CSV with a header). Without it Rampart cross-validates its own logistic regression.
    #[arg(long, value_name = "FILE")]
    pub pred_probs: Option<PathBuf>,
    /// Representations (embeddings) for the outlier and poisoning checks: one row per data row (CSV, JSONL or
    /// Parquet with a header)
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub representations: Option<PathBuf>,
    /// ONNX model whose penultimate layer gives the representations for the outlier and poisoning checks (fed the
    /// numeric feature columns in order; a model trained on this data shows its backdoors there)
    #[arg(long, value_name = "MODEL.onnx")]
    pub model: Option<PathBuf>,
    /// Findings allowed per check before it fails, as CHECK=COUNT or CHECK=PERCENT% (repeatable).
    /// Defaults: schema, leaks, duplicates, leakage, poisoning 0; near-duplicates 1%; labels 3%; outliers 2%.
    #[arg(long = "max", value_name = "CHECK=LIMIT")]
    pub limits: Vec<String>,
    /// Report format on stdout (or in --output)
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Write the report to this file instead of stdout (written atomically)
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Input format when the file name does not tell: csv, tsv, jsonl, parquet
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,
    /// Rows kept in memory for near duplicates, labels, outliers and poisoning (the first ones)
    #[arg(long, default_value_t = 200_000)]
    pub max_rows: usize,
    /// Folds of the built-in cross-validation for the label audit
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Outlier method
    #[arg(long, value_enum, default_value_t = Outliers::Iforest)]
    pub outlier_method: Outliers,
    /// Isolation-forest score from which a row is an outlier
    #[arg(long, default_value_t = 0.62)]
    pub iforest_threshold: f64,
    /// Robust z-score of the k-NN distance from which a row is an outlier (--outlier-method knn)
    #[arg(long, default_value_t = 5.0)]
    pub knn_z: f64,
    /// Robust z-score of the spectral-signature projection from which a row is flagged as poisoned
    #[arg(long, default_value_t = 5.0)]
    pub spectral_z: f64,
    /// Largest share of a class that a separate activation cluster may have to be flagged as poisoned
    #[arg(long, default_value_t = 0.35)]
    pub cluster_share: f64,
    /// Smallest silhouette score of a class's two-cluster split for its smaller cluster to be tested
    #[arg(long, default_value_t = 0.25)]
    pub min_silhouette: f64,
    /// A tested cluster is flagged as poisoned when less than this share of its rows have nearest neighbours (in the
    /// input features) mostly of their own label
    #[arg(long, default_value_t = 0.5)]
    pub max_label_agreement: f64,
    /// MinHash similarity (estimated Jaccard of word 3-grams) from which two texts are near duplicates
    #[arg(long, default_value_t = 0.8)]
    pub near_duplicate_similarity: f64,
    /// RMS distance (columns scaled to [0, 1]) below which two numeric rows are near duplicates
    #[arg(long, default_value_t = 0.01)]
    pub near_duplicate_distance: f64,
    /// Findings listed per check in the text report
    #[arg(long, default_value_t = 10)]
    pub show: usize,
    /// No progress on stderr
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `rampart data schema`.
#[derive(Debug, clap::Args)]
pub struct SchemaArgs {
    /// The data set to infer from (.csv, .tsv, .jsonl/.ndjson or .parquet)
    pub data: PathBuf,
    /// Write the schema to this file instead of stdout (written atomically)
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Input format when the file name does not tell: csv, tsv, jsonl, parquet
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<String>,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Check(args) => check(*args),
        Command::Schema(args) => schema(args),
    }
}

fn input_format(name: Option<&str>) -> anyhow::Result<Option<Format>> {
    name.map(|n| {
        Format::parse(n).with_context(|| {
            format!("unknown --input-format `{n}`; use csv, tsv, jsonl or parquet")
        })
    })
    .transpose()
}

/// Write to `path` through a temporary file in the same directory, or to stdout.
fn emit(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
        Some(path) => {
            crate::cmd::sign::write_atomically(path, text.as_bytes(), false)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
    }
    Ok(())
}

fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let mut opts = rampart_data::Options::new(args.data.clone());
    opts.format = input_format(args.input_format.as_deref())?;
    if let Some(path) = &args.schema {
        let schema = rampart_data::schema::Schema::load(path)?;
        opts.schema = Some((path.clone(), schema));
    }
    opts.label = args.label;
    if let Some(names) = &args.checks {
        let mut checks = Vec::new();
        for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            checks.push(Check::parse(name).with_context(|| {
                format!("unknown check `{name}`; checks are: schema, leaks, duplicates, near-duplicates, leakage, labels, outliers, poisoning")
            })?);
        }
        opts.checks = Some(checks);
    }
    for spec in &args.limits {
        let (name, value) = spec
            .split_once('=')
            .with_context(|| format!("--max `{spec}`: write CHECK=COUNT or CHECK=PERCENT%"))?;
        let check = Check::parse(name.trim())
            .with_context(|| format!("--max `{spec}`: unknown check `{name}`"))?;
        let limit = Limit::parse(value).with_context(|| {
            format!("--max `{spec}`: the limit must be a whole number or a percentage like 2.5%")
        })?;
        opts.limits.insert(check, limit);
    }
    for (name, value, range) in [
        ("--iforest-threshold", args.iforest_threshold, 0.0..=1.0),
        ("--cluster-share", args.cluster_share, 0.0..=0.5),
        ("--min-silhouette", args.min_silhouette, -1.0..=1.0),
        ("--max-label-agreement", args.max_label_agreement, 0.0..=1.0),
        (
            "--near-duplicate-similarity",
            args.near_duplicate_similarity,
            0.0..=1.0,
        ),
        (
            "--near-duplicate-distance",
            args.near_duplicate_distance,
            0.0..=1.0,
        ),
    ] {
        anyhow::ensure!(
            range.contains(&value),
            "{name} must be between {} and {}",
            range.start(),
            range.end()
        );
    }
    anyhow::ensure!(args.max_rows > 0, "--max-rows must be at least 1");
    anyhow::ensure!(
        (2..=20).contains(&args.folds),
        "--folds must be between 2 and 20"
    );
    opts.against = args.against;
    opts.pred_probs = args.pred_probs;
    opts.representations = args.representations;
    opts.model = args.model;
    opts.max_rows = args.max_rows;
    opts.folds = args.folds;
    opts.outlier_method = match args.outlier_method {
        Outliers::Iforest => OutlierMethod::IsolationForest,
        Outliers::Knn => OutlierMethod::Knn,
    };
    opts.iforest_threshold = args.iforest_threshold;
    opts.knn_z = args.knn_z;
    opts.poison.spectral_z = args.spectral_z;
    opts.poison.max_cluster_share = args.cluster_share;
    opts.poison.min_silhouette = args.min_silhouette;
    opts.poison.max_agreement = args.max_label_agreement;
    opts.near_duplicate_similarity = args.near_duplicate_similarity;
    opts.near_duplicate_distance = args.near_duplicate_distance;

    let quiet = args.quiet;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut progress = |bytes: u64, rows: u64| {
        if !quiet && last.elapsed().as_secs_f64() >= 2.0 {
            last = Instant::now();
            let mb = bytes as f64 / 1e6;
            let _ = writeln!(
                std::io::stderr(),
                "rampart data: read {mb:.0} MB, {rows} rows ({:.0} MB/s)",
                mb / started.elapsed().as_secs_f64().max(1e-9)
            );
        }
    };
    let report = rampart_data::run(&opts, &mut progress)
        .with_context(|| format!("cannot check `{}`", args.data.display()))?;
    let text = match args.format {
        ReportFormat::Text => report.to_text(args.show),
        ReportFormat::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        ReportFormat::Html => rampart_data::html::render(&report),
    };
    emit(args.output.as_deref(), &text)?;
    Ok(if report.has_findings() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

fn schema(args: SchemaArgs) -> anyhow::Result<Outcome> {
    let format = input_format(args.input_format.as_deref())?;
    let schema = rampart_data::schema::infer(&args.data, format)
        .with_context(|| format!("cannot infer a schema from `{}`", args.data.display()))?;
    emit(args.output.as_deref(), &schema.to_toml()?)?;
    Ok(Outcome::Clean)
}
