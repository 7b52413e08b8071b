//! The JSON the API speaks, shared by the daemon and the client commands.
//! Field names are the SPEC's (`lastVerdict.reason`, `metrics.canary.p95Ms`, ...).

use serde::{Deserialize, Serialize};

/// A rollout's status object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The rollout's name.
    pub name: String,
    /// `Initializing`, `Progressing`, `Paused`, `Succeeded` or `RolledBack`.
    pub phase: String,
    /// Index of the current step (0-based); equals `steps` once past the last.
    pub step: usize,
    /// How many steps the plan has.
    pub steps: usize,
    /// The canary weight in percent.
    pub weight: f64,
    /// What the rollout waits for, or why it ended.
    pub reason: String,
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
    /// Per-version figures.
    pub metrics: Option<Metrics>,
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

/// Both versions' figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Stable.
    pub stable: VersionMetrics,
    /// Canary.
    pub canary: VersionMetrics,
}

/// One version's figures since its proxy started.
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
