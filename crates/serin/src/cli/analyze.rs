//! `serin analyze`: standalone canary analysis. (Owned by the judge work; placeholder.)

use crate::cli::output::OutputFormat;
use crate::exit::Exit;

/// Flags of `serin analyze`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _output: OutputFormat) -> anyhow::Result<Exit> {
    anyhow::bail!("serin analyze is not built yet")
}
