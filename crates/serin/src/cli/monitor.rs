//! `serin monitor NAME`: a live, per-interval comparison of stable and canary
//! (the controller's samples), with the classic threshold flags of the
//! monitoring script serin replaces: `--error-threshold`, `--latency-threshold`,
//! `--auto-rollback`, `--alert-on-error`.
//!
//! The thresholds here are an operator's own, on top of the rollout's
//! analysis: without `--auto-rollback` a breach is only shown (an advisory
//! mode for building trust in a threshold before it may act).

use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;

use crate::cli::client::{ApiArgs, ApiClient, rollout_path};
use crate::cli::output::OutputFormat;
use crate::exit::{Exit, invalid};
use crate::report::{Report, SampleEntry};
use crate::rollout::{Actor, Breach};
use crate::store::VersionSample;
use crate::wire::{RollbackRequest, RolloutStatus};

/// Flags of `serin monitor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rollout.
    pub name: String,
    /// How long to watch (e.g. 60s, 5m); until the rollout ends without it.
    #[arg(long)]
    pub duration: Option<String>,
    /// Canary error rate, in percent, that counts as a breach.
    #[arg(long = "error-threshold", default_value_t = 5.0)]
    pub error_threshold: f64,
    /// Canary p95 latency, in milliseconds, that counts as a breach.
    #[arg(long = "latency-threshold", default_value_t = 1000.0)]
    pub latency_threshold: f64,
    /// Roll back on the first breach.
    #[arg(long = "auto-rollback")]
    pub auto_rollback: bool,
    /// On a breach, print an alert to stderr and exit 3 at the end.
    #[arg(long = "alert-on-error")]
    pub alert_on_error: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// A breach of the operator's thresholds in one interval, if any.
pub fn breach(canary: &VersionSample, error_pct: f64, latency_ms: f64) -> Option<String> {
    measured_breach(canary, error_pct, latency_ms).map(|(said, _)| said)
}

/// A breach in words, and as the rollback request's typed breach (metric,
/// threshold, value) that becomes the run's outcome.
fn measured_breach(
    canary: &VersionSample,
    error_pct: f64,
    latency_ms: f64,
) -> Option<(String, Breach)> {
    if let Some(rate) = canary.error_rate()
        && 100.0 * rate > error_pct
    {
        let value = (10_000.0 * rate).round() / 100.0;
        return Some((
            format!(
                "canary error rate {:.2} % ({}/{}) above --error-threshold {error_pct} %",
                100.0 * rate,
                canary.errors,
                canary.requests
            ),
            Breach {
                metric: "error-rate".into(),
                threshold: error_pct,
                value,
            },
        ));
    }
    if let Some(p95) = canary.p95_ms
        && p95 > latency_ms
    {
        return Some((
            format!("canary p95 {p95:.1} ms above --latency-threshold {latency_ms} ms"),
            Breach {
                metric: "p95".into(),
                threshold: latency_ms,
                value: (10.0 * p95).round() / 10.0,
            },
        ));
    }
    None
}

pub fn run(args: Args, output: OutputFormat) -> anyhow::Result<Exit> {
    let limit = args
        .duration
        .as_deref()
        .map(|d| crate::time::parse_duration(d).map_err(|e| invalid(format!("--duration: {e}"))))
        .transpose()?;
    if !(0.0..=100.0).contains(&args.error_threshold) {
        return Err(invalid(format!(
            "--error-threshold: expected a percentage from 0 to 100, got {}",
            args.error_threshold
        )));
    }
    if args.latency_threshold.is_nan() || args.latency_threshold <= 0.0 {
        return Err(invalid(format!(
            "--latency-threshold: expected milliseconds above 0, got {}",
            args.latency_threshold
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let client = ApiClient::new(&args.api)?.acting_as(Actor::Monitor);
        let started = Instant::now();
        let mut seen = 0usize;
        let mut alerted = false;
        // `-o json`: one document at the end, with every interval seen.
        let mut intervals: Vec<serde_json::Value> = Vec::new();
        if output == OutputFormat::Text {
            crate::outln!(
                "{:<24} {:>6}  {:>18}  {:>18}  {:>10} {:>10}  verdict",
                "time",
                "weight",
                "stable err",
                "canary err",
                "stable p95",
                "canary p95"
            );
        }
        // The run being watched: the current one (the report's default,
        // its last); a new run starts the table from zero.
        let mut watching: Option<u32> = None;
        loop {
            let report: Report = client.get(&rollout_path(&args.name, "/report")?).await?;
            if watching != Some(report.run) {
                if output == OutputFormat::Text {
                    let state = match &report.outcome {
                        Some(o) => format!("ended: {o}"),
                        None => "in progress".to_string(),
                    };
                    crate::outln!(
                        "{}: run {} ({state}); per interval, this run",
                        args.name,
                        report.run
                    );
                }
                watching = Some(report.run);
                seen = 0;
            }
            // An ended run's numbers are history: shown, never an alert.
            let live = report.outcome.is_none();
            for s in report.samples.iter().skip(seen) {
                let b = measured_breach(&s.canary, args.error_threshold, args.latency_threshold)
                    .filter(|_| live);
                let said = b.as_ref().map(|(said, _)| said.as_str());
                match output {
                    OutputFormat::Text => print_sample(s, said),
                    OutputFormat::Json => intervals.push(sample_json(s, said)),
                }
                if let Some((why, measured)) = b {
                    if args.alert_on_error && !alerted {
                        crate::errln!("ALERT {}: {why}", args.name);
                    }
                    alerted = true;
                    if args.auto_rollback
                        && matches!(report.phase.as_str(), "Progressing" | "Paused")
                    {
                        let status: RolloutStatus = client
                            .send(
                                Method::POST,
                                &rollout_path(&args.name, "/rollback")?,
                                &RollbackRequest {
                                    breach: Some(measured),
                                },
                            )
                            .await?;
                        crate::errln!(
                            "{}: rolled back by monitor: {why} (phase {})",
                            args.name,
                            status.phase
                        );
                        if output == OutputFormat::Json {
                            let doc = json!({"name": args.name, "phase": status.phase,
                                "reason": status.reason, "rolledBackByMonitor": why,
                                "intervals": intervals});
                            crate::outln!("{}", serde_json::to_string_pretty(&doc)?);
                        }
                        for what in &status.not_in_force {
                            crate::errln!("{}: {what}", args.name);
                        }
                        return Ok(Exit::RolledBack);
                    }
                }
            }
            seen = report.samples.len();
            let finished = matches!(report.phase.as_str(), "Succeeded" | "RolledBack");
            if finished || limit.is_some_and(|l| started.elapsed() >= l) {
                match output {
                    OutputFormat::Text => {
                        crate::outln!("{}: {} — {}", args.name, report.phase, report.reason)
                    }
                    OutputFormat::Json => {
                        let doc = json!({"name": args.name, "phase": report.phase,
                            "reason": report.reason, "rolledBackByMonitor": null,
                            "intervals": intervals});
                        crate::outln!("{}", serde_json::to_string_pretty(&doc)?);
                    }
                }
                return Ok(if alerted && args.alert_on_error {
                    Exit::RolledBack
                } else {
                    Exit::Success
                });
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// One interval of `-o json`.
fn sample_json(s: &SampleEntry, breach: Option<&str>) -> serde_json::Value {
    json!({"at": crate::time::rfc3339(crate::time::Millis(s.at_ms)), "atMs": s.at_ms,
           "step": s.step, "weight": s.weight, "verdict": s.verdict,
           "stable": s.stable, "canary": s.canary, "breach": breach})
}

/// One interval as a line of text.
fn print_sample(s: &SampleEntry, breach: Option<&str>) {
    let err = |v: &VersionSample| match v.error_rate() {
        Some(r) => format!("{:.2}% ({}/{})", 100.0 * r, v.errors, v.requests),
        None => "-".into(),
    };
    let p95 = |v: &VersionSample| v.p95_ms.map_or("-".into(), |p| format!("{p:.1}ms"));
    crate::outln!(
        "{:<24} {:>5}%  {:>18}  {:>18}  {:>10} {:>10}  {}{}",
        crate::time::rfc3339(crate::time::Millis(s.at_ms)),
        s.weight,
        err(&s.stable),
        err(&s.canary),
        p95(&s.stable),
        p95(&s.canary),
        s.verdict,
        breach.map(|b| format!("  BREACH: {b}")).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaches_follow_the_thresholds() {
        let v = |requests, errors, p95| VersionSample {
            requests,
            errors,
            p95_ms: p95,
            ..Default::default()
        };
        assert!(
            breach(&v(100, 6, Some(10.0)), 5.0, 1000.0)
                .unwrap()
                .contains("6.00 %")
        );
        assert!(
            breach(&v(100, 5, Some(10.0)), 5.0, 1000.0).is_none(),
            "at the threshold is not above it"
        );
        assert!(
            breach(&v(100, 0, Some(1200.0)), 5.0, 1000.0)
                .unwrap()
                .contains("p95 1200.0 ms")
        );
        assert!(
            breach(&v(0, 0, None), 5.0, 1000.0).is_none(),
            "no data is no breach here; the analysis owns no-data"
        );
    }
}
