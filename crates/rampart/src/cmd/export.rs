//! `rampart export request|approve|fetch`: export control as local commands over the state directory (the
//! gateway will expose the same operations over HTTP with authenticated principals). Export is refused by
//! default; an approval by another principal with the `approver` role and a fresh TOTP code allows one export
//! by the requester for a limited time. Exit 0 done, 1 denied, 2 error.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rampart_deploy::export::ExportControl;
use rampart_deploy::{Error, ExportRequest, Registry};

use crate::cmd::sign::Format;
use crate::Outcome;

/// `rampart export` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Ask for one export of a model version (prints the request id)
    Request(RequestArgs),
    /// Approve a request with a TOTP code (another principal with the `approver` role)
    Approve(ApproveArgs),
    /// Export a model version you hold a live approval for (consumes it)
    Fetch(FetchArgs),
}

/// Arguments shared by every `rampart export` subcommand.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The principal acting
    #[arg(long)]
    pub principal: String,
    /// The registry's state directory
    #[arg(long, value_name = "DIR", default_value = "rampart-state")]
    pub state_dir: PathBuf,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `rampart export request`.
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct RequestArgs {
    /// Model name
    #[arg(long)]
    pub name: String,
    /// Version
    #[arg(long)]
    pub version: String,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `rampart export approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The request id printed by `rampart export request`
    pub request: String,
    /// The current 6-digit code from the approver's authenticator
    #[arg(long, value_name = "CODE")]
    pub totp: String,
    /// Minutes the requester has to export once approved
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=1440))]
    pub valid_minutes: u64,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `rampart export fetch`.
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct FetchArgs {
    /// Model name
    #[arg(long)]
    pub name: String,
    /// Version
    #[arg(long)]
    pub version: String,
    /// Where to write the model directory (must not exist)
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    #[command(flatten)]
    pub common: Common,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    let (common, result) = match command {
        Command::Request(a) => {
            let registry = Registry::open(&a.common.state_dir);
            let r = ExportControl::new(&registry).request(&a.name, &a.version, &a.common.principal);
            (a.common, r)
        }
        Command::Approve(a) => {
            let registry = Registry::open(&a.common.state_dir);
            let mut control = ExportControl::new(&registry);
            control.grant_ttl = a.valid_minutes * 60;
            let r = control.approve(&a.request, &a.common.principal, &a.totp);
            (a.common, r)
        }
        Command::Fetch(a) => {
            let registry = Registry::open(&a.common.state_dir);
            let r = ExportControl::new(&registry).export(
                &a.name,
                &a.version,
                &a.common.principal,
                &a.output,
            );
            (a.common, r)
        }
    };
    match result {
        Ok(request) => {
            print(&request, common.format)?;
            Ok(Outcome::Clean)
        }
        Err(Error::Denied(reason)) => {
            let mut out = std::io::stdout().lock();
            match common.format {
                Format::Json => writeln!(out, "{}", serde_json::json!({"denied": reason}))?,
                Format::Text => writeln!(out, "denied: {reason}")?,
            }
            Ok(Outcome::Findings)
        }
        Err(e) => Err(e).context("export control"),
    }
}

fn print(request: &ExportRequest, format: Format) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(request)?)?,
        Format::Text => writeln!(
            out,
            "{} {}@{} for {}: {:?}",
            request.id, request.model, request.version, request.requester, request.status
        )?,
    }
    Ok(())
}
