//! The rollout file: YAML (or JSON) read into typed, validated settings.
//!
//! Two layers. The `Raw*` types mirror the file one to one (serde, unknown
//! fields rejected); scalar fields that need checking (weights, percentages,
//! durations) are newtypes whose `Deserialize` refuses bad values, so the
//! parser reports them at their line and column. [`parse`] then checks what
//! spans several fields (a provider's required sections, upstream URLs,
//! names), collecting every problem with its location before giving up, and
//! builds a [`Rollout`]: the only type the rest of serin sees.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use serin_proxy::{Route, StickyKey, Upstream, Version, Weight};

use crate::notify;
use crate::rollout::{Plan, Step};
use crate::time::parse_duration;

// ---------------------------------------------------------------------------
// The validated rollout.

/// A rollout file, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// `[a-z0-9-]`, unique per daemon.
    pub name: String,
    /// The version now serving.
    pub stable: Side,
    /// The version being rolled out.
    pub canary: Side,
    /// Where and how the weight is applied.
    pub traffic: Traffic,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// How verdicts are made.
    pub analysis: AnalysisSettings,
    /// Webhooks told of phase changes and failed verdicts.
    pub notifications: Vec<notify::Target>,
    /// A URL that must answer 2xx before the first step (Flagger's pre-rollout webhook).
    pub pre_rollout: Option<String>,
    /// How long a timed pause may overrun, or a gate stay shut, before the
    /// rollout rolls back (none: it waits).
    pub progress_deadline: Option<Duration>,
}

/// One version of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// Its version label, e.g. `v1.2.0`.
    pub version: String,
    /// `http://host:port` (built-in and nginx providers).
    pub upstream: Option<String>,
    /// Container image (Kubernetes providers).
    pub image: Option<String>,
}

/// Which data plane applies the weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
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

impl Provider {
    /// The file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Builtin => "builtin",
            Provider::Nginx => "nginx",
            Provider::NginxIngress => "nginx-ingress",
            Provider::Istio => "istio",
            Provider::GatewayApi => "gateway-api",
        }
    }

    /// Runs on Kubernetes.
    pub fn is_kubernetes(self) -> bool {
        matches!(
            self,
            Provider::NginxIngress | Provider::Istio | Provider::GatewayApi
        )
    }
}

/// The `traffic` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// The provider.
    pub provider: Provider,
    /// Where the built-in proxy (or nginx's generated server) listens.
    pub listen: Option<SocketAddr>,
    /// Same user, same version.
    pub sticky: Option<StickyKey>,
    /// Overrides checked before the weight.
    pub routes: Vec<Route>,
    /// `provider: nginx` settings.
    pub nginx: Option<NginxSettings>,
    /// Kubernetes providers' settings.
    pub kubernetes: Option<KubernetesSettings>,
}

/// `traffic.nginx`.
#[derive(Debug, Clone, PartialEq)]
pub struct NginxSettings {
    /// The include file serin owns and rewrites.
    pub include: PathBuf,
    /// The configuration test command, split on white space.
    pub test: Vec<String>,
    /// The reload command, split on white space.
    pub reload: Vec<String>,
    /// The JSON access log serin writes and reads.
    pub access_log: PathBuf,
}

/// `traffic.kubernetes`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSettings {
    /// Namespace of every object.
    pub namespace: String,
    /// The stable Deployment; serin manages `<deployment>-canary`.
    pub deployment: String,
    /// The stable Service; the canary's is `<service>-canary`.
    pub service: String,
    /// nginx-ingress: the primary Ingress.
    pub ingress: Option<String>,
    /// istio: the VirtualService (and DestinationRule of the same name).
    pub virtual_service: Option<String>,
    /// gateway-api: the HTTPRoute.
    pub http_route: Option<String>,
    /// Canary replicas follow the weight.
    pub scale_with_weight: bool,
}

/// How the statistics are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Anytime-valid: safe to judge every interval.
    Sequential,
    /// Fixed horizon: judged once at the end of each pause (Kayenta-like).
    Fixed,
    /// Point estimates against the limits (the classic behaviour).
    None,
}

/// Limits of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limit {
    /// Absolute limit on the canary alone (error rate as a fraction; latency in ms).
    pub max: Option<f64>,
    /// Canary / stable must not exceed this.
    pub max_ratio_to_stable: Option<f64>,
}

/// Whether a bigger custom metric is good or bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// e.g. checkouts per visit.
    HigherIsBetter,
    /// e.g. cart abandonments per visit.
    LowerIsBetter,
}

/// A business metric: numerator / denominator, compared between versions.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetric {
    /// Its name in reasons and reports.
    pub name: String,
    /// PromQL counter with `{{version}}`.
    pub numerator: String,
    /// PromQL counter with `{{version}}`.
    pub denominator: String,
    /// Which way is worse.
    pub direction: Direction,
    /// Allowed worsening as a ratio (1.0: any).
    pub max_ratio_to_stable: f64,
}

/// `analysis.prometheus`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusSettings {
    /// `http://host:port`.
    pub address: String,
    /// Request counter query.
    pub requests: String,
    /// Error counter query.
    pub errors: String,
    /// Cumulative latency buckets by `le`, in seconds.
    pub latency_buckets: Option<String>,
    /// Client error (4xx) counter query, for the 4xx check; without it that
    /// check is off.
    pub client_errors: Option<String>,
}

/// The `analysis` section.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    /// How often a verdict is made.
    pub interval: Duration,
    /// Canary requests in a step before a verdict can be pass or fail.
    pub min_requests: u64,
    /// Error rate limits.
    pub error_rate: Limit,
    /// Median latency limits.
    pub latency_p50: Limit,
    /// p95 latency limits.
    pub latency_p95: Limit,
    /// p99 latency limits.
    pub latency_p99: Limit,
    /// The statistics.
    pub method: Method,
    /// e.g. 0.95.
    pub confidence: f64,
    /// Consecutive no-data intervals that roll back.
    pub no_data_limit: u32,
    /// Take metrics from Prometheus instead of the provider's own.
    pub prometheus: Option<PrometheusSettings>,
    /// Business metrics (need `prometheus`).
    pub custom: Vec<CustomMetric>,
    /// `clientErrorRate.maxRatioToStable`: the canary's 4xx rate may be at
    /// most this many times stable's (at least 1); `None`: `off`.
    pub client_error_ratio: Option<f64>,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        AnalysisSettings {
            interval: Duration::from_secs(10),
            min_requests: 100,
            error_rate: Limit {
                max: Some(0.05),
                max_ratio_to_stable: None,
            },
            latency_p50: Limit::default(),
            latency_p95: Limit {
                max: Some(1000.0),
                max_ratio_to_stable: None,
            },
            latency_p99: Limit::default(),
            method: Method::Sequential,
            confidence: 0.95,
            no_data_limit: 3,
            prometheus: None,
            custom: Vec::new(),
            client_error_ratio: Some(serin_analysis::DEFAULT_CLIENT_ERROR_RATIO),
        }
    }
}

/// The steps when the file names none: 5, 25, 50, 100 % with 60 s pauses.
pub fn default_steps() -> Vec<Step> {
    [5u16, 25, 50, 100]
        .into_iter()
        .flat_map(|w| {
            [
                // 5..=100 % in hundredths is always a weight.
                Step::SetWeight(Weight::from_hundredths(w * 100).unwrap_or(Weight::FULL)),
                Step::PauseFor(Duration::from_secs(60)),
            ]
        })
        .collect()
}

impl Rollout {
    /// What the state machine needs.
    pub fn plan(&self) -> Plan {
        Plan {
            steps: self.steps.clone(),
            interval: self.analysis.interval,
            no_data_limit: self.analysis.no_data_limit,
            judge_at_end_of_pause: self.analysis.method == Method::Fixed,
            progress_deadline: self.progress_deadline,
            min_requests: self.analysis.min_requests,
        }
    }
}

// ---------------------------------------------------------------------------
// Errors.

/// One thing wrong with a rollout file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, 0 if unknown.
    pub line: u64,
    /// 1-based column, 0 if unknown.
    pub column: u64,
    /// What was wrong and what was expected.
    pub message: String,
}

/// A rollout file that cannot be used: every problem found, with the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    /// The file's name (or `request body`).
    pub origin: String,
    /// At least one.
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line > 0 {
                write!(f, "{}:{}:{}: {}", self.origin, p.line, p.column, p.message)?;
            } else {
                write!(f, "{}: {}", self.origin, p.message)?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Checked scalars: refused by the parser itself, so errors carry a location.

/// A canary weight: `5`, `5.25`, `"25%"`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WeightValue(Weight);

/// A percentage written with `%`: `5%`, `0.5%`. Stored as a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Percent(f64);

/// A duration: `10s`, `1000ms`, `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Dur(Duration);

/// A strictly positive ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratio(f64);

/// A whole number (counts, limits).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Count(u64);

/// A scalar as written (numbers and words alike), for values checked where
/// their field's name is known.
#[derive(Debug, Clone, PartialEq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_string(ScalarText("a number or a word"))
            .map(Text)
    }
}

/// Accepts a YAML scalar as text (numbers too), for the checked scalars.
/// Read with `deserialize_string`, so a plain number arrives as written:
/// `99.999999999999999999` stays that text instead of becoming the float 100.
struct ScalarText(&'static str);

impl<'de> Visitor<'de> for ScalarText {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

const WEIGHT_EXPECTED: &str =
    "a weight from 0 to 100 with at most two decimals, like 5, 12.5 or 25%";
const PERCENT_EXPECTED: &str =
    "a percentage like 5% or 0.5% (from 0% to 100%, at most four decimals)";
const DURATION_EXPECTED: &str = "a duration like 500ms, 10s, 2m or 1m30s";
/// Most decimals a percentage may have: finer than any error rate serin can
/// tell apart, and short enough to be kept exactly.
const PERCENT_DECIMALS: usize = 4;

/// A plain decimal number as written (`12`, `12.5`), in units of
/// `10^-decimals`; `None` if it is anything else or has more decimals.
/// Integer arithmetic only, so nothing is rounded on the way.
fn exact_decimal(text: &str, decimals: usize) -> Option<u64> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > decimals {
        return None;
    }
    if text.contains('.') && frac.is_empty() {
        return None;
    }
    let scale = 10u64.checked_pow(u32::try_from(decimals).ok()?)?;
    let frac_scale = 10u64.checked_pow(u32::try_from(decimals - frac.len()).ok()?)?;
    let frac_value = if frac.is_empty() {
        0
    } else {
        frac.parse::<u64>().ok()?
    };
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(scale)?
        .checked_add(frac_value.checked_mul(frac_scale)?)
}
const RATIO_EXPECTED: &str = "a ratio greater than 0, like 1.5";
const COUNT_EXPECTED: &str = "a whole number like 100";

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(COUNT_EXPECTED))?;
        text.trim()
            .parse::<u64>()
            .map(Count)
            .map_err(|_| de::Error::custom(format!("expected {COUNT_EXPECTED}, got `{text}`")))
    }
}

impl<'de> Deserialize<'de> for WeightValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(WEIGHT_EXPECTED))?;
        let t = text.trim();
        let number = t.strip_suffix('%').unwrap_or(t).trim();
        exact_decimal(number, 2)
            .and_then(|h| u16::try_from(h).ok())
            .and_then(|h| Weight::from_hundredths(h).ok())
            .map(WeightValue)
            .ok_or_else(|| de::Error::custom(format!("expected {WEIGHT_EXPECTED}, got `{text}`")))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(PERCENT_EXPECTED))?;
        let bad = || de::Error::custom(format!("expected {PERCENT_EXPECTED}, got `{text}`"));
        let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
        // In units of 10^-4 %; exact, then one division.
        let units = exact_decimal(number.trim(), PERCENT_DECIMALS).ok_or_else(bad)?;
        let hundred = 100 * 10u64.pow(PERCENT_DECIMALS as u32);
        if units > hundred {
            return Err(bad());
        }
        Ok(Percent(units as f64 / hundred as f64))
    }
}

/// Whether two upstream URLs name one server: the same host and port, or
/// the same port on two names of this machine's loopback (`localhost`,
/// `127.0.0.1`, `[::1]`, `[::ffff:127.0.0.1]`).
fn same_server(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (Upstream::parse(a), Upstream::parse(b)) else {
        return false;
    };
    let (a, b) = (a.authority(), b.authority());
    let port = |x: &http::uri::Authority| x.port_u16().unwrap_or(80);
    let loopback = |host: &str| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || match host.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
                Ok(std::net::IpAddr::V6(ip)) => {
                    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
                // `127.1`, `0x7f.0.0.1`: shorthand the resolver reads as
                // an address (inet_aton), read here without asking it.
                Err(_) => shorthand_ipv4(host).is_some_and(|ip| ip.is_loopback()),
            }
    };
    port(a) == port(b)
        && (a.host().eq_ignore_ascii_case(b.host()) || (loopback(a.host()) && loopback(b.host())))
}

/// An IPv4 address in the resolver's shorthand (`127.1`, `0x7f.0.0.1`,
/// `2130706433`): one to four numbers, decimal, `0x` hex or `0` octal, the
/// last filling the bytes left.
fn shorthand_ipv4(host: &str) -> Option<std::net::Ipv4Addr> {
    let parts: Vec<u32> = host
        .split('.')
        .map(
            |p| match p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None if p.len() > 1 && p.starts_with('0') => u32::from_str_radix(&p[1..], 8).ok(),
                None => p.parse().ok(),
            },
        )
        .collect::<Option<_>>()?;
    let (last, leading) = parts.split_last()?;
    if leading.len() > 3 || leading.iter().any(|&b| b > 255) {
        return None;
    }
    let room = 8 * (4 - leading.len() as u32);
    if room < 32 && *last >> room != 0 {
        return None;
    }
    let head = leading.iter().fold(0u32, |acc, &b| (acc << 8) | b);
    Some(std::net::Ipv4Addr::from(
        head.checked_shl(room).unwrap_or(0) | last,
    ))
}

/// A version label reads as what it is: visible ASCII only (no space, no
/// control, invisible, direction-changing or look-alike characters), at
/// most 128 of them, as a container image tag allows.
fn readable_label(label: &str) -> bool {
    label.len() <= 128 && label.chars().all(|c| c.is_ascii_graphic())
}

/// The longest duration a rollout file may give: 30 days (a longer wait is
/// `pause: {}`, which waits for a person).
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(DURATION_EXPECTED))?;
        // A bare number has no unit: `1` could mean 1 s or 1 ms, so it is
        // refused here (the command line's flags read it as seconds).
        let t = text.trim();
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(de::Error::custom(format!(
                "expected {DURATION_EXPECTED}, got `{text}` (a number without its unit)"
            )));
        }
        match parse_duration(&text) {
            Ok(d) if d > MAX_DURATION => Err(de::Error::custom(format!(
                "expected {DURATION_EXPECTED} of at most 720h (30 days), got `{text}`"
            ))),
            Ok(d) => Ok(Dur(d)),
            Err(_) => Err(de::Error::custom(format!(
                "expected {DURATION_EXPECTED}, got `{text}`"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = d.deserialize_string(ScalarText(RATIO_EXPECTED))?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(Ratio(v)),
            _ => Err(de::Error::custom(format!(
                "expected {RATIO_EXPECTED}, got `{text}`"
            ))),
        }
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRollout {
    name: Spanned<String>,
    stable: Spanned<RawSide>,
    canary: Spanned<RawSide>,
    /// Outer `None`: no `traffic` key; inner `None`: `traffic:` with
    /// nothing after it, refused (as `steps:` and `analysis:` are).
    #[serde(default, deserialize_with = "present")]
    traffic: Option<Spanned<Option<RawTraffic>>>,
    /// Outer `None`: no `steps` key (the default plan); inner `None`: a
    /// `steps:` with nothing after it, refused like `steps: []`.
    #[serde(default, deserialize_with = "present")]
    steps: Option<Spanned<Option<Vec<RawStep>>>>,
    /// Outer `None`: no `analysis` key (the defaults); inner `None`:
    /// `analysis:` with nothing after it, refused rather than read as the
    /// defaults (a section left empty by mistake).
    #[serde(default, deserialize_with = "present")]
    analysis: Option<Spanned<Option<RawAnalysis>>>,
    #[serde(default)]
    notifications: Vec<RawNotification>,
    #[serde(default)]
    pre_rollout: Option<RawWebhook>,
    #[serde(default)]
    progress_deadline: Option<Spanned<Dur>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSide {
    version: Spanned<String>,
    #[serde(default)]
    upstream: Option<Spanned<String>>,
    #[serde(default)]
    image: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTraffic {
    #[serde(default)]
    provider: Option<Provider>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    sticky: Option<Spanned<RawSticky>>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    nginx: Option<RawNginx>,
    #[serde(default)]
    kubernetes: Option<RawKubernetes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSticky {
    #[serde(default)]
    cookie: Option<String>,
    #[serde(default)]
    header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRoute {
    #[serde(rename = "match")]
    when: RawMatch,
    version: RawVersion,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    header: Option<RawNameValue>,
    #[serde(default)]
    cookie: Option<RawNameValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameValue {
    name: String,
    value: String,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawVersion {
    Stable,
    Canary,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNginx {
    include: PathBuf,
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    reload: Option<String>,
    access_log: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawKubernetes {
    #[serde(default)]
    namespace: Option<String>,
    deployment: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    ingress: Option<String>,
    #[serde(default)]
    virtual_service: Option<String>,
    #[serde(default)]
    http_route: Option<String>,
    #[serde(default)]
    scale_with_weight: Option<bool>,
}

/// A key that is present, even with a null value (`steps:` alone), as `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
enum RawStep {
    SetWeight(Spanned<WeightValue>),
    /// A weight below the one before it, on purpose.
    LowerWeight(Spanned<WeightValue>),
    Pause(Spanned<RawPause>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPause {
    #[serde(default)]
    duration: Option<Dur>,
    #[serde(default)]
    until: Option<RawUntil>,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum RawUntil {
    Webhook,
    Promoted,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAnalysis {
    #[serde(default)]
    interval: Option<Spanned<Dur>>,
    #[serde(default)]
    min_requests: Option<Spanned<Count>>,
    #[serde(default)]
    error_rate: Option<RawPercentLimit>,
    #[serde(default)]
    latency_p50: Option<Spanned<RawLatencyLimit>>,
    #[serde(default)]
    latency_p95: Option<Spanned<RawLatencyLimit>>,
    #[serde(default)]
    latency_p99: Option<Spanned<RawLatencyLimit>>,
    #[serde(default)]
    statistics: Option<RawStatistics>,
    #[serde(default)]
    no_data_limit: Option<Spanned<Count>>,
    #[serde(default)]
    prometheus: Option<RawPrometheus>,
    #[serde(default)]
    custom: Vec<Spanned<RawCustom>>,
    #[serde(default)]
    client_error_rate: Option<Spanned<RawClientErrorRate>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawClientErrorRate {
    /// A ratio of at least 1, or `off`.
    #[serde(default)]
    max_ratio_to_stable: Option<Spanned<Text>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPercentLimit {
    #[serde(default)]
    max: Option<Spanned<Percent>>,
    #[serde(default)]
    max_ratio_to_stable: Option<Ratio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLatencyLimit {
    #[serde(default)]
    max: Option<Spanned<Dur>>,
    #[serde(default)]
    max_ratio_to_stable: Option<Ratio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStatistics {
    #[serde(default)]
    method: Option<Method>,
    #[serde(default)]
    confidence: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPrometheus {
    address: Spanned<String>,
    #[serde(default)]
    requests: Option<String>,
    #[serde(default)]
    errors: Option<String>,
    #[serde(default)]
    latency_buckets: Option<String>,
    #[serde(default)]
    client_errors: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCustom {
    name: String,
    numerator: String,
    denominator: String,
    direction: Direction,
    #[serde(default)]
    max_ratio_to_stable: Option<Ratio>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNotification {
    webhook: Spanned<String>,
    #[serde(default)]
    format: Option<RawFormat>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawFormat {
    Json,
    Slack,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
}

// ---------------------------------------------------------------------------
// Reading and checking.

/// Reads a rollout file's text. `origin` names it in errors (a path, or
/// `request body`).
pub fn parse(text: &str, origin: &str) -> Result<Rollout, SpecError> {
    let raw: RawRollout = serde_saphyr::from_str(text).map_err(|e| SpecError {
        origin: origin.to_string(),
        problems: vec![problem_of(&e)],
    })?;
    let mut check = Checker::default();
    let rollout = check.rollout(raw);
    match rollout {
        Some(mut r) if check.problems.is_empty() => {
            ready_made_queries(&mut r);
            Ok(r)
        }
        _ => {
            let mut problems = check.problems;
            problems.sort_by_key(|p| (p.line, p.column));
            Err(SpecError {
                origin: origin.to_string(),
                problems,
            })
        }
    }
}

/// Reads a rollout file from disk.
pub fn read(path: &std::path::Path) -> Result<Rollout, SpecError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SpecError {
        origin: origin.clone(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("cannot read the rollout file: {e}"),
        }],
    })?;
    parse(&text, &origin)
}

/// Kubernetes providers with only a Prometheus address get the queries for
/// their standard metrics (docs/kubernetes.md).
fn ready_made_queries(r: &mut Rollout) {
    let Some(target) = crate::runtime::kube_target(r) else {
        return;
    };
    if let Some(p) = &mut r.analysis.prometheus
        && p.requests.is_empty()
    {
        let (requests, errors, latency) =
            crate::providers::traffic::kubernetes::prometheus_queries(target.provider, &target);
        p.requests = requests;
        p.errors = errors;
        p.latency_buckets = Some(latency);
    }
}

fn problem_of(e: &serde_saphyr::Error) -> Problem {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let mut message = e.render_with_options(options);
    // The plain rendering ends with " at line L column C"; the location is
    // printed in front instead, as `file:line:col:`.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    Problem {
        line,
        column,
        message: message.trim().to_string(),
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn at(&mut self, location: &Location, message: impl Into<String>) {
        self.problems.push(Problem {
            line: location.line(),
            column: location.column(),
            message: message.into(),
        });
    }

    fn rollout(&mut self, raw: RawRollout) -> Option<Rollout> {
        let name = raw.name.value.clone();
        if !valid_name(&name) {
            self.at(
                &raw.name.referenced,
                format!(
                    "name: expected 1 to 63 characters of a-z, 0-9 and -, starting with a letter or digit, got `{name}`"
                ),
            );
        }
        let stable = self.side(raw.stable, "stable", None);
        let canary = self.side(raw.canary, "canary", Some(&stable));
        let (raw_traffic, traffic_ok) = self.section(
            raw.traffic,
            "traffic: expected a section with at least listen (e.g. `listen: 127.0.0.1:8080`), got nothing after `traffic:`",
        );
        let (raw_analysis, analysis_ok) = self.section(
            raw.analysis,
            "analysis: expected at least one setting, got nothing after `analysis:` (leave analysis out for the defaults)",
        );
        let provider = raw_traffic
            .as_ref()
            .and_then(|t| t.value.provider)
            .unwrap_or(Provider::Builtin);
        if traffic_ok
            && provider.is_kubernetes()
            && raw_analysis
                .as_ref()
                .is_none_or(|a| a.value.prometheus.is_none())
        {
            self.at(
                &raw.name.referenced,
                format!(
                    "analysis.prometheus: expected at least an address (provider {} takes its metrics from Prometheus)",
                    provider.as_str()
                ),
            );
        }
        let traffic = if traffic_ok {
            self.traffic(raw_traffic, &stable, &canary)
        } else {
            None
        };
        let steps = self.steps(raw.steps);
        let analysis = self
            .analysis(raw_analysis.map(|a| a.value), provider)
            .filter(|_| analysis_ok);
        let notifications = raw
            .notifications
            .into_iter()
            .filter_map(|n| {
                let url = self.http_url(
                    &n.webhook.value,
                    &n.webhook.referenced,
                    "notifications[].webhook",
                )?;
                Some(notify::Target {
                    url,
                    format: match n.format {
                        Some(RawFormat::Slack) => notify::Format::Slack,
                        _ => notify::Format::Json,
                    },
                })
            })
            .collect();
        let pre_rollout = match raw.pre_rollout {
            Some(hook) => {
                Some(self.http_url(&hook.url.value, &hook.url.referenced, "preRollout.url")?)
            }
            None => None,
        };
        let progress_deadline = match raw.progress_deadline {
            Some(d) if d.value.0.is_zero() => {
                self.at(
                    &d.referenced,
                    "progressDeadline: expected a duration above 0, like 10m",
                );
                None
            }
            Some(d) => Some(d.value.0),
            None => None,
        };
        Some(Rollout {
            name,
            stable,
            canary,
            traffic: traffic?,
            steps: steps?,
            analysis: analysis?,
            notifications,
            pre_rollout,
            progress_deadline,
        })
    }

    /// A section as written: `(None, true)` when its key is left out,
    /// `(None, false)` (a problem recorded) when the key has nothing after
    /// it.
    fn section<T>(
        &mut self,
        raw: Option<Spanned<Option<T>>>,
        empty: &str,
    ) -> (Option<Spanned<T>>, bool) {
        match raw {
            None => (None, true),
            Some(Spanned {
                value: None,
                referenced,
                ..
            }) => {
                self.at(&referenced, empty);
                (None, false)
            }
            Some(Spanned {
                value: Some(value),
                referenced,
                defined,
            }) => (
                Some(Spanned {
                    value,
                    referenced,
                    defined,
                }),
                true,
            ),
        }
    }

    /// One version's section; the canary's is checked against `stable`'s.
    fn side(&mut self, raw: Spanned<RawSide>, which: &str, stable: Option<&Side>) -> Side {
        let RawSide {
            version,
            upstream,
            image,
        } = raw.value;
        if version.value.trim().is_empty() {
            self.at(
                &version.referenced,
                format!("{which}.version: expected a version label, got an empty one"),
            );
        } else if !readable_label(&version.value) {
            self.at(
                &version.referenced,
                format!(
                    "{which}.version: expected a version label of at most 128 visible ASCII characters, like v1.2.0 (no spaces, no invisible or look-alike characters: a label must read as what it is)"
                ),
            );
        } else if stable.is_some_and(|s| s.version == version.value) {
            self.at(
                &version.referenced,
                format!(
                    "{which}.version: expected a version other than stable's, got `{}` for both",
                    version.value
                ),
            );
        }
        if let (Some(u), Some(theirs)) = (&upstream, stable.and_then(|s| s.upstream.as_ref()))
            && same_server(&u.value, theirs)
        {
            self.at(
                &u.referenced,
                format!(
                    "{which}.upstream: expected a server other than stable's, got `{theirs}` for both (the judge would compare the stable with itself)"
                ),
            );
        }
        // A bad upstream is reported here, once; it stays "given", so no
        // second error says it is missing.
        let upstream = upstream.map(|u| {
            if let Err(e) = Upstream::parse(&u.value) {
                self.at(&u.referenced, format!("{which}.upstream: {e}"));
            }
            u.value
        });
        Side {
            version: version.value,
            upstream,
            image,
        }
    }

    fn traffic(
        &mut self,
        raw: Option<Spanned<RawTraffic>>,
        stable: &Side,
        canary: &Side,
    ) -> Option<Traffic> {
        let (raw, at) = match raw {
            Some(t) => (t.value, t.referenced),
            None => (
                RawTraffic {
                    provider: None,
                    listen: None,
                    sticky: None,
                    routes: Vec::new(),
                    nginx: None,
                    kubernetes: None,
                },
                Location::UNKNOWN,
            ),
        };
        let provider = raw.provider.unwrap_or(Provider::Builtin);
        let mut ok = true;
        let listen = match &raw.listen {
            Some(l) => match l.value.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.at(
                        &l.referenced,
                        format!(
                            "traffic.listen: expected an address like 127.0.0.1:8080, got `{}`",
                            l.value
                        ),
                    );
                    ok = false;
                    None
                }
            },
            None => None,
        };
        if matches!(provider, Provider::Builtin | Provider::Nginx) {
            if raw.listen.is_none() {
                self.at(
                    &at,
                    format!(
                        "traffic.listen: expected an address like 127.0.0.1:8080 (required by provider {})",
                        provider.as_str()
                    ),
                );
                ok = false;
            }
            for (side, which) in [(stable, "stable"), (canary, "canary")] {
                if side.upstream.is_none() {
                    self.at(
                        &at,
                        format!(
                            "{which}.upstream: expected http://host:port (required by provider {})",
                            provider.as_str()
                        ),
                    );
                    ok = false;
                }
            }
        }
        let sticky = match raw.sticky {
            Some(s) => {
                let key = match (&s.value.cookie, &s.value.header) {
                    (Some(c), None) => StickyKey::cookie(c).map_err(|e| e.to_string()),
                    (None, Some(h)) => StickyKey::header(h).map_err(|e| e.to_string()),
                    _ => Err("expected exactly one of cookie or header".to_string()),
                };
                match key {
                    Ok(k) => Some(k),
                    Err(e) => {
                        self.at(&s.referenced, format!("traffic.sticky: {e}"));
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        let mut routes = Vec::new();
        for r in raw.routes {
            let version = match r.value.version {
                RawVersion::Stable => Version::Stable,
                RawVersion::Canary => Version::Canary,
            };
            let route = match (&r.value.when.header, &r.value.when.cookie) {
                (Some(h), None) => {
                    Route::header(&h.name, &h.value, version).map_err(|e| e.to_string())
                }
                (None, Some(c)) => {
                    Route::cookie(&c.name, &c.value, version).map_err(|e| e.to_string())
                }
                _ => Err("expected exactly one of header or cookie in match".to_string()),
            };
            match route {
                Ok(route) => routes.push(route),
                Err(e) => {
                    self.at(&r.referenced, format!("traffic.routes: {e}"));
                    ok = false;
                }
            }
        }
        let nginx = match (provider, raw.nginx) {
            // nginx appends JSON to the access log: where nginx reads
            // configuration (the include, any `*.conf`) it would break
            // every later `nginx -t`, every rollout's rollback included.
            (Provider::Nginx, Some(n))
                if n.access_log == n.include
                    || n.access_log.extension().is_some_and(|e| e == "conf") =>
            {
                self.at(
                    &at,
                    format!(
                        "traffic.nginx.accessLog: expected a log file of its own, not the include nor a `.conf` file nginx could read as configuration, got `{}`",
                        n.access_log.display()
                    ),
                );
                ok = false;
                None
            }
            (Provider::Nginx, Some(n)) => Some(NginxSettings {
                include: n.include,
                test: crate::providers::traffic::nginx::argv(
                    n.test.as_deref().unwrap_or("nginx -t"),
                ),
                reload: crate::providers::traffic::nginx::argv(
                    n.reload.as_deref().unwrap_or("nginx -s reload"),
                ),
                access_log: n.access_log,
            }),
            (Provider::Nginx, None) => {
                self.at(
                    &at,
                    "traffic.nginx: expected a section with include and accessLog (required by provider nginx)",
                );
                ok = false;
                None
            }
            (_, Some(_)) => {
                self.at(
                    &at,
                    format!(
                        "traffic.nginx: only used by provider nginx, not {}",
                        provider.as_str()
                    ),
                );
                ok = false;
                None
            }
            (_, None) => None,
        };
        let kubernetes = match (provider.is_kubernetes(), raw.kubernetes) {
            (true, Some(k)) => {
                let needed = match provider {
                    Provider::NginxIngress => ("ingress", k.ingress.is_some()),
                    Provider::Istio => ("virtualService", k.virtual_service.is_some()),
                    _ => ("httpRoute", k.http_route.is_some()),
                };
                if !needed.1 {
                    self.at(
                        &at,
                        format!(
                            "traffic.kubernetes.{}: expected a name (required by provider {})",
                            needed.0,
                            provider.as_str()
                        ),
                    );
                    ok = false;
                }
                Some(KubernetesSettings {
                    namespace: k.namespace.unwrap_or_else(|| "default".to_string()),
                    service: k.service.unwrap_or_else(|| k.deployment.clone()),
                    deployment: k.deployment,
                    ingress: k.ingress,
                    virtual_service: k.virtual_service,
                    http_route: k.http_route,
                    scale_with_weight: k.scale_with_weight.unwrap_or(true),
                })
            }
            (true, None) => {
                self.at(
                    &at,
                    format!(
                        "traffic.kubernetes: expected a section with namespace and deployment (required by provider {})",
                        provider.as_str()
                    ),
                );
                ok = false;
                None
            }
            (false, Some(_)) => {
                self.at(
                    &at,
                    format!(
                        "traffic.kubernetes: only used by the Kubernetes providers, not {}",
                        provider.as_str()
                    ),
                );
                ok = false;
                None
            }
            (false, None) => None,
        };
        ok.then_some(Traffic {
            provider,
            listen,
            sticky,
            routes,
            nginx,
            kubernetes,
        })
    }

    fn steps(&mut self, raw: Option<Spanned<Option<Vec<RawStep>>>>) -> Option<Vec<Step>> {
        let Some(raw) = raw else {
            return Some(default_steps());
        };
        let list = raw.value.unwrap_or_default();
        if list.is_empty() {
            self.at(
                &raw.referenced,
                "steps: expected at least one step (or leave steps out for 5, 25, 50, 100 % with 60 s pauses)",
            );
            return None;
        }
        let mut ok = true;
        let mut steps = Vec::new();
        // The weight in force before each step, and where it was set.
        let mut weight = Weight::ZERO;
        let mut last_set: Option<(Location, &'static str)> = None;
        let mut ever_above_zero = false;
        for step in list {
            match step {
                RawStep::SetWeight(w) => {
                    let new = w.value.0;
                    if new < weight {
                        self.at(
                            &w.referenced,
                            format!(
                                "setWeight: {new} lowers the canary weight from {weight} %, refused as a likely typo: expected a weight of at least {weight}, or `lowerWeight: {new}` to lower it on purpose"
                            ),
                        );
                        ok = false;
                    }
                    weight = new;
                    ever_above_zero |= new > Weight::ZERO;
                    last_set = Some((w.referenced, "setWeight"));
                    steps.push(Step::SetWeight(new));
                }
                RawStep::LowerWeight(w) => {
                    let new = w.value.0;
                    if new >= weight {
                        self.at(
                            &w.referenced,
                            format!(
                                "lowerWeight: {new} does not lower the canary weight ({weight} % before it): expected a weight below {weight}, or `setWeight: {new}`"
                            ),
                        );
                        ok = false;
                    }
                    weight = new;
                    last_set = Some((w.referenced, "lowerWeight"));
                    steps.push(Step::SetWeight(new));
                }
                RawStep::Pause(p) => {
                    let RawPause {
                        duration,
                        until,
                        url,
                    } = p.value;
                    let step = match (duration, until, url) {
                        (Some(d), None, None) => Some(Step::PauseFor(d.0)),
                        (None, None, None) | (None, Some(RawUntil::Promoted), None) => {
                            Some(Step::PauseUntilPromoted)
                        }
                        (None, Some(RawUntil::Webhook), Some(url)) => self
                            .http_url(&url, &p.referenced, "pause.url")
                            .map(Step::PauseUntilGate),
                        (None, Some(RawUntil::Webhook), None) => {
                            self.at(&p.referenced, "pause: `until: webhook` expects a url");
                            None
                        }
                        _ => {
                            self.at(
                                &p.referenced,
                                "pause: expected one of {duration: 60s}, {} (wait for promote), or {until: webhook, url: http://…}",
                            );
                            None
                        }
                    };
                    match step {
                        Some(s) => steps.push(s),
                        None => ok = false,
                    }
                }
            }
        }
        // The end promotes the canary, which needs a passing verdict at a
        // weight above 0: a plan whose weight is 0 at the end can never earn it.
        if !ever_above_zero {
            self.at(
                &raw.referenced,
                "steps: expected a setWeight above 0 before the end (without canary traffic the plan can never be judged, and its end promotes the canary)",
            );
            ok = false;
        } else if weight == Weight::ZERO
            && let Some((at, key)) = last_set
        {
            self.at(
                &at,
                format!(
                    "{key}: 0 is the last weight: the end promotes the canary, which can never be judged at 0 %; expected a last weight above 0"
                ),
            );
            ok = false;
        }
        ok.then_some(steps)
    }

    fn analysis(
        &mut self,
        raw: Option<RawAnalysis>,
        provider: Provider,
    ) -> Option<AnalysisSettings> {
        let defaults = AnalysisSettings::default();
        let Some(raw) = raw else {
            return Some(defaults);
        };
        let mut ok = true;
        let interval = match raw.interval {
            Some(i) if i.value.0 < Duration::from_millis(100) => {
                self.at(&i.referenced, "analysis.interval: expected at least 100ms");
                ok = false;
                defaults.interval
            }
            // A verdict at least every hour: a longer interval would leave a
            // failing canary in traffic that long.
            Some(i) if i.value.0 > Duration::from_secs(3600) => {
                self.at(&i.referenced, "analysis.interval: expected at most 1h");
                ok = false;
                defaults.interval
            }
            Some(i) => i.value.0,
            None => defaults.interval,
        };
        let confidence = match raw.statistics.as_ref().and_then(|s| s.confidence.as_ref()) {
            Some(c) if !(c.value > 0.5 && c.value < 1.0) => {
                self.at(
                    &c.referenced,
                    format!(
                        "analysis.statistics.confidence: expected a number between 0.5 and 1 (exclusive), like 0.95, got {}",
                        c.value
                    ),
                );
                ok = false;
                defaults.confidence
            }
            Some(c) => c.value,
            None => defaults.confidence,
        };
        let no_data_limit = match raw.no_data_limit {
            Some(n) if n.value.0 == 0 || n.value.0 > 1000 => {
                self.at(&n.referenced, "analysis.noDataLimit: expected at least 1");
                ok = false;
                defaults.no_data_limit
            }
            Some(n) => u32::try_from(n.value.0).unwrap_or(u32::MAX),
            None => defaults.no_data_limit,
        };
        let prometheus = match raw.prometheus {
            Some(p) => {
                let address = p.address.value.trim_end_matches('/').to_string();
                if !(address.starts_with("http://") || address.starts_with("https://")) {
                    self.at(
                        &p.address.referenced,
                        format!(
                            "analysis.prometheus.address: expected http://host:port, got `{}`",
                            p.address.value
                        ),
                    );
                    ok = false;
                }
                match (p.requests, p.errors) {
                    (Some(requests), Some(errors)) => Some(PrometheusSettings {
                        address,
                        requests,
                        errors,
                        latency_buckets: p.latency_buckets,
                        client_errors: p.client_errors,
                    }),
                    // Filled with the provider's ready-made queries by `parse`.
                    (None, None) if provider.is_kubernetes() => Some(PrometheusSettings {
                        address,
                        requests: String::new(),
                        errors: String::new(),
                        latency_buckets: None,
                        client_errors: p.client_errors,
                    }),
                    _ => {
                        self.at(
                            &p.address.referenced,
                            format!(
                                "analysis.prometheus: expected both requests and errors queries (ready-made ones exist only for the Kubernetes providers, not {})",
                                provider.as_str()
                            ),
                        );
                        ok = false;
                        None
                    }
                }
            }
            None => None,
        };
        let mut custom = Vec::new();
        for c in raw.custom {
            if prometheus.is_none() {
                self.at(
                    &c.referenced,
                    "analysis.custom: expected analysis.prometheus too (custom metrics are PromQL queries)",
                );
                ok = false;
            }
            let name = c.value.name.trim();
            if name.is_empty() || custom.iter().any(|o: &CustomMetric| o.name == name) {
                self.at(
                    &c.referenced,
                    format!(
                        "analysis.custom: expected a name of its own, got `{}` (names tell the metrics apart in verdicts and reports)",
                        c.value.name
                    ),
                );
                ok = false;
            }
            custom.push(CustomMetric {
                name: c.value.name,
                numerator: c.value.numerator,
                denominator: c.value.denominator,
                direction: c.value.direction,
                max_ratio_to_stable: c.value.max_ratio_to_stable.map_or(1.0, |r| r.0),
            });
        }
        // Without latency buckets from Prometheus there is no latency to
        // judge: the default p95 limit is dropped, an explicit one refused
        // (it would be no data every interval).
        let no_latency = prometheus
            .as_ref()
            .is_some_and(|p| p.latency_buckets.is_none());
        if no_latency {
            for (given, field) in [
                (&raw.latency_p50, "latencyP50"),
                (&raw.latency_p95, "latencyP95"),
                (&raw.latency_p99, "latencyP99"),
            ] {
                if let Some(given) = given {
                    self.at(
                        &given.referenced,
                        format!(
                            "analysis.{field}: expected analysis.prometheus.latencyBuckets too (without it there is no latency to judge)"
                        ),
                    );
                    ok = false;
                }
            }
        }
        // Limits the judge could never meet, or never apply, are refused here
        // where their place is known.
        for (given, field) in [
            (&raw.latency_p50, "latencyP50"),
            (&raw.latency_p95, "latencyP95"),
            (&raw.latency_p99, "latencyP99"),
        ] {
            if let Some(max) = given.as_ref().and_then(|l| l.value.max.as_ref())
                && max.value.0.is_zero()
            {
                self.at(
                    &max.referenced,
                    format!("analysis.{field}.max: expected a latency above 0, like 500ms"),
                );
                ok = false;
            }
        }
        if let Some(max) = raw.error_rate.as_ref().and_then(|e| e.max.as_ref())
            && max.value.0 == 0.0
        {
            self.at(
                &max.referenced,
                "analysis.errorRate.max: expected a percentage above 0%, like 0.1% (at 0% a single error fails the canary; to allow no more errors than stable, use maxRatioToStable)",
            );
            ok = false;
        }
        let min_requests = match &raw.min_requests {
            Some(n) if n.value.0 == 0 => {
                self.at(
                    &n.referenced,
                    "analysis.minRequests: expected at least 1 (a verdict on no requests is no evidence)",
                );
                ok = false;
                defaults.min_requests
            }
            Some(n) => n.value.0,
            None => defaults.min_requests,
        };
        let client_error_ratio = self.client_error_ratio(
            raw.client_error_rate.as_ref(),
            prometheus.as_ref(),
            defaults.client_error_ratio,
        );
        ok &= client_error_ratio.is_some();
        let client_error_ratio = client_error_ratio.unwrap_or(None);
        let defaults = if no_latency {
            AnalysisSettings {
                latency_p95: Limit::default(),
                ..defaults
            }
        } else {
            defaults
        };
        let latency = |l: Option<Spanned<RawLatencyLimit>>, default: Limit| match l {
            Some(l) => Limit {
                max: l.value.max.map(|d| d.value.0.as_secs_f64() * 1000.0),
                max_ratio_to_stable: l.value.max_ratio_to_stable.map(|r| r.0),
            },
            None => default,
        };
        let settings = AnalysisSettings {
            interval,
            min_requests,
            error_rate: match raw.error_rate {
                Some(e) => Limit {
                    max: e.max.map(|p| p.value.0),
                    max_ratio_to_stable: e.max_ratio_to_stable.map(|r| r.0),
                },
                None => defaults.error_rate,
            },
            latency_p50: latency(raw.latency_p50, defaults.latency_p50),
            latency_p95: latency(raw.latency_p95, defaults.latency_p95),
            latency_p99: latency(raw.latency_p99, defaults.latency_p99),
            method: raw
                .statistics
                .as_ref()
                .and_then(|s| s.method)
                .unwrap_or(defaults.method),
            confidence,
            no_data_limit,
            prometheus,
            custom,
            client_error_ratio,
        };
        ok.then_some(settings)
    }

    /// `analysis.clientErrorRate`: `Some(None)` when off, `Some(Some(r))`
    /// for a ratio, `None` (a problem recorded) when it cannot be used.
    /// With Prometheus as the source and no `clientErrors` query there are
    /// no 4xx counts: the default check is off, an explicit one refused.
    fn client_error_ratio(
        &mut self,
        raw: Option<&Spanned<RawClientErrorRate>>,
        prometheus: Option<&PrometheusSettings>,
        default: Option<f64>,
    ) -> Option<Option<f64>> {
        let no_counts = prometheus.is_some_and(|p| p.client_errors.is_none());
        let Some(raw) = raw else {
            return Some(if no_counts { None } else { default });
        };
        let ratio = match &raw.value.max_ratio_to_stable {
            None => default,
            Some(t) if t.value.0.trim() == "off" => return Some(None),
            Some(t) => match t.value.0.trim().parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 1.0 => Some(v),
                _ => {
                    self.at(
                        &t.referenced,
                        format!(
                            "analysis.clientErrorRate.maxRatioToStable: expected a ratio of at least 1, like 5, or `off`, got `{}`",
                            t.value.0
                        ),
                    );
                    return None;
                }
            },
        };
        if no_counts {
            self.at(
                &raw.referenced,
                "analysis.clientErrorRate: expected analysis.prometheus.clientErrors too (without a 4xx query there is nothing to compare), or `maxRatioToStable: off`",
            );
            return None;
        }
        Some(ratio)
    }

    fn http_url(&mut self, url: &str, at: &Location, field: &str) -> Option<String> {
        let v = url.trim();
        if v.starts_with("http://") || v.starts_with("https://") {
            Some(v.to_string())
        } else {
            self.at(
                at,
                format!("{field}: expected an http:// or https:// URL, got `{url}`"),
            );
            None
        }
    }
}

/// `[a-z0-9-]`, 1 to 63 characters, not starting with `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
name: checkout
stable:
  version: v1
  upstream: http://127.0.0.1:9001
canary:
  version: v2
  upstream: http://127.0.0.1:9002
traffic:
  listen: 127.0.0.1:8080
";

    fn problems(text: &str) -> Vec<String> {
        match parse(text, "r.yaml") {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e.to_string().lines().map(str::to_string).collect(),
        }
    }

    #[test]
    fn minimal_file_gets_the_spec_defaults() {
        let r = parse(MINIMAL, "r.yaml").expect("valid");
        assert_eq!(r.name, "checkout");
        assert_eq!(r.traffic.provider, Provider::Builtin);
        assert_eq!(r.steps, default_steps());
        assert_eq!(r.steps.len(), 8);
        assert_eq!(r.analysis, AnalysisSettings::default());
        assert_eq!(r.analysis.error_rate.max, Some(0.05));
        assert_eq!(r.analysis.latency_p95.max, Some(1000.0));
        assert_eq!(r.analysis.interval, Duration::from_secs(10));
        let plan = r.plan();
        assert_eq!(plan.no_data_limit, 3);
        assert!(!plan.judge_at_end_of_pause);
    }

    #[test]
    fn the_specs_example_reads() {
        let text = format!(
            "{MINIMAL}  sticky:\n    cookie: session\n  routes:\n    - match: {{ header: {{ name: x-canary, value: always }} }}\n      version: canary\n\
steps:\n  - setWeight: 5\n  - pause: {{ duration: 60s }}\n  - setWeight: 12.5\n  - pause: {{}}\n  - setWeight: \"50%\"\n  - pause: {{ until: webhook, url: http://127.0.0.1:1/gate }}\n\
analysis:\n  interval: 2s\n  minRequests: 50\n  errorRate: {{ max: 2%, maxRatioToStable: 2.0 }}\n  latencyP95: {{ max: 500ms, maxRatioToStable: 1.5 }}\n  latencyP99: {{ max: 2s }}\n  statistics: {{ method: fixed, confidence: 0.99 }}\n  noDataLimit: 5\n\
notifications:\n  - webhook: https://hooks.example.com/x\n    format: slack\n\
preRollout:\n  url: http://127.0.0.1:1/check\n"
        );
        let r = parse(&text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.steps,
            vec![
                Step::SetWeight(Weight::from_percent(5.0).expect("w")),
                Step::PauseFor(Duration::from_secs(60)),
                Step::SetWeight(Weight::from_hundredths(1250).expect("w")),
                Step::PauseUntilPromoted,
                Step::SetWeight(Weight::from_percent(50.0).expect("w")),
                Step::PauseUntilGate("http://127.0.0.1:1/gate".into()),
            ]
        );
        assert_eq!(
            r.traffic.sticky,
            Some(StickyKey::cookie("session").expect("ok"))
        );
        assert_eq!(r.traffic.routes.len(), 1);
        let a = &r.analysis;
        assert_eq!(a.interval, Duration::from_secs(2));
        assert_eq!(a.min_requests, 50);
        assert_eq!(a.error_rate.max, Some(0.02));
        assert_eq!(a.error_rate.max_ratio_to_stable, Some(2.0));
        assert_eq!(a.latency_p95.max, Some(500.0));
        assert_eq!(a.latency_p99.max, Some(2000.0));
        assert_eq!(a.method, Method::Fixed);
        assert_eq!(a.confidence, 0.99);
        assert_eq!(a.no_data_limit, 5);
        assert!(r.plan().judge_at_end_of_pause);
        assert_eq!(r.notifications[0].format, notify::Format::Slack);
        assert_eq!(r.pre_rollout.as_deref(), Some("http://127.0.0.1:1/check"));
    }

    #[test]
    fn unknown_fields_are_refused_with_their_place() {
        let text = MINIMAL.replace("  listen:", "  lisen: x\n  listen:");
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("r.yaml:9:3: "), "{p:?}");
        assert!(p[0].contains("lisen"), "{p:?}");
    }

    #[test]
    fn a_weight_above_100_names_its_line() {
        let text = format!("{MINIMAL}steps:\n  - setWeight: 120\n");
        let p = problems(&text);
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(p[0].contains("0 to 100"), "{p:?}");
    }

    #[test]
    fn durations_and_percentages_must_parse() {
        let text = format!("{MINIMAL}analysis:\n  interval: soon\n");
        let p = problems(&text);
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(p[0].contains("duration"), "{p:?}");
        let text = format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0.05 }}\n");
        let p = problems(&text);
        assert!(p[0].contains("percentage like 5%"), "{p:?}");
    }

    #[test]
    fn resolver_shorthand_addresses_are_read_without_the_resolver() {
        for (text, ip) in [
            ("127.1", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("10.0.0.5", "10.0.0.5"),
        ] {
            assert_eq!(shorthand_ipv4(text), Some(ip.parse().unwrap()), "{text}");
        }
        for text in ["256.1", "1.2.3.4.5", "cafe.example", "127.256.0.1", ""] {
            assert_eq!(shorthand_ipv4(text), None, "{text}");
        }
    }

    /// Found by trying to break it: these were accepted (a 584-million-year
    /// interval never judges; a pause shown as 5124095576030431h; a canary
    /// that is the stable server; a label with a right-to-left override).
    #[test]
    fn absurd_durations_and_look_alike_versions_are_refused_with_their_place() {
        let p = problems(&format!(
            "{MINIMAL}analysis:\n  interval: 18446744073709551615ms\n"
        ));
        assert!(
            p[0].starts_with("r.yaml:11:") && p[0].contains("at most 720h"),
            "{p:?}"
        );
        let p = problems(&format!("{MINIMAL}analysis:\n  interval: 2h\n"));
        assert!(
            p[0].contains("analysis.interval: expected at most 1h"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{MINIMAL}steps:\n  - setWeight: 5\n  - pause: {{ duration: 99999999999999999h }}\n"
        ));
        assert!(p.iter().any(|e| e.contains("at most 720h")), "{p:?}");
        let same = MINIMAL.replacen("http://127.0.0.1:9002", "http://127.0.0.1:9001", 1);
        let p = problems(&same);
        assert!(
            p.iter()
                .any(|e| e.contains("canary.upstream: expected a server other than stable's")),
            "{p:?}"
        );
        let p = problems(&MINIMAL.replacen("v2", "v1", 1));
        assert!(
            p.iter()
                .any(|e| e.contains("canary.version: expected a version other than stable's")),
            "{p:?}"
        );
        let p = problems(&MINIMAL.replacen("v2", "\"v2\\u202Eevil\"", 1));
        assert!(p.iter().any(|e| e.contains("visible ASCII")), "{p:?}");
        for look_alike in ["v1\\u00AD", "\\u0432", "v1\\u00A0", "v1 ", "v1\\u2028"] {
            let p = problems(&MINIMAL.replacen("v2", &format!("\"{look_alike}\""), 1));
            assert!(
                p.iter().any(|e| e.contains("visible ASCII")),
                "{look_alike}: {p:?}"
            );
        }
        for same in [
            "http://127.1:9001",
            "http://localhost:9001",
            "http://[::ffff:127.0.0.1]:9001",
            "http://[::1]:9001",
        ] {
            let p = problems(&MINIMAL.replacen("http://127.0.0.1:9002", same, 1));
            assert!(
                p.iter()
                    .any(|e| e.contains("expected a server other than stable's"))
                    || p.iter().any(|e| e.contains("canary.upstream")),
                "{same}: {p:?}"
            );
        }
    }

    #[test]
    fn a_progress_deadline_is_read_and_must_be_above_zero() {
        assert_eq!(
            parse(MINIMAL, "r.yaml").unwrap().plan().progress_deadline,
            None
        );
        let r = parse(&format!("{MINIMAL}progressDeadline: 10m\n"), "r.yaml").unwrap();
        assert_eq!(r.progress_deadline, Some(Duration::from_secs(600)));
        assert_eq!(r.plan().progress_deadline, Some(Duration::from_secs(600)));
        let p = problems(&format!("{MINIMAL}progressDeadline: 0s\n"));
        assert!(p[0].starts_with("r.yaml:10:"), "{p:?}");
        assert!(
            p[0].contains("progressDeadline: expected a duration above 0"),
            "{p:?}"
        );
        let p = problems(&format!("{MINIMAL}progressDeadline: soon\n"));
        assert!(p[0].starts_with("r.yaml:10:"), "{p:?}");
    }

    #[test]
    fn an_empty_step_list_is_refused() {
        let p = problems(&format!("{MINIMAL}steps: []\n"));
        assert!(p[0].starts_with("r.yaml:10:"), "{p:?}");
        assert!(p[0].contains("at least one step"), "{p:?}");
    }

    /// `MINIMAL` plus `steps:` with these items, e.g. `"  - setWeight: 5\n"`.
    fn with_steps(items: &str) -> String {
        format!("{MINIMAL}steps:\n{items}")
    }

    fn weights(text: &str) -> Vec<u16> {
        let r = parse(text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
        r.steps
            .iter()
            .filter_map(|s| match s {
                Step::SetWeight(w) => Some(w.hundredths()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_plan_that_can_never_be_judged_is_refused_at_its_place() {
        // Fails before this change: each of these read as a valid plan.
        let p = problems(&with_steps("  - pause: { duration: 1m }\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(p[0].contains("expected a setWeight above 0"), "{p:?}");
        let p = problems(&with_steps(
            "  - setWeight: 0\n  - pause: { duration: 1m }\n",
        ));
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(p[0].contains("expected a setWeight above 0"), "{p:?}");
        // The last weight is 0: the end, a promotion, can never be judged.
        let p = problems(&with_steps(
            "  - setWeight: 20\n  - pause: { duration: 1m }\n  - lowerWeight: 0\n",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("r.yaml:13:18: lowerWeight: 0 is the last weight"),
            "{p:?}"
        );
        assert!(p[0].contains("expected a last weight above 0"), "{p:?}");
        // A plan ending on a weight above 0 reads.
        assert_eq!(
            weights(&with_steps(
                "  - setWeight: 20\n  - pause: { duration: 1m }\n"
            )),
            [2000]
        );
    }

    #[test]
    fn a_weight_goes_down_only_where_the_file_says_so() {
        // Fails before this change: 50 then 5 (a typo for 55?) was taken as written.
        let p = problems(&with_steps(
            "  - setWeight: 50\n  - pause: { duration: 1m }\n  - setWeight: 5\n  - pause: {}\n",
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("r.yaml:13:16: setWeight: 5 lowers the canary weight from 50 %"),
            "{p:?}"
        );
        assert!(p[0].contains("`lowerWeight: 5`"), "{p:?}");
        // On purpose: lowerWeight.
        let ok = with_steps(
            "  - setWeight: 50\n  - pause: { duration: 1m }\n  - lowerWeight: 5\n  - pause: {}\n  - setWeight: 100\n",
        );
        assert_eq!(weights(&ok), [5000, 500, 10_000]);
        // lowerWeight that does not lower is refused too (it says the opposite of the plan).
        let p = problems(&with_steps(
            "  - setWeight: 20\n  - pause: {}\n  - lowerWeight: 30\n  - pause: {}\n",
        ));
        assert!(
            p[0].starts_with("r.yaml:13:18: lowerWeight: 30 does not lower"),
            "{p:?}"
        );
        // The same weight twice is no decrease.
        assert_eq!(
            weights(&with_steps(
                "  - setWeight: 20\n  - pause: {}\n  - setWeight: 20\n"
            )),
            [2000, 2000]
        );
    }

    #[test]
    fn min_requests_below_1_is_refused_at_its_place() {
        // Fails before this change: 0 made an empty stage a pass.
        let p = problems(&format!("{MINIMAL}analysis:\n  minRequests: 0\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("r.yaml:11:16: analysis.minRequests: expected at least 1"),
            "{p:?}"
        );
        let r = parse(&format!("{MINIMAL}analysis:\n  minRequests: 1\n"), "r.yaml").unwrap();
        assert_eq!(r.analysis.min_requests, 1);
        assert_eq!(r.plan().min_requests, 1, "the plan names it in its reasons");
    }

    #[test]
    fn the_4xx_check_is_read_overridden_or_turned_off() {
        use crate::controller::analysis::judge_config;
        // Default: on at 5 x stable's rate for sources that count 4xx.
        let r = parse(MINIMAL, "r.yaml").unwrap();
        assert_eq!(r.analysis.client_error_ratio, Some(5.0));
        assert_eq!(judge_config(&r.analysis).client_error_ratio, Some(5.0));
        let r = parse(
            &format!("{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: 2.5 }}\n"),
            "r.yaml",
        )
        .unwrap();
        assert_eq!(judge_config(&r.analysis).client_error_ratio, Some(2.5));
        for off in ["off", "\"off\""] {
            let r = parse(
                &format!("{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: {off} }}\n"),
                "r.yaml",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.analysis.client_error_ratio, None, "{off}");
            assert_eq!(judge_config(&r.analysis).client_error_ratio, None);
        }
        // A ratio below 1 would fail a canary with fewer 4xx than stable.
        for bad in ["0.5", "0", "-1", "no", "5x"] {
            let p = problems(&format!(
                "{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: {bad} }}\n"
            ));
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert!(p[0].starts_with("r.yaml:11:"), "{bad}: {p:?}");
            assert!(
                p[0].contains(
                    "analysis.clientErrorRate.maxRatioToStable: expected a ratio of at least 1, like 5, or `off`"
                ),
                "{bad}: {p:?}"
            );
        }
        // Prometheus: off without a 4xx query, on with one; an explicit
        // limit without the query is refused at its place.
        let prom = "  prometheus: { address: http://127.0.0.1:9090, requests: r, errors: e, latencyBuckets: b";
        let r = parse(&format!("{MINIMAL}analysis:\n{prom} }}\n"), "r.yaml").unwrap();
        assert_eq!(judge_config(&r.analysis).client_error_ratio, None);
        let r = parse(
            &format!("{MINIMAL}analysis:\n{prom}, clientErrors: c }}\n"),
            "r.yaml",
        )
        .unwrap();
        assert_eq!(
            r.analysis
                .prometheus
                .as_ref()
                .unwrap()
                .client_errors
                .as_deref(),
            Some("c")
        );
        assert_eq!(judge_config(&r.analysis).client_error_ratio, Some(5.0));
        let p = problems(&format!(
            "{MINIMAL}analysis:\n{prom} }}\n  clientErrorRate: {{ maxRatioToStable: 3 }}\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("r.yaml:12:"), "{p:?}");
        assert!(
            p[0].contains("expected analysis.prometheus.clientErrors too"),
            "{p:?}"
        );
        let r = parse(
            &format!(
                "{MINIMAL}analysis:\n{prom} }}\n  clientErrorRate: {{ maxRatioToStable: off }}\n"
            ),
            "r.yaml",
        )
        .unwrap();
        assert_eq!(judge_config(&r.analysis).client_error_ratio, None);
    }

    #[test]
    fn steps_with_nothing_after_it_is_refused_like_an_empty_list() {
        // Fails before this change: `steps:` alone silently became the default plan.
        for text in [
            format!("{MINIMAL}steps:\n"),
            format!("{MINIMAL}steps: ~\n"),
            format!("{MINIMAL}steps: []\n"),
        ] {
            let p = problems(&text);
            assert_eq!(p.len(), 1, "{text}: {p:?}");
            assert!(p[0].starts_with("r.yaml:10:"), "{text}: {p:?}");
            assert!(p[0].contains("expected at least one step"), "{text}: {p:?}");
        }
    }

    #[test]
    fn an_empty_analysis_or_traffic_section_is_refused_like_steps() {
        // Fails before this change: `analysis:` alone silently became the
        // defaults, `traffic:` alone a listen error without a line.
        for text in [
            format!("{MINIMAL}analysis:\n"),
            format!("{MINIMAL}analysis: ~\n"),
        ] {
            let p = problems(&text);
            assert_eq!(p.len(), 1, "{text}: {p:?}");
            assert!(
                p[0].starts_with("r.yaml:10:")
                    && p[0].contains("analysis: expected at least one setting"),
                "{text}: {p:?}"
            );
        }
        let bare = MINIMAL.replace("traffic:\n  listen: 127.0.0.1:8080\n", "traffic:\n");
        for text in [bare.clone(), bare.replace("traffic:\n", "traffic: ~\n")] {
            let p = problems(&text);
            assert_eq!(p.len(), 1, "{text}: {p:?}");
            assert!(
                p[0].starts_with("r.yaml:8:")
                    && p[0].contains("traffic: expected a section with at least listen"),
                "{text}: {p:?}"
            );
        }
        // Left out, analysis gets the defaults; `{}` says so on purpose.
        assert_eq!(
            parse(MINIMAL, "r.yaml").unwrap().analysis,
            AnalysisSettings::default()
        );
        let r = parse(&format!("{MINIMAL}analysis: {{}}\n"), "r.yaml").unwrap();
        assert_eq!(r.analysis, AnalysisSettings::default());
    }

    #[test]
    fn limits_the_judge_cannot_use_are_refused_at_their_place() {
        // Fails before this change: read, then refused by the judge without a line.
        let p = problems(&format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0% }}\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(
            p[0].contains("analysis.errorRate.max: expected a percentage above 0%"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{MINIMAL}analysis:\n  latencyP99: {{ max: 0ms }}\n"
        ));
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(
            p[0].contains("analysis.latencyP99.max: expected a latency above 0"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{MINIMAL}analysis:\n  prometheus: {{ address: http://127.0.0.1:9090, requests: r, errors: e }}\n  latencyP95: {{ max: 300ms }}\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("r.yaml:12:"), "{p:?}");
        assert!(
            p[0].contains("analysis.latencyP95: expected analysis.prometheus.latencyBuckets"),
            "{p:?}"
        );
        let p = problems(&format!(
            "{MINIMAL}analysis:\n  prometheus: {{ address: http://127.0.0.1:9090, requests: r, errors: e }}\n  custom:\n    - {{name: x, numerator: a, denominator: b, direction: higherIsBetter}}\n    - {{name: x, numerator: c, denominator: d, direction: higherIsBetter}}\n"
        ));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("r.yaml:14:"), "{p:?}");
        assert!(p[0].contains("a name of its own, got `x`"), "{p:?}");
        // Every analysis section read here is one the judge accepts.
        let r = parse(
            &format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0.0001% }}\n"),
            "r.yaml",
        )
        .unwrap();
        assert!(
            crate::controller::analysis::judge_config(&r.analysis)
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn numbers_are_read_as_written_or_refused() {
        // Fails before this change: both were read as 100 (%).
        let p = problems(&with_steps("  - setWeight: 99.999999999999999999\n"));
        assert!(
            p[0].starts_with(
                "r.yaml:11:16: expected a weight from 0 to 100 with at most two decimals"
            ),
            "{p:?}"
        );
        assert!(p[0].contains("`99.999999999999999999`"), "{p:?}");
        let p = problems(&format!(
            "{MINIMAL}analysis:\n  errorRate: {{ max: 99.999999999999999999% }}\n"
        ));
        assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
        assert!(p[0].contains("at most four decimals"), "{p:?}");
        // Exact forms still read, quoted or not, in YAML and JSON.
        assert_eq!(
            weights(&with_steps(
                "  - setWeight: 12.25\n  - setWeight: \"99.99%\"\n  - setWeight: 100.0\n"
            )),
            [1225, 9999, 10_000]
        );
        let r = parse(
            &format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0.0125% }}\n"),
            "r.yaml",
        )
        .unwrap();
        assert!((r.analysis.error_rate.max.unwrap() - 0.000125).abs() < 1e-15);
        for bad in ["5.", ".5", "-1", "1e2", "0x10", "100.01", "5 %%"] {
            let p = problems(&with_steps(&format!("  - setWeight: \"{bad}\"\n")));
            assert!(p[0].contains("expected a weight"), "{bad}: {p:?}");
        }
        let text = r#"{"name":"a","stable":{"version":"v1","upstream":"http://127.0.0.1:1"},"canary":{"version":"v2","upstream":"http://127.0.0.1:2"},"traffic":{"listen":"127.0.0.1:0"},"steps":[{"setWeight":99.999999999999999999}]}"#;
        assert!(
            parse(text, "body").is_err(),
            "JSON numbers are read as written too"
        );
    }

    #[test]
    fn a_bare_number_is_not_a_duration() {
        // Fails before this change: `1` was read as one second.
        for (text, line) in [
            (format!("{MINIMAL}analysis:\n  interval: 1\n"), "r.yaml:11:"),
            (
                with_steps("  - setWeight: 5\n  - pause: { duration: 60 }\n"),
                "r.yaml:12:",
            ),
            (
                format!("{MINIMAL}analysis:\n  latencyP95: {{ max: 250 }}\n"),
                "r.yaml:11:",
            ),
            (format!("{MINIMAL}progressDeadline: 600\n"), "r.yaml:10:"),
        ] {
            let p = problems(&text);
            assert!(p[0].starts_with(line), "{text}: {p:?}");
            assert!(p[0].contains("a number without its unit"), "{text}: {p:?}");
        }
    }

    #[test]
    fn every_cross_field_problem_is_reported_at_once() {
        let text = "\
name: Bad_Name
stable:
  version: v1
  upstream: ftp://x
canary:
  version: v2
traffic:
  listen: nowhere
";
        let p = problems(text);
        assert!(
            p.iter()
                .any(|l| l.starts_with("r.yaml:1:") && l.contains("name:")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.starts_with("r.yaml:4:") && l.contains("stable.upstream")),
            "{p:?}"
        );
        assert!(p.iter().any(|l| l.contains("canary.upstream")), "{p:?}");
        assert!(
            p.iter()
                .any(|l| l.starts_with("r.yaml:8:") && l.contains("traffic.listen")),
            "{p:?}"
        );
    }

    #[test]
    fn providers_need_their_sections() {
        let text = MINIMAL.replace("traffic:\n", "traffic:\n  provider: nginx\n");
        assert!(problems(&text)[0].contains("traffic.nginx"));
        // An access log where nginx reads configuration is refused (found
        // by the outside tests: it broke every later `nginx -t`).
        for log in ["/etc/nginx/conf.d/zz.conf", "/etc/nginx/conf.d/serin.conf"] {
            let text = MINIMAL.replace(
                "traffic:\n",
                &format!("traffic:\n  provider: nginx\n  nginx: {{include: /etc/nginx/conf.d/serin.conf, accessLog: {log}}}\n"),
            );
            let p = problems(&text);
            assert!(
                p.iter()
                    .any(|l| l.contains("traffic.nginx.accessLog: expected a log file of its own")),
                "{p:?}"
            );
        }
        let text = "name: a\nstable: {version: v1}\ncanary: {version: v2}\ntraffic:\n  provider: gateway-api\n  kubernetes: {namespace: shop, deployment: a}\n";
        let p = problems(text);
        assert!(
            p.iter().any(|l| l.contains("traffic.kubernetes.httpRoute")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("analysis.prometheus: expected at least an address")),
            "{p:?}"
        );
        let ok = text.replace("deployment: a}", "deployment: a, httpRoute: a}")
            + "analysis:\n  prometheus: {address: http://127.0.0.1:9090}\n";
        let r = parse(&ok, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
        let prometheus = r.analysis.prometheus.clone().expect("prometheus");
        assert!(
            prometheus.requests.contains("http_requests_total"),
            "ready-made: {prometheus:?}"
        );
        assert!(prometheus.latency_buckets.is_some());
        let k = r.traffic.kubernetes.expect("kubernetes");
        assert_eq!(k.service, "a");
        assert!(k.scale_with_weight);
        // Outside Kubernetes there are no ready-made queries.
        let text =
            format!("{MINIMAL}analysis:\n  prometheus: {{address: http://127.0.0.1:9090}}\n");
        assert!(problems(&text)[0].contains("expected both requests and errors"));
    }

    #[test]
    fn custom_metrics_need_prometheus() {
        let text = format!(
            "{MINIMAL}analysis:\n  custom:\n    - {{name: checkout, numerator: a, denominator: b, direction: higherIsBetter}}\n"
        );
        assert!(problems(&text)[0].contains("analysis.prometheus"));
    }

    #[test]
    fn every_example_file_reads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                read(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 5, "{n} examples");
    }

    #[test]
    fn json_is_read_too() {
        let text = r#"{"name":"a","stable":{"version":"v1","upstream":"http://127.0.0.1:1"},"canary":{"version":"v2","upstream":"http://127.0.0.1:2"},"traffic":{"listen":"127.0.0.1:0"},"steps":[{"setWeight":50}]}"#;
        let r = parse(text, "body").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            r.steps,
            vec![Step::SetWeight(Weight::from_percent(50.0).expect("w"))]
        );
    }
}
