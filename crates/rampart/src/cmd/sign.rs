//! `rampart sign`. Not built yet: the issue that delivers it replaces this file.

use crate::Outcome;

/// Arguments of `rampart sign`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart sign` is not built yet")
}
