//! The judge: observations in, a verdict with its reason out.
//!
//! One [`Judge`] follows one rollout. The controller calls
//! [`Judge::begin_stage`] when a step (weight) begins and [`Judge::observe`]
//! after every interval with the cumulative observation. The judge keeps the
//! data since the stage began (for absolute limits, `minRequests` and the
//! `fixed` tests) and the anytime-valid evidence since the rollout began (for
//! `sequential` ratio tests). See `docs/judge.md`.

use crate::config::{Config, ConfigError, Direction, Limit, Method, Reference};
use crate::eprocess::{ProportionTest, RatioTest};
use crate::histogram::Histogram;
use crate::observation::{Delta, Observation, ObservationError, Ratio, VersionDelta};
use crate::stats;
use crate::verdict::{CheckResult, Evidence, Judgement, Split, Verdict, count, ms, pct, ratio};

/// Expected canary requests in an interval above which getting none is "no
/// data" (P(0) for a Poisson of mean 5 is 0.7 %).
const NO_DATA_EXPECTED: f64 = 5.0;

/// Below this many expected events in either group the `fixed` method uses
/// the exact conditional binomial test instead of the z-test.
const SMALL_COUNT: f64 = 5.0;

/// How a check says that the canary looks beyond its limit although no test
/// has shown it yet: the step is held, never passed.
const HELD: &str = "above the limit, not yet significant";

/// Split verification: each version's share of the requests split by
/// weight may be this many times smaller or larger than requested before
/// the split is a mismatch...
const SPLIT_FACTOR: f64 = 2.0;
/// ... and this many times with sticky sessions, where whole clients, not
/// requests, are split.
const SPLIT_FACTOR_STICKY: f64 = 4.0;

/// The band of canary shares (fractions) that is not a mismatch at weight
/// `w` (a fraction strictly between 0 and 1): neither version gets less
/// than its share ÷ `factor` nor more than its share × `factor`.
pub(crate) fn split_band(w: f64, factor: f64) -> (f64, f64) {
    let low = (w / factor).max(1.0 - factor * (1.0 - w));
    let high = (w * factor).min(1.0 - (1.0 - w) / factor);
    (low, high)
}

/// Early success: the error rate (5xx) below which a canary counts as
/// within an `errorRate.maxRatioToStable` limit whatever the stable's
/// rate (see `docs/judge.md`, "Early success").
pub const ERROR_FLOOR: f64 = 0.001;

/// Early success: the 4xx rate below which a canary counts as within the
/// `clientErrorRate.maxRatioToStable` limit whatever the stable's rate.
pub const CLIENT_ERROR_FLOOR: f64 = 0.01;

/// The stage's split test: two one-sided anytime-valid tests of the
/// canary's share of weight-split requests, one that it is below the band,
/// one that it is above.
#[derive(Debug, Clone)]
struct SplitTest {
    /// The canary's weight (fraction).
    weight: f64,
    /// The observation's `stable` is a baseline (`Reference::Baseline`):
    /// the share tested is the canary's of canary and baseline requests.
    baseline: bool,
    /// Expected canary share of the requests tested (fraction): the weight,
    /// or against a baseline `w / (w + min(w, 1 − w))` (the baseline gets
    /// the canary's share, at most what is left).
    requested: f64,
    /// The band (fractions).
    band: (f64, f64),
    /// `H0: share >= band.0`.
    under: ProportionTest,
    /// `H0: share <= band.1`.
    over: ProportionTest,
    /// Weight-split requests in the step: canary, both.
    canary: u64,
    total: u64,
    /// Requests sent by routes in the step (both versions).
    routed: u64,
}

impl SplitTest {
    fn new(weight: f64, sticky: bool, baseline: bool) -> SplitTest {
        let requested = if baseline {
            weight / (weight + weight.min(1.0 - weight))
        } else {
            weight
        };
        let factor = if sticky {
            SPLIT_FACTOR_STICKY
        } else {
            SPLIT_FACTOR
        };
        let band = split_band(requested, factor);
        SplitTest {
            weight,
            baseline,
            requested,
            band,
            under: ProportionTest::below(band.0),
            over: ProportionTest::new(band.1),
            canary: 0,
            total: 0,
            routed: 0,
        }
    }

    fn update(&mut self, d: &Delta) {
        let Some((rs, rc)) = d.routed else { return };
        // Routes send to stable or canary only: against a baseline, the
        // stable's routed requests are not in the numbers.
        let rs = if self.baseline { 0 } else { rs };
        let c = d.canary.requests.saturating_sub(rc);
        let n = c + d.stable.requests.saturating_sub(rs);
        self.under.update(c, n);
        self.over.update(c, n);
        self.canary += c;
        self.total += n;
        self.routed += rs.min(d.stable.requests) + rc.min(d.canary.requests);
    }

    /// The share seen so far lies inside the band (or nothing was counted
    /// yet): early success needs it, as a mismatch not yet shown may be
    /// one only because the step is young.
    fn in_band(&self) -> bool {
        if self.total == 0 {
            return true;
        }
        let observed = self.canary as f64 / self.total as f64;
        self.band.0 <= observed && observed <= self.band.1
    }

    /// The result, with `log_threshold` the log e-value a mismatch needs.
    fn result(&self, log_threshold: f64) -> Option<Split> {
        if self.total == 0 {
            return None;
        }
        let observed = self.canary as f64 / self.total as f64;
        let (under, over) = (self.under.log_e(), self.over.log_e());
        let log_e = under.max(over);
        let mismatch = log_e >= log_threshold;
        let routed = if self.routed > 0 {
            format!(
                "; {} sent by header or cookie routes left out",
                count(self.routed)
            )
        } else {
            String::new()
        };
        let evidence = if mismatch {
            format!(
                "{} the band {}–{} with e-value {} ≥ {}",
                if under >= over { "below" } else { "above" },
                pct(self.band.0),
                pct(self.band.1),
                e_fmt(log_e),
                e_fmt(log_threshold)
            )
        } else {
            format!(
                "band {}–{}, e-value {} < {}",
                pct(self.band.0),
                pct(self.band.1),
                e_fmt(log_e),
                e_fmt(log_threshold)
            )
        };
        Some(Split {
            requested: 100.0 * self.requested,
            observed: 100.0 * observed,
            canary_requests: self.canary,
            total_requests: self.total,
            mismatch,
            reason: if self.baseline {
                format!(
                    "canary got {} of canary and baseline requests ({}/{}), {} expected at a {} weight ({evidence}{routed})",
                    pct(observed),
                    count(self.canary),
                    count(self.total),
                    pct_conf(self.requested),
                    pct_conf(self.weight)
                )
            } else {
                format!(
                    "canary got {} of requests ({}/{}), {} requested ({evidence}{routed})",
                    pct(observed),
                    count(self.canary),
                    count(self.total),
                    pct_conf(self.requested)
                )
            },
        })
    }
}

#[derive(Debug, Clone, Default)]
struct VersionAcc {
    requests: u64,
    errors: u64,
    /// 4xx in intervals whose source counted them.
    client_errors: u64,
    /// Requests in intervals whose source counted 4xx.
    client_requests: u64,
    latency: Option<Histogram>,
    /// Requests in intervals that came with a histogram.
    latency_requests: u64,
}

impl VersionAcc {
    fn add(&mut self, d: &VersionDelta) {
        self.requests += d.requests;
        self.errors += d.errors;
        if let Some(c) = d.client_errors {
            self.client_errors += c;
            self.client_requests += d.requests;
        }
        if let Some(h) = &d.latency {
            self.latency_requests += d.latency_requests;
            match &mut self.latency {
                Some(acc) => acc.merge(h),
                None => self.latency = Some(h.clone()),
            }
        }
    }

    fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    fn client_error_rate(&self) -> Option<f64> {
        (self.client_requests > 0).then(|| self.client_errors as f64 / self.client_requests as f64)
    }

    fn latency_total(&self) -> u64 {
        self.latency
            .as_ref()
            .map_or(0, |h| latency_total(h, self.latency_requests))
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let h = self.latency.as_ref()?;
        h.quantile(latency_total(h, self.latency_requests), q)
    }
}

/// Requests a histogram covers: its last count if it ends at +Inf, else the
/// request total (the rest being slower than the last bound).
fn latency_total(h: &Histogram, requests: u64) -> u64 {
    match h.le_ms.last() {
        Some(b) if b.is_infinite() => h.counted(),
        _ => requests.max(h.counted()),
    }
}

#[derive(Debug, Clone, Default)]
struct Acc {
    stable: VersionAcc,
    canary: VersionAcc,
    custom: Vec<(Ratio, Ratio)>,
}

impl Acc {
    fn add(&mut self, d: &Delta) {
        self.stable.add(&d.stable);
        self.canary.add(&d.canary);
        if self.custom.len() < d.custom.len() {
            self.custom
                .resize(d.custom.len(), (Ratio::default(), Ratio::default()));
        }
        for (acc, (s, c)) in self.custom.iter_mut().zip(&d.custom) {
            acc.0.numerator += s.numerator;
            acc.0.denominator += s.denominator;
            acc.1.numerator += c.numerator;
            acc.1.denominator += c.denominator;
        }
    }
}

/// What one check tests.
#[derive(Debug, Clone)]
enum Kind {
    ErrorMax(f64),
    ErrorRatio(f64),
    LatencyMax {
        q: f64,
        name: &'static str,
        max: f64,
    },
    LatencyRatio {
        q: f64,
        name: &'static str,
        m: f64,
    },
    Custom(usize),
    /// Canary 4xx rate ÷ stable's; anytime-valid whatever the method.
    ClientErrorRatio(f64),
}

/// A check and its anytime-valid state.
#[derive(Debug, Clone)]
struct Check {
    kind: Kind,
    name: String,
    /// Advisory (`Config::advisory`): left out of the combined verdict.
    advisory: bool,
    /// Early success (`sequential`): the step's test that the canary is
    /// within an absolute limit (`H0: at or over it`); for the 5xx and 4xx
    /// ratio checks, that its rate is below the floor ([`ERROR_FLOOR`],
    /// [`CLIENT_ERROR_FLOOR`]).
    within_proportion: Option<ProportionTest>,
    /// Early success (`sequential`): the step's test that the canary is
    /// within a ratio limit (`H0: ratio at or over it`).
    within_ratio: Option<RatioTest>,
    /// Latency max: the bound (ms) whose exceedances the early-success test
    /// counts (the largest at or below the limit).
    within_bound: Option<f64>,
    /// `sequential` evidence on the stage (absolute limits).
    proportion: Option<ProportionTest>,
    /// Evidence on a ratio limit: since the rollout began for `sequential`
    /// (and the 4xx check), since the step began for `fixed` (where it only
    /// tells whether the data lean beyond the limit).
    ratio: Option<RatioTest>,
    /// Latency ratio: last pair of bounds compared (stable, canary), ms.
    bounds: Option<(f64, f64)>,
    /// Why the sequential test could not use the data, if so.
    untestable: Option<String>,
}

/// The canary judge for one rollout. Pure: same observations, same verdicts.
#[derive(Debug, Clone)]
pub struct Judge {
    config: Config,
    checks: Vec<Check>,
    /// `(1 − confidence) / number of statistical checks`.
    alpha: f64,
    /// `ln(1 / alpha)`.
    log_threshold: f64,
    /// Sticky sessions: the split is tested against the wider band.
    sticky: bool,
    /// Split verification in this step (weight strictly between 0 and 100).
    split: Option<SplitTest>,
    weight: Option<f64>,
    /// The previous observation, with each version's last histogram carried
    /// forward over intervals that had none.
    last: Option<Observation>,
    /// Requests (stable, canary) when the carried histograms were taken.
    hist_requests: [u64; 2],
    /// The last observation refused as implausible: if the next one rises
    /// plausibly from it (the counters moved for good), judging goes on
    /// from it.
    refused: Option<Observation>,
    stage: Acc,
    rollout: Acc,
    /// With a baseline (`Reference::Baseline`): the baseline judged against
    /// the stable on the relative checks, with the baseline in the canary's
    /// slot. A baseline shown worse than the stable (it crashed, it answers
    /// 502) is no fair reference: the canary's verdict is then no data,
    /// never a pass; and its share of the stable's and its own requests is
    /// split-checked, so a canary and a baseline starved alike are seen.
    reference: Option<Box<Judge>>,
}

/// `WHAT 8.2 % (82/1 000) vs stable 0.5 % (5/1 000)`: each version's rate
/// (`n/a` without one), numerator and denominator; `other` names the
/// reference (`stable` or `baseline`).
fn versus(
    what: &str,
    other: &str,
    canary: (Option<f64>, u64, u64),
    stable: (Option<f64>, u64, u64),
) -> String {
    let side = |(rate, n, d): (Option<f64>, u64, u64)| {
        format!(
            "{} ({}/{})",
            rate.map_or("n/a".into(), pct),
            count(n),
            count(d)
        )
    };
    format!("{what} {} vs {other} {}", side(canary), side(stable))
}

fn pct_conf(c: f64) -> String {
    let p = 100.0 * c;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0} %")
    } else {
        format!("{p} %")
    }
}

fn e_fmt(log_e: f64) -> String {
    let e = log_e.exp();
    if e >= 1e4 {
        format!("{e:.1e}")
    } else if e >= 10.0 {
        format!("{e:.0}")
    } else if e >= 0.01 {
        format!("{e:.2}")
    } else {
        format!("{e:.1e}")
    }
}

fn p_fmt(p: f64) -> String {
    if p >= 0.01 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

impl Judge {
    /// A judge for one rollout; fails if the configuration is out of range.
    pub fn new(config: Config) -> Result<Judge, ConfigError> {
        config.validate()?;
        let mut checks = Vec::new();
        let mut push = |kind: Kind, name: String, metric: &str| {
            checks.push(Check {
                kind,
                name,
                advisory: config.is_advisory(metric),
                within_proportion: None,
                within_ratio: None,
                within_bound: None,
                proportion: None,
                ratio: None,
                bounds: None,
                untestable: None,
            })
        };
        if let Some(max) = config.error_rate.max {
            push(Kind::ErrorMax(max), "error-rate".into(), "error-rate");
        }
        if let Some(m) = config.error_rate.max_ratio_to_stable {
            push(Kind::ErrorRatio(m), "error-rate/ratio".into(), "error-rate");
        }
        for (q, name, limit) in config.latency_limits() {
            let metric = format!("latency-{name}");
            if let Some(max) = limit.max {
                push(Kind::LatencyMax { q, name, max }, metric.clone(), &metric);
            }
            if let Some(m) = limit.max_ratio_to_stable {
                push(
                    Kind::LatencyRatio { q, name, m },
                    format!("{metric}/ratio"),
                    &metric,
                );
            }
        }
        for (i, c) in config.custom.iter().enumerate() {
            let metric = format!("custom/{}", c.name);
            push(Kind::Custom(i), metric.clone(), &metric);
        }
        if let Some(m) = config.client_error_ratio {
            push(
                Kind::ClientErrorRatio(m),
                "client-error-rate/ratio".into(),
                "client-error-rate",
            );
        }
        let n = checks.len().max(1) as f64;
        let alpha = (1.0 - config.confidence) / n;
        let reference = reference_config(&config)
            .and_then(|c| Judge::new(c).ok())
            .map(Box::new);
        let mut judge = Judge {
            config,
            checks,
            alpha,
            log_threshold: (1.0 / alpha).ln(),
            sticky: false,
            split: None,
            weight: None,
            last: None,
            hist_requests: [0, 0],
            refused: None,
            stage: Acc::default(),
            rollout: Acc::default(),
            reference,
        };
        judge.reset_tests(true);
        Ok(judge)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The e-value every `sequential` check must reach
    /// (`checks / (1 − confidence)`), or the level every `fixed` p-value
    /// must go below is its inverse.
    pub fn threshold(&self) -> f64 {
        1.0 / self.alpha
    }

    /// Tells the judge the canary's weight (percent) in this step, so that
    /// an interval in which the canary got no requests can be told apart
    /// from a quiet one. Without it the judge estimates the share from the
    /// requests seen.
    ///
    /// A weight strictly between 0 and 100 % also starts split verification
    /// (see [`Judgement::split`]) over the rest of the step; telling the
    /// same weight again changes nothing.
    pub fn set_canary_weight(&mut self, percent: f64) {
        let weight = (percent.is_finite() && percent >= 0.0).then_some(percent.min(100.0));
        if weight != self.weight {
            self.weight = weight;
            self.reset_split();
        }
        // The baseline gets the canary's share, at most what is left; of
        // the stable's and its own requests, b / (100 − w).
        if let (Some(r), Some(w)) = (self.reference.as_mut(), weight) {
            let b = w.min(100.0 - w);
            let share = if w < 100.0 {
                100.0 * b / (100.0 - w)
            } else {
                0.0
            };
            r.set_canary_weight(share);
        }
    }

    /// Tells the judge whether the router keeps sessions sticky (each
    /// client stays on one version): the canary's share of requests then
    /// depends on which clients are busy, and split verification allows a
    /// factor of 4 instead of 2 (see `docs/judge.md`). Restarts the step's
    /// split test.
    pub fn set_split_tolerance(&mut self, sticky: bool) {
        self.sticky = sticky;
        self.reset_split();
        if let Some(r) = self.reference.as_mut() {
            r.set_split_tolerance(sticky);
        }
    }

    /// With a baseline (`Reference::Baseline`): the observation the canary
    /// is judged on, the baseline's numbers in the stable's slot (none yet:
    /// zero, never the stable's), and the reference's, the baseline in the
    /// canary's slot against the stable. Without: `at` itself.
    fn with_baseline(&self, at: &Observation) -> (Observation, Option<Observation>) {
        if self.config.compare_with != Reference::Baseline {
            return (at.clone(), None);
        }
        let baseline = at.baseline.clone().unwrap_or_default();
        let main = Observation {
            stable: baseline.clone(),
            baseline: None,
            ..at.clone()
        };
        let reference = self.reference.as_ref().map(|_| Observation {
            stable: at.stable.clone(),
            canary: baseline,
            custom: Vec::new(),
            at: at.at,
            // Routes send to stable or canary, never to the baseline.
            routed: at.routed.map(|(s, _)| (s, 0)),
            baseline: None,
        });
        (main, reference)
    }

    /// Split verification starts again (a new step or weight).
    fn reset_split(&mut self) {
        self.split = self.weight.filter(|w| *w > 0.0 && *w < 100.0).map(|w| {
            let baseline = self.config.compare_with == Reference::Baseline;
            SplitTest::new(w / 100.0, self.sticky, baseline)
        });
    }

    /// Starts the anytime-valid tests again: those on the step at every
    /// step, those on the rollout when it begins (`rollout_too`).
    fn reset_tests(&mut self, rollout_too: bool) {
        let method = self.config.method;
        // `sequential` ratio tests run over the rollout; `fixed` keeps one
        // per step to tell whether the step's data lean beyond the limit.
        let ratio_reset = match method {
            Method::Sequential => rollout_too,
            Method::Fixed => true,
            Method::None => false,
        };
        for c in &mut self.checks {
            match c.kind {
                Kind::ErrorMax(max) if max < 1.0 && method == Method::Sequential => {
                    c.proportion = Some(ProportionTest::new(max))
                }
                Kind::LatencyMax { q, .. } if method == Method::Sequential => {
                    c.proportion = Some(ProportionTest::new(1.0 - q))
                }
                Kind::ErrorRatio(m) if ratio_reset => c.ratio = Some(RatioTest::new(m)),
                Kind::LatencyRatio { .. } if ratio_reset => c.ratio = Some(RatioTest::new(1.0)),
                Kind::Custom(i) if ratio_reset => {
                    c.ratio = Some(RatioTest::new(self.config.custom[i].ratio()))
                }
                Kind::ClientErrorRatio(m) if rollout_too => c.ratio = Some(RatioTest::new(m)),
                _ => {}
            }
            // Early success: tests of being within the limit, over the step.
            c.within_proportion = None;
            c.within_ratio = None;
            c.within_bound = None;
            if method == Method::Sequential {
                match c.kind {
                    Kind::ErrorMax(max) if max < 1.0 => {
                        c.within_proportion = Some(ProportionTest::below(max))
                    }
                    Kind::LatencyMax { q, .. } => {
                        c.within_proportion = Some(ProportionTest::below(1.0 - q))
                    }
                    Kind::ErrorRatio(m) => {
                        c.within_ratio = Some(RatioTest::below(m));
                        c.within_proportion = Some(ProportionTest::below(ERROR_FLOOR));
                    }
                    Kind::ClientErrorRatio(m) => {
                        c.within_ratio = Some(RatioTest::below(m));
                        c.within_proportion = Some(ProportionTest::below(CLIENT_ERROR_FLOOR));
                    }
                    Kind::Custom(i) => {
                        c.within_ratio = Some(RatioTest::below(self.config.custom[i].ratio()))
                    }
                    _ => {}
                }
            }
        }
    }

    /// `current − last`, the latency deltas measured from the last
    /// histogram seen.
    fn delta(&self, current: &Observation) -> Result<Delta, ObservationError> {
        let base = self.last.clone().unwrap_or_default();
        let mut d = current.since(&base)?;
        for (v, now, h_req) in [
            (&mut d.stable, &current.stable, self.hist_requests[0]),
            (&mut d.canary, &current.canary, self.hist_requests[1]),
        ] {
            if v.latency.is_some() {
                v.latency_requests = now.requests.saturating_sub(h_req);
            }
        }
        Ok(d)
    }

    /// Makes `current` the base of the next interval.
    fn remember(&mut self, current: &Observation) {
        let mut next = current.clone();
        if let Some(prev) = self.last.take() {
            if next.stable.latency.is_none() {
                next.stable.latency = prev.stable.latency;
            }
            if next.canary.latency.is_none() {
                next.canary.latency = prev.canary.latency;
            }
        }
        if current.stable.latency.is_some() {
            self.hist_requests[0] = current.stable.requests;
        }
        if current.canary.latency.is_some() {
            self.hist_requests[1] = current.canary.requests;
        }
        self.last = Some(next);
    }

    /// A new step (weight) begins; `at` is the cumulative observation at its
    /// start. Data up to `at` still feeds the rollout-long `sequential`
    /// ratio tests; absolute limits, `minRequests` and `fixed` tests start
    /// again from `at`.
    /// An observation that fails the bounds (`bounds`) is not made the
    /// base: the step starts from the last sound one. Returns whether `at`
    /// became the base (a caller keeping its own interval numbers keeps its
    /// base too when it did not).
    pub fn begin_stage(&mut self, at: &Observation) -> bool {
        let (main, reference) = self.with_baseline(at);
        if let (Some(r), Some(o)) = (self.reference.as_mut(), &reference) {
            r.begin_stage(o);
        }
        self.begin_stage_of(&main)
    }

    fn begin_stage_of(&mut self, at: &Observation) -> bool {
        if self.last.is_none() && at.validate().is_ok() {
            // The first numbers a judge sees are its base, not data: what
            // the source counted before (an earlier run through the same
            // proxy, the stable's weeks of traffic in Prometheus) is not
            // this rollout's.
            self.remember(at);
            self.restart_stage();
            return true;
        }
        let taken =
            match at.validate().and_then(|()| self.sound_delta(at)) {
                Ok(d) => {
                    self.update_ratio_tests(&d);
                    self.rollout.add(&d);
                    self.remember(at);
                    true
                }
                Err(
                    ObservationError::Implausible { .. } | ObservationError::Inconsistent { .. },
                ) if self.last.is_some() => false,
                Err(_) => {
                    self.last = None;
                    self.remember(at);
                    true
                }
            };
        self.restart_stage();
        taken
    }

    /// A new step (weight) begins whose start could not be read: it starts
    /// from the last observation taken (zero before any), as
    /// [`Judge::begin_stage`] at those numbers would.
    pub fn begin_stage_unread(&mut self) {
        if let Some(r) = self.reference.as_mut() {
            r.begin_stage_unread();
        }
        if self.last.is_none() {
            self.remember(&Observation::default());
        }
        self.restart_stage();
    }

    /// The step's data and tests start again (the rollout's stay).
    fn restart_stage(&mut self) {
        self.refused = None;
        self.stage = Acc::default();
        self.reset_tests(false);
        self.reset_split();
    }

    /// `current − last`, refused if a counter rose faster than `bounds`
    /// allows.
    fn sound_delta(&self, current: &Observation) -> Result<Delta, ObservationError> {
        let d = self.delta(current)?;
        if let Some(last) = &self.last {
            current.check_rise(last, &d)?;
        }
        Ok(d)
    }

    /// Makes `at` the base of the next interval without judging the
    /// interval that led to it (the counters moved for a reason the judge
    /// cannot see, e.g. a metric source that restarted). The step goes on.
    pub fn rebase(&mut self, at: &Observation) {
        let (main, reference) = self.with_baseline(at);
        if let (Some(r), Some(o)) = (self.reference.as_mut(), &reference) {
            r.rebase(o);
        }
        self.last = None;
        self.refused = None;
        self.remember(&main);
    }

    /// Feeds one interval to the ratio tests that the method keeps
    /// (`reset_tests`: over the rollout for `sequential` and the 4xx check,
    /// over the step for `fixed`, none else). Bounds for latency are chosen
    /// from stable data before the interval, so the choice is predictable
    /// and the e-process stays valid.
    fn update_ratio_tests(&mut self, d: &Delta) {
        let before = &self.rollout.stable;
        for c in &mut self.checks {
            let Some(test) = c.ratio.as_mut() else {
                continue;
            };
            match c.kind {
                Kind::ErrorRatio(_) => test.update(
                    d.canary.errors,
                    d.canary.requests as f64,
                    d.stable.errors,
                    d.stable.requests as f64,
                ),
                // Only intervals whose source counted 4xx on both sides.
                Kind::ClientErrorRatio(_) => {
                    if let (Some(x_c), Some(x_s)) = (d.canary.client_errors, d.stable.client_errors)
                    {
                        test.update(x_c, d.canary.requests as f64, x_s, d.stable.requests as f64)
                    }
                }
                Kind::LatencyRatio { q, m, .. } => {
                    let (Some(hs), Some(hc), Some(prior)) =
                        (&d.stable.latency, &d.canary.latency, &before.latency)
                    else {
                        continue;
                    };
                    let prior_total = latency_total(prior, before.latency_requests);
                    match latency_pair(prior, prior_total, hc, q, m) {
                        Ok((i_s, i_c)) => {
                            let n_s = latency_total(hs, d.stable.latency_requests);
                            let n_c = latency_total(hc, d.canary.latency_requests);
                            test.update(
                                hc.above(i_c, n_c),
                                n_c as f64,
                                hs.above(i_s, n_s),
                                n_s as f64,
                            );
                            c.bounds = Some((hs.le_ms[i_s], hc.le_ms[i_c]));
                            c.untestable = None;
                        }
                        Err(why) => c.untestable = Some(why),
                    }
                }
                Kind::Custom(i) => {
                    let Some((s, cn)) = d.custom.get(i) else {
                        continue;
                    };
                    let direction = self.config.custom[i].direction;
                    let (a, b) = match direction {
                        Direction::LowerIsBetter => (cn, s),
                        Direction::HigherIsBetter => (s, cn),
                    };
                    test.update(
                        a.numerator,
                        a.denominator as f64,
                        b.numerator,
                        b.denominator as f64,
                    );
                }
                _ => {}
            }
        }
    }

    /// Feeds one interval to the step's early-success tests (`sequential`)
    /// and to split verification.
    fn update_within(&mut self, d: &Delta) {
        if let Some(split) = self.split.as_mut() {
            split.update(d);
        }
        for c in &mut self.checks {
            match c.kind {
                Kind::ErrorMax(_) => {
                    if let Some(t) = c.within_proportion.as_mut() {
                        t.update(d.canary.errors, d.canary.requests)
                    }
                }
                Kind::LatencyMax { max, .. } => {
                    let (Some(t), Some(h)) = (c.within_proportion.as_mut(), &d.canary.latency)
                    else {
                        continue;
                    };
                    // The largest bound at or below the limit: fewer than
                    // 1 − q of the requests above it puts the quantile at
                    // or below it.
                    let i = h
                        .le_ms
                        .iter()
                        .rposition(|&b| b.is_finite() && b <= max * (1.0 + 1e-9));
                    if let Some(i) = i {
                        let n = latency_total(h, d.canary.latency_requests);
                        t.update(h.above(i, n), n);
                        c.within_bound = Some(h.le_ms[i]);
                    }
                }
                Kind::ErrorRatio(_) => {
                    if let Some(t) = c.within_ratio.as_mut() {
                        t.update(
                            d.canary.errors,
                            d.canary.requests as f64,
                            d.stable.errors,
                            d.stable.requests as f64,
                        )
                    }
                    if let Some(t) = c.within_proportion.as_mut() {
                        t.update(d.canary.errors, d.canary.requests)
                    }
                }
                Kind::ClientErrorRatio(_) => {
                    if let (Some(t), Some(x_c), Some(x_s)) = (
                        c.within_ratio.as_mut(),
                        d.canary.client_errors,
                        d.stable.client_errors,
                    ) {
                        t.update(x_c, d.canary.requests as f64, x_s, d.stable.requests as f64)
                    }
                    if let (Some(t), Some(x_c)) =
                        (c.within_proportion.as_mut(), d.canary.client_errors)
                    {
                        t.update(x_c, d.canary.requests)
                    }
                }
                Kind::Custom(i) => {
                    let (Some(t), Some((s, cn))) = (c.within_ratio.as_mut(), d.custom.get(i))
                    else {
                        continue;
                    };
                    let (a, b) = match self.config.custom[i].direction {
                        Direction::LowerIsBetter => (cn, s),
                        Direction::HigherIsBetter => (s, cn),
                    };
                    t.update(
                        a.numerator,
                        a.denominator as f64,
                        b.numerator,
                        b.denominator as f64,
                    );
                }
                Kind::LatencyRatio { .. } => {}
            }
        }
    }

    fn update_sequential_stage(&mut self, d: &Delta) {
        for c in &mut self.checks {
            let Some(test) = c.proportion.as_mut() else {
                continue;
            };
            match c.kind {
                Kind::ErrorMax(_) => test.update(d.canary.errors, d.canary.requests),
                Kind::LatencyMax { max, .. } => {
                    let Some(h) = &d.canary.latency else { continue };
                    match h.bound_at_or_above(max) {
                        Some(i) if h.le_ms[i].is_finite() => {
                            let n = latency_total(h, d.canary.latency_requests);
                            test.update(h.above(i, n), n);
                            c.bounds = Some((h.le_ms[i], h.le_ms[i]));
                            c.untestable = None;
                        }
                        _ => {
                            c.untestable = Some(format!(
                                "the histogram has no bound at or above {}",
                                ms(max)
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The interval from the base to `current`, or the no-data judgement
    /// that replaces it. An observation beyond `bounds` (implausible,
    /// inconsistent) is left out and the base kept, so the next sound one
    /// is judged from a sound base; if the next one rises plausibly from the
    /// refused one (the counters moved for good), judging goes on from the
    /// refused one (then `true`). Counters going backwards, changed buckets
    /// or custom metrics restart from `current`.
    fn accept(&mut self, current: &Observation) -> Result<(Delta, bool), Box<Judgement>> {
        let refuse = |judge: &mut Judge, e: ObservationError| {
            Box::new(Judgement {
                skipped: true,
                ..judge.judgement(
                    Verdict::NoData,
                    format!("no data: {e}; this observation is left out"),
                    Vec::new(),
                )
            })
        };
        if let Err(e) = current.validate() {
            if self.last.is_none() {
                self.remember(current);
            }
            return Err(refuse(self, e));
        }
        match self.sound_delta(current) {
            Ok(d) => {
                self.refused = None;
                Ok((d, false))
            }
            Err(e @ ObservationError::Implausible { .. }) => {
                if let Some(refused) = self.refused.take() {
                    let moved = current
                        .since(&refused)
                        .and_then(|d| current.check_rise(&refused, &d));
                    if moved.is_ok() {
                        self.rebase(&refused);
                        return self.sound_delta(current).map(|d| (d, true)).map_err(|e| {
                            Box::new(self.judgement(
                                Verdict::NoData,
                                format!("no data: {e}"),
                                Vec::new(),
                            ))
                        });
                    }
                }
                self.refused = Some(current.clone());
                Err(refuse(self, e))
            }
            Err(e) => {
                // Start again from here: the next interval is judged on its own.
                self.rebase(current);
                Err(Box::new(self.judgement(
                    Verdict::NoData,
                    format!("no data: {e}"),
                    Vec::new(),
                )))
            }
        }
    }

    /// Judges after an interval. `current` is cumulative since the rollout
    /// start. `end_of_pause` matters only to `fixed`, which judges only
    /// then: before it, its checks are `NotEnoughData` ("not judged yet"),
    /// though no-data is still reported. `sequential` and `none` judge
    /// every interval.
    pub fn observe(&mut self, current: &Observation, end_of_pause: bool) -> Judgement {
        let (main, reference) = self.with_baseline(current);
        let judged = self.observe_one(&main, end_of_pause);
        match (self.reference.as_mut(), &reference) {
            (Some(r), Some(o)) => with_reference(judged, r.observe_one(o, end_of_pause)),
            _ => judged,
        }
    }

    fn observe_one(&mut self, current: &Observation, end_of_pause: bool) -> Judgement {
        let (delta, from_refused) = match self.accept(current) {
            Ok(d) => d,
            Err(judgement) => return *judgement,
        };
        self.update_ratio_tests(&delta);
        self.update_sequential_stage(&delta);
        self.update_within(&delta);
        self.rollout.add(&delta);
        self.stage.add(&delta);
        self.remember(current);
        Judgement {
            from_refused,
            ..self.judge_interval(&delta, end_of_pause)
        }
    }

    /// The verdict after the interval `delta`, already taken in, with the
    /// advisory checks' fails, early success and the split beside it.
    fn judge_interval(&self, delta: &Delta, end_of_pause: bool) -> Judgement {
        let mut j = self.combine(delta, end_of_pause);
        let failed: Vec<&str> = j
            .checks
            .iter()
            .filter(|c| c.advisory && c.verdict == Verdict::Fail)
            .map(|c| c.reason.as_str())
            .collect();
        if !failed.is_empty() {
            j.would_fail = Some(failed.join("; "));
        }
        // A split mismatch means the metrics may not be the canary's at the
        // weight asked for: no early success on them.
        // Nor while the share seen is outside the band, shown or not yet.
        if j.verdict == Verdict::Pass
            && !j.split.as_ref().is_some_and(|s| s.mismatch)
            && self.split.as_ref().is_none_or(SplitTest::in_band)
        {
            j.within_limits = self.within_limits(&j.checks);
        }
        j
    }

    /// The combined verdict of the enforced checks.
    fn combine(&self, delta: &Delta, end_of_pause: bool) -> Judgement {
        let no_data = self.no_data_reason(delta);
        let checks: Vec<CheckResult> = (0..self.checks.len())
            .map(|i| self.evaluate(i, end_of_pause))
            .collect();
        let fixed_waiting = self.config.method == Method::Fixed && !end_of_pause;

        let n_c = self.stage.canary.requests;
        let min = self.config.min_requests;
        let enforced = || checks.iter().filter(|c| !c.advisory);
        let failed: Vec<&CheckResult> = enforced().filter(|c| c.verdict == Verdict::Fail).collect();
        if !failed.is_empty() {
            let mut reason = failed
                .iter()
                .map(|c| c.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if self.config.method == Method::Fixed {
                reason.push_str(&format!(" [{}]", self.score(&checks)));
            }
            return self.judgement(Verdict::Fail, reason, checks);
        }
        if let Some(reason) = no_data {
            return self.judgement(Verdict::NoData, format!("no data: {reason}"), checks);
        }
        if let Some(c) = enforced().find(|c| c.verdict == Verdict::NoData) {
            let reason = format!("no data: {}", c.reason);
            return self.judgement(Verdict::NoData, reason, checks);
        }
        if n_c < min {
            let reason = format!(
                "not enough data: {} of {} canary requests in this step",
                count(n_c),
                count(min)
            );
            return self.judgement(Verdict::NotEnoughData, reason, checks);
        }
        if fixed_waiting {
            let reason = format!(
                "not judged yet: the fixed method judges at the end of the pause ({} canary requests so far)",
                count(n_c)
            );
            return self.judgement(Verdict::NotEnoughData, reason, checks);
        }
        let held: Vec<&str> = enforced()
            .filter(|c| c.verdict == Verdict::NotEnoughData && c.reason.contains(HELD))
            .map(|c| c.reason.as_str())
            .collect();
        // A comparison held while the reference gets no requests (the
        // canary has all the traffic) can gain no evidence: it would hold
        // for ever while every client gets the canary's answers. The
        // canary's rate in this step is then tested on its own against
        // what the reference showed since judging began (× the limit, at
        // least the floor): clearly above it is a fail.
        if delta.stable.requests == 0 && delta.canary.requests > 0 {
            for (c, k) in checks.iter().zip(&self.checks) {
                if c.advisory || c.verdict != Verdict::NotEnoughData || !c.reason.contains(HELD) {
                    continue;
                }
                if let Some(reason) = self.beyond_alone(&k.kind) {
                    return self.judgement(Verdict::Fail, reason, checks);
                }
            }
        }
        if !held.is_empty() {
            let reason = held.join("; ");
            return self.judgement(Verdict::NotEnoughData, reason, checks);
        }
        if let Some(c) = enforced().find(|c| c.verdict == Verdict::NotEnoughData) {
            let reason = format!("not enough data: {}", c.reason);
            return self.judgement(Verdict::NotEnoughData, reason, checks);
        }
        if n_c == 0 {
            // Whatever minRequests says, no canary request is no evidence.
            let reason = "not enough data: no canary requests in this step".to_string();
            return self.judgement(Verdict::NotEnoughData, reason, checks);
        }
        let mut reason = if checks.is_empty() {
            format!(
                "pass: no limits configured ({} canary requests in this step)",
                count(n_c)
            )
        } else {
            format!(
                "pass: {}",
                checks
                    .iter()
                    .map(|c| if c.advisory {
                        format!("advisory {}: {}", c.name, c.reason)
                    } else {
                        c.reason.clone()
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        if self.config.method == Method::Fixed && !checks.is_empty() {
            reason.push_str(&format!(" [{}]", self.score(&checks)));
        }
        self.judgement(Verdict::Pass, reason, checks)
    }

    /// Early success: `Some(reason)` when every enforced check's step test
    /// of being within its limit has reached `1 / (1 − confidence)` (an
    /// intersection–union test: each at the full level, see
    /// `docs/judge.md`). `None` for `fixed` and `none`, while a latency
    /// ratio check is enforced (no sound test), or without any check shown.
    fn within_limits(&self, checks: &[CheckResult]) -> Option<String> {
        if self.config.method != Method::Sequential {
            return None;
        }
        let log_threshold = -(1.0 - self.config.confidence).ln();
        let stage = &self.stage;
        let other = self.config.compare_with.as_str();
        let mut parts = Vec::new();
        for (c, r) in self.checks.iter().zip(checks) {
            if c.advisory {
                continue;
            }
            match c.kind {
                // Nothing can exceed a 100 % error rate.
                Kind::ErrorMax(max) if max >= 1.0 => continue,
                Kind::LatencyRatio { .. } => return None,
                // Skipped while the source counts no 4xx (see `evaluate`).
                Kind::ClientErrorRatio(_)
                    if self.rollout.canary.client_requests == 0
                        && self.rollout.stable.client_requests == 0 =>
                {
                    continue;
                }
                _ => {}
            }
            if r.verdict != Verdict::Pass {
                return None;
            }
            // A 5xx or 4xx ratio limit is met when the ratio is shown below
            // it or the canary's rate below its floor (a rate that low is
            // no reason to hold a pause, and with no errors on either side
            // no ratio can ever be shown): the mean of the two e-values,
            // an e-value when both nulls hold.
            let (log_e, by_floor) = match (&c.within_proportion, &c.within_ratio) {
                (Some(floor), Some(r)) => {
                    let (a, b) = (r.log_e(), floor.log_e());
                    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
                    (hi + ((1.0 + (lo - hi).exp()) / 2.0).ln(), b > a)
                }
                (Some(t), None) => (t.log_e(), false),
                (None, Some(t)) => (t.log_e(), false),
                _ => return None,
            };
            if log_e < log_threshold {
                return None;
            }
            let rate = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
            let show = |x: Option<f64>| x.map_or("n/a".into(), pct);
            let what = match c.kind {
                Kind::ErrorMax(max) => format!(
                    "{} < {}",
                    show(rate(stage.canary.errors, stage.canary.requests)),
                    pct(max)
                ),
                Kind::LatencyMax { max, .. } => {
                    let b = c.within_bound?;
                    format!("at most {} (limit {})", ms(b), ms(max))
                }
                Kind::ErrorRatio(_) if by_floor => format!(
                    "{} < floor {}",
                    show(rate(stage.canary.errors, stage.canary.requests)),
                    pct(ERROR_FLOOR)
                ),
                Kind::ClientErrorRatio(_) if by_floor => format!(
                    "{} < floor {}",
                    show(rate(
                        stage.canary.client_errors,
                        stage.canary.client_requests
                    )),
                    pct(CLIENT_ERROR_FLOOR)
                ),
                Kind::ErrorRatio(m) => format!(
                    "{} < {} × {other} {}",
                    show(rate(stage.canary.errors, stage.canary.requests)),
                    ratio(m),
                    show(rate(stage.stable.errors, stage.stable.requests))
                ),
                Kind::ClientErrorRatio(m) => format!(
                    "{} < {} × {other} {}",
                    show(rate(
                        stage.canary.client_errors,
                        stage.canary.client_requests
                    )),
                    ratio(m),
                    show(rate(
                        stage.stable.client_errors,
                        stage.stable.client_requests
                    ))
                ),
                Kind::Custom(i) => {
                    let metric = &self.config.custom[i];
                    let (s, cn) = stage.custom.get(i)?;
                    let (cr, sr) = (
                        show(rate(cn.numerator, cn.denominator)),
                        show(rate(s.numerator, s.denominator)),
                    );
                    match metric.direction {
                        Direction::LowerIsBetter => {
                            format!("{cr} < {} × {other} {sr}", ratio(metric.ratio()))
                        }
                        Direction::HigherIsBetter => {
                            format!("{cr} > {other} {sr} ÷ {}", ratio(metric.ratio()))
                        }
                    }
                }
                Kind::LatencyRatio { .. } => return None,
            };
            parts.push(format!(
                "{} {what} (e = {} ≥ {})",
                c.name,
                e_fmt(log_e),
                e_fmt(log_threshold)
            ));
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!("within every limit: {}", parts.join(", ")))
    }

    /// Kayenta-like score: the share of checks that pass.
    fn score(&self, checks: &[CheckResult]) -> String {
        let passed = checks.iter().filter(|c| c.verdict == Verdict::Pass).count();
        format!(
            "score {:.0}: {passed} of {} checks pass",
            100.0 * passed as f64 / checks.len().max(1) as f64,
            checks.len()
        )
    }

    fn judgement(&self, verdict: Verdict, reason: String, checks: Vec<CheckResult>) -> Judgement {
        Judgement {
            verdict,
            reason,
            checks,
            stage_canary_requests: self.stage.canary.requests,
            stage_stable_requests: self.stage.stable.requests,
            skipped: false,
            from_refused: false,
            would_fail: None,
            within_limits: None,
            split: self
                .split
                .as_ref()
                .and_then(|t| t.result(self.split_log_threshold())),
        }
    }

    /// The log e-value a split mismatch needs: `ln(2 / (1 − confidence))`,
    /// the level split between the two sides of the band.
    fn split_log_threshold(&self) -> f64 {
        (2.0 / (1.0 - self.config.confidence)).ln()
    }

    /// The canary's expected share of requests in this interval, if known.
    fn canary_share(&self) -> Option<f64> {
        if let Some(w) = self.weight {
            return Some(w / 100.0);
        }
        for acc in [&self.stage, &self.rollout] {
            let total = acc.canary.requests + acc.stable.requests;
            if acc.canary.requests > 0 && total > 0 {
                return Some(acc.canary.requests as f64 / total as f64);
            }
        }
        None
    }

    fn no_data_reason(&self, d: &Delta) -> Option<String> {
        let other = self.config.compare_with.as_str();
        let wants_latency = self.checks.iter().any(|c| {
            !c.advisory && matches!(c.kind, Kind::LatencyMax { .. } | Kind::LatencyRatio { .. })
        });
        if wants_latency {
            for (name, v) in [("canary", &d.canary), (other, &d.stable)] {
                if v.requests > 0 && v.latency.is_none() {
                    return Some(format!(
                        "the metric source gave no latency histogram for the {name} in this interval"
                    ));
                }
            }
        }
        if d.canary.requests == 0 && d.stable.requests > 0 {
            let share = self.canary_share()?;
            if share >= 1.0 {
                return Some(format!(
                    "the canary got no requests in this interval although it has all the traffic ({other} got {})",
                    count(d.stable.requests)
                ));
            }
            let expected = d.stable.requests as f64 * share / (1.0 - share);
            if expected >= NO_DATA_EXPECTED {
                return Some(format!(
                    "the canary got no requests in this interval while {other} got {} (about {:.0} expected at a {} share)",
                    count(d.stable.requests),
                    expected,
                    pct(share)
                ));
            }
        }
        None
    }

    /// For a 5xx or 4xx ratio check while the reference gets no requests:
    /// `Some(reason)` when the canary's rate in this step is shown above
    /// `m ×` the reference's rate since judging began (at least the
    /// check's floor), by a one-sided binomial test at `1 / threshold`.
    fn beyond_alone(&self, kind: &Kind) -> Option<String> {
        let other = self.config.compare_with.as_str();
        let (m, what, x, n, s_x, s_n, floor) = match *kind {
            Kind::ErrorRatio(m) => (
                m,
                "canary error rate",
                self.stage.canary.errors,
                self.stage.canary.requests,
                self.rollout.stable.errors,
                self.rollout.stable.requests,
                ERROR_FLOOR,
            ),
            Kind::ClientErrorRatio(m) => (
                m,
                "canary client errors (4xx)",
                self.stage.canary.client_errors,
                self.stage.canary.client_requests,
                self.rollout.stable.client_errors,
                self.rollout.stable.client_requests,
                CLIENT_ERROR_FLOOR,
            ),
            _ => return None,
        };
        if n == 0 {
            return None;
        }
        // Without any reference request, the limit's slack over the floor.
        let reference = if s_n > 0 {
            (m * s_x as f64 / s_n as f64).max(floor)
        } else {
            m * floor
        };
        if reference >= 1.0 {
            return None;
        }
        let p = stats::binomial_sf_ge(x, n, reference);
        let alpha = (-self.log_threshold).exp();
        let of = if s_n > 0 {
            format!(
                "{} × {other}'s rate since judging began, at least {}",
                ratio(m),
                pct(floor)
            )
        } else {
            format!(
                "{} × the floor {}: {other} has had no requests",
                ratio(m),
                pct(floor)
            )
        };
        (p < alpha).then(|| {
            format!(
                "{what} {} ({}/{}) in this step, while {other} gets no requests: above {} ({of}) with p = {} < {}",
                pct(x as f64 / n as f64),
                count(x),
                count(n),
                pct(reference),
                p_fmt(p),
                p_fmt(alpha)
            )
        })
    }

    fn evaluate(&self, i: usize, end_of_pause: bool) -> CheckResult {
        let check = &self.checks[i];
        let stage = &self.stage;
        let enough = stage.canary.requests >= self.config.min_requests;
        let mut r = CheckResult {
            name: check.name.clone(),
            verdict: Verdict::Pass,
            reason: String::new(),
            canary: None,
            stable: None,
            limit: 0.0,
            evidence: Evidence::None,
            advisory: check.advisory,
        };
        let other = self.config.compare_with.as_str();
        // Describe the numbers first.
        match check.kind {
            Kind::ErrorMax(max) => {
                r.limit = max;
                r.canary = stage.canary.error_rate();
                r.reason = format!(
                    "canary error rate {} ({}/{}) in this step, limit {}",
                    r.canary.map_or("n/a".into(), pct),
                    count(stage.canary.errors),
                    count(stage.canary.requests),
                    pct(max)
                );
            }
            Kind::ErrorRatio(m) => {
                r.limit = m;
                let acc = self.ratio_acc();
                r.canary = acc.canary.error_rate();
                r.stable = acc.stable.error_rate();
                r.reason = format!(
                    "{} {}",
                    versus(
                        "canary error rate",
                        other,
                        (r.canary, acc.canary.errors, acc.canary.requests),
                        (r.stable, acc.stable.errors, acc.stable.requests),
                    ),
                    self.ratio_window()
                );
            }
            Kind::LatencyMax { q, name, max } => {
                r.limit = max;
                r.canary = stage.canary.quantile(q);
                r.reason = format!(
                    "canary {name} {} in this step, limit {}",
                    r.canary.map_or("n/a".into(), ms),
                    ms(max)
                );
            }
            Kind::LatencyRatio { q, name, m } => {
                r.limit = m;
                let acc = self.ratio_acc();
                r.canary = acc.canary.quantile(q);
                r.stable = acc.stable.quantile(q);
                r.reason = format!(
                    "canary {name} {} vs {other} {} {}",
                    r.canary.map_or("n/a".into(), ms),
                    r.stable.map_or("n/a".into(), ms),
                    self.ratio_window()
                );
            }
            Kind::Custom(ci) => {
                let metric = &self.config.custom[ci];
                r.limit = metric.ratio();
                let acc = self.ratio_acc();
                match acc.custom.get(ci) {
                    Some((s, c)) => {
                        let rate = |x: &Ratio| {
                            (x.denominator > 0).then(|| x.numerator as f64 / x.denominator as f64)
                        };
                        r.canary = rate(c);
                        r.stable = rate(s);
                        r.reason = format!(
                            "{} {}",
                            versus(
                                &format!("{}: canary", metric.name),
                                other,
                                (r.canary, c.numerator, c.denominator),
                                (r.stable, s.numerator, s.denominator),
                            ),
                            self.ratio_window()
                        );
                    }
                    None => {
                        r.verdict = Verdict::NoData;
                        r.reason = format!("{}: the metric source gave no values", metric.name);
                        return r;
                    }
                }
            }
            Kind::ClientErrorRatio(m) => {
                r.limit = m;
                let acc = &self.rollout;
                // Stable has had no request at all since judging began (a
                // plan that starts at 100 %): nothing to compare with. A
                // canary above `m ×` the floor is held, and tested alone
                // while stable gets none (`beyond_alone`).
                if acc.stable.requests == 0 && acc.canary.client_requests > 0 {
                    r.canary = acc.canary.client_error_rate();
                    r.reason = format!(
                        "canary client errors (4xx) {} ({}/{}) since judging began, while {other} has had no requests",
                        r.canary.map_or("n/a".into(), pct),
                        count(acc.canary.client_errors),
                        count(acc.canary.client_requests),
                    );
                    if r.canary.is_some_and(|c| c > m * CLIENT_ERROR_FLOOR) {
                        r.verdict = Verdict::NotEnoughData;
                        r.reason = format!(
                            "{}: {HELD} (above {} × the floor {})",
                            r.reason,
                            ratio(m),
                            pct(CLIENT_ERROR_FLOOR)
                        );
                    }
                    return r;
                }
                if acc.canary.client_requests == 0 || acc.stable.client_requests == 0 {
                    // Skipped, as documented: not every source counts 4xx,
                    // and with one side only there is nothing to compare.
                    r.reason = if acc.canary.client_requests == 0 && acc.stable.client_requests == 0
                    {
                        "client errors (4xx): not checked, the metric source counts none".into()
                    } else {
                        "client errors (4xx): not checked yet, counted for one version only".into()
                    };
                    return r;
                }
                r.canary = acc.canary.client_error_rate();
                r.stable = acc.stable.client_error_rate();
                r.reason = format!(
                    "{} since judging began",
                    versus(
                        "canary client errors (4xx)",
                        other,
                        (
                            r.canary,
                            acc.canary.client_errors,
                            acc.canary.client_requests,
                        ),
                        (
                            r.stable,
                            acc.stable.client_errors,
                            acc.stable.client_requests,
                        ),
                    )
                );
            }
        }
        // Missing latency histograms are no data, never a pass.
        if let Kind::LatencyMax { .. } | Kind::LatencyRatio { .. } = check.kind {
            let acc = match check.kind {
                Kind::LatencyMax { .. } => stage,
                _ => self.ratio_acc(),
            };
            let needs_stable = matches!(check.kind, Kind::LatencyRatio { .. });
            if (acc.canary.requests > 0 && acc.canary.latency.is_none())
                || (needs_stable && acc.stable.requests > 0 && acc.stable.latency.is_none())
            {
                r.verdict = Verdict::NoData;
                r.reason = format!("{}: the metric source gave no latency histogram", r.name);
                return r;
            }
        }
        let beyond = self.beyond(check, &r);
        match self.config.method {
            _ if matches!(check.kind, Kind::ClientErrorRatio(_)) => {
                self.evaluate_sequential(check, &mut r, beyond)
            }
            Method::Sequential => self.evaluate_sequential(check, &mut r, beyond),
            Method::Fixed => {
                if end_of_pause && enough {
                    self.evaluate_fixed(check, &mut r, beyond)
                } else {
                    r.verdict = Verdict::NotEnoughData;
                    r.reason.push_str(": judged at the end of the pause");
                }
            }
            Method::None => self.evaluate_none(check, &mut r),
        }
        if !enough && r.verdict != Verdict::NoData {
            if r.verdict == Verdict::Fail {
                r.reason.push_str(&format!(
                    " (held: only {} of {} canary requests in this step)",
                    count(stage.canary.requests),
                    count(self.config.min_requests)
                ));
            }
            r.verdict = Verdict::NotEnoughData;
        }
        r
    }

    /// Whether the canary looks beyond the check's limit: its point estimate
    /// is beyond the limit and, for a ratio limit, the data also lean that
    /// way (the check's e-value is at least 1: the data are likelier if the
    /// canary is beyond the limit than if it is within). Two identical
    /// versions have a canary "worse" than stable half the time by the
    /// point estimates alone; the e-value of a canary within its limit
    /// tends to 0, so such holds end. A latency quantile beyond m × the
    /// stable's tested bound but not above the canary's tested bound is out
    /// of the test's sight: it looks beyond on its point estimate alone.
    fn beyond(&self, check: &Check, r: &CheckResult) -> bool {
        let point = match check.kind {
            Kind::ErrorMax(max) | Kind::LatencyMax { max, .. } => {
                return r.canary.is_some_and(|c| c > max);
            }
            Kind::ErrorRatio(m) | Kind::LatencyRatio { m, .. } | Kind::ClientErrorRatio(m) => {
                match (r.canary, r.stable) {
                    (Some(c), Some(s)) => c > m * s,
                    _ => false,
                }
            }
            Kind::Custom(i) => {
                let metric = &self.config.custom[i];
                match (r.canary, r.stable, metric.direction) {
                    (Some(c), Some(s), Direction::LowerIsBetter) => c > metric.ratio() * s,
                    (Some(c), Some(s), Direction::HigherIsBetter) => c * metric.ratio() < s,
                    _ => false,
                }
            }
        };
        // A latency ratio is tested at the histogram's bounds: the canary's
        // share above the smallest bound at or above m × the stable's bound.
        // A canary whose quantile lies beyond m × the stable's bound but
        // inside that bucket is out of the test's sight (with bounds 15 and
        // 30 ms, a 20 ms canary against a 10 ms stable): its e-value says
        // nothing, so it looks beyond on the point estimate alone.
        let unseen = match (&check.kind, check.bounds, r.canary) {
            (Kind::LatencyRatio { m, .. }, Some((b_s, b_c)), Some(c)) => c > *m * b_s && c <= b_c,
            _ => false,
        };
        point && (unseen || check.ratio.as_ref().is_none_or(|t| t.log_e() >= 0.0))
    }

    /// The data the ratio checks are judged on: since the rollout began for
    /// `sequential` (its evidence accumulates), since the stage began for
    /// the others.
    /// What the ratio checks' counts cover, as their reasons say it.
    fn ratio_window(&self) -> &'static str {
        if self.config.method == Method::Sequential {
            "since judging began"
        } else {
            "in this step"
        }
    }

    fn ratio_acc(&self) -> &Acc {
        if self.config.method == Method::Sequential {
            &self.rollout
        } else {
            &self.stage
        }
    }

    fn conf(&self) -> String {
        pct_conf(self.config.confidence)
    }

    fn evaluate_sequential(&self, check: &Check, r: &mut CheckResult, beyond: bool) {
        let other = self.config.compare_with.as_str();
        let (log_e, max_log_e) = match (&check.proportion, &check.ratio) {
            (Some(p), _) => (p.log_e(), p.max_log_e),
            (_, Some(t)) => (t.log_e(), t.max_log_e),
            _ => {
                // ErrorMax of 100 %: nothing can exceed it.
                r.reason.push_str(": cannot be exceeded");
                return;
            }
        };
        let threshold = self.log_threshold;
        r.evidence = Evidence::EValue {
            value: log_e.exp(),
            max: max_log_e.exp(),
            threshold: threshold.exp(),
        };
        let crossed = max_log_e >= threshold;
        let e_text = format!(
            "e-value {} {} {}",
            e_fmt(max_log_e),
            if crossed { "≥" } else { "<" },
            e_fmt(threshold)
        );
        if crossed {
            r.verdict = Verdict::Fail;
            let what = match check.kind {
                Kind::ErrorMax(_) | Kind::LatencyMax { .. } => "above the limit".to_string(),
                Kind::ErrorRatio(m) | Kind::ClientErrorRatio(m) => worse_than(m, other),
                Kind::LatencyRatio { m, .. } => {
                    let (b_s, b_c) = check.bounds.unwrap_or((f64::NAN, f64::NAN));
                    if (m - 1.0).abs() < 1e-12 {
                        format!("slower than {other} above {}", ms(b_s))
                    } else {
                        format!(
                            "more requests above {} than {other} above {}",
                            ms(b_c),
                            ms(b_s)
                        )
                    }
                }
                Kind::Custom(i) => match self.config.custom[i].direction {
                    Direction::LowerIsBetter => worse_than(self.config.custom[i].ratio(), other),
                    Direction::HigherIsBetter => {
                        let m = self.config.custom[i].ratio();
                        if (m - 1.0).abs() < 1e-12 {
                            format!("lower than {other}")
                        } else {
                            format!("below {other} ÷ {}", ratio(m))
                        }
                    }
                },
            };
            let bound = check
                .ratio
                .as_ref()
                .filter(|t| t.log_e() >= threshold)
                .and_then(|t| t.lower_bound(threshold))
                .filter(|lb| {
                    matches!(check.kind, Kind::ErrorRatio(_) | Kind::ClientErrorRatio(_))
                        && *lb > 0.0
                })
                .map(|lb| format!("; ratio ≥ {}", ratio(lb)))
                .unwrap_or_default();
            r.reason = format!(
                "{}: {what} with {} confidence ({e_text}{bound})",
                r.reason,
                self.conf()
            );
        } else {
            let note = check
                .untestable
                .as_ref()
                .map(|w| format!("; not tested: {w}"))
                .unwrap_or_default();
            if beyond {
                r.verdict = Verdict::NotEnoughData;
                r.reason = format!("{}: {HELD} ({e_text}{note})", r.reason);
            } else {
                r.reason = format!("{} ({e_text}{note})", r.reason);
            }
        }
    }

    fn evaluate_fixed(&self, check: &Check, r: &mut CheckResult, beyond: bool) {
        let other = self.config.compare_with.as_str();
        let s = &self.stage;
        let alpha = self.alpha;
        let result: Option<(f64, String)> = match check.kind {
            Kind::ErrorMax(max) => Some((
                stats::binomial_sf_ge(s.canary.errors, s.canary.requests, max),
                "exact binomial test".into(),
            )),
            Kind::ErrorRatio(m) => rate_ratio_fixed(
                s.canary.errors,
                s.canary.requests,
                s.stable.errors,
                s.stable.requests,
                m,
            ),
            Kind::LatencyMax { q, max, .. } => {
                let h = s.canary.latency.as_ref();
                match h.and_then(|h| h.bound_at_or_above(max).map(|i| (h, i))) {
                    Some((h, i)) if h.le_ms[i].is_finite() => {
                        let n = s.canary.latency_total();
                        Some((
                            stats::binomial_sf_ge(h.above(i, n), n, 1.0 - q),
                            format!("exact binomial test of requests above {}", ms(h.le_ms[i])),
                        ))
                    }
                    _ => {
                        r.reason.push_str(&format!(
                            " (not tested: the histogram has no bound at or above {})",
                            ms(max)
                        ));
                        None
                    }
                }
            }
            Kind::LatencyRatio { m, .. } => {
                let (Some(hc), Some(hs)) = (&s.canary.latency, &s.stable.latency) else {
                    r.verdict = Verdict::NotEnoughData;
                    r.reason
                        .push_str(&format!(" (no {other} requests to compare with)"));
                    return;
                };
                if hc.le_ms != hs.le_ms {
                    r.verdict = Verdict::NoData;
                    r.reason
                        .push_str(" (the versions' histograms have different buckets)");
                    return;
                }
                let c = stats::per_bucket(hc, s.canary.latency_total());
                let st = stats::per_bucket(hs, s.stable.latency_total());
                match stats::mann_whitney_binned(&c, &st) {
                    Some(mw) => {
                        let ratio_est = match (r.canary, r.stable) {
                            (Some(c), Some(s)) if s > 0.0 => c / s,
                            _ => f64::NAN,
                        };
                        // Kayenta-like: significant and larger than the allowed effect.
                        let p = if ratio_est > m { mw.p_value } else { 1.0 };
                        Some((
                            p,
                            format!(
                                "Mann–Whitney U p = {}, rank-biserial {:.3}, ratio {}",
                                p_fmt(mw.p_value),
                                mw.rank_biserial,
                                if ratio_est.is_finite() {
                                    ratio(ratio_est)
                                } else {
                                    "n/a".into()
                                }
                            ),
                        ))
                    }
                    None => None,
                }
            }
            Kind::Custom(i) => {
                let metric = &self.config.custom[i];
                match s.custom.get(i) {
                    Some((st, c)) => {
                        let (a, b) = match metric.direction {
                            Direction::LowerIsBetter => (c, st),
                            Direction::HigherIsBetter => (st, c),
                        };
                        rate_ratio_fixed(
                            a.numerator,
                            a.denominator,
                            b.numerator,
                            b.denominator,
                            metric.ratio(),
                        )
                    }
                    None => None,
                }
            }
            Kind::ClientErrorRatio(_) => None,
        };
        let Some((p, test)) = result else {
            if r.stable.is_none() && matches!(check.kind, Kind::ErrorRatio(_) | Kind::Custom(_)) {
                r.verdict = Verdict::NotEnoughData;
                r.reason.push_str(" (nothing to compare with)");
            }
            return;
        };
        r.evidence = Evidence::PValue { value: p, alpha };
        if p < alpha {
            r.verdict = Verdict::Fail;
            r.reason = format!(
                "{}: worse with {} confidence ({test}, p = {} < {})",
                r.reason,
                self.conf(),
                p_fmt(p),
                p_fmt(alpha)
            );
        } else if beyond {
            r.verdict = Verdict::NotEnoughData;
            r.reason = format!(
                "{}: {HELD} ({test}, p = {} ≥ {})",
                r.reason,
                p_fmt(p),
                p_fmt(alpha)
            );
        } else {
            r.reason = format!("{} ({test}, p = {} ≥ {})", r.reason, p_fmt(p), p_fmt(alpha));
        }
    }

    fn evaluate_none(&self, check: &Check, r: &mut CheckResult) {
        let other = self.config.compare_with.as_str();
        let over = match check.kind {
            Kind::ErrorMax(max) | Kind::LatencyMax { max, .. } => r.canary.map(|c| c > max),
            Kind::ErrorRatio(m) | Kind::LatencyRatio { m, .. } => match (r.canary, r.stable) {
                (Some(c), Some(s)) => Some(c > m * s),
                _ => None,
            },
            Kind::Custom(i) => {
                let metric = &self.config.custom[i];
                match (r.canary, r.stable, metric.direction) {
                    (Some(c), Some(s), Direction::LowerIsBetter) => Some(c > metric.ratio() * s),
                    (Some(c), Some(s), Direction::HigherIsBetter) => Some(c * metric.ratio() < s),
                    _ => None,
                }
            }
            // Judged by its anytime-valid test whatever the method.
            Kind::ClientErrorRatio(_) => None,
        };
        match over {
            Some(true) => {
                r.verdict = Verdict::Fail;
                r.reason.push_str(&match check.kind {
                    Kind::ErrorRatio(m) | Kind::LatencyRatio { m, .. } => {
                        format!(": more than {} × {other}", ratio(m))
                    }
                    Kind::Custom(_) => {
                        format!(": worse than {other} by more than {}×", ratio(r.limit))
                    }
                    _ => ": over the limit".into(),
                });
            }
            Some(false) => {}
            None => {
                r.verdict = Verdict::NotEnoughData;
                r.reason.push_str(" (nothing to compare with)");
            }
        }
    }
}

/// The judge of the baseline against the stable: the relative checks of
/// `config` (the absolute limits are the canary's; with none, only the
/// baseline's share is checked), compared with the stable. `None` without
/// a baseline.
fn reference_config(config: &Config) -> Option<Config> {
    if config.compare_with != Reference::Baseline {
        return None;
    }
    let relative = |l: &Limit| Limit {
        max: None,
        max_ratio_to_stable: l.max_ratio_to_stable,
    };
    let c = Config {
        error_rate: relative(&config.error_rate),
        latency_p50: relative(&config.latency_p50),
        latency_p95: relative(&config.latency_p95),
        latency_p99: relative(&config.latency_p99),
        compare_with: Reference::Stable,
        // Every relative check judges the baseline, advisory or not: an
        // advisory check still needs a fair reference to advise on.
        advisory: Vec::new(),
        // Custom metrics are the canary's business numbers beside the
        // baseline's; sources give no stable-versus-baseline pair.
        custom: Vec::new(),
        ..config.clone()
    };
    Some(c)
}

/// The canary's judgement (against the baseline) with the baseline's own
/// against the stable: a baseline shown worse than the stable makes the
/// comparison worthless, so a canary that did not fail on its own is no
/// data (never a pass); a baseline whose share is off holds the step as
/// the canary's would.
fn with_reference(mut j: Judgement, r: Judgement) -> Judgement {
    let as_baseline = |s: &str| s.replace("canary", "baseline");
    if r.verdict == Verdict::Fail && j.verdict != Verdict::Fail {
        j.verdict = Verdict::NoData;
        j.reason = format!(
            "no data: the baseline is no fair reference, it is worse than the stable: {}",
            as_baseline(&r.reason)
        );
        j.within_limits = None;
    }
    if let Some(split) = r.split.filter(|s| s.mismatch)
        && !j.split.as_ref().is_some_and(|s| s.mismatch)
    {
        // "baseline got 0.5 % of stable and baseline requests (…), 25 %
        // expected (…)": the share it is given of what the canary leaves.
        let reason = as_baseline(&split.reason)
            .replacen("of requests", "of stable and baseline requests", 1)
            .replacen(" requested (", " expected (", 1);
        j.split = Some(Split { reason, ..split });
        j.within_limits = None;
    }
    j
}

fn worse_than(m: f64, other: &str) -> String {
    if (m - 1.0).abs() < 1e-12 {
        format!("worse than {other}")
    } else {
        format!("above {} × {other}", ratio(m))
    }
}

/// The pair of bounds compared for a latency ratio check: the stable's
/// smallest bound `b` with at least a share `q` of its requests at or below
/// (from data before the interval), and the canary's smallest bound at or
/// above `m · b`.
fn latency_pair(
    prior: &Histogram,
    prior_total: u64,
    canary: &Histogram,
    q: f64,
    m: f64,
) -> Result<(usize, usize), String> {
    if prior_total == 0 {
        return Err("no stable latencies yet".into());
    }
    let target = q * prior_total as f64;
    let i_s = prior
        .counts
        .iter()
        .position(|&c| c as f64 >= target && c > 0)
        .filter(|&i| prior.le_ms[i].is_finite())
        .ok_or_else(|| "the stable quantile is beyond the histogram's last bound".to_string())?;
    let i_c = canary
        .bound_at_or_above(m * prior.le_ms[i_s])
        .filter(|&i| canary.le_ms[i].is_finite())
        .ok_or_else(|| {
            format!(
                "the histogram has no bound at or above {} × {}",
                ratio(m),
                ms(prior.le_ms[i_s])
            )
        })?;
    if i_s >= canary.le_ms.len() || prior.le_ms.len() != canary.le_ms.len() {
        return Err("the versions' histograms have different buckets".into());
    }
    Ok((i_s, i_c))
}

/// Fixed-horizon one-sided test of `p_a > m · p_b` for `x_a` of `n_a` against
/// `x_b` of `n_b`: the two-proportion z-test, or with few events the exact
/// conditional binomial test (`x_a ~ Binomial(x_a + x_b, θ(m))`).
fn rate_ratio_fixed(x_a: u64, n_a: u64, x_b: u64, n_b: u64, m: f64) -> Option<(f64, String)> {
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let pooled = (x_a + x_b) as f64 / (n_a + n_b) as f64;
    let small = (pooled * n_a as f64).min(pooled * n_b as f64) < SMALL_COUNT
        || (n_a as f64 - x_a as f64).min(n_b as f64 - x_b as f64) < SMALL_COUNT;
    if small {
        let rho = n_a as f64 / (n_a + n_b) as f64;
        let theta = m * rho / (m * rho + 1.0 - rho);
        return Some((
            stats::binomial_sf_ge(x_a, x_a + x_b, theta),
            "exact conditional binomial test".into(),
        ));
    }
    stats::two_proportion_z(x_a, n_a, x_b, n_b, m)
        .map(|t| (t.p_value, format!("two-proportion z = {:.2}", t.statistic)))
}
