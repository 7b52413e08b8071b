//! `serin serve --kubernetes`: the Kubernetes controller over Rollouts.
//!
//! kube-runtime watches the Rollouts (all namespaces, or one) and the
//! Deployments they name (a relist after `410 Gone` is the watcher's own:
//! nothing is lost, every object is reconciled again). One reconcile, for
//! one Rollout, does in order:
//! 1. Deleted (the finalizer [`FINALIZER`] holds it): stop its run, traffic
//!    back to stable and the canary to 0 replicas, then let it go.
//! 2. Its spec through the rollout file's checks ([`Rollout::check`]); a bad
//!    one: phase `InvalidSpec` (unless a run's phase is to be kept),
//!    condition `Stalled` and a Warning Event naming the field, nothing
//!    else done.
//!    Then its claim on the stable Deployment: of the Rollouts naming one
//!    Deployment, the one a controller already acted for (its status has
//!    the running template), else the oldest valid one (creationTimestamp,
//!    then namespace and name) manages it; any other gets `Stalled` (reason `DeploymentClaimed`) and
//!    a Warning Event naming the one that does, and does nothing to it
//!    (looked at again every [`CLAIM_CHECK`]: it takes over once the
//!    other is deleted). Read from the API each time, so a restart or
//!    another replica decides the same.
//! 3. The stable Deployment kept `spec.paused: true` (a server-side apply
//!    of that one field, field manager `serin`), unless a run is promoting.
//! 4. The hash of its pod template against the status: the running
//!    template (`templateHash`) and the run's (`canaryTemplateHash`).
//!    - first sight: the template is the running one (phase `Idle`);
//!    - a new template: a run starts (a [`Driver`] task with the Rollout's
//!      status as its store, [`StatusStore`], and the GitOps router,
//!      [`KubernetesRouter::gitops`]); a status that says the run is in
//!      progress (a restart, another replica) is resumed from it;
//!    - back to the running template while a run goes, or after it rolled
//!      back: the run ends quietly (traffic to stable, canary to 0), the
//!      phase is `Idle` again (no canary, Ready) and `lastRun` keeps how
//!      the run ended;
//!    - a run going: every [`RUN_CHECK`], what its driver's health says is
//!      not in force (a weight the route refuses, a conflict) goes into
//!      status ([`StatusStore::set_problem`]);
//!    - the run promoted: `Ready` stays False (reason `Promoting`) until
//!      the promotion is in force (the stable rolled out); then its
//!      template is the running one. Rolled back: the stable stays paused
//!      with git's template not rolled out, and status says git's template
//!      must be fixed or reverted.
//!
//! Deleted: the run stops, traffic goes to stable, the canary to 0; the
//! stable Deployment is unpaused (serin gives up its `spec.paused`) when it
//! runs its own template, and left paused when git's template was never
//! promoted (a run going or rolled back), which is logged with the command
//! that rolls it out unguarded.
//!
//! A reconcile error is retried with backoff (3 s, doubled per failure in a
//! row, at most 60 s) and reported as a Warning Event. Acting is gated on leadership: [`Options::leader`] (a watch of
//! "this process leads"); losing it stops every run at once, before
//! anything else is written; a reconcile on a follower does nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::requests::{self, Action as Asked, Answer, REQUEST_ANNOTATION, Request};
use super::resource::{IDLE, INVALID_SPEC, READY, RECONCILING, Rollout, RolloutStatus, STALLED};
use super::status::{Problem, StatusStore, condition, set_run_conditions};
use crate::controller::driver::{Driver, DriverError, Handle, Health};
use crate::controller::machine::Input;
use crate::controller::seams::TrafficRouter;
use crate::error::{Error, Kind};
use crate::notify::Notifier;
use crate::providers::traffic::kubernetes::{
    KubeTarget, KubernetesRouter, release_paused, set_paused,
};
use crate::rollout::{Phase, State};
use crate::runtime::{PlaneKind, Setup};
use crate::store::RolloutRecord;
use crate::time;

/// The finalizer that lets a Rollout deleted mid-run put traffic back first.
pub const FINALIZER: &str = "serin.dev/finalizer";

/// How often a Rollout with a run going is looked at again (its driver's end).
const RUN_CHECK: Duration = Duration::from_secs(1);
/// How often a Rollout refused for a Deployment another one manages is
/// looked at again (it takes over once that one is gone).
const CLAIM_CHECK: Duration = Duration::from_secs(10);
/// The condition reason of a Rollout naming a Deployment another manages.
pub const DEPLOYMENT_CLAIMED: &str = "DeploymentClaimed";
/// The condition reason of a Rollout whose stable Deployment does not exist.
pub const DEPLOYMENT_NOT_FOUND: &str = "DeploymentNotFound";
/// The wait before a failed reconcile is tried again, doubled on every
/// failure in a row up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_secs(3);
/// The longest wait between tries of a failing reconcile.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait after the `n`th failure in a row (from 1).
fn retry_after(n: u32) -> Duration {
    RETRY
        .saturating_mul(1 << n.saturating_sub(1).min(6))
        .min(RETRY_MAX)
}

/// How the controller runs.
#[derive(Clone)]
pub struct Options {
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// This process' name (Events' reportingInstance, status' writer).
    pub identity: String,
    /// Whether this process leads: only the leader acts.
    pub leader: watch::Receiver<bool>,
    /// How often, and how long at most, a promotion waits for the stable
    /// Deployment to roll out.
    pub rollout_poll: Duration,
    /// See [`Options::rollout_poll`].
    pub rollout_timeout: Duration,
    /// How long one watch request lasts before it is made again (from the
    /// last resourceVersion seen; a 410 then means a relist).
    pub watch_timeout: u32,
    /// The sender of an always-true [`Options::leader`] (one replica).
    _always: Option<Arc<watch::Sender<bool>>>,
}

impl Options {
    /// Acting only while `leader` says so, as `identity` (the Lease's
    /// holder identity: `cluster::lease`).
    pub fn led_by(
        namespace: Option<String>,
        identity: String,
        leader: watch::Receiver<bool>,
    ) -> Options {
        Options {
            identity,
            leader,
            _always: None,
            ..Options::single(namespace)
        }
    }

    /// Always the leader (one replica), identity `hostname-pid`.
    pub fn single(namespace: Option<String>) -> Options {
        let (tx, rx) = watch::channel(true);
        Options {
            namespace,
            identity: super::lease::own_identity(),
            leader: rx,
            rollout_poll: Duration::from_secs(1),
            rollout_timeout: Duration::from_secs(600),
            watch_timeout: 290,
            _always: Some(Arc::new(tx)),
        }
    }
}

/// A reconcile that failed: retried with backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReconcileError(String);

impl From<Error> for ReconcileError {
    fn from(e: Error) -> ReconcileError {
        ReconcileError(e.to_string())
    }
}

impl From<crate::store::StoreError> for ReconcileError {
    fn from(e: crate::store::StoreError) -> ReconcileError {
        ReconcileError(e.to_string())
    }
}

type Key = (String, String);

/// A run going: its driver task and what it rolls out.
struct Run {
    template: String,
    router: Arc<KubernetesRouter>,
    /// Operators' requests go here.
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<RolloutRecord, DriverError>>,
}

struct Ctx {
    client: kube::Client,
    options: Options,
    stores: tokio::sync::Mutex<HashMap<Key, StatusStore>>,
    runs: Mutex<HashMap<Key, Run>>,
    /// Failed reconciles in a row, per Rollout (the backoff).
    failures: Mutex<HashMap<Key, u32>>,
    /// The Rollouts skipped for a status this version cannot read, with
    /// the resourceVersion last reported (one WARN and Event per change).
    unreadable: Mutex<HashMap<Key, String>>,
}

impl Ctx {
    fn leads(&self) -> bool {
        *self.options.leader.borrow()
    }

    /// The Rollout's status store, opened once per process.
    async fn store(&self, key: &Key) -> Result<StatusStore, ReconcileError> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(key) {
            return Ok(s.clone());
        }
        let s =
            StatusStore::open(self.client.clone(), &key.0, &key.1, &self.options.identity).await?;
        stores.insert(key.clone(), s.clone());
        Ok(s)
    }

    /// The command handle of the run going for `key`, if one is.
    fn handle(&self, key: &Key) -> Option<Handle> {
        let runs = self.runs.lock().ok()?;
        runs.get(key)
            .filter(|r| !r.task.is_finished())
            .map(|r| r.handle.clone())
    }

    fn take_run(&self, key: &Key) -> Option<Run> {
        self.runs.lock().ok()?.remove(key)
    }

    /// The template of the run going for `key`, and whether its task ended.
    fn run_state(&self, key: &Key) -> Option<(String, bool)> {
        let runs = self.runs.lock().ok()?;
        runs.get(key)
            .map(|r| (r.template.clone(), r.task.is_finished()))
    }

    /// Stops every run at once (leadership lost, or shutdown).
    fn stop_all(&self) {
        if let Ok(mut runs) = self.runs.lock() {
            for (key, mut run) in runs.drain() {
                tracing::warn!(rollout = %key.1, namespace = %key.0, "run stopped: this process no longer leads (another resumes it from status)");
                if let Some(stop) = run.stop.take() {
                    let _ = stop.send(());
                }
                run.task.abort();
            }
        }
    }
}

/// Runs the controller until `shutdown` resolves; returns only then (or if
/// the watches end, which is logged as an error).
pub async fn run(
    client: kube::Client,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (rollouts, deployments): (Api<Rollout>, Api<Deployment>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Arc::new(Ctx {
        client,
        options: options.clone(),
        stores: tokio::sync::Mutex::new(HashMap::new()),
        runs: Mutex::new(HashMap::new()),
        failures: Mutex::new(HashMap::new()),
        unreadable: Mutex::new(HashMap::new()),
    });
    // Losing the lead stops every run before anything else is written.
    let mut leader = options.leader.clone();
    let watcher_ctx = ctx.clone();
    let lead_watch = tokio::spawn(async move {
        while leader.changed().await.is_ok() {
            if !*leader.borrow() {
                watcher_ctx.stop_all();
                // Whatever this process read is stale once another leads.
                watcher_ctx.stores.lock().await.clear();
            }
        }
    });
    let watch = watcher::Config::default().timeout(options.watch_timeout);
    let controller = Controller::new(rollouts, watch.clone());
    let reader = controller.store();
    tracing::info!(namespace = options.namespace.as_deref().unwrap_or("(all)"), identity = %options.identity, "Kubernetes controller started");
    controller
        .watches(deployments, watch, move |d: Deployment| {
            let (Some(name), Some(ns)) = (d.metadata.name.clone(), d.metadata.namespace.clone())
            else {
                return Vec::new();
            };
            reader
                .state()
                .iter()
                .filter(|r| names_deployment(r, &ns, &name))
                .map(|r| ObjectRef::from_obj(&**r))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|answer| async move {
            match answer {
                Ok((o, _)) => tracing::debug!(rollout = %o.name, "reconciled"),
                Err(e) => tracing::warn!("reconcile: {e}"),
            }
        })
        .await;
    lead_watch.abort();
    ctx.stop_all();
    tracing::info!("Kubernetes controller stopped");
}

/// Whether Rollout `r` names the Deployment `ns/name` as its stable one.
fn names_deployment(r: &Rollout, ns: &str, name: &str) -> bool {
    let Some(k) = r
        .spec
        .traffic
        .as_ref()
        .and_then(|t| t.typed())
        .and_then(|t| t.kubernetes.as_ref())
    else {
        return false;
    };
    let own = r.metadata.namespace.as_deref().unwrap_or("default");
    k.deployment.as_deref() == Some(name) && k.namespace.as_deref().unwrap_or(own) == ns
}

fn error_policy(r: Arc<Rollout>, e: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key_of(&r)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let wait = retry_after(n);
    tracing::warn!(
        rollout = r.metadata.name.as_deref().unwrap_or("-"),
        namespace = r.metadata.namespace.as_deref().unwrap_or("-"),
        failures = n,
        "reconcile failed (retrying in {} s): {e}",
        wait.as_secs()
    );
    Action::requeue(wait)
}

async fn reconcile(r: Arc<Rollout>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    if !ctx.leads() {
        return Ok(Action::requeue(RETRY));
    }
    let ns = r.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &ns);
    let key = key_of(&r);
    if let Some(action) = skip_unreadable(&r, &ctx).await {
        return Ok(action);
    }
    let answer = finalizer(&api, FINALIZER, r, |event| async {
        match event {
            Finalized::Apply(r) => {
                let key = key_of(&r);
                let result = apply(&r, &ctx).await;
                if let Err(e) = &result
                    && let Ok(store) = ctx.store(&key).await
                {
                    store
                        .event(true, "ReconcileFailed", "Reconcile", &e.to_string())
                        .await;
                }
                result
            }
            Finalized::Cleanup(r) => cleanup(&r, &ctx).await,
        }
    })
    .await
    .map_err(|e| ReconcileError(e.to_string()));
    if answer.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&key);
    }
    answer
}

/// A Rollout whose status has fields this version cannot read (a hand
/// edit, a newer serin's status) is not acted on: its run cannot be
/// resumed from what was written, and writing the status would lose what
/// is there. Said once per change of the object (a WARN and a Warning
/// Event naming the fields), then waited on; a deleted one is still
/// cleaned up. The other Rollouts are controlled as usual.
async fn skip_unreadable(r: &Rollout, ctx: &Ctx) -> Option<Action> {
    let key = key_of(r);
    let fields = r
        .status
        .as_ref()
        .map(|s| s.unreadable.as_slice())
        .unwrap_or_default();
    if fields.is_empty() || r.metadata.deletion_timestamp.is_some() {
        if let Ok(mut u) = ctx.unreadable.lock()
            && u.remove(&key).is_some()
        {
            tracing::info!(rollout = %key.1, namespace = %key.0, "the Rollout's status reads again: controlled again");
        }
        return None;
    }
    let rv = r.metadata.resource_version.clone().unwrap_or_default();
    let new = ctx
        .unreadable
        .lock()
        .map(|mut u| u.insert(key.clone(), rv.clone()).as_deref() != Some(rv.as_str()))
        .unwrap_or(true);
    if new {
        let shown: Vec<&str> = fields.iter().take(3).map(String::as_str).collect();
        let more = fields.len().saturating_sub(shown.len());
        let note = format!(
            "not controlled: status fields this version of serin cannot read: {}{}; fix or remove \
             them (kubectl patch --subresource=status), or run the serin version that wrote them",
            shown.join("; "),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        );
        tracing::warn!(rollout = %key.1, namespace = %key.0, resource_version = %rv, "{note}");
        if let Ok(store) = ctx.store(&key).await {
            store
                .event(true, "StatusUnreadable", "Reconcile", &note)
                .await;
        }
        ctx.stores.lock().await.remove(&key);
    }
    Some(Action::requeue(Duration::from_secs(60)))
}

fn key_of(r: &Rollout) -> Key {
    (
        r.metadata.namespace.clone().unwrap_or_default(),
        r.metadata.name.clone().unwrap_or_default(),
    )
}

/// The spec checked, and what runs it; or every problem, one per line.
fn setup_of(r: &Rollout) -> Result<(Setup, KubeTarget), String> {
    let checked = r.check().map_err(|e| {
        e.problems
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let setup = Setup::from_rollout(&checked)?;
    match &setup.plane {
        PlaneKind::Kubernetes(t) => {
            let t = t.clone();
            Ok((setup, t))
        }
        _ => Err("spec.traffic.provider: expected nginx-ingress, istio or gateway-api (the Kubernetes controller drives Kubernetes routing)".into()),
    }
}

/// A hash of a pod template (FNV-1a over its JSON): stable across
/// processes and versions of serin.
pub fn template_hash(t: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(t).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The version an image names: its tag (or digest), else the image.
pub fn version_of(image: &str) -> String {
    if let Some((_, digest)) = image.split_once('@') {
        return digest.to_string();
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rsplit_once(':') {
        Some((_, tag)) => tag.to_string(),
        None => image.to_string(),
    }
}

/// The image of the template's main container (named as the Deployment, else the first).
fn main_image(d: &Deployment) -> String {
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let containers = d
        .spec
        .template
        .spec
        .as_ref()
        .map(|p| p.containers.clone())
        .unwrap_or_default();
    containers
        .iter()
        .find(|c| c.name == name)
        .or_else(|| containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// A Rollout refused (`reason`: `InvalidSpec`, a bad spec naming the
/// field; [`DEPLOYMENT_CLAIMED`]): Stalled saying why, a Warning Event;
/// once per generation and message. With no run's phase to keep, the
/// phase says it too ([`INVALID_SPEC`]).
async fn report_refused(
    store: &StatusStore,
    r: &Rollout,
    reason: &str,
    why: &str,
) -> Result<(), ReconcileError> {
    let generation = r.metadata.generation;
    let status = store.status().await;
    let told = status.conditions.iter().any(|c| {
        c.type_ == STALLED
            && c.reason == reason
            && c.observed_generation == generation
            && c.message == why
    });
    if told {
        return Ok(());
    }
    tracing::warn!(
        rollout = r.metadata.name.as_deref().unwrap_or("-"),
        namespace = r.metadata.namespace.as_deref().unwrap_or("-"),
        "Rollout refused ({reason}): {why}"
    );
    store
        .update(|s| {
            s.observed_generation = generation;
            if matches!(s.phase.as_deref(), None | Some(IDLE | INVALID_SPEC)) {
                s.phase = Some(INVALID_SPEC.to_string());
                s.message = Some(why.to_string());
            }
            s.set_condition(condition(STALLED, true, reason, why, generation));
            s.set_condition(condition(READY, false, reason, why, generation));
            s.set_condition(condition(RECONCILING, false, reason, why, generation));
        })
        .await?;
    let action = if reason == DEPLOYMENT_CLAIMED || reason == DEPLOYMENT_NOT_FOUND {
        "Claim"
    } else {
        "Validate"
    };
    store.event(true, reason, action, why).await;
    Ok(())
}

/// The Rollout that manages the Deployment `target` names when it is not
/// `r`: of every Rollout naming it (in the controller's scope) that is
/// valid or has acted on it, one that has acted, else the oldest
/// (creationTimestamp, then namespace and name). Read from the API, so a
/// restart or another replica decides the same.
async fn claimant(
    ctx: &Ctx,
    r: &Rollout,
    target: &KubeTarget,
) -> Result<Option<(String, String)>, ReconcileError> {
    let api: Api<Rollout> = match &ctx.options.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let all = api
        .list(&Default::default())
        .await
        .map_err(|e| ReconcileError(format!("listing Rollouts: {e}")))?;
    let oldest = all
        .items
        .iter()
        .filter(|o| names_deployment(o, &target.namespace, &target.deployment))
        .filter(|o| has_acted(o) || o.check().is_ok())
        .chain(std::iter::once(r))
        .min_by_key(|o| claim_order(o));
    Ok(oldest.filter(|o| key_of(o) != key_of(r)).map(key_of))
}

/// Whether a controller has acted for `r` on its Deployment (recorded
/// its running template): it keeps its claim, even if its spec turns
/// invalid later.
fn has_acted(r: &Rollout) -> bool {
    r.status.as_ref().is_some_and(|s| s.template_hash.is_some())
}

/// The order in which Rollouts claim a Deployment: one that has acted on
/// it first, then the oldest.
fn claim_order(r: &Rollout) -> (bool, i64, String, String) {
    (
        !has_acted(r),
        r.metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        r.metadata.namespace.clone().unwrap_or_default(),
        r.metadata.name.clone().unwrap_or_default(),
    )
}

/// No run: the conditions of a Rollout at rest (after its last run, if any).
fn set_idle(s: &mut RolloutStatus, generation: Option<i64>, reason: &str, message: &str) {
    s.observed_generation = generation;
    s.not_in_force.clear();
    s.set_condition(condition(READY, true, reason, message, generation));
    s.set_condition(condition(RECONCILING, false, reason, message, generation));
    s.set_condition(condition(STALLED, false, reason, message, generation));
}

/// No run and no canary: phase [`IDLE`] as a Rollout never run has, with
/// `message`; how a run that was there ended goes into `lastRun`.
fn set_no_run(s: &mut RolloutStatus, generation: Option<i64>, reason: &str, message: &str) {
    if let (Some(run), Some(phase)) = (s.run, s.phase.as_deref())
        && phase != IDLE
        && phase != INVALID_SPEC
    {
        // The advice to fix or revert the template is stale once there is
        // no run; a revert is said as what happened.
        let written = s.message.clone().unwrap_or_default();
        let mut how = written
            .strip_suffix(&format!("; {}", super::status::FIX_OR_REVERT))
            .unwrap_or(&written)
            .to_string();
        if message == REVERTED {
            how.push_str("; git's pod template was then reverted to the running one");
        }
        let ended = match phase {
            "RolledBack" => "rolled back".to_string(),
            "Succeeded" => "promoted".to_string(),
            other => format!("ended ({other})"),
        };
        s.last_run = Some(format!("run {run} {ended}: {how}"));
    }
    s.phase = Some(IDLE.to_string());
    s.canary_version = None;
    s.weight = None;
    s.step = None;
    s.last_verdict = None;
    s.last_reason = None;
    s.decisions.clear();
    s.message = Some(message.to_string());
    set_idle(s, generation, reason, message);
}

/// The message of a Rollout with no run.
const NO_RUN: &str = "no run: the stable Deployment runs its template";

/// The reason of a Rollout at rest whose route serin could not write.
const ROUTE_CONFLICT: &str = "RouteConflict";

/// What a Rollout at rest says when the first write of a run to its route
/// (weight 0) would be refused.
fn route_conflict_message(e: &Error) -> String {
    format!(
        "{NO_RUN}; the next release would stop at weight 0, at the first run's first write to the route: {}",
        e.message()
    )
}

/// Stalled for a refused spec or a Deployment another Rollout manages.
fn is_invalid_marked(s: &RolloutStatus) -> bool {
    s.conditions.iter().any(|c| {
        c.type_ == STALLED
            && c.status == "True"
            && (c.reason == "InvalidSpec"
                || c.reason == DEPLOYMENT_CLAIMED
                || c.reason == DEPLOYMENT_NOT_FOUND)
    })
}

/// What a run's `health` (and its router's last error) says is not in
/// force, or stops it until a person acts; `None` when all is in force or
/// merely being applied.
fn problem_of(phase: Phase, health: &Health, router: Option<&Error>) -> Option<Problem> {
    let permanent = router.filter(|e| matches!(e.kind(), Kind::Conflict | Kind::Invalid));
    let mut sentences = if health.router_error.is_some() {
        crate::wire::not_in_force(phase, health)
    } else {
        Vec::new()
    };
    if sentences.is_empty()
        && let Some(e) = permanent
    {
        sentences.push(format!("the canary cannot be set up: {e}"));
    }
    if sentences.is_empty() {
        return None;
    }
    let reason = match permanent.map(Error::kind) {
        Some(Kind::Conflict) => "Conflict",
        Some(_) => "Invalid",
        None => "NotInForce",
    };
    Some(Problem {
        sentences,
        stalled: permanent.is_some(),
        reason: reason.to_string(),
    })
}

/// Puts what the run going for `key` has not in force into its status.
async fn report_run(ctx: &Ctx, store: &StatusStore, key: &Key) {
    let seen = ctx.runs.lock().ok().and_then(|runs| {
        runs.get(key)
            .map(|r| (r.handle.health(), r.router.last_error()))
    });
    let Some((health, router)) = seen else { return };
    let status = store.status().await;
    let phase = status
        .phase
        .as_deref()
        .and_then(Phase::parse)
        .unwrap_or(Phase::Initializing);
    let problem = problem_of(phase, &health, router.as_ref());
    if let Err(e) = store.set_problem(problem).await {
        tracing::warn!(rollout = %key.1, namespace = %key.0, "status not written (what is not in force): {e}");
    }
}

async fn apply(r: &Rollout, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let key = key_of(r);
    let store = ctx.store(&key).await?;
    store.observe(r).await;
    if store.is_fenced().await {
        // Another writer wrote this Rollout's status: its run (if any) has
        // stopped; what it wrote is read afresh next time (while this
        // process still leads, it goes on from there).
        if ctx.run_state(&key).is_some_and(|(_, finished)| finished) {
            let run = ctx.take_run(&key);
            finish(&store, run, r.metadata.generation).await?;
        }
        ctx.stores.lock().await.remove(&key);
        return Ok(Action::requeue(RETRY));
    }
    // The operator's request is answered once the run is known: a run in
    // status is resumed (or a new one started) first, so a rollback asked
    // while no controller ran is applied, not refused as "no run". A
    // reconcile that failed answers nothing yet (it is tried again).
    let action = act(r, ctx, &store, &key).await?;
    answer_request(r, ctx, &store, &key).await?;
    Ok(action)
}

/// The JSON of the spec's steps (`null`: the default steps), as a run
/// keeps them in `status.runSteps`.
fn steps_text(r: &Rollout) -> String {
    serde_json::to_string(&r.spec.steps).unwrap_or_default()
}

/// What a run in status resumes with: the spec's setup with the steps the
/// run started with (`status.runSteps`), or why it cannot be.
fn resumed_setup(
    r: &Rollout,
    status: &RolloutStatus,
    now: (Setup, KubeTarget),
) -> Result<(Setup, KubeTarget), String> {
    let Some(saved) = status.run_steps.as_deref() else {
        return Err("the run's steps are not in status (a run started by an older serin): its step index cannot be matched to the spec's steps".into());
    };
    if saved == steps_text(r) {
        return Ok(now);
    }
    let mut old = r.clone();
    old.spec.steps = serde_json::from_str(saved)
        .map_err(|e| format!("the run's steps in status cannot be read: {e}"))?;
    setup_of(&old).map_err(|e| format!("the run's steps no longer pass the checks: {e}"))
}

/// Ends a run in status that cannot be resumed: traffic to stable, the
/// canary to 0 replicas, phase RolledBack saying why (git's template must
/// then be fixed or reverted, as after any rollback).
async fn abandon(
    store: &StatusStore,
    router: &KubernetesRouter,
    generation: Option<i64>,
    why: &str,
) -> Result<(), ReconcileError> {
    let message = format!("run ended on resume, nothing promoted: {why}");
    tracing::warn!(rollout = %store.name(), "{message}");
    router.cleanup().await?;
    store
        .update(|s| {
            s.phase = Some(Phase::RolledBack.as_str().to_string());
            s.weight = Some(0.0);
            if let Some(st) = &mut s.state {
                st.weight_hundredths = 0;
            }
            let text = format!("{message}; {}", super::status::FIX_OR_REVERT);
            set_run_conditions(s, Phase::RolledBack, &text, generation);
            s.message = Some(text);
        })
        .await?;
    store.event(true, "RunAbandoned", "Resume", &message).await;
    Ok(())
}

/// One reconcile of a Rollout whose status this process may write.
async fn act(
    r: &Rollout,
    ctx: &Ctx,
    store: &StatusStore,
    key: &Key,
) -> Result<Action, ReconcileError> {
    let (store, key) = (store.clone(), key.clone());
    let generation = r.metadata.generation;
    let (setup, target) = match setup_of(r) {
        Ok(s) => s,
        Err(why) => {
            report_refused(&store, r, "InvalidSpec", &why).await?;
            return Ok(Action::await_change());
        }
    };
    if let Some(other) = claimant(ctx, r, &target).await? {
        let why = format!(
            "Deployment {}/{} is managed by Rollout {}/{} (the older one): this Rollout does nothing to it; delete one of the two",
            target.namespace, target.deployment, other.0, other.1
        );
        if let Some(mut run) = ctx.take_run(&key) {
            // A run from before the claim was decided: stopped, and
            // nothing undone (the canary and route are the other's now).
            if let Some(stop) = run.stop.take() {
                let _ = stop.send(());
            }
            let _ = (&mut run.task).await;
            tracing::warn!(rollout = %key.1, namespace = %key.0, "run stopped: {why}");
        }
        report_refused(&store, r, DEPLOYMENT_CLAIMED, &why).await?;
        return Ok(Action::requeue(CLAIM_CHECK));
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let what = format!("Deployment {}/{}", target.namespace, target.deployment);
    let stable = match deployments.get_opt(&target.deployment).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            // Said in status and a Warning Event; looked at again when the
            // Deployment appears (it is watched) and every CLAIM_CHECK.
            let why = format!(
                "{what} not found: create it, or name the stable Deployment in spec.traffic.kubernetes.deployment"
            );
            report_refused(&store, r, DEPLOYMENT_NOT_FOUND, &why).await?;
            return Ok(Action::requeue(CLAIM_CHECK));
        }
        Err(e) => return Err(ReconcileError(format!("{what}: {e}"))),
    };
    let template = template_hash(&stable.spec.template);
    let status = store.status().await;

    // A run going: ended, still right, or overtaken by git.
    if let Some((run_template, finished)) = ctx.run_state(&key) {
        if finished {
            let run = ctx.take_run(&key);
            finish(&store, run, generation).await?;
            return Ok(Action::requeue(Duration::ZERO));
        }
        if run_template == template {
            report_run(ctx, &store, &key).await;
            return Ok(Action::requeue(RUN_CHECK));
        }
        let back = status.template_hash.as_deref() == Some(template.as_str());
        end_quietly(&store, ctx.take_run(&key), generation, back).await?;
        if back {
            return Ok(Action::await_change());
        }
        // A newer template: a new run starts below.
    }

    let paused = stable.spec.paused == Some(true);
    let status = store.status().await;
    let phase = status.phase.as_deref().and_then(Phase::parse);
    // A promotion written but perhaps not done before a restart: done now
    // (the stable unpaused, rolled out, canary retired, paused again).
    if phase == Some(Phase::Succeeded)
        && status.canary_template_hash.as_deref() == Some(template.as_str())
        && status.template_hash.as_deref() != Some(template.as_str())
    {
        let router = router_for(ctx, &target, &stable);
        router.promote().await?;
        store
            .update(|s| {
                s.template_hash = s.canary_template_hash.clone();
                set_idle(
                    s,
                    generation,
                    "Succeeded",
                    "the run promoted; its template is the running one",
                );
            })
            .await?;
        return Ok(Action::await_change());
    }
    if !paused {
        set_paused(&ctx.client, &target.namespace, &target.deployment, true).await?;
    }
    let Some(running) = status.template_hash.clone() else {
        // First sight: the template is the running one.
        let version = version_of(&main_image(&stable));
        store
            .update(|s| {
                s.template_hash = Some(template.clone());
                s.stable_version = Some(version);
                set_no_run(s, generation, "Idle", NO_RUN);
            })
            .await?;
        return Ok(Action::await_change());
    };
    if running == template {
        // At rest; a run rolled back whose template git reverted ends quietly.
        let reverted = phase == Some(Phase::RolledBack)
            && status.canary_template_hash.as_deref() != Some(template.as_str());
        if reverted {
            store
                .update(|s| set_no_run(s, generation, "Idle", REVERTED))
                .await?;
            store.event(false, "RunEnded", "EndRun", REVERTED).await;
        } else {
            let no_run = matches!(status.phase.as_deref(), None | Some(IDLE | INVALID_SPEC));
            // With no run, the route is checked at rest: a route another
            // field manager owns is said now, not at the first release.
            let refused = if no_run {
                router_for(ctx, &target, &stable).routing_refused().await
            } else {
                None
            };
            let (reason, message) = match &refused {
                Some(e) => (ROUTE_CONFLICT, route_conflict_message(e)),
                None => ("Idle", NO_RUN.to_string()),
            };
            let changed = no_run && status.message.as_deref() != Some(message.as_str());
            if changed
                || is_invalid_marked(&status)
                || status.conditions.is_empty()
                || status.phase.is_none()
                // A spec edited while at rest is observed too (kstatus:
                // `kubectl wait`, Flux and Argo CD wait for it).
                || status.observed_generation != generation
            {
                store
                    .update(|s| {
                        if no_run {
                            set_no_run(s, generation, reason, &message);
                        } else {
                            set_idle(s, generation, "Idle", NO_RUN);
                        }
                    })
                    .await?;
                if changed && refused.is_some() {
                    store
                        .event(true, ROUTE_CONFLICT, "CheckRoute", &message)
                        .await;
                }
            }
            if refused.is_some() {
                // Looked at again: the hand-over does not change the Rollout.
                return Ok(Action::requeue(CLAIM_CHECK));
            }
        }
        return Ok(Action::await_change());
    }
    let in_progress = matches!(
        phase,
        Some(Phase::Initializing | Phase::Progressing | Phase::Paused)
    );
    let ours = status.canary_template_hash.as_deref() == Some(template.as_str());
    if ours && phase == Some(Phase::RolledBack) {
        // Rolled back: waits for git's template to be fixed or reverted.
        if !is_invalid_marked(&status) && status.observed_generation != generation {
            // A spec edited meanwhile is observed (kstatus).
            store
                .update(|s| {
                    s.observed_generation = generation;
                    for c in &mut s.conditions {
                        c.observed_generation = generation;
                    }
                })
                .await?;
        }
        if is_invalid_marked(&status) {
            store
                .update(|s| {
                    set_run_conditions(
                        s,
                        Phase::RolledBack,
                        s.message.clone().unwrap_or_default().as_str(),
                        generation,
                    )
                })
                .await?;
        }
        return Ok(Action::await_change());
    }
    let mut setup = setup;
    let record = if ours && in_progress {
        // The run keeps the plan it started with: its step index means
        // nothing in steps edited since.
        match resumed_setup(r, &status, (setup, target.clone())) {
            Ok((kept, _)) => setup = kept,
            Err(why) => {
                abandon(&store, &router_for(ctx, &target, &stable), generation, &why).await?;
                return Ok(Action::await_change());
            }
        }
        // Persist, then apply, on resume too: the driver re-applies what
        // the status says, so first a write under the fence proves that
        // status is still the latest and this replica still leads. A
        // replica that lost the Lease in the middle of a reconcile (its
        // connection stalled while another took over and rolled back) gets
        // 409 here and writes nothing to the cluster (outside breaker: it
        // scaled the rolled-back canary up again and re-created its route).
        if !ctx.leads() {
            return Ok(Action::requeue(RETRY));
        }
        store.note(|_| {}).await?;
        tracing::info!(rollout = %key.1, namespace = %key.0, run = status.run.unwrap_or(0), "resuming the run from the Rollout's status");
        store.record().await
    } else {
        let mut record = store.record().await;
        record.run += 1;
        record.stable_version = status
            .stable_version
            .clone()
            .unwrap_or_else(|| setup.stable_version.clone());
        record.canary_version = Some(version_of(&main_image(&stable)));
        record.state = State::new(time::now());
        record.last_verdict = None;
        tracing::info!(rollout = %key.1, namespace = %key.0, run = record.run, canary = record.canary_version.as_deref().unwrap_or("-"), "a new pod template: run starts");
        store.begin_run(record, &template, &steps_text(r)).await?
    };
    let router = router_for(ctx, &target, &stable);
    let analysis = (setup.analysis)(None);
    let (driver, handle) = Driver::new(
        setup.plan.clone(),
        store.clone(),
        record,
        router.clone(),
        analysis,
    );
    let driver = driver
        .with_notifier(Notifier::start(setup.notifications.clone()), None)
        .with_pre_rollout(setup.pre_rollout.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driver.run(async move {
        let _ = stopped.await;
    }));
    if let Ok(mut runs) = ctx.runs.lock() {
        runs.insert(
            key,
            Run {
                template,
                router,
                handle,
                stop: Some(stop),
                task,
            },
        );
    }
    Ok(Action::requeue(RUN_CHECK))
}

/// The GitOps router for the run's canary (the stable's current template).
fn router_for(ctx: &Ctx, target: &KubeTarget, stable: &Deployment) -> Arc<KubernetesRouter> {
    let mut target = target.clone();
    target.canary_version = version_of(&main_image(stable));
    Arc::new(
        KubernetesRouter::new(ctx.client.clone(), target)
            .gitops()
            .with_wait(ctx.options.rollout_poll, ctx.options.rollout_timeout),
    )
}

/// A run's driver ended: promoted (its template is now the running one) or
/// rolled back (canary retired; the stable stays paused).
async fn finish(
    store: &StatusStore,
    run: Option<Run>,
    generation: Option<i64>,
) -> Result<(), ReconcileError> {
    let Some(run) = run else { return Ok(()) };
    store.forget_problem();
    let ended = match run.task.await {
        Ok(Ok(record)) => record,
        Ok(Err(e)) => {
            tracing::error!(rollout = %store.name(), "the run's driver stopped: {e}");
            return Ok(());
        }
        Err(e) => {
            tracing::error!(rollout = %store.name(), "the run's driver task failed: {e}");
            return Ok(());
        }
    };
    match ended.state.phase {
        Phase::Succeeded => {
            store
                .update(|s| {
                    s.template_hash = s.canary_template_hash.clone();
                    set_idle(
                        s,
                        generation,
                        "Succeeded",
                        "the run promoted; its template is the running one",
                    );
                })
                .await?;
        }
        Phase::RolledBack => {
            // Weight 0 is in force (the driver's end); the canary goes to 0 too.
            run.router.cleanup().await?;
        }
        _ => {}
    }
    Ok(())
}

/// The message of a Rollout whose pod template git put back to the running one.
const REVERTED: &str = "the pod template is back to the running one: no run, nothing rolled out (the last run is in lastRun)";

/// Ends a run without a rollback alarm: git's template is back to the
/// running one (`back`), or a newer template replaces it.
async fn end_quietly(
    store: &StatusStore,
    run: Option<Run>,
    generation: Option<i64>,
    back: bool,
) -> Result<(), ReconcileError> {
    let Some(mut run) = run else { return Ok(()) };
    if let Some(stop) = run.stop.take() {
        let _ = stop.send(());
    }
    let _ = (&mut run.task).await;
    store.forget_problem();
    run.router.cleanup().await?;
    let why = if back {
        REVERTED
    } else {
        "a newer pod template replaced the run's: the run ended, the next one starts"
    };
    tracing::info!(rollout = %store.name(), "{why}");
    store
        .update(|s| {
            if let Some(st) = &mut s.state {
                st.weight_hundredths = 0;
            }
            set_no_run(s, generation, "RunEnded", why);
        })
        .await?;
    store.event(false, "RunEnded", "EndRun", why).await;
    Ok(())
}

/// The Rollout is being deleted: its run stops, traffic goes back to
/// stable and the canary to 0 replicas; then the finalizer goes.
async fn cleanup(r: &Rollout, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let key = key_of(r);
    let had_run = if let Some(mut run) = ctx.take_run(&key) {
        if let Some(stop) = run.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut run.task).await;
        tracing::info!(rollout = %key.1, namespace = %key.0, "Rollout deleted: its run stopped (nothing more is decided for it)");
        true
    } else {
        false
    };
    let Ok((_, target)) = setup_of(r) else {
        ctx.stores.lock().await.remove(&key);
        tracing::info!(rollout = %key.1, namespace = %key.0, "Rollout deleted (its spec was invalid: nothing of it was in force)");
        return Ok(Action::await_change());
    };
    if let Some(other) = claimant(ctx, r, &target).await? {
        // Another Rollout manages the Deployment: nothing of it is touched.
        ctx.stores.lock().await.remove(&key);
        tracing::info!(rollout = %key.1, namespace = %key.0, "Rollout deleted; Deployment {}/{} left to Rollout {}/{}, which manages it", target.namespace, target.deployment, other.0, other.1);
        return Ok(Action::await_change());
    }
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let what = format!("Deployment {}/{}", target.namespace, target.deployment);
    match deployments.get_opt(&target.deployment).await {
        Ok(Some(stable)) => {
            router_for(ctx, &target, &stable).cleanup().await?;
            let running = r.status.as_ref().and_then(|s| s.template_hash.clone());
            if running.as_deref() == Some(template_hash(&stable.spec.template).as_str()) {
                release_paused(&ctx.client, &target.namespace, &target.deployment).await?;
                tracing::info!(rollout = %key.1, namespace = %key.0, "Rollout deleted: traffic on stable, canary at 0 replicas, {what} no longer paused by serin");
            } else {
                tracing::warn!(rollout = %key.1, namespace = %key.0, had_run, "Rollout deleted: traffic on stable, canary at 0 replicas; {what} stays paused: its pod template (git's) was never promoted. Revert it in git, or roll it out unguarded with `kubectl -n {} rollout resume deployment/{}`", target.namespace, target.deployment);
            }
        }
        Ok(None) => {
            tracing::info!(rollout = %key.1, namespace = %key.0, "Rollout deleted; {what} is gone");
        }
        Err(e) => return Err(ReconcileError(format!("{what}: {e}"))),
    }
    ctx.stores.lock().await.remove(&key);
    Ok(Action::await_change())
}

/// Answers the operator's request on `r` (the `serin.dev/request`
/// annotation) that status has not answered yet: handed to the run's
/// driver as the same command the CLI gives a daemon, and answered in
/// `status.lastRequest` with an Event. Too old, malformed, or with no run
/// to act on: refused, saying why.
/// Hands `req` to the run's driver. The decision's write carries the
/// request's id (a provisional answer): a controller killed before the
/// real answer is written is never followed by one acting on the request
/// again.
async fn acted_on(
    store: &StatusStore,
    handle: &Handle,
    req: &Request,
    at: &str,
) -> Result<RolloutRecord, DriverError> {
    store.set_acting_on(Some(req.answer(
        true,
        requests::ACTED_UNANSWERED,
        at.to_string(),
    )));
    let result = handle.command(input_of(req)).await;
    store.set_acting_on(None);
    result
}

async fn answer_request(
    r: &Rollout,
    ctx: &Ctx,
    store: &StatusStore,
    key: &Key,
) -> Result<(), ReconcileError> {
    let place = format!("Rollout {}/{}", key.0, key.1);
    let annotation = r
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUEST_ANNOTATION))
        .map(String::as_str);
    let status = store.status().await;
    let Some(pending) = requests::pending(annotation, status.last_request.as_ref(), &place) else {
        return Ok(());
    };
    let now = time::now();
    let at = time::rfc3339(now);
    let answer = match pending {
        Err((id, e)) => Answer {
            id: id.unwrap_or_default(),
            action: "unknown".into(),
            by: "unknown".into(),
            accepted: false,
            message: e.to_string(),
            at,
        },
        Ok(req) if req.expired(now) => {
            let age = Duration::from_secs(now.0.saturating_sub(req.at_millis) / 1000);
            req.answer(
                false,
                format!(
                    "expired: asked {} ago, more than {} before a controller saw it; not acted on",
                    time::human(age),
                    time::human(requests::REQUEST_TTL)
                ),
                at,
            )
        }
        Ok(req) => match ctx.handle(key) {
            None => req.answer(
                false,
                "no run in progress: nothing to act on (a run starts when git changes the stable Deployment's pod template)",
                at,
            ),
            Some(handle) => match acted_on(store, &handle, &req, &at).await {
                Ok(record) => {
                    let mut message = done_message(&req, &record);
                    // What was decided is not always in force yet (a route
                    // another manager holds): the answer says so.
                    // (The driver publishes its health just after it answers:
                    // looked at for up to a second.)
                    let mut health = handle.health();
                    for _ in 0..20 {
                        if health.weight_in_force == Some(record.state.weight) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        health = handle.health();
                    }
                    if health.weight_in_force != Some(record.state.weight) {
                        let now = health
                            .weight_in_force
                            .map_or("unknown".to_string(), |w| format!("{w} %"));
                        message.push_str(&format!(
                            " decided, NOT in force yet (the canary's weight in force: {now}{}); status.notInForce says when it is",
                            health
                                .router_error
                                .as_deref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        ));
                    }
                    req.answer(true, message, at)
                }
                Err(e) => req.answer(false, e.to_string(), at),
            },
        },
    };
    tracing::info!(rollout = %key.1, namespace = %key.0, action = %answer.action, by = %answer.by, accepted = answer.accepted, "operator request: {}", answer.message);
    let note = format!(
        "{} by {}: {} ({})",
        answer.action,
        answer.by,
        if answer.accepted { "done" } else { "refused" },
        answer.message
    );
    let warning = !answer.accepted;
    store
        .note(|s| s.last_request = Some(answer))
        .await
        .map_err(|e| ReconcileError(format!("{place}: recording the answer to a request: {e}")))?;
    store
        .event(warning, "OperatorRequest", "Request", &note)
        .await;
    Ok(())
}

/// The machine's input for a request (the CLI's, as from `serin ACTION`).
fn input_of(req: &Request) -> Input {
    let by = crate::rollout::Actor::Cli;
    match req.action {
        Asked::Promote => Input::Promote { full: req.full, by },
        Asked::Rollback => Input::Rollback(crate::rollout::Stop::Operator(by)),
        Asked::Pause => Input::Pause { by },
        Asked::Resume => Input::Resume { by },
        Asked::Traffic => Input::SetWeight {
            // Checked when the request was read (`Request::parse`).
            weight: req
                .weight
                .and_then(|w| serin_proxy::Weight::from_percent(w).ok())
                .unwrap_or(serin_proxy::Weight::ZERO),
            by,
        },
    }
}

/// What an accepted request did, as status then says it.
fn done_message(req: &Request, record: &RolloutRecord) -> String {
    let state = &record.state;
    format!(
        "{}; now {}, canary weight {} %",
        match req.action {
            Asked::Promote if req.full => "promoted fully".to_string(),
            Asked::Promote => "pause ended".to_string(),
            Asked::Rollback => "rolled back: all traffic on stable".to_string(),
            Asked::Pause => "paused".to_string(),
            Asked::Resume => "resumed".to_string(),
            Asked::Traffic => "canary weight set by hand, automation held (analysis \
                               continues; a failing verdict still rolls back)"
                .to_string(),
        },
        state.phase.as_str(),
        state.weight
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_reconcile_backs_off_up_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [3, 6, 12, 24, 48, 60, 60, 60]);
        assert_eq!(retry_after(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn a_refused_weight_is_not_in_force_and_a_conflict_needs_a_person() {
        let w = serin_proxy::Weight::from_percent(20.0).unwrap();
        let waiting = Health {
            weight_in_force: Some(serin_proxy::Weight::ZERO),
            weight_pending: Some(w),
            ..Health::default()
        };
        assert_eq!(
            problem_of(Phase::Progressing, &waiting, None),
            None,
            "being applied"
        );
        let conflict = Error::conflict("VirtualService shop/checkout: conflict, not forced");
        let refused = Health {
            router_error: Some(conflict.to_string()),
            ..waiting.clone()
        };
        let p = problem_of(Phase::Progressing, &refused, Some(&conflict)).unwrap();
        assert_eq!(
            p.sentences,
            [
                "weight 20 % not applied yet: VirtualService shop/checkout: conflict, not forced (canary still at 0 %)"
            ]
        );
        assert!(p.stalled);
        assert_eq!(p.reason, "Conflict");
        let pods = Error::unavailable("canary Deployment shop/checkout-canary 1/4 ready");
        let slow = Health {
            router_error: Some(pods.to_string()),
            ..waiting.clone()
        };
        let p = problem_of(Phase::Progressing, &slow, Some(&pods)).unwrap();
        assert!(!p.stalled);
        assert_eq!(p.reason, "NotInForce");
        // Initializing: a route serin must not take over stops the run.
        let theirs = Error::conflict("HTTPRoute shop/checkout exists and was not created by serin");
        let p = problem_of(Phase::Initializing, &Health::default(), Some(&theirs)).unwrap();
        assert!(p.stalled);
        assert!(p.sentences[0].contains("was not created by serin"), "{p:?}");
        let p = problem_of(Phase::Initializing, &Health::default(), Some(&pods));
        assert_eq!(p, None, "waiting for pods is a wait");
    }

    #[test]
    fn an_idle_rollout_after_a_revert_has_no_canary_and_keeps_the_last_run_aside() {
        let mut s = RolloutStatus {
            phase: Some("RolledBack".into()),
            run: Some(2),
            step: Some(2),
            weight: Some(0.0),
            canary_version: Some("v1.3.0".into()),
            last_verdict: Some("fail".into()),
            last_reason: Some("error rate 30 % > 5 %".into()),
            message: Some(format!(
                "error rate 30 % > 5 %; {}",
                super::super::status::FIX_OR_REVERT
            )),
            ..RolloutStatus::default()
        };
        set_no_run(&mut s, Some(4), "Idle", REVERTED);
        assert_eq!(s.phase.as_deref(), Some(IDLE));
        assert_eq!(
            (s.canary_version, s.weight, s.last_verdict),
            (None, None, None)
        );
        assert_eq!(s.message.as_deref(), Some(REVERTED));
        let last = s.last_run.as_deref().unwrap();
        assert!(last.starts_with("run 2 rolled back: error rate"), "{last}");
        // Not the advice of the rollback, which the revert followed.
        assert!(!last.contains("must be fixed"), "{last}");
        assert!(
            last.ends_with("was then reverted to the running one"),
            "{last}"
        );
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn versions_come_from_tags_or_digests() {
        assert_eq!(version_of("registry:5000/shop/checkout:v1.2.0"), "v1.2.0");
        assert_eq!(version_of("checkout"), "checkout");
        assert_eq!(version_of("checkout@sha256:ab"), "sha256:ab");
    }

    #[test]
    fn the_template_hash_follows_the_template() {
        let mut t = PodTemplateSpec::default();
        let a = template_hash(&t);
        assert_eq!(a, template_hash(&t.clone()));
        t.metadata = Some(Default::default());
        t.metadata.as_mut().unwrap().labels = Some([("a".to_string(), "b".to_string())].into());
        assert_ne!(a, template_hash(&t));
    }
}
