//! Seeded A/A and A/B simulations: false rollbacks within binomial error
//! bounds of the promise, regressions caught. Small on purpose (a few
//! seconds in debug); the full table is `examples/judge_sim.rs`.

mod sim;

use serin_analysis::{Config, Judge, Limit, Method};
use sim::{Drive, Scenario, Version, run, run_misrouted, run_until_early, wilson};

fn stat_config(method: Method) -> Config {
    Config {
        error_rate: Limit {
            max: Some(0.05),
            max_ratio_to_stable: Some(1.0),
        },
        latency_p50: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        latency_p99: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        method,
        ..Config::default()
    }
}

fn judges() -> Vec<(Judge, Drive)> {
    let j = |m| Judge::new(stat_config(m)).unwrap();
    vec![
        (j(Method::Sequential), Drive::Normal),
        (j(Method::Fixed), Drive::EveryInterval),
        (j(Method::Fixed), Drive::Normal),
    ]
}

fn rates(scenario: &Scenario, runs: u64, seed: u64) -> Vec<(u64, Vec<u32>)> {
    let js = judges();
    let mut out = vec![(0u64, Vec::new()); js.len()];
    for r in 0..runs {
        let res = run(scenario, &js, seed + r);
        for (i, f) in res.first_fail.iter().enumerate() {
            if let Some(t) = f {
                out[i].0 += 1;
                out[i].1.push(*t);
            }
        }
    }
    eprintln!(
        "{:?}",
        out.iter()
            .map(|(k, t)| (k, t.iter().min(), t.iter().max()))
            .collect::<Vec<_>>()
    );
    out
}

#[test]
fn a_a_sequential_keeps_its_promise_and_naive_does_not() {
    let scenario = Scenario {
        rps: 100.0,
        stages: vec![(25.0, 100), (50.0, 100)],
        stable: Version::BASE,
        canary: Version::BASE,
    };
    let runs = 150;
    let r = rates(&scenario, runs, 1_000);
    let (seq, naive, fixed) = (r[0].0, r[1].0, r[2].0);
    // Sequential: at most 5 %; allow the binomial error of 150 runs.
    let (lo, _) = wilson(seq, runs);
    assert!(lo <= 0.05, "sequential false rollbacks {seq}/{runs}");
    let (lo, _) = wilson(fixed, runs);
    assert!(
        lo <= 0.10,
        "fixed false rollbacks {fixed}/{runs} (two stages)"
    );
    // The naive re-run every second is far above 5 %.
    let (lo, _) = wilson(naive, runs);
    assert!(
        lo > 0.05,
        "naive re-run false rollbacks only {naive}/{runs}"
    );
    assert!(naive > seq);
}

#[test]
fn a_b_error_regression_is_caught_sooner_by_sequential() {
    let scenario = Scenario {
        rps: 100.0,
        stages: vec![(25.0, 300)],
        stable: Version::BASE,
        canary: Version {
            error_rate: 0.05,
            ..Version::BASE
        },
    };
    let runs = 60;
    let r = rates(&scenario, runs, 50_000);
    let (seq, fixed) = (&r[0], &r[2]);
    let (_, hi) = wilson(seq.0, runs);
    assert!(
        hi >= 0.99 && seq.0 >= runs - 1,
        "sequential caught {}/{runs}",
        seq.0
    );
    assert_eq!(fixed.0, runs, "fixed caught {}/{runs}", fixed.0);
    assert!(
        fixed.1.iter().all(|&t| t == 300),
        "fixed judges at the end of the stage"
    );
    let mut times = seq.1.clone();
    times.sort_unstable();
    let median = times[times.len() / 2];
    assert!(median < 120, "median sequential detection {median} s");
}

#[test]
fn a_b_latency_regressions_are_caught() {
    for (canary, what) in [
        (
            Version {
                median_ms: 180.0,
                ..Version::BASE
            },
            "median +50 %",
        ),
        (
            Version {
                sigma: 0.5 + 2f64.ln() / 2.326,
                ..Version::BASE
            },
            "p99 doubled",
        ),
    ] {
        let scenario = Scenario {
            rps: 100.0,
            stages: vec![(25.0, 300)],
            stable: Version::BASE,
            canary,
        };
        let runs = 40;
        let r = rates(&scenario, runs, 90_000);
        assert!(
            r[0].0 >= runs - 1,
            "{what}: sequential caught {}/{runs}",
            r[0].0
        );
    }
}

#[test]
fn plan_agrees_with_simulation() {
    use serin_analysis::{PlanInput, plan};
    let cfg = Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        latency_p95: Limit::NONE,
        // The plan is for the error test alone (one check).
        client_error_ratio: None,
        ..Config::default()
    };
    let js = vec![(Judge::new(cfg).unwrap(), Drive::Normal)];
    for (w, c) in [(5.0, 0.05), (25.0, 0.02)] {
        let scenario = Scenario {
            rps: 100.0,
            stages: vec![(w, 600)],
            stable: Version::BASE,
            canary: Version {
                error_rate: c,
                ..Version::BASE
            },
        };
        let runs = 200;
        let mut times: Vec<u32> = (0..runs)
            .map(|r| run(&scenario, &js, 7_000 + r).first_fail[0].unwrap_or(u32::MAX))
            .collect();
        times.sort_unstable();
        for power in [0.5, 0.9] {
            let p = plan(&PlanInput {
                power,
                ..PlanInput::new(0.01, c, 100.0, w)
            })
            .unwrap();
            let planned = p.seconds.unwrap();
            let simulated = times[((runs as f64 * power) as usize).min(runs as usize - 1)] as f64;
            eprintln!("w={w} c={c} power={power}: plan {planned:.1} s, simulated {simulated} s");
            assert!(
                (planned - simulated).abs() <= 0.2 * simulated + 3.0,
                "w={w} c={c} power={power}: plan {planned:.1} s, simulated {simulated} s"
            );
        }
    }
}

/// Early success with the default checks: a healthy canary usually ends a
/// 10-minute pause early; canaries at a limit (the hardest case for the
/// test of being within it) end it early in at most 1 − confidence of the
/// runs, within the binomial error of the seeded run.
#[test]
fn early_success_saves_time_and_keeps_its_promise() {
    let js = vec![(Judge::new(Config::default()).unwrap(), Drive::Normal)];
    let healthy = Scenario {
        rps: 100.0,
        stages: vec![(5.0, 600)],
        stable: Version::BASE,
        canary: Version::BASE,
    };
    let runs = 100;
    let mut times: Vec<u32> = (0..runs)
        .filter_map(|r| run_until_early(&healthy, &js, 300_000 + r).first_within[0])
        .collect();
    assert!(
        times.len() as u64 >= runs - 2,
        "{} of {runs} ended early",
        times.len()
    );
    times.sort_unstable();
    let median = times[times.len() / 2];
    assert!(median < 300, "median early success at {median} s of 600");
    let base = Version::BASE;
    for (canary, what) in [
        (
            Version {
                error_rate: 0.05,
                ..base
            },
            "errors at the 5 % limit",
        ),
        (
            Version {
                median_ms: 1000.0 / (1.644_853_627 * base.sigma).exp(),
                ..base
            },
            "p95 at the 1000 ms limit",
        ),
        (
            Version {
                client_error_rate: 5.0 * base.client_error_rate,
                ..base
            },
            "4xx at 5 × stable",
        ),
    ] {
        let scenario = Scenario {
            rps: 100.0,
            stages: vec![(25.0, 600)],
            stable: base,
            canary,
        };
        let runs = 200;
        let early = (0..runs)
            .filter(|r| run_until_early(&scenario, &js, 400_000 + r).first_within[0].is_some())
            .count() as u64;
        let (lo, _) = wilson(early, runs);
        eprintln!("{what}: {early}/{runs} ended early");
        assert!(lo <= 0.05, "{what}: {early}/{runs} ended early");
    }
}

/// Split verification on simulated traffic: a healthy split (each request
/// to the canary with probability = its weight) is flagged in at most
/// 1 − confidence of 10-minute steps; a routing that gives the canary a
/// tenth of its weight is flagged, and soon.
#[test]
fn split_mismatch_is_rare_when_healthy_and_caught_when_not() {
    let js = vec![(
        Judge::new(Config {
            client_error_ratio: None,
            ..Config::default()
        })
        .unwrap(),
        Drive::Normal,
    )];
    for w in [5.0, 50.0] {
        let scenario = Scenario {
            rps: 100.0,
            stages: vec![(w, 600)],
            stable: Version::BASE,
            canary: Version::BASE,
        };
        let runs = 100;
        let flagged = (0..runs)
            .filter(|r| run(&scenario, &js, 500_000 + r).first_mismatch[0].is_some())
            .count() as u64;
        eprintln!("{w} %: {flagged}/{runs} healthy splits flagged");
        let (lo, _) = wilson(flagged, runs);
        assert!(lo <= 0.05, "{w} %: {flagged}/{runs} healthy splits flagged");
    }
    let scenario = Scenario {
        rps: 100.0,
        stages: vec![(5.0, 300)],
        stable: Version::BASE,
        canary: Version::BASE,
    };
    let runs = 50;
    let mut times: Vec<u32> = (0..runs)
        .filter_map(|r| run_misrouted(&scenario, &js, 600_000 + r, 0.5).first_mismatch[0])
        .collect();
    assert_eq!(times.len() as u64, runs, "misrouted splits caught");
    times.sort_unstable();
    eprintln!(
        "misrouted 0.5 % of 5 %: median {} s",
        times[times.len() / 2]
    );
    assert!(times[times.len() / 2] < 120, "{times:?}");
}
