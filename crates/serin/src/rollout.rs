//! The rollout's domain: where it is ([`Phase`], [`State`]), what it will do
//! ([`Plan`] of [`Step`]s), and what it decided ([`Decision`], with the
//! [`Verdict`] that led to it). Plain data, shared by every layer: the state
//! machine ([`crate::controller::machine`]) changes it, the store persists
//! it, the API, the CLI and the report show it.

use std::time::Duration;

use serin_proxy::Weight;

use crate::time::Millis;

/// Where a rollout is in its life (the SPEC's phases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Registered; health checks run before the first step.
    Initializing,
    /// Steps are being executed.
    Progressing,
    /// Held: by a pause step without duration, or by an operator.
    Paused,
    /// The canary became the new stable.
    Succeeded,
    /// All traffic is back on stable.
    RolledBack,
}

impl Phase {
    /// Every phase, in the SPEC's order (for metrics with one series per phase).
    pub const ALL: [Phase; 5] = [
        Phase::Initializing,
        Phase::Progressing,
        Phase::Paused,
        Phase::Succeeded,
        Phase::RolledBack,
    ];

    /// The SPEC's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Succeeded => "Succeeded",
            Phase::RolledBack => "RolledBack",
        }
    }

    /// Parses the SPEC's spelling.
    pub fn parse(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// `Succeeded` or `RolledBack`: nothing more will happen.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack)
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this share of requests to the canary.
    SetWeight(Weight),
    /// Wait this long (and until the stage is judged); with `early`, end
    /// sooner once the judge has shown the canary within every limit
    /// (`pause: { duration: 10m, early: true }`).
    PauseFor {
        /// How long.
        duration: Duration,
        /// May end early on a pass that shows the canary within its limits.
        early: bool,
    },
    /// Wait for `serin promote`.
    PauseUntilPromoted,
    /// Wait until this URL answers 2xx (a confirm-promotion gate).
    PauseUntilGate(String),
}

/// What the machine needs to know of the rollout file.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// How often a verdict is made.
    pub interval: Duration,
    /// Consecutive no-data verdicts that roll back.
    pub no_data_limit: u32,
    /// `fixed` method: a pause ends on a verdict taken at its end.
    pub judge_at_end_of_pause: bool,
    /// How long a timed pause may overrun, or a gate stay shut, before the
    /// rollout is rolled back (`progressDeadline`; none: wait for ever).
    pub progress_deadline: Option<Duration>,
    /// Canary requests a stage needs before its verdict can be pass
    /// (`analysis.minRequests`): named in the reasons of a rollout waiting
    /// for that verdict.
    pub min_requests: u64,
    /// `analysis.mode: advisory`: a failing verdict, or `noDataLimit`
    /// no-data verdicts in a row, are recorded as "would have rolled back"
    /// and the rollout goes on by its steps.
    pub advisory: bool,
}

/// What the judge saw of the split between the versions (the requested
/// weight against the share of requests the canary really got).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSeen {
    /// The observed share is clearly far from the requested weight: the
    /// routing did not take effect, so the step is held.
    pub mismatch: bool,
    /// The numbers, e.g. "canary got 0.4 % of requests (12/3 000), 5 % requested".
    pub reason: String,
    /// The weight asked for, in percent.
    pub requested: f64,
    /// The canary's share of the requests the weight decided, in percent.
    pub observed: f64,
}

/// The verdict of one analysis: the judge's own type (`NotEnoughData` does
/// not count towards `noDataLimit`, `NoData` does).
pub use serin_analysis::Verdict;

/// Why the rollout is held in `Paused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// A pause step without duration: waits for `promote`.
    Step,
    /// `serin pause` or `serin traffic`: waits for `resume` or `promote`.
    Operator,
}

impl Hold {
    /// As stored and shown (`pausedBy`): `step` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::Step => "step",
            Hold::Operator => "operator",
        }
    }
}

/// Everything the machine remembers; persisted whole after every transition.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    /// Where the rollout is.
    pub phase: Phase,
    /// Index of the current step; `steps.len()` once past the last one.
    pub step: usize,
    /// The canary weight in force.
    pub weight: Weight,
    /// When the current step (or the rest of a resumed pause) started counting.
    pub step_started: Millis,
    /// Why `Paused`, if it is.
    pub hold: Option<Hold>,
    /// Milliseconds of a timed pause already served when an operator paused it.
    pub pause_served_ms: Option<u64>,
    /// When the next analysis is due.
    pub next_analysis: Millis,
    /// The current weight stage has a `pass` on enough data.
    pub stage_judged: bool,
    /// No-data verdicts in a row.
    pub no_data_streak: u32,
    /// Why the rollout ended, or what it waits for (the words; the
    /// outcome below is the fact).
    pub reason: String,
    /// How the run ended: set by the machine when it promotes or rolls back,
    /// none while the run goes on.
    pub outcome: Option<Outcome>,
    /// A "would have rolled back" was recorded and no clean pass has come
    /// since in this stage: the next one is the same episode, not recorded
    /// again.
    pub would_roll_back: bool,
    /// The split the last verdict saw, if the judge tested it.
    pub split: Option<SplitSeen>,
}

impl State {
    /// A rollout that has not started: all traffic on stable.
    pub fn new(now: Millis) -> State {
        State {
            phase: Phase::Initializing,
            step: 0,
            weight: Weight::ZERO,
            step_started: now,
            hold: None,
            pause_served_ms: None,
            next_analysis: now,
            stage_judged: false,
            no_data_streak: 0,
            reason: "waiting for health checks".into(),
            outcome: None,
            would_roll_back: false,
            split: None,
        }
    }
}

/// A verdict as it is recorded and shown: the SPEC's `pass`, `fail` or
/// `inconclusive` (the judge's two inconclusive [`Verdict`]s are one word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedVerdict {
    /// `pass`.
    Pass,
    /// `fail`.
    Fail,
    /// `inconclusive`.
    Inconclusive,
}

impl RecordedVerdict {
    /// The SPEC's word.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedVerdict::Pass => "pass",
            RecordedVerdict::Fail => "fail",
            RecordedVerdict::Inconclusive => "inconclusive",
        }
    }

    /// Parses the SPEC's word.
    pub fn parse(s: &str) -> Option<RecordedVerdict> {
        [
            RecordedVerdict::Pass,
            RecordedVerdict::Fail,
            RecordedVerdict::Inconclusive,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl From<Verdict> for RecordedVerdict {
    fn from(v: Verdict) -> RecordedVerdict {
        match v {
            Verdict::Pass => RecordedVerdict::Pass,
            Verdict::Fail => RecordedVerdict::Fail,
            Verdict::NoData | Verdict::NotEnoughData => RecordedVerdict::Inconclusive,
        }
    }
}

impl std::fmt::Display for RecordedVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of decision a [`Decision`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// The rollout started.
    Started,
    /// A step was applied or completed.
    Step,
    /// An analysis verdict.
    Verdict,
    /// An operator command.
    Operator,
    /// A gate answered.
    Gate,
    /// Promoted: the canary is the new stable.
    Promoted,
    /// Rolled back.
    RolledBack,
    /// The rollout file was registered (or updated): outside any run.
    Registered,
    /// A canary was deployed: the first decision of a run.
    Deployed,
    /// A failing verdict (or `noDataLimit` reached) that did not roll back,
    /// because the rollout or the check is advisory: what the judge would
    /// have done.
    WouldRollBack,
}

impl DecisionKind {
    /// A short lowercase name for storage and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Started => "started",
            DecisionKind::Step => "step",
            DecisionKind::Verdict => "verdict",
            DecisionKind::Operator => "operator",
            DecisionKind::Gate => "gate",
            DecisionKind::Promoted => "promoted",
            DecisionKind::RolledBack => "rolled-back",
            DecisionKind::Registered => "registered",
            DecisionKind::Deployed => "deployed",
            DecisionKind::WouldRollBack => "would-roll-back",
        }
    }

    /// Every kind.
    pub const ALL: [DecisionKind; 10] = [
        DecisionKind::Started,
        DecisionKind::Step,
        DecisionKind::Verdict,
        DecisionKind::Operator,
        DecisionKind::Gate,
        DecisionKind::Promoted,
        DecisionKind::RolledBack,
        DecisionKind::Registered,
        DecisionKind::Deployed,
        DecisionKind::WouldRollBack,
    ];

    /// Parses [`DecisionKind::as_str`]'s spelling.
    pub fn parse(s: &str) -> Option<DecisionKind> {
        DecisionKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Who asked for a change: attribution only, never authorization (the API's
/// token decides what may be done; this says who did it). The CLI, the
/// dashboard and `serin monitor` name themselves in the [`ACTOR_HEADER`]
/// request header; a request without it is the API's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// The `serin` command line (including `serin run` itself).
    Cli,
    /// A request to the API that did not name itself.
    Api,
    /// The dashboard.
    Dashboard,
    /// `serin monitor`.
    Monitor,
    /// A run recorded before serin recorded who acted (schema 2 and older).
    Unrecorded,
}

/// The request header in which a client names itself (`cli`, `dashboard`,
/// `monitor`); absent or unknown: [`Actor::Api`].
pub const ACTOR_HEADER: &str = "x-serin-actor";

impl Actor {
    /// As written in the header, stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Cli => "cli",
            Actor::Api => "api",
            Actor::Dashboard => "dashboard",
            Actor::Monitor => "monitor",
            Actor::Unrecorded => "unrecorded",
        }
    }

    /// The header's value: a name a client may give itself, anything else
    /// (or nothing) is the API's.
    pub fn from_header(value: Option<&str>) -> Actor {
        match value.map(str::trim) {
            Some("cli") => Actor::Cli,
            Some("dashboard") => Actor::Dashboard,
            Some("monitor") => Actor::Monitor,
            _ => Actor::Api,
        }
    }

    /// For sentences: "the CLI", "the dashboard", ...
    pub fn said(self) -> &'static str {
        match self {
            Actor::Cli => "the CLI",
            Actor::Api => "the API",
            Actor::Dashboard => "the dashboard",
            Actor::Monitor => "serin monitor",
            Actor::Unrecorded => "an operator (not recorded who)",
        }
    }
}

/// A breach of `serin monitor`'s own thresholds that rolled a run back.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Breach {
    /// What was measured: `error-rate` (percent) or `p95` (milliseconds).
    pub metric: String,
    /// The threshold it was above (`--error-threshold`, `--latency-threshold`).
    pub threshold: f64,
    /// The value in the interval that breached it.
    pub value: f64,
}

impl Breach {
    fn unit(&self) -> &'static str {
        if self.metric == "p95" { "ms" } else { "%" }
    }
}

/// Who or what stops a run from outside the machine ([`crate::controller::machine::Input::Rollback`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// `serin rollback`, the API, the dashboard, or a cleanup.
    Operator(Actor),
    /// `serin monitor --auto-rollback` on a breach of its thresholds.
    Monitor(Breach),
    /// SIGINT, SIGTERM or SIGHUP to `serin run` (the signal's name).
    Interrupted(String),
}

/// How a run ended: the one source of truth for status, history, report,
/// webhooks and `serin run`'s exit code (the reason string only words it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Outcome {
    /// Promoted: the canary is the new stable. `by` is the operator who
    /// promoted it; none when the steps completed with a passing verdict.
    Promoted {
        /// Who promoted it, if an operator did.
        by: Option<Actor>,
    },
    /// Rolled back on a failing verdict.
    Analysis {
        /// The failing check, with its numbers (the verdict's reason).
        check: String,
    },
    /// Rolled back after `noDataLimit` no-data verdicts in a row.
    NoData {
        /// How many in a row.
        intervals: u32,
    },
    /// Rolled back: no progress within `progressDeadline`.
    Deadline {
        /// The deadline, in milliseconds.
        deadline_ms: u64,
    },
    /// Rolled back by an operator (`serin rollback`, the API, the
    /// dashboard, `serin cleanup` of a run in progress).
    Operator {
        /// Who.
        by: Actor,
    },
    /// Rolled back by `serin monitor --auto-rollback`.
    Monitor {
        /// The breach, with its threshold and value.
        breach: Breach,
    },
    /// `serin run` got SIGINT, SIGTERM or SIGHUP and rolled back before exiting.
    Interrupted {
        /// `SIGINT`, `SIGTERM` or `SIGHUP` (its terminal closed).
        signal: String,
    },
    /// Never ended by serin: the process that ran it died (killed, crashed)
    /// and a new run of the name replaced it. No operator acted and no
    /// verdict decided; traffic went back to stable with the new run's
    /// start.
    Abandoned {
        /// What ended it.
        why: String,
    },
    /// A rollback decided before serin stopped, written only at the next
    /// start (the state database could not take it then).
    Recovered {
        /// Why it was rolled back.
        reason: String,
        /// The outcome decided then, when it was recorded (serin 3 and
        /// later record it beside the reason).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        of: Option<Box<Outcome>>,
    },
}

impl Outcome {
    /// The canary was promoted.
    pub fn promoted(&self) -> bool {
        matches!(self, Outcome::Promoted { .. })
    }

    /// Rolled back by a person or their tool (an operator, the monitor, a
    /// signal), not by the rollout's own analysis: `serin run` exits 4.
    pub fn stopped_from_outside(&self) -> bool {
        match self {
            Outcome::Operator { .. } | Outcome::Monitor { .. } | Outcome::Interrupted { .. } => {
                true
            }
            Outcome::Recovered { of: Some(o), .. } => o.stopped_from_outside(),
            _ => false,
        }
    }

    /// The phase a run with this outcome ended in.
    pub fn phase(&self) -> Phase {
        if self.promoted() {
            Phase::Succeeded
        } else {
            Phase::RolledBack
        }
    }

    /// The kind, as in JSON (`promoted`, `analysis`, `operator`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Promoted { .. } => "promoted",
            Outcome::Analysis { .. } => "analysis",
            Outcome::NoData { .. } => "no-data",
            Outcome::Deadline { .. } => "deadline",
            Outcome::Operator { .. } => "operator",
            Outcome::Monitor { .. } => "monitor",
            Outcome::Interrupted { .. } => "interrupted",
            Outcome::Abandoned { .. } => "abandoned",
            Outcome::Recovered { .. } => "recovered",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Promoted { by: None } => f.write_str("promoted (all steps completed)"),
            Outcome::Promoted { by: Some(a) } => write!(f, "promoted by {}", a.said()),
            Outcome::Analysis { check } => write!(f, "rolled back by analysis: {check}"),
            Outcome::NoData { intervals } => {
                write!(f, "rolled back: no data for {intervals} intervals in a row")
            }
            Outcome::Deadline { deadline_ms } => write!(
                f,
                "rolled back: no progress within the progress deadline ({})",
                crate::time::human_span(*deadline_ms)
            ),
            Outcome::Operator { by } => write!(f, "rolled back by {}", a_said(*by)),
            Outcome::Monitor { breach } => write!(
                f,
                "rolled back by serin monitor --auto-rollback: canary {} {} {} above the threshold {} {}",
                breach.metric,
                breach.value,
                breach.unit(),
                breach.threshold,
                breach.unit()
            ),
            Outcome::Interrupted { signal } => {
                write!(f, "rolled back: serin run interrupted ({signal})")
            }
            Outcome::Abandoned { why } => write!(f, "abandoned: {why}"),
            Outcome::Recovered { reason, .. } => write!(f, "rolled back (recovered): {reason}"),
        }
    }
}

fn a_said(by: Actor) -> String {
    match by {
        Actor::Unrecorded => by.said().to_string(),
        other => format!("an operator ({})", other.said()),
    }
}

/// One recorded decision: time, step, weight, verdict and the reason with its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// When.
    pub at: Millis,
    /// What kind.
    pub kind: DecisionKind,
    /// The index of the step it was made in (0-based, as the status's
    /// `step`; the last step's once all are done). Text shows it 1-based.
    pub step: usize,
    /// The weight after the decision.
    pub weight: Weight,
    /// The phase after the decision.
    pub phase: Phase,
    /// The verdict, for verdict decisions.
    pub verdict: Option<RecordedVerdict>,
    /// Why, with the numbers.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_verdicts_are_the_specs_words() {
        for v in [
            RecordedVerdict::Pass,
            RecordedVerdict::Fail,
            RecordedVerdict::Inconclusive,
        ] {
            assert_eq!(RecordedVerdict::parse(v.as_str()), Some(v));
        }
        assert_eq!(RecordedVerdict::parse("maybe"), None);
        assert_eq!(
            RecordedVerdict::from(Verdict::NotEnoughData),
            RecordedVerdict::from(Verdict::NoData)
        );
        assert_eq!(RecordedVerdict::from(Verdict::Fail).to_string(), "fail");
    }

    #[test]
    fn decision_kinds_read_back() {
        for k in DecisionKind::ALL {
            assert_eq!(DecisionKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(DecisionKind::parse("maybe"), None);
        assert_eq!(DecisionKind::WouldRollBack.as_str(), "would-roll-back");
    }
}
