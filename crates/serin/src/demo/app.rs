//! `serin demo-app`. (Placeholder.)

use crate::exit::Exit;

/// Flags of `serin demo-app`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<Exit> {
    anyhow::bail!("serin demo-app is not built yet")
}
