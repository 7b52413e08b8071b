//! `serin proxy`: the data plane alone. (Owned by the proxy work; placeholder.)

use crate::exit::Exit;

/// Flags of `serin proxy`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<Exit> {
    anyhow::bail!("serin proxy is not built yet")
}
