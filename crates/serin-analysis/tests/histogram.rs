//! Histogram quantiles and merging against exact values from raw samples.

mod sim;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use serin_analysis::Histogram;

fn histogram(samples: &[f64], bounds: &[f64]) -> Histogram {
    let counts = bounds
        .iter()
        .map(|&b| samples.iter().filter(|&&x| x <= b).count() as u64)
        .collect();
    Histogram {
        le_ms: bounds.to_vec(),
        counts,
    }
}

fn exact_quantile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn quantiles_fall_in_the_bucket_of_the_exact_quantile() {
    let bounds = sim::bounds_ms();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let d = LogNormal::new(120f64.ln(), 0.5).unwrap();
    let mut samples: Vec<f64> = (0..20_000).map(|_| d.sample(&mut rng)).collect();
    let h = histogram(&samples, &bounds);
    samples.sort_by(f64::total_cmp);
    for p in [0.5, 0.9, 0.95, 0.99, 0.999] {
        let exact = exact_quantile(&samples, p);
        let est = h.quantile(samples.len() as u64, p).unwrap();
        // Both lie in the same bucket (lower, upper].
        let i = bounds.iter().position(|&b| b >= exact).unwrap();
        let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
        assert!(
            est > lower - 1e-9 && est <= bounds[i] + 1e-9,
            "p{p}: exact {exact:.1} in ({lower}, {}], estimate {est:.1}",
            bounds[i]
        );
        // And within the bucket's relative width (at most 1.67x here).
        assert!(
            (est / exact).ln().abs() < (5.0f64 / 3.0).ln(),
            "p{p}: {est} vs {exact}"
        );
    }
}

#[test]
fn merging_is_the_histogram_of_the_union() {
    let bounds = sim::bounds_ms();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let a: Vec<f64> = (0..3000)
        .map(|_| LogNormal::new(3.0, 1.0).unwrap().sample(&mut rng))
        .collect();
    let b: Vec<f64> = (0..5000)
        .map(|_| LogNormal::new(5.0, 0.3).unwrap().sample(&mut rng))
        .collect();
    let mut merged = histogram(&a, &bounds);
    merged.merge(&histogram(&b, &bounds));
    let union: Vec<f64> = a.iter().chain(&b).copied().collect();
    assert_eq!(merged, histogram(&union, &bounds));
    // A later snapshot minus an earlier one is the histogram of what came between.
    assert_eq!(
        histogram(&union, &bounds)
            .since(&histogram(&a, &bounds))
            .unwrap(),
        histogram(&b, &bounds)
    );
}
