//! Rollout files for the end-to-end tests: one builder, so each test says
//! only what it changes (steps, provider, analysis source, notifications).

use std::net::SocketAddr;

/// Short steps that finish in a few seconds: 20 %, 50 %, 100 %.
pub const SHORT_STEPS: &str = "  - setWeight: 20
  - pause: { duration: 2s }
  - setWeight: 50
  - pause: { duration: 2s }
  - setWeight: 100
  - pause: { duration: 1s }
";

/// A rollout file: versions `v1` → `v2` behind the builtin proxy, judged every
/// 500 ms on at least 20 requests, errors at most 5 %, p95 at most 500 ms,
/// four intervals without data allowed; [`SHORT_STEPS`].
pub struct Rollout {
    name: String,
    listen: SocketAddr,
    stable: (String, SocketAddr),
    canary: (String, SocketAddr),
    traffic: String,
    steps: String,
    interval: String,
    latency_p95: String,
    no_data_limit: u32,
    analysis: String,
    rest: String,
}

impl Rollout {
    pub fn new(name: &str, listen: SocketAddr, stable: SocketAddr, canary: SocketAddr) -> Rollout {
        Rollout {
            name: name.to_owned(),
            listen,
            stable: ("v1".to_owned(), stable),
            canary: ("v2".to_owned(), canary),
            traffic: "  provider: builtin\n".to_owned(),
            steps: SHORT_STEPS.to_owned(),
            interval: "500ms".to_owned(),
            latency_p95: "500ms".to_owned(),
            no_data_limit: 4,
            analysis: String::new(),
            rest: String::new(),
        }
    }

    /// The two versions' names.
    pub fn versions(mut self, stable: &str, canary: &str) -> Rollout {
        self.stable.0 = stable.to_owned();
        self.canary.0 = canary.to_owned();
        self
    }

    /// The lines under `traffic:` besides `listen`, e.g. `  provider: nginx\n  nginx: …`.
    pub fn traffic(mut self, lines: &str) -> Rollout {
        self.traffic = lines.to_owned();
        self
    }

    /// The step list, YAML items one per line (`  - setWeight: 20\n`).
    pub fn steps(mut self, items: &str) -> Rollout {
        self.steps = items.to_owned();
        self
    }

    /// The analysis interval, e.g. `2s`.
    pub fn interval(mut self, interval: &str) -> Rollout {
        self.interval = interval.to_owned();
        self
    }

    /// The p95 latency ceiling, e.g. `200ms`.
    pub fn latency_p95(mut self, max: &str) -> Rollout {
        self.latency_p95 = max.to_owned();
        self
    }

    /// How many intervals without data the judge allows.
    pub fn no_data_limit(mut self, n: u32) -> Rollout {
        self.no_data_limit = n;
        self
    }

    /// More lines under `analysis:` (indented two spaces), e.g. `prometheus:`.
    pub fn analysis(mut self, lines: &str) -> Rollout {
        self.analysis = lines.to_owned();
        self
    }

    /// More top-level sections, e.g. `notifications:` or `preRollout:`.
    pub fn rest(mut self, lines: &str) -> Rollout {
        self.rest = lines.to_owned();
        self
    }

    pub fn yaml(&self) -> String {
        format!(
            "name: {name}
stable:
  version: {sv}
  upstream: http://{sa}
canary:
  version: {cv}
  upstream: http://{ca}
traffic:
{traffic}  listen: {listen}
steps:
{steps}analysis:
  interval: {interval}
  minRequests: 20
  errorRate: {{ max: 5% }}
  latencyP95: {{ max: {p95} }}
  noDataLimit: {no_data}
{analysis}{rest}",
            name = self.name,
            sv = self.stable.0,
            sa = self.stable.1,
            cv = self.canary.0,
            ca = self.canary.1,
            traffic = self.traffic,
            listen = self.listen,
            steps = self.steps,
            interval = self.interval,
            p95 = self.latency_p95,
            no_data = self.no_data_limit,
            analysis = self.analysis,
            rest = self.rest,
        )
    }
}
