//! `serin load`. (Placeholder.)

use crate::cli::output::OutputFormat;
use crate::exit::Exit;

/// Flags of `serin load`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _output: OutputFormat) -> anyhow::Result<Exit> {
    anyhow::bail!("serin load is not built yet")
}
