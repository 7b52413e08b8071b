//! `serin serve`: the daemon (API, dashboard, proxies and controllers of all
//! registered rollouts).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::daemon::Daemon;
use crate::exit::{Exit, invalid};
use crate::store::Store;

/// Where state lives: `--state-dir`, `SERIN_STATE_DIR`, default `.serin/`.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Directory of the state database.
    #[arg(long = "state-dir", env = "SERIN_STATE_DIR", default_value = ".serin")]
    pub state_dir: PathBuf,
}

impl StateArgs {
    /// Opens the store (exit 1 if the directory cannot be used).
    pub fn open(&self) -> anyhow::Result<Store> {
        Store::open(&self.state_dir).context("cannot open the state")
    }
}

/// Flags of `serin serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the API and dashboard.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub listen: String,
    #[command(flatten)]
    pub state: StateArgs,
    /// Bearer token that mutations must carry; required off loopback.
    #[arg(long, env = "SERIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<Exit> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        invalid(format!(
            "--listen: expected an address like 127.0.0.1:9900, got `{}`",
            args.listen
        ))
    })?;
    let token = args.token.filter(|t| !t.is_empty());
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(invalid(format!(
            "--listen {listen}: a non-loopback address needs a token (--token or SERIN_TOKEN), or anyone who can reach it could roll your services"
        )));
    }
    let store = args.state.open()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| invalid(format!("--listen {listen}: {e}")))?;
        let daemon = Daemon::start(store, token, crate::runtime::parser())
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(
            api = %format!("http://{}", listener.local_addr()?),
            state = %args.state.state_dir.display(),
            "serin serve ready"
        );
        let app = crate::api::server::router(daemon.clone());
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::cli::signals::terminated())
            .await?;
        // Rollouts stay where they are in the store; the next start resumes them.
        daemon.shutdown().await;
        Ok(Exit::Success)
    })
}
