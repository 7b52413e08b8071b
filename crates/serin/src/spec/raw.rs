//! The rollout file as written: one serde type per section, unknown fields
//! rejected; the checked scalars come from `values.rs`.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::Provider;
use super::values::{Count, Dur, Percent, Ratio, Text, WeightValue};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRollout {
    /// Required in a rollout file (the checker says so with the file's
    /// other problems); a Rollout resource's is `metadata.name` instead.
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    pub(super) stable: Spanned<RawSide>,
    pub(super) canary: Spanned<RawSide>,
    /// Outer `None`: no `traffic` key; inner `None`: `traffic:` with
    /// nothing after it, refused (as `steps:` and `analysis:` are).
    #[serde(default, deserialize_with = "present")]
    pub(super) traffic: Option<Spanned<Option<RawTraffic>>>,
    /// Outer `None`: no `steps` key (the default plan); inner `None`: a
    /// `steps:` with nothing after it, refused like `steps: []`.
    #[serde(default, deserialize_with = "present")]
    pub(super) steps: Option<Spanned<Option<Vec<RawStep>>>>,
    /// Outer `None`: no `analysis` key (the defaults); inner `None`:
    /// `analysis:` with nothing after it, refused rather than read as the
    /// defaults (a section left empty by mistake).
    #[serde(default, deserialize_with = "present")]
    pub(super) analysis: Option<Spanned<Option<RawAnalysis>>>,
    #[serde(default)]
    pub(super) notifications: Vec<RawNotification>,
    #[serde(default)]
    pub(super) pre_rollout: Option<RawWebhook>,
    #[serde(default)]
    pub(super) progress_deadline: Option<Spanned<Dur>>,
    #[serde(default)]
    pub(super) baseline: Option<Spanned<RawBaseline>>,
}

/// `baseline`: a fresh instance of the stable version that gets the
/// canary's share, for the relative checks to compare against.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawBaseline {
    #[serde(default)]
    pub(super) upstream: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSide {
    pub(super) version: Spanned<String>,
    #[serde(default)]
    pub(super) upstream: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTraffic {
    #[serde(default)]
    pub(super) provider: Option<Provider>,
    #[serde(default)]
    pub(super) listen: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) sticky: Option<Spanned<RawSticky>>,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub(super) nginx: Option<RawNginx>,
    #[serde(default)]
    pub(super) kubernetes: Option<Spanned<RawKubernetes>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSticky {
    #[serde(default)]
    pub(super) cookie: Option<String>,
    #[serde(default)]
    pub(super) header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRoute {
    #[serde(rename = "match")]
    pub(super) when: RawMatch,
    pub(super) version: RawVersion,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    #[serde(default)]
    pub(super) header: Option<RawNameValue>,
    #[serde(default)]
    pub(super) cookie: Option<RawNameValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNameValue {
    pub(super) name: String,
    pub(super) value: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawVersion {
    Stable,
    Canary,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNginx {
    pub(super) include: PathBuf,
    #[serde(default)]
    pub(super) test: Option<String>,
    #[serde(default)]
    pub(super) reload: Option<String>,
    pub(super) access_log: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawKubernetes {
    #[serde(default)]
    pub(super) namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) deployment: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) service: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) ingress: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) virtual_service: Option<Spanned<RawRouteRef<RawVirtualService>>>,
    #[serde(default)]
    pub(super) http_route: Option<Spanned<RawRouteRef<RawHttpRoute>>>,
    #[serde(default)]
    pub(super) scale_with_weight: Option<bool>,
}

/// `traffic.kubernetes.httpRoute` / `virtualService`: the name of the
/// user's route (edited in place), or a mapping that describes a route
/// serin creates and owns whole.
pub(super) enum RawRouteRef<T> {
    Name(String),
    Owned(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for RawRouteRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Either<T> {
            type Value = RawRouteRef<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the route's name, or a mapping for a route serin owns")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawRouteRef::Name(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRouteRef::Owned)
            }
        }
        d.deserialize_any(Either(std::marker::PhantomData))
    }
}

/// `httpRoute` as a mapping: the HTTPRoute serin creates, named after the
/// rollout.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawHttpRoute {
    #[serde(default)]
    pub(super) parent_refs: Option<Spanned<Vec<Spanned<RawParentRef>>>>,
    #[serde(default)]
    pub(super) hostnames: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) port: Option<Spanned<u32>>,
}

/// One of `httpRoute.parentRefs`: a Gateway (and one of its listeners).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawParentRef {
    #[serde(default)]
    pub(super) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) namespace: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) section_name: Option<Spanned<String>>,
}

/// `virtualService` as a mapping: the VirtualService serin creates, named
/// after the rollout (with a DestinationRule of the same name).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawVirtualService {
    #[serde(default)]
    pub(super) hosts: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) gateways: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) port: Option<Spanned<u32>>,
}

/// A key that is present, even with a null value (`steps:` alone), as `Some`.
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) enum RawStep {
    SetWeight(Spanned<WeightValue>),
    /// A weight below the one before it, on purpose.
    LowerWeight(Spanned<WeightValue>),
    Pause(Spanned<RawPause>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPause {
    #[serde(default)]
    pub(super) duration: Option<Dur>,
    #[serde(default)]
    pub(super) until: Option<RawUntil>,
    #[serde(default)]
    pub(super) url: Option<String>,
    /// End a timed pause once the judge shows the canary within its limits.
    #[serde(default)]
    pub(super) early: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum RawUntil {
    Webhook,
    Promoted,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawAnalysis {
    #[serde(default)]
    pub(super) mode: Option<RawMode>,
    #[serde(default)]
    pub(super) interval: Option<Spanned<Dur>>,
    #[serde(default)]
    pub(super) min_requests: Option<Spanned<Count>>,
    #[serde(default)]
    pub(super) error_rate: Option<RawPercentLimit>,
    #[serde(default)]
    pub(super) latency_p50: Option<Spanned<RawLatencyLimit>>,
    #[serde(default)]
    pub(super) latency_p95: Option<Spanned<RawLatencyLimit>>,
    #[serde(default)]
    pub(super) latency_p99: Option<Spanned<RawLatencyLimit>>,
    #[serde(default)]
    pub(super) statistics: Option<RawStatistics>,
    #[serde(default)]
    pub(super) no_data_limit: Option<Spanned<Count>>,
    #[serde(default)]
    pub(super) prometheus: Option<RawPrometheus>,
    #[serde(default)]
    pub(super) custom: Vec<Spanned<RawCustom>>,
    #[serde(default)]
    pub(super) client_error_rate: Option<Spanned<RawClientErrorRate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawClientErrorRate {
    /// A ratio of at least 1, or `off`.
    #[serde(default)]
    pub(super) max_ratio_to_stable: Option<Spanned<Text>>,
    #[serde(default)]
    pub(super) advisory: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPercentLimit {
    #[serde(default)]
    pub(super) max: Option<Spanned<Percent>>,
    #[serde(default)]
    pub(super) max_ratio_to_stable: Option<Ratio>,
    #[serde(default)]
    pub(super) advisory: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawLatencyLimit {
    #[serde(default)]
    pub(super) max: Option<Spanned<Dur>>,
    #[serde(default)]
    pub(super) max_ratio_to_stable: Option<Ratio>,
    #[serde(default)]
    pub(super) advisory: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawStatistics {
    #[serde(default)]
    pub(super) method: Option<RawMethod>,
    #[serde(default)]
    pub(super) confidence: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawPrometheus {
    pub(super) address: Spanned<String>,
    #[serde(default)]
    pub(super) requests: Option<String>,
    #[serde(default)]
    pub(super) errors: Option<String>,
    #[serde(default)]
    pub(super) latency_buckets: Option<String>,
    #[serde(default)]
    pub(super) client_errors: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawCustom {
    pub(super) name: String,
    pub(super) numerator: String,
    pub(super) denominator: String,
    pub(super) direction: RawDirection,
    #[serde(default)]
    pub(super) max_ratio_to_stable: Option<Ratio>,
    #[serde(default)]
    pub(super) advisory: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawNotification {
    pub(super) webhook: Spanned<String>,
    #[serde(default)]
    pub(super) format: Option<RawFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawFormat {
    Json,
    Slack,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) url: Spanned<String>,
}

/// `analysis.mode`.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMode {
    Enforce,
    Advisory,
}

/// `analysis.statistics.method`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMethod {
    Sequential,
    Fixed,
    None,
}

/// `analysis.custom[].direction`.
#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) enum RawDirection {
    HigherIsBetter,
    LowerIsBetter,
}
