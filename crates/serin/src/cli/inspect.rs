//! Commands that read a rollout from the daemon: `status`, `history`, `report`
//! (or from the store of a state dir no process serves: `cli::local`).

use std::path::PathBuf;

use crate::cli::block_on;
use crate::cli::client::{ApiArgs, ApiClient, rollout_path};
use crate::cli::output::OutputFormat;
use crate::exit::{Exit, invalid};
use crate::report::{History, Report};
use crate::wire::{Event, RolloutStatus, VersionMetrics};

/// `serin status [NAME]`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One rollout; all of them without.
    pub name: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub kube: crate::cli::kube::KubeArgs,
}

/// `serin history NAME [--run N]`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The rollout.
    pub name: String,
    /// Only this run (1, 2, 3 ...).
    #[arg(long)]
    pub run: Option<u32>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `serin report NAME [--run N] [--format json|html] [--out FILE]`.
/// `--format` is the report's own format; `-o json` is what the command
/// prints: the JSON report, or with `--out` a JSON document naming the file
/// written.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The rollout.
    pub name: String,
    /// The run to report (1, 2, 3 ...); the last without.
    #[arg(long)]
    pub run: Option<u32>,
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

pub fn status(args: StatusArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    if args.kube.kubernetes {
        return crate::cli::kube::status(args.name.as_deref(), &args.kube, output);
    }
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
    let not_deployed = s.run == 0
        && s.canary.version.is_none()
        && s.reason.starts_with(crate::daemon::NOT_DEPLOYED);
    let step = if s.steps == 0 {
        String::new()
    } else {
        format!("  step {}/{}", s.step, s.steps)
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
    let run = if s.run > 0 {
        format!("  run {}", s.run)
    } else {
        String::new()
    };
    if not_deployed {
        // No step, no weight: nothing runs (as the dashboard says).
        crate::outln!("{}  {}", s.name, crate::daemon::NOT_DEPLOYED);
    } else {
        crate::outln!("{}  {}{run}{step}  {weight}", s.name, s.phase);
    }
    crate::outln!(
        "  stable {}   canary {}",
        s.stable.version.as_deref().unwrap_or("-"),
        s.canary.version.as_deref().unwrap_or("none")
    );
    crate::outln!("  {}", s.reason);
    if let Some(o) = &s.outcome {
        crate::outln!("  outcome: {o}");
    }
    if let Some(v) = &s.last_verdict {
        crate::outln!("  last verdict: {} at {}: {}", v.verdict, v.at, v.reason);
    }
    // While it runs: after its end the weight is no longer the one the
    // share was measured at.
    if let Some(split) = s
        .split
        .as_ref()
        .filter(|_| matches!(s.phase.as_str(), "Progressing" | "Paused"))
    {
        crate::outln!("  {}", split_line(split));
    }
    if let Some(w) = &s.would_roll_back {
        crate::outln!("  advisory: at {} {}", w.at, w.reason);
    }
    if let Some(m) = &s.metrics {
        // Its window, when not the whole run (the proxy started again).
        let label = if m.window.is_empty() || m.window == crate::wire::THIS_RUN {
            crate::wire::THIS_RUN
        } else {
            crate::outln!("  figures {}:", m.window);
            ""
        };
        crate::outln!(
            "  {:<8} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9}",
            label,
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
        // After a promotion the rows keep the run's roles: say whose they are.
        if s.outcome
            .as_ref()
            .is_some_and(crate::rollout::Outcome::promoted)
        {
            crate::outln!(
                "  (the run's roles: stable was {}, canary {} is the stable now)",
                m.stable_version.as_deref().unwrap_or("(not recorded)"),
                m.canary_version.as_deref().unwrap_or("(not recorded)")
            );
        }
        if let Some(b) = &m.baseline {
            crate::outln!("  {:<8} {}", "baseline", metrics_row(b));
        }
    }
}

/// The split line of `serin status`: the canary's observed share beside
/// the weight asked for, and what a mismatch means.
pub fn split_line(split: &crate::wire::Split) -> String {
    let line = format!(
        "canary got {} % of requests ({} % requested)",
        share(split.observed),
        share(split.requested)
    );
    if split.mismatch {
        format!("{line}: MISMATCH, the routing did not take effect; the step is held")
    } else {
        line
    }
}

/// A share in percent, to two decimals at most (0.4, 19.87, 20).
fn share(p: f64) -> String {
    let rounded = (p * 100.0).round() / 100.0;
    format!("{rounded}")
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

/// `?run=N`, or nothing.
fn run_query(run: Option<u32>, first: char) -> String {
    run.map(|n| format!("{first}run={n}")).unwrap_or_default()
}

pub fn history(args: HistoryArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    block_on(async move {
        let client = ApiClient::reading(&args.api)?;
        let path = rollout_path(&args.name, "/history")? + &run_query(args.run, '?');
        let history: History = client.get(&path).await?;
        match output {
            OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(&history)?),
            OutputFormat::Text => print_history(&history),
        }
        Ok(Exit::Success)
    })
}

/// The text form of a rollout's history: its runs, newest last, each with
/// its number, versions, start, end and outcome, then its decisions;
/// registrations (outside any run) where they happened.
pub fn print_history(h: &History) {
    let total = h.runs_total.max(h.runs.len());
    let runs = match (h.runs.as_slice(), total) {
        // `--run N`: which of how many.
        ([one], total) if total > 1 => format!("run {} of {total}", one.run),
        (_, 1) => "1 run".to_string(),
        (_, n) => format!("{n} runs"),
    };
    let registered = if h.registered {
        ""
    } else {
        " (cleaned up: not registered; its runs are kept)"
    };
    crate::outln!("{}: {runs}{registered}", h.name);
    let mut registrations = h.registrations.iter().peekable();
    for run in &h.runs {
        let first = run.events.first().map_or(u64::MAX, |e| e.at_ms);
        while let Some(r) = registrations.next_if(|r| r.at_ms <= first) {
            print_event(r, "");
        }
        let versions = format!(
            "{} → {}",
            run.stable_version.as_deref().unwrap_or("(not recorded)"),
            run.canary_version.as_deref().unwrap_or("(not recorded)")
        );
        let end = match (&run.ended, &run.outcome) {
            (Some(at), Some(o)) => format!("ended {at}: {o}"),
            (Some(at), None) => format!(
                "ended {at}: {}",
                run.reason.as_deref().unwrap_or("no outcome recorded")
            ),
            (None, _) => format!(
                "in progress: {}",
                run.reason.as_deref().unwrap_or("running")
            ),
        };
        crate::outln!();
        crate::outln!(
            "run {}  {versions}  started {}  {end}",
            run.run,
            run.started
        );
        for e in &run.events {
            print_event(e, "  ");
        }
    }
    let rest: Vec<_> = registrations.collect();
    if !rest.is_empty() {
        crate::outln!();
    }
    for r in rest {
        print_event(r, "");
    }
}

fn print_event(e: &Event, indent: &str) {
    // A registration has no step or weight of a run to show.
    if e.run == 0 {
        crate::outln!("{indent}{}  {:<11} {}", e.at, e.kind, e.reason);
        return;
    }
    // After a promotion the canary's weight is 0 % because it is the
    // stable now: not shown as "weight 0 %".
    let weight = if e.kind == "promoted" {
        "new stable 100%".to_string()
    } else {
        format!("weight {:>6} %", e.weight)
    };
    crate::outln!(
        "{indent}{}  {:<11} step {:<2} {weight}  {:<12} {}",
        e.at,
        e.kind,
        e.step,
        e.verdict.as_deref().unwrap_or(""),
        e.reason
    );
}

pub fn report(args: ReportArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    if output == OutputFormat::Json && args.format == ReportFormat::Html && args.out.is_none() {
        return Err(invalid(
            "-o json prints one JSON document, and --format html is a page: write it with --out FILE (or leave out --format html for the JSON report)",
        ));
    }
    block_on(async move {
        let client = ApiClient::reading(&args.api)?;
        let text = match args.format {
            ReportFormat::Json => {
                let path = rollout_path(&args.name, "/report")? + &run_query(args.run, '?');
                let r: Report = client.get(&path).await?;
                serde_json::to_string_pretty(&r)? + "\n"
            }
            ReportFormat::Html => {
                let path =
                    rollout_path(&args.name, "/report?format=html")? + &run_query(args.run, '&');
                client.get_text(&path).await?
            }
        };
        match &args.out {
            Some(path) => {
                std::fs::write(path, text)
                    .map_err(|e| invalid(format!("--out {}: {e}", path.display())))?;
                crate::errln!("report written to {}", path.display());
                if output == OutputFormat::Json {
                    let format = match args.format {
                        ReportFormat::Json => "json",
                        ReportFormat::Html => "html",
                    };
                    crate::outln!(
                        "{}",
                        serde_json::json!({"name": args.name, "format": format, "out": path})
                    );
                }
            }
            None => crate::out!("{text}"),
        }
        Ok(Exit::Success)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_line_says_what_the_canary_got_and_what_was_asked() {
        let mut split = crate::wire::Split {
            requested: 20.0,
            observed: 19.876,
            mismatch: false,
            reason: String::new(),
        };
        assert_eq!(
            split_line(&split),
            "canary got 19.88 % of requests (20 % requested)"
        );
        split.observed = 0.0;
        split.mismatch = true;
        assert!(
            split_line(&split).starts_with("canary got 0 % of requests (20 % requested): MISMATCH"),
            "{}",
            split_line(&split)
        );
    }
}
