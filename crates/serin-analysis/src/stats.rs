//! Distribution functions and the fixed-horizon tests, written out so the
//! crate needs no numerics dependency. Each is checked against SciPy values in
//! `tests/known_answers.rs`.

use crate::histogram::Histogram;
use std::f64::consts::PI;

/// `erfc(x)`, accurate to about 1e-15 relative: power series for small
/// `|x|`, Lentz's continued fraction in the tail.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < 2.5 {
        return 1.0 - erf_series(x);
    }
    if x > 27.3 {
        return 0.0;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
    let tiny = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..500 {
        let a = n as f64 / 2.0;
        d = x + a * d;
        if d.abs() < tiny {
            d = tiny;
        }
        c = x + a / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * PI.sqrt())
}

fn erf_series(x: f64) -> f64 {
    // erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))
    let mut term = x;
    let mut sum = x;
    let x2 = x * x;
    for n in 1..200 {
        term *= 2.0 * x2 / (2 * n + 1) as f64;
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    2.0 / PI.sqrt() * (-x2).exp() * sum
}

/// Standard normal survival function `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Standard normal distribution function `P(Z <= z)`.
pub fn normal_cdf(z: f64) -> f64 {
    normal_sf(-z)
}

/// The `p` quantile of the standard normal distribution (bisection on
/// [`normal_cdf`] then Newton steps; only used when configuring).
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        // 1 - p is exact here (Sterbenz), and the lower tail is accurate.
        return -normal_quantile(1.0 - p);
    }
    let (mut lo, mut hi) = (-40.0f64, 0.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if normal_cdf(mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut z = 0.5 * (lo + hi);
    for _ in 0..3 {
        let pdf = (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
        if pdf <= 0.0 {
            break;
        }
        z -= (normal_cdf(z) - p) / pdf;
    }
    z
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9; about 1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        return (PI / (PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// `ln P(X = k)` for `X ~ Binomial(n, p)`.
pub fn binomial_ln_pmf(k: u64, n: u64, p: f64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    if p <= 0.0 {
        return if k == 0 { 0.0 } else { f64::NEG_INFINITY };
    }
    if p >= 1.0 {
        return if k == n { 0.0 } else { f64::NEG_INFINITY };
    }
    ln_choose(n, k) + k as f64 * p.ln() + (n - k) as f64 * (-p).ln_1p()
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`: the one-sided exact binomial
/// p-value (SciPy: `binom.sf(k - 1, n, p)`). Sums the pmf from the smaller
/// side, so it costs O(min(k, n - k)) terms at most.
pub fn binomial_sf_ge(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    let mean = n as f64 * p;
    if k as f64 > mean {
        // Upper tail: sum k..=n, terms decrease.
        let mut s = 0.0;
        let first = binomial_ln_pmf(k, n, p);
        for j in k..=n {
            let t = (binomial_ln_pmf(j, n, p) - first).exp();
            s += t;
            if t < 1e-17 * s {
                break;
            }
        }
        (first.exp() * s).min(1.0)
    } else {
        // 1 - P(X <= k - 1), summing the lower tail downwards.
        let mut s = 0.0;
        let first = binomial_ln_pmf(k - 1, n, p);
        let mut j = k - 1;
        loop {
            let t = (binomial_ln_pmf(j, n, p) - first).exp();
            s += t;
            if t < 1e-17 * s || j == 0 {
                break;
            }
            j -= 1;
        }
        (1.0 - first.exp() * s).clamp(0.0, 1.0)
    }
}

/// Result of a one-sided test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The test statistic (z for normal tests, the count for exact tests).
    pub statistic: f64,
    /// One-sided p-value.
    pub p_value: f64,
}

/// Two-proportion z-test, one-sided, of `H0: p_c <= m * p_s` against
/// `p_c > m * p_s`. With `m = 1` the standard error is pooled (the textbook
/// test); otherwise it is the unpooled (Wald) error of `p̂_c − m p̂_s`.
/// `None` when a group is empty or the standard error is zero.
pub fn two_proportion_z(x_c: u64, n_c: u64, x_s: u64, n_s: u64, m: f64) -> Option<TestResult> {
    if n_c == 0 || n_s == 0 {
        return None;
    }
    let (nc, ns) = (n_c as f64, n_s as f64);
    let (pc, ps) = (x_c as f64 / nc, x_s as f64 / ns);
    let se = if (m - 1.0).abs() < 1e-12 {
        let p = (x_c + x_s) as f64 / (nc + ns);
        (p * (1.0 - p) * (1.0 / nc + 1.0 / ns)).sqrt()
    } else {
        (pc * (1.0 - pc) / nc + m * m * ps * (1.0 - ps) / ns).sqrt()
    };
    if se.is_nan() || se <= 0.0 {
        return None;
    }
    let z = (pc - m * ps) / se;
    Some(TestResult {
        statistic: z,
        p_value: normal_sf(z),
    })
}

/// Mann–Whitney U of two binned samples, one-sided: is the canary
/// stochastically greater (slower)? Requests in the same bucket are ties and
/// get their average rank; the normal approximation uses the tie-corrected
/// variance `n1 n2 / 12 · ((N + 1) − Σ(t³ − t) / (N (N − 1)))` and a
/// continuity correction of 0.5 (SciPy `mannwhitneyu(canary, stable,
/// alternative="greater", method="asymptotic")`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U statistic of the canary sample.
    pub u: f64,
    /// z score (with continuity correction).
    pub z: f64,
    /// One-sided p-value (canary slower).
    pub p_value: f64,
    /// Rank-biserial correlation `2U / (n1 n2) − 1`, in [-1, 1]; positive
    /// means the canary tends to be slower.
    pub rank_biserial: f64,
}

/// Mann–Whitney U from per-bucket counts (not cumulative) over the same
/// buckets, bucket 0 being the fastest. `None` if either sample is empty.
pub fn mann_whitney_binned(canary: &[u64], stable: &[u64]) -> Option<MannWhitney> {
    let n1: u64 = canary.iter().sum();
    let n2: u64 = stable.iter().sum();
    if n1 == 0 || n2 == 0 || canary.len() != stable.len() {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let n = n1f + n2f;
    let mut rank_sum = 0.0;
    let mut below = 0.0;
    let mut ties = 0.0;
    for (&c, &s) in canary.iter().zip(stable) {
        let t = (c + s) as f64;
        if t == 0.0 {
            continue;
        }
        let avg_rank = below + (t + 1.0) / 2.0;
        rank_sum += c as f64 * avg_rank;
        ties += t * t * t - t;
        below += t;
    }
    let u = rank_sum - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let rank_biserial = 2.0 * u / (n1f * n2f) - 1.0;
    if var.is_nan() || var <= 0.0 {
        // Every request in one bucket: no evidence either way.
        return Some(MannWhitney {
            u,
            z: 0.0,
            p_value: 1.0,
            rank_biserial,
        });
    }
    // One-sided continuity correction, as SciPy applies it for "greater".
    let z = (u - mean - 0.5) / var.sqrt();
    Some(MannWhitney {
        u,
        z,
        p_value: normal_sf(z),
        rank_biserial,
    })
}

/// Per-bucket (non-cumulative) counts of the requests in a histogram delta,
/// with a final bucket for requests beyond the last bound.
pub fn per_bucket(h: &Histogram, total: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(h.counts.len() + 1);
    let mut prev = 0u64;
    for &c in &h.counts {
        out.push(c.saturating_sub(prev));
        prev = c.max(prev);
    }
    out.push(total.saturating_sub(prev));
    out
}

/// Kullback–Leibler divergence `KL(Bern(a) ‖ Bern(b))` in nats.
pub fn kl_bernoulli(a: f64, b: f64) -> f64 {
    let t = |x: f64, y: f64| if x <= 0.0 { 0.0 } else { x * (x / y).ln() };
    t(a, b) + t(1.0 - a, 1.0 - b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_basics() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-15);
        assert!((normal_sf(1.959_963_984_540_054) - 0.025).abs() < 1e-14);
        assert!((normal_quantile(0.95) - 1.644_853_626_951_472_2).abs() < 1e-12);
        assert!((erfc(3.0) - 2.209_049_699_858_544e-5).abs() < 1e-18);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn binomial_tails_add_up() {
        for (n, p) in [(10u64, 0.3), (200, 0.05), (1000, 0.5)] {
            let total: f64 = (0..=n).map(|k| binomial_ln_pmf(k, n, p).exp()).sum();
            assert!((total - 1.0).abs() < 1e-10);
            for k in [0, 1, n / 10, n / 2, n] {
                let direct: f64 = (k..=n).map(|j| binomial_ln_pmf(j, n, p).exp()).sum();
                assert!(
                    (binomial_sf_ge(k, n, p) - direct).abs() < 1e-10,
                    "n={n} p={p} k={k}"
                );
            }
        }
    }

    #[test]
    fn mann_whitney_sign_and_symmetry() {
        let a = [1, 5, 10, 5, 1];
        let slower = [0, 1, 5, 10, 5];
        let m = mann_whitney_binned(&slower, &a).unwrap();
        assert!(m.z > 3.0 && m.p_value < 0.01 && m.rank_biserial > 0.0);
        let m2 = mann_whitney_binned(&a, &slower).unwrap();
        assert!(m2.z < -3.0 && m2.rank_biserial < 0.0);
        let same = mann_whitney_binned(&a, &a).unwrap();
        assert!(same.rank_biserial.abs() < 1e-12 && same.p_value > 0.5);
        assert!(mann_whitney_binned(&[0, 0], &a[..2]).is_none());
    }
}
