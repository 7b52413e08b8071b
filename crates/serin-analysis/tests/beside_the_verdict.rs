//! What the judge says beside the verdict: early success
//! (`within_limits`), split verification (`split`), advisory checks
//! (`would_fail`), and the baseline's wording.

use serin_analysis::{
    Config, CustomMetric, Direction, Histogram, Judge, Limit, Method, Observation, Ratio,
    Reference, Totals, Verdict,
};

const LE: [f64; 6] = [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0];

/// One version's per-interval behaviour: requests, errors, 4xx, and how
/// many requests are slower than 1000 ms (the rest under 50 ms).
#[derive(Clone, Copy)]
struct Per {
    requests: u64,
    errors: u64,
    client_errors: u64,
    slow: u64,
}

fn totals(p: Per, i: u64) -> Totals {
    let fast = (p.requests - p.slow) * i;
    Totals {
        requests: p.requests * i,
        errors: p.errors * i,
        client_errors: Some(p.client_errors * i),
        latency: Some(Histogram::from_bucket_counts(
            LE.to_vec(),
            &[fast, 0, 0, 0, 0, p.slow * i],
        )),
    }
}

/// The cumulative observation after `i` intervals of `stable` and `canary`.
fn after(i: u64, stable: Per, canary: Per) -> Observation {
    Observation {
        stable: totals(stable, i),
        canary: totals(canary, i),
        ..Observation::default()
    }
}

const STABLE: Per = Per {
    requests: 900,
    errors: 9,
    client_errors: 18,
    slow: 0,
};
const HEALTHY: Per = Per {
    requests: 100,
    errors: 1,
    client_errors: 2,
    slow: 0,
};

/// Runs `intervals` intervals from a fresh step; the judgements.
fn run(
    judge: &mut Judge,
    intervals: u64,
    stable: Per,
    canary: Per,
) -> Vec<serin_analysis::Judgement> {
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    (1..=intervals)
        .map(|i| judge.observe(&after(i, stable, canary), false))
        .collect()
}

#[test]
fn a_healthy_canary_is_shown_within_every_limit() {
    // Defaults: error rate at most 5 %, p95 at most 1000 ms, 4xx at most
    // 5 × stable's.
    let mut judge = Judge::new(Config::default()).unwrap();
    let js = run(&mut judge, 30, STABLE, HEALTHY);
    let first = js
        .iter()
        .position(|j| j.within_limits.is_some())
        .expect("shown within the limits in 30 intervals");
    // Not before minRequests (100 canary requests = the first interval).
    assert!(first >= 1, "shown at interval {first}");
    let j = &js[first];
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    let reason = j.within_limits.as_deref().unwrap();
    assert!(
        reason.starts_with("within every limit: error-rate 1.0 % < 5.0 % (e = "),
        "{reason}"
    );
    assert!(
        reason.contains("latency-p95 at most 1 000 ms (limit 1 000 ms) (e = "),
        "{reason}"
    );
    assert!(
        reason.contains("client-error-rate/ratio 2.0 % < 5 × stable 2.0 % (e = "),
        "{reason}"
    );
    assert!(
        reason.contains(" ≥ 20)"),
        "threshold 1/(1 − 0.95): {reason}"
    );
    // Once shown, it stays shown while the canary stays healthy.
    assert!(js[first..].iter().all(|j| j.within_limits.is_some()));
    // A new step starts the evidence again.
    judge.begin_stage(&after(30, STABLE, HEALTHY));
    let j = judge.observe(&after(31, STABLE, HEALTHY), false);
    assert_eq!(j.within_limits, None, "{j:?}");
}

#[test]
fn a_canary_at_or_over_a_limit_is_never_shown_within() {
    let config = Config {
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        ..Config::default()
    };
    for (errors, what) in [(5, "at the limit"), (7, "over the limit")] {
        let mut judge = Judge::new(config.clone()).unwrap();
        let canary = Per { errors, ..HEALTHY };
        let js = run(&mut judge, 200, STABLE, canary);
        assert!(
            js.iter().all(|j| j.within_limits.is_none()),
            "{what}: shown within"
        );
        if errors == 7 {
            assert!(js.iter().any(|j| j.verdict == Verdict::Fail), "{what}");
        }
    }
    // p95 over 1000 ms: 6 % of requests slower.
    let mut judge = Judge::new(Config {
        client_error_ratio: None,
        ..Config::default()
    })
    .unwrap();
    let slow = Per { slow: 6, ..HEALTHY };
    assert!(
        run(&mut judge, 200, STABLE, slow)
            .iter()
            .all(|j| j.within_limits.is_none())
    );
}

#[test]
fn only_when_the_verdict_is_pass() {
    // Healthy on errors, but far too few canary requests for minRequests.
    let mut judge = Judge::new(Config {
        min_requests: 100_000,
        ..Config::default()
    })
    .unwrap();
    let js = run(&mut judge, 40, STABLE, HEALTHY);
    assert!(
        js.iter()
            .all(|j| j.verdict == Verdict::NotEnoughData && j.within_limits.is_none())
    );
}

#[test]
fn ratio_limits_need_a_margin() {
    let ratio = |m: f64| Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(m),
        },
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        ..Config::default()
    };
    // Canary as good as stable: shown below 2 × stable, never below 1 ×.
    let mut judge = Judge::new(ratio(2.0)).unwrap();
    let js = run(&mut judge, 60, STABLE, HEALTHY);
    let j = js
        .iter()
        .find(|j| j.within_limits.is_some())
        .expect("shown");
    assert!(
        j.within_limits
            .as_deref()
            .unwrap()
            .starts_with("within every limit: error-rate/ratio 1.0 % < 2 × stable 1.0 % (e = "),
        "{j:?}"
    );
    let mut judge = Judge::new(ratio(1.0)).unwrap();
    assert!(
        run(&mut judge, 60, STABLE, HEALTHY)
            .iter()
            .all(|j| j.within_limits.is_none())
    );
    // Twice stable's error rate against a limit of 2 ×: never shown.
    let mut judge = Judge::new(ratio(2.0)).unwrap();
    let twice = Per {
        errors: 2,
        ..HEALTHY
    };
    assert!(
        run(&mut judge, 200, STABLE, twice)
            .iter()
            .all(|j| j.within_limits.is_none())
    );
    // Custom ratio (higher is better), with its own numbers.
    let mut judge = Judge::new(Config {
        custom: vec![CustomMetric {
            name: "checkout".into(),
            direction: Direction::HigherIsBetter,
            max_ratio_to_stable: Some(1.5),
        }],
        ..ratio(2.0)
    })
    .unwrap();
    judge.begin_stage(&Observation::default());
    let mut shown = None;
    for i in 1..=60 {
        let mut o = after(i, STABLE, HEALTHY);
        o.custom = vec![(
            Ratio {
                numerator: 90 * i,
                denominator: 900 * i,
            },
            Ratio {
                numerator: 10 * i,
                denominator: 100 * i,
            },
        )];
        if let Some(w) = judge.observe(&o, false).within_limits {
            shown = Some(w);
            break;
        }
    }
    let shown = shown.expect("custom shown within");
    assert!(
        shown.contains("custom/checkout 10.0 % > stable 10.0 % ÷ 1.5 (e = "),
        "{shown}"
    );
}

#[test]
fn no_early_success_with_a_latency_ratio_or_without_sequential() {
    let with_ratio = Config {
        latency_p99: Limit {
            max: None,
            max_ratio_to_stable: Some(1.5),
        },
        ..Config::default()
    };
    let mut judge = Judge::new(with_ratio.clone()).unwrap();
    let js = run(&mut judge, 60, STABLE, HEALTHY);
    assert!(js.iter().any(|j| j.verdict == Verdict::Pass));
    assert!(js.iter().all(|j| j.within_limits.is_none()));
    // The same check advisory: the others decide.
    let mut judge = Judge::new(Config {
        advisory: vec!["latency-p99".into()],
        ..with_ratio
    })
    .unwrap();
    assert!(
        run(&mut judge, 60, STABLE, HEALTHY)
            .iter()
            .any(|j| j.within_limits.is_some())
    );
    for method in [Method::Fixed, Method::None] {
        let mut judge = Judge::new(Config {
            method,
            ..Config::default()
        })
        .unwrap();
        judge.begin_stage(&Observation::default());
        judge.set_canary_weight(10.0);
        for i in 1..=60 {
            let j = judge.observe(&after(i, STABLE, HEALTHY), true);
            assert_eq!(j.within_limits, None, "{method:?}");
        }
    }
}

/// Weight-split traffic: `n` requests per interval of which the canary got
/// `c`, plus `routed` (stable, canary) per interval sent by routes.
fn split_run(
    judge: &mut Judge,
    weight: f64,
    intervals: u64,
    n: u64,
    c: u64,
    routed: Option<(u64, u64)>,
) -> Vec<serin_analysis::Judgement> {
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(weight);
    let (rs, rc) = routed.unwrap_or((0, 0));
    (1..=intervals)
        .map(|i| {
            let stable = Per {
                requests: n - c + rs,
                errors: 0,
                client_errors: 0,
                slow: 0,
            };
            let canary = Per {
                requests: c + rc,
                errors: 0,
                client_errors: 0,
                slow: 0,
            };
            let mut o = after(i, stable, canary);
            o.routed = routed.map(|(s, c)| (s * i, c * i));
            judge.observe(&o, false)
        })
        .collect()
}

fn split_judge() -> Judge {
    Judge::new(Config {
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        ..Config::default()
    })
    .unwrap()
}

#[test]
fn a_canary_without_its_share_is_a_split_mismatch() {
    // 5 % requested, the canary gets 0.4 % (4 of 1 000 a second).
    let mut judge = split_judge();
    let js = split_run(&mut judge, 5.0, 3, 1000, 4, None);
    let s = js[2].split.as_ref().expect("split verified");
    assert!(s.mismatch, "{s:?}");
    assert_eq!((s.canary_requests, s.total_requests), (12, 3000));
    assert!((s.requested - 5.0).abs() < 1e-12 && (s.observed - 0.4).abs() < 1e-9);
    assert!(
        s.reason
            .starts_with("canary got 0.40 % of requests (12/3 000), 5 % requested (below the band 2.5 %–10.0 % with e-value "),
        "{}",
        s.reason
    );
    // Not part of the verdict.
    assert_ne!(js[2].verdict, Verdict::Fail);
    // Too much is a mismatch too: 30 % at a 5 % weight.
    let mut judge = split_judge();
    let js = split_run(&mut judge, 5.0, 3, 1000, 300, None);
    let s = js[2].split.as_ref().unwrap();
    assert!(s.mismatch && s.reason.contains("(above the band"), "{s:?}");
}

#[test]
fn a_healthy_split_is_not_a_mismatch() {
    for (w, c) in [(5.0, 50), (5.0, 40), (50.0, 500), (90.0, 880), (1.0, 10)] {
        let mut judge = split_judge();
        let js = split_run(&mut judge, w, 200, 1000, c, None);
        for j in &js {
            let s = j.split.as_ref().expect("split verified");
            assert!(!s.mismatch, "{w} %: {}", s.reason);
        }
        let s = js[199].split.as_ref().unwrap();
        assert!(s.reason.contains("e-value"), "{}", s.reason);
        assert!((s.observed - 100.0 * c as f64 / 1000.0).abs() < 1e-9);
    }
}

#[test]
fn routed_requests_are_left_out_and_sticky_widens_the_band() {
    // 5 % by weight, and 200 requests a second sent to the canary by a
    // header route: without the routed counts that looks like 21 %.
    let mut judge = split_judge();
    let js = split_run(&mut judge, 5.0, 20, 1000, 50, Some((0, 200)));
    let s = js[19].split.as_ref().unwrap();
    assert!(!s.mismatch, "{}", s.reason);
    assert_eq!((s.canary_requests, s.total_requests), (1000, 20_000));
    assert!(
        s.reason
            .ends_with("; 4 000 sent by header or cookie routes left out)"),
        "{}",
        s.reason
    );
    let mut blind = split_judge();
    let mut seen = None;
    blind.begin_stage(&Observation::default());
    blind.set_canary_weight(5.0);
    for i in 1..=20 {
        let o = Observation {
            stable: Totals {
                requests: 950 * i,
                ..Totals::default()
            },
            canary: Totals {
                requests: 250 * i,
                ..Totals::default()
            },
            ..Observation::default()
        };
        seen = blind.observe(&o, false).split;
    }
    assert!(seen.unwrap().mismatch);
    // 2 % at a 5 % weight: a mismatch, but not with sticky sessions.
    let mut judge = split_judge();
    let js = split_run(&mut judge, 5.0, 20, 1000, 20, None);
    assert!(js[19].split.as_ref().unwrap().mismatch);
    let mut sticky = split_judge();
    sticky.set_split_tolerance(true);
    let js = split_run(&mut sticky, 5.0, 20, 1000, 20, None);
    let s = js[19].split.as_ref().unwrap();
    assert!(!s.mismatch, "{}", s.reason);
    assert!(s.reason.contains("band 1.2 %–20.0 %"), "{}", s.reason);
}

#[test]
fn no_split_without_a_weight_strictly_between_0_and_100() {
    for w in [0.0, 100.0] {
        let mut judge = split_judge();
        let c = if w == 0.0 { 0 } else { 1000 };
        let js = split_run(&mut judge, w, 5, 1000, c, None);
        assert!(js.iter().all(|j| j.split.is_none()), "{w}");
    }
    let mut judge = split_judge();
    judge.begin_stage(&Observation::default());
    let j = judge.observe(&after(1, STABLE, HEALTHY), false);
    assert_eq!(j.split, None, "no weight told");
    // The split recovers once the routing takes effect (the e-value is the
    // current one, not the largest seen).
    let mut judge = split_judge();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let mut mismatch_seen = false;
    let mut last = None;
    for i in 1..=400u64 {
        let (s, c) = if i <= 3 {
            (1000 * i, 0)
        } else {
            (3000 + 900 * (i - 3), 100 * (i - 3))
        };
        let o = Observation {
            stable: Totals {
                requests: s,
                ..Totals::default()
            },
            canary: Totals {
                requests: c,
                ..Totals::default()
            },
            ..Observation::default()
        };
        last = judge.observe(&o, false).split;
        mismatch_seen |= last.as_ref().is_some_and(|s| s.mismatch);
    }
    assert!(mismatch_seen);
    assert!(!last.unwrap().mismatch);
}

#[test]
fn an_advisory_check_never_fails_the_verdict() {
    let config = Config {
        advisory: vec!["error-rate".into()],
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        custom: vec![CustomMetric {
            name: "checkout".into(),
            direction: Direction::HigherIsBetter,
            max_ratio_to_stable: None,
        }],
        ..Config::default()
    };
    let mut judge = Judge::new(config).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let bad = Per {
        errors: 10,
        ..HEALTHY
    };
    let mut failed = None;
    for i in 1..=30 {
        let mut o = after(i, STABLE, bad);
        o.custom = vec![(
            Ratio {
                numerator: 90 * i,
                denominator: 900 * i,
            },
            Ratio {
                numerator: 10 * i,
                denominator: 100 * i,
            },
        )];
        let j = judge.observe(&o, false);
        assert_ne!(j.verdict, Verdict::Fail, "{}", j.reason);
        assert!(j.checks[0].advisory && !j.checks[1].advisory);
        if j.would_fail.is_some() {
            failed = Some(j);
            break;
        }
    }
    let j = failed.expect("the advisory check failed");
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
    let wf = j.would_fail.as_deref().unwrap();
    assert!(
        wf.starts_with("canary error rate 10.0 % (")
            && wf.contains(
                "in this step, limit 5.0 %: above the limit with 95 % confidence (e-value "
            ),
        "{wf}"
    );
    assert!(
        j.reason.contains("advisory error-rate: canary error rate"),
        "{}",
        j.reason
    );
    // The advisory check keeps its share of the level (two checks here).
    assert_eq!(judge.threshold().round(), 40.0);
}

#[test]
fn an_advisory_check_without_data_is_not_no_data() {
    let mut judge = Judge::new(Config {
        advisory: vec!["latency-p95".into()],
        client_error_ratio: None,
        ..Config::default()
    })
    .unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    for i in 1..=5 {
        let o = Observation {
            stable: Totals {
                requests: 900 * i,
                errors: 9 * i,
                ..Totals::default()
            },
            canary: Totals {
                requests: 100 * i,
                errors: i,
                ..Totals::default()
            },
            ..Observation::default()
        };
        let j = judge.observe(&o, false);
        assert_eq!(j.checks[1].verdict, Verdict::NoData);
        if i >= 1 {
            assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
        }
    }
    // Enforced, the same is no data.
    let mut judge = Judge::new(Config {
        client_error_ratio: None,
        ..Config::default()
    })
    .unwrap();
    judge.begin_stage(&Observation::default());
    let o = Observation {
        stable: Totals {
            requests: 900,
            ..Totals::default()
        },
        canary: Totals {
            requests: 100,
            ..Totals::default()
        },
        ..Observation::default()
    };
    assert_eq!(judge.observe(&o, false).verdict, Verdict::NoData);
}

#[test]
fn compared_with_a_baseline_the_reasons_say_so() {
    let config = Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.0),
        },
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        compare_with: Reference::Baseline,
        ..Config::default()
    };
    let mut judge = Judge::new(config).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let bad = Per {
        errors: 8,
        ..HEALTHY
    };
    let mut last = None;
    let fresh = Per {
        requests: 100,
        errors: 1,
        ..STABLE
    };
    for i in 1..=20 {
        let j = judge.observe(
            &Observation {
                baseline: Some(totals(fresh, i)),
                ..after(
                    i,
                    Per {
                        requests: 800,
                        errors: 8,
                        ..STABLE
                    },
                    bad,
                )
            },
            false,
        );
        let done = j.verdict == Verdict::Fail;
        last = Some(j);
        if done {
            break;
        }
    }
    let j = last.unwrap();
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.reason);
    assert!(
        j.reason.starts_with("canary error rate 8.0 % (")
            && j.reason.contains(") vs baseline 1.0 % ("),
        "{}",
        j.reason
    );
    assert!(
        j.reason
            .contains("worse than baseline with 95 % confidence"),
        "{}",
        j.reason
    );
    assert!(!j.reason.contains("stable"), "{}", j.reason);
    assert_eq!(Reference::default(), Reference::Stable);
}

#[test]
fn against_a_baseline_the_split_is_canary_versus_baseline() {
    let mut judge = Judge::new(Config {
        compare_with: Reference::Baseline,
        ..split_judge().config().clone()
    })
    .unwrap();
    // 5 % each for canary and baseline: half of their requests each, plus
    // 10 a second routed to the canary and 300 to the stable, which the
    // baseline's numbers do not include.
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(5.0);
    let mut last = None;
    for i in 1..=20 {
        let o = Observation {
            stable: Totals {
                requests: 1200 * i,
                ..Totals::default()
            },
            canary: Totals {
                requests: 60 * i,
                ..Totals::default()
            },
            baseline: Some(Totals {
                requests: 50 * i,
                ..Totals::default()
            }),
            routed: Some((300 * i, 10 * i)),
            ..Observation::default()
        };
        last = judge.observe(&o, false).split;
    }
    let s = last.unwrap();
    assert!(!s.mismatch, "{}", s.reason);
    assert_eq!((s.canary_requests, s.total_requests), (1000, 2000));
    assert!(
        s.reason
            .ends_with("; 200 sent by header or cookie routes left out)"),
        "{}",
        s.reason
    );
    // A canary without its share beside the baseline is a mismatch.
    let mut judge = Judge::new(Config {
        compare_with: Reference::Baseline,
        ..split_judge().config().clone()
    })
    .unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(5.0);
    let mut last = None;
    for i in 1..=20 {
        let requests = |n: u64| Totals {
            requests: n * i,
            ..Totals::default()
        };
        let o = Observation {
            stable: requests(1800),
            canary: requests(5),
            baseline: Some(requests(95)),
            ..Observation::default()
        };
        last = judge.observe(&o, false).split;
    }
    let s = last.unwrap();
    assert!(s.mismatch, "{}", s.reason);
    assert!((s.requested - 50.0).abs() < 1e-9);
    assert!(
        s.reason.starts_with(
            "canary got 5.0 % of canary and baseline requests (100/2 000), 50 % expected at a 5 % weight"
        ),
        "{}",
        s.reason
    );
}

#[test]
fn no_early_success_while_the_split_is_a_mismatch() {
    // Healthy numbers, but the canary gets 1 % of the requests at a 10 %
    // weight: the metrics are not the canary's at the weight asked for.
    let mut judge = Judge::new(Config::default()).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let few = Per {
        requests: 10,
        errors: 0,
        client_errors: 0,
        slow: 0,
    };
    let stable = Per {
        requests: 990,
        ..STABLE
    };
    let mut passed = 0;
    for i in 1..=100 {
        let j = judge.observe(&after(i, stable, few), false);
        assert!(
            j.split.as_ref().is_some_and(|s| s.mismatch) || i < 3,
            "{i}: {:?}",
            j.split
        );
        passed += usize::from(j.verdict == Verdict::Pass);
        assert_eq!(j.within_limits, None, "{i}");
    }
    assert!(passed > 50, "the verdict itself passes ({passed})");
    // The same numbers at a 1 % weight end the step early.
    let mut judge = Judge::new(Config::default()).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(1.0);
    assert!((1..=100).any(|i| {
        judge
            .observe(&after(i, stable, few), false)
            .within_limits
            .is_some()
    }));
}

/// Compared with a baseline that is itself failing (it crashed and answers
/// 502), a canary with 30 % errors looks better than its reference: the
/// baseline is checked against the stable, and a baseline shown worse is
/// no fair reference, so the verdict is no data, never a pass.
#[test]
fn a_baseline_worse_than_the_stable_is_no_reference() {
    let config = Config {
        error_rate: Limit {
            max: None,
            max_ratio_to_stable: Some(1.5),
        },
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        compare_with: Reference::Baseline,
        ..Config::default()
    };
    let mut judge = Judge::new(config).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let failing = |errors| Per {
        requests: 100,
        errors,
        client_errors: 0,
        slow: 0,
    };
    let mut verdicts = Vec::new();
    for i in 1..=30 {
        let j = judge.observe(
            &Observation {
                baseline: Some(totals(failing(88), i)),
                ..after(i, failing(1), failing(30))
            },
            false,
        );
        assert_ne!(j.verdict, Verdict::Pass, "{i}: {}", j.reason);
        assert_eq!(j.within_limits, None, "{i}");
        verdicts.push(j);
    }
    let last = verdicts.last().unwrap();
    assert_eq!(last.verdict, Verdict::NoData, "{}", last.reason);
    assert!(
        last.reason.starts_with(
            "no data: the baseline is no fair reference, it is worse than the stable: baseline error rate 88.0 %"
        ),
        "{}",
        last.reason
    );
    // A healthy baseline: the same canary fails against it.
    let mut judge = Judge::new(judge.config().clone()).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let failed = (1..=30).any(|i| {
        let o = Observation {
            baseline: Some(totals(failing(1), i)),
            ..after(i, failing(1), failing(30))
        };
        judge.observe(&o, false).verdict == Verdict::Fail
    });
    assert!(failed);
}

/// A canary and a baseline starved alike (each 0.5 % of the requests at a
/// 20 % weight) have the share they should have of each other's requests:
/// the baseline's share of its own and the stable's requests shows it.
#[test]
fn a_canary_and_baseline_starved_alike_are_a_split_mismatch() {
    let mut judge = Judge::new(Config {
        compare_with: Reference::Baseline,
        ..split_judge().config().clone()
    })
    .unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(20.0);
    let mut last = None;
    for i in 1..=20 {
        let requests = |n: u64| Totals {
            requests: n * i,
            ..Totals::default()
        };
        let o = Observation {
            stable: requests(990),
            canary: requests(5),
            baseline: Some(requests(5)),
            routed: Some((0, 0)),
            ..Observation::default()
        };
        let j = judge.observe(&o, false);
        assert_eq!(j.within_limits, None, "{i}");
        last = j.split;
    }
    let s = last.unwrap();
    assert!(s.mismatch, "{}", s.reason);
    assert!(
        s.reason.starts_with(
            "baseline got 0.50 % of stable and baseline requests (100/19 900), 25 % expected (below"
        ),
        "{}",
        s.reason
    );
}

/// A service with no 4xx and no 5xx on either side: no ratio can ever be
/// shown below its limit, but the canary's rates are shown below the
/// floors (5xx 0.1 %, 4xx 1 %), which meets the ratio limits for early
/// success; a canary answering 404 to everything never is.
#[test]
fn ratio_limits_are_met_below_their_floor_when_nothing_errs() {
    let clean = |requests| Per {
        requests,
        errors: 0,
        client_errors: 0,
        slow: 0,
    };
    let config = Config {
        error_rate: Limit {
            max: Some(0.05),
            max_ratio_to_stable: Some(2.0),
        },
        ..Config::default()
    };
    let mut judge = Judge::new(config.clone()).unwrap();
    let js = run(&mut judge, 200, clean(900), clean(100));
    let first = js
        .iter()
        .position(|j| j.within_limits.is_some())
        .expect("shown within the limits in 200 intervals");
    let reason = js[first].within_limits.as_deref().unwrap();
    assert!(
        reason.contains("error-rate/ratio 0 % < floor 0.10 % (e = "),
        "{reason}"
    );
    assert!(
        reason.contains("client-error-rate/ratio 0 % < floor 1.0 % (e = "),
        "{reason}"
    );
    // 404 to everything: 4xx far over the floor and over 5 × stable's.
    let mut judge = Judge::new(config).unwrap();
    let broken = Per {
        client_errors: 100,
        ..clean(100)
    };
    let js = run(&mut judge, 200, clean(900), broken);
    assert!(js.iter().all(|j| j.within_limits.is_none()));
    assert!(js.iter().any(|j| j.verdict == Verdict::Fail));
    // Just over the 4xx floor with a stable at 0: never early, however long.
    let mut judge = Judge::new(Config::default()).unwrap();
    let over = Per {
        client_errors: 2,
        ..clean(100)
    };
    let js = run(&mut judge, 300, clean(900), over);
    assert!(js.iter().all(|j| j.within_limits.is_none()));
}

/// Early in a step the canary gets 90 % of the requests at a 10 % weight:
/// not yet shown to be a mismatch, but outside the band, so no early
/// success on those numbers.
#[test]
fn no_early_success_while_the_share_is_outside_the_band() {
    let mut judge = Judge::new(Config {
        min_requests: 10,
        latency_p95: Limit::NONE,
        client_error_ratio: None,
        ..Config::default()
    })
    .unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let per = |requests| Per {
        requests,
        errors: 0,
        client_errors: 0,
        slow: 0,
    };
    for i in 1..=40 {
        let mut o = after(i, per(10), per(90));
        o.routed = Some((0, 0));
        let j = judge.observe(&o, false);
        assert_eq!(j.within_limits, None, "{i}: {:?}", j.split);
    }
    // The same healthy numbers at the weight asked for end the step early.
    let mut judge = Judge::new(judge.config().clone()).unwrap();
    judge.begin_stage(&Observation::default());
    judge.set_canary_weight(10.0);
    let early = (1..=40).any(|i| {
        let mut o = after(i, per(90), per(10));
        o.routed = Some((0, 0));
        judge.observe(&o, false).within_limits.is_some()
    });
    assert!(early);
}
