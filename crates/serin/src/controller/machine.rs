//! The rollout state machine: `(state, input) -> (state, actions, decisions)`.
//!
//! Pure: no I/O, no clock. Time comes in with every input as [`Millis`], so a
//! test runs hours of steps in microseconds. The driver executes the returned
//! [`Action`]s in order after it has persisted the new [`State`] and the
//! [`Decision`]s: persist first, then apply, so a crash in between is repaired
//! on restart by applying the persisted weight again.
//!
//! # Rules
//! - `setWeight` steps apply at once and the machine moves straight on.
//! - A timed pause ends when its time is up **and** the current weight stage
//!   has been judged `pass` on enough canary requests (`minRequests`); with the
//!   `fixed` method, on a verdict taken at the end of the pause. Without canary
//!   traffic (weight 0) there is nothing to judge and the time alone counts.
//! - A pause without a duration holds the rollout in `Paused` until `promote`.
//! - A gate pause asks the driver to check a URL every interval and moves on
//!   when it answers 2xx.
//! - Analysis runs every interval while the canary has traffic, in
//!   `Progressing` and in `Paused` alike: a paused rollout is still watched.
//! - `fail`, or `noDataLimit` no-data verdicts in a row, roll back at once.
//! - No judgement, no promotion: after the last step the canary is promoted
//!   (it becomes the new stable) only when the weight in force is above 0
//!   and its stage has been judged `pass`. Otherwise the rollout waits at the
//!   end of its steps, analysed every interval, until a passing verdict
//!   (or, where set, `progressDeadline` rolls it back). A last `setWeight`
//!   starts a new stage, so the weight it sets must be in force and judged
//!   before promotion; the driver feeds [`Input::Tick`] only while the data
//!   plane holds the weight, so no verdict is taken on a split not in force.
//! - An operator's `promote --full`, or `promote` of the last pause or of a
//!   rollout waiting at the end, promotes at once: the operator's evidence,
//!   recorded as such.
//! - Advisory mode (`Plan::advisory`): a `fail` does not roll back; it is
//!   recorded as a [`DecisionKind::WouldRollBack`] and counts as the stage's
//!   pass. `noDataLimit` reached is recorded the same way and the count
//!   starts over, but the stage still waits for a verdict on data. An
//!   advisory check that fails (`would_fail`, in either mode) is recorded
//!   the same way and never rolls back. One such decision per episode: a
//!   clean pass or a new stage ends it.
//! - Early success: in a `pause: {duration, early: true}`, a pass whose
//!   judge showed the canary within every limit (`within_limits`) ends the
//!   pause at once, unless an advisory check fails.
//! - Split: a verdict that saw the canary's share far from the weight
//!   (`split.mismatch`) leaves the stage unjudged: a timed pause does not
//!   end, the end does not promote, the reason is the split's; past
//!   `progressDeadline` the rollout rolls back. A `fail` still rolls back.

use serin_proxy::Weight;

use crate::controller::seams::Unanswered;
use crate::rollout::{
    Actor, Decision, DecisionKind, Hold, Outcome, Phase, Plan, RecordedVerdict, SplitSeen, State,
    Step, Stop, Verdict,
};
use crate::time::{Millis, clock, clock_seen_at, human, human_span};

/// Something that happened to a rollout.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Health checks passed: start the first step.
    Start,
    /// Time passed.
    Tick,
    /// An analysis asked for by [`Action::Analyze`] came back.
    Verdict {
        /// The verdict.
        verdict: Verdict,
        /// Its reason, with the numbers.
        reason: String,
        /// Whether it was taken with `end_of_pause` set.
        end_of_pause: bool,
        /// Canary requests the judge counted in this stage, if it said
        /// (named in the reason of a rollout waiting for `minRequests`).
        canary_requests: Option<u64>,
        /// Canary requests the canary holds open, where the data plane can
        /// tell (named in the same reason: a canary that accepts and never
        /// answers is not a canary without traffic). Never evidence.
        canary_unanswered: Option<Unanswered>,
        /// An advisory check failed (its reason, with its numbers): recorded
        /// as "would have rolled back", never rolling back.
        would_fail: Option<String>,
        /// The judge has shown the canary within every limit (with the
        /// e-values): ends an early pause at once.
        within_limits: Option<String>,
        /// The requested weight against the canary's observed share: a
        /// mismatch holds the step.
        split: Option<SplitSeen>,
    },
    /// A health check or the pre-rollout check failed while `Initializing`:
    /// what it waits for, with the URL and the last error.
    NotReady(String),
    /// A gate asked for by [`Action::CheckGate`] answered.
    Gate {
        /// It answered 2xx.
        open: bool,
        /// What it answered, for the record.
        detail: String,
    },
    /// The health checks (or the pre-rollout check) failed from `since`
    /// until now, `last` saying how they failed last: recorded once, when
    /// the wait ends or its failure changes (never once per check), so the
    /// history says why the run started late.
    ReadyWaited {
        /// When the checks began failing this way.
        since: Millis,
        /// The last failure, as the status reason said it (versions, URL, error).
        last: String,
    },
    /// `serin promote [--full]`.
    Promote {
        /// Skip every remaining step.
        full: bool,
        /// Who asked (attribution only).
        by: Actor,
    },
    /// `serin rollback`, the monitor's auto-rollback, or a signal to `serin run`.
    Rollback(Stop),
    /// A rollback decided before serin stopped, which the state database
    /// could not take then (found in its write-ahead record at start).
    RecoveredRollback {
        /// Why it was rolled back.
        reason: String,
        /// The outcome decided then, if it was recorded.
        of: Option<Outcome>,
    },
    /// `serin pause`.
    Pause {
        /// Who asked (attribution only).
        by: Actor,
    },
    /// `serin resume`.
    Resume {
        /// Who asked (attribution only).
        by: Actor,
    },
    /// `serin traffic PCT`: set the weight by hand and hold the automation.
    SetWeight {
        /// The canary's weight.
        weight: Weight,
        /// Who asked (attribution only).
        by: Actor,
    },
    /// The data plane took the weight in force after refusing it for
    /// `refused_ms`: a timed pause counts from now, as no time ran on the
    /// split it was meant to observe.
    WeightApplied {
        /// How long the data plane refused it.
        refused_ms: u64,
    },
}

/// What the driver must do, in order, after persisting the new state.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Make the data plane send this share to the canary.
    ApplyWeight(Weight),
    /// A new weight stage starts: absolute limits and `fixed` tests start over.
    BeginStage(Weight),
    /// Take metrics and judge them; answer with [`Input::Verdict`].
    Analyze {
        /// The current timed pause is over: `fixed` judges now.
        end_of_pause: bool,
    },
    /// Ask the gate; answer with [`Input::Gate`].
    CheckGate(String),
    /// The canary becomes the new stable: all traffic on it, versions recorded.
    PromoteCanary,
    /// The phase changed: tell people and systems.
    Notify(Phase),
}

/// An operator command that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The outcome of one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The state to persist.
    pub state: State,
    /// What to do after persisting, in order.
    pub actions: Vec<Action>,
    /// What to record.
    pub decisions: Vec<Decision>,
}

/// How the reason of a rollout whose timed pause is over begins.
const PAUSE_DONE: &str = "pause complete; ";
/// How the reason of a rollout at the end of its steps begins.
const STEPS_DONE: &str = "all steps done; ";

/// Feeds one input to the machine. Operator commands that do not fit the
/// current phase are [`Refused`] and change nothing.
pub fn step(plan: &Plan, state: &State, now: Millis, input: Input) -> Result<Transition, Refused> {
    let mut t = Machine {
        plan,
        now,
        state: state.clone(),
        actions: Vec::new(),
        decisions: Vec::new(),
    };
    let before = state.phase;
    match input {
        Input::Start => t.start()?,
        Input::Tick => t.tick(),
        Input::Verdict {
            verdict,
            reason,
            end_of_pause,
            canary_requests,
            canary_unanswered,
            would_fail,
            within_limits,
            split,
        } => t.verdict(Judged {
            verdict,
            reason,
            end_of_pause,
            canary_requests,
            canary_unanswered,
            would_fail,
            within_limits,
            split,
        }),
        Input::NotReady(reason) => t.not_ready(reason),
        Input::ReadyWaited { since, last } => t.ready_waited(since, &last),
        Input::Gate { open, detail } => t.gate(open, detail),
        Input::Promote { full, by } => t.promote(full, by)?,
        Input::Rollback(stop) => t.rollback_from_outside(stop)?,
        Input::RecoveredRollback { reason, of } => t.recovered_rollback(reason, of),
        Input::Pause { by } => t.pause(by)?,
        Input::Resume { by } => t.resume(by)?,
        Input::SetWeight { weight, by } => t.set_weight_by_hand(weight, by)?,
        Input::WeightApplied { refused_ms } => t.weight_applied_late(refused_ms),
    }
    if t.state.phase != before {
        t.actions.push(Action::Notify(t.state.phase));
    }
    Ok(Transition {
        state: t.state,
        actions: t.actions,
        decisions: t.decisions,
    })
}

/// An [`Input::Verdict`], taken apart.
struct Judged {
    verdict: Verdict,
    reason: String,
    end_of_pause: bool,
    canary_requests: Option<u64>,
    canary_unanswered: Option<Unanswered>,
    would_fail: Option<String>,
    within_limits: Option<String>,
    split: Option<SplitSeen>,
}

struct Machine<'a> {
    plan: &'a Plan,
    now: Millis,
    state: State,
    actions: Vec<Action>,
    decisions: Vec<Decision>,
}

impl Machine<'_> {
    fn record(
        &mut self,
        kind: DecisionKind,
        verdict: Option<RecordedVerdict>,
        reason: impl Into<String>,
    ) {
        self.decisions.push(Decision {
            at: self.now,
            kind,
            // After the last step `state.step` is one past it.
            step: self.state.step.min(self.plan.steps.len().saturating_sub(1)),
            weight: self.state.weight,
            phase: self.state.phase,
            verdict,
            reason: reason.into(),
        });
    }

    fn active(&self, command: &str) -> Result<(), Refused> {
        match self.state.phase {
            Phase::Progressing | Phase::Paused => Ok(()),
            Phase::Initializing => Err(Refused(format!(
                "cannot {command}: the rollout has not started"
            ))),
            p => Err(Refused(format!(
                "cannot {command}: the rollout has already ended ({})",
                p.as_str()
            ))),
        }
    }

    fn start(&mut self) -> Result<(), Refused> {
        if self.state.phase != Phase::Initializing {
            return Err(Refused(format!(
                "cannot start: the rollout is already {}",
                self.state.phase.as_str()
            )));
        }
        self.state.phase = Phase::Progressing;
        self.state.step = 0;
        self.state.next_analysis = self.now.after(self.plan.interval);
        self.record(
            DecisionKind::Started,
            None,
            "health checks passed; starting the first step",
        );
        self.enter_step();
        Ok(())
    }

    /// Executes steps from `state.step` until one has to wait.
    fn enter_step(&mut self) {
        loop {
            let Some(step) = self.plan.steps.get(self.state.step).cloned() else {
                self.state.step_started = self.now;
                self.state.pause_served_ms = None;
                if !self.move_on() {
                    self.state.reason = self.waiting_for_a_pass(None, None);
                    self.record(DecisionKind::Step, None, self.state.reason.clone());
                }
                return;
            };
            self.state.step_started = self.now;
            self.state.pause_served_ms = None;
            match step {
                Step::SetWeight(w) => {
                    self.change_weight(w);
                    self.record(
                        DecisionKind::Step,
                        None,
                        format!("canary weight set to {w} %"),
                    );
                    self.state.step += 1;
                }
                Step::PauseFor { duration: d, .. } => {
                    self.state.reason = self.pausing(d);
                    self.record(DecisionKind::Step, None, self.state.reason.clone());
                    return;
                }
                Step::PauseUntilPromoted => {
                    self.state.phase = Phase::Paused;
                    self.state.hold = Some(Hold::Step);
                    self.state.reason = "waiting for `serin promote`".into();
                    self.record(DecisionKind::Step, None, self.state.reason.clone());
                    return;
                }
                Step::PauseUntilGate(url) => {
                    self.state.reason = format!("waiting for gate {url} to answer 2xx");
                    self.record(DecisionKind::Step, None, self.state.reason.clone());
                    self.actions.push(Action::CheckGate(url));
                    return;
                }
            }
        }
    }

    fn change_weight(&mut self, w: Weight) {
        self.state.weight = w;
        self.state.stage_judged = false;
        // A new stage: its own episode, its own split.
        self.state.would_roll_back = false;
        self.state.split = None;
        self.actions.push(Action::ApplyWeight(w));
        self.actions.push(Action::BeginStage(w));
    }

    fn advance(&mut self) {
        self.state.step += 1;
        self.enter_step();
    }

    fn current_step(&self) -> Option<&Step> {
        self.plan.steps.get(self.state.step)
    }

    /// A timed pause's time is up (counting time served before an operator pause).
    fn pause_time_up(&self) -> bool {
        match (self.current_step(), self.state.hold) {
            (Some(Step::PauseFor { duration: d, .. }), None) => {
                u128::from(self.pause_served()) >= d.as_millis()
            }
            _ => false,
        }
    }

    /// Milliseconds of the current timed pause served so far.
    fn pause_served(&self) -> u64 {
        self.state.pause_served_ms.unwrap_or(0) + self.now.since(self.state.step_started)
    }

    /// An operator holds a timed pause: remember the time served, so `resume`
    /// continues the pause instead of starting it over.
    fn bank_pause_time(&mut self) {
        if let Some(Step::PauseFor { .. }) = self.current_step() {
            self.state.pause_served_ms = Some(self.pause_served());
        }
    }

    /// All steps are done: the rollout waits for a passing verdict to promote.
    fn at_end(&self) -> bool {
        self.state.step >= self.plan.steps.len()
    }

    /// The canary has traffic and its stage is judged `pass`: evidence enough
    /// to promote.
    fn judged_for_promotion(&self) -> bool {
        self.state.weight > Weight::ZERO && self.state.stage_judged
    }

    /// What a rollout whose pause (or whose steps) are done waits for;
    /// `so_far`: the canary requests the judge counted in this stage;
    /// `open`: the canary requests held open, where the data plane can tell
    /// (a canary that accepts requests and never answers them reads apart
    /// from one that gets none).
    fn waiting_for_a_pass(&self, so_far: Option<u64>, open: Option<Unanswered>) -> String {
        let need = self.plan.min_requests;
        let open = match open {
            Some(u) if u.in_flight > 0 && u.silent_ms >= 1000 => format!(
                "; {} in flight, none answered for {}",
                u.in_flight,
                human_span(u.silent_ms - u.silent_ms % 1000)
            ),
            // Requests open for less than a second are traffic flowing, not
            // news: said, they would flicker in and out of every reason.
            _ => String::new(),
        };
        let what = match so_far {
            Some(n) if n < need => {
                format!("waiting for {need} canary requests ({n} so far{open})")
            }
            Some(n) => {
                format!("waiting for a passing verdict ({n} canary requests so far{open})")
            }
            None => format!("waiting for a passing verdict on {need} canary requests"),
        };
        if !self.at_end() {
            format!("{PAUSE_DONE}{what}")
        } else if self.state.weight == Weight::ZERO {
            "all steps done with no canary traffic (weight 0 %); nothing to judge, so not promoting: `serin promote --full` or `serin rollback`".into()
        } else {
            format!(
                "{STEPS_DONE}{what} at {} % before promoting",
                self.state.weight
            )
        }
    }

    /// The reason already says the rollout waits for a pass (with the
    /// counts of the last verdict, which a tick does not know).
    fn says_waiting_for_a_pass(&self) -> bool {
        let r = &self.state.reason;
        (r.starts_with(PAUSE_DONE) && !self.at_end())
            || (r.starts_with(STEPS_DONE) && self.at_end())
    }

    /// What a timed pause of `d` waits for: its time left, and until when
    /// (UTC).
    fn pausing(&self, d: std::time::Duration) -> String {
        let whole = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let left = whole.saturating_sub(self.pause_served());
        format!(
            "pausing {}: {} left (until {})",
            human(d),
            human_span(left),
            clock_seen_at(
                self.now,
                self.now.after(std::time::Duration::from_millis(left))
            )
        )
    }

    /// The one rule for moving on by itself: a timed pause ends when its
    /// time is up and its stage is judged (or has nothing to judge); the
    /// end of the steps promotes once the weight in force is judged. Only
    /// while `Progressing` (a held rollout waits for its operator).
    fn move_on(&mut self) -> bool {
        if self.state.phase != Phase::Progressing {
            return false;
        }
        if self.pause_time_up() && self.stage_done() {
            let said = if self.state.weight == Weight::ZERO {
                "pause complete (no canary traffic to judge)"
            } else {
                "pause complete and stage judged"
            };
            self.record(DecisionKind::Step, None, said);
            self.advance();
            return true;
        }
        if self.at_end() && self.judged_for_promotion() {
            self.promote_now("all steps completed", None);
            return true;
        }
        false
    }

    /// The stage has been judged as the method requires (nothing to judge at weight 0).
    fn stage_done(&self) -> bool {
        self.state.weight == Weight::ZERO || self.state.stage_judged
    }

    /// A timed pause has overrun its duration, or a gate has stayed shut,
    /// for longer than the progress deadline. Steps that wait for a person
    /// (`pause: {}`, an operator's pause) never do.
    fn past_progress_deadline(&self) -> bool {
        let Some(limit) = self.plan.progress_deadline else {
            return false;
        };
        if self.state.phase != Phase::Progressing || self.state.hold.is_some() {
            return false;
        }
        let overrun = match self.current_step() {
            Some(Step::PauseFor { duration: d, .. }) => {
                u128::from(self.pause_served()).saturating_sub(d.as_millis())
            }
            // A shut gate, or the end of the steps waiting for a verdict
            // (or for canary traffic).
            Some(Step::PauseUntilGate(_)) | None => {
                u128::from(self.now.since(self.state.step_started))
            }
            _ => return false,
        };
        overrun >= limit.as_millis()
    }

    /// The weight in force only now: what ran before it (pause time, even
    /// time banked by an operator's pause; the stage's numbers; a gate's
    /// wait) was not on this split, so it starts over.
    fn weight_applied_late(&mut self, refused_ms: u64) {
        if !matches!(self.state.phase, Phase::Progressing | Phase::Paused) {
            return; // ended: nothing runs any more
        }
        let held = self.state.hold.is_some();
        let mut said = format!(
            "canary weight {} % applied after the data plane refused it for {}",
            self.state.weight,
            human_span(refused_ms)
        );
        self.state.stage_judged = false;
        self.state.split = None;
        self.state.next_analysis = self.now.after(self.plan.interval);
        self.actions.push(Action::BeginStage(self.state.weight));
        match self.current_step().cloned() {
            Some(Step::PauseFor { duration: d, .. }) => {
                self.state.pause_served_ms = None;
                if !held {
                    self.state.step_started = self.now;
                    self.state.reason = self.pausing(d);
                }
                said.push_str(&format!("; the {} pause counts from now", human(d)));
            }
            Some(Step::PauseUntilGate(url)) if !held => {
                self.state.step_started = self.now;
                self.actions.push(Action::CheckGate(url));
            }
            None if !held => self.state.step_started = self.now,
            _ => {}
        }
        self.record(DecisionKind::Step, None, said);
    }

    fn tick(&mut self) {
        if !matches!(self.state.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        if self.move_on() {
            return;
        }
        if self.past_progress_deadline() {
            let why = format!(
                "no progress within the progress deadline ({}): {}",
                human(self.plan.progress_deadline.unwrap_or_default()),
                self.state.reason
            );
            let deadline_ms = self
                .plan
                .progress_deadline
                .unwrap_or_default()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX);
            self.roll_back(why, Outcome::Deadline { deadline_ms });
            return;
        }
        if self.now >= self.state.next_analysis {
            // On a fixed cadence from the stage's start: a tick that comes a
            // little late does not push every later verdict back with it
            // (which lost one verdict a minute in 10 under load). Only a
            // rollout more than an interval behind starts its cadence anew.
            let next = self.state.next_analysis.after(self.plan.interval);
            self.state.next_analysis = if next > self.now {
                next
            } else {
                self.now.after(self.plan.interval)
            };
            // The time left in a timed pause, said once an interval (when
            // the state is written anyway).
            if let (Some(Step::PauseFor { duration: d, .. }), None, Phase::Progressing) =
                (self.current_step(), self.state.hold, self.state.phase)
                && !self.pause_time_up()
            {
                self.state.reason = self.pausing(*d);
            }
            if self.state.weight > Weight::ZERO {
                // At the end of the steps there is no pause left: `fixed`
                // judges the last stage on every verdict.
                let end_of_pause = self.pause_time_up() || self.at_end();
                self.actions.push(Action::Analyze { end_of_pause });
                if end_of_pause && !self.state.stage_judged && !self.says_waiting_for_a_pass() {
                    self.state.reason = self.waiting_for_a_pass(None, None);
                }
            }
            if let (Some(Step::PauseUntilGate(url)), None) = (self.current_step(), self.state.hold)
            {
                self.actions.push(Action::CheckGate(url.clone()));
            }
            // A split far from the weight is still what the step waits for.
            self.hold_on_split();
        }
    }

    fn not_ready(&mut self, reason: String) {
        if self.state.phase == Phase::Initializing {
            self.state.reason = reason;
        }
    }

    fn ready_waited(&mut self, since: Millis, last: &str) {
        let waited = human_span(self.now.since(since));
        let (from, to) = (clock(since), clock(self.now));
        self.record(
            DecisionKind::Gate,
            None,
            format!("health checks failed for {waited} (from {from} to {to}); last: {last}"),
        );
    }

    fn verdict(&mut self, j: Judged) {
        if !matches!(self.state.phase, Phase::Progressing | Phase::Paused) {
            return; // a late answer for a rollout that has ended
        }
        let Judged {
            verdict,
            reason,
            end_of_pause,
            canary_requests,
            canary_unanswered,
            would_fail,
            within_limits,
            split,
        } = j;
        // No data is no news of the split either: the last one seen stands.
        if split.is_some() || verdict != Verdict::NoData {
            self.state.split = split;
        }
        let spelled = RecordedVerdict::from(verdict);
        match verdict {
            Verdict::Fail if !self.plan.advisory => {
                self.state.no_data_streak = 0;
                self.record(DecisionKind::Verdict, Some(spelled), reason.clone());
                self.roll_back(reason.clone(), Outcome::Analysis { check: reason });
                return;
            }
            Verdict::Fail => {
                // Advisory: what the judge would have done is recorded, and
                // the rollout goes on as if the verdict had been a pass.
                self.state.no_data_streak = 0;
                self.record(DecisionKind::Verdict, Some(spelled), reason.clone());
                self.would_roll_back(&reason);
                if end_of_pause || !self.plan.judge_at_end_of_pause {
                    self.state.stage_judged = true;
                }
            }
            Verdict::NoData => {
                self.state.no_data_streak += 1;
                // Missing data is no evidence: a pass before it does not end
                // a pause or promote while the data are missing.
                self.state.stage_judged = false;
                self.record(DecisionKind::Verdict, Some(spelled), reason.clone());
                if self.state.no_data_streak >= self.plan.no_data_limit {
                    let why = format!(
                        "no data for {} intervals in a row (noDataLimit {}): {reason}",
                        self.state.no_data_streak, self.plan.no_data_limit
                    );
                    if self.plan.advisory {
                        // The count starts over; the stage still waits for
                        // a verdict on data (no data is no evidence).
                        self.state.no_data_streak = 0;
                        self.would_roll_back(&why);
                    } else {
                        let intervals = self.state.no_data_streak;
                        self.roll_back(why, Outcome::NoData { intervals });
                    }
                }
                self.hold_on_split();
                return;
            }
            Verdict::NotEnoughData => {
                self.state.no_data_streak = 0;
                // The judge's latest view of the stage (e.g. "above the
                // limit, not yet significant") overrides an earlier pass:
                // the pause does not end on a pass the data no longer bear.
                self.state.stage_judged = false;
                // A rollout that only waits for a pass says why it has none
                // (and so does a progress deadline that ends the wait).
                if self.state.phase == Phase::Progressing && (self.pause_time_up() || self.at_end())
                {
                    self.state.reason = format!(
                        "{}; last verdict: {reason}",
                        self.waiting_for_a_pass(canary_requests, canary_unanswered)
                    );
                }
                self.record(DecisionKind::Verdict, Some(spelled), reason);
            }
            Verdict::Pass => {
                self.state.no_data_streak = 0;
                if end_of_pause || !self.plan.judge_at_end_of_pause {
                    self.state.stage_judged = true;
                }
                self.record(DecisionKind::Verdict, Some(spelled), reason);
            }
        }
        match &would_fail {
            Some(why) => self.would_roll_back(why),
            // A clean pass ends the episode: a later failure is a new one.
            None if verdict == Verdict::Pass => self.state.would_roll_back = false,
            None => {}
        }
        if self.hold_on_split() {
            return;
        }
        if verdict == Verdict::Pass
            && would_fail.is_none()
            && !held_open(canary_requests, canary_unanswered.as_ref())
            && let Some(within) = within_limits
            && self.early_success(&within)
        {
            return;
        }
        self.move_on();
    }

    /// A failing verdict that did not roll back (advisory mode, or an
    /// advisory check): recorded once per episode, which lasts until a
    /// clean pass or a new stage.
    fn would_roll_back(&mut self, why: &str) {
        if self.state.would_roll_back {
            return;
        }
        self.state.would_roll_back = true;
        self.record(
            DecisionKind::WouldRollBack,
            None,
            format!("would have rolled back: {why}"),
        );
    }

    /// The last verdict saw a split far from the requested weight: the
    /// stage's numbers do not mean what the judge thinks, so the stage is
    /// not judged (a timed pause does not end, the end does not promote)
    /// and the rollout says why it waits. True when it holds.
    fn hold_on_split(&mut self) -> bool {
        let Some(split) = self.state.split.as_ref().filter(|s| s.mismatch) else {
            return false;
        };
        let said = split.reason.clone();
        self.state.stage_judged = false;
        if self.state.phase == Phase::Progressing && self.state.hold.is_none() {
            self.state.reason = match self.current_step() {
                Some(Step::PauseFor { duration, .. }) if !self.pause_time_up() => {
                    format!("{}; {said}", self.pausing(*duration))
                }
                _ => said,
            };
        }
        true
    }

    /// A pass that shows the canary within every limit ends an early pause
    /// at once. True when it did.
    fn early_success(&mut self, within: &str) -> bool {
        let Some(Step::PauseFor {
            duration,
            early: true,
        }) = self.current_step().cloned()
        else {
            return false;
        };
        if self.state.phase != Phase::Progressing
            || self.state.hold.is_some()
            || self.state.weight == Weight::ZERO
            || !self.state.stage_judged
            || self.pause_time_up()
        {
            return false;
        }
        self.record(
            DecisionKind::Step,
            None,
            format!(
                "early success after {} of {}: {within}",
                human_span(self.pause_served()),
                human(duration)
            ),
        );
        self.advance();
        true
    }

    fn gate(&mut self, open: bool, detail: String) {
        let waiting_here = matches!(self.current_step(), Some(Step::PauseUntilGate(_)))
            && self.state.phase == Phase::Progressing
            && self.state.hold.is_none();
        if !waiting_here {
            return;
        }
        let url = match self.current_step() {
            Some(Step::PauseUntilGate(url)) => url.clone(),
            _ => return,
        };
        if open {
            self.record(
                DecisionKind::Gate,
                None,
                format!("gate open: {url} answered {detail}"),
            );
            self.advance();
        } else {
            self.state.reason = format!(
                "waiting for gate {url} to answer 2xx; its last answer ({}): {detail}",
                clock(self.now)
            );
        }
    }

    fn promote(&mut self, full: bool, by: Actor) -> Result<(), Refused> {
        self.active("promote")?;
        let in_pause = matches!(
            self.current_step(),
            Some(Step::PauseFor { .. } | Step::PauseUntilPromoted | Step::PauseUntilGate(_))
        );
        // `--full` promotes now: the operator's evidence stands for the
        // verdict, and the record says whether there was one. A plain
        // `promote` is no evidence: at the last pause it ends the pause,
        // and the rollout promotes on a passing verdict as after a timed
        // pause (it promoted a canary that had not one request, answering
        // "pause ended").
        if !full && self.at_end() && !in_pause {
            return Err(Refused(
                "cannot promote: the steps are done and the rollout promotes on its first passing verdict (status says what it waits for); `promote --full` promotes without one".into(),
            ));
        }
        if full {
            let evidence = if self.judged_for_promotion() {
                " (stage judged pass)"
            } else {
                " without a passing verdict"
            };
            self.record(
                DecisionKind::Operator,
                None,
                "promote --full: skipping the remaining steps",
            );
            self.promote_now(
                &format!(
                    "promoted by an operator ({}) (--full) at {} %{evidence}",
                    by.said(),
                    self.state.weight
                ),
                Some(by),
            );
            return Ok(());
        }
        if self.state.hold.is_none() && !in_pause {
            return Err(Refused(
                "cannot promote: the rollout is not in a pause".into(),
            ));
        }
        self.state.hold = None;
        self.state.phase = Phase::Progressing;
        self.record(
            DecisionKind::Operator,
            None,
            "promote: ending the current pause",
        );
        if in_pause {
            self.advance();
        } else {
            // Held by an operator between steps (after `serin traffic`): carry on.
            self.enter_step();
        }
        Ok(())
    }

    fn promote_now(&mut self, why: &str, by: Option<Actor>) {
        self.state.step = self.plan.steps.len();
        self.state.phase = Phase::Succeeded;
        self.state.hold = None;
        self.state.weight = Weight::ZERO;
        self.state.reason = why.to_string();
        self.state.outcome = Some(Outcome::Promoted { by });
        self.actions.push(Action::PromoteCanary);
        self.record(
            DecisionKind::Promoted,
            None,
            format!("{why}; the canary is the new stable"),
        );
    }

    fn rollback_from_outside(&mut self, stop: Stop) -> Result<(), Refused> {
        // An operator may abort a rollout that is still waiting for its health checks.
        if self.state.phase != Phase::Initializing {
            self.active("roll back")?;
        }
        let outcome = match stop {
            Stop::Operator(by) => Outcome::Operator { by },
            Stop::Monitor(breach) => Outcome::Monitor { breach },
            Stop::Interrupted(signal) => Outcome::Interrupted { signal },
        };
        let asked = match &outcome {
            Outcome::Operator { by } => format!("rollback requested by {}", by.said()),
            Outcome::Interrupted { signal } => format!("{signal}: serin run is stopping"),
            other => format!("rollback requested: {other}"),
        };
        self.record(DecisionKind::Operator, None, asked);
        self.roll_back(outcome.to_string(), outcome);
        Ok(())
    }

    fn recovered_rollback(&mut self, reason: String, of: Option<Outcome>) {
        if self.state.phase.is_finished() {
            return; // written after all: nothing to redo
        }
        const SAID: &str =
            "rolled back before serin stopped (the state database could not take it then)";
        // A record written before serin set space aside for it, on a full
        // disk, may be empty: never an empty reason.
        let reason = if reason.trim().is_empty() && of.is_none() {
            "its cause could not be recorded (the disk was full?)".to_string()
        } else {
            reason
        };
        // After a second crash the reason already says so.
        let why = if reason.starts_with(SAID) {
            reason.clone()
        } else {
            format!("{SAID}: {reason}")
        };
        let of = of.map(Box::new);
        self.roll_back(why, Outcome::Recovered { reason, of });
    }

    fn roll_back(&mut self, why: String, outcome: Outcome) {
        self.state.outcome = Some(outcome);
        self.state.phase = Phase::RolledBack;
        self.state.hold = None;
        self.state.weight = Weight::ZERO;
        self.actions.push(Action::ApplyWeight(Weight::ZERO));
        self.state.reason = why.clone();
        self.record(DecisionKind::RolledBack, None, why);
    }

    fn pause(&mut self, by: Actor) -> Result<(), Refused> {
        self.active("pause")?;
        if self.state.phase == Phase::Paused {
            return Err(Refused(
                "cannot pause: the rollout is already paused".into(),
            ));
        }
        self.bank_pause_time();
        self.state.phase = Phase::Paused;
        self.state.hold = Some(Hold::Operator);
        let left = match self.current_step() {
            Some(Step::PauseFor { duration: d, .. }) => {
                let whole = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let served = self.state.pause_served_ms.unwrap_or(0);
                format!(
                    " ({} of its {} pause left)",
                    human_span(whole.saturating_sub(served)),
                    human(*d)
                )
            }
            _ => String::new(),
        };
        self.state.reason = format!(
            "held by an operator ({} at {}); `serin resume` continues{left}",
            command_by("pause", by),
            clock(self.now)
        );
        self.record(
            DecisionKind::Operator,
            None,
            format!("paused {}", by_operator(by)),
        );
        Ok(())
    }

    fn resume(&mut self, by: Actor) -> Result<(), Refused> {
        self.active("resume")?;
        match self.state.hold {
            Some(Hold::Operator) => {}
            Some(Hold::Step) => {
                return Err(Refused(
                    "cannot resume: this pause step waits for `serin promote`".into(),
                ));
            }
            None => return Err(Refused("cannot resume: the rollout is not paused".into())),
        }
        self.state.hold = None;
        self.state.phase = Phase::Progressing;
        self.state.step_started = self.now;
        self.record(
            DecisionKind::Operator,
            None,
            format!("resumed {}", by_operator(by)),
        );
        match self.current_step().cloned() {
            Some(Step::PauseFor { duration: d, .. }) => self.state.reason = self.pausing(d),
            Some(Step::PauseUntilGate(url)) => {
                self.state.reason = format!("waiting for gate {url} to answer 2xx");
                self.actions.push(Action::CheckGate(url));
            }
            Some(Step::PauseUntilPromoted) => {
                self.state.phase = Phase::Paused;
                self.state.hold = Some(Hold::Step);
                // The operator's hold is over; the step's own wait is what
                // remains (it said `serin resume`, which this step refuses).
                self.state.reason = "waiting for `serin promote`".into();
            }
            // Held between steps (after `serin traffic`): continue with the next step.
            Some(Step::SetWeight(_)) | None => self.enter_step(),
        }
        Ok(())
    }

    fn set_weight_by_hand(&mut self, w: Weight, by: Actor) -> Result<(), Refused> {
        self.active("set the weight")?;
        if self.state.hold.is_none() {
            self.bank_pause_time();
        }
        self.change_weight(w);
        self.state.phase = Phase::Paused;
        self.state.hold = Some(Hold::Operator);
        self.state.reason = format!(
            "held by an operator ({} at {}): the steps wait for `serin resume`; \
             analysis continues, a failing verdict still rolls back",
            command_by(&format!("traffic {w}"), by),
            clock(self.now)
        );
        self.record(
            DecisionKind::Operator,
            None,
            format!("canary weight set to {w} % by hand {}", by_operator(by)),
        );
        Ok(())
    }
}

/// Who gave an operator's command, for a decision: "by an operator (the CLI)".
fn by_operator(by: Actor) -> String {
    match by {
        Actor::Unrecorded => "by an operator".to_string(),
        other => format!("by an operator ({})", other.said()),
    }
}

/// An operator's command as given, for a reason: `serin pause` from the
/// CLI, "pause from the dashboard", "pause through the API".
fn command_by(command: &str, by: Actor) -> String {
    match by {
        Actor::Cli => format!("serin {command}"),
        Actor::Dashboard => format!("{command} from the dashboard"),
        Actor::Api => format!("{command} through the API"),
        Actor::Monitor => format!("{command} by serin monitor"),
        Actor::Unrecorded => command.to_string(),
    }
}

/// The canary holds open more requests than early success may ignore:
/// over 2 % of the step's answered ones (and more than 2). Their outcome is
/// not in the judge's numbers yet (a canary that hangs half its requests,
/// or answers them after 5 s, looks fast and clean on the other half), so
/// the pause goes on until they are answered or counted as timed out.
fn held_open(canary_requests: Option<u64>, unanswered: Option<&Unanswered>) -> bool {
    unanswered.is_some_and(|u| {
        u.in_flight > 2 && u.in_flight.saturating_mul(50) > canary_requests.unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn w(p: u16) -> Weight {
        Weight::from_hundredths(p * 100).unwrap()
    }

    fn classic() -> Plan {
        let mut steps = Vec::new();
        for p in [5, 25, 50, 100] {
            steps.push(Step::SetWeight(w(p)));
            steps.push(Step::PauseFor {
                duration: Duration::from_secs(60),
                early: false,
            });
        }
        Plan {
            steps,
            interval: Duration::from_secs(10),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
            min_requests: 100,
            advisory: false,
        }
    }

    /// A rollout driven by simulated time; `check` helpers keep tests short.
    struct Sim {
        plan: Plan,
        state: State,
        now: Millis,
        actions: Vec<Action>,
        decisions: Vec<Decision>,
        /// What verdicts say the judge counted in the stage.
        canary_requests: Option<u64>,
        /// What verdicts say of canary requests held open.
        canary_unanswered: Option<Unanswered>,
        /// What verdicts say of advisory checks, limits and the split.
        would_fail: Option<String>,
        within_limits: Option<String>,
        split: Option<SplitSeen>,
    }

    impl Sim {
        fn new(plan: Plan) -> Sim {
            Sim {
                plan,
                state: State::new(Millis(1_000_000)),
                now: Millis(1_000_000),
                actions: vec![],
                decisions: vec![],
                canary_requests: None,
                canary_unanswered: None,
                would_fail: None,
                within_limits: None,
                split: None,
            }
        }

        fn feed(&mut self, input: Input) -> Result<Vec<Action>, Refused> {
            let t = step(&self.plan, &self.state, self.now, input)?;
            self.state = t.state;
            self.actions.extend(t.actions.clone());
            self.decisions.extend(t.decisions);
            Ok(t.actions)
        }

        /// Advances time second by second, answering every analysis with `answer`.
        fn run_for(&mut self, secs: u64, mut answer: impl FnMut(&Sim) -> Verdict) {
            for _ in 0..secs {
                self.now = Millis(self.now.0 + 1000);
                let actions = self.feed(Input::Tick).unwrap();
                for a in actions {
                    if let Action::Analyze { end_of_pause } = a {
                        let v = answer(self);
                        self.feed(Input::Verdict {
                            verdict: v,
                            reason: "test".into(),
                            end_of_pause,
                            canary_requests: self.canary_requests,
                            canary_unanswered: self.canary_unanswered,
                            would_fail: self.would_fail.clone(),
                            within_limits: self.within_limits.clone(),
                            split: self.split.clone(),
                        })
                        .unwrap();
                    }
                }
                if self.state.phase.is_finished() {
                    return;
                }
            }
        }

        fn applied_weights(&self) -> Vec<u16> {
            self.actions
                .iter()
                .filter_map(|a| match a {
                    Action::ApplyWeight(w) => Some(w.hundredths() / 100),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn healthy_canary_walks_every_step_and_is_promoted() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        assert_eq!(sim.state.weight, w(5));
        sim.run_for(10 * 60, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);
        assert_eq!(sim.applied_weights(), vec![5, 25, 50, 100]);
        assert!(sim.actions.contains(&Action::PromoteCanary));
        assert!(sim.actions.contains(&Action::Notify(Phase::Succeeded)));
        // Four pauses of 60 s: promotion lands right after the fourth ends.
        let promoted = sim
            .decisions
            .iter()
            .find(|d| d.kind == DecisionKind::Promoted)
            .unwrap();
        assert_eq!(promoted.at.since(Millis(1_000_000)), 240_000);
        // Every decision names a step of the plan, the promotion the last one
        // (the state's index is one past it by then).
        let last = sim.plan.steps.len() - 1;
        assert_eq!(promoted.step, last);
        assert_eq!(sim.state.step, last + 1);
        assert!(sim.decisions.iter().all(|d| d.step <= last));
    }

    /// Outside breaker: a pass early in a step, then only missing data
    /// (a metric source gone) — the pause's end must not move on the old pass.
    #[test]
    fn no_data_after_a_pass_is_no_evidence_to_move_on() {
        let mut sim2 = Sim::new(classic());
        sim2.feed(Input::Start).unwrap();
        sim2.run_for(20, |_| Verdict::Pass);
        // No data from here; the pause's time runs out meanwhile.
        sim2.run_for(45, |_| Verdict::NoData);
        assert_ne!(
            sim2.state.phase,
            Phase::Progressing,
            "noDataLimit rolled it back"
        );
        assert_eq!(sim2.applied_weights(), vec![5, 0], "never moved on to 25 %");
        // A pass, then no data just as the pause ends: held until a pass.
        let mut sim3 = Sim::new(classic());
        sim3.feed(Input::Start).unwrap();
        // Verdicts every 10 s: passes to 40 s, no data at 50 and 60 s
        // (a streak of 2 of noDataLimit 3) as the 60 s pause ends.
        sim3.run_for(45, |_| Verdict::Pass);
        sim3.run_for(20, |_| Verdict::NoData);
        assert_eq!(sim3.applied_weights(), vec![5], "held at 5 % without data");
        assert_eq!(sim3.state.phase, Phase::Progressing);
        sim3.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim3.applied_weights(), vec![5, 25], "a fresh pass moves on");
    }

    #[test]
    fn a_pause_counts_from_when_a_refused_weight_lands() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        // The data plane refuses 5 % for 45 s: the driver feeds no ticks.
        sim.now = Millis(sim.now.0 + 45_000);
        sim.feed(Input::WeightApplied { refused_ms: 45_000 })
            .unwrap();
        let said = sim.decisions.last().unwrap();
        assert_eq!(said.kind, DecisionKind::Step);
        assert!(
            said.reason.contains("refused it for 45s") && said.reason.contains("from now"),
            "{}",
            said.reason
        );
        // Not done 59 s after it landed (104 s after the step began)...
        sim.run_for(59, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![5]);
        // ...but at 60 s.
        sim.run_for(1, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![5, 25]);
        // The stage's numbers start over on the split now in force.
        assert!(sim.actions.contains(&Action::BeginStage(w(5))));

        // Time an operator's pause banked during the refusal is dropped too.
        let mut banked = Sim::new(classic());
        banked.feed(Input::Start).unwrap();
        banked.now = Millis(banked.now.0 + 40_000);
        banked.feed(Input::Pause { by: Actor::Cli }).unwrap();
        banked.feed(Input::Resume { by: Actor::Cli }).unwrap();
        banked.now = Millis(banked.now.0 + 1_500);
        banked
            .feed(Input::WeightApplied { refused_ms: 41_500 })
            .unwrap();
        assert!(
            banked
                .decisions
                .last()
                .unwrap()
                .reason
                .contains("refused it for 42s"),
            "rounded to seconds: {}",
            banked.decisions.last().unwrap().reason
        );
        banked.run_for(59, |_| Verdict::Pass);
        assert_eq!(banked.applied_weights(), vec![5], "the pause starts over");
        banked.run_for(1, |_| Verdict::Pass);
        assert_eq!(banked.applied_weights(), vec![5, 25]);

        // A gate is asked again, and waits from the landing.
        let gated = Plan {
            steps: vec![
                Step::SetWeight(w(20)),
                Step::PauseUntilGate("http://127.0.0.1:1/gate".into()),
                Step::SetWeight(w(100)),
            ],
            progress_deadline: Some(Duration::from_secs(60)),
            min_requests: 100,
            ..classic()
        };
        let mut gate = Sim::new(gated);
        gate.feed(Input::Start).unwrap();
        gate.now = Millis(gate.now.0 + 90_000);
        let asked = gate
            .feed(Input::WeightApplied { refused_ms: 90_000 })
            .unwrap();
        assert!(asked.contains(&Action::CheckGate("http://127.0.0.1:1/gate".into())));
        gate.run_for(59, |_| Verdict::Pass);
        assert_eq!(
            gate.state.phase,
            Phase::Progressing,
            "{}",
            gate.state.reason
        );
        gate.run_for(1, |_| Verdict::Pass);
        assert_eq!(gate.state.phase, Phase::RolledBack);

        // Late for an ended rollout, it changes nothing.
        let ended = gate.state.clone();
        gate.feed(Input::WeightApplied { refused_ms: 1 }).unwrap();
        assert_eq!(gate.state, ended);
    }

    #[test]
    fn fail_rolls_back_at_once_and_ignores_later_verdicts() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.run_for(70, |s| {
            if s.state.weight == w(25) {
                Verdict::Fail
            } else {
                Verdict::Pass
            }
        });
        assert_eq!(sim.state.phase, Phase::RolledBack);
        assert_eq!(sim.state.weight, Weight::ZERO);
        assert_eq!(sim.applied_weights(), vec![5, 25, 0]);
        let before = sim.decisions.len();
        sim.feed(Input::Verdict {
            verdict: Verdict::Fail,
            reason: "late".into(),
            end_of_pause: false,
            canary_requests: None,
            canary_unanswered: None,
            would_fail: None,
            within_limits: None,
            split: None,
        })
        .unwrap();
        assert_eq!(
            sim.decisions.len(),
            before,
            "a late verdict changes nothing"
        );
    }

    #[test]
    fn no_data_rolls_back_after_the_limit_but_not_enough_data_never_does() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.run_for(20, |_| Verdict::NoData);
        assert_eq!(
            sim.state.phase,
            Phase::Progressing,
            "two no-data verdicts are under the limit"
        );
        sim.run_for(10, |_| Verdict::NoData);
        assert_eq!(sim.state.phase, Phase::RolledBack);
        assert!(
            sim.state.reason.contains("no data for 3 intervals"),
            "{}",
            sim.state.reason
        );

        let mut patient = Sim::new(classic());
        patient.feed(Input::Start).unwrap();
        patient.run_for(600, |_| Verdict::NotEnoughData);
        assert_eq!(
            patient.state.phase,
            Phase::Progressing,
            "never rolled back, never promoted"
        );
        assert_eq!(
            patient.state.weight,
            w(5),
            "a pause does not end without a judged stage"
        );
        assert!(
            patient
                .state
                .reason
                .contains("waiting for a passing verdict")
        );
    }

    #[test]
    fn waiting_reasons_name_the_requests_a_verdict_needs() {
        // Fails before this change: both said "enough canary requests", and
        // the end's said "pause complete" once judged every interval.
        let mut paused = Sim::new(Plan {
            min_requests: 250,
            ..classic()
        });
        paused.feed(Input::Start).unwrap();
        paused.run_for(120, |_| Verdict::NotEnoughData);
        assert_eq!(paused.state.weight, w(5));
        assert_eq!(
            paused.state.reason,
            "pause complete; waiting for a passing verdict on 250 canary requests; last verdict: test"
        );
        let mut at_end = Sim::new(Plan {
            steps: vec![Step::SetWeight(w(20))],
            min_requests: 100,
            ..classic()
        });
        at_end.feed(Input::Start).unwrap();
        at_end.run_for(30, |_| Verdict::NotEnoughData);
        assert_eq!(at_end.state.phase, Phase::Progressing);
        assert_eq!(
            at_end.state.reason,
            "all steps done; waiting for a passing verdict on 100 canary requests at 20 % before promoting; last verdict: test"
        );
    }

    #[test]
    fn pause_resume_and_traffic_record_who_asked() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.feed(Input::Pause {
            by: Actor::Dashboard,
        })
        .unwrap();
        assert!(
            sim.state
                .reason
                .starts_with("held by an operator (pause from the dashboard at "),
            "{}",
            sim.state.reason
        );
        sim.feed(Input::Resume { by: Actor::Api }).unwrap();
        sim.feed(Input::SetWeight {
            weight: w(30),
            by: Actor::Cli,
        })
        .unwrap();
        assert!(
            sim.state
                .reason
                .starts_with("held by an operator (serin traffic 30 at "),
            "{}",
            sim.state.reason
        );
        let said: Vec<&str> = sim
            .decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Operator)
            .map(|d| d.reason.as_str())
            .collect();
        assert_eq!(
            said,
            [
                "paused by an operator (the dashboard)",
                "resumed by an operator (the API)",
                "canary weight set to 30 % by hand by an operator (the CLI)",
            ]
        );
    }

    #[test]
    fn a_canary_that_holds_its_requests_reads_apart_from_one_without_traffic() {
        // Fails before this change: both read "waiting for 100 canary
        // requests (0 so far)".
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.canary_requests = Some(0);
        sim.canary_unanswered = Some(Unanswered {
            in_flight: 37,
            silent_ms: 12_400,
        });
        sim.run_for(70, |_| Verdict::NotEnoughData);
        assert_eq!(
            sim.state.reason,
            "pause complete; waiting for 100 canary requests (0 so far; 37 in flight, none answered for 12s); last verdict: test"
        );
        // Requests in flight are no evidence: nothing moved on.
        assert_eq!((sim.state.phase, sim.state.step), (Phase::Progressing, 1));
        // Just started, or none in flight (no traffic): said as before.
        sim.canary_unanswered = Some(Unanswered {
            in_flight: 3,
            silent_ms: 400,
        });
        sim.run_for(10, |_| Verdict::NotEnoughData);
        assert!(
            sim.state.reason.contains("(0 so far); last"),
            "{}",
            sim.state.reason
        );
        sim.canary_unanswered = Some(Unanswered::default());
        sim.run_for(10, |_| Verdict::NotEnoughData);
        assert!(
            sim.state.reason.contains("(0 so far); last"),
            "{}",
            sim.state.reason
        );
    }

    #[test]
    fn a_waiting_rollout_says_what_for_with_its_numbers() {
        // Sim time starts at 00:16:40 UTC. Fails before this change: the
        // reason said "pausing 1m" for the whole pause, "waiting for a
        // passing verdict on 100 canary requests" without a count, and
        // "paused by an operator" without who or when.
        let mut sim = Sim::new(classic());
        sim.feed(Input::NotReady(
            "waiting for both versions to answer: canary http://127.0.0.1:9/healthz: no answer"
                .into(),
        ))
        .unwrap();
        assert!(
            sim.state
                .reason
                .contains("http://127.0.0.1:9/healthz: no answer")
        );
        sim.feed(Input::Start).unwrap();
        assert_eq!(sim.state.reason, "pausing 1m: 1m left (until 00:17:40 UTC)");
        sim.run_for(20, |_| Verdict::Pass);
        assert_eq!(
            sim.state.reason,
            "pausing 1m: 40s left (until 00:17:40 UTC)"
        );
        // A health check answering late changes nothing once started.
        sim.feed(Input::NotReady("late".into())).unwrap();
        assert!(sim.state.reason.starts_with("pausing"));

        // The pause is over; the judge has counted 12 of 100.
        sim.canary_requests = Some(12);
        sim.run_for(50, |_| Verdict::NotEnoughData);
        assert_eq!(
            sim.state.reason,
            "pause complete; waiting for 100 canary requests (12 so far); last verdict: test"
        );
        // A tick between verdicts keeps the count.
        sim.now = Millis(sim.now.0 + 10_000);
        sim.feed(Input::Tick).unwrap();
        assert!(
            sim.state.reason.contains("(12 so far)"),
            "{}",
            sim.state.reason
        );
        // Enough requests, still no pass ("above the limit, not yet significant").
        sim.canary_requests = Some(340);
        sim.run_for(10, |_| Verdict::NotEnoughData);
        assert_eq!(
            sim.state.reason,
            "pause complete; waiting for a passing verdict (340 canary requests so far); last verdict: test"
        );

        // An operator holds it: who, with what, when (UTC).
        let at = clock(sim.now);
        sim.feed(Input::SetWeight {
            weight: w(30),
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(
            sim.state.reason,
            format!(
                "held by an operator (serin traffic 30 at {at}): the steps wait for `serin resume`; analysis continues, a failing verdict still rolls back"
            )
        );
        let mut paused = Sim::new(classic());
        paused.feed(Input::Start).unwrap();
        paused.run_for(15, |_| Verdict::Pass);
        paused.feed(Input::Pause { by: Actor::Cli }).unwrap();
        assert_eq!(
            paused.state.reason,
            "held by an operator (serin pause at 00:16:55 UTC); `serin resume` continues (45s of its 1m pause left)"
        );
        paused.run_for(30, |_| Verdict::Pass);
        paused.feed(Input::Resume { by: Actor::Cli }).unwrap();
        assert_eq!(
            paused.state.reason,
            "pausing 1m: 45s left (until 00:18:10 UTC)"
        );

        // A gate: its URL and its last answer, with the time.
        let mut gated = Sim::new(Plan {
            steps: vec![
                Step::SetWeight(w(20)),
                Step::PauseUntilGate("http://127.0.0.1:1/gate".into()),
            ],
            ..classic()
        });
        gated.feed(Input::Start).unwrap();
        gated
            .feed(Input::Gate {
                open: false,
                detail: "503 Service Unavailable".into(),
            })
            .unwrap();
        assert_eq!(
            gated.state.reason,
            "waiting for gate http://127.0.0.1:1/gate to answer 2xx; its last answer (00:16:40 UTC): 503 Service Unavailable"
        );
        gated
            .feed(Input::Gate {
                open: true,
                detail: "200 OK".into(),
            })
            .unwrap();
        let opened = gated
            .decisions
            .iter()
            .find(|d| d.kind == DecisionKind::Gate);
        assert_eq!(
            opened.map(|d| d.reason.as_str()),
            Some("gate open: http://127.0.0.1:1/gate answered 200 OK")
        );
    }

    #[test]
    fn no_data_streak_is_broken_by_data() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        let mut n = 0;
        sim.run_for(200, |_| {
            n += 1;
            if n % 3 == 0 {
                Verdict::Pass
            } else {
                Verdict::NoData
            }
        });
        assert_ne!(sim.state.phase, Phase::RolledBack);
    }

    #[test]
    fn pass_before_the_pause_ends_does_not_shorten_it() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.run_for(59, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(5));
        sim.run_for(1, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(25));
    }

    /// A pass early in a pause, then the canary drifts above a limit (the
    /// judge holds: inconclusive): the pause does not end on the old pass.
    /// Before, `stage_judged` stayed set and the step advanced at 60 s.
    #[test]
    fn a_hold_after_a_pass_keeps_the_pause_from_ending() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.run_for(30, |_| Verdict::Pass);
        sim.run_for(60, |_| Verdict::NotEnoughData);
        assert_eq!(sim.state.weight, w(5), "held while the judge holds");
        sim.run_for(15, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(25), "goes on once it passes again");
    }

    #[test]
    fn fixed_method_needs_a_verdict_taken_at_the_end_of_the_pause() {
        // Analyses at 25 s, 50 s, 75 s; the pause ends at 60 s.
        let mut plan = classic();
        plan.interval = Duration::from_secs(25);
        let mut sequential = Sim::new(plan.clone());
        sequential.feed(Input::Start).unwrap();
        sequential.run_for(60, |_| Verdict::Pass);
        assert_eq!(
            sequential.state.weight,
            w(25),
            "a pass at 25 s judged the stage"
        );

        plan.judge_at_end_of_pause = true;
        let mut fixed = Sim::new(plan);
        fixed.feed(Input::Start).unwrap();
        fixed.run_for(74, |_| Verdict::Pass);
        assert_eq!(
            fixed.state.weight,
            w(5),
            "mid-pause passes do not count for `fixed`"
        );
        fixed.run_for(1, |_| Verdict::Pass);
        assert_eq!(
            fixed.state.weight,
            w(25),
            "the end-of-pause verdict at 75 s does"
        );
    }

    #[test]
    fn indefinite_pause_waits_for_promote() {
        let plan = Plan {
            steps: vec![
                Step::SetWeight(w(10)),
                Step::PauseUntilPromoted,
                Step::SetWeight(w(50)),
            ],
            interval: Duration::from_secs(10),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
            min_requests: 100,
            advisory: false,
        };
        let mut sim = Sim::new(plan);
        sim.feed(Input::Start).unwrap();
        sim.run_for(3600, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Paused);
        assert!(
            sim.actions
                .iter()
                .any(|a| matches!(a, Action::Analyze { .. })),
            "a paused canary is still judged"
        );
        assert!(
            sim.feed(Input::Resume { by: Actor::Cli }).is_err(),
            "resume does not end a promote-only pause"
        );
        sim.feed(Input::Promote {
            full: false,
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(
            sim.state.phase,
            Phase::Progressing,
            "50 % is not judged yet: the promote ended the pause, not the rollout"
        );
        assert_eq!(sim.applied_weights(), vec![10, 50]);
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded, "judged at 50 %");
    }

    #[test]
    fn operator_pause_keeps_the_time_served() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.run_for(40, |_| Verdict::Pass);
        sim.feed(Input::Pause { by: Actor::Cli }).unwrap();
        assert_eq!(sim.state.phase, Phase::Paused);
        sim.run_for(600, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(5), "held while paused");
        sim.feed(Input::Resume { by: Actor::Cli }).unwrap();
        sim.run_for(19, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(5));
        sim.run_for(1, |_| Verdict::Pass);
        assert_eq!(
            sim.state.weight,
            w(25),
            "40 s before the pause + 20 s after = 60 s"
        );
    }

    #[test]
    fn traffic_by_hand_holds_and_resume_continues() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.feed(Input::SetWeight {
            weight: w(40),
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(sim.state.phase, Phase::Paused);
        assert_eq!(sim.state.weight, w(40));
        sim.run_for(300, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(40));
        sim.feed(Input::Resume { by: Actor::Cli }).unwrap();
        sim.run_for(600, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);
        assert_eq!(sim.applied_weights(), vec![5, 40, 25, 50, 100]);
    }

    #[test]
    fn promote_full_and_rollback_and_refusals() {
        let mut sim = Sim::new(classic());
        assert!(
            sim.feed(Input::Promote {
                full: true,
                by: Actor::Cli
            })
            .is_err(),
            "not started"
        );
        sim.feed(Input::Start).unwrap();
        sim.feed(Input::Promote {
            full: true,
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(sim.state.phase, Phase::Succeeded);
        let e = sim
            .feed(Input::Rollback(Stop::Operator(Actor::Cli)))
            .unwrap_err();
        assert!(e.0.contains("already ended (Succeeded)"), "{e}");

        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.feed(Input::Rollback(Stop::Operator(Actor::Cli)))
            .unwrap();
        assert_eq!(sim.state.phase, Phase::RolledBack);
        assert_eq!(
            sim.state.outcome,
            Some(Outcome::Operator { by: Actor::Cli })
        );
        assert_eq!(sim.state.reason, "rolled back by an operator (the CLI)");
        assert_eq!(sim.applied_weights(), vec![5, 0]);
        let e = sim.feed(Input::Pause { by: Actor::Cli }).unwrap_err();
        assert!(e.0.contains("RolledBack"));
    }

    #[test]
    fn promote_skips_the_rest_of_a_timed_pause() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.run_for(5, |_| Verdict::Pass);
        sim.feed(Input::Promote {
            full: false,
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(sim.state.weight, w(25));
        assert_eq!(sim.state.phase, Phase::Progressing);
    }

    #[test]
    fn the_progress_deadline_rolls_back_what_waits_too_long_but_not_a_person() {
        let deadline = |plan: Plan| Plan {
            progress_deadline: Some(Duration::from_secs(300)),
            ..plan
        };
        // A canary that never gets enough requests: the 60 s pause may run
        // 5 more minutes, then the rollout rolls back, saying why.
        let mut idle = Sim::new(deadline(classic()));
        idle.feed(Input::Start).unwrap();
        idle.run_for(60 + 299, |_| Verdict::NotEnoughData);
        assert_eq!(idle.state.phase, Phase::Progressing);
        idle.run_for(1, |_| Verdict::NotEnoughData);
        assert_eq!(idle.state.phase, Phase::RolledBack);
        assert_eq!(idle.state.weight, Weight::ZERO);
        assert!(
            idle.state.reason.contains("progress deadline (5m)")
                && idle.state.reason.contains("waiting for a passing verdict"),
            "{}",
            idle.state.reason
        );
        // An operator's pause stops the clock; what was served still counts.
        let mut held = Sim::new(deadline(classic()));
        held.feed(Input::Start).unwrap();
        held.run_for(200, |_| Verdict::NotEnoughData);
        held.feed(Input::Pause { by: Actor::Cli }).unwrap();
        held.run_for(3600, |_| Verdict::NotEnoughData);
        assert_eq!(held.state.phase, Phase::Paused);
        held.feed(Input::Resume { by: Actor::Cli }).unwrap();
        held.run_for(159, |_| Verdict::NotEnoughData);
        assert_eq!(held.state.phase, Phase::Progressing);
        held.run_for(1, |_| Verdict::NotEnoughData);
        assert_eq!(held.state.phase, Phase::RolledBack);
        // A gate that stays shut.
        let gated = Plan {
            steps: vec![
                Step::SetWeight(w(20)),
                Step::PauseUntilGate("http://127.0.0.1:1/gate".into()),
                Step::SetWeight(w(100)),
            ],
            ..deadline(classic())
        };
        let mut shut = Sim::new(gated);
        shut.feed(Input::Start).unwrap();
        shut.run_for(299, |_| Verdict::Pass);
        assert_eq!(shut.state.phase, Phase::Progressing);
        shut.run_for(1, |_| Verdict::Pass);
        assert_eq!(shut.state.phase, Phase::RolledBack);
        assert!(shut.state.reason.contains("gate"), "{}", shut.state.reason);
        // `pause: {}` waits for a person: no deadline.
        let manual = Plan {
            steps: vec![Step::SetWeight(w(20)), Step::PauseUntilPromoted],
            ..deadline(classic())
        };
        let mut waiting = Sim::new(manual);
        waiting.feed(Input::Start).unwrap();
        waiting.run_for(3600, |_| Verdict::Pass);
        assert_eq!(waiting.state.phase, Phase::Paused);
    }

    #[test]
    fn a_hold_resumed_inside_a_pause_step_says_what_the_step_waits_for() {
        let plan = Plan {
            steps: vec![Step::SetWeight(w(20)), Step::PauseUntilPromoted],
            ..classic()
        };
        let mut sim = Sim::new(plan);
        sim.feed(Input::Start).unwrap();
        sim.feed(Input::SetWeight {
            weight: w(30),
            by: Actor::Cli,
        })
        .unwrap();
        assert!(
            sim.state.reason.contains("`serin resume`"),
            "{}",
            sim.state.reason
        );
        sim.feed(Input::Resume { by: Actor::Cli }).unwrap();
        assert_eq!(sim.state.hold, Some(Hold::Step));
        assert_eq!(sim.state.reason, "waiting for `serin promote`");
        // And what it says is what it takes.
        assert!(sim.feed(Input::Resume { by: Actor::Cli }).is_err());
        sim.feed(Input::Promote {
            full: false,
            by: Actor::Cli,
        })
        .unwrap();
        // The last pause ended; a plain promote is no evidence: the
        // rollout promotes on a passing verdict (none came: it waits).
        assert_eq!(sim.state.phase, Phase::Progressing);
        assert_eq!(promotions(&sim), 0);
        assert!(
            sim.state.reason.contains("waiting for"),
            "{}",
            sim.state.reason
        );
    }

    #[test]
    fn late_ticks_do_not_push_the_verdicts_back() {
        // The driver ticks every 100 ms; under load a tick comes late. Ten
        // minutes of ticks each 130 ms apart (every due analysis seen up to
        // 129 ms late) still make one verdict per 10 s interval: 60.
        let mut plan = classic();
        plan.steps = vec![
            Step::SetWeight(w(10)),
            Step::PauseFor {
                duration: Duration::from_secs(3600),
                early: false,
            },
        ];
        let mut sim = Sim::new(plan);
        sim.feed(Input::Start).unwrap();
        let start = sim.now;
        let mut analyses = 0;
        while sim.now.0 < start.0 + 600_000 {
            sim.now = Millis(sim.now.0 + 130);
            for a in sim.feed(Input::Tick).unwrap() {
                if let Action::Analyze { end_of_pause } = a {
                    analyses += 1;
                    sim.feed(Input::Verdict {
                        verdict: Verdict::Pass,
                        reason: "test".into(),
                        end_of_pause,
                        canary_requests: None,
                        canary_unanswered: None,
                        would_fail: None,
                        within_limits: None,
                        split: None,
                    })
                    .unwrap();
                }
            }
        }
        assert_eq!(analyses, 60, "one verdict per interval over 600 s");
    }

    #[test]
    fn gate_holds_until_it_opens() {
        let plan = Plan {
            steps: vec![
                Step::SetWeight(w(20)),
                Step::PauseUntilGate("http://127.0.0.1:1/gate".into()),
                Step::SetWeight(w(100)),
            ],
            interval: Duration::from_secs(10),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
            min_requests: 100,
            advisory: false,
        };
        let mut sim = Sim::new(plan);
        let first = sim.feed(Input::Start).unwrap();
        assert!(first.contains(&Action::CheckGate("http://127.0.0.1:1/gate".into())));
        sim.feed(Input::Gate {
            open: false,
            detail: "503".into(),
        })
        .unwrap();
        sim.run_for(30, |_| Verdict::Pass);
        let checks = sim
            .actions
            .iter()
            .filter(|a| matches!(a, Action::CheckGate(_)))
            .count();
        assert_eq!(checks, 4, "asked at start and every interval");
        assert_eq!(sim.state.weight, w(20));
        sim.feed(Input::Gate {
            open: true,
            detail: "200".into(),
        })
        .unwrap();
        assert_eq!(sim.state.weight, w(100));
        assert_eq!(sim.state.phase, Phase::Progressing, "100 % not judged yet");
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);
    }

    #[test]
    fn leading_pause_at_weight_zero_ends_on_time_alone() {
        let plan = Plan {
            steps: vec![
                Step::PauseFor {
                    duration: Duration::from_secs(30),
                    early: false,
                },
                Step::SetWeight(w(50)),
            ],
            interval: Duration::from_secs(10),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
            min_requests: 100,
            advisory: false,
        };
        let mut sim = Sim::new(plan);
        sim.feed(Input::Start).unwrap();
        sim.run_for(30, |_| Verdict::NoData);
        assert!(
            !sim.actions
                .iter()
                .any(|a| matches!(a, Action::Analyze { .. })),
            "nothing to judge at weight 0"
        );
        assert_eq!(sim.state.weight, w(50), "the pause ended on time alone");
        assert_eq!(sim.state.phase, Phase::Progressing, "50 % not judged yet");
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);
    }

    fn promotions(sim: &Sim) -> usize {
        sim.actions
            .iter()
            .filter(|a| **a == Action::PromoteCanary)
            .count()
    }

    #[test]
    fn weights_without_a_verdict_are_never_promoted() {
        // Two weights and nothing to wait for: today's bug promoted at once.
        let plan = Plan {
            steps: vec![Step::SetWeight(w(50)), Step::SetWeight(w(20))],
            ..classic()
        };
        let mut sim = Sim::new(plan.clone());
        sim.feed(Input::Start).unwrap();
        assert_eq!(sim.state.phase, Phase::Progressing);
        assert_eq!(promotions(&sim), 0);
        assert_eq!(sim.state.weight, w(20));
        assert!(
            sim.state
                .reason
                .contains("all steps done; waiting for a passing verdict")
                && sim.state.reason.contains("20 %"),
            "{}",
            sim.state.reason
        );
        // Inconclusive for an hour: still waiting, never promoted.
        sim.run_for(3600, |_| Verdict::NotEnoughData);
        assert_eq!(sim.state.phase, Phase::Progressing);
        assert_eq!(promotions(&sim), 0);
        // A pass at 20 % promotes.
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);
        assert_eq!(promotions(&sim), 1);
        assert!(
            sim.decisions
                .iter()
                .any(|d| d.kind == DecisionKind::Verdict && d.weight == w(20)),
            "judged at the weight in force"
        );

        // `fixed`: there is no pause left to end, every verdict counts.
        let mut fixed = Sim::new(Plan {
            judge_at_end_of_pause: true,
            ..plan.clone()
        });
        fixed.feed(Input::Start).unwrap();
        fixed.run_for(10, |_| Verdict::Pass);
        assert_eq!(fixed.state.phase, Phase::Succeeded);

        // With a progress deadline, waiting too long rolls back.
        let mut late = Sim::new(Plan {
            progress_deadline: Some(Duration::from_secs(300)),
            ..plan
        });
        late.feed(Input::Start).unwrap();
        late.run_for(299, |_| Verdict::NotEnoughData);
        assert_eq!(late.state.phase, Phase::Progressing);
        late.run_for(1, |_| Verdict::NotEnoughData);
        assert_eq!(late.state.phase, Phase::RolledBack);
        assert!(
            late.state.reason.contains("progress deadline"),
            "{}",
            late.state.reason
        );
        assert_eq!(promotions(&late), 0);
    }

    #[test]
    fn a_pause_at_weight_zero_is_never_promoted() {
        let plan = Plan {
            steps: vec![Step::PauseFor {
                duration: Duration::from_secs(10),
                early: false,
            }],
            ..classic()
        };
        let mut sim = Sim::new(plan.clone());
        sim.feed(Input::Start).unwrap();
        sim.run_for(3600, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Progressing);
        assert_eq!(promotions(&sim), 0);
        assert!(
            sim.decisions
                .iter()
                .all(|d| d.reason != "pause complete and stage judged"),
            "nothing was judged at 0 %"
        );
        assert!(
            sim.state.reason.contains("no canary traffic"),
            "{}",
            sim.state.reason
        );
        // The deadline rolls it back.
        let mut late = Sim::new(Plan {
            progress_deadline: Some(Duration::from_secs(60)),
            min_requests: 100,
            ..plan.clone()
        });
        late.feed(Input::Start).unwrap();
        late.run_for(200, |_| Verdict::Pass);
        assert_eq!(late.state.phase, Phase::RolledBack);
        assert_eq!(promotions(&late), 0);
        // A plain promote is no evidence: refused, naming --full.
        let refused = sim
            .feed(Input::Promote {
                full: false,
                by: Actor::Cli,
            })
            .unwrap_err();
        assert!(refused.0.contains("`promote --full`"), "{}", refused.0);
        assert_eq!(sim.state.phase, Phase::Progressing);
        // `--full` is the operator's evidence, recorded as such.
        sim.feed(Input::Promote {
            full: true,
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(sim.state.phase, Phase::Succeeded);
        let promoted = sim.decisions.last().unwrap();
        assert_eq!(promoted.kind, DecisionKind::Promoted);
        assert!(
            promoted.reason.contains("by an operator")
                && promoted.reason.contains("without a passing verdict"),
            "{}",
            promoted.reason
        );
    }

    #[test]
    fn the_last_weight_must_be_in_force_and_judged_before_promotion() {
        // A final setWeight: 100 after a judged 50 %: the 50 % pass does not
        // promote 100 %; only a verdict taken once 100 % is in force does.
        let plan = Plan {
            steps: vec![
                Step::SetWeight(w(50)),
                Step::PauseFor {
                    duration: Duration::from_secs(60),
                    early: false,
                },
                Step::SetWeight(w(100)),
            ],
            ..classic()
        };
        let mut sim = Sim::new(plan);
        sim.feed(Input::Start).unwrap();
        sim.run_for(60, |_| Verdict::Pass);
        assert_eq!(sim.state.weight, w(100));
        assert_eq!(sim.state.phase, Phase::Progressing);
        assert_eq!(promotions(&sim), 0, "100 % applied, not yet in force");
        // The data plane refuses 100 % for a while: the driver feeds no
        // ticks, so no verdict; when it lands, the stage starts there.
        sim.now = Millis(sim.now.0 + 30_000);
        sim.feed(Input::WeightApplied { refused_ms: 30_000 })
            .unwrap();
        assert_eq!(promotions(&sim), 0);
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);
        assert_eq!(promotions(&sim), 1);
    }

    #[test]
    fn every_phase_change_is_notified_once() {
        let mut sim = Sim::new(classic());
        sim.feed(Input::Start).unwrap();
        sim.feed(Input::Pause { by: Actor::Cli }).unwrap();
        sim.feed(Input::Resume { by: Actor::Cli }).unwrap();
        sim.feed(Input::Rollback(Stop::Operator(Actor::Cli)))
            .unwrap();
        let notes: Vec<_> = sim
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Notify(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(
            notes,
            vec![
                Phase::Progressing,
                Phase::Paused,
                Phase::Progressing,
                Phase::RolledBack
            ]
        );
    }

    #[test]
    fn every_way_a_run_ends_is_a_typed_outcome() {
        let ended = |feed: &dyn Fn(&mut Sim)| {
            let mut sim = Sim::new(classic());
            sim.feed(Input::Start).unwrap();
            feed(&mut sim);
            sim.state.outcome.clone().expect("ended")
        };
        assert_eq!(
            ended(&|s| s.run_for(600, |_| Verdict::Pass)),
            Outcome::Promoted { by: None }
        );
        assert_eq!(
            ended(&|s| {
                s.feed(Input::Promote {
                    full: true,
                    by: Actor::Dashboard,
                })
                .unwrap();
            }),
            Outcome::Promoted {
                by: Some(Actor::Dashboard)
            }
        );
        match ended(&|s| s.run_for(30, |_| Verdict::Fail)) {
            Outcome::Analysis { check } => assert!(!check.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ended(&|s| s.run_for(60, |_| Verdict::NoData)),
            Outcome::NoData { intervals: 3 }
        );
        let breach = crate::rollout::Breach {
            metric: "error-rate".into(),
            threshold: 5.0,
            value: 12.5,
        };
        let by_monitor = ended(&|s| {
            s.feed(Input::Rollback(Stop::Monitor(breach.clone())))
                .unwrap();
        });
        assert_eq!(
            by_monitor,
            Outcome::Monitor {
                breach: breach.clone()
            }
        );
        assert!(by_monitor.stopped_from_outside());
        assert!(
            by_monitor
                .to_string()
                .contains("12.5 % above the threshold 5 %")
        );
        let interrupted = ended(&|s| {
            s.feed(Input::Rollback(Stop::Interrupted("SIGTERM".into())))
                .unwrap();
        });
        assert_eq!(
            interrupted,
            Outcome::Interrupted {
                signal: "SIGTERM".into()
            }
        );
        // A recovered rollback keeps the outcome decided before the crash:
        // an operator's stays an operator's (serin run: exit 4).
        let recovered = ended(&|s| {
            s.feed(Input::RecoveredRollback {
                reason: "rolled back by an operator (the CLI)".into(),
                of: Some(Outcome::Operator { by: Actor::Cli }),
            })
            .unwrap();
        });
        assert_eq!(
            recovered,
            Outcome::Recovered {
                reason: "rolled back by an operator (the CLI)".into(),
                of: Some(Box::new(Outcome::Operator { by: Actor::Cli })),
            }
        );
        assert!(recovered.stopped_from_outside());
        let old_record = ended(&|s| {
            s.feed(Input::RecoveredRollback {
                reason: "canary error rate 30 %".into(),
                of: None,
            })
            .unwrap();
        });
        assert!(!old_record.stopped_from_outside());
        // An empty record (written on a full disk) never gives an empty reason.
        let empty = ended(&|s| {
            s.feed(Input::RecoveredRollback {
                reason: String::new(),
                of: None,
            })
            .unwrap();
        });
        assert!(
            matches!(&empty, Outcome::Recovered { reason, .. } if reason.contains("could not be recorded")),
            "{empty:?}"
        );
        // The JSON form names its kind; the fields are camelCase.
        let json = serde_json::to_value(Outcome::Deadline {
            deadline_ms: 300_000,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "deadline", "deadlineMs": 300000})
        );
        let json = serde_json::to_value(Outcome::Monitor { breach }).unwrap();
        assert_eq!(json["breach"]["threshold"], 5.0);
    }

    fn advisory(plan: Plan) -> Plan {
        Plan {
            advisory: true,
            ..plan
        }
    }

    fn said(sim: &Sim, kind: DecisionKind) -> Vec<String> {
        sim.decisions
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.reason.clone())
            .collect()
    }

    #[test]
    fn advisory_mode_records_what_it_would_have_done_once_per_episode_and_goes_on() {
        // Every verdict fails: enforced, the first one rolls back (see
        // fail_rolls_back_at_once_and_ignores_later_verdicts); advisory,
        // the steps run by their time and each stage says once what the
        // judge would have done.
        let mut sim = Sim::new(advisory(classic()));
        sim.feed(Input::Start).unwrap();
        sim.run_for(10 * 60, |_| Verdict::Fail);
        assert_eq!(sim.state.phase, Phase::Succeeded, "{}", sim.state.reason);
        assert_eq!(sim.applied_weights(), vec![5, 25, 50, 100]);
        let promoted = sim
            .decisions
            .iter()
            .find(|d| d.kind == DecisionKind::Promoted)
            .unwrap();
        assert_eq!(promoted.at.since(Millis(1_000_000)), 240_000);
        let would = sim
            .decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::WouldRollBack)
            .collect::<Vec<_>>();
        assert_eq!(
            would
                .iter()
                .map(|d| d.weight.hundredths() / 100)
                .collect::<Vec<_>>(),
            [5, 25, 50, 100],
            "once per stage, not every interval"
        );
        assert!(
            would
                .iter()
                .all(|d| d.reason == "would have rolled back: test")
        );
        // Every failing verdict is still recorded as such (and notified).
        let verdicts = sim
            .decisions
            .iter()
            .filter(|d| d.kind == DecisionKind::Verdict)
            .collect::<Vec<_>>();
        assert!(verdicts.len() > 8, "{}", verdicts.len());
        assert!(
            verdicts
                .iter()
                .all(|d| d.verdict == Some(RecordedVerdict::Fail))
        );
        assert!(
            !sim.decisions
                .iter()
                .any(|d| d.kind == DecisionKind::RolledBack)
        );

        // A clean pass ends an episode: failing again is a new one.
        let mut flapping = Sim::new(advisory(classic()));
        flapping.feed(Input::Start).unwrap();
        let mut n = 0;
        flapping.run_for(55, |_| {
            n += 1;
            if n == 3 { Verdict::Pass } else { Verdict::Fail }
        });
        assert_eq!(flapping.state.weight, w(5));
        assert_eq!(said(&flapping, DecisionKind::WouldRollBack).len(), 2);
        // An inconclusive verdict does not end one.
        let mut unsure = Sim::new(advisory(classic()));
        unsure.feed(Input::Start).unwrap();
        let mut n = 0;
        unsure.run_for(55, |_| {
            n += 1;
            if n == 3 {
                Verdict::NotEnoughData
            } else {
                Verdict::Fail
            }
        });
        assert_eq!(said(&unsure, DecisionKind::WouldRollBack).len(), 1);
    }

    #[test]
    fn advisory_mode_never_rolls_back_on_no_data_but_still_waits_for_data() {
        let mut sim = Sim::new(advisory(classic()));
        sim.feed(Input::Start).unwrap();
        // 12 no-data verdicts: the limit of 3 is reached four times.
        sim.run_for(120, |_| Verdict::NoData);
        assert_eq!(sim.state.phase, Phase::Progressing);
        assert_eq!(
            sim.state.weight,
            w(5),
            "no data is no evidence: the pause waits"
        );
        assert_eq!(
            said(&sim, DecisionKind::WouldRollBack),
            ["would have rolled back: no data for 3 intervals in a row (noDataLimit 3): test"]
        );
        assert!(sim.state.no_data_streak < 3, "the count starts over");
        // Data that passes: the pause, long over, ends.
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![5, 25]);
        // Enforced, the same rolls back (the rule stands).
        let mut enforced = Sim::new(classic());
        enforced.feed(Input::Start).unwrap();
        enforced.run_for(120, |_| Verdict::NoData);
        assert_eq!(enforced.state.phase, Phase::RolledBack);
    }

    #[test]
    fn advisory_mode_leaves_a_pause_for_its_operator_and_a_deadline_still_counts() {
        let plan = advisory(Plan {
            steps: vec![
                Step::SetWeight(w(10)),
                Step::PauseUntilPromoted,
                Step::SetWeight(w(100)),
            ],
            ..classic()
        });
        let mut sim = Sim::new(plan);
        sim.feed(Input::Start).unwrap();
        sim.run_for(600, |_| Verdict::Fail);
        assert_eq!(sim.state.phase, Phase::Paused);
        assert_eq!(sim.state.hold, Some(Hold::Step));
        assert_eq!(sim.state.reason, "waiting for `serin promote`");
        assert_eq!(said(&sim, DecisionKind::WouldRollBack).len(), 1);
        sim.feed(Input::Promote {
            full: false,
            by: Actor::Cli,
        })
        .unwrap();
        assert_eq!(sim.state.weight, w(100));
    }

    #[test]
    fn an_advisory_check_that_fails_is_recorded_and_never_rolls_back() {
        // Enforce mode; the judge says an advisory check fails beside a pass.
        let mut sim = Sim::new(classic());
        sim.would_fail = Some("latency-p99 2300 ms > 2000 ms".into());
        sim.feed(Input::Start).unwrap();
        sim.run_for(90, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![5, 25], "goes on by its steps");
        assert_eq!(
            said(&sim, DecisionKind::WouldRollBack),
            [
                "would have rolled back: latency-p99 2300 ms > 2000 ms",
                "would have rolled back: latency-p99 2300 ms > 2000 ms"
            ],
            "once at 5 %, once at 25 %"
        );
        // It clears, then comes back: a new episode.
        sim.would_fail = None;
        sim.run_for(10, |_| Verdict::Pass);
        sim.would_fail = Some("again".into());
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(
            said(&sim, DecisionKind::WouldRollBack).last().unwrap(),
            "would have rolled back: again"
        );
        // A failing enforced check still rolls back.
        sim.run_for(20, |_| Verdict::Fail);
        assert_eq!(sim.state.phase, Phase::RolledBack);
    }

    fn early_plan() -> Plan {
        Plan {
            steps: vec![
                Step::SetWeight(w(10)),
                Step::PauseFor {
                    duration: Duration::from_secs(600),
                    early: true,
                },
                Step::SetWeight(w(50)),
                Step::PauseFor {
                    duration: Duration::from_secs(600),
                    early: false,
                },
            ],
            ..classic()
        }
    }

    #[test]
    fn an_early_pause_ends_once_the_canary_is_shown_within_its_limits() {
        let mut sim = Sim::new(early_plan());
        sim.feed(Input::Start).unwrap();
        // Passes that do not (yet) show it within the limits: it waits.
        sim.run_for(120, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![10]);
        sim.within_limits =
            Some("within every limit: error-rate 0.4 % < 5 % (e = 412 ≥ 40)".into());
        sim.run_for(10, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![10, 50]);
        assert_eq!(
            said(&sim, DecisionKind::Step)
                .iter()
                .find(|r| r.starts_with("early success"))
                .unwrap(),
            "early success after 2m10s of 10m: within every limit: error-rate 0.4 % < 5 % (e = 412 ≥ 40)"
        );
        // The next pause is not early: it lasts its 10 minutes.
        sim.run_for(599, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Progressing);
        sim.run_for(1, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Succeeded);

        // Not on an inconclusive verdict, nor while an advisory check
        // fails, nor while an operator holds the rollout.
        for case in ["inconclusive", "advisory", "held"] {
            let mut sim = Sim::new(early_plan());
            sim.within_limits = Some("within every limit".into());
            sim.feed(Input::Start).unwrap();
            if case == "advisory" {
                sim.would_fail = Some("custom/signups 2 % < 3 %".into());
            }
            if case == "held" {
                sim.feed(Input::Pause { by: Actor::Cli }).unwrap();
            }
            let v = if case == "inconclusive" {
                Verdict::NotEnoughData
            } else {
                Verdict::Pass
            };
            sim.run_for(300, |_| v);
            assert_eq!(sim.applied_weights(), vec![10], "{case}");
        }
        // Not while the canary holds open more than 2 % of the step's
        // answered requests: their outcome is unknown.
        let mut hung = Sim::new(early_plan());
        hung.within_limits = Some("within every limit".into());
        hung.canary_requests = Some(1000);
        hung.canary_unanswered = Some(Unanswered {
            in_flight: 500,
            silent_ms: 0,
        });
        hung.feed(Input::Start).unwrap();
        hung.run_for(300, |_| Verdict::Pass);
        assert_eq!(hung.applied_weights(), vec![10]);
        // A few in flight, as any busy service has: it ends early.
        hung.canary_unanswered = Some(Unanswered {
            in_flight: 15,
            silent_ms: 0,
        });
        hung.run_for(10, |_| Verdict::Pass);
        assert_eq!(hung.applied_weights(), vec![10, 50]);
        // `fixed` judges a stage only at the end of its pause.
        let mut fixed = Sim::new(Plan {
            judge_at_end_of_pause: true,
            ..early_plan()
        });
        fixed.within_limits = Some("within every limit".into());
        fixed.feed(Input::Start).unwrap();
        fixed.run_for(300, |_| Verdict::Pass);
        assert_eq!(fixed.applied_weights(), vec![10]);
    }

    fn far_split() -> SplitSeen {
        SplitSeen {
            mismatch: true,
            reason: "canary got 0.4 % of requests (12/3 000), 5 % requested".into(),
            requested: 5.0,
            observed: 0.4,
        }
    }

    #[test]
    fn a_split_far_from_the_weight_holds_the_step_then_rolls_back_past_the_deadline() {
        let plan = Plan {
            progress_deadline: Some(Duration::from_secs(120)),
            ..classic()
        };
        let mut sim = Sim::new(plan.clone());
        sim.split = Some(far_split());
        sim.within_limits = Some("within every limit".into());
        sim.feed(Input::Start).unwrap();
        sim.run_for(30, |_| Verdict::Pass);
        assert!(
            sim.state.reason.starts_with("pausing 1m: ")
                && sim
                    .state
                    .reason
                    .ends_with("; canary got 0.4 % of requests (12/3 000), 5 % requested"),
            "{}",
            sim.state.reason
        );
        // Time is up, every verdict passes: held, saying why.
        sim.run_for(60, |_| Verdict::Pass);
        assert_eq!(sim.applied_weights(), vec![5]);
        assert_eq!(sim.state.reason, far_split().reason);
        assert_eq!(sim.state.split, Some(far_split()));
        // No data says nothing of the split: still held.
        sim.run_for(10, |_| Verdict::NoData);
        assert_eq!(sim.state.reason, far_split().reason);
        // Past the deadline (2 minutes after the pause's end): rolled back.
        sim.run_for(79, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::Progressing);
        sim.run_for(1, |_| Verdict::Pass);
        assert_eq!(sim.state.phase, Phase::RolledBack);
        assert_eq!(
            sim.state.outcome,
            Some(Outcome::Deadline {
                deadline_ms: 120_000
            })
        );
        assert_eq!(
            sim.state.reason,
            "no progress within the progress deadline (2m): canary got 0.4 % of requests (12/3 000), 5 % requested"
        );

        // The routing takes effect: the next pass moves on.
        let mut fixed = Sim::new(plan.clone());
        fixed.split = Some(far_split());
        fixed.feed(Input::Start).unwrap();
        fixed.run_for(90, |_| Verdict::Pass);
        assert_eq!(fixed.applied_weights(), vec![5]);
        fixed.split = Some(SplitSeen {
            mismatch: false,
            reason: "canary got 4.9 % of requests (147/3 000), 5 % requested".into(),
            observed: 4.9,
            ..far_split()
        });
        fixed.run_for(10, |_| Verdict::Pass);
        assert_eq!(fixed.applied_weights(), vec![5, 25]);
        assert_eq!(fixed.state.split, None, "a new stage, a new split");
        // A weight the data plane takes only now starts its split over too.
        let mut late = Sim::new(classic());
        late.split = Some(far_split());
        late.feed(Input::Start).unwrap();
        late.run_for(20, |_| Verdict::Pass);
        assert_eq!(late.state.split, Some(far_split()));
        late.feed(Input::WeightApplied { refused_ms: 20_000 })
            .unwrap();
        assert_eq!(late.state.split, None);

        // At the end of the steps it holds the promotion too.
        let mut end = Sim::new(Plan {
            steps: vec![Step::SetWeight(w(20))],
            ..plan
        });
        end.split = Some(far_split());
        end.feed(Input::Start).unwrap();
        end.run_for(60, |_| Verdict::Pass);
        assert_eq!(end.state.phase, Phase::Progressing);
        assert_eq!(end.state.reason, far_split().reason);
        // A failing verdict still rolls back at once.
        end.run_for(10, |_| Verdict::Fail);
        assert_eq!(
            end.state.outcome,
            Some(Outcome::Analysis {
                check: "test".into()
            })
        );
    }
}
