//! `rampart deploy check MODEL_DIR --config FILE`: the deployment gate in CI (signature by a trusted key, scan,
//! policy), with exit 0 pass, 1 refused, 2 error; the gateway runs the same gate before (re)loading a model.
//! `rampart deploy list --state-dir D`: the versions in the registry.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rampart_deploy::{GateConfig, GateReport, Registry};

use crate::cmd::sign::Format;
use crate::Outcome;

/// `rampart deploy` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the deployment gate on a model directory: exit 0 pass, 1 refused, 2 error
    Check(CheckArgs),
    /// List the model versions stored in the registry
    List(ListArgs),
}

/// Arguments of `rampart deploy check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The model directory (signed, with its signature inside)
    pub model_dir: PathBuf,
    /// Gate configuration (TOML): trusted_keys, signature, fail_on, [policy]
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `rampart deploy list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// The registry's state directory
    #[arg(long, value_name = "DIR", default_value = "rampart-state")]
    pub state_dir: PathBuf,
    /// Only this model
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Check(args) => check(args),
        Command::List(args) => list(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let config = GateConfig::load(&args.config).context("cannot load the gate configuration")?;
    if !args.model_dir.is_dir() {
        anyhow::bail!(
            "`{}` is not a directory; give the signed model directory",
            args.model_dir.display()
        );
    }
    let report = rampart_deploy::check(&args.model_dir, &config);
    crate::cmd::audit::record(&report.record(&crate::cmd::audit::actor()))?;
    print_report(&report, args.format)?;
    Ok(if report.passed {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Prints a gate report as text or JSON.
pub fn print_report(report: &GateReport, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(report)?)?,
        Format::Text => {
            if report.passed {
                writeln!(
                    out,
                    "pass: `{}` ({} files, {} bytes, signed by `{}`, root digest {})",
                    report.model,
                    report.files,
                    report.bytes,
                    report.signer.as_deref().unwrap_or("?"),
                    report.root_digest.as_deref().unwrap_or("?")
                )?;
            } else {
                writeln!(out, "refused: `{}`", report.model)?;
            }
            for check in &report.checks {
                let verdict = if check.passed { "ok" } else { "FAILED" };
                writeln!(out, "  {}: {verdict}", check.name)?;
                for problem in &check.problems {
                    writeln!(out, "    {problem}")?;
                }
            }
        }
    }
    Ok(())
}

fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let registry = Registry::open(&args.state_dir);
    let versions = registry.list(args.name.as_deref())?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&versions)?)?,
        Format::Text => {
            for v in &versions {
                writeln!(
                    out,
                    "{}@{}  {}  pushed by {} at {}  signed by {}",
                    v.model, v.version, v.root_digest, v.pushed_by, v.pushed_at, v.signer
                )?;
            }
        }
    }
    Ok(Outcome::Clean)
}
