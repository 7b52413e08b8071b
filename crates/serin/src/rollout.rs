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
    /// Wait this long (and until the stage is judged).
    PauseFor(Duration),
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
    /// Why the rollout ended, or what it waits for.
    pub reason: String,
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
        }
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
}
