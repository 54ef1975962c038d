//! `rampart push MODEL_DIR --name N --version V --state-dir D --config FILE`: store a model version in the
//! registry, sealed, after the deployment gate passes it (exit 1 and nothing stored when refused). A local
//! operation on the state directory; the gateway will expose the same over HTTP.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rampart_deploy::{Error, GateConfig, Registry};

use crate::cmd::sign::Format;
use crate::Outcome;

/// Arguments of `rampart push`.
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct Args {
    /// The signed model directory
    pub model_dir: PathBuf,
    /// Model name
    #[arg(long)]
    pub name: String,
    /// Version (immutable once pushed)
    #[arg(long)]
    pub version: String,
    /// The registry's state directory
    #[arg(long, value_name = "DIR", default_value = "rampart-state")]
    pub state_dir: PathBuf,
    /// Gate configuration (TOML) naming the trusted keys, scan severity and policy
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The principal pushing (recorded in the audit log; default `$USER@host`)
    #[arg(long)]
    pub principal: Option<String>,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = GateConfig::load(&args.config).context("cannot load the gate configuration")?;
    let principal = args.principal.clone().unwrap_or_else(principal_from_env);
    let registry = Registry::open(&args.state_dir);
    match registry.push(
        &args.model_dir,
        &args.name,
        &args.version,
        &principal,
        &config,
    ) {
        Ok(info) => {
            let mut out = std::io::stdout().lock();
            match args.format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?,
                Format::Text => writeln!(
                    out,
                    "pushed `{}@{}` ({}, signed by `{}`, {} sealed bytes)",
                    info.model, info.version, info.root_digest, info.signer, info.sealed_bytes
                )?,
            }
            Ok(Outcome::Clean)
        }
        Err(Error::Refused(report)) => {
            crate::cmd::deploy::print_report(&report, args.format)?;
            Ok(Outcome::Findings)
        }
        Err(e) => Err(e).context("cannot push"),
    }
}

/// `$USER` (a valid principal name), else `cli`.
pub fn principal_from_env() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| rampart_deploy::check_name("principal", u).is_ok())
        .unwrap_or_else(|| "cli".into())
}
