//! `serin demo`: the self-contained tour. In one process it starts three demo
//! apps (stable, a bad canary, a good canary), serin's proxy and steady load;
//! runs the bad canary (rolled back by the judge) and then the good one
//! (promoted); prints every decision and writes an HTML report of each.
//! A closed output does not stop it: it runs to its end (as `serin run`).
//!
//! Nothing here is special-cased: the rollouts are rollout files read by the
//! same parser, run by the same code as `serin run`, judged by the same
//! judge, stored in the same state directory.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::cli::output::{OutputFormat, write_ignoring};
use crate::cli::run::run_setup;
use crate::cli::serve::StateArgs;
use crate::demo::app::{DemoApp, Faults};
use crate::demo::load::{LoadConfig, Summary, run_load};
use crate::exit::{Exit, invalid};

/// Flags of `serin demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub state: StateArgs,
    /// Requests per second of the demo's load.
    #[arg(long, default_value_t = 200.0)]
    pub rps: f64,
}

/// The rollout file of one act of the tour.
fn rollout_file(
    listen: SocketAddr,
    stable: SocketAddr,
    canary: SocketAddr,
    version: &str,
) -> String {
    format!(
        "# written by `serin demo`
name: checkout
stable:
  version: v1.1.0
  upstream: http://{stable}
canary:
  version: {version}
  upstream: http://{canary}
traffic:
  provider: builtin
  listen: {listen}
steps:
  - setWeight: 5
  - pause: {{ duration: 5s }}
  - setWeight: 25
  - pause: {{ duration: 5s }}
  - setWeight: 50
  - pause: {{ duration: 5s }}
  - setWeight: 100
  - pause: {{ duration: 3s }}
analysis:
  interval: 1s
  minRequests: 40
  errorRate:  {{ max: 5%, maxRatioToStable: 2.0 }}
  latencyP95: {{ max: 250ms, maxRatioToStable: 1.5 }}
  statistics: {{ method: sequential, confidence: 0.95 }}
  noDataLimit: 3
"
    )
}

async fn app(version: &str, faults: Faults) -> anyhow::Result<DemoApp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(DemoApp::start(listener, version.to_string(), faults).await?)
}

/// A port nothing listens on right now, for the proxy.
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = StdListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn report_path(dir: &Path, act: &str) -> PathBuf {
    dir.join(format!("demo-{act}.html"))
}

pub fn run(args: Args, output: OutputFormat) -> anyhow::Result<Exit> {
    if !(args.rps.is_finite() && args.rps >= 20.0 && args.rps <= 5000.0) {
        return Err(invalid(format!(
            "--rps: expected a rate from 20 to 5000, got {}",
            args.rps
        )));
    }
    let store = args.state.open()?;
    let rt = crate::runtime::tokio_runtime()?;
    rt.block_on(tour(args, store, output))
}

async fn tour(
    args: Args,
    store: crate::store::Store,
    output: OutputFormat,
) -> anyhow::Result<Exit> {
    // Like `serin run`, the tour writes ignoring failures: a reader that
    // went away (`serin demo | head -3`) never stops it mid-rollout; it goes
    // on to its end, writes its reports and exits with its outcome.
    let say = |s: &str| {
        if output == OutputFormat::Text {
            write_ignoring(true, &format!("{s}\n"));
        }
    };
    // Stable: healthy, ~20 ms. The bad canary: 12 % errors and slower. The
    // good canary: as healthy as stable.
    let healthy = Faults {
        error_rate: 0.002,
        latency_ms: 20,
        jitter_ms: 10,
    };
    let stable = app("v1.1.0", healthy.clone()).await?;
    let bad = app(
        "v1.2.0",
        Faults {
            error_rate: 0.12,
            latency_ms: 35,
            jitter_ms: 15,
        },
    )
    .await?;
    let good = app("v1.2.1", healthy.clone()).await?;
    let listen = free_port()?;
    let proxy_url = format!("http://{listen}/");
    say(&format!(
        "serin demo: stable v1.1.0 on {}, canaries v1.2.0 (bad: 12 % errors) on {} and v1.2.1 (good) on {}",
        stable.addr(),
        bad.addr(),
        good.addr()
    ));
    say(&format!(
        "            serin's proxy on {listen}, {} requests/s of load through it, state in {}\n",
        args.rps,
        args.state.state_dir.display()
    ));

    let mut outcomes = Vec::new();
    for (act, canary, version, expect) in [
        ("rolled-back", &bad, "v1.2.0", Exit::RolledBack),
        ("promoted", &good, "v1.2.1", Exit::Success),
    ] {
        let text = rollout_file(listen, stable.addr(), canary.addr(), version);
        let rollout =
            crate::spec::parse(&text, "demo rollout").map_err(|e| anyhow::anyhow!("{e}"))?;
        let setup =
            crate::runtime::Setup::from_rollout(&rollout).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (stop_load, stopped) = oneshot::channel::<()>();
        let load = tokio::spawn(run_load(
            LoadConfig {
                url: proxy_url.clone(),
                rps: args.rps,
                duration: Duration::from_secs(60),
                headers: Vec::new(),
            },
            async move {
                let _ = stopped.await;
            },
        ));
        let report = report_path(&args.state.state_dir, act);
        say(&format!(
            "── act {}: v1.1.0 → {version} ──",
            outcomes.len() + 1
        ));
        // Each rollout shows its progress as `serin run` does in text (on
        // stderr without a terminal); with `-o json` the tour's one document
        // comes at the end, so no rollout prints one of its own.
        let progress = OutputFormat::Text;
        let exit = run_setup(setup, text, store.clone(), Some(report.clone()), progress).await;
        let _ = stop_load.send(());
        let summary: Option<Summary> = load.await.ok().and_then(Result::ok);
        let exit = exit?;
        if let Some(s) = summary {
            say(&format!(
                "   load: {} requests, {} 5xx, p50 {} ms, p99 {} ms",
                s.count,
                s.classes.server_error,
                s.p50_ms.map_or("-".into(), |v| format!("{v:.1}")),
                s.p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
            ));
        }
        say("");
        outcomes.push((act, version, exit, expect, report));
    }
    stable.stop().await;
    bad.stop().await;
    good.stop().await;

    let mut all_as_expected = true;
    for (act, version, exit, expect, report) in &outcomes {
        all_as_expected &= exit == expect;
        say(&format!(
            "{version}: {act:<12} (exit {}), report: {}",
            *exit as i32,
            report.display()
        ));
    }
    if output == OutputFormat::Json {
        let json: Vec<_> = outcomes
            .iter()
            .map(|(act, version, exit, _, report)| {
                serde_json::json!({"version": version, "outcome": act, "exit": *exit as i32, "report": report})
            })
            .collect();
        write_ignoring(true, &format!("{}\n", serde_json::to_string_pretty(&json)?));
    }
    if all_as_expected {
        say(
            "\nThe bad canary was rolled back by the judge and the good one promoted. The reports show every decision with its numbers, and charts.",
        );
        Ok(Exit::Success)
    } else {
        Err(anyhow::anyhow!(
            "the demo did not end as expected (bad canary rolled back, good canary promoted)"
        ))
    }
}
