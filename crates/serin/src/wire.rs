//! The JSON the API speaks, shared by the daemon (which makes it), the API
//! (which sends it) and the client commands (which read it): below all three.
//! Field names are the SPEC's (`lastVerdict.reason`, `metrics.canary.p95Ms`, ...).

use serde::{Deserialize, Serialize};
use serin_proxy::Weight;

use crate::controller::driver::Health;
use crate::rollout::{Breach, Outcome, Phase};
use crate::store::RolloutRecord;

/// The step number shown for the step at `index` (0-based) of a plan of
/// `steps`: counted from 1, and `steps` once past the last.
pub fn step_number(index: usize, steps: usize) -> usize {
    (index + 1).min(steps)
}

/// A rollout's status object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The rollout's name.
    pub name: String,
    /// `Initializing`, `Progressing`, `Paused`, `Succeeded` or `RolledBack`.
    pub phase: String,
    /// The current step, counted from 1 like every step number serin
    /// shows (text and JSON alike); equals `steps` once past the last
    /// (0 only when the plan is not known).
    pub step: usize,
    /// How many steps the plan has.
    pub steps: usize,
    /// The canary weight in percent, as decided (and stored).
    pub weight: f64,
    /// The canary weight the data plane really serves, as far as this
    /// process knows (null when it does not: nothing applied yet, or the
    /// rollout's data plane does not run here). It differs from `weight`
    /// while a change is refused (e.g. `nginx -t` fails) or being applied.
    #[serde(default)]
    pub weight_in_force: Option<f64>,
    /// What the record says that is not in force, one sentence each
    /// (`rollback not applied yet: nginx -t: …`, `state not written yet: …`);
    /// empty when everything is. `reason` begins with the same sentences.
    #[serde(default)]
    pub not_in_force: Vec<String>,
    /// What the rollout waits for, or why it ended.
    pub reason: String,
    /// The current (or last) run: 1, 2, 3 ... per rollout name; 0 before
    /// the first deploy.
    #[serde(default)]
    pub run: u32,
    /// How the run ended, once it has (null while it runs).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Who holds a `Paused` rollout: `step` (a `pause: {}` step, which only
    /// `promote` ends) or `operator` (`serin pause`/`traffic`, which `resume`
    /// ends too); null when not paused.
    pub paused_by: Option<String>,
    /// The stable version.
    pub stable: VersionRef,
    /// The canary version (`version` is null when none is deployed).
    pub canary: VersionRef,
    /// The last verdict.
    pub last_verdict: Option<LastVerdict>,
    /// The latest "would have rolled back" of this run (advisory mode, or
    /// an advisory check that failed): null when the judge never would have.
    #[serde(default)]
    pub would_roll_back: Option<WouldRollBack>,
    /// The canary's observed share of requests against the weight asked
    /// for, as the last verdict tested it (null before it was tested).
    #[serde(default)]
    pub split: Option<Split>,
    /// Per-version figures of this run: since its deploy (or since its data
    /// plane last started, if later); `serin run`'s proxy starts with its run.
    pub metrics: Option<Metrics>,
    /// The address of serin's built-in proxy while it runs here: the
    /// service's address, which stops answering when the rollout is cleaned
    /// up (absent for nginx and Kubernetes, which keep serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
}

impl RolloutStatus {
    /// Adds what the driver says is really in force: `weightInForce`, and
    /// for everything the record claims that is not in force a sentence in
    /// `notInForce`, also put before `reason`.
    pub fn with_health(mut self, record: &RolloutRecord, health: &Health) -> RolloutStatus {
        if let Some(w) = health.weight_in_force {
            self.weight_in_force = Some(w.percent());
        }
        self.not_in_force = not_in_force(record.state.phase, health);
        if !self.not_in_force.is_empty() {
            self.reason = format!("{}; {}", self.not_in_force.join("; "), self.reason);
        }
        self
    }
}

/// One sentence for each thing a rollout in `phase` claims that `health`
/// says is not in force (empty when everything is).
pub fn not_in_force(phase: Phase, health: &Health) -> Vec<String> {
    let why = |what: String| match &health.router_error {
        Some(e) => format!("{what} not applied yet: {e}"),
        None => format!("{what} not applied yet (being applied)"),
    };
    let mut out = Vec::new();
    if health.promotion_pending {
        out.push(why("promotion".into()));
    } else if let Some(w) = health.weight_pending {
        let still = health
            .weight_in_force
            .map(|f| format!(" (canary still at {f} %)"))
            .unwrap_or_default();
        let what = if w == Weight::ZERO && phase == Phase::RolledBack {
            "rollback".to_string()
        } else {
            format!("weight {w} %")
        };
        out.push(format!("{}{still}", why(what)));
    }
    if let Some(e) = &health.store_error {
        out.push(format!("state not written yet: {e}"));
    } else if health.unsaved {
        out.push("state not written yet (being written)".to_string());
    }
    out
}

/// A version's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRef {
    /// The version, e.g. `v1.2.0`.
    pub version: Option<String>,
}

/// The last verdict with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastVerdict {
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// Why, with the numbers.
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
}

/// A moment the judge would have rolled back, had the rollout (or the
/// check) not been advisory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WouldRollBack {
    /// Why, with the numbers ("would have rolled back: canary error rate ...").
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
}

/// The split the judge saw: requested weight against observed share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// The canary weight asked for, in percent.
    pub requested: f64,
    /// The canary's share of the requests the weight decided, in percent.
    pub observed: f64,
    /// The observed share is clearly far from the requested weight (the
    /// routing did not take effect): the step is held.
    pub mismatch: bool,
    /// The numbers, e.g. "canary got 0.4 % of requests (12/3 000), 5 % requested".
    pub reason: String,
}

impl From<&crate::rollout::SplitSeen> for Split {
    fn from(s: &crate::rollout::SplitSeen) -> Split {
        Split {
            requested: s.requested,
            observed: s.observed,
            mismatch: s.mismatch,
            reason: s.reason.clone(),
        }
    }
}

/// Every version's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// What the figures count: [`THIS_RUN`], or since when when that is
    /// not the whole run (the data plane started again after the run did).
    #[serde(default)]
    pub window: String,
    /// Stable.
    pub stable: VersionMetrics,
    /// Canary.
    pub canary: VersionMetrics,
    /// The baseline (the stable's version started fresh beside the canary),
    /// only when the rollout has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<VersionMetrics>,
    /// The version the `stable` figures are of: the run's stable, which
    /// after a promotion is no longer the rollout's stable.
    #[serde(
        rename = "stableVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stable_version: Option<String>,
    /// The version the `canary` figures are of (after a promotion, the
    /// rollout's stable now).
    #[serde(
        rename = "canaryVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub canary_version: Option<String>,
}

/// The window of figures counted from the run's deploy.
pub const THIS_RUN: &str = "this run";

/// One version's figures over the status's window (see `metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionMetrics {
    /// Requests answered.
    pub requests: u64,
    /// Of which errors.
    pub errors: u64,
    /// Errors per request (0–1), null without requests.
    pub error_rate: Option<f64>,
    /// Median latency.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
}

/// `POST /api/v1/rollouts/{name}/deploy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The canary version.
    pub version: String,
    /// The canary's upstream, if it differs from the rollout file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// `POST /api/v1/rollouts/{name}/promote`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Skip every remaining step.
    #[serde(default)]
    pub full: bool,
}

/// `POST /api/v1/rollouts/{name}/rollback`: `{}` (an operator), or the
/// breach of `serin monitor --auto-rollback` that asks for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The monitor's breach: its metric, threshold and value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breach: Option<Breach>,
}

/// `PUT /api/v1/rollouts/{name}/weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    /// The canary weight in percent (0–100, two decimals).
    pub weight: f64,
}

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what was expected.
    pub error: String,
}

/// One decision, as `GET /api/v1/rollouts/{name}/events` lists it.
pub type Event = crate::report::TimelineEntry;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_its_would_roll_back_split_and_baseline_fields_in_camel_case() {
        let seen = crate::rollout::SplitSeen {
            mismatch: true,
            reason: "canary got 0.4 % of requests (12/3000), 5 % requested".into(),
            requested: 5.0,
            observed: 0.4,
        };
        let split = Split::from(&seen);
        let metrics = Metrics {
            window: THIS_RUN.into(),
            stable: VersionMetrics::default(),
            canary: VersionMetrics::default(),
            baseline: Some(VersionMetrics {
                requests: 7,
                ..VersionMetrics::default()
            }),
            stable_version: Some("v1".into()),
            canary_version: None,
        };
        let json = serde_json::json!({
            "wouldRollBack": WouldRollBack { reason: "would have rolled back: x".into(), at: "t".into() },
            "split": split,
            "metrics": metrics,
        });
        assert_eq!(json["split"]["observed"], 0.4);
        assert_eq!(json["split"]["mismatch"], true);
        assert_eq!(json["metrics"]["baseline"]["requests"], 7);
        assert_eq!(json["metrics"]["stableVersion"], "v1");
        assert!(json["metrics"].get("canaryVersion").is_none(), "{json}");
        let without = serde_json::to_value(Metrics {
            baseline: None,
            ..metrics
        })
        .unwrap();
        assert!(without.get("baseline").is_none(), "{without}");
    }
}
