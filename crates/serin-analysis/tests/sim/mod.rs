//! Seeded rollout simulation shared by the tests (`tests/simulation.rs`) and
//! the benchmark (`examples/judge_sim.rs`, via `#[path]`).
//!
//! Per second: Poisson(rps) requests, a Binomial split by the canary weight,
//! Binomial errors per version, and multinomial latency buckets from a
//! log-normal per version. Several judges see the same simulated traffic.

#![allow(dead_code)]

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson};
use serin_analysis::{Histogram, Judge, Observation, Totals, Verdict, stats};

/// Latency bucket bounds as serin's own recorder uses them: 1-1.5-2-3-5-7 per
/// decade from 0.1 ms to 50 s.
pub fn bounds_ms() -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade: f64 = 0.1;
    while decade < 100_000.0 {
        for m in [1.0, 1.5, 2.0, 3.0, 5.0, 7.0] {
            let b = decade * m;
            if b <= 60_000.0 + 1e-9 {
                out.push((b * 1000.0).round() / 1000.0);
            }
        }
        decade *= 10.0;
    }
    out
}

/// One version's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Version {
    /// Error probability per request.
    pub error_rate: f64,
    /// Client error (4xx) probability per request.
    pub client_error_rate: f64,
    /// Median latency, ms.
    pub median_ms: f64,
    /// Log-normal shape (standard deviation of ln latency).
    pub sigma: f64,
}

impl Version {
    /// The baseline: 1 % errors, 2 % client errors, median 120 ms, σ = 0.5
    /// (p99 ≈ 383 ms).
    pub const BASE: Version = Version {
        error_rate: 0.01,
        client_error_rate: 0.02,
        median_ms: 120.0,
        sigma: 0.5,
    };

    /// Per-bucket probabilities for `bounds` plus the overflow bucket.
    fn bucket_probs(&self, bounds: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut prev = 0.0;
        for &b in bounds {
            let cdf = stats::normal_cdf((b / self.median_ms).ln() / self.sigma);
            out.push((cdf - prev).max(0.0));
            prev = cdf;
        }
        out.push((1.0 - prev).max(0.0));
        out
    }
}

/// A simulated rollout: stages at given weights and lengths, a verdict every
/// second.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Requests per second (both versions).
    pub rps: f64,
    /// (canary weight in percent, seconds) per stage.
    pub stages: Vec<(f64, u32)>,
    /// The stable version.
    pub stable: Version,
    /// The canary version.
    pub canary: Version,
}

/// How a judge is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// `end_of_pause` only at the end of each stage.
    Normal,
    /// `end_of_pause` every second (the naive re-run of a fixed test).
    EveryInterval,
}

struct Sampler {
    rng: ChaCha8Rng,
}

impl Sampler {
    fn binomial(&mut self, n: u64, p: f64) -> u64 {
        if n == 0 || p <= 0.0 {
            return 0;
        }
        if p >= 1.0 {
            return n;
        }
        Binomial::new(n, p).map_or(0, |d| d.sample(&mut self.rng))
    }

    fn poisson(&mut self, lambda: f64) -> u64 {
        Poisson::new(lambda).map_or(0, |d| d.sample(&mut self.rng) as u64)
    }

    /// Multinomial counts over `probs` by sequential binomials.
    fn multinomial(&mut self, n: u64, probs: &[f64], out: &mut [u64]) {
        let mut left = n;
        let mut mass = 1.0;
        for (o, &p) in out.iter_mut().zip(probs) {
            if left == 0 {
                *o = 0;
                continue;
            }
            let q = if mass > 0.0 { (p / mass).min(1.0) } else { 1.0 };
            let k = self.binomial(left, q);
            *o = k;
            left -= k;
            mass -= p;
        }
        if let Some(last) = out.last_mut() {
            *last += left;
        }
    }
}

fn add(t: &mut Totals, requests: u64, errors: u64, client_errors: u64, buckets: &[u64]) {
    t.requests += requests;
    t.errors += errors;
    t.client_errors = Some(t.client_errors.unwrap_or(0) + client_errors);
    if let Some(h) = t.latency.as_mut() {
        let mut cum = 0;
        for (c, b) in h.counts.iter_mut().zip(buckets) {
            cum += b;
            *c += cum;
        }
    }
}

/// The first failing second of each judge in one simulated rollout (`None`:
/// never failed), and how many verdicts each judge made of each kind.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Second of the first `Fail`, per judge.
    pub first_fail: Vec<Option<u32>>,
    /// No-data verdicts per judge.
    pub no_data: Vec<u32>,
    /// Names of the failing checks at the first fail, per judge.
    pub failed_checks: Vec<Vec<String>>,
    /// Second of the first early success (`within_limits`) before any
    /// fail, per judge: where a pause with `early: true` would have ended.
    pub first_within: Vec<Option<u32>>,
    /// Second of the first split mismatch (`Judgement::split`), per judge.
    pub first_mismatch: Vec<Option<u32>>,
}

/// Runs one rollout with seed `seed` through every judge built by `judges`
/// (each with its drive). A judge stops being fed after its first fail.
pub fn run(scenario: &Scenario, judges: &[(Judge, Drive)], seed: u64) -> RunResult {
    run_with(scenario, judges, seed, false, None)
}

/// [`run`] with a routing that sends the canary `actual` percent of the
/// requests whatever weight the judges are told (a routing failure).
pub fn run_misrouted(
    scenario: &Scenario,
    judges: &[(Judge, Drive)],
    seed: u64,
    actual: f64,
) -> RunResult {
    run_with(scenario, judges, seed, false, Some(actual))
}

/// [`run`], ending the rollout once every judge has failed or shown early
/// success (`until_early`), as a pause with `early: true` would end.
pub fn run_until_early(scenario: &Scenario, judges: &[(Judge, Drive)], seed: u64) -> RunResult {
    run_with(scenario, judges, seed, true, None)
}

fn run_with(
    scenario: &Scenario,
    judges: &[(Judge, Drive)],
    seed: u64,
    until_early: bool,
    actual: Option<f64>,
) -> RunResult {
    let mut s = Sampler {
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    let bounds = bounds_ms();
    let probs_s = scenario.stable.bucket_probs(&bounds);
    let probs_c = scenario.canary.bucket_probs(&bounds);
    let mut judges: Vec<(Judge, Drive)> = judges.to_vec();
    let mut first_fail = vec![None; judges.len()];
    let mut no_data = vec![0; judges.len()];
    let mut failed_checks = vec![Vec::new(); judges.len()];
    let mut first_within = vec![None; judges.len()];
    let mut first_mismatch = vec![None; judges.len()];
    let mut obs = Observation {
        stable: Totals {
            requests: 0,
            errors: 0,
            client_errors: Some(0),
            latency: Some(Histogram::empty(bounds.clone())),
        },
        canary: Totals {
            requests: 0,
            errors: 0,
            client_errors: Some(0),
            latency: Some(Histogram::empty(bounds.clone())),
        },
        ..Observation::default()
    };
    let mut buckets_s = vec![0u64; bounds.len() + 1];
    let mut buckets_c = vec![0u64; bounds.len() + 1];
    let mut t = 0u32;
    'stages: for &(weight, seconds) in &scenario.stages {
        for (j, _) in judges.iter_mut() {
            j.begin_stage(&obs);
            j.set_canary_weight(weight);
        }
        for sec in 1..=seconds {
            t += 1;
            let n = s.poisson(scenario.rps);
            let n_c = s.binomial(n, actual.unwrap_or(weight) / 100.0);
            let n_s = n - n_c;
            let e_c = s.binomial(n_c, scenario.canary.error_rate);
            let e_s = s.binomial(n_s, scenario.stable.error_rate);
            let k_c = s.binomial(n_c - e_c, scenario.canary.client_error_rate);
            let k_s = s.binomial(n_s - e_s, scenario.stable.client_error_rate);
            s.multinomial(n_c, &probs_c, &mut buckets_c);
            s.multinomial(n_s, &probs_s, &mut buckets_s);
            add(&mut obs.canary, n_c, e_c, k_c, &buckets_c);
            add(&mut obs.stable, n_s, e_s, k_s, &buckets_s);
            let stage_end = sec == seconds;
            for (i, (j, drive)) in judges.iter_mut().enumerate() {
                if first_fail[i].is_some() {
                    continue;
                }
                let end = stage_end || *drive == Drive::EveryInterval;
                let judgement = j.observe(&obs, end);
                if first_within[i].is_none() && judgement.within_limits.is_some() {
                    first_within[i] = Some(t);
                }
                if first_mismatch[i].is_none()
                    && judgement.split.as_ref().is_some_and(|s| s.mismatch)
                {
                    first_mismatch[i] = Some(t);
                }
                match judgement.verdict {
                    Verdict::Fail => {
                        first_fail[i] = Some(t);
                        failed_checks[i] = judgement
                            .checks
                            .iter()
                            .filter(|c| c.verdict == Verdict::Fail)
                            .map(|c| c.name.clone())
                            .collect();
                    }
                    Verdict::NoData => no_data[i] += 1,
                    _ => {}
                }
            }
            if until_early
                && (0..judges.len()).all(|i| first_fail[i].is_some() || first_within[i].is_some())
            {
                break 'stages;
            }
        }
    }
    RunResult {
        first_fail,
        no_data,
        failed_checks,
        first_within,
        first_mismatch,
    }
}

/// Wilson score interval for `k` successes of `n` at 95 %.
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054f64;
    let (kf, nf) = (k as f64, n as f64);
    let p = kf / nf;
    let denom = 1.0 + z * z / nf;
    let centre = (p + z * z / (2.0 * nf)) / denom;
    let half = z * (p * (1.0 - p) / nf + z * z / (4.0 * nf * nf)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}
