//! A Rollout's status subresource as the durable store of its run (the
//! cluster's [`RolloutStore`]): the driver persists every decision here
//! before it is applied, exactly as it does in SQLite elsewhere.
//!
//! - Every write replaces `/status` with the `resourceVersion` this store
//!   last read or wrote. A 409 whose stored status is still the one this
//!   store wrote (the spec or metadata changed meanwhile) is retried with
//!   the new version; a 409 on a status someone else wrote means another
//!   controller owns the run: the store answers [`StoreError::Conflict`]
//!   from then on, and the driver stops ([`OnConflict::Stop`]). Nothing is
//!   ever written over another writer's status.
//! - The status says what `kubectl get rollouts` and Flux read (phase, run,
//!   step, weight, last verdict and reason, `observedGeneration`, the
//!   kstatus conditions `Ready`, `Reconciling`, `Stalled`), the newest
//!   decisions ([`RECENT_DECISIONS`]) and the rest of the machine's state
//!   ([`RunState`]), from which a restarted controller resumes the run.
//! - Each decision also goes out as an events.k8s.io/v1 Event regarding the
//!   Rollout (reportingController [`REPORTING_CONTROLLER`]), after its
//!   status write; an Event the API server refuses is logged, never retried
//!   in the driver's way.
//! - What the run's record says but is not in force (a weight the route
//!   refuses, a promotion not applied yet), or what stops the run until a
//!   person acts (a field conflict, a route serin must not take over), is a
//!   [`Problem`] the controller sets from the driver's health
//!   ([`StatusStore::set_problem`]): `notInForce`, the conditions (`Ready`
//!   False; `Stalled` True when a person must act) and one Warning Event
//!   per distinct problem; it stays over the run's own conditions on every
//!   write until it clears.
//! - Every write also sets `reason`, the REASON column
//!   ([`RolloutStatus::summary`]).
//! - The controller's own status fields (template hashes, a Stalled
//!   condition for a bad spec) go through [`StatusStore::update`], under
//!   the same fence: one writer per Rollout in a process.

use std::sync::Arc;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serin_proxy::Weight;
use tokio::sync::Mutex;

use super::resource::{
    Condition, READY, RECENT_DECISIONS, RECONCILING, RecentDecision, Rollout, RolloutStatus,
    RunState, STALLED,
};
use crate::controller::seams::{BoxFuture, OnConflict, RolloutStore};
use crate::rollout::{Decision, DecisionKind, Hold, Phase, RecordedVerdict, State};
use crate::store::{RolloutRecord, Sample, StoreError};
use crate::time::{self, Millis, rfc3339};

/// The `reportingController` of serin's Events.
pub const REPORTING_CONTROLLER: &str = "serin.dev/controller";

/// How many times a write is retried after a 409 that was not another
/// writer's (the spec or metadata changed under it).
const RETRIES: usize = 5;

/// One Rollout's status as a store; cheap to clone (clones share the fence).
#[derive(Clone)]
pub struct StatusStore {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api<Rollout>,
    events: Api<DynamicObject>,
    name: String,
    namespace: String,
    /// This controller's identity (Events' reportingInstance, status' writer).
    instance: String,
    fence: Mutex<Fence>,
    /// What is not in force now, put over every write of the run.
    problem: std::sync::Mutex<Option<Problem>>,
    /// An operator's request handed to the driver: its provisional answer
    /// goes out with the run's next write, the decision it makes, so a
    /// controller killed before it wrote the real answer is never followed
    /// by one that acts on the same request again.
    acting_on: std::sync::Mutex<Option<crate::cluster::requests::Answer>>,
    /// The verdict of the last Verdict Event sent: one is sent only when
    /// the verdict changes, not every analysis interval.
    last_verdict_event: std::sync::Mutex<Option<String>>,
}

/// What the run's record says that is not in force, or what stops it
/// until a person acts.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// One sentence each (`weight 20 % not applied yet: ...`).
    pub sentences: Vec<String>,
    /// A person must act (a conflict, an object the cluster refuses):
    /// `Stalled` True; otherwise it is retried and `Reconciling` stays True.
    pub stalled: bool,
    /// The conditions' reason, CamelCase (`NotInForce`, `Conflict`).
    pub reason: String,
}

/// Puts `problem` (or its absence) over the run's conditions in `status`.
fn overlay(status: &mut RolloutStatus, problem: Option<&Problem>, generation: Option<i64>) {
    match problem {
        Some(p) => {
            status.not_in_force = p.sentences.clone();
            let why = p.sentences.join("; ");
            status.set_condition(condition(READY, false, &p.reason, &why, generation));
            status.set_condition(condition(
                RECONCILING,
                !p.stalled,
                &p.reason,
                &why,
                generation,
            ));
            status.set_condition(condition(STALLED, p.stalled, &p.reason, &why, generation));
        }
        None => status.not_in_force.clear(),
    }
}

struct Fence {
    /// The Rollout as this store last read or wrote it: its
    /// resourceVersion is the precondition of the next write.
    object: Rollout,
    /// This store's writes (the driver's record generation).
    generation: i64,
    /// Another writer was seen: nothing more is written.
    fenced: bool,
}

/// A kube error as a store error.
fn unavailable(what: &str, e: kube::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl StatusStore {
    /// Reads the Rollout `namespace/name` and keeps its resourceVersion as
    /// the fence; `instance` names this controller.
    pub async fn open(
        client: kube::Client,
        namespace: &str,
        name: &str,
        instance: &str,
    ) -> Result<StatusStore, StoreError> {
        let api: Api<Rollout> = Api::namespaced(client.clone(), namespace);
        let object = api
            .get(name)
            .await
            .map_err(|e| unavailable(&format!("Rollout {namespace}/{name}"), e))?;
        let gvk = GroupVersionKind::gvk("events.k8s.io", "v1", "Event");
        let events = Api::namespaced_with(client, namespace, &ApiResource::from_gvk(&gvk));
        Ok(StatusStore {
            inner: Arc::new(Inner {
                api,
                events,
                name: name.to_string(),
                namespace: namespace.to_string(),
                instance: instance.to_string(),
                fence: Mutex::new(Fence {
                    object,
                    generation: 1,
                    fenced: false,
                }),
                problem: std::sync::Mutex::new(None),
                acting_on: std::sync::Mutex::new(None),
                last_verdict_event: std::sync::Mutex::new(None),
            }),
        })
    }

    /// While the driver acts on an operator's request, `answer` (its
    /// provisional answer) is written with the run's next record; `None`
    /// once the real answer is written.
    pub fn set_acting_on(&self, answer: Option<crate::cluster::requests::Answer>) {
        if let Ok(mut a) = self.inner.acting_on.lock() {
            *a = answer;
        }
    }

    /// The Rollout's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The Rollout as last read or written.
    pub async fn rollout(&self) -> Rollout {
        self.inner.fence.lock().await.object.clone()
    }

    /// The status as last read or written.
    pub async fn status(&self) -> RolloutStatus {
        let fence = self.inner.fence.lock().await;
        fence.object.status.clone().unwrap_or_default()
    }

    /// The run as the status holds it, as the driver's record (generation:
    /// this store's write count).
    pub async fn record(&self) -> RolloutRecord {
        let fence = self.inner.fence.lock().await;
        record_of(&fence.object, fence.generation)
    }

    /// Whether another writer has been seen (this store writes no more).
    pub async fn is_fenced(&self) -> bool {
        self.inner.fence.lock().await.fenced
    }

    /// Changes the status with `change` and writes it under the fence (the
    /// controller's own fields: template hashes, conditions for a bad spec).
    pub async fn update(&self, change: impl FnOnce(&mut RolloutStatus)) -> Result<(), StoreError> {
        let mut fence = self.inner.fence.lock().await;
        let mut status = fence.object.status.clone().unwrap_or_default();
        change(&mut status);
        self.write(&mut fence, status).await?;
        fence.generation += 1;
        Ok(())
    }

    /// Changes status fields that are not the run's record (the answer to
    /// an operator's request): the driver's record stays current, so a run
    /// going on is not taken for stale (unlike [`StatusStore::update`]).
    pub async fn note(&self, change: impl FnOnce(&mut RolloutStatus)) -> Result<(), StoreError> {
        let mut fence = self.inner.fence.lock().await;
        let mut status = fence.object.status.clone().unwrap_or_default();
        change(&mut status);
        self.write(&mut fence, status).await
    }

    /// Takes a newer Rollout seen by a watch (its spec, metadata and
    /// resourceVersion), when its status is the one this store wrote.
    pub async fn observe(&self, seen: &Rollout) {
        let mut fence = self.inner.fence.lock().await;
        if seen.status == fence.object.status {
            fence.object = seen.clone();
        }
    }

    /// Replaces the status (with the fence's resourceVersion); on a 409,
    /// takes the new version only if the stored status is still ours.
    async fn write(&self, fence: &mut Fence, status: RolloutStatus) -> Result<(), StoreError> {
        let name = &self.inner.name;
        if fence.fenced {
            return Err(StoreError::Conflict(name.clone()));
        }
        let what = format!("Rollout {}/{name} status", self.inner.namespace);
        let mut status = status;
        status.reason = status.summary();
        for _ in 0..RETRIES {
            let mut body = fence.object.clone();
            body.status = Some(status.clone());
            match self
                .inner
                .api
                .replace_status(name, &PostParams::default(), &body)
                .await
            {
                Ok(written) => {
                    fence.object = written;
                    return Ok(());
                }
                Err(e) if is_conflict(&e) => {
                    let stored = self
                        .inner
                        .api
                        .get(name)
                        .await
                        .map_err(|e| unavailable(&what, e))?;
                    if stored.status != fence.object.status {
                        fence.fenced = true;
                        tracing::error!(rollout = %name, namespace = %self.inner.namespace, "the Rollout's status was written by another controller (409 on resourceVersion {}): this one stops writing it", fence.object.metadata.resource_version.as_deref().unwrap_or("-"));
                        return Err(StoreError::Conflict(name.clone()));
                    }
                    // Only the spec or metadata moved: same status, new version.
                    fence.object = stored;
                }
                Err(e) => return Err(unavailable(&what, e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "{what}: the Rollout kept changing under {RETRIES} writes"
        )))
    }

    /// Drops the problem without writing (its run has ended; the next
    /// write of the status has no `notInForce`).
    pub fn forget_problem(&self) {
        if let Ok(mut p) = self.inner.problem.lock() {
            *p = None;
        }
    }

    /// The problem set now, if any.
    pub fn problem(&self) -> Option<Problem> {
        self.inner.problem.lock().ok().and_then(|p| p.clone())
    }

    /// Sets what is not in force (or, `None`, that everything is): written
    /// at once if it changed; kept over the run's conditions on every later
    /// write. Events: a Warning for each distinct problem that needs a
    /// person (stalled), a Normal `NotInForce` when a wait begins (not at
    /// each change of its words, e.g. a count of ready pods), a Normal
    /// `InForce` when it clears. Returns whether it changed.
    pub async fn set_problem(&self, problem: Option<Problem>) -> Result<bool, StoreError> {
        let before = self.problem();
        if before == problem {
            return Ok(false);
        }
        if let Ok(mut p) = self.inner.problem.lock() {
            p.clone_from(&problem);
        }
        let written = self
            .note(|s| {
                let generation = s.observed_generation;
                overlay(s, problem.as_ref(), generation);
                if problem.is_none()
                    && let Some(phase) = s.phase.as_deref().and_then(Phase::parse)
                {
                    let message = s.message.clone().unwrap_or_default();
                    set_run_conditions(s, phase, &message, generation);
                }
            })
            .await;
        if let Err(e) = written {
            // Not written: tried again on the next call.
            if let Ok(mut p) = self.inner.problem.lock() {
                *p = before;
            }
            return Err(e);
        }
        let kind = |p: &Option<Problem>| p.as_ref().map(|p| (p.reason.clone(), p.stalled));
        match &problem {
            Some(p) if p.stalled || kind(&before) != kind(&problem) => {
                let said = p.sentences.join("; ");
                if p.stalled {
                    tracing::warn!(rollout = %self.inner.name, namespace = %self.inner.namespace, "stalled: {said}");
                } else {
                    tracing::info!(rollout = %self.inner.name, namespace = %self.inner.namespace, "not in force: {said}");
                }
                self.event(p.stalled, &p.reason, "Apply", &said).await;
            }
            Some(_) => {}
            None => {
                tracing::info!(rollout = %self.inner.name, namespace = %self.inner.namespace, "everything decided is in force again");
                self.event(
                    false,
                    "InForce",
                    "Apply",
                    "everything the status says is in force again",
                )
                .await;
            }
        }
        Ok(true)
    }

    /// Sends one events.k8s.io/v1 Event regarding the Rollout; a refusal is
    /// logged (an Event is news, never the record).
    pub async fn event(&self, warning: bool, reason: &str, action: &str, note: &str) {
        let (uid, rv) = {
            let fence = self.inner.fence.lock().await;
            (
                fence.object.metadata.uid.clone(),
                fence.object.metadata.resource_version.clone(),
            )
        };
        let body = event_body(
            &self.inner.name,
            &self.inner.namespace,
            &self.inner.instance,
            uid.as_deref(),
            rv.as_deref(),
            (warning, reason, action, note),
            time::now(),
        );
        let event: DynamicObject = match serde_json::from_value(body) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(rollout = %self.inner.name, "event not made: {e}");
                return;
            }
        };
        if let Err(e) = self
            .inner
            .events
            .create(&PostParams::default(), &event)
            .await
        {
            tracing::warn!(rollout = %self.inner.name, reason, "event not recorded: {e}");
        }
    }

    /// Starts a run: `record` (its run number, versions and a fresh state)
    /// written with the template it rolls out and an empty decision list,
    /// under the fence; returns it with this store's generation.
    pub async fn begin_run(
        &self,
        mut record: RolloutRecord,
        template_hash: &str,
        steps: &str,
    ) -> Result<RolloutRecord, StoreError> {
        let mut fence = self.inner.fence.lock().await;
        let mut status = fence.object.status.clone().unwrap_or_default();
        status.decisions.clear();
        if let Ok(mut last) = self.inner.last_verdict_event.lock() {
            *last = None;
        }
        status.canary_template_hash = Some(template_hash.to_string());
        status.run_steps = Some(steps.to_string());
        // The last run's problem went with its router.
        self.forget_problem();
        let observed = fence.object.metadata.generation;
        fill_status(&mut status, &record, &[], observed, &self.inner.instance);
        status.last_run = None;
        overlay(&mut status, self.problem().as_ref(), observed);
        self.write(&mut fence, status).await?;
        fence.generation += 1;
        record.generation = fence.generation;
        Ok(record)
    }

    async fn save_record(
        &self,
        record: RolloutRecord,
        decisions: Vec<Decision>,
    ) -> Result<i64, StoreError> {
        {
            let mut fence = self.inner.fence.lock().await;
            // A record older than this store's last write (the controller
            // wrote meanwhile): that driver stops; the store goes on.
            if fence.fenced || record.generation != fence.generation {
                return Err(StoreError::Conflict(record.name.clone()));
            }
            let mut status = fence.object.status.clone().unwrap_or_default();
            let observed = fence.object.metadata.generation;
            fill_status(
                &mut status,
                &record,
                &decisions,
                observed,
                &self.inner.instance,
            );
            overlay(&mut status, self.problem().as_ref(), observed);
            if let Some(answer) = self.inner.acting_on.lock().ok().and_then(|a| a.clone()) {
                status.last_request = Some(answer);
            }
            self.write(&mut fence, status).await?;
            fence.generation += 1;
        }
        for d in &decisions {
            if d.kind == DecisionKind::Verdict {
                let verdict = format!("{:?}", d.verdict);
                let mut last = self
                    .inner
                    .last_verdict_event
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if last.as_deref() == Some(verdict.as_str()) {
                    continue;
                }
                *last = Some(verdict);
            }
            let warning =
                d.kind == DecisionKind::RolledBack || d.verdict == Some(RecordedVerdict::Fail);
            let (reason, action) = event_reason(d.kind);
            self.event(warning, reason, action, &d.reason).await;
        }
        Ok(record.generation + 1)
    }
}

impl RolloutStore for StatusStore {
    fn save(
        &self,
        record: RolloutRecord,
        decisions: Vec<Decision>,
        _now: Millis,
    ) -> BoxFuture<'static, Result<i64, StoreError>> {
        let store = self.clone();
        Box::pin(async move { store.save_record(record, decisions).await })
    }

    fn get(&self, name: String) -> BoxFuture<'static, Result<RolloutRecord, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let what = format!("Rollout {}/{name}", store.inner.namespace);
            let object = store
                .inner
                .api
                .get(&name)
                .await
                .map_err(|e| unavailable(&what, e))?;
            let fence = store.inner.fence.lock().await;
            Ok(record_of(&object, fence.generation))
        })
    }

    fn add_sample(
        &self,
        _name: String,
        _run: u32,
        _sample: Sample,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        // Per-interval numbers are Prometheus' to keep; status holds the verdicts.
        Box::pin(async { Ok(()) })
    }

    fn pending_rollback_path(&self, _name: &str) -> Option<std::path::PathBuf> {
        None
    }

    fn on_conflict(&self) -> OnConflict {
        OnConflict::Stop
    }
}

/// The Event's reason and action for a decision of `kind`.
fn event_reason(kind: DecisionKind) -> (&'static str, &'static str) {
    match kind {
        DecisionKind::Started => ("Started", "Start"),
        DecisionKind::Step => ("Step", "SetWeight"),
        DecisionKind::Verdict => ("Verdict", "Analyse"),
        DecisionKind::Operator => ("Operator", "Command"),
        DecisionKind::Gate => ("Gate", "CheckGate"),
        DecisionKind::Promoted => ("Promoted", "Promote"),
        DecisionKind::RolledBack => ("RolledBack", "Rollback"),
        DecisionKind::Registered => ("Registered", "Register"),
        DecisionKind::Deployed => ("Deployed", "Deploy"),
        DecisionKind::WouldRollBack => ("WouldRollBack", "Analyse"),
    }
}

/// An events.k8s.io/v1 Event regarding the Rollout.
fn event_body(
    name: &str,
    namespace: &str,
    instance: &str,
    uid: Option<&str>,
    resource_version: Option<&str>,
    (warning, reason, action, note): (bool, &str, &str, &str),
    now: Millis,
) -> serde_json::Value {
    // eventTime is a MicroTime; the API server keeps notes up to 1 kB.
    let at = rfc3339(now).replace('Z', "000Z");
    let note: String = note.chars().take(1000).collect();
    serde_json::json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "generateName": format!("{name}."), "namespace": namespace },
        "eventTime": at,
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "action": action,
        "reason": reason,
        "type": if warning { "Warning" } else { "Normal" },
        "note": note,
        "regarding": {
            "apiVersion": "serin.dev/v1alpha1",
            "kind": "Rollout",
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": resource_version,
        },
    })
}

/// A condition set now for `generation`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        last_transition_time: rfc3339(time::now()),
        observed_generation: generation,
    }
}

/// The kstatus conditions of a run in `phase` (`reason` its words).
pub fn set_run_conditions(
    status: &mut RolloutStatus,
    phase: Phase,
    reason: &str,
    generation: Option<i64>,
) {
    let (ready, reconciling, stalled, why) = match phase {
        Phase::Initializing => (false, true, false, "Initializing"),
        Phase::Progressing => (false, true, false, "Progressing"),
        Phase::Paused => (false, true, false, "Paused"),
        // The controller says Ready once the promotion is in force
        // (`cluster::controller`'s `finish`), not when it is decided.
        Phase::Succeeded => (false, true, false, "Promoting"),
        Phase::RolledBack => (false, false, true, "RolledBack"),
    };
    status.set_condition(condition(READY, ready, why, reason, generation));
    status.set_condition(condition(RECONCILING, reconciling, why, reason, generation));
    status.set_condition(condition(STALLED, stalled, why, reason, generation));
}

/// What a rollback tells the person who committed the template.
pub const FIX_OR_REVERT: &str = "the stable Deployment keeps its old pods (paused); git's pod template must be fixed or reverted";

/// Writes `record` and `decisions` into `status`.
fn fill_status(
    status: &mut RolloutStatus,
    record: &RolloutRecord,
    decisions: &[Decision],
    observed: Option<i64>,
    writer: &str,
) {
    let s = &record.state;
    status.phase = Some(s.phase.as_str().to_string());
    status.run = Some(u64::from(record.run));
    // From 1; a promoted run's index is one past its last step (the
    // machine sets it to the number of steps): its last step is shown,
    // as `serin status` and the API show it (4/4, not 5).
    let index = u32::try_from(s.step).unwrap_or(u32::MAX);
    status.step = Some(if s.phase == Phase::Succeeded {
        index.max(1)
    } else {
        index.saturating_add(1)
    });
    status.weight = Some(s.weight.percent());
    status.canary_version = record.canary_version.clone();
    status.stable_version = Some(record.stable_version.clone());
    status.last_verdict = record.last_verdict.as_ref().map(|v| v.0.clone());
    status.last_reason = record.last_verdict.as_ref().map(|v| v.1.clone());
    status.observed_generation = observed;
    let message = if s.phase == Phase::RolledBack {
        format!("{}; {FIX_OR_REVERT}", s.reason)
    } else {
        s.reason.clone()
    };
    set_run_conditions(status, s.phase, &message, observed);
    status.message = Some(message);
    for d in decisions {
        status.record(RecentDecision {
            at: rfc3339(d.at),
            kind: d.kind.as_str().to_string(),
            reason: d.reason.clone(),
            weight: Some(d.weight.percent()),
            step: Some(u32::try_from(d.step).unwrap_or(u32::MAX).saturating_add(1)),
        });
    }
    debug_assert!(status.decisions.len() <= RECENT_DECISIONS);
    status.state = Some(RunState {
        step_index: u32::try_from(s.step).unwrap_or(u32::MAX),
        weight_hundredths: u32::from(s.weight.hundredths()),
        step_started_ms: s.step_started.0,
        hold: s.hold.map(|h| h.as_str().to_string()),
        pause_served_ms: s.pause_served_ms,
        next_analysis_ms: s.next_analysis.0,
        stage_judged: s.stage_judged,
        no_data_streak: s.no_data_streak,
        outcome: s
            .outcome
            .as_ref()
            .and_then(|o| serde_json::to_string(o).ok()),
        former_stable_version: record.former_stable_version.clone(),
        last_verdict_ms: record.last_verdict.as_ref().map(|v| v.2.0),
        writer: Some(writer.to_string()),
    });
}

/// The driver's record of the run `rollout`'s status holds (a status
/// without a run: a rollout not started, all traffic on stable).
pub fn record_of(rollout: &Rollout, generation: i64) -> RolloutRecord {
    let status = rollout.status.clone().unwrap_or_default();
    let run = status.state.clone().unwrap_or_default();
    let phase = status
        .phase
        .as_deref()
        .and_then(Phase::parse)
        .unwrap_or(Phase::Initializing);
    let weight = u16::try_from(run.weight_hundredths)
        .ok()
        .and_then(|h| Weight::from_hundredths(h).ok())
        .unwrap_or(Weight::ZERO);
    let hold = match run.hold.as_deref() {
        Some("step") => Some(Hold::Step),
        Some("operator") => Some(Hold::Operator),
        _ => None,
    };
    let mut state = State::new(Millis(run.step_started_ms));
    state.phase = phase;
    state.step = run.step_index as usize;
    state.weight = weight;
    state.hold = hold;
    state.pause_served_ms = run.pause_served_ms;
    state.next_analysis = Millis(run.next_analysis_ms);
    state.stage_judged = run.stage_judged;
    state.no_data_streak = run.no_data_streak;
    state.outcome = run
        .outcome
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok());
    if let Some(message) = &status.message {
        state.reason = message
            .strip_suffix(&format!("; {FIX_OR_REVERT}"))
            .unwrap_or(message)
            .to_string();
    }
    let last_verdict = match (
        &status.last_verdict,
        &status.last_reason,
        run.last_verdict_ms,
    ) {
        (Some(v), Some(r), Some(at)) => Some((v.clone(), r.clone(), Millis(at))),
        _ => None,
    };
    RolloutRecord {
        name: rollout.metadata.name.clone().unwrap_or_default(),
        spec: serde_json::to_string(&rollout.spec).unwrap_or_default(),
        stable_version: status.stable_version.clone().unwrap_or_default(),
        canary_version: status.canary_version.clone(),
        former_stable_version: run.former_stable_version,
        stable_upstream: None,
        canary_upstream: None,
        state,
        last_verdict,
        generation,
        run: u32::try_from(status.run.unwrap_or(0)).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Outcome;

    fn rollout() -> Rollout {
        let spec: super::super::resource::RolloutSpec = serde_json::from_value(serde_json::json!({
            "stable": { "version": "v1" },
            "canary": { "version": "v2" },
        }))
        .unwrap();
        let mut r = Rollout::new("checkout", spec);
        r.metadata.namespace = Some("shop".into());
        r.metadata.generation = Some(3);
        r
    }

    #[test]
    fn a_record_round_trips_through_the_status() {
        let mut r = rollout();
        let mut record = record_of(&r, 1);
        record.run = 2;
        record.stable_version = "v1".into();
        record.canary_version = Some("v2".into());
        record.state.phase = Phase::Paused;
        record.state.step = 3;
        record.state.weight = Weight::from_hundredths(1250).unwrap();
        record.state.hold = Some(Hold::Operator);
        record.state.pause_served_ms = Some(4200);
        record.state.step_started = Millis(1_700_000_000_123);
        record.state.next_analysis = Millis(1_700_000_005_000);
        record.state.stage_judged = true;
        record.state.no_data_streak = 2;
        record.state.reason = "paused by alice".into();
        record.last_verdict = Some(("pass".into(), "fine".into(), Millis(1_700_000_001_000)));
        let mut status = RolloutStatus::default();
        fill_status(&mut status, &record, &[], Some(3), "me");
        r.status = Some(status.clone());
        assert_eq!(record_of(&r, 1), record);
        assert_eq!(status.step, Some(4));
        assert_eq!(status.weight, Some(12.5));
        let reconciling = status
            .conditions
            .iter()
            .find(|c| c.type_ == RECONCILING)
            .unwrap();
        assert_eq!(reconciling.status, "True");

        record.state.phase = Phase::RolledBack;
        record.state.outcome = Some(Outcome::Analysis {
            check: "errorRate".into(),
        });
        fill_status(&mut status, &record, &[], Some(3), "me");
        r.status = Some(status.clone());
        assert_eq!(record_of(&r, 1), record, "the outcome and reason come back");
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED)
            .unwrap();
        assert_eq!(stalled.status, "True");
        assert!(
            stalled.message.contains("fixed or reverted"),
            "{}",
            stalled.message
        );

        // Promoted: the index is one past the last of 4 steps; the STEP
        // column (status.step) says 4, as the API's 4/4, and the record
        // still comes back whole.
        record.state.phase = Phase::Succeeded;
        record.state.step = 4;
        record.state.outcome = Some(Outcome::Promoted { by: None });
        fill_status(&mut status, &record, &[], Some(3), "me");
        r.status = Some(status.clone());
        assert_eq!(status.step, Some(4));
        assert_eq!(record_of(&r, 1), record);
    }
}
