//! `serin analyze FILE --config ROLLOUT`: judges recorded metrics with a
//! rollout file's `analysis` section, interval by interval, exactly as the
//! live judge would see them.
//!
//! Input: JSON lines, each with cumulative totals since the start for both
//! versions (docs/judge.md, "`serin analyze` input"). An optional `"weight"` (percent)
//! on a line says the canary's weight from that line on; a change starts a new
//! step, as in a live rollout. The last line counts as the end of a pause (the
//! `fixed` method judges there). Judging stops at the first `fail`, where a
//! live rollout would roll back.

use std::io::BufRead;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serin_analysis::{Histogram, Judge, Observation, Totals, Verdict};

use crate::cli::output::{OutputFormat, write_ignoring};
use crate::exit::{Exit, invalid};

/// Flags of `serin analyze`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recorded metrics: JSON lines of cumulative totals (`-` for stdin).
    pub file: PathBuf,
    /// The rollout file whose `analysis` section judges them.
    #[arg(long)]
    pub config: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    t: f64,
    #[serde(default)]
    weight: Option<f64>,
    stable: Side,
    canary: Side,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Side {
    requests: u64,
    errors: u64,
    /// Client errors (4xx), for the 4xx check; without them it is skipped.
    #[serde(default)]
    client_errors: Option<u64>,
    #[serde(default)]
    latency_ms: Option<Buckets>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Buckets {
    le: Vec<f64>,
    counts: Vec<u64>,
}

impl Side {
    fn totals(self) -> Totals {
        Totals {
            requests: self.requests,
            errors: self.errors,
            client_errors: self.client_errors,
            latency: self.latency_ms.map(|b| Histogram {
                le_ms: b.le,
                counts: b.counts,
            }),
        }
    }
}

/// One interval's verdict.
#[derive(Debug, Serialize, PartialEq)]
pub struct Entry {
    /// The line's `t`.
    pub t: f64,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: &'static str,
    /// Why, with the numbers.
    pub reason: String,
}

/// The whole analysis.
#[derive(Debug, Serialize, PartialEq)]
pub struct Outcome {
    /// `fail` if any interval failed, else the last interval's verdict.
    pub verdict: &'static str,
    /// Time of the first `fail`.
    pub at: Option<f64>,
    /// The deciding interval's reason.
    pub reason: String,
    /// Every interval.
    pub verdicts: Vec<Entry>,
}

/// The longest input line read: an observation is well under a KiB, its
/// histogram included.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// The most lines read: a day of one-second intervals, with room.
const MAX_LINES: usize = 1_000_000;

/// Judges `input` (JSON lines) with `judge`; `origin` names the input in errors.
pub fn analyze(mut judge: Judge, mut input: impl BufRead, origin: &str) -> anyhow::Result<Outcome> {
    let mut lines: Vec<(usize, Line)> = Vec::new();
    let mut raw = Vec::new();
    for n in 1.. {
        if n > MAX_LINES {
            return Err(invalid(format!(
                "{origin}: more than {MAX_LINES} lines (expected one observation per interval; split the recording)"
            )));
        }
        raw.clear();
        // Bounded: a line without an end (`/dev/zero`) is refused, not read
        // until memory runs out.
        let mut limited = std::io::Read::take(&mut input, MAX_LINE_BYTES as u64 + 1);
        let read = limited
            .read_until(b'\n', &mut raw)
            .map_err(|e| invalid(format!("{origin}:{n}: cannot read: {e}")))?;
        if read == 0 {
            break;
        }
        if raw.len() > MAX_LINE_BYTES {
            return Err(invalid(format!(
                "{origin}:{n}: longer than {} KiB (expected one JSON object per line)",
                MAX_LINE_BYTES / 1024
            )));
        }
        let line = std::str::from_utf8(&raw)
            .map_err(|e| invalid(format!("{origin}:{n}: not UTF-8 text: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            invalid(format!(
                "{origin}:{n}: expected a JSON object with t, stable and canary (docs/judge.md, `serin analyze` input): {e}"
            ))
        })?;
        lines.push((n, parsed));
    }
    if lines.is_empty() {
        return Err(invalid(format!("{origin}: no observations in the file")));
    }
    let mut previous = Observation::default();
    let mut weight: Option<f64> = None;
    let mut verdicts = Vec::new();
    let count = lines.len();
    judge.begin_stage(&previous);
    let mut fail: Option<(f64, String)> = None;
    for (k, (n, line)) in lines.into_iter().enumerate() {
        let current = Observation {
            stable: line.stable.totals(),
            canary: line.canary.totals(),
            custom: Vec::new(),
            at: Some(line.t),
            routed: None,
            baseline: None,
        };
        // Counters going backwards are bad input; implausible ones
        // (saturated, or rising faster than any service could answer) are
        // no data for that line, as in a live rollout.
        if let Err(e) = serin_analysis::check(&previous, &current)
            && !matches!(e, serin_analysis::ObservationError::Implausible { .. })
        {
            return Err(invalid(format!("{origin}:{n}: {e}")));
        }
        if let Some(w) = line.weight {
            if !(0.0..=100.0).contains(&w) {
                return Err(invalid(format!(
                    "{origin}:{n}: weight: expected a percentage from 0 to 100, got {w}"
                )));
            }
            if weight != Some(w) {
                if weight.is_some() {
                    judge.begin_stage(&previous);
                }
                judge.set_canary_weight(w);
                weight = Some(w);
            }
        }
        let judged = judge.observe(&current, k + 1 == count);
        verdicts.push(Entry {
            t: line.t,
            verdict: judged.verdict.as_str(),
            reason: judged.reason.clone(),
        });
        if !judged.skipped {
            previous = current;
        }
        if judged.verdict == Verdict::Fail {
            fail = Some((line.t, judged.reason));
            break;
        }
    }
    Ok(match fail {
        Some((at, reason)) => Outcome {
            verdict: "fail",
            at: Some(at),
            reason,
            verdicts,
        },
        None => {
            let last = verdicts.last();
            Outcome {
                verdict: last.map_or("inconclusive", |e| e.verdict),
                at: None,
                reason: last.map(|e| e.reason.clone()).unwrap_or_default(),
                verdicts,
            }
        }
    })
}

pub fn run(args: Args, output: OutputFormat) -> anyhow::Result<Exit> {
    let rollout = crate::spec::read(&args.config).map_err(|e| invalid(e.to_string()))?;
    let judge = Judge::new(rollout.analysis.judge.clone())
        .map_err(|e| invalid(format!("{}: {e}", args.config.display())))?;
    let origin = args.file.display().to_string();
    let outcome = if origin == "-" {
        analyze(judge, std::io::stdin().lock(), "stdin")?
    } else {
        let file = std::fs::File::open(&args.file)
            .map_err(|e| invalid(format!("{origin}: cannot open: {e}")))?;
        analyze(judge, std::io::BufReader::new(file), &origin)?
    };
    // The verdict is the exit code: a reader that went away (`| head -1`)
    // must not turn a fail into a quiet 0, so failed writes are ignored.
    let say = |line: String| write_ignoring(true, &(line + "\n"));
    match output {
        OutputFormat::Json => say(serde_json::to_string_pretty(&outcome)?),
        OutputFormat::Text => {
            for e in &outcome.verdicts {
                say(format!("t={:<8} {:<12} {}", e.t, e.verdict, e.reason));
            }
            say(match outcome.at {
                Some(at) => format!("verdict: fail at t={at}: {}", outcome.reason),
                // The reason may already begin with the verdict ("pass: …").
                None if outcome.reason.starts_with(&format!("{}:", outcome.verdict)) => {
                    format!("verdict: {}", outcome.reason)
                }
                None => format!("verdict: {}: {}", outcome.verdict, outcome.reason),
            });
        }
    }
    Ok(if outcome.verdict == "fail" {
        Exit::RolledBack
    } else {
        Exit::Success
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_analysis::Config;

    fn line(t: f64, s: (u64, u64), c: (u64, u64)) -> String {
        format!(
            r#"{{"t":{t},"stable":{{"requests":{},"errors":{}}},"canary":{{"requests":{},"errors":{}}}}}"#,
            s.0, s.1, c.0, c.1
        )
    }

    fn config() -> Config {
        Config {
            latency_p95: serin_analysis::Limit::NONE,
            ..Config::default()
        }
    }

    #[test]
    fn a_healthy_canary_passes_and_a_broken_one_fails_with_its_time() {
        let good: String = (1..=30)
            .map(|i| line(i as f64, (i * 190, i * 2), (i * 10, 0)) + "\n")
            .collect();
        let judge = Judge::new(config()).expect("config");
        let out = analyze(judge, good.as_bytes(), "good.jsonl").expect("analyzed");
        assert_eq!(out.verdict, "pass", "{out:?}");
        assert_eq!(out.at, None);
        let bad: String = (1..=30)
            .map(|i| line(i as f64, (i * 190, i * 2), (i * 10, i * 4)) + "\n")
            .collect();
        let judge = Judge::new(config()).expect("config");
        let out = analyze(judge, bad.as_bytes(), "bad.jsonl").expect("analyzed");
        assert_eq!(out.verdict, "fail", "{out:?}");
        let at = out.at.expect("a time");
        assert!(at > 1.0 && at <= 30.0, "{at}");
        assert!(out.reason.contains("error rate"), "{}", out.reason);
        assert_eq!(out.verdicts.last().map(|e| e.t), Some(at));
    }

    #[test]
    fn counters_going_backwards_name_the_line() {
        let text = format!(
            "{}\n{}\n",
            line(1.0, (100, 1), (10, 0)),
            line(2.0, (90, 1), (20, 0))
        );
        let judge = Judge::new(config()).expect("config");
        let err = analyze(judge, text.as_bytes(), "x.jsonl").expect_err("refused");
        assert!(err.to_string().starts_with("x.jsonl:2: "), "{err}");
    }

    #[test]
    fn a_10_to_the_12_jump_is_no_data_and_the_next_sound_line_is_judged_from_before_it() {
        // 30 % canary errors every line; line 2's request counter jumps by 10^12.
        let mut lines: Vec<String> = (1..=4)
            .map(|i| line(i as f64, (i * 700, i * 7), (i * 30, i * 9)))
            .collect();
        lines[1] = line(2.0, (1400, 14), (60 + 1_000_000_000_000, 18));
        let text = lines.join("\n") + "\n";
        let judge = Judge::new(config()).expect("config");
        let out = analyze(judge, text.as_bytes(), "spike.jsonl").expect("analyzed");
        assert_eq!(out.verdicts[1].verdict, "inconclusive", "{out:?}");
        assert!(
            out.verdicts[1].reason.contains("canary requests rose by"),
            "{out:?}"
        );
        assert_eq!(out.verdict, "fail", "{out:?}");
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let text = format!("{}\n{{\"t\": 2}}\n", line(1.0, (100, 1), (10, 0)));
        let judge = Judge::new(config()).expect("config");
        let err = analyze(judge, text.as_bytes(), "x.jsonl").expect_err("refused");
        assert!(err.to_string().starts_with("x.jsonl:2: expected"), "{err}");
    }
}
