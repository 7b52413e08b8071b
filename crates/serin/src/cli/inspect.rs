//! Commands that read a rollout from the daemon: `status`, `history`, `report`
//! (or from the store of a state dir no process serves: `cli::local`).

use std::path::PathBuf;

use crate::cli::client::{ApiArgs, ApiClient, rollout_path};
use crate::cli::output::OutputFormat;
use crate::exit::{Exit, invalid};
use crate::report::Report;
use crate::wire::{Event, RolloutStatus, VersionMetrics};

/// `serin status [NAME]`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One rollout; all of them without.
    pub name: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `serin history NAME`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The rollout.
    pub name: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `serin report NAME [--format json|html] [--out FILE]`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The rollout.
    pub name: String,
    /// JSON, or a self-contained HTML page with charts.
    #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
    pub format: ReportFormat,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The report's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Machine-readable.
    Json,
    /// One page with charts.
    Html,
}

fn block_on<F: std::future::Future<Output = anyhow::Result<Exit>>>(f: F) -> anyhow::Result<Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

pub fn status(args: StatusArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    block_on(async move {
        let client = ApiClient::reading(&args.api)?;
        match &args.name {
            Some(name) => {
                let s: RolloutStatus = client.get(&rollout_path(name, "")?).await?;
                match output {
                    OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&s)?),
                    OutputFormat::Text => print_status(&s),
                }
            }
            None => {
                let all: Vec<RolloutStatus> = client.get("/api/v1/rollouts").await?;
                match output {
                    OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&all)?),
                    OutputFormat::Text if all.is_empty() => crate::outln!("no rollouts registered"),
                    OutputFormat::Text => {
                        for (i, s) in all.iter().enumerate() {
                            if i > 0 {
                                crate::outln!();
                            }
                            print_status(s);
                        }
                    }
                }
            }
        }
        Ok(Exit::Success)
    })
}

/// The text form of a status object.
pub fn print_status(s: &RolloutStatus) {
    let step = if s.steps == 0 {
        String::new()
    } else {
        format!("  step {}/{}", (s.step + 1).min(s.steps), s.steps)
    };
    // The weight in force when it differs from the decided one: status
    // never claims a split the data plane does not serve.
    let weight = match s.weight_in_force {
        Some(w) if w != s.weight => {
            format!("canary weight {w} % in force ({} % decided)", s.weight)
        }
        // Not known (the data plane has not started): never claim it.
        None if !s.not_in_force.is_empty() => {
            format!(
                "canary weight in force unknown ({} % decided, not applied yet)",
                s.weight
            )
        }
        _ => format!("canary weight {} %", s.weight),
    };
    crate::outln!("{}  {}{step}  {weight}", s.name, s.phase);
    crate::outln!(
        "  stable {}   canary {}",
        s.stable.version.as_deref().unwrap_or("-"),
        s.canary.version.as_deref().unwrap_or("none")
    );
    crate::outln!("  {}", s.reason);
    if let Some(v) = &s.last_verdict {
        crate::outln!("  last verdict: {} at {}: {}", v.verdict, v.at, v.reason);
    }
    if let Some(m) = &s.metrics {
        crate::outln!(
            "  {:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}",
            "",
            "requests",
            "errors",
            "error rate",
            "p50",
            "p95",
            "p99"
        );
        for (label, v) in [("stable", &m.stable), ("canary", &m.canary)] {
            crate::outln!("  {label:<8} {}", metrics_row(v));
        }
    }
}

fn metrics_row(v: &VersionMetrics) -> String {
    let ms = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}ms"));
    format!(
        "{:>9} {:>7} {:>10} {:>9} {:>9} {:>9}",
        v.requests,
        v.errors,
        v.error_rate
            .map_or("-".to_string(), |r| format!("{:.2}%", 100.0 * r)),
        ms(v.p50_ms),
        ms(v.p95_ms),
        ms(v.p99_ms)
    )
}

pub fn history(args: HistoryArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    block_on(async move {
        let client = ApiClient::reading(&args.api)?;
        let events: Vec<Event> = client.get(&rollout_path(&args.name, "/events")?).await?;
        match output {
            OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&events)?),
            OutputFormat::Text => print_history(&events),
        }
        Ok(Exit::Success)
    })
}

/// The text form of a rollout's decisions.
pub fn print_history(events: &[Event]) {
    for e in events {
        crate::outln!(
            "{}  {:<11} step {:<2} weight {:>6} %  {:<12} {}",
            e.at,
            e.kind,
            e.step + 1,
            e.weight,
            e.verdict.as_deref().unwrap_or(""),
            e.reason
        );
    }
}

pub fn report(args: ReportArgs) -> anyhow::Result<Exit> {
    block_on(async move {
        let client = ApiClient::reading(&args.api)?;
        let text = match args.format {
            ReportFormat::Json => {
                let r: Report = client.get(&rollout_path(&args.name, "/report")?).await?;
                serde_json::to_string_pretty(&r)? + "\n"
            }
            ReportFormat::Html => {
                client
                    .get_text(&rollout_path(&args.name, "/report?format=html")?)
                    .await?
            }
        };
        match &args.out {
            Some(path) => {
                std::fs::write(path, text)
                    .map_err(|e| invalid(format!("--out {}: {e}", path.display())))?;
                crate::errln!("report written to {}", path.display());
            }
            None => crate::out!("{text}"),
        }
        Ok(Exit::Success)
    })
}
