//! `rampart profile`: a profile of the training data for the gateway's range checks and detectors.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rampart_defend::profile::Profile;

use crate::cmd::sign::write_atomically;
use crate::Outcome;

/// Arguments of `rampart profile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The training data: CSV with a header row, numeric feature columns and an integer label column
    pub data: PathBuf,
    /// The label column's name
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Where to write the profile (JSON); written to a temporary file, then renamed
    #[arg(short, long)]
    pub output: PathBuf,
    /// Most rows kept as the reference sample for the neighbour-based detectors
    #[arg(long, default_value_t = 5000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=rampart_defend::profile::MAX_REFERENCE as u64))]
    pub max_reference: usize,
    /// Output format of the summary on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// A summary for people or for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines of text
    Text,
    /// One JSON object
    Json,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let file = std::fs::File::open(&args.data)
        .with_context(|| format!("cannot open `{}`", args.data.display()))?;
    let profile = Profile::from_csv(
        std::io::BufReader::new(file),
        &args.label_column,
        args.max_reference,
    )
    .with_context(|| format!("cannot profile `{}`", args.data.display()))?;
    write_atomically(&args.output, profile.to_json().as_bytes(), false)?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "profile": args.output.display().to_string(),
                "rows": profile.rows,
                "features": profile.width(),
                "classes": profile.classes.iter().map(|c| serde_json::json!({"label": c.label, "count": c.count})).collect::<Vec<_>>(),
                "reference_rows": profile.reference.len(),
            })
        )?,
        Format::Text => {
            writeln!(
                out,
                "profiled {} rows, {} features, {} classes ({} reference rows)",
                profile.rows,
                profile.width(),
                profile.classes.len(),
                profile.reference.len()
            )?;
            writeln!(out, "wrote {}", args.output.display())?;
        }
    }
    Ok(Outcome::Clean)
}
