//! Planning (power): how long until a regression of a given size is caught
//! by the `sequential` error-rate test.
//!
//! Under the conditional-binomial model the test only moves when an error
//! arrives: errors arrive as a Poisson process of rate
//! `rps · (w p_c + (1 − w) p_s)`, and each one is the canary's with
//! probability `θ = w p_c / (w p_c + (1 − w) p_s)`. The e-process after `n`
//! errors of which `k` are the canary's is a function of `(n, k)` only, and
//! increasing in `k`, so the probability `D_n` that it has crossed the
//! threshold by the n-th error is computed exactly by dynamic programming
//! over `k` (paths that crossed are absorbed). Then
//! `P(caught by t) = Σ_n Poisson(n; λt) · D_n`, and the planned time is the
//! smallest `t` where that reaches the requested power (and the canary has
//! had `minRequests` requests).

use crate::config::ConfigError;
use crate::eprocess::ALTERNATIVES;
use crate::stats;

/// What to plan for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// Stable's error rate, a fraction (0.01).
    pub baseline_error_rate: f64,
    /// The canary's error rate that must be caught (0.05).
    pub canary_error_rate: f64,
    /// The configured `errorRate.maxRatioToStable` (1.0 = any worsening).
    pub max_ratio_to_stable: f64,
    /// Requests per second of both versions together.
    pub rps: f64,
    /// Canary weight in percent during the step.
    pub canary_weight_percent: f64,
    /// `statistics.confidence`.
    pub confidence: f64,
    /// Wanted probability of catching the regression (0.9).
    pub power: f64,
    /// Statistical checks sharing `1 − confidence` (see `Judge::threshold`).
    pub checks: usize,
    /// `minRequests`: no verdict before the canary has had these.
    pub min_requests: u64,
}

impl PlanInput {
    /// Plan for a regression from `baseline` to `canary` error rate at
    /// `rps` and `weight` percent, with the defaults: ratio 1.0, confidence
    /// 0.95, power 0.9, one check, `minRequests` 100.
    pub fn new(baseline: f64, canary: f64, rps: f64, weight: f64) -> PlanInput {
        PlanInput {
            baseline_error_rate: baseline,
            canary_error_rate: canary,
            max_ratio_to_stable: 1.0,
            rps,
            canary_weight_percent: weight,
            confidence: 0.95,
            power: 0.9,
            checks: 1,
            min_requests: 100,
        }
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Seconds until the regression is caught with probability at least
    /// `power`; `None` if not within [`Plan::HORIZON_ERRORS`] errors (or the
    /// canary is not worse than the ratio allows).
    pub seconds: Option<f64>,
    /// Canary requests in that time.
    pub canary_requests: Option<u64>,
    /// Errors (both versions) after which the test has crossed with
    /// probability at least `power`.
    pub errors: Option<u64>,
    /// Rough expectation from the Kullback–Leibler rate of the best
    /// alternative: `ln(threshold) / KL` errors, in seconds.
    pub expected_seconds: Option<f64>,
    /// The e-value the test must reach (`checks / (1 − confidence)`).
    pub threshold: f64,
}

impl Plan {
    /// Errors considered before giving up.
    pub const HORIZON_ERRORS: usize = 20_000;
}

fn bad(field: &str, message: String) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        message,
    }
}

/// Expected time to detect, and the time to detect with probability
/// `power`, for the `sequential` error-rate ratio test.
pub fn plan(input: &PlanInput) -> Result<Plan, ConfigError> {
    let rate_ok = |x: f64| x > 0.0 && x < 1.0;
    if !rate_ok(input.baseline_error_rate) {
        return Err(bad(
            "baselineErrorRate",
            format!(
                "got {}, expected a fraction in (0, 1)",
                input.baseline_error_rate
            ),
        ));
    }
    if !rate_ok(input.canary_error_rate) {
        return Err(bad(
            "canaryErrorRate",
            format!(
                "got {}, expected a fraction in (0, 1)",
                input.canary_error_rate
            ),
        ));
    }
    let m = input.max_ratio_to_stable;
    if !(m.is_finite() && m > 0.0) {
        return Err(bad(
            "maxRatioToStable",
            format!("got {m}, expected a ratio above 0"),
        ));
    }
    if !(input.rps.is_finite() && input.rps > 0.0) {
        return Err(bad(
            "rps",
            format!("got {}, expected requests per second above 0", input.rps),
        ));
    }
    let w = input.canary_weight_percent / 100.0;
    if !(w > 0.0 && w < 1.0) {
        return Err(bad(
            "canaryWeight",
            format!(
                "got {}, expected a percentage strictly between 0 and 100",
                input.canary_weight_percent
            ),
        ));
    }
    if !rate_ok(input.confidence) {
        return Err(bad(
            "confidence",
            format!("got {}, expected (0, 1)", input.confidence),
        ));
    }
    if !rate_ok(input.power) {
        return Err(bad(
            "power",
            format!("got {}, expected (0, 1)", input.power),
        ));
    }
    let checks = input.checks.max(1) as f64;
    let alpha = (1.0 - input.confidence) / checks;
    let log_threshold = (1.0 / alpha).ln();
    let (pc, ps) = (input.canary_error_rate, input.baseline_error_rate);
    let error_rate = input.rps * (w * pc + (1.0 - w) * ps);
    let theta = w * pc / (w * pc + (1.0 - w) * ps);
    let ratios: Vec<f64> = (0..ALTERNATIVES)
        .map(|j| m * 1.05f64.powi(2 * j as i32 + 1))
        .collect();
    let theta_at = |r: f64| r * w / (r * w + 1.0 - w);

    // KL expectation for the best alternative.
    let best_kl = ratios
        .iter()
        .map(|&r| {
            // Expected log growth per error: θ ln(θ_r/θ_m) + (1−θ) ln((1−θ_r)/(1−θ_m)).
            let (tr, tm) = (theta_at(r), theta_at(m));
            theta * (tr / tm).ln() + (1.0 - theta) * ((1.0 - tr) / (1.0 - tm)).ln()
        })
        .fold(f64::NEG_INFINITY, f64::max);
    let min_seconds = input.min_requests as f64 / (input.rps * w);
    let expected_seconds =
        (best_kl > 0.0).then(|| (log_threshold / best_kl / error_rate).max(min_seconds));

    let mut out = Plan {
        seconds: None,
        canary_requests: None,
        errors: None,
        expected_seconds,
        threshold: 1.0 / alpha,
    };
    if pc <= m * ps {
        return Ok(out);
    }

    // ln E after n errors with k from the canary.
    let base = (m * w + 1.0 - w).ln();
    let a: Vec<f64> = ratios.iter().map(|r| (r / m).ln()).collect();
    let b: Vec<f64> = ratios
        .iter()
        .map(|r| (r * w + 1.0 - w).ln() - base)
        .collect();
    let log_e = |n: f64, k: f64| {
        let v: Vec<f64> = (0..ALTERNATIVES).map(|j| k * a[j] - n * b[j]).collect();
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln() - (ALTERNATIVES as f64).ln()
    };
    // D_n for n = 0..: probability of having crossed by the n-th error.
    let mut crossed = vec![0.0f64];
    let mut mass = vec![1.0f64]; // mass[k - lo] for k in lo..lo+len, not yet crossed
    let mut lo = 0usize;
    for n in 1..=Plan::HORIZON_ERRORS {
        // Step: each path gains a canary error with probability θ.
        let mut next = vec![0.0; mass.len() + 1];
        for (i, &p) in mass.iter().enumerate() {
            next[i] += p * (1.0 - theta);
            next[i + 1] += p * theta;
        }
        // Absorb paths at or above the crossing count c_n.
        let (mut l, mut h) = (0usize, n + 1);
        while l < h {
            let mid = (l + h) / 2;
            if log_e(n as f64, mid as f64) >= log_threshold {
                h = mid;
            } else {
                l = mid + 1;
            }
        }
        let c_n = l;
        if c_n < lo + next.len() {
            let keep = c_n.saturating_sub(lo);
            next.truncate(keep);
        }
        // Drop negligible mass at the low end.
        let mut drop = 0;
        while drop < next.len() && next[drop] < 1e-16 {
            drop += 1;
        }
        next.drain(..drop);
        lo += drop;
        while next.last().is_some_and(|&p| p < 1e-16) {
            next.pop();
        }
        mass = next;
        let alive: f64 = mass.iter().sum();
        crossed.push((1.0 - alive).clamp(0.0, 1.0));
        if out.errors.is_none() && 1.0 - alive >= input.power {
            out.errors = Some(n as u64);
        }
        if alive < 1e-6 * (1.0 - input.power) {
            break;
        }
    }
    let last = crossed.len() - 1;
    let p_by = |t: f64| -> f64 {
        let mu = error_rate * t;
        if mu <= 0.0 {
            return 0.0;
        }
        let sd = mu.sqrt();
        let from = (mu - 12.0 * sd - 10.0).max(0.0) as usize;
        let to = (mu + 12.0 * sd + 10.0) as usize;
        let mut s = 0.0;
        let mut tail = 0.0;
        for n in from..=to {
            let pmf = (n as f64 * mu.ln() - mu - stats::ln_gamma(n as f64 + 1.0)).exp();
            match crossed.get(n) {
                Some(d) => s += pmf * d,
                None => tail += pmf,
            }
        }
        // Beyond the horizon D_n is at least its last value.
        s + tail * crossed[last]
    };
    if out.errors.is_none() {
        return Ok(out);
    }
    let (mut t_lo, mut t_hi) = (0.0f64, 1.0f64);
    while p_by(t_hi) < input.power {
        t_hi *= 2.0;
        if error_rate * t_hi > 2.0 * Plan::HORIZON_ERRORS as f64 {
            return Ok(out);
        }
    }
    for _ in 0..60 {
        let mid = 0.5 * (t_lo + t_hi);
        if p_by(mid) >= input.power {
            t_hi = mid;
        } else {
            t_lo = mid;
        }
    }
    let seconds = t_hi.max(min_seconds);
    out.seconds = Some(seconds);
    out.canary_requests = Some((seconds * input.rps * w).ceil() as u64);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigger_regressions_and_more_traffic_are_caught_sooner() {
        let p = |c: f64, rps: f64, w: f64| plan(&PlanInput::new(0.01, c, rps, w)).unwrap();
        let five = p(0.05, 100.0, 5.0);
        let two = p(0.02, 100.0, 5.0);
        let s5 = five.seconds.unwrap();
        let s2 = two.seconds.unwrap();
        assert!(s5 < s2, "{s5} vs {s2}");
        assert!(p(0.05, 1000.0, 5.0).seconds.unwrap() < s5);
        assert!(p(0.05, 100.0, 25.0).seconds.unwrap() < s5);
        assert!((five.threshold - 20.0).abs() < 1e-9);
        // The canary requests match the seconds.
        assert_eq!(five.canary_requests, Some((s5 * 5.0).ceil() as u64));
        let e = five.expected_seconds.unwrap();
        assert!(e > 0.3 * s5 && e < 3.0 * s5, "KL {e} vs DP {s5}");
        // minRequests is a floor.
        let floor = p(0.9, 100.0, 50.0).seconds.unwrap();
        assert!((floor - 2.0).abs() < 1e-9, "{floor}");
    }

    #[test]
    fn no_regression_is_never_caught() {
        let same = plan(&PlanInput::new(0.01, 0.01, 100.0, 5.0)).unwrap();
        assert_eq!(same.seconds, None);
        assert_eq!(same.expected_seconds, None);
        let within = plan(&PlanInput {
            max_ratio_to_stable: 2.0,
            ..PlanInput::new(0.01, 0.015, 100.0, 5.0)
        })
        .unwrap();
        assert_eq!(within.seconds, None);
    }

    #[test]
    fn bad_input_names_the_field() {
        let e = plan(&PlanInput::new(0.01, 0.05, 100.0, 100.0)).unwrap_err();
        assert_eq!(e.field, "canaryWeight");
        let e = plan(&PlanInput::new(0.0, 0.05, 100.0, 5.0)).unwrap_err();
        assert_eq!(e.field, "baselineErrorRate");
    }
}
