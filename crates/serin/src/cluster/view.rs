//! The cluster's Rollouts as every replica of `serin serve --kubernetes`
//! sees them, leader or not: read-only, for the daemon's API
//! (`GET /api/v1/kubernetes/rollouts[/{namespace}/{name}]`), its dashboard
//! and `/metrics`.
//!
//! A kube-runtime reflector keeps the Rollouts of the controller's scope
//! (one namespace, or all) in memory; its watcher relists after a
//! `410 Gone` and the store is replaced whole by the relist, so nothing is
//! lost. The Rollouts are read without their spec's types (as
//! `serin status --kubernetes` reads them): a Rollout whose spec this
//! version of serin cannot read is still shown. The Lease `serin` is read
//! every 2 s to say which replica leads. Nothing here writes to
//! the cluster.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::requests::Answer;
use super::resource::{
    Condition, IDLE, INVALID_SPEC, RecentDecision, Rollout, RolloutSpec, RolloutStatus,
};
use crate::error::{Error, Kind};
use crate::rollout::Phase;

/// The phase of a Rollout no controller has written a status for yet.
pub const NOT_SEEN: &str = "NotSeen";

/// How often the Lease is read to say who leads.
const LEASE_READ: std::time::Duration = std::time::Duration::from_secs(2);

/// How long one read of the Lease may take before it counts as no answer
/// (the client's own read timeout is minutes).
const LEASE_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(4);

/// After how long without any answer from the API server the view says it
/// is stale (`watchError`) and no longer names a leader: three Lease reads
/// missed. The Lease read is the view's probe: an idle watch says nothing
/// for as long as nothing changes, a hung one for minutes.
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(6);

/// Which replica leads, and whether this one does.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControllerView {
    /// The Lease's holder identity (`None`: nobody holds it, or it was not
    /// read yet).
    pub leader: Option<String>,
    /// This replica's identity (`$POD_NAME`, else host name and pid).
    pub this_replica: String,
    /// Whether this replica leads now (the only one that acts).
    pub leads: bool,
}

/// The canary a Rollout's run rolls out.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct CanaryView {
    /// Its version (the image's tag), while a run goes or after it ended.
    pub version: Option<String>,
    /// Its image, when the Rollout's spec names one (in the GitOps mode the
    /// canary runs git's new pod template: the stable Deployment's).
    pub image: Option<String>,
}

/// One Rollout as its status says, read-only.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Idle, InvalidSpec, Initializing, Progressing, Paused, Succeeded,
    /// RolledBack; NotSeen before a controller wrote its status.
    pub phase: String,
    /// The run's number, from 1.
    pub run: Option<u64>,
    /// The step in force, from 1.
    pub step: Option<u32>,
    /// How many steps its plan has (its spec checked as the controller
    /// checks it); `None` when the spec does not pass.
    pub steps: Option<usize>,
    /// The canary's share of traffic, in percent.
    pub weight: Option<f64>,
    /// Whether the status is in force: a controller wrote it and nothing
    /// it decided is waiting to be applied (`notInForce` empty).
    pub in_force: bool,
    /// What is decided but not in force, one sentence each.
    pub not_in_force: Vec<String>,
    /// The stable version.
    pub stable_version: Option<String>,
    /// The canary.
    pub canary: CanaryView,
    /// The last verdict: pass, fail, inconclusive or no data.
    pub last_verdict: Option<String>,
    /// Why the last verdict is what it is.
    pub last_reason: Option<String>,
    /// Why the Rollout is where it is, in one line (the REASON column).
    pub reason: Option<String>,
    /// What the run waits for, or why it ended.
    pub message: Option<String>,
    /// How the last run ended, once the Rollout is idle again.
    pub last_run: Option<String>,
    /// Ready, Reconciling and Stalled.
    pub conditions: Vec<Condition>,
    /// The run's most recent decisions, oldest first.
    pub decisions: Vec<RecentDecision>,
    /// The controller's answer to the last operator request.
    pub last_request: Option<Answer>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The generation the status describes.
    pub observed_generation: Option<i64>,
    /// Which replica leads (in the answer for one Rollout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<ControllerView>,
}

/// Every Rollout this replica watches.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutList {
    /// Which replica leads.
    pub controller: ControllerView,
    /// The one namespace watched (`None`: all).
    pub namespace: Option<String>,
    /// The last error of the watch, while it has not recovered (the list
    /// is then what was seen last).
    pub watch_error: Option<String>,
    /// The Rollouts, by namespace and name.
    pub rollouts: Vec<RolloutView>,
}

/// The problem of a view whose reads are not answered at all.
const NO_ANSWER: &str = "no answer from the API server";

/// What the Lease reads say: its holder, when the API server last
/// answered, and what went wrong since.
#[derive(Debug)]
struct LeaseRead {
    holder: Option<String>,
    answered: tokio::time::Instant,
    problem: Option<String>,
}

impl LeaseRead {
    /// The holder, unless the API server has not answered for
    /// [`STALE_AFTER`] or the last read failed (unknown: `None`).
    fn holder(&self) -> Option<String> {
        if self.problem.is_some() {
            return None;
        }
        self.holder.clone()
    }

    /// Why the view may be stale, if it may.
    fn stale(&self) -> Option<String> {
        let quiet = self.answered.elapsed().as_secs();
        self.problem.as_ref().map(|p| {
            if p == NO_ANSWER {
                format!("{NO_ANSWER} for {quiet}s (the Rollouts shown are as last seen)")
            } else {
                format!(
                    "{p} (the API server last answered {quiet}s ago; the Rollouts shown are as last seen)"
                )
            }
        })
    }
}

struct Inner {
    rollouts: Store<DynamicObject>,
    lease: Arc<Mutex<LeaseRead>>,
    namespace: Option<String>,
    identity: String,
    leading: watch::Receiver<bool>,
    synced: watch::Receiver<bool>,
    error: Arc<Mutex<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The read-only view (cheap to clone; its watches stop with the last clone).
#[derive(Clone)]
pub struct ClusterView(Arc<Inner>);

/// Where the view looks.
pub struct ViewOptions {
    /// One namespace (as the controller's `--namespace`), or all.
    pub namespace: Option<String>,
    /// The Lease's namespace and name.
    pub lease: (String, String),
    /// This replica's identity.
    pub identity: String,
    /// Whether this replica leads.
    pub leading: watch::Receiver<bool>,
    /// Seconds one watch request lasts.
    pub watch_timeout: u32,
}

impl ClusterView {
    /// Starts watching (tasks on the current tokio runtime).
    pub fn start(client: kube::Client, options: ViewOptions) -> ClusterView {
        let resource = ApiResource::erase::<Rollout>(&());
        let api: Api<DynamicObject> = match &options.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let config = watcher::Config::default().timeout(options.watch_timeout);
        let writer = reflector::store::Writer::new(resource);
        let rollouts = writer.as_reader();
        let error = Arc::new(Mutex::new(None::<String>));
        let (synced_tx, synced) = watch::channel(false);
        let said = error.clone();
        let rollout_task = tokio::spawn(async move {
            let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let mut last = said.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(e) => {
                        if matches!(e, watcher::Event::InitDone) {
                            synced_tx.send_replace(true);
                        }
                        if last.take().is_some() {
                            tracing::info!("the view of the cluster's Rollouts watches again");
                        }
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if last.as_deref() != Some(&text) {
                            tracing::warn!("watching the cluster's Rollouts (for the API): {text}");
                        }
                        *last = Some(text);
                    }
                }
            }
        });
        // Read, not watched: RBAC grants get on the Lease (not list and
        // watch), and who leads changes at most every few seconds.
        let (lease_ns, lease_name) = options.lease;
        let leases: Api<Lease> = Api::namespaced(client, &lease_ns);
        let lease = Arc::new(Mutex::new(LeaseRead {
            holder: None,
            answered: tokio::time::Instant::now(),
            problem: None,
        }));
        let written = lease.clone();
        let lease_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEASE_READ);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let read =
                    tokio::time::timeout(LEASE_READ_LIMIT, leases.get_opt(&lease_name)).await;
                let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
                match read {
                    Ok(Ok(lease)) => {
                        w.holder = lease
                            .and_then(|l| l.spec)
                            .and_then(|s| s.holder_identity)
                            .filter(|h| !h.is_empty());
                        w.answered = tokio::time::Instant::now();
                        if w.problem.take().is_some() {
                            tracing::info!("the API server answers the view's reads again");
                        }
                    }
                    Ok(Err(e)) => {
                        let text = format!("reading the Lease {lease_ns}/{lease_name} failed: {e}");
                        if w.problem.as_deref() != Some(text.as_str()) {
                            tracing::warn!("{text} (the view no longer names a leader)");
                        }
                        w.problem = Some(text);
                    }
                    Err(_) => {
                        let quiet = w.answered.elapsed();
                        if quiet >= STALE_AFTER {
                            if w.problem.is_none() {
                                tracing::warn!(
                                    "no answer from the API server for {}s: the view of the cluster's Rollouts may be stale and names no leader",
                                    quiet.as_secs()
                                );
                            }
                            w.problem = Some(NO_ANSWER.to_string());
                        }
                    }
                }
            }
        });
        ClusterView(Arc::new(Inner {
            rollouts,
            lease,
            namespace: options.namespace,
            identity: options.identity,
            leading: options.leading,
            synced,
            error,
            tasks: vec![rollout_task, lease_task],
        }))
    }

    /// Which replica leads, and whether this one does. A replica that
    /// leads names itself (it knows before its next read of the Lease);
    /// while the Lease cannot be read, the leader is unknown (`None`).
    pub fn controller(&self) -> ControllerView {
        let leads = *self.0.leading.borrow();
        let leader = if leads {
            Some(self.0.identity.clone())
        } else {
            self.0
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .holder()
        };
        ControllerView {
            leader,
            this_replica: self.0.identity.clone(),
            leads,
        }
    }

    /// The watch's error, else why the view may be stale (the API server
    /// has not answered for [`STALE_AFTER`], or the Lease read fails).
    fn watch_error(&self) -> Option<String> {
        let watch = self.0.error.lock().ok().and_then(|e| e.clone());
        watch.or_else(|| {
            self.0
                .lease
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .stale()
        })
    }

    fn synced(&self) -> Result<(), Error> {
        if *self.0.synced.borrow() {
            return Ok(());
        }
        let why = self
            .0
            .error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        Err(Error::unavailable(format!(
            "the cluster's Rollouts are not listed yet (the first list of the watch has not come back{why}); try again"
        )))
    }

    /// Every Rollout watched, by namespace and name (503 before the
    /// watch's first list came back).
    pub fn list(&self) -> Result<RolloutList, Error> {
        self.synced()?;
        let mut rollouts: Vec<RolloutView> =
            self.0.rollouts.state().iter().map(|r| view_of(r)).collect();
        rollouts.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(RolloutList {
            controller: self.controller(),
            namespace: self.0.namespace.clone(),
            watch_error: self.watch_error(),
            rollouts,
        })
    }

    /// One Rollout (404 naming it when this replica does not see it).
    pub fn one(&self, namespace: &str, name: &str) -> Result<RolloutView, Error> {
        self.synced()?;
        if let Some(own) = &self.0.namespace
            && own != namespace
        {
            return Err(Error::new(
                Kind::NotFound,
                format!(
                    "Rollout {namespace}/{name}: this daemon watches only the Rollouts of namespace {own} (serin serve --kubernetes --namespace {own})"
                ),
            ));
        }
        let found = self.0.rollouts.find(|r| {
            r.metadata.namespace.as_deref() == Some(namespace)
                && r.metadata.name.as_deref() == Some(name)
        });
        let Some(r) = found else {
            return Err(Error::new(
                Kind::NotFound,
                format!(
                    "Rollout {namespace}/{name}: no such Rollout in the cluster (GET /api/v1/kubernetes/rollouts lists them)"
                ),
            ));
        };
        let mut view = view_of(&r);
        view.controller = Some(self.controller());
        Ok(view)
    }

    /// The view's gauges in Prometheus' text format (HELP and TYPE lines,
    /// labels `namespace` and `rollout`): nothing but the leader gauge
    /// before the first list.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let c = self.controller();
        let _ = writeln!(
            out,
            "# HELP serin_kubernetes_leader 1 on the replica that leads (holds the Lease and acts), 0 on the others.\n# TYPE serin_kubernetes_leader gauge\nserin_kubernetes_leader{{identity=\"{}\"}} {}",
            label(&c.this_replica),
            u8::from(c.leads)
        );
        let synced = *self.0.synced.borrow();
        let _ = writeln!(
            out,
            "# HELP serin_kubernetes_rollouts_listed 1 once the watch of the cluster's Rollouts has listed them (the gauges below are then shown).\n# TYPE serin_kubernetes_rollouts_listed gauge\nserin_kubernetes_rollouts_listed {}",
            u8::from(synced)
        );
        let Ok(list) = self.list() else {
            return out;
        };
        let key = |r: &RolloutView| {
            format!(
                "namespace=\"{}\",rollout=\"{}\"",
                label(&r.namespace),
                label(&r.name)
            )
        };
        out.push_str("# HELP serin_kubernetes_rollout_phase The Rollout's phase, as its status says (1 for the current one).\n# TYPE serin_kubernetes_rollout_phase gauge\n");
        let known: Vec<&str> = [IDLE, INVALID_SPEC]
            .into_iter()
            .chain(Phase::ALL.iter().map(|p| p.as_str()))
            .chain([NOT_SEEN])
            .collect();
        for r in &list.rollouts {
            let mut phases = known.clone();
            if !phases.contains(&r.phase.as_str()) {
                phases.push(&r.phase);
            }
            for p in phases {
                let _ = writeln!(
                    out,
                    "serin_kubernetes_rollout_phase{{{},phase=\"{}\"}} {}",
                    key(r),
                    label(p),
                    u8::from(r.phase == p)
                );
            }
        }
        let gauges: [(&str, &str, Gauge); 4] = [
            (
                "serin_kubernetes_rollout_weight",
                "The canary's share of traffic (%) the Rollout's status says (0 when idle; absent when not known).",
                |r| {
                    r.weight
                        .or((r.phase == IDLE || r.phase == INVALID_SPEC).then_some(0.0))
                },
            ),
            (
                "serin_kubernetes_rollout_run",
                "The Rollout's current (or last) run: 1, 2, 3 ...; 0 before its first.",
                |r| Some(r.run.map_or(0.0, |n| n as f64)),
            ),
            (
                "serin_kubernetes_rollout_step",
                "The step in force, from 1 (absent when no run has started).",
                |r| r.step.map(f64::from),
            ),
            (
                "serin_kubernetes_rollout_in_force",
                "1 when the status is in force (a controller wrote it, nothing decided waits to be applied).",
                |r| Some(if r.in_force { 1.0 } else { 0.0 }),
            ),
        ];
        for (metric, help, pick) in gauges {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for r in &list.rollouts {
                if let Some(v) = pick(r) {
                    let _ = writeln!(out, "{metric}{{{}}} {v}", key(r));
                }
            }
        }
        out
    }
}

/// What a gauge shows of one Rollout (absent: `None`).
type Gauge = fn(&RolloutView) -> Option<f64>;

/// A label value escaped for the text format.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The spec, if this version of serin reads it.
fn spec_of(r: &DynamicObject) -> Option<RolloutSpec> {
    serde_json::from_value(r.data.get("spec")?.clone()).ok()
}

/// How many steps the spec's plan has, checked as the controller checks it.
fn steps_of(r: &DynamicObject, spec: Option<RolloutSpec>) -> Option<usize> {
    let mut typed = Rollout::new(r.metadata.name.as_deref().unwrap_or_default(), spec?);
    typed.metadata.namespace = r.metadata.namespace.clone();
    typed.check().ok().map(|c| c.steps.len())
}

/// The reason of a Rollout whose status has fields this version cannot
/// read: the controller does not act on it.
fn unreadable_reason(fields: &[String]) -> String {
    let names: Vec<&str> = fields
        .iter()
        .map(|f| f.split(':').next().unwrap_or(f))
        .collect();
    format!(
        "not controlled: status field(s) {} cannot be read by this serin",
        names.join(", ")
    )
}

/// One Rollout as its status says (field by field: a field that cannot be
/// read is left out, the others shown).
pub fn view_of(r: &DynamicObject) -> RolloutView {
    let s: RolloutStatus = r
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let seen = s.phase.is_some() || !s.conditions.is_empty() || s.observed_generation.is_some();
    let spec = spec_of(r);
    let image = spec
        .as_ref()
        .and_then(|s| s.canary.typed())
        .and_then(|c| c.image.clone());
    let steps = steps_of(r, spec);
    let phase = s
        .phase
        .clone()
        .unwrap_or_else(|| if seen { IDLE } else { NOT_SEEN }.to_string());
    let step = match (s.step, steps) {
        (Some(n), Some(m)) if m > 0 => Some(n.min(u32::try_from(m).unwrap_or(u32::MAX))),
        (n, _) => n,
    };
    RolloutView {
        namespace: r.metadata.namespace.clone().unwrap_or_default(),
        name: r.metadata.name.clone().unwrap_or_default(),
        phase,
        run: s.run,
        step,
        steps,
        weight: s.weight,
        in_force: seen && s.not_in_force.is_empty(),
        not_in_force: s.not_in_force.clone(),
        stable_version: s.stable_version.clone(),
        canary: CanaryView {
            version: s.canary_version.clone(),
            image,
        },
        last_verdict: s.last_verdict.clone(),
        last_reason: s.last_reason.clone(),
        reason: if s.unreadable.is_empty() {
            s.reason.clone().or_else(|| s.summary())
        } else {
            Some(unreadable_reason(&s.unreadable))
        },
        message: s.message.clone(),
        last_run: s.last_run.clone(),
        conditions: s.conditions.clone(),
        decisions: s.decisions.clone(),
        last_request: s.last_request.clone(),
        generation: r.metadata.generation,
        observed_generation: s.observed_generation,
        controller: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
            "metadata": { "name": "checkout", "namespace": "shop", "generation": 3 },
            "spec": {
                "stable": { "version": "v1" }, "canary": { "version": "v2", "image": "r/checkout:v2" },
                "traffic": { "provider": "nginx-ingress",
                    "kubernetes": { "deployment": "checkout", "service": "checkout", "ingress": "checkout" } },
                "steps": [{ "setWeight": 20 }, { "pause": {} }, { "setWeight": 50 }],
                "analysis": { "interval": "1s", "minRequests": 20, "prometheus": {
                    "address": "http://127.0.0.1:9090",
                    "requests": "sum(http_requests_total{version=\"{{version}}\"})",
                    "errors": "sum(http_requests_total{version=\"{{version}}\",code=~\"5..\"})" } }
            },
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_status_reads_as_phase_step_of_steps_weight_and_what_is_not_in_force() {
        let v = view_of(&object(serde_json::json!({
            "phase": "Paused", "run": 2, "step": 2, "weight": 20.0, "canaryVersion": "v2",
            "lastVerdict": "pass", "lastReason": "error rate 0 % <= 1 %",
            "observedGeneration": 2, "notInForce": ["weight 20 % not applied yet: conflict"]
        })));
        assert_eq!(v.phase, "Paused");
        assert_eq!((v.step, v.steps), (Some(2), Some(3)));
        assert_eq!(v.weight, Some(20.0));
        assert!(!v.in_force);
        assert_eq!(v.canary.image.as_deref(), Some("r/checkout:v2"));
        assert_eq!((v.generation, v.observed_generation), (Some(3), Some(2)));
        assert!(v.reason.unwrap().contains("not applied yet"));
        let fresh = view_of(&object(serde_json::json!({})));
        assert_eq!(fresh.phase, NOT_SEEN);
        assert!(!fresh.in_force);
    }

    #[test]
    fn a_spec_this_version_cannot_read_still_shows_its_status() {
        let mut o = object(serde_json::json!({ "phase": "Progressing", "weight": 5.0 }));
        o.data["spec"]["steps"] = serde_json::json!([{ "setWeight": [1, 2] }]);
        let v = view_of(&o);
        assert_eq!(v.phase, "Progressing");
        assert_eq!(v.steps, None);
        assert_eq!(v.weight, Some(5.0));
    }

    #[test]
    fn a_status_field_this_version_cannot_read_hides_only_that_field() {
        let v = view_of(&object(serde_json::json!({
            "phase": "Paused", "run": -1, "step": 2, "weight": 20.0, "canaryVersion": "v2"
        })));
        assert_eq!(v.phase, "Paused");
        assert_eq!(v.run, None);
        assert_eq!((v.step, v.weight), (Some(2), Some(20.0)));
        assert_eq!(v.canary.version.as_deref(), Some("v2"));
        let reason = v.reason.unwrap();
        assert!(
            reason.contains("not controlled") && reason.contains("run"),
            "{reason}"
        );
        let s: RolloutStatus =
            serde_json::from_value(serde_json::json!({ "run": -1, "step": "x", "phase": "Idle" }))
                .unwrap();
        assert_eq!(s.phase.as_deref(), Some("Idle"));
        assert_eq!(s.unreadable.len(), 2, "{:?}", s.unreadable);
        assert!(s.unreadable.iter().any(|f| f.starts_with("run: ")));
        // A readable status round-trips without the marker.
        let ok: RolloutStatus =
            serde_json::from_value(serde_json::json!({ "run": 3, "phase": "Idle" })).unwrap();
        assert!(ok.unreadable.is_empty());
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({ "run": 3, "phase": "Idle" })
        );
    }
}
