//! The rollout report: JSON for machines, and one self-contained HTML file
//! (inline CSS and SVG, no scripts, no fonts to fetch) for people.
//!
//! The charts show stable against canary per interval — error rate and p95
//! latency — with the canary weight as a step line underneath and every
//! decision (steps, verdicts that failed, operator commands, the outcome)
//! marked where it happened.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::rollout::{DecisionKind, Outcome};
use crate::store::{
    EventRecord, RolloutRecord, RunRecord, Sample, Store, StoreError, VersionSample,
};
use crate::time::{Millis, human_span, rfc3339};

/// Everything `serin report` shows: one run of a rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The rollout's name.
    pub name: String,
    /// The run this report covers (1, 2, 3 ... per name; 0: none yet).
    #[serde(default)]
    pub run: u32,
    /// How the run ended (null while it runs).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// When the run started (RFC 3339).
    #[serde(default)]
    pub started: Option<String>,
    /// When it ended (RFC 3339), null while it runs.
    #[serde(default)]
    pub ended: Option<String>,
    /// Its phase now.
    pub phase: String,
    /// Why it is where it is.
    pub reason: String,
    /// The stable version.
    pub stable_version: String,
    /// The canary version, if any.
    pub canary_version: Option<String>,
    /// The stable version the last promotion replaced, if one did.
    pub former_stable_version: Option<String>,
    /// The weight now, in percent.
    pub weight: f64,
    /// The rollout ran in advisory mode (`analysis.mode: advisory`): the
    /// judge's fails were recorded, not acted on.
    #[serde(default)]
    pub advisory: bool,
    /// Each moment the judge would have rolled back (advisory mode, or an
    /// advisory check that failed), oldest first, with its reason; the
    /// same decisions are in `timeline` as `would-roll-back`.
    #[serde(default)]
    pub would_roll_back: Vec<TimelineEntry>,
    /// Every decision of the run, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Totals over the run's sampled intervals, per version (this run).
    pub summary: Summary,
    /// Per-interval numbers, oldest first.
    pub samples: Vec<SampleEntry>,
}

/// One decision in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// The run it belongs to (0: outside any run, e.g. a registration).
    #[serde(default)]
    pub run: u32,
    /// RFC 3339 time.
    pub at: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `registered`, `deployed`, `started`, `step`, `verdict`, `operator`,
    /// `gate`, `promoted`, `rolled-back`, `would-roll-back`.
    pub kind: String,
    /// The step the decision was made in, counted from 1 (like the
    /// status's `step` and every text that shows one).
    pub step: usize,
    /// Weight in percent after the decision.
    pub weight: f64,
    /// Phase after the decision.
    pub phase: String,
    /// The verdict, for verdicts.
    pub verdict: Option<String>,
    /// Why, with the numbers.
    pub reason: String,
}

/// One interval in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleEntry {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The step of the interval, counted from 1.
    pub step: usize,
    /// Weight in percent.
    pub weight: f64,
    /// The canary's observed share of the interval's requests, in percent
    /// (canary / every version's), to compare with `weight`; null without
    /// requests. Requests a header or cookie route sent count too.
    #[serde(default)]
    pub canary_share: Option<f64>,
    /// The interval's verdict.
    pub verdict: String,
    /// Stable's numbers.
    pub stable: VersionSample,
    /// Canary's numbers.
    pub canary: VersionSample,
    /// The baseline's numbers, when the rollout has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<VersionSample>,
}

/// The window of a report's totals: this run's sampled intervals, from
/// the run's start (`started`; without it, the end of the first interval,
/// said so) to the end of the last. A sample's time is its interval's end.
fn sampled_window(samples: &[Sample], started: Option<Millis>) -> String {
    match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => {
            let from = match started {
                Some(at) if at <= first.at => rfc3339(at),
                _ => format!("the end of the first at {}", rfc3339(first.at)),
            };
            format!(
                "this run's {} sampled interval(s), from {from} to {}",
                samples.len(),
                rfc3339(last.at)
            )
        }
        _ => "this run's sampled intervals (none yet)".to_string(),
    }
}

/// Totals per version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// What they count: this run's sampled intervals, how many and from
    /// when to when (requests after the last one are not in them, so they
    /// can be fewer than status's "this run").
    #[serde(default)]
    pub window: String,
    /// Stable.
    pub stable: VersionSummary,
    /// Canary.
    pub canary: VersionSummary,
    /// The baseline, when the run's intervals have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<VersionSummary>,
}

/// One version's totals over the sampled intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSummary {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Errors per request, in percent.
    pub error_rate_pct: Option<f64>,
    /// The highest per-interval p95 seen.
    pub worst_p95_ms: Option<f64>,
}

impl VersionSummary {
    fn of<'a>(samples: impl Iterator<Item = &'a VersionSample>) -> VersionSummary {
        let (mut requests, mut errors, mut worst) = (0, 0, None::<f64>);
        for s in samples {
            requests += s.requests;
            errors += s.errors;
            if let Some(p) = s.p95_ms {
                worst = Some(worst.map_or(p, |w| w.max(p)));
            }
        }
        VersionSummary {
            requests,
            errors,
            // Four decimals of a percent: 8.3333, not 8.333333333333334.
            error_rate_pct: (requests > 0)
                .then(|| (1e6 * errors as f64 / requests as f64).round() / 1e4),
            worst_p95_ms: worst,
        }
    }
}

impl Report {
    /// Builds the report from what the store holds.
    pub fn new(rollout: &RolloutRecord, events: &[EventRecord], samples: &[Sample]) -> Report {
        let plan = (!rollout.spec.is_empty())
            .then(|| crate::spec::parse(&rollout.spec, "the registered rollout file").ok())
            .flatten()
            .map(|r| r.plan());
        // Numbered as status numbers them: the end of the steps is the last
        // step, not one past it.
        let steps = plan.as_ref().map_or(usize::MAX, |p| p.steps.len());
        Report {
            name: rollout.name.clone(),
            run: rollout.run,
            outcome: rollout.state.outcome.clone(),
            started: None,
            ended: None,
            phase: rollout.state.phase.as_str().to_string(),
            reason: rollout.state.reason.clone(),
            stable_version: rollout.stable_version.clone(),
            canary_version: rollout.canary_version.clone(),
            former_stable_version: rollout.former_stable_version.clone(),
            weight: rollout.state.weight.percent(),
            advisory: plan.as_ref().is_some_and(|p| p.advisory),
            would_roll_back: events
                .iter()
                .filter(|e| e.decision.kind == DecisionKind::WouldRollBack)
                .map(timeline_entry)
                .collect(),
            timeline: events.iter().map(timeline_entry).collect(),
            summary: Summary {
                window: sampled_window(samples, None),
                stable: VersionSummary::of(samples.iter().map(|s| &s.stable)),
                canary: VersionSummary::of(samples.iter().map(|s| &s.canary)),
                baseline: samples.iter().any(|s| s.baseline.is_some()).then(|| {
                    VersionSummary::of(samples.iter().filter_map(|s| s.baseline.as_ref()))
                }),
            },
            samples: samples
                .iter()
                .map(|s| SampleEntry {
                    at_ms: s.at.0,
                    // (wire's step_number; wire reads this module.)
                    step: (s.step + 1).min(steps),
                    weight: s.weight.percent(),
                    canary_share: canary_share(s),
                    verdict: s.verdict.clone(),
                    stable: s.stable.clone(),
                    canary: s.canary.clone(),
                    baseline: s.baseline.clone(),
                })
                .collect(),
        }
    }

    /// The report of one run of `name` (its last without `run`), from the
    /// store: the run's own decisions, samples and totals, and nothing of
    /// any other run. A run that is the rollout's current one shows its
    /// state now; an earlier one (or one whose rollout was cleaned up) its
    /// end. A rollout registered and never deployed: its empty report.
    pub fn load(store: &Store, name: &str, run: Option<u32>) -> Result<Report, StoreError> {
        let current = store.get(name).ok();
        let this = match store.run(name, run) {
            Ok(r) => r,
            Err(StoreError::NoRun { last: 0, .. }) if run.is_none() => {
                return match &current {
                    Some(record) => Ok(Report::new(record, &[], &[])),
                    None => Err(StoreError::NotFound(name.to_string())),
                };
            }
            Err(e) => return Err(e),
        };
        let events = store.run_events(name, this.run)?;
        let samples = store.run_samples(name, this.run)?;
        // The record is the run's while it runs and at its end; once the
        // rollout is registered again (Initializing) only the run row is.
        let is_this_run = |r: &RolloutRecord| {
            r.run == this.run && (this.ended.is_none() || r.state.phase.is_finished())
        };
        let mut report = match current.filter(is_this_run) {
            Some(record) => Report::new(&record, &events, &samples),
            None => {
                let fake = ended_record(&this);
                Report::new(&fake, &events, &samples)
            }
        };
        report.started = Some(rfc3339(this.started));
        report.summary.window = sampled_window(&samples, Some(this.started));
        report.ended = this.ended.map(rfc3339);
        if report.outcome.is_none() {
            report.outcome = this.outcome.clone();
        }
        Ok(report)
    }
}

/// The canary's share of an interval's requests (every version's, the
/// baseline's too), in percent (two decimals).
fn canary_share(s: &Sample) -> Option<f64> {
    let baseline = s.baseline.as_ref().map_or(0, |b| b.requests);
    let all = s.stable.requests + s.canary.requests + baseline;
    (all > 0).then(|| (1e4 * s.canary.requests as f64 / all as f64).round() / 100.0)
}

/// A record standing for a run that is not the rollout's current one: its
/// versions as they were, its end.
fn ended_record(run: &RunRecord) -> RolloutRecord {
    let promoted = run.outcome.as_ref().is_some_and(Outcome::promoted);
    let unknown = || "(not recorded)".to_string();
    let mut state = crate::rollout::State::new(run.started);
    state.phase = run
        .outcome
        .as_ref()
        .map_or(crate::rollout::Phase::RolledBack, Outcome::phase);
    state.reason = run.reason.clone().unwrap_or_else(|| {
        "ended without a recorded outcome (serin stopped during the run)".into()
    });
    state.outcome = run.outcome.clone();
    let (stable, canary, former) = if promoted {
        (
            run.canary_version.clone().unwrap_or_else(unknown),
            None,
            run.stable_version.clone(),
        )
    } else {
        (
            run.stable_version.clone().unwrap_or_else(unknown),
            run.canary_version.clone(),
            None,
        )
    };
    RolloutRecord {
        name: run.rollout.clone(),
        spec: String::new(),
        stable_version: stable,
        canary_version: canary,
        former_stable_version: former,
        stable_upstream: None,
        canary_upstream: None,
        state,
        last_verdict: None,
        generation: 0,
        run: run.run,
    }
}

fn timeline_entry(e: &EventRecord) -> TimelineEntry {
    TimelineEntry {
        run: e.run,
        at: rfc3339(e.decision.at),
        at_ms: e.decision.at.0,
        kind: e.kind.clone(),
        step: e.decision.step + 1,
        weight: e.decision.weight.percent(),
        phase: e.phase.clone(),
        verdict: e.decision.verdict.map(|v| v.to_string()),
        reason: e.decision.reason.clone(),
    }
}

/// `serin history NAME`: the rollout's runs, oldest first, each with its
/// decisions; and its registrations, which belong to no run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The rollout's name.
    pub name: String,
    /// Registered now (false after `serin cleanup`: the runs are kept).
    pub registered: bool,
    /// Its registrations (`serin init`), oldest first; none with `--run`.
    pub registrations: Vec<TimelineEntry>,
    /// Its runs, oldest first (one with `--run`).
    pub runs: Vec<RunEntry>,
    /// How many runs it has in all (with `--run`, more than `runs` holds).
    #[serde(default)]
    pub runs_total: usize,
}

/// One run in the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunEntry {
    /// Its number.
    pub run: u32,
    /// The stable version when it started (null: not recorded).
    pub stable_version: Option<String>,
    /// The canary it rolled out.
    pub canary_version: Option<String>,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339); null while it runs.
    pub ended: Option<String>,
    /// How it ended; null while it runs.
    pub outcome: Option<Outcome>,
    /// Why it ended, or (while it runs) what it waits for.
    pub reason: Option<String>,
    /// Its decisions, oldest first.
    pub events: Vec<TimelineEntry>,
}

/// The history of `name`: every run (or only `run`), each with its
/// decisions. Kept after `serin cleanup`; gone after `--purge`.
pub fn history(store: &Store, name: &str, run: Option<u32>) -> Result<History, StoreError> {
    let current = store.get(name).ok();
    let mut runs = store.runs(name)?;
    let runs_total = runs.len();
    let all = store.events(name)?;
    if current.is_none() && runs.is_empty() && all.is_empty() {
        return Err(StoreError::NotFound(name.to_string()));
    }
    if let Some(n) = run {
        runs = vec![store.run(name, Some(n))?];
    }
    let entries = runs
        .into_iter()
        .map(|r| {
            let reason = match (&current, r.ended) {
                (Some(c), None) if c.run == r.run => Some(c.state.reason.clone()),
                _ => r.reason.clone(),
            };
            RunEntry {
                run: r.run,
                stable_version: r.stable_version,
                canary_version: r.canary_version,
                started: rfc3339(r.started),
                ended: r.ended.map(rfc3339),
                outcome: r.outcome,
                reason,
                events: all
                    .iter()
                    .filter(|e| e.run == r.run)
                    .map(timeline_entry)
                    .collect(),
            }
        })
        .collect();
    Ok(History {
        name: name.to_string(),
        registered: current.is_some(),
        registrations: if run.is_some() {
            Vec::new()
        } else {
            all.iter()
                .filter(|e| e.run == 0)
                .map(timeline_entry)
                .collect()
        },
        runs: entries,
        runs_total,
    })
}

impl Report {
    /// The report as one self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(32 * 1024);
        let title = if self.run > 0 {
            format!("serin report: {}, run {}", self.name, self.run)
        } else {
            format!("serin report: {}", self.name)
        };
        let outcome_class = match self.phase.as_str() {
            "Succeeded" => "ok",
            "RolledBack" => "bad",
            _ => "wait",
        };
        let _ = write!(
            h,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{}</title><style>{CSS}</style></head><body>\n",
            escape(&title)
        );
        let advisory = if self.advisory {
            "<p class=\"phase advisory\" title=\"analysis.mode: advisory: the judge's fails were recorded, not acted on\">advisory run</p>"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<header><h1>{}</h1><p class=\"phase {outcome_class}\">{}</p>{advisory}<p class=\"reason\">{}</p></header>",
            escape(&title["serin report: ".len()..]),
            escape(&self.phase),
            escape(&self.reason)
        );
        h.push_str("<section class=\"facts\">");
        let fact = |h: &mut String, label: &str, value: &str| {
            let _ = write!(
                h,
                "<div><span>{}</span><b>{}</b></div>",
                escape(label),
                escape(value)
            );
        };
        match (self.phase.as_str(), self.canary_version.as_deref()) {
            // A promotion makes the canary the stable: say so rather than
            // "canary none, weight 0 %", which reads like nothing happened.
            ("Succeeded", None) => {
                fact(&mut h, "promoted, now stable", &self.stable_version);
                if let Some(former) = &self.former_stable_version {
                    fact(&mut h, "replaced", former);
                }
                fact(
                    &mut h,
                    "traffic now",
                    &format!("all on {}", self.stable_version),
                );
            }
            (_, canary) => {
                fact(&mut h, "stable", &self.stable_version);
                fact(&mut h, "canary", canary.unwrap_or("none"));
                fact(&mut h, "canary weight now", &format!("{} %", self.weight));
            }
        }
        if let (Some(first), Some(last)) = (self.timeline.first(), self.timeline.last()) {
            fact(
                &mut h,
                "duration",
                &human_span(last.at_ms.saturating_sub(first.at_ms)),
            );
        }
        if let Some(outcome) = &self.outcome {
            fact(&mut h, "outcome", &outcome.to_string());
        }
        if let Some(started) = &self.started {
            fact(&mut h, "run started", started);
        }
        if let Some(ended) = &self.ended {
            fact(&mut h, "run ended", ended);
        }
        fact(
            &mut h,
            "decisions (this run)",
            &self.timeline.len().to_string(),
        );
        fact(
            &mut h,
            "intervals (this run)",
            &self.samples.len().to_string(),
        );
        h.push_str("</section>");
        let _ = write!(
            h,
            "<section><h2>Per-version totals ({})</h2><table><tr><th></th><th>requests</th><th>errors</th><th>error rate</th><th>worst interval p95</th></tr>",
            escape(&self.summary.window)
        );
        // The rows are roles during the rollout; name the versions where known
        // (after a promotion the record's stable is the former canary).
        let (stable_name, canary_name) = match (self.phase.as_str(), &self.canary_version) {
            ("Succeeded", None) => (
                self.former_stable_version
                    .clone()
                    .unwrap_or_else(|| "former stable".to_string()),
                format!("{} (promoted)", self.stable_version),
            ),
            (_, canary) => (
                self.stable_version.clone(),
                canary.clone().unwrap_or_default(),
            ),
        };
        let mut rows = vec![
            ("stable", stable_name, &self.summary.stable),
            ("canary", canary_name, &self.summary.canary),
        ];
        if let Some(b) = &self.summary.baseline {
            rows.push(("baseline", "fresh copy of stable".to_string(), b));
        }
        for (label, name, v) in rows {
            let _ = write!(
                h,
                "<tr><th class=\"{label}\">{label} <small>{}</small></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&name),
                v.requests,
                v.errors,
                v.error_rate_pct.map_or("–".into(), |r| format!("{r:.2} %")),
                v.worst_p95_ms.map_or("–".into(), |p| format!("{p:.1} ms")),
            );
        }
        h.push_str("</table></section>\n");

        if !self.would_roll_back.is_empty() {
            let _ = write!(
                h,
                "<section class=\"would\"><h2>Would have rolled back ({})</h2><p>{}</p><table><tr><th>time (UTC)</th><th>step</th><th>weight</th><th>reason</th></tr>",
                self.would_roll_back.len(),
                if self.advisory {
                    "An advisory run: the judge would have rolled back here; the rollout went on by its steps."
                } else {
                    "An advisory check failed here: it would have rolled back; the others decided."
                }
            );
            for e in &self.would_roll_back {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{} %</td><td>{}</td></tr>",
                    escape(&e.at),
                    e.step,
                    e.weight,
                    escape(&e.reason)
                );
            }
            h.push_str("</table></section>\n");
        }
        h.push_str("<section><h2>Error rate per interval</h2>");
        h.push_str(&self.chart(|s| s.error_rate().map(|r| 100.0 * r), "%"));
        h.push_str("</section>\n<section><h2>p95 latency per interval</h2>");
        h.push_str(&self.chart(|s| s.p95_ms, "ms"));
        h.push_str("</section>\n");

        h.push_str(&self.intervals_table());
        h.push_str("<section><h2>Decisions</h2><table class=\"timeline\"><tr><th>time (UTC)</th><th>kind</th><th>step</th><th>weight</th><th>verdict</th><th>reason</th></tr>");
        for e in &self.timeline {
            let verdict = e.verdict.as_deref().unwrap_or("");
            let _ = write!(
                h,
                "<tr class=\"k-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{} %</td><td class=\"v-{}\">{}</td><td>{}</td></tr>",
                escape(&e.kind),
                escape(&e.at),
                escape(&e.kind),
                e.step,
                e.weight,
                escape(verdict),
                escape(verdict),
                escape(&e.reason)
            );
        }
        h.push_str("</table></section>\n<footer>made by serin</footer></body></html>\n");
        h
    }

    /// Every interval in a table: the weight asked for beside the share
    /// of requests the canary really got, each version's requests, the
    /// verdict.
    fn intervals_table(&self) -> String {
        if self.samples.is_empty() {
            return String::new();
        }
        let t0 = self.time_origin();
        let with_baseline = self.samples.iter().any(|s| s.baseline.is_some());
        let mut h = format!(
            "<section><h2>Intervals</h2><table class=\"intervals\"><tr><th>time</th><th>step</th><th>weight</th><th>canary got</th><th>requests stable / canary{}</th><th>verdict</th></tr>",
            if with_baseline { " / baseline" } else { "" }
        );
        for s in &self.samples {
            let share = s.canary_share.map_or("–".to_string(), |p| format!("{p} %"));
            let _ = write!(
                h,
                "<tr><td>+{}</td><td>{}</td><td>{} %</td><td>{}</td><td>{} / {}{}</td><td class=\"v-{}\">{}</td></tr>",
                human_span(s.at_ms.saturating_sub(t0)),
                s.step,
                s.weight,
                share,
                s.stable.requests,
                s.canary.requests,
                match (&s.baseline, with_baseline) {
                    (Some(b), _) => format!(" / {}", b.requests),
                    (None, true) => " / –".to_string(),
                    (None, false) => String::new(),
                },
                escape(&s.verdict),
                escape(&s.verdict)
            );
        }
        h.push_str("</table></section>\n");
        h
    }

    /// Where the report's times count from, in the Intervals table and on
    /// the charts alike: the run's first decision (its start), or the
    /// first interval when it came before (or there are no decisions).
    fn time_origin(&self) -> u64 {
        self.samples
            .first()
            .map_or(u64::MAX, |s| s.at_ms)
            .min(self.timeline.first().map_or(u64::MAX, |e| e.at_ms))
    }

    /// One SVG chart: stable and canary lines of `value`, the weight as a
    /// shaded step area, decisions as vertical marks.
    fn chart(&self, value: impl Fn(&VersionSample) -> Option<f64>, unit: &str) -> String {
        const W: f64 = 900.0;
        const H: f64 = 260.0;
        const L: f64 = 60.0; // left margin for the y axis labels
        const R: f64 = 50.0; // right margin for the weight axis
        const T: f64 = 14.0;
        const B: f64 = 36.0;
        let mut svg = String::new();
        if self.samples.is_empty() {
            return "<p class=\"empty\">No intervals were sampled.</p>".into();
        }
        let t0 = self.time_origin();
        let t1 = self
            .samples
            .last()
            .map_or(t0, |s| s.at_ms)
            .max(self.timeline.last().map_or(0, |e| e.at_ms))
            .max(t0 + 1);
        let x = |t: u64| L + (W - L - R) * (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64;
        let ymax = self
            .samples
            .iter()
            .flat_map(|s| {
                [
                    value(&s.stable),
                    value(&s.canary),
                    s.baseline.as_ref().and_then(&value),
                ]
            })
            .flatten()
            .fold(0.0_f64, f64::max);
        // Four divisions of a round step: 0, 2.5, 5, 7.5, 10 rather than 1.2, 3.8.
        let ystep = nice_ceiling(ymax / 4.0);
        let ymax = 4.0 * ystep;
        let y = |v: f64| T + (H - T - B) * (1.0 - v / ymax);
        let yw = |w: f64| T + (H - T - B) * (1.0 - w / 100.0);
        let _ = write!(
            svg,
            "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"chart\" xmlns=\"http://www.w3.org/2000/svg\">"
        );
        // Weight as a shaded step area on its own 0–100 % axis (right). The
        // decisions say when the weight changed; samples only say what it
        // was when they were taken (without decisions, they are all there is).
        let changes: Vec<(u64, f64)> = if self.timeline.is_empty() {
            self.samples.iter().map(|s| (s.at_ms, s.weight)).collect()
        } else {
            self.timeline.iter().map(|e| (e.at_ms, e.weight)).collect()
        };
        let mut area = format!("M{:.1},{:.1}", x(t0), yw(0.0));
        let mut level = 0.0;
        for (at, w) in changes {
            if w != level {
                let _ = write!(
                    area,
                    " L{:.1},{:.1} L{:.1},{:.1}",
                    x(at),
                    yw(level),
                    x(at),
                    yw(w)
                );
                level = w;
            }
        }
        let _ = write!(
            area,
            " L{:.1},{:.1} L{:.1},{:.1} Z",
            x(t1),
            yw(level),
            x(t1),
            yw(0.0)
        );
        let _ = write!(svg, "<path class=\"weight\" d=\"{area}\"/>");
        // Grid and axes.
        for i in 0..=4 {
            let v = ymax * f64::from(i) / 4.0;
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{L}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>\
                 <text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} {unit}</text>\
                 <text class=\"axis w\" x=\"{:.1}\" y=\"{:.1}\">{}%</text>",
                W - R,
                y(v),
                y(v),
                L - 6.0,
                y(v) + 4.0,
                axis_label(v, ystep),
                W - R + 6.0,
                yw(25.0 * f64::from(i)) + 4.0,
                25 * i
            );
        }
        for (offset, label) in time_ticks(t1 - t0) {
            let _ = write!(
                svg,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                x(t0 + offset),
                H - B + 16.0,
            );
        }
        // Decisions.
        let mut drawn = [false; 4]; // step or operator, bad, ok, would
        for e in &self.timeline {
            let class = match (e.kind.as_str(), e.verdict.as_deref()) {
                ("would-roll-back", _) => "mark would",
                // In an advisory run a fail rolls nothing back: its
                // would-roll-back (one per episode) is the mark.
                (_, Some("fail")) if self.advisory => continue,
                ("rolled-back", _) | (_, Some("fail")) => "mark bad",
                ("promoted", _) => "mark ok",
                ("verdict", _) => continue, // passing verdicts every interval would be noise
                _ => "mark",
            };
            drawn[match class {
                "mark bad" => 1,
                "mark ok" => 2,
                "mark would" => 3,
                _ => 0,
            }] = true;
            let _ = write!(
                svg,
                "<line class=\"{class}\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{T}\" y2=\"{:.1}\"><title>{}: {}</title></line>",
                H - B,
                escape(&e.kind),
                escape(&e.reason),
                x = x(e.at_ms)
            );
        }
        // The versions: stable, canary, and the baseline when there is one.
        let with_baseline = self.samples.iter().any(|s| s.baseline.is_some());
        let lines: &[(&str, usize)] = if with_baseline {
            &[("stable", 0), ("canary", 1), ("baseline", 2)]
        } else {
            &[("stable", 0), ("canary", 1)]
        };
        for &(class, pick) in lines {
            let mut d = String::new();
            let mut pen_up = true;
            // A value between two missing ones (or the only interval) is
            // a line of no length: it is drawn as a dot.
            let mut dots = String::new();
            let mut alone: Option<(f64, f64)> = None;
            for s in &self.samples {
                let v = match pick {
                    0 => value(&s.stable),
                    1 => value(&s.canary),
                    _ => s.baseline.as_ref().and_then(&value),
                };
                match v {
                    Some(v) => {
                        let _ = write!(
                            d,
                            "{}{:.1},{:.1} ",
                            if pen_up { "M" } else { "L" },
                            x(s.at_ms),
                            y(v)
                        );
                        alone = pen_up.then(|| (x(s.at_ms), y(v)));
                        pen_up = false;
                    }
                    None => {
                        if let Some((cx, cy)) = alone.take() {
                            let _ = write!(
                                dots,
                                "<circle class=\"dot {class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\"/>"
                            );
                        }
                        pen_up = true;
                    }
                }
            }
            if let Some((cx, cy)) = alone {
                let _ = write!(
                    dots,
                    "<circle class=\"dot {class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\"/>"
                );
            }
            let _ = write!(svg, "<path class=\"line {class}\" d=\"{d}\"/>{dots}");
        }
        // The legend: the lines, the weight, and the kinds of marks drawn.
        let mut legend = String::from("<g class=\"legend\">");
        let ly = H - 4.0;
        let mut items: Vec<(String, &str)> = vec![
            (
                format!(
                    "<rect y=\"{:.1}\" width=\"14\" height=\"3\" class=\"stable\"",
                    ly - 5.0
                ),
                "stable",
            ),
            (
                format!(
                    "<rect y=\"{:.1}\" width=\"14\" height=\"3\" class=\"canary\"",
                    ly - 5.0
                ),
                "canary",
            ),
        ];
        if with_baseline {
            items.push((
                format!(
                    "<rect y=\"{:.1}\" width=\"14\" height=\"3\" class=\"baseline\"",
                    ly - 5.0
                ),
                "baseline",
            ));
        }
        items.extend([(
            format!(
                "<rect y=\"{:.1}\" width=\"14\" height=\"10\" class=\"weight\"",
                ly - 9.0
            ),
            "canary weight (right)",
        )]);
        for (i, (class, label)) in [
            ("mark", "step or command"),
            ("mark bad", "failed verdict / rollback"),
            ("mark ok", "promoted"),
            ("mark would", "would have rolled back"),
        ]
        .into_iter()
        .enumerate()
        {
            if drawn[i] {
                items.push((
                    format!(
                        "<line class=\"{class}\" y1=\"{:.1}\" y2=\"{:.1}\"",
                        ly - 11.0,
                        ly + 1.0
                    ),
                    label,
                ));
            }
        }
        let mut lx = L;
        for (swatch, label) in items {
            // Lines are placed by x1/x2, rectangles by x.
            if swatch.starts_with("<line") {
                let _ = write!(
                    legend,
                    "{swatch} x1=\"{x:.1}\" x2=\"{x:.1}\"/>",
                    x = lx + 7.0
                );
            } else {
                let _ = write!(legend, "{swatch} x=\"{lx:.1}\"/>");
            }
            let _ = write!(
                legend,
                "<text x=\"{:.1}\" y=\"{ly:.1}\">{label}</text>",
                lx + 18.0
            );
            // About 6.5 px per character at 12 px, then a gap.
            lx += 18.0 + 6.5 * label.len() as f64 + 16.0;
        }
        legend.push_str("</g></svg>");
        svg.push_str(&legend);
        svg
    }
}

/// A round number at or above `v` for an axis top (never 0, so an all-zero
/// chart still has an axis).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// An axis label for `v` on an axis whose step is `step`: as many decimals
/// as the step needs (2.5 → one, 0.25 → two), none for whole steps.
fn axis_label(v: f64, step: f64) -> String {
    let mut decimals = 0;
    while decimals < 6 {
        let scaled = step * 10f64.powi(decimals);
        if (scaled - scaled.round()).abs() < 1e-6 {
            break;
        }
        decimals += 1;
    }
    format!("{v:.prec$}", prec = decimals as usize)
}

/// Ticks for a time axis `span_ms` long: offsets (ms) at a round interval
/// (1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 6, 12 h) giving at
/// most seven labels, each label distinct.
fn time_ticks(span_ms: u64) -> Vec<(u64, String)> {
    const STEPS_MS: [u64; 19] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 43_200_000,
    ];
    let step = STEPS_MS
        .iter()
        .copied()
        .find(|s| span_ms / s <= 6)
        .unwrap_or(86_400_000);
    (0..=span_ms / step)
        .map(|i| (i * step, format!("+{}", human_span(i * step))))
        .collect()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
:root{--stable:#2563eb;--canary:#ea580c;--baseline:#0f766e;--ok:#15803d;--bad:#b91c1c;--ink:#1f2937;--mute:#6b7280}
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--ink);max-width:980px;margin:24px auto;padding:0 16px}
h1{margin:0;font-size:26px}h2{font-size:17px;margin:28px 0 8px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:12px}
.phase{font-weight:600;padding:2px 10px;border-radius:12px;margin:0}
.phase.advisory{background:#e0e7ff;color:#3730a3}.would h2{color:#92400e}
.intervals td{font-variant-numeric:tabular-nums;white-space:nowrap}
.phase.ok{background:#dcfce7;color:var(--ok)}.phase.bad{background:#fee2e2;color:var(--bad)}.phase.wait{background:#fef3c7;color:#92400e}
.reason{flex-basis:100%;margin:4px 0 0;color:var(--mute)}
.facts{display:flex;gap:12px;flex-wrap:wrap;margin-top:16px}
.facts div{border:1px solid #e5e7eb;border-radius:8px;padding:8px 14px;min-width:110px}
.facts span{display:block;font-size:12px;color:var(--mute)}.facts b{font-size:18px}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eee;vertical-align:top}
th.stable{color:var(--stable)}th.canary{color:var(--canary)}th.baseline{color:var(--baseline)}th small{color:var(--mute);font-weight:400;margin-left:4px}
.timeline td:first-child{white-space:nowrap;color:var(--mute);font-variant-numeric:tabular-nums}
.timeline td:not(:last-child),.timeline th{white-space:nowrap}
.v-fail,.k-rolled-back td{color:var(--bad);font-weight:600}.k-promoted td{color:var(--ok);font-weight:600}
svg{width:100%;height:auto;background:#fff}
.grid{stroke:#eee}.axis{fill:var(--mute);font-size:11px}.axis.w{fill:#9ca3af}
.line{fill:none;stroke-width:2}.line.stable{stroke:var(--stable)}.line.canary{stroke:var(--canary)}.line.baseline{stroke:var(--baseline);stroke-dasharray:6 3}
circle.dot.stable{fill:var(--stable)}circle.dot.canary{fill:var(--canary)}circle.dot.baseline{fill:var(--baseline)}
rect.stable{fill:var(--stable)}rect.canary{fill:var(--canary)}rect.baseline{fill:var(--baseline)}
.weight{fill:#fde68a;opacity:.45}
.mark{stroke:#9ca3af;stroke-dasharray:3 3}.mark.bad{stroke:var(--bad);stroke-width:2;stroke-dasharray:none}.mark.ok{stroke:var(--ok);stroke-width:2;stroke-dasharray:none}.mark.would{stroke:#6366f1;stroke-width:2;stroke-dasharray:none}
.legend text{font-size:12px;fill:var(--ink)}
footer{margin:32px 0;color:var(--mute);font-size:12px}
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{Decision, DecisionKind, Phase, RecordedVerdict, State};
    use crate::time::Millis;
    use serin_proxy::Weight;

    fn sample(at: u64, weight: u16, canary_errors: u64) -> Sample {
        Sample {
            at: Millis(at),
            step: 0,
            weight: Weight::from_hundredths(weight * 100).unwrap(),
            verdict: "pass".into(),
            stable: VersionSample {
                requests: 95,
                errors: 1,
                p50_ms: Some(10.0),
                p95_ms: Some(20.0),
                p99_ms: Some(30.0),
            },
            canary: VersionSample {
                requests: 5,
                errors: canary_errors,
                p50_ms: Some(11.0),
                p95_ms: Some(40.0),
                p99_ms: None,
            },
            baseline: None,
        }
    }

    #[test]
    fn the_totals_window_starts_with_the_run_not_its_first_interval_end() {
        let samples = [sample(10_000, 5, 0), sample(20_000, 5, 0)];
        let w = sampled_window(&samples, Some(Millis(4_000)));
        assert_eq!(
            w,
            format!(
                "this run's 2 sampled interval(s), from {} to {}",
                rfc3339(Millis(4_000)),
                rfc3339(Millis(20_000))
            )
        );
        // Without the run's start it says what it starts with.
        let w = sampled_window(&samples, None);
        assert!(
            w.contains(&format!(
                "from the end of the first at {}",
                rfc3339(Millis(10_000))
            )),
            "{w}"
        );
    }

    /// The intervals after the last step are numbered as status numbers
    /// the end (the last step), not one past it (outside new user: "step 6"
    /// in the report where status said 5/5).
    #[test]
    fn samples_at_the_end_of_the_steps_carry_the_last_steps_number() {
        let record = RolloutRecord {
            spec: "name: checkout
stable: { version: v1, upstream: http://127.0.0.1:9 }
canary: { version: v2, upstream: http://127.0.0.1:7 }
traffic: { listen: 127.0.0.1:8080 }
steps:
  - setWeight: 20
  - pause: {}
"
            .into(),
            ..fixture_record()
        };
        let mut at_end = sample(3_000, 20, 0);
        at_end.step = 2;
        let mut first = sample(1_000, 20, 0);
        first.step = 0;
        let r = Report::new(&record, &[], &[first, at_end]);
        let steps: Vec<usize> = r.samples.iter().map(|s| s.step).collect();
        assert_eq!(steps, vec![1, 2]);
    }

    fn fixture_record() -> RolloutRecord {
        RolloutRecord {
            name: "checkout".into(),
            spec: String::new(),
            stable_version: "v1".into(),
            canary_version: Some("v2".into()),
            former_stable_version: None,
            stable_upstream: None,
            canary_upstream: None,
            state: State::new(Millis(0)),
            last_verdict: None,
            generation: 0,
            run: 0,
        }
    }

    fn fixture() -> Report {
        let mut state = State::new(Millis(1_700_000_000_000));
        state.phase = Phase::RolledBack;
        state.reason = "canary error rate <high> & worse".into();
        let record = RolloutRecord {
            name: "checkout".into(),
            spec: String::new(),
            stable_version: "v1".into(),
            canary_version: Some("v2".into()),
            former_stable_version: None,
            stable_upstream: None,
            canary_upstream: None,
            state,
            last_verdict: None,
            generation: 1,
            run: 1,
        };
        let event = |at, kind: DecisionKind, verdict, reason: &str| EventRecord {
            id: 0,
            run: 1,
            kind: kind.as_str().into(),
            phase: "Progressing".into(),
            decision: Decision {
                at: Millis(at),
                kind,
                step: 1,
                weight: Weight::from_hundredths(500).unwrap(),
                phase: Phase::Progressing,
                verdict,
                reason: reason.into(),
            },
        };
        let events = vec![
            event(1_700_000_000_000, DecisionKind::Started, None, "go"),
            event(
                1_700_000_020_000,
                DecisionKind::Verdict,
                Some(RecordedVerdict::Fail),
                "canary error rate 40 %",
            ),
            event(
                1_700_000_020_001,
                DecisionKind::RolledBack,
                None,
                "canary error rate 40 %",
            ),
        ];
        let samples = vec![
            sample(1_700_000_010_000, 5, 0),
            sample(1_700_000_020_000, 5, 2),
        ];
        Report::new(&record, &events, &samples)
    }

    #[test]
    fn summary_adds_up_the_intervals() {
        let r = fixture();
        assert_eq!(r.summary.stable.requests, 190);
        assert_eq!(r.summary.canary.errors, 2);
        assert_eq!(r.summary.canary.error_rate_pct, Some(20.0));
        let third = VersionSummary::of(
            [VersionSample {
                requests: 3,
                errors: 1,
                p50_ms: None,
                p95_ms: None,
                p99_ms: None,
            }]
            .iter(),
        );
        assert_eq!(
            third.error_rate_pct,
            Some(33.3333),
            "four decimals, no float noise"
        );
        assert_eq!(r.summary.canary.worst_p95_ms, Some(40.0));
        assert_eq!(r.timeline[1].at, "2023-11-14T22:13:40.000Z");
    }

    #[test]
    fn html_is_self_contained_escaped_and_marks_the_rollback() {
        let html = fixture().to_html();
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("<script"), "no scripts");
        assert!(
            !html.contains("http://") || !html.contains("src=\"http"),
            "nothing fetched"
        );
        assert!(html.contains("canary error rate &lt;high&gt; &amp; worse"));
        assert!(!html.contains("<high>"));
        assert_eq!(html.matches("<svg").count(), 2, "error-rate and p95 charts");
        assert!(
            html.contains("class=\"mark bad\""),
            "rollback marked on the chart"
        );
        assert!(html.contains("class=\"line canary\""));
    }

    #[test]
    fn an_advisory_run_lists_each_would_roll_back_and_says_it_is_advisory() {
        let mut record = fixture_record();
        record.spec = "name: checkout
stable: { version: v1, upstream: http://127.0.0.1:9 }
canary: { version: v2, upstream: http://127.0.0.1:7 }
traffic: { provider: builtin, listen: 127.0.0.1:0 }
analysis: { mode: advisory, interval: 1s }
"
        .into();
        record.state.phase = Phase::Succeeded;
        let event = |at, kind: DecisionKind, verdict, reason: &str| EventRecord {
            id: 0,
            run: 1,
            kind: kind.as_str().into(),
            phase: "Progressing".into(),
            decision: Decision {
                at: Millis(at),
                kind,
                step: 0,
                weight: Weight::from_hundredths(2000).unwrap(),
                phase: Phase::Progressing,
                verdict,
                reason: reason.into(),
            },
        };
        let events = vec![
            event(
                1_000,
                DecisionKind::Verdict,
                Some(RecordedVerdict::Fail),
                "canary error rate 30 %",
            ),
            event(
                1_001,
                DecisionKind::WouldRollBack,
                None,
                "would have rolled back: canary error rate 30 %",
            ),
            event(
                9_000,
                DecisionKind::WouldRollBack,
                None,
                "would have rolled back: canary p95 <slow>",
            ),
            event(9_500, DecisionKind::Promoted, None, "promoted"),
        ];
        let r = Report::new(&record, &events, &[sample(1_000, 20, 3)]);
        assert!(r.advisory);
        let reasons: Vec<&str> = r
            .would_roll_back
            .iter()
            .map(|e| e.reason.as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "would have rolled back: canary error rate 30 %",
                "would have rolled back: canary p95 <slow>"
            ]
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["advisory"], true);
        assert_eq!(json["wouldRollBack"][0]["step"], 1);
        let html = r.to_html();
        assert!(html.contains("advisory run</p>"), "{html}");
        assert!(html.contains("<h2>Would have rolled back (2)</h2>"));
        assert!(html.contains("canary p95 &lt;slow&gt;"));
        // Marked as what they were, not as failures that rolled back.
        // Two marks and a legend swatch in each of the two charts.
        assert_eq!(html.matches("class=\"mark would\"").count(), 2 * (2 + 1));
        assert!(!html.contains("class=\"mark bad\""), "{html}");
        assert!(html.contains(">would have rolled back</text>"));
        // An enforced run without one has neither.
        let plain = fixture();
        assert!(!plain.advisory && plain.would_roll_back.is_empty());
        let html = plain.to_html();
        assert!(!html.contains("Would have rolled back") && !html.contains("advisory run"));
    }

    #[test]
    fn each_interval_shows_the_canarys_observed_share_beside_the_weight() {
        let r = fixture();
        // 5 canary requests of 100: 5 %, at weight 5 %.
        assert_eq!(r.samples[0].canary_share, Some(5.0));
        let mut starved = sample(1_000, 20, 0);
        starved.canary.requests = 1;
        starved.stable.requests = 299;
        assert_eq!(canary_share(&starved), Some(0.33));
        starved.canary.requests = 0;
        starved.stable.requests = 0;
        assert_eq!(canary_share(&starved), None);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["samples"][1]["canaryShare"], 5.0);
        let html = r.to_html();
        assert!(html.contains("<th>canary got</th>"), "{html}");
        assert!(
            html.contains("<td>5 %</td><td>5 %</td><td>95 / 5</td>"),
            "{html}"
        );
    }

    #[test]
    fn a_baseline_is_a_third_version_in_the_summary_the_share_and_the_charts() {
        let with = |at, errors| {
            let mut s = sample(at, 20, 1);
            s.baseline = Some(VersionSample {
                requests: 5,
                errors,
                p50_ms: Some(9.0),
                p95_ms: Some(33.0),
                p99_ms: None,
            });
            s
        };
        let r = Report::new(&fixture_record(), &[], &[with(1_000, 0), with(2_000, 1)]);
        let b = r.summary.baseline.as_ref().expect("a baseline row");
        assert_eq!((b.requests, b.errors, b.worst_p95_ms), (10, 1, Some(33.0)));
        // 5 canary requests of 95 + 5 + 5.
        assert_eq!(r.samples[0].canary_share, Some(4.76));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["summary"]["baseline"]["requests"], 10);
        assert_eq!(json["samples"][0]["baseline"]["p95Ms"], 33.0);
        let html = r.to_html();
        assert!(html.contains("<th class=\"baseline\">baseline"), "{html}");
        assert_eq!(
            html.matches("class=\"line baseline\"").count(),
            2,
            "both charts"
        );
        assert!(html.contains(">baseline</text>"), "in the legend");
        assert!(
            html.contains("<th>requests stable / canary / baseline</th>")
                && html.contains("<td>95 / 5 / 5</td>"),
            "{html}"
        );
        // Without one: no baseline anywhere.
        let plain = fixture();
        assert!(plain.summary.baseline.is_none());
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json["summary"].get("baseline").is_none());
        let html = plain.to_html();
        assert!(
            !html.contains("line baseline") && !html.contains(">baseline"),
            "{html}"
        );
    }

    #[test]
    fn axis_labels_have_the_decimals_their_step_needs() {
        assert_eq!(axis_label(7.5, 2.5), "7.5");
        assert_eq!(axis_label(10.0, 2.5), "10.0");
        assert_eq!(axis_label(40.0, 10.0), "40");
        assert_eq!(axis_label(0.05, 0.025), "0.050");
        assert_eq!(axis_label(0.0, 0.5), "0.0");
    }

    #[test]
    fn time_ticks_are_round_and_distinct() {
        let labels = |span| {
            time_ticks(span)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(2_300), ["+0s", "+0.5s", "+1s", "+1.5s", "+2s"]);
        assert_eq!(labels(7_700), ["+0s", "+2s", "+4s", "+6s"]);
        assert_eq!(labels(600_000), ["+0s", "+2m", "+4m", "+6m", "+8m", "+10m"]);
        assert_eq!(labels(5_400_000)[1], "+15m");
        for span in [1, 999, 12_345, 3_600_000, 100_000_000] {
            let l = labels(span);
            assert!(!l.is_empty() && l.len() <= 7, "{span}: {l:?}");
            let mut d = l.clone();
            d.dedup();
            assert_eq!(d, l, "distinct labels for {span}");
        }
    }

    #[test]
    fn the_weight_area_follows_the_decisions_to_the_end() {
        let mut r = fixture();
        // 5 % from the start, 100 % for the last second before the end.
        r.timeline[1].weight = 100.0;
        r.timeline[1].at_ms = 1_700_000_019_000;
        r.timeline[2].weight = 100.0;
        let html = r.to_html();
        let area = html
            .split("<path class=\"weight\" d=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap();
        // A corner at 100 % (y = T = 14.0) that is wide, not a sliver.
        let at_full: Vec<f64> = area
            .split('L')
            .filter_map(|pt| {
                let (x, y) = pt.trim().trim_end_matches(" Z").split_once(',')?;
                (y.trim().parse::<f64>().ok()? == 14.0).then(|| x.parse().ok())?
            })
            .collect();
        assert_eq!(at_full.len(), 2, "{area}");
        assert!(at_full[1] - at_full[0] > 30.0, "{area}");
    }

    /// The Intervals table and the charts count from the same origin, the
    /// run's start (user L1: the table counted from the first sample, so
    /// its "+50s" was at +60 s on the chart).
    #[test]
    fn the_intervals_table_counts_from_the_run_start_as_the_charts_do() {
        let r = fixture();
        let table = r.intervals_table();
        // The samples are 10 s and 20 s after the run's start.
        let times: Vec<&str> = table
            .split("<tr><td>+")
            .skip(1)
            .filter_map(|row| row.split('<').next())
            .collect();
        assert_eq!(times, vec!["10s", "20s"], "{table}");
        // On the chart the first sample is halfway from the start (0 s)
        // to the end (20 s): x = L + (W - L - R) / 2 = 60 + 395.
        let chart = r.chart(|v| Some(v.requests as f64), "");
        assert!(chart.contains("M455.0,"), "{chart}");
    }

    /// A run with a single interval draws its values as dots, not lines of
    /// no length (user L2: its charts were empty).
    #[test]
    fn a_single_interval_is_drawn_as_a_dot() {
        let mut r = fixture();
        r.samples.truncate(1);
        let chart = r.chart(|v| v.p95_ms, "ms");
        assert!(chart.contains("<circle class=\"dot stable\""), "{chart}");
        assert!(chart.contains("<circle class=\"dot canary\""), "{chart}");
        // Two intervals are a line, with no dots.
        let r = fixture();
        let chart = r.chart(|v| v.p95_ms, "ms");
        assert!(!chart.contains("<circle"), "{chart}");
    }

    #[test]
    fn a_promoted_rollout_names_its_new_stable() {
        let mut r = fixture();
        r.phase = "Succeeded".into();
        r.stable_version = "v2".into();
        r.canary_version = None;
        r.former_stable_version = Some("v1".into());
        let html = r.to_html();
        assert!(html.contains("promoted, now stable</span><b>v2</b>"));
        assert!(html.contains("replaced</span><b>v1</b>"));
        // The totals' rows name both versions, not "former stable".
        assert!(html.contains("stable <small>v1</small>"), "{html}");
        assert!(html.contains("v2 (promoted)"));
        assert!(!html.contains("former stable"));
        assert!(html.contains("all on v2"));
        assert!(!html.contains("canary weight now"));
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(42.0), 50.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
        assert_eq!(nice_ceiling(0.013), 0.02);
    }

    #[test]
    fn a_report_is_one_runs_also_after_the_rollout_is_registered_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut record = fixture_record();
        record.state = State::new(Millis(1));
        let r = store.register(&record, Millis(1)).unwrap();
        let d = |at, kind: DecisionKind, phase, reason: &str| Decision {
            at: Millis(at),
            kind,
            step: 0,
            weight: Weight::ZERO,
            phase,
            verdict: None,
            reason: reason.into(),
        };
        let mut run1 = store
            .start_run(
                &r,
                &[d(
                    2,
                    DecisionKind::Deployed,
                    Phase::Initializing,
                    "v2 deployed",
                )],
                Millis(2),
            )
            .unwrap();
        store.add_sample("checkout", 1, &sample(3, 5, 4)).unwrap();
        run1.state.phase = Phase::RolledBack;
        run1.state.reason = "canary error rate 80 %".into();
        run1.state.outcome = Some(Outcome::Analysis {
            check: "canary error rate 80 %".into(),
        });
        store
            .save(
                &run1,
                &[d(
                    4,
                    DecisionKind::RolledBack,
                    Phase::RolledBack,
                    "canary error rate 80 %",
                )],
                Millis(4),
            )
            .unwrap();
        let run2 = store
            .start_run(
                &store.get("checkout").unwrap(),
                &[d(
                    5,
                    DecisionKind::Deployed,
                    Phase::Initializing,
                    "v3 deployed",
                )],
                Millis(5),
            )
            .unwrap();
        assert_eq!(run2.run, 2);
        let last = Report::load(&store, "checkout", None).unwrap();
        assert_eq!(
            (last.run, last.timeline.len(), last.samples.len()),
            (2, 1, 0)
        );
        assert_eq!(last.summary.canary.requests, 0, "run 2 starts from zero");
        let first = Report::load(&store, "checkout", Some(1)).unwrap();
        assert_eq!(
            (first.run, first.timeline.len(), first.samples.len()),
            (1, 2, 1)
        );
        assert_eq!(first.phase, "RolledBack");
        assert_eq!(first.summary.canary.errors, 4);
        // Run 2 ends; registered again (Initializing), its report still
        // shows its end, not the new registration.
        let mut run2 = store.get("checkout").unwrap();
        run2.state.phase = Phase::RolledBack;
        run2.state.outcome = Some(Outcome::Operator {
            by: crate::rollout::Actor::Dashboard,
        });
        run2.state.reason = "rolled back by an operator (the dashboard)".into();
        store.save(&run2, &[], Millis(8)).unwrap();
        store.register(&record, Millis(9)).unwrap();
        let again = Report::load(&store, "checkout", None).unwrap();
        assert_eq!((again.run, again.phase.as_str()), (2, "RolledBack"));
        assert!(
            again
                .to_html()
                .contains("rolled back by an operator (the dashboard)")
        );
        let first = Report::load(&store, "checkout", Some(1)).unwrap();
        assert!(
            first
                .to_html()
                .contains("rolled back by analysis: canary error rate 80 %")
        );
    }
}
