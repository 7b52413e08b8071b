//! The rollout file: YAML (or JSON) read into typed, validated settings.
//!
//! Two layers. The `Raw*` types (`raw.rs`) mirror the file one to one (serde,
//! unknown fields rejected); scalar fields that need checking (weights,
//! percentages, durations) are newtypes (`values.rs`) whose `Deserialize`
//! refuses bad values, so the parser reports them at their line and column.
//! [`parse`] then checks what spans several fields, one checker per section
//! (`traffic.rs`, `steps.rs`, `analysis.rs`, `notifications.rs`; names and the
//! two versions here), collecting every problem with its location before
//! giving up, and builds a [`Rollout`]: the only type the rest of serin sees.

mod analysis;
mod kubernetes;
mod manifest;
mod notifications;
mod prometheus_templates;
mod raw;
mod steps;
mod traffic;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};
use serin_proxy::{Route, StickyKey, Upstream, Weight};

use crate::notify;
use crate::rollout::{Plan, Step};
use raw::{RawRollout, RawSide};
use values::readable_label;

pub use kubernetes::{
    BASELINE_SUFFIX, CANARY_SUFFIX, KubeProvider, KubeTarget, OwnedRoute, ParentRef,
};
pub use manifest::{API_GROUP, API_VERSION, KIND, check_resource};
pub use prometheus_templates::prometheus_queries;
pub use values::{argv, same_server, valid_name};

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
    /// The baseline: a fresh instance of the stable version, given the
    /// canary's share, that the relative checks compare the canary with
    /// instead of the long-running stable. Its address: `baseline.upstream`
    /// (built-in and nginx providers, `http://host:port`), or on Istio and
    /// Gateway API (`baseline: {}`) the cluster address of
    /// `SERVICE-baseline`, as the canary's is of `SERVICE-canary`
    /// (`traffic.kubernetes.baseline` is then true and serin runs it).
    pub baseline: Option<String>,
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
        self.kubernetes().is_some()
    }

    /// The Kubernetes provider this is, if it is one.
    pub fn kubernetes(self) -> Option<KubeProvider> {
        match self {
            Provider::NginxIngress => Some(KubeProvider::NginxIngress),
            Provider::Istio => Some(KubeProvider::Istio),
            Provider::GatewayApi => Some(KubeProvider::GatewayApi),
            Provider::Builtin | Provider::Nginx => None,
        }
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
    /// Kubernetes providers' target, checked, with the canary's version
    /// and image and the routes.
    pub kubernetes: Option<KubeTarget>,
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

/// A business metric's queries: numerator / denominator, compared between
/// versions (how it is judged is in [`AnalysisSettings::judge`], in the
/// same order).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetric {
    /// Its name in reasons and reports.
    pub name: String,
    /// PromQL counter with `{{version}}`.
    pub numerator: String,
    /// PromQL counter with `{{version}}`.
    pub denominator: String,
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
    /// Consecutive no-data intervals that roll back.
    pub no_data_limit: u32,
    /// What the judge checks (limits, statistics, custom metrics, the 4xx
    /// check), built from the section and accepted by the judge's own
    /// checks: the runtime hands it over as it is.
    pub judge: serin_analysis::Config,
    /// Take metrics from Prometheus instead of the provider's own.
    pub prometheus: Option<PrometheusSettings>,
    /// Business metrics' queries (need `prometheus`).
    pub custom: Vec<CustomMetric>,
    /// `analysis.mode`: whether a failing verdict rolls back.
    pub mode: Mode,
    /// The checks marked `advisory: true`, by the judge's metric names
    /// (`error-rate`, `latency-p50`, `latency-p95`, `latency-p99`,
    /// `custom/NAME`, `client-error-rate`): computed and shown, never
    /// rolling back. For the judge's `Config.advisory`.
    pub advisory_checks: Vec<String>,
}

/// `analysis.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A failing verdict, or `noDataLimit` no-data verdicts in a row, roll
    /// back (the default).
    #[default]
    Enforce,
    /// Every verdict is made and recorded as usual, but one that would roll
    /// back is recorded as "would have rolled back" and the rollout goes on
    /// by its steps (a dry run beside a team's current process).
    Advisory,
}

impl Default for AnalysisSettings {
    /// The SPEC's defaults: a verdict every 10 s, 3 no-data intervals, the
    /// judge's defaults.
    fn default() -> Self {
        AnalysisSettings {
            interval: Duration::from_secs(10),
            no_data_limit: 3,
            judge: serin_analysis::Config::default(),
            prometheus: None,
            custom: Vec::new(),
            mode: Mode::Enforce,
            advisory_checks: Vec::new(),
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
                Step::PauseFor {
                    duration: Duration::from_secs(60),
                    early: false,
                },
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
            judge_at_end_of_pause: self.analysis.judge.method == serin_analysis::Method::Fixed,
            progress_deadline: self.progress_deadline,
            min_requests: self.analysis.judge.min_requests,
            advisory: self.analysis.mode == Mode::Advisory,
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
// Reading and checking.

/// The same checks as the rollout file's `canary` side, for a canary given
/// later (`serin deploy NAME VERSION [--upstream URL]`): a readable version
/// label, and an upstream that is not stable's server.
pub fn check_canary(
    version: &str,
    upstream: Option<&str>,
    stable_upstream: &str,
) -> Result<(), String> {
    if version.trim().is_empty() {
        return Err("version: expected a version label, got an empty one".into());
    }
    if !readable_label(version) {
        return Err("version: expected a version label of at most 128 visible ASCII characters, like v1.2.0 (no spaces, no invisible or look-alike characters: a label must read as what it is)".into());
    }
    if let Some(u) = upstream {
        Upstream::parse(u).map_err(|e| format!("upstream: {e}"))?;
        if same_server(u, stable_upstream) {
            return Err(format!(
                "upstream: expected a server other than stable's, got `{stable_upstream}` for both (the judge would compare the stable with itself)"
            ));
        }
    }
    Ok(())
}

/// Reads a rollout file's text, or a Rollout resource's manifest
/// (`apiVersion: serin.dev/v1alpha1`, `kind: Rollout`): the same checks,
/// located in the text given. `origin` names it in errors (a path, or
/// `request body`).
pub fn parse(text: &str, origin: &str) -> Result<Rollout, SpecError> {
    if manifest::is_manifest(text) {
        return manifest::parse(text, origin);
    }
    let raw: Spanned<RawRollout> = serde_saphyr::from_str(text).map_err(|e| SpecError {
        origin: origin.to_string(),
        problems: vec![problem_of(&e)],
    })?;
    let mut check = Checker::default();
    let name = raw.value.name.clone();
    if name.is_none() {
        check.at(
            &raw.referenced,
            "name: expected the rollout's name (1 to 63 characters of a-z, 0-9 and -)",
        );
    }
    let rollout = check.rollout(name, raw.value);
    check.finish(rollout, origin)
}

/// The largest rollout file read: one is a few KiB (a file without an
/// end, `/dev/zero`, is refused rather than read until memory runs out).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A rollout file's text, at most [`MAX_FILE_BYTES`].
pub fn read_text(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB (a rollout file is a few KiB)",
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    Ok(text)
}

/// Reads a rollout file from disk.
pub fn read(path: &std::path::Path) -> Result<Rollout, SpecError> {
    let origin = path.display().to_string();
    let text = read_text(path).map_err(|e| SpecError {
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
    let Some(target) = &r.traffic.kubernetes else {
        return;
    };
    if let Some(p) = &mut r.analysis.prometheus
        && p.requests.is_empty()
    {
        let (requests, errors, latency) = prometheus_queries(target.provider, target);
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
    // A limit of the YAML reader: say what it means for a rollout file, not
    // the reader's internal counters.
    if let serde_saphyr::Error::Budget { breach, .. } = e.without_snippet() {
        use serde_saphyr::budget::BudgetBreach as B;
        let what = match breach {
            B::Nodes { .. } | B::Events { .. } => {
                "the file is too large for a rollout file (more than 250,000 YAML values; \
                 a rollout has a handful of steps)"
                    .to_string()
            }
            B::Depth { depth } => format!(
                "the file nests too deeply for a rollout file ({depth} levels of maps and lists)"
            ),
            other => format!("the file exceeds a limit of the YAML reader ({other:?})"),
        };
        return Problem {
            line,
            column,
            message: what,
        };
    }
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
    /// Where each `pause: {..., early: true}` is written (early success
    /// needs the sequential method, checked once the analysis is read).
    early_pauses: Vec<Location>,
    /// Where the name is written: `name` in a rollout file (the default),
    /// `metadata.name` in a Rollout resource.
    name_field: Option<&'static str>,
    /// `traffic.kubernetes.namespace` when it is left out: `default` in a
    /// rollout file, the resource's own namespace for a Rollout resource.
    namespace: Option<String>,
    /// The rollout's name as written (a route serin owns is named after it).
    rollout_name: Option<String>,
}

impl Checker {
    /// The rollout when nothing was wrong, else every problem in the
    /// order of the text.
    fn finish(self, rollout: Option<Rollout>, origin: &str) -> Result<Rollout, SpecError> {
        match rollout {
            Some(mut r) if self.problems.is_empty() => {
                ready_made_queries(&mut r);
                Ok(r)
            }
            _ => {
                let mut problems = self.problems;
                problems.sort_by_key(|p| (p.line, p.column));
                Err(SpecError {
                    origin: origin.to_string(),
                    problems,
                })
            }
        }
    }

    fn at(&mut self, location: &Location, message: impl Into<String>) {
        self.problems.push(Problem {
            line: location.line(),
            column: location.column(),
            message: message.into(),
        });
    }

    /// The whole rollout; `name` is `None` when it is missing (reported
    /// by the caller, which knows where it belongs).
    fn rollout(&mut self, name: Option<Spanned<String>>, raw: RawRollout) -> Option<Rollout> {
        let name_at = name.as_ref().map_or(Location::UNKNOWN, |n| n.referenced);
        let name = name.map(|n| n.value);
        self.rollout_name = name.clone();
        if let Some(name) = &name
            && !valid_name(name)
        {
            let field = self.name_field.unwrap_or("name");
            self.at(
                &name_at,
                format!(
                    "{field}: expected 1 to 63 characters of a-z, 0-9 and -, starting with a letter or digit, got `{name}`"
                ),
            );
        }
        let (stable, _) = self.side(raw.stable, "stable", None);
        let (canary, canary_version_at) = self.side(raw.canary, "canary", Some(&stable));
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
            // Where it belongs: the analysis section, or without one, the
            // traffic section that chose the provider.
            let at = raw_analysis
                .as_ref()
                .map(|a| a.referenced)
                .or(raw_traffic.as_ref().map(|t| t.referenced))
                .unwrap_or(name_at);
            self.at(
                &at,
                format!(
                    "analysis.prometheus: expected at least an address (provider {} takes its metrics from Prometheus)",
                    provider.as_str()
                ),
            );
        }
        let traffic = if traffic_ok {
            self.traffic(raw_traffic, &stable, &canary, &canary_version_at)
        } else {
            None
        };
        let steps = self.steps(raw.steps);
        let analysis = self
            .analysis(raw_analysis, provider)
            .filter(|_| analysis_ok);
        if let Some(a) = &analysis
            && a.judge.method != serin_analysis::Method::Sequential
        {
            let method = match a.judge.method {
                serin_analysis::Method::Fixed => "fixed",
                _ => "none",
            };
            for at in std::mem::take(&mut self.early_pauses) {
                self.at(
                    &at,
                    format!(
                        "pause.early: expected analysis.statistics.method sequential (early success rests on the sequential test; with method {method} a pause never ends early)"
                    ),
                );
            }
        }
        let notifications = self.notifications(raw.notifications);
        let pre_rollout = match raw.pre_rollout {
            Some(hook) => {
                Some(self.http_url(&hook.url.value, &hook.url.referenced, "preRollout.url")?)
            }
            None => None,
        };
        let kube = traffic.as_ref().and_then(|t| t.kubernetes.as_ref());
        let baseline = self.baseline(raw.baseline, provider, &stable, &canary, kube);
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
        let baseline = baseline?;
        let mut analysis = analysis?;
        let mut traffic = traffic?;
        if baseline.is_some() {
            // The relative checks compare the canary with the baseline.
            analysis.judge.compare_with = serin_analysis::Reference::Baseline;
            // On Kubernetes serin runs it.
            if let Some(k) = traffic.kubernetes.as_mut() {
                k.baseline = true;
            }
        }
        Some(Rollout {
            name: name?,
            stable,
            canary,
            traffic,
            steps: steps?,
            analysis,
            notifications,
            pre_rollout,
            progress_deadline,
            baseline,
        })
    }

    /// The `baseline` section: an upstream of its own where serin's proxy
    /// or nginx splits the traffic; on Istio and Gateway API nothing (serin
    /// runs `DEPLOYMENT-baseline`, and the baseline's address is its
    /// Service's in the cluster, as the canary's). `Some(None)` when left
    /// out, `None` (a problem recorded) when it cannot be used.
    fn baseline(
        &mut self,
        raw: Option<Spanned<raw::RawBaseline>>,
        provider: Provider,
        stable: &Side,
        canary: &Side,
        kube: Option<&KubeTarget>,
    ) -> Option<Option<String>> {
        let Some(raw) = raw else {
            return Some(None);
        };
        match provider {
            Provider::Builtin | Provider::Nginx => {}
            Provider::NginxIngress => {
                self.at(
                    &raw.referenced,
                    "baseline: provider nginx-ingress cannot split traffic three ways (its canary annotations send one share to one canary); expected no baseline with it",
                );
                return None;
            }
            Provider::Istio | Provider::GatewayApi => {
                if let Some(u) = &raw.value.upstream {
                    self.at(
                        &u.referenced,
                        format!(
                            "baseline.upstream: provider {} runs the baseline itself (Deployment DEPLOYMENT-baseline from the stable's pod template); expected `baseline: {{}}` without an upstream",
                            provider.as_str()
                        ),
                    );
                    return None;
                }
                // A problem in traffic.kubernetes is reported there.
                let t = kube?;
                return Some(Some(format!(
                    "http://{}{BASELINE_SUFFIX}.{}.svc:80",
                    t.service, t.namespace
                )));
            }
        }
        let Some(u) = raw.value.upstream else {
            self.at(
                &raw.referenced,
                format!(
                    "baseline.upstream: expected http://host:port of a fresh instance of the stable version (required by provider {})",
                    provider.as_str()
                ),
            );
            return None;
        };
        if let Err(e) = Upstream::parse(&u.value) {
            self.at(&u.referenced, format!("baseline.upstream: {e}"));
            return None;
        }
        for (side, which) in [(stable, "stable"), (canary, "canary")] {
            if let Some(theirs) = &side.upstream
                && same_server(&u.value, theirs)
            {
                self.at(
                    &u.referenced,
                    format!(
                        "baseline.upstream: expected a server of its own, got `{theirs}`, the {which}'s (the baseline is a fresh instance of the stable version beside the long-running one)"
                    ),
                );
                return None;
            }
        }
        Some(Some(u.value))
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

    /// One version's section, and where its version is written; the
    /// canary's is checked against `stable`'s.
    fn side(
        &mut self,
        raw: Spanned<RawSide>,
        which: &str,
        stable: Option<&Side>,
    ) -> (Side, Location) {
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
        (
            Side {
                version: version.value,
                upstream,
                image,
            },
            version.referenced,
        )
    }
}

#[cfg(test)]
mod tests;
