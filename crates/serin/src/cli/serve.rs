//! `serin serve`: the daemon (API, dashboard, proxies and controllers of all
//! registered rollouts).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::api::guard::Guard;
use crate::daemon::{Commands, Daemon, Paths};
use crate::exit::{Exit, invalid};
use crate::statedir::ApiFile;
use crate::store::Store;

/// The URL a client on this machine uses for an API bound to `own`: a
/// wildcard address (`0.0.0.0`, `::`) is reached on loopback.
pub fn local_url(own: SocketAddr) -> String {
    let ip = match own.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, own.port()))
}

/// The state dir when neither `--state-dir` nor `SERIN_STATE_DIR` names one.
pub const DEFAULT_STATE_DIR: &str = ".serin";

/// Where state lives: `--state-dir`, `SERIN_STATE_DIR`, default `.serin/`.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Directory of the state database (and of `api.json`, which says where
    /// this serin's API listens, for the other commands).
    #[arg(long = "state-dir", env = "SERIN_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

impl StateArgs {
    /// Opens the store as its one owner (exit 1 if the directory cannot be
    /// used, or another serin owns it).
    pub fn open(&self) -> anyhow::Result<Store> {
        Store::open_owned(&self.state_dir).context("cannot open the state")
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
    /// Bearer token that mutations must carry; required off loopback. Visible
    /// ASCII without spaces; an empty or blank value is refused (exit 2).
    #[arg(long, env = "SERIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A command rollout files may make the daemon run, word for word (e.g.
    /// `--allow-command 'nginx -t' --allow-command 'nginx -s reload'` for the
    /// nginx provider's defaults). Repeatable; none by default: a file sent
    /// over the API never runs a program the operator did not name here.
    #[arg(long = "allow-command", value_name = "COMMAND")]
    pub allow_command: Vec<String>,
    /// A directory whose files rollout files may make the daemon write and
    /// read (the nginx provider's include file and access log, e.g.
    /// `--allow-path /etc/nginx/serin`): a file must lie inside it, symbolic
    /// links resolved. Repeatable; none by default: a file sent over the API
    /// never makes the daemon touch a file the operator did not allow here.
    #[arg(long = "allow-path", value_name = "DIR")]
    pub allow_path: Vec<PathBuf>,
    /// Another DNS name the API answers to, as clients write it in the URL
    /// without the port (e.g. a Kubernetes Service's DNS name). Repeatable;
    /// by default only IP addresses and `localhost`, so that no web page can
    /// reach it through DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_host: Vec<String>,
    /// Also run the Kubernetes controller of Rollout resources
    /// (`serin.dev/v1alpha1`) in the cluster of KUBECONFIG (or in-cluster):
    /// the GitOps mode of docs/kubernetes.md. Its API, dashboard and
    /// /metrics then also show the cluster's Rollouts, read-only, on every
    /// replica.
    #[arg(long)]
    pub kubernetes: bool,
    /// With --kubernetes: the one namespace whose Rollouts it runs (default: all).
    #[arg(long, value_name = "NS", requires = "kubernetes")]
    pub namespace: Option<String>,
    /// With --kubernetes: seconds one watch request lasts before it is made
    /// again (tests shorten it to meet a 410 soon).
    #[arg(long, hide = true, default_value_t = 290, requires = "kubernetes")]
    pub watch_timeout: u32,
}

/// Runs the daemon until SIGINT/SIGTERM.
pub fn run(args: Args) -> anyhow::Result<Exit> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        invalid(format!(
            "--listen: expected an address like 127.0.0.1:9900, got `{}`",
            args.listen
        ))
    })?;
    let token = args
        .token
        .as_deref()
        .map(super::bearer_token)
        .transpose()
        .map_err(|e| invalid(format!("{e}; unset it to run without a token on loopback")))?;
    if !listen.ip().is_loopback() && token.is_none() {
        return Err(invalid(format!(
            "--listen {listen}: a non-loopback address needs a token (--token or SERIN_TOKEN), or anyone who can reach it could roll your services"
        )));
    }
    let paths = Paths::new(&args.allow_path).map_err(invalid)?;
    let store = args.state.open()?;
    let runtime = crate::runtime::tokio_runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| crate::error::Error::cannot_listen("--listen", listen, &e))?;
        let own = listener.local_addr()?;
        let daemon = Daemon::start(
            store,
            token,
            Commands::new(&args.allow_command),
            paths,
            if args.kubernetes {
                crate::runtime::controller_parser()
            } else {
                crate::runtime::parser()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        daemon.serves_api_at(own);
        tracing::info!(
            api = %format!("http://{own}"),
            state = %args.state.state_dir.display(),
            "serin serve ready"
        );
        let controller = if args.kubernetes {
            let client = crate::providers::traffic::kubernetes::client_from_env()
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            // Only the replica holding the Lease acts; the others watch
            // and wait to take over.
            let settings = crate::cluster::lease::LeaseSettings::from_environment(&client);
            let leadership = crate::cluster::lease::Leadership::start(client.clone(), settings)
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut options = crate::cluster::controller::Options::led_by(
                args.namespace.clone(),
                leadership.settings().identity.clone(),
                leadership.leading(),
            );
            options.watch_timeout = args.watch_timeout;
            // Every replica, leader or not, shows the cluster's Rollouts
            // (read-only) in its API, dashboard and /metrics.
            let view = crate::cluster::view::ClusterView::start(
                client.clone(),
                crate::cluster::view::ViewOptions {
                    namespace: args.namespace.clone(),
                    lease: (
                        leadership.settings().namespace.clone(),
                        leadership.settings().name.clone(),
                    ),
                    identity: leadership.settings().identity.clone(),
                    leading: leadership.leading(),
                    watch_timeout: args.watch_timeout,
                },
            );
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(crate::cluster::controller::run(client, options, async move {
                let _ = stopped.await;
            }));
            Some((stop, task, leadership, view))
        } else {
            None
        };
        let cluster = controller.as_ref().map(|c| c.3.clone());
        let app = crate::api::server::router_with(
            daemon.clone(),
            Guard::new(own, &args.allow_host),
            cluster,
        );
        // The other commands find this daemon through the state dir; its
        // token is never written.
        let url = local_url(own);
        let file = ApiFile {
            url: url.clone(),
            pid: std::process::id(),
            command: "serve".into(),
            token: None,
        };
        let published = crate::statedir::publish(&args.state.state_dir, &file)
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot write {}: {e}; the other commands find this daemon only with --api {url}",
                    args.state.state_dir.join(crate::statedir::API_FILE).display()
                );
            })
            .ok();
        // Rollouts stay where they are in the store; the next start resumes them.
        let served =
            crate::shutdown::serve_until(listener, app, daemon, stop_signal())
                .await;
        drop(published);
        if let Some((stop, task, leadership, view)) = controller {
            drop(view);
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::error!("the Kubernetes controller's task failed: {e}");
            }
            // The controller has stopped acting: hand the Lease over now
            // rather than after its 15 s.
            if let Err(e) = leadership.release().await {
                tracing::warn!("releasing the Lease: {e}");
            }
        }
        served?;
        Ok(Exit::Success)
    })
}

/// SIGINT, SIGTERM, or SIGHUP (the terminal of a `serin serve &` closed),
/// said in the log: the daemon then stops as on SIGTERM, its rollouts left
/// where they are in the store for the next start, instead of dying with
/// `api.json` left behind and nothing said. Under `nohup` SIGHUP stays
/// ignored.
async fn stop_signal() {
    let signal = crate::cli::signals::which_or_hangup().await;
    let what = "serin serve stops; its rollouts stay where they are in the store, and the next start resumes them";
    if signal == "SIGHUP" {
        // Not asked for by an operator's stop: worth a warning.
        tracing::warn!("{signal} (the terminal closed?): {what}");
    } else {
        tracing::info!("{signal}: {what}");
    }
}
