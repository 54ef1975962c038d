//! `rampart data`. Not built yet: the issue that delivers it replaces this file.

use crate::Outcome;

/// Subcommands of `rampart data`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Not built yet
    Todo,
}

pub fn run(_command: Command) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart data` is not built yet")
}
