//! `rampart keys`. Not built yet: the issue that delivers it replaces this file.

use crate::Outcome;

/// Subcommands of `rampart keys`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Not built yet
    Todo,
}

pub fn run(_command: Command) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart keys` is not built yet")
}
