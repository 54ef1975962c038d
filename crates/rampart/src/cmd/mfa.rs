//! `rampart mfa enroll --principal P`: a fresh TOTP secret (RFC 6238: SHA-1, 30 s, 6 digits) for an approver,
//! printed once as an `otpauth://` URI and base32; stored 0600 under the state directory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rampart_deploy::export::ExportControl;
use rampart_deploy::Registry;

use crate::Outcome;

/// `rampart mfa` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Enrol a principal's authenticator (prints the secret once) and optionally grant roles
    Enroll(EnrollArgs),
}

/// Arguments of `rampart mfa enroll`.
#[derive(Debug, clap::Args)]
pub struct EnrollArgs {
    /// The principal to enrol
    #[arg(long)]
    pub principal: String,
    /// Roles to grant as well (repeatable), e.g. `approver` to approve exports
    #[arg(long = "role", value_name = "ROLE")]
    pub roles: Vec<String>,
    /// Replace an existing secret (the old authenticator stops working)
    #[arg(long)]
    pub replace: bool,
    /// The registry's state directory
    #[arg(long, value_name = "DIR", default_value = "rampart-state")]
    pub state_dir: PathBuf,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    let Command::Enroll(args) = command;
    let registry = Registry::open(&args.state_dir);
    let control = ExportControl::new(&registry);
    let enrollment = control
        .enroll(
            &args.principal,
            &args.roles,
            args.replace,
            &crate::cmd::push::principal_from_env(),
        )
        .context("cannot enrol")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", enrollment.uri)?;
    writeln!(out, "secret: {}", enrollment.secret)?;
    writeln!(
        std::io::stderr(),
        "add this to the principal's authenticator app now; it is not shown again"
    )?;
    Ok(Outcome::Clean)
}
