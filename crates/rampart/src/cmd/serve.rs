//! `rampart serve`. Not built yet: the issue that delivers it replaces this file.

use crate::Outcome;

/// Arguments of `rampart serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart serve` is not built yet")
}
