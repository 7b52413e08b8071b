//! Verdicts, per-check results, and how numbers are written in reasons.

/// The judge's verdict for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Enough data and nothing failed.
    Pass,
    /// A limit is exceeded (with the configured confidence, for
    /// `sequential` and `fixed`).
    Fail,
    /// Inconclusive, counts towards `noDataLimit`: the canary got no
    /// requests although it should have, or the metric source failed.
    NoData,
    /// Inconclusive, does not count towards `noDataLimit`, holds the step:
    /// fewer than `minRequests` canary requests in this step (or, for
    /// `fixed`, the pause has not ended yet), or the canary looks beyond a
    /// limit that no test has shown yet ("above the limit, not yet
    /// significant"). Never ends a pause; more requests decide.
    NotEnoughData,
}

impl Verdict {
    /// The SPEC's word: `pass`, `fail` or `inconclusive`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::NoData | Verdict::NotEnoughData => "inconclusive",
        }
    }

    /// Whether this is one of the two inconclusive verdicts.
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, Verdict::NoData | Verdict::NotEnoughData)
    }
}

/// The statistical evidence behind a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Evidence {
    /// Point estimates only (`method: none`), or nothing to test yet.
    None,
    /// Anytime-valid test: the e-value and the threshold it must reach
    /// (`checks / (1 − confidence)`).
    EValue {
        /// Current e-value.
        value: f64,
        /// Largest e-value seen so far (rejection is decided on this).
        max: f64,
        /// Threshold.
        threshold: f64,
    },
    /// Fixed-horizon test: one-sided p-value and the level it must go below.
    PValue {
        /// p-value.
        value: f64,
        /// Level (`(1 − confidence) / checks`).
        alpha: f64,
    },
}

/// The result of one check (one limit of one metric).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// `error-rate`, `error-rate/ratio`, `latency-p95`,
    /// `latency-p95/ratio`, `custom/NAME`.
    pub name: String,
    /// This check's verdict.
    pub verdict: Verdict,
    /// Why, with the numbers.
    pub reason: String,
    /// The canary's value (error rate as a fraction, latency in ms, custom
    /// rate), if measurable.
    pub canary: Option<f64>,
    /// The stable's value, for ratio checks.
    pub stable: Option<f64>,
    /// The configured limit (a fraction, ms, or a ratio).
    pub limit: f64,
    /// The test behind the verdict.
    pub evidence: Evidence,
    /// The check is advisory (`Config::advisory`): its verdict is left out
    /// of the combined one; a fail shows in `Judgement::would_fail`.
    pub advisory: bool,
}

/// Whether the canary got the share of requests it was asked for (split
/// verification, see `docs/judge.md`). Not part of the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The requested weight, percent; against a baseline
    /// (`Reference::Baseline`, whose totals stand in for the stable's) the
    /// canary's expected share of canary and baseline requests, 50 % up to a
    /// weight of 50 %.
    pub requested: f64,
    /// The canary's observed share of the requests split by weight in this
    /// step (against a baseline: of canary and baseline requests), percent.
    pub observed: f64,
    /// Canary requests split by weight in this step (header and cookie
    /// routes left out).
    pub canary_requests: u64,
    /// Requests split by weight in this step, both versions.
    pub total_requests: u64,
    /// The observed share is shown, at the rollout's confidence, to be far
    /// from the requested weight (outside the band of `docs/judge.md`): the
    /// routing did not take effect.
    pub mismatch: bool,
    /// One line with the numbers, e.g. `canary got 0.4 % of requests
    /// (12/3 000), 5 % requested`.
    pub reason: String,
}

/// A verdict with its reason and the checks it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The combined verdict of the enforced (not advisory) checks: any
    /// Fail → Fail; else any NoData → NoData;
    /// else NotEnoughData if fewer than `minRequests` canary requests in
    /// this step (or a check could not be judged yet); else Pass.
    pub verdict: Verdict,
    /// One line with the numbers that decided.
    pub reason: String,
    /// Every check, in configuration order.
    pub checks: Vec<CheckResult>,
    /// Canary requests since the step began.
    pub stage_canary_requests: u64,
    /// Stable requests since the step began.
    pub stage_stable_requests: u64,
    /// The observation was refused (implausible or inconsistent, see
    /// `bounds`) and left out: the next one is judged from the one before.
    pub skipped: bool,
    /// The observation was judged from the one refused just before it, not
    /// from the last sound one: the counters had moved for good (see
    /// `bounds`), so this interval is `current − refused`. A caller keeping
    /// its own interval numbers takes them from the refused observation too.
    pub from_refused: bool,
    /// An advisory check failed: its reason, as a fail would read. The
    /// verdict does not show it.
    pub would_fail: Option<String>,
    /// Early success (`sequential` only, never unless the verdict is
    /// pass): every enforced check has been shown, at the rollout's
    /// confidence, to be within its limit in this step; the reason names
    /// each check with its e-value.
    pub within_limits: Option<String>,
    /// The canary's observed share against the requested weight, when the
    /// weight is strictly between 0 and 100 % and requests were split.
    pub split: Option<Split>,
}

/// `8.2 %`, `0.35 %`, `0.012 %`.
pub(crate) fn pct(x: f64) -> String {
    let p = 100.0 * x;
    if p == 0.0 {
        "0 %".to_string()
    } else if p >= 1.0 {
        format!("{p:.1} %")
    } else if p >= 0.1 {
        format!("{p:.2} %")
    } else {
        format!("{p:.3} %")
    }
}

/// `9 500`, `1 234 567`.
pub(crate) fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

/// `1 234 ms`, `87 ms`, `4.5 ms`.
pub(crate) fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{} ms", count(x.round() as u64))
    } else if x >= 10.0 {
        format!("{x:.0} ms")
    } else {
        format!("{x:.1} ms")
    }
}

/// `1.5`, `1.05`, `12`.
pub(crate) fn ratio(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(pct(0.082), "8.2 %");
        assert_eq!(pct(0.0089), "0.89 %");
        assert_eq!(pct(0.5), "50.0 %");
        assert_eq!(count(9500), "9 500");
        assert_eq!(count(1_234_567), "1 234 567");
        assert_eq!(count(12), "12");
        assert_eq!(ms(1234.4), "1 234 ms");
        assert_eq!(ms(4.54), "4.5 ms");
        assert_eq!(ratio(1.5), "1.5");
        assert_eq!(ratio(2.0), "2");
        assert_eq!(Verdict::NoData.as_str(), "inconclusive");
        assert_eq!(Verdict::Fail.as_str(), "fail");
    }
}
