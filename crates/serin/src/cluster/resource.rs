//! The `Rollout` custom resource (`rollouts.serin.dev`, namespaced): its
//! `spec` holds exactly the rollout file's fields except `name` (that is
//! `metadata.name`); its `status` is what a controller reports (phase, run,
//! step, weight, the last verdict and its reason, kstatus conditions and
//! the run's recent decisions).
//!
//! These types give the CRD's schema (`deploy/kubernetes/crd.yaml` is
//! generated from them: [`crd_yaml`]) and the typed client. They do not
//! check values: a weight or a limit is kept as written, and
//! [`Rollout::check`] runs the rollout file's own checks on the spec, with
//! messages that name each field (`spec.analysis.errorRate.max: ...`).
//! So the schema types only what the file's syntax fixes (text, booleans,
//! the enumerations); where the file takes a number or text (`setWeight: 5`
//! or `"25%"`), the schema takes any value and serin says what is wrong.

use std::borrow::Cow;

use kube::CustomResource;
use kube::core::crd::CustomResourceExt;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::spec::{self, SpecError};

/// The rollout file without `name`: what to roll out, where, by which
/// steps, judged how (the rollout file's reference: docs/cli.md and
/// examples/).
// Each printer column repeats a key (`type_ = "string"`), which clippy
// takes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "serin.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "sro",
    category = "serin",
    doc = "A canary release run by serin: the rollout file's settings (without name, which is metadata.name) and the state of its current run.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Idle (no run), InvalidSpec, Initializing, Progressing, Paused, Succeeded or RolledBack"
    ),
    printcolumn(
        name = "Run",
        type_ = "integer",
        json_path = ".status.run",
        description = "The run's number (1 for the first release of this Rollout)"
    ),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.step",
        description = "The step in force, from 1"
    ),
    printcolumn(
        name = "Weight",
        type_ = "number",
        json_path = ".status.weight",
        description = "The canary's share of traffic, in percent"
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".status.canaryVersion",
        description = "The version being rolled out"
    ),
    printcolumn(
        name = "Verdict",
        type_ = "string",
        json_path = ".status.lastVerdict",
        description = "The last verdict: pass, fail, inconclusive or no data"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the Rollout is where it is, in one short line (status.message and the conditions say it whole)",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_sides)]
pub struct RolloutSpec {
    /// Fields the spec does not have, kept as written so that
    /// [`Rollout::check`] refuses them by name (an API server that prunes
    /// them never hands them over).
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schemars(skip)]
    pub unknown: serde_json::Map<String, serde_json::Value>,
    /// The version now serving.
    #[serde(default, skip_serializing_if = "Lenient::is_missing")]
    pub stable: Lenient<SideSpec>,
    /// The version being rolled out.
    #[serde(default, skip_serializing_if = "Lenient::is_missing")]
    pub canary: Lenient<SideSpec>,
    /// Where and how the canary's share of traffic is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Lenient<TrafficSpec>>,
    /// The steps, in order (default: 5, 25, 50, 100 % with 60 s pauses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Lenient<Vec<StepSpec>>>,
    /// How verdicts are made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Lenient<AnalysisSpec>>,
    /// Webhooks told of phase changes and failed verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Lenient<Vec<NotificationSpec>>>,
    /// A URL that must answer 2xx before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_rollout: Option<Lenient<WebhookSpec>>,
    /// How long a timed pause may overrun, or a gate stay shut, before the
    /// rollout rolls back, like 30m (none: it waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<Lenient<String>>,
    /// A fresh instance of the stable version given the canary's share,
    /// compared with the canary by the relative checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Lenient<BaselineSpec>>,
}

/// The CRD requires `stable` and `canary` (read leniently: a Rollout
/// without one is refused by [`Rollout::check`], naming it).
fn require_sides(schema: &mut Schema) {
    schema.insert("required".into(), serde_json::json!(["canary", "stable"]));
}

/// A section of the spec as typed, or, when it does not fit its type,
/// kept as written: one malformed Rollout must not make the list of all
/// of them unreadable (the CRD keeps some values as written, and an API
/// server without the CRD's checks keeps anything). [`Rollout::check`]
/// then refuses it naming the field.
#[derive(Clone, Debug, PartialEq)]
pub enum Lenient<T> {
    /// As typed.
    Typed(T),
    /// As written (`Null` when absent).
    Written(serde_json::Value),
}

impl<T> Lenient<T> {
    /// The typed value, when it fits its type.
    pub fn typed(&self) -> Option<&T> {
        match self {
            Lenient::Typed(t) => Some(t),
            Lenient::Written(_) => None,
        }
    }

    /// Absent (not written at all).
    pub fn is_missing(&self) -> bool {
        matches!(self, Lenient::Written(serde_json::Value::Null))
    }
}

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient::Written(serde_json::Value::Null)
    }
}

impl<T> From<T> for Lenient<T> {
    fn from(t: T) -> Self {
        Lenient::Typed(t)
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Typed(t) => t.serialize(s),
            Lenient::Written(v) => v.serialize(s),
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(match T::deserialize(&value) {
            Ok(t) => Lenient::Typed(t),
            Err(_) => Lenient::Written(value),
        })
    }
}

impl<T: JsonSchema> JsonSchema for Lenient<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }

    /// The typed schema: what the CRD admits is what `T` describes.
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        T::json_schema(g)
    }
}

/// `baseline`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BaselineSpec {
    /// http://host:port (builtin and nginx providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

/// A number or text, kept as written and checked by serin (`5`, `12.5`,
/// `"25%"`, `off`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    /// As a number.
    Number(serde_json::Number),
    /// As text.
    Text(String),
    /// What YAML 1.1 readers such as kubectl make of `off` (false) and
    /// `on` (true); serin reads `false` as `off`.
    Switch(bool),
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// A structural schema cannot say "a number or text" (only "an integer
    /// or text"), and weights have decimals: any value is kept, and serin's
    /// check says what it expected.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
    }
}

/// One version of the service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SideSpec {
    /// Its version label, e.g. v1.2.0 (the image tag unless image is given).
    pub version: String,
    /// http://host:port (providers builtin and nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The container image (Kubernetes providers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// The data plane that applies the weight.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderName {
    /// serin's own proxy.
    Builtin,
    /// A real nginx serin writes an include file for.
    Nginx,
    /// Kubernetes NGINX Ingress (canary annotations).
    NginxIngress,
    /// Istio VirtualService weights.
    Istio,
    /// Gateway API HTTPRoute backend weights.
    GatewayApi,
}

/// The `traffic` section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficSpec {
    /// builtin (default), nginx, nginx-ingress, istio or gateway-api.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderName>,
    /// Where the built-in proxy (or nginx's server) listens, like 127.0.0.1:8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Keep a user on one version (builtin and nginx only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// Overrides checked before the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<RouteSpec>>,
    /// provider nginx's settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<NginxSpec>,
    /// The Kubernetes providers' objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSpec>,
}

/// `traffic.sticky`: exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StickySpec {
    /// The cookie that names the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The header that names the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// One override: requests that match go to one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// What the request carries: exactly one of header or cookie.
    #[serde(rename = "match")]
    pub when: MatchSpec,
    /// stable or canary.
    pub version: VersionName,
}

/// A route's match.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// A header with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<NameValueSpec>,
    /// A cookie with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<NameValueSpec>,
}

/// A header's or cookie's name and value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameValueSpec {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// One of the two versions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VersionName {
    /// The version now serving.
    Stable,
    /// The version being rolled out.
    Canary,
}

/// `traffic.nginx`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NginxSpec {
    /// The include file serin owns and rewrites.
    pub include: String,
    /// The configuration test command (default: nginx -t).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// The reload command (default: nginx -s reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<String>,
    /// The JSON access log serin writes and reads.
    pub access_log: String,
}

/// `traffic.kubernetes`: the objects the Kubernetes providers use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSpec {
    /// Namespace of every object (default: the Rollout's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The stable Deployment; serin manages DEPLOYMENT-canary beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The stable Service (default: the Deployment's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// nginx-ingress: the primary Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<String>,
    /// istio: the VirtualService's name (serin edits its weights; the
    /// DestinationRule of that name gets the subsets), or {hosts: [...],
    /// gateways: [...], port: N} for a VirtualService (and DestinationRule)
    /// serin creates and owns whole, named after the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<RouteRefSpec>,
    /// gateway-api: the HTTPRoute's name (serin edits its weights), or
    /// {parentRefs: [{name: GATEWAY, namespace: NS, sectionName: LISTENER}],
    /// hostnames: [...], port: N} for an HTTPRoute serin creates and owns
    /// whole, named after the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<RouteRefSpec>,
    /// Canary replicas follow the weight (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_with_weight: Option<bool>,
}

/// A route by name, or the mapping of a route serin creates and owns; kept
/// as written and checked by serin (`spec.traffic.kubernetes.httpRoute.parentRefs[0].name: ...`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum RouteRefSpec {
    /// The user's route, edited in place.
    Name(String),
    /// The route serin owns: parentRefs and hostnames (HTTPRoute), hosts
    /// and gateways (VirtualService), port.
    Owned(serde_json::Map<String, serde_json::Value>),
    /// Anything else, which serin's check refuses with its field's name.
    Other(serde_json::Value),
}

impl JsonSchema for RouteRefSpec {
    fn schema_name() -> Cow<'static, str> {
        "RouteRefSpec".into()
    }

    fn inline_schema() -> bool {
        true
    }

    /// A structural schema cannot say "text or a mapping": any value is
    /// kept, and serin's check says what it expected.
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
    }
}

/// One step: exactly one of setWeight, lowerWeight or pause.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum StepSpec {
    /// Move the canary's share to this weight (0 to 100, like 5, 12.5 or 25%).
    SetWeight(Scalar),
    /// A weight below the one before it, on purpose.
    LowerWeight(Scalar),
    /// Wait: for a duration, for a webhook's yes, or until promoted.
    Pause(PauseSpec),
}

/// A pause step.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PauseSpec {
    /// How long, like 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// webhook (a URL's yes) or promoted (an operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<UntilName>,
    /// The webhook's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// End a timed pause once the canary is shown within every limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early: Option<bool>,
}

/// What an open-ended pause waits for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UntilName {
    /// A webhook's yes.
    Webhook,
    /// An operator's promote.
    Promoted,
}

/// The `analysis` section.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// enforce (default) or advisory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeName>,
    /// How often a verdict is made, like 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Canary requests needed before a verdict (a whole number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<Scalar>,
    /// Limits on the 5xx rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<PercentLimitSpec>,
    /// Limits on the median latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p50: Option<LatencyLimitSpec>,
    /// Limits on the 95th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<LatencyLimitSpec>,
    /// Limits on the 99th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<LatencyLimitSpec>,
    /// The statistical test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<StatisticsSpec>,
    /// Consecutive intervals without data that roll back (a whole number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_data_limit: Option<Scalar>,
    /// Metrics from Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    /// Business metrics compared between the versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Vec<CustomMetricSpec>>,
    /// The 4xx check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_error_rate: Option<ClientErrorRateSpec>,
}

/// `analysis.errorRate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PercentLimitSpec {
    /// The most the canary may have, like 5%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// The most the canary may have relative to stable, like 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<Scalar>,
    /// Recorded as "would have rolled back", never rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<bool>,
}

/// `analysis.latencyP50` / `P95` / `P99`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencyLimitSpec {
    /// The most the canary may take, like 500ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
    /// The most the canary may take relative to stable, like 1.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<Scalar>,
    /// Recorded as "would have rolled back", never rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<bool>,
}

/// Whether a failing verdict rolls back.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// A failing verdict rolls back.
    Enforce,
    /// A failing verdict is recorded as "would have rolled back".
    Advisory,
}

/// `analysis.statistics`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StatisticsSpec {
    /// sequential (default), fixed or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodName>,
    /// Like 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// The statistical test.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    /// Anytime-valid tests.
    Sequential,
    /// Fixed-horizon tests at the end of each pause.
    Fixed,
    /// Limits only.
    None,
}

/// `analysis.prometheus`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSpec {
    /// http://host:port.
    pub address: String,
    /// Request counter query with {{version}} (Kubernetes providers: ready-made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// 5xx counter query with {{version}}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// Cumulative latency buckets by le, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<String>,
    /// 4xx counter query (turns the 4xx check on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_errors: Option<String>,
}

/// A business metric: numerator / denominator per version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CustomMetricSpec {
    /// Its name in reasons and reports.
    pub name: String,
    /// PromQL counter with {{version}}.
    pub numerator: String,
    /// PromQL counter with {{version}}.
    pub denominator: String,
    /// higherIsBetter or lowerIsBetter.
    pub direction: DirectionName,
    /// The worst ratio to stable allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<Scalar>,
    /// Recorded as "would have rolled back", never rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<bool>,
}

/// Which way a business metric is better.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DirectionName {
    /// More is better (conversions).
    HigherIsBetter,
    /// Less is better (refunds).
    LowerIsBetter,
}

/// `analysis.clientErrorRate`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientErrorRateSpec {
    /// A ratio of at least 1, or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<Scalar>,
    /// Recorded as "would have rolled back", never rolling back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<bool>,
}

/// A webhook told of phase changes and failed verdicts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationSpec {
    /// Its URL.
    pub webhook: String,
    /// json (default) or slack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatName>,
}

/// A notification's body.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FormatName {
    /// serin's JSON.
    Json,
    /// A Slack message.
    Slack,
}

/// `preRollout`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// A URL that must answer 2xx.
    pub url: String,
}

// ---------------------------------------------------------------------------
// Status.

/// How many decisions `status.decisions` keeps (the newest); the whole
/// run's go out as Events.
pub const RECENT_DECISIONS: usize = 20;

/// Of the [`RECENT_DECISIONS`], how many are the run's first ones, kept
/// whatever follows.
pub const FIRST_DECISIONS: usize = 4;

/// The kstatus conditions (what Flux's health checks and `kubectl wait
/// --for condition=...` read): `Ready` True when the run is done and the
/// spec observed, `Reconciling` True while a run moves, `Stalled` True when
/// serin cannot go on without a person (an invalid spec, a rollback).
pub const READY: &str = "Ready";
/// See [`READY`].
pub const RECONCILING: &str = "Reconciling";
/// See [`READY`].
pub const STALLED: &str = "Stalled";

/// What the controller reports: the durable state of the current run.
// Read leniently, field by field: a field this version cannot read (a
// status written by a newer serin, a hand edit such as `run: -1`) is left
// out and named in `unreadable` instead of failing the whole object, so
// one such Rollout never breaks the list of all of them.
// `remote = "Self"`: the derives give inherent (de)serializers, which the
// trait impls below wrap (the lenient reading).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct RolloutStatus {
    /// Idle (no run: the stable Deployment runs its template),
    /// InvalidSpec (no run, the spec refused), or the run's phase:
    /// Initializing, Progressing, Paused, Succeeded or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The run's number, from 1: each new canary version starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    /// The step in force, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// The canary's share of traffic in force, in percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The version being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    /// The last verdict: pass, fail, inconclusive or no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<String>,
    /// Why the last verdict is what it is (values and limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled (the kstatus convention, which Flux
    /// and `kubectl wait` read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The run's most recent decisions, oldest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub decisions: Vec<RecentDecision>,
    /// The controller's answer to the last operator request (the
    /// `serin.dev/request` annotation: `crate::cluster::requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<crate::cluster::requests::Answer>,
    /// The stable version (what the stable Deployment runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// What the run waits for, or why it ended (a rollback: that git's pod
    /// template must be fixed or reverted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The hash of the pod template the stable Deployment runs (rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// The hash of the pod template the current (or last) run rolls out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_template_hash: Option<String>,
    /// The rest of the run's state, what a restarted (or another)
    /// controller resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RunState>,
    /// What the run's record says that is not in force, one sentence each
    /// (`weight 20 % not applied yet: ...`); empty when everything is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_in_force: Vec<String>,
    /// Why the Rollout is where it is, in one short line (the REASON
    /// column): what is not in force, else why it is stalled, else
    /// `message`; cut at [`REASON_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The steps the current (or last) run started with, as JSON (`null`:
    /// the default steps): a resumed run keeps them though the spec's
    /// steps were edited meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_steps: Option<String>,
    /// How the last run ended, kept once the Rollout is idle again (e.g.
    /// `run 2 rolled back: ...`); health checks do not read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The fields of the status as written that this version could not
    /// read, each with why (`run: invalid value: integer -1, expected
    /// u64`); they are left out of the fields above. Not part of the
    /// status: the controller does not act on a Rollout with any.
    #[serde(skip)]
    #[schemars(skip)]
    pub unreadable: Vec<String>,
}

impl Serialize for RolloutStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RolloutStatus::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for RolloutStatus {
    /// Every field that reads; the others named in `unreadable`. Fails
    /// only when the status is not an object.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(d)?;
        if let Ok(status) = RolloutStatus::deserialize(&value) {
            return Ok(status);
        }
        let serde_json::Value::Object(fields) = value else {
            return Err(D::Error::custom(format!(
                "expected the status to be an object, not {}",
                kind_of(&value)
            )));
        };
        let mut readable = serde_json::Map::new();
        let mut unreadable = Vec::new();
        for (name, field) in fields {
            let alone =
                serde_json::Value::Object(std::iter::once((name.clone(), field.clone())).collect());
            match RolloutStatus::deserialize(&alone) {
                Ok(_) => {
                    readable.insert(name, field);
                }
                Err(e) => unreadable.push(format!("{name}: {}", one_line(&e.to_string(), 120))),
            }
        }
        let mut status = RolloutStatus::deserialize(&serde_json::Value::Object(readable))
            .map_err(|e| D::Error::custom(one_line(&e.to_string(), 200)))?;
        status.unreadable = unreadable;
        Ok(status)
    }
}

/// What kind of JSON value `v` is, for an error message.
fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `text` on one line, cut at `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max).collect();
    cut.push('…');
    cut
}

/// The longest `status.reason` (a printer column).
pub const REASON_CHARS: usize = 100;

/// The phase of a Rollout with no run (the stable runs its template).
pub const IDLE: &str = "Idle";
/// The phase of a Rollout with no run whose spec is refused.
pub const INVALID_SPEC: &str = "InvalidSpec";

impl RolloutStatus {
    /// `status.reason` from the rest: what is not in force, else a Stalled
    /// condition's message, else `message`, else the Ready condition's
    /// message; one line, at most [`REASON_CHARS`] characters.
    pub fn summary(&self) -> Option<String> {
        let stalled = self
            .conditions
            .iter()
            .find(|c| c.type_ == STALLED && c.status == "True")
            .map(|c| c.message.clone());
        let ready = self
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| c.message.clone());
        let text = if self.not_in_force.is_empty() {
            stalled.or_else(|| self.message.clone()).or(ready)?
        } else {
            self.not_in_force.join("; ")
        };
        let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.chars().count() <= REASON_CHARS {
            return Some(line);
        }
        let cut: String = line.chars().take(REASON_CHARS - 1).collect();
        Some(format!("{}…", cut.trim_end()))
    }
}

/// The run's state beyond the printed fields: enough to resume it exactly
/// (no step repeated or skipped, no pause restarted from zero).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    /// The step's index, from 0 (the number of steps once past the last).
    pub step_index: u32,
    /// The weight in hundredths of a percent (exact).
    pub weight_hundredths: u32,
    /// When the step (or the rest of a resumed pause) started counting,
    /// in milliseconds since the epoch.
    pub step_started_ms: u64,
    /// Why paused: step or operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// Milliseconds of a timed pause served before an operator paused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_served_ms: Option<u64>,
    /// When the next analysis is due (milliseconds since the epoch).
    pub next_analysis_ms: u64,
    /// The weight stage has a pass on enough data.
    #[serde(default)]
    pub stage_judged: bool,
    /// No-data verdicts in a row.
    #[serde(default)]
    pub no_data_streak: u32,
    /// How the run ended (JSON), once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The stable version the last promotion replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub former_stable_version: Option<String>,
    /// When the last verdict was made (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict_ms: Option<u64>,
    /// Who wrote this status (the controller's identity) and its write
    /// count: a write conflict on a status someone else wrote stops a
    /// controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// A condition in the Kubernetes convention (as metav1.Condition).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Ready, Reconciling or Stalled.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// For people.
    pub message: String,
    /// When status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The metadata.generation it was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One decision of the run, as the dashboard's timeline shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentDecision {
    /// When (RFC 3339).
    pub at: String,
    /// What was decided, like weight, pause, promote or rollback.
    pub kind: String,
    /// Why.
    pub reason: String,
    /// The weight after it, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The step after it, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

impl RolloutStatus {
    /// Adds a decision, keeping at most [`RECENT_DECISIONS`]: the run's
    /// first [`FIRST_DECISIONS`] (how it started: the first weight) and
    /// the newest after them, so a stream of verdicts never pushes out the
    /// start.
    pub fn record(&mut self, decision: RecentDecision) {
        self.decisions.push(decision);
        let over = self.decisions.len().saturating_sub(RECENT_DECISIONS);
        let first = FIRST_DECISIONS.min(self.decisions.len());
        self.decisions.drain(first..first + over);
    }

    /// Sets one condition; its lastTransitionTime changes only when its
    /// status does.
    pub fn set_condition(&mut self, mut condition: Condition) {
        match self
            .conditions
            .iter_mut()
            .find(|c| c.type_ == condition.type_)
        {
            Some(old) => {
                if old.status == condition.status {
                    condition.last_transition_time = old.last_transition_time.clone();
                }
                *old = condition;
            }
            None => self.conditions.push(condition),
        }
    }
}

impl Rollout {
    /// The spec checked by the rollout file's checks: the rollout, or every
    /// problem, each naming its field from the resource's root. The
    /// namespace defaults to `default` for a resource read without one.
    pub fn check(&self) -> Result<spec::Rollout, SpecError> {
        let name = self.metadata.name.as_deref().unwrap_or_default();
        let namespace = self.metadata.namespace.as_deref().unwrap_or("default");
        let missing: Vec<spec::Problem> =
            [("stable", &self.spec.stable), ("canary", &self.spec.canary)]
                .into_iter()
                .filter(|(_, side)| side.is_missing())
                .map(|(field, _)| spec::Problem {
                    line: 0,
                    column: 0,
                    message: format!("spec.{field}: missing (expected {{version: ...}})"),
                })
                .collect();
        if !missing.is_empty() {
            return Err(SpecError {
                origin: format!("Rollout {namespace}/{name}"),
                problems: missing,
            });
        }
        let value = serde_json::to_value(&self.spec).map_err(|e| SpecError {
            origin: format!("Rollout {namespace}/{name}"),
            problems: vec![spec::Problem {
                line: 0,
                column: 0,
                message: format!("spec: cannot be written as JSON: {e}"),
            }],
        })?;
        spec::check_resource(name, namespace, &value)
    }
}

/// The CRD manifest, as `deploy/kubernetes/crd.yaml` holds it.
pub fn crd_yaml() -> String {
    let crd = Rollout::crd();
    let body = match serde_saphyr::to_string(&crd) {
        Ok(text) => text,
        // A CRD is plain data: writing it cannot fail.
        Err(e) => format!("# cannot write the CRD: {e}\n"),
    };
    format!(
        "# Generated from crates/serin/src/cluster/resource.rs; do not edit.\n\
         # Regenerate: cargo run -p serin --example crd > deploy/kubernetes/crd.yaml\n\
         {body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn anything_the_crd_admits_is_read_and_the_check_names_what_is_wrong() {
        let refused = |spec: serde_json::Value| {
            let r: Rollout = serde_json::from_value(serde_json::json!({
                "apiVersion": "serin.dev/v1alpha1", "kind": "Rollout",
                "metadata": { "name": "bad", "namespace": "shop" },
                "spec": spec
            }))
            .unwrap();
            r.check().unwrap_err().to_string()
        };
        let sides = |more: serde_json::Value| {
            let mut spec =
                serde_json::json!({ "stable": { "version": "v1" }, "canary": { "version": "v2" } });
            for (k, v) in more.as_object().unwrap() {
                spec[k] = v.clone();
            }
            spec
        };
        let e = refused(serde_json::json!({ "canary": { "version": "v2" } }));
        assert!(e.contains("spec.stable: missing"), "{e}");
        let e = refused(sides(
            serde_json::json!({ "steps": [{ "setWeight": [1, 2] }] }),
        ));
        assert!(e.contains("spec.steps[0].setWeight"), "{e}");
        let e = refused(sides(
            serde_json::json!({ "analysis": { "errorRate": { "maximum": "5%" } } }),
        ));
        assert!(e.contains("spec.analysis.errorRate.maximum"), "{e}");
        let e = refused(sides(serde_json::json!({ "extra": 1 })));
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn the_resource_is_the_one_the_checker_reads() {
        assert_eq!(Rollout::api_version(&()), spec::API_VERSION);
        assert_eq!(Rollout::group(&()), spec::API_GROUP);
        assert_eq!(Rollout::kind(&()), spec::KIND);
    }

    #[test]
    fn the_reason_column_is_short_and_says_first_what_is_not_in_force() {
        let mut s = RolloutStatus {
            message: Some(format!("waiting: query {}", "sum(rate(x[1m])) ".repeat(20))),
            ..RolloutStatus::default()
        };
        let r = s.summary().unwrap();
        assert_eq!(r.chars().count(), REASON_CHARS, "{r}");
        assert!(
            r.starts_with("waiting: query sum") && r.ends_with('…'),
            "{r}"
        );
        s.not_in_force = vec!["weight 20 % not applied yet: conflict".into()];
        assert_eq!(
            s.summary().as_deref(),
            Some("weight 20 % not applied yet: conflict")
        );
        assert_eq!(RolloutStatus::default().summary(), None);
    }

    #[test]
    fn the_recent_decisions_are_bounded_and_a_condition_keeps_its_transition_time() {
        let mut s = RolloutStatus::default();
        for i in 0..RECENT_DECISIONS + 5 {
            s.record(RecentDecision {
                at: format!("t{i}"),
                kind: "weight".into(),
                reason: String::new(),
                weight: None,
                step: None,
            });
        }
        assert_eq!(s.decisions.len(), RECENT_DECISIONS);
        // The run's first four, then the newest sixteen.
        let at: Vec<&str> = s.decisions.iter().map(|d| d.at.as_str()).collect();
        assert_eq!(&at[..5], &["t0", "t1", "t2", "t3", "t9"]);
        assert_eq!(at[RECENT_DECISIONS - 1], "t24");
        let ready = |status: &str, at: &str| Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: "R".into(),
            message: String::new(),
            last_transition_time: at.into(),
            observed_generation: Some(1),
        };
        s.set_condition(ready("False", "t1"));
        s.set_condition(ready("False", "t2"));
        assert_eq!(s.conditions[0].last_transition_time, "t1");
        s.set_condition(ready("True", "t3"));
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].last_transition_time, "t3");
    }
}
