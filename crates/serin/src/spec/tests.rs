use super::kubernetes::valid_tag;
use super::values::shorthand_ipv4;
use super::*;

const MINIMAL: &str = "\
name: checkout
stable:
  version: v1
  upstream: http://127.0.0.1:9001
canary:
  version: v2
  upstream: http://127.0.0.1:9002
traffic:
  listen: 127.0.0.1:8080
";

fn problems(text: &str) -> Vec<String> {
    match parse(text, "r.yaml") {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

#[test]
fn minimal_file_gets_the_spec_defaults() {
    let r = parse(MINIMAL, "r.yaml").expect("valid");
    assert_eq!(r.name, "checkout");
    assert_eq!(r.traffic.provider, Provider::Builtin);
    assert_eq!(r.steps, default_steps());
    assert_eq!(r.steps.len(), 8);
    assert_eq!(r.analysis, AnalysisSettings::default());
    assert_eq!(r.analysis.judge.error_rate.max, Some(0.05));
    assert_eq!(r.analysis.judge.latency_p95.max, Some(1000.0));
    assert_eq!(r.analysis.interval, Duration::from_secs(10));
    let plan = r.plan();
    assert_eq!(plan.no_data_limit, 3);
    assert!(!plan.judge_at_end_of_pause);
}

#[test]
fn the_specs_example_reads() {
    let text = format!(
        "{MINIMAL}  sticky:\n    cookie: session\n  routes:\n    - match: {{ header: {{ name: x-canary, value: always }} }}\n      version: canary\n\
steps:\n  - setWeight: 5\n  - pause: {{ duration: 60s }}\n  - setWeight: 12.5\n  - pause: {{}}\n  - setWeight: \"50%\"\n  - pause: {{ until: webhook, url: http://127.0.0.1:1/gate }}\n\
analysis:\n  interval: 2s\n  minRequests: 50\n  errorRate: {{ max: 2%, maxRatioToStable: 2.0 }}\n  latencyP95: {{ max: 500ms, maxRatioToStable: 1.5 }}\n  latencyP99: {{ max: 2s }}\n  statistics: {{ method: fixed, confidence: 0.99 }}\n  noDataLimit: 5\n\
notifications:\n  - webhook: https://hooks.example.com/x\n    format: slack\n\
preRollout:\n  url: http://127.0.0.1:1/check\n"
    );
    let r = parse(&text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.steps,
        vec![
            Step::SetWeight(Weight::from_percent(5.0).expect("w")),
            Step::PauseFor {
                duration: Duration::from_secs(60),
                early: false
            },
            Step::SetWeight(Weight::from_hundredths(1250).expect("w")),
            Step::PauseUntilPromoted,
            Step::SetWeight(Weight::from_percent(50.0).expect("w")),
            Step::PauseUntilGate("http://127.0.0.1:1/gate".into()),
        ]
    );
    assert_eq!(
        r.traffic.sticky,
        Some(StickyKey::cookie("session").expect("ok"))
    );
    assert_eq!(r.traffic.routes.len(), 1);
    let a = &r.analysis;
    assert_eq!(a.interval, Duration::from_secs(2));
    assert_eq!(a.judge.min_requests, 50);
    assert_eq!(a.judge.error_rate.max, Some(0.02));
    assert_eq!(a.judge.error_rate.max_ratio_to_stable, Some(2.0));
    assert_eq!(a.judge.latency_p95.max, Some(500.0));
    assert_eq!(a.judge.latency_p99.max, Some(2000.0));
    assert_eq!(a.judge.method, serin_analysis::Method::Fixed);
    assert_eq!(a.judge.confidence, 0.99);
    assert_eq!(a.no_data_limit, 5);
    assert!(r.plan().judge_at_end_of_pause);
    assert_eq!(r.notifications[0].format, notify::Format::Slack);
    assert_eq!(r.pre_rollout.as_deref(), Some("http://127.0.0.1:1/check"));
}

#[test]
fn unknown_fields_are_refused_with_their_place() {
    let text = MINIMAL.replace("  listen:", "  lisen: x\n  listen:");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:9:3: "), "{p:?}");
    assert!(p[0].contains("lisen"), "{p:?}");
}

#[test]
fn a_weight_above_100_names_its_line() {
    let text = format!("{MINIMAL}steps:\n  - setWeight: 120\n");
    let p = problems(&text);
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(p[0].contains("0 to 100"), "{p:?}");
}

#[test]
fn durations_and_percentages_must_parse() {
    let text = format!("{MINIMAL}analysis:\n  interval: soon\n");
    let p = problems(&text);
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(p[0].contains("duration"), "{p:?}");
    let text = format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0.05 }}\n");
    let p = problems(&text);
    assert!(p[0].contains("percentage like 5%"), "{p:?}");
}

#[test]
fn resolver_shorthand_addresses_are_read_without_the_resolver() {
    for (text, ip) in [
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5"),
    ] {
        assert_eq!(shorthand_ipv4(text), Some(ip.parse().unwrap()), "{text}");
    }
    for text in ["256.1", "1.2.3.4.5", "cafe.example", "127.256.0.1", ""] {
        assert_eq!(shorthand_ipv4(text), None, "{text}");
    }
}

/// Found by trying to break it: these were accepted (a 584-million-year
/// interval never judges; a pause shown as 5124095576030431h; a canary
/// that is the stable server; a label with a right-to-left override).
#[test]
fn absurd_durations_and_look_alike_versions_are_refused_with_their_place() {
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  interval: 18446744073709551615ms\n"
    ));
    assert!(
        p[0].starts_with("r.yaml:11:") && p[0].contains("at most 720h"),
        "{p:?}"
    );
    let p = problems(&format!("{MINIMAL}analysis:\n  interval: 2h\n"));
    assert!(
        p[0].contains("analysis.interval: expected at most 1h"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{MINIMAL}steps:\n  - setWeight: 5\n  - pause: {{ duration: 99999999999999999h }}\n"
    ));
    assert!(p.iter().any(|e| e.contains("at most 720h")), "{p:?}");
    let same = MINIMAL.replacen("http://127.0.0.1:9002", "http://127.0.0.1:9001", 1);
    let p = problems(&same);
    assert!(
        p.iter()
            .any(|e| e.contains("canary.upstream: expected a server other than stable's")),
        "{p:?}"
    );
    let p = problems(&MINIMAL.replacen("v2", "v1", 1));
    assert!(
        p.iter()
            .any(|e| e.contains("canary.version: expected a version other than stable's")),
        "{p:?}"
    );
    let p = problems(&MINIMAL.replacen("v2", "\"v2\\u202Eevil\"", 1));
    assert!(p.iter().any(|e| e.contains("visible ASCII")), "{p:?}");
    for look_alike in ["v1\\u00AD", "\\u0432", "v1\\u00A0", "v1 ", "v1\\u2028"] {
        let p = problems(&MINIMAL.replacen("v2", &format!("\"{look_alike}\""), 1));
        assert!(
            p.iter().any(|e| e.contains("visible ASCII")),
            "{look_alike}: {p:?}"
        );
    }
    for same in [
        "http://127.1:9001",
        "http://localhost:9001",
        "http://[::ffff:127.0.0.1]:9001",
        "http://[::1]:9001",
        // Connecting to the unspecified address reaches this machine.
        "http://0.0.0.0:9001",
        "http://0:9001",
        "http://[::]:9001",
    ] {
        let p = problems(&MINIMAL.replacen("http://127.0.0.1:9002", same, 1));
        assert!(
            p.iter()
                .any(|e| e.contains("expected a server other than stable's"))
                || p.iter().any(|e| e.contains("canary.upstream")),
            "{same}: {p:?}"
        );
    }
}

#[test]
fn a_progress_deadline_is_read_and_must_be_above_zero() {
    assert_eq!(
        parse(MINIMAL, "r.yaml").unwrap().plan().progress_deadline,
        None
    );
    let r = parse(&format!("{MINIMAL}progressDeadline: 10m\n"), "r.yaml").unwrap();
    assert_eq!(r.progress_deadline, Some(Duration::from_secs(600)));
    assert_eq!(r.plan().progress_deadline, Some(Duration::from_secs(600)));
    let p = problems(&format!("{MINIMAL}progressDeadline: 0s\n"));
    assert!(p[0].starts_with("r.yaml:10:"), "{p:?}");
    assert!(
        p[0].contains("progressDeadline: expected a duration above 0"),
        "{p:?}"
    );
    let p = problems(&format!("{MINIMAL}progressDeadline: soon\n"));
    assert!(p[0].starts_with("r.yaml:10:"), "{p:?}");
}

#[test]
fn an_empty_step_list_is_refused() {
    let p = problems(&format!("{MINIMAL}steps: []\n"));
    assert!(p[0].starts_with("r.yaml:10:"), "{p:?}");
    assert!(p[0].contains("at least one step"), "{p:?}");
}

/// `MINIMAL` plus `steps:` with these items, e.g. `"  - setWeight: 5\n"`.
fn with_steps(items: &str) -> String {
    format!("{MINIMAL}steps:\n{items}")
}

fn weights(text: &str) -> Vec<u16> {
    let r = parse(text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
    r.steps
        .iter()
        .filter_map(|s| match s {
            Step::SetWeight(w) => Some(w.hundredths()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_plan_that_can_never_be_judged_is_refused_at_its_place() {
    // Fails before this change: each of these read as a valid plan.
    let p = problems(&with_steps("  - pause: { duration: 1m }\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(p[0].contains("expected a setWeight above 0"), "{p:?}");
    let p = problems(&with_steps(
        "  - setWeight: 0\n  - pause: { duration: 1m }\n",
    ));
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(p[0].contains("expected a setWeight above 0"), "{p:?}");
    // The last weight is 0: the end, a promotion, can never be judged.
    let p = problems(&with_steps(
        "  - setWeight: 20\n  - pause: { duration: 1m }\n  - lowerWeight: 0\n",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("r.yaml:13:18: lowerWeight: 0 is the last weight"),
        "{p:?}"
    );
    assert!(p[0].contains("expected a last weight above 0"), "{p:?}");
    // A plan ending on a weight above 0 reads.
    assert_eq!(
        weights(&with_steps(
            "  - setWeight: 20\n  - pause: { duration: 1m }\n"
        )),
        [2000]
    );
}

#[test]
fn a_weight_goes_down_only_where_the_file_says_so() {
    // Fails before this change: 50 then 5 (a typo for 55?) was taken as written.
    let p = problems(&with_steps(
        "  - setWeight: 50\n  - pause: { duration: 1m }\n  - setWeight: 5\n  - pause: {}\n",
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("r.yaml:13:16: setWeight: 5 lowers the canary weight from 50 %"),
        "{p:?}"
    );
    assert!(p[0].contains("`lowerWeight: 5`"), "{p:?}");
    // On purpose: lowerWeight.
    let ok = with_steps(
        "  - setWeight: 50\n  - pause: { duration: 1m }\n  - lowerWeight: 5\n  - pause: {}\n  - setWeight: 100\n",
    );
    assert_eq!(weights(&ok), [5000, 500, 10_000]);
    // lowerWeight that does not lower is refused too (it says the opposite of the plan).
    let p = problems(&with_steps(
        "  - setWeight: 20\n  - pause: {}\n  - lowerWeight: 30\n  - pause: {}\n",
    ));
    assert!(
        p[0].starts_with("r.yaml:13:18: lowerWeight: 30 does not lower"),
        "{p:?}"
    );
    // The same weight twice is no decrease.
    assert_eq!(
        weights(&with_steps(
            "  - setWeight: 20\n  - pause: {}\n  - setWeight: 20\n"
        )),
        [2000, 2000]
    );
}

#[test]
fn min_requests_below_1_is_refused_at_its_place() {
    // Fails before this change: 0 made an empty stage a pass.
    let p = problems(&format!("{MINIMAL}analysis:\n  minRequests: 0\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("r.yaml:11:16: analysis.minRequests: expected at least 1"),
        "{p:?}"
    );
    let r = parse(&format!("{MINIMAL}analysis:\n  minRequests: 1\n"), "r.yaml").unwrap();
    assert_eq!(r.analysis.judge.min_requests, 1);
    assert_eq!(r.plan().min_requests, 1, "the plan names it in its reasons");
}

#[test]
fn the_4xx_check_is_read_overridden_or_turned_off() {
    // Default: on at 5 x stable's rate for sources that count 4xx.
    let r = parse(MINIMAL, "r.yaml").unwrap();
    assert_eq!(r.analysis.judge.client_error_ratio, Some(5.0));
    assert_eq!(r.analysis.judge.client_error_ratio, Some(5.0));
    let r = parse(
        &format!("{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: 2.5 }}\n"),
        "r.yaml",
    )
    .unwrap();
    assert_eq!(r.analysis.judge.client_error_ratio, Some(2.5));
    for off in ["off", "\"off\""] {
        let r = parse(
            &format!("{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: {off} }}\n"),
            "r.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.analysis.judge.client_error_ratio, None, "{off}");
        assert_eq!(r.analysis.judge.client_error_ratio, None);
    }
    // A ratio below 1 would fail a canary with fewer 4xx than stable.
    for bad in ["0.5", "0", "-1", "no", "5x"] {
        let p = problems(&format!(
            "{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: {bad} }}\n"
        ));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert!(p[0].starts_with("r.yaml:11:"), "{bad}: {p:?}");
        assert!(
                p[0].contains(
                    "analysis.clientErrorRate.maxRatioToStable: expected a ratio of at least 1, like 5, or `off`"
                ),
                "{bad}: {p:?}"
            );
    }
    // Prometheus: off without a 4xx query, on with one; an explicit
    // limit without the query is refused at its place.
    let prom =
        "  prometheus: { address: http://127.0.0.1:9090, requests: r, errors: e, latencyBuckets: b";
    let r = parse(&format!("{MINIMAL}analysis:\n{prom} }}\n"), "r.yaml").unwrap();
    assert_eq!(r.analysis.judge.client_error_ratio, None);
    let r = parse(
        &format!("{MINIMAL}analysis:\n{prom}, clientErrors: c }}\n"),
        "r.yaml",
    )
    .unwrap();
    assert_eq!(
        r.analysis
            .prometheus
            .as_ref()
            .unwrap()
            .client_errors
            .as_deref(),
        Some("c")
    );
    assert_eq!(r.analysis.judge.client_error_ratio, Some(5.0));
    let p = problems(&format!(
        "{MINIMAL}analysis:\n{prom} }}\n  clientErrorRate: {{ maxRatioToStable: 3 }}\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:12:"), "{p:?}");
    assert!(
        p[0].contains("expected analysis.prometheus.clientErrors too"),
        "{p:?}"
    );
    let r = parse(
        &format!("{MINIMAL}analysis:\n{prom} }}\n  clientErrorRate: {{ maxRatioToStable: off }}\n"),
        "r.yaml",
    )
    .unwrap();
    assert_eq!(r.analysis.judge.client_error_ratio, None);
}

#[test]
fn steps_with_nothing_after_it_is_refused_like_an_empty_list() {
    // Fails before this change: `steps:` alone silently became the default plan.
    for text in [
        format!("{MINIMAL}steps:\n"),
        format!("{MINIMAL}steps: ~\n"),
        format!("{MINIMAL}steps: []\n"),
    ] {
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert!(p[0].starts_with("r.yaml:10:"), "{text}: {p:?}");
        assert!(p[0].contains("expected at least one step"), "{text}: {p:?}");
    }
}

#[test]
fn an_empty_analysis_or_traffic_section_is_refused_like_steps() {
    // Fails before this change: `analysis:` alone silently became the
    // defaults, `traffic:` alone a listen error without a line.
    for text in [
        format!("{MINIMAL}analysis:\n"),
        format!("{MINIMAL}analysis: ~\n"),
    ] {
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert!(
            p[0].starts_with("r.yaml:10:")
                && p[0].contains("analysis: expected at least one setting"),
            "{text}: {p:?}"
        );
    }
    let bare = MINIMAL.replace("traffic:\n  listen: 127.0.0.1:8080\n", "traffic:\n");
    for text in [bare.clone(), bare.replace("traffic:\n", "traffic: ~\n")] {
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{text}: {p:?}");
        assert!(
            p[0].starts_with("r.yaml:8:")
                && p[0].contains("traffic: expected a section with at least listen"),
            "{text}: {p:?}"
        );
    }
    // Left out, analysis gets the defaults; `{}` says so on purpose.
    assert_eq!(
        parse(MINIMAL, "r.yaml").unwrap().analysis,
        AnalysisSettings::default()
    );
    let r = parse(&format!("{MINIMAL}analysis: {{}}\n"), "r.yaml").unwrap();
    assert_eq!(r.analysis, AnalysisSettings::default());
}

#[test]
fn limits_the_judge_cannot_use_are_refused_at_their_place() {
    // Fails before this change: read, then refused by the judge without a line.
    let p = problems(&format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0% }}\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(
        p[0].contains("analysis.errorRate.max: expected a percentage above 0%"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  latencyP99: {{ max: 0ms }}\n"
    ));
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(
        p[0].contains("analysis.latencyP99.max: expected a latency above 0"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  prometheus: {{ address: http://127.0.0.1:9090, requests: r, errors: e }}\n  latencyP95: {{ max: 300ms }}\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:12:"), "{p:?}");
    assert!(
        p[0].contains("analysis.latencyP95: expected analysis.prometheus.latencyBuckets"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  prometheus: {{ address: http://127.0.0.1:9090, requests: r, errors: e }}\n  custom:\n    - {{name: x, numerator: a, denominator: b, direction: higherIsBetter}}\n    - {{name: x, numerator: c, denominator: d, direction: higherIsBetter}}\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:14:"), "{p:?}");
    assert!(p[0].contains("a name of its own, got `x`"), "{p:?}");
    // Every analysis section read here is one the judge accepts.
    let r = parse(
        &format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0.0001% }}\n"),
        "r.yaml",
    )
    .unwrap();
    assert!(r.analysis.judge.validate().is_ok());
}

#[test]
fn numbers_are_read_as_written_or_refused() {
    // Fails before this change: both were read as 100 (%).
    let p = problems(&with_steps("  - setWeight: 99.999999999999999999\n"));
    assert!(
        p[0].starts_with("r.yaml:11:16: expected a weight from 0 to 100 with at most two decimals"),
        "{p:?}"
    );
    assert!(p[0].contains("`99.999999999999999999`"), "{p:?}");
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  errorRate: {{ max: 99.999999999999999999% }}\n"
    ));
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    assert!(p[0].contains("at most four decimals"), "{p:?}");
    // Exact forms still read, quoted or not, in YAML and JSON.
    assert_eq!(
        weights(&with_steps(
            "  - setWeight: 12.25\n  - setWeight: \"99.99%\"\n  - setWeight: 100.0\n"
        )),
        [1225, 9999, 10_000]
    );
    let r = parse(
        &format!("{MINIMAL}analysis:\n  errorRate: {{ max: 0.0125% }}\n"),
        "r.yaml",
    )
    .unwrap();
    assert!((r.analysis.judge.error_rate.max.unwrap() - 0.000125).abs() < 1e-15);
    for bad in ["5.", ".5", "-1", "1e2", "0x10", "100.01", "5 %%"] {
        let p = problems(&with_steps(&format!("  - setWeight: \"{bad}\"\n")));
        assert!(p[0].contains("expected a weight"), "{bad}: {p:?}");
    }
    let text = r#"{"name":"a","stable":{"version":"v1","upstream":"http://127.0.0.1:1"},"canary":{"version":"v2","upstream":"http://127.0.0.1:2"},"traffic":{"listen":"127.0.0.1:0"},"steps":[{"setWeight":99.999999999999999999}]}"#;
    assert!(
        parse(text, "body").is_err(),
        "JSON numbers are read as written too"
    );
}

#[test]
fn a_bare_number_is_not_a_duration() {
    // Fails before this change: `1` was read as one second.
    for (text, line) in [
        (format!("{MINIMAL}analysis:\n  interval: 1\n"), "r.yaml:11:"),
        (
            with_steps("  - setWeight: 5\n  - pause: { duration: 60 }\n"),
            "r.yaml:12:",
        ),
        (
            format!("{MINIMAL}analysis:\n  latencyP95: {{ max: 250 }}\n"),
            "r.yaml:11:",
        ),
        (format!("{MINIMAL}progressDeadline: 600\n"), "r.yaml:10:"),
    ] {
        let p = problems(&text);
        assert!(p[0].starts_with(line), "{text}: {p:?}");
        assert!(p[0].contains("a number without its unit"), "{text}: {p:?}");
    }
}

#[test]
fn every_cross_field_problem_is_reported_at_once() {
    let text = "\
name: Bad_Name
stable:
  version: v1
  upstream: ftp://x
canary:
  version: v2
traffic:
  listen: nowhere
";
    let p = problems(text);
    assert!(
        p.iter()
            .any(|l| l.starts_with("r.yaml:1:") && l.contains("name:")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("r.yaml:4:") && l.contains("stable.upstream")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.contains("canary.upstream")), "{p:?}");
    assert!(
        p.iter()
            .any(|l| l.starts_with("r.yaml:8:") && l.contains("traffic.listen")),
        "{p:?}"
    );
}

#[test]
fn providers_need_their_sections() {
    let text = MINIMAL.replace("traffic:\n", "traffic:\n  provider: nginx\n");
    assert!(problems(&text)[0].contains("traffic.nginx"));
    // An access log where nginx reads configuration is refused (found
    // by the outside tests: it broke every later `nginx -t`).
    for log in ["/etc/nginx/conf.d/zz.conf", "/etc/nginx/conf.d/serin.conf"] {
        let text = MINIMAL.replace(
                "traffic:\n",
                &format!("traffic:\n  provider: nginx\n  nginx: {{include: /etc/nginx/conf.d/serin.conf, accessLog: {log}}}\n"),
            );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|l| l.contains("traffic.nginx.accessLog: expected a log file of its own")),
            "{p:?}"
        );
    }
    let text = "name: a\nstable: {version: v1}\ncanary: {version: v2}\ntraffic:\n  provider: gateway-api\n  kubernetes: {namespace: shop, deployment: a}\n";
    let p = problems(text);
    assert!(
        p.iter().any(|l| l.contains("traffic.kubernetes.httpRoute")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.starts_with("r.yaml:5:3: analysis.prometheus: expected at least an address")),
        "{p:?}"
    );
    let ok = text.replace("deployment: a}", "deployment: a, httpRoute: a}")
        + "analysis:\n  prometheus: {address: http://127.0.0.1:9090}\n";
    let r = parse(&ok, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
    let prometheus = r.analysis.prometheus.clone().expect("prometheus");
    assert!(
        prometheus.requests.contains("http_requests_total"),
        "ready-made: {prometheus:?}"
    );
    assert!(prometheus.latency_buckets.is_some());
    let k = r.traffic.kubernetes.expect("kubernetes");
    assert_eq!(k.service, "a");
    assert!(k.scale_with_weight);
    // Outside Kubernetes there are no ready-made queries.
    let text = format!("{MINIMAL}analysis:\n  prometheus: {{address: http://127.0.0.1:9090}}\n");
    assert!(problems(&text)[0].contains("expected both requests and errors"));
}

#[test]
fn custom_metrics_need_prometheus() {
    let text = format!(
        "{MINIMAL}analysis:\n  custom:\n    - {{name: checkout, numerator: a, denominator: b, direction: higherIsBetter}}\n"
    );
    assert!(problems(&text)[0].contains("analysis.prometheus"));
}

#[test]
fn custom_metric_names_are_readable_and_distinct_whatever_their_case() {
    let with = |names: &[&str]| {
        let mut text = format!(
            "{MINIMAL}analysis:\n  prometheus: {{address: http://127.0.0.1:9090, requests: r, errors: e}}\n  custom:\n"
        );
        for n in names {
            text.push_str(&format!(
                "    - {{name: \"{n}\", numerator: a, denominator: b, direction: higherIsBetter}}\n"
            ));
        }
        text
    };
    assert!(parse(&with(&["checkout conversion", "p99 (ms)"]), "r.yaml").is_ok());
    for (names, expected) in [
        (
            &["sign\u{202e}ups"][..],
            "expected a name of printable ASCII",
        ),
        (&[" padded"][..], "expected a name of printable ASCII"),
        (&["two  spaces"][..], "expected a name of printable ASCII"),
        (&[""][..], "expected a name of printable ASCII"),
        (&["Signups", "signups"][..], "got `signups` again"),
    ] {
        let p = problems(&with(names));
        assert!(p.iter().any(|l| l.contains(expected)), "{names:?}: {p:?}");
    }
}

#[test]
fn every_example_file_reads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            read(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 5, "{n} examples");
}

#[test]
fn json_is_read_too() {
    let text = r#"{"name":"a","stable":{"version":"v1","upstream":"http://127.0.0.1:1"},"canary":{"version":"v2","upstream":"http://127.0.0.1:2"},"traffic":{"listen":"127.0.0.1:0"},"steps":[{"setWeight":50}]}"#;
    let r = parse(text, "body").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.steps,
        vec![Step::SetWeight(Weight::from_percent(50.0).expect("w"))]
    );
}

#[test]
fn tags_are_checked() {
    assert!(valid_tag("v1.2.0"));
    assert!(valid_tag("_x-1"));
    assert!(!valid_tag(""));
    assert!(!valid_tag("-x"));
    assert!(!valid_tag("v1/2"));
    assert!(!valid_tag(&"a".repeat(129)));
}

#[test]
fn a_value_the_judge_refuses_is_a_problem_at_the_analysis_section() {
    // The net under the section's own checks: whatever the judge would
    // refuse when the rollout starts is refused with the file, at a place.
    let at: serde_saphyr::Spanned<String> =
        serde_saphyr::from_str("\n  analysis").expect("a scalar");
    let mut check = Checker::default();
    let good = serin_analysis::Config::default();
    assert!(check.judge_accepts(&good, &at.referenced));
    let bad = serin_analysis::Config {
        confidence: 2.0,
        ..good
    };
    assert!(!check.judge_accepts(&bad, &at.referenced));
    assert_eq!(check.problems.len(), 1);
    let p = &check.problems[0];
    assert_eq!((p.line, p.column), (2, 3));
    assert!(
        p.message
            .starts_with("analysis.statistics.confidence: got 2"),
        "{p:?}"
    );
}

#[test]
fn kubernetes_names_follow_each_objects_own_rule() {
    let file = |k: &str| {
        format!(
            "name: a\nstable: {{version: v1}}\ncanary: {{version: v2}}\ntraffic:\n  provider: gateway-api\n  kubernetes: {{namespace: shop, {k}}}\nanalysis:\n  prometheus: {{address: http://127.0.0.1:9090}}\n"
        )
    };
    let ok = |k: &str| {
        if let Err(e) = parse(&file(k), "r.yaml") {
            panic!("{k}: {e}");
        }
    };
    let refused = |k: &str, expected: &str| {
        let p = problems(&file(k));
        assert!(p.iter().any(|l| l.contains(expected)), "{k}: {p:?}");
    };
    // Routing objects are DNS subdomains: dots allowed.
    ok("deployment: web, httpRoute: web.shop.v2");
    refused(
        "deployment: web, httpRoute: web..v2",
        "traffic.kubernetes.httpRoute: expected a name of lowercase letters, digits, `-` and `.`",
    );
    // A Service starts with a letter; so does a Deployment that names it.
    refused(
        "deployment: 1web, httpRoute: r",
        "traffic.kubernetes.deployment: expected a Service name: lowercase letters, digits and `-`, starting with a letter and ending with a letter or digit, at most 56 characters (it names the Service too, as traffic.kubernetes.service is not given), got `1web`",
    );
    ok("deployment: 1web, service: web, httpRoute: r");
    refused(
        "deployment: web, service: 1web, httpRoute: r",
        "traffic.kubernetes.service: expected a Service name",
    );
    refused(
        "deployment: web.v2, service: web, httpRoute: r",
        "traffic.kubernetes.deployment: expected a name of lowercase letters, digits and `-` (a letter or digit at each end), at most 56 characters, got `web.v2`",
    );
}

#[test]
fn a_missing_deployment_is_reported_with_the_files_other_problems() {
    let text = "name: a\nstable: {version: v1}\ncanary: {version: v2}\ntraffic:\n  provider: gateway-api\n  kubernetes: {namespace: Shop, httpRoute: r}\nanalysis:\n  statistics: {confidence: 2}\n  prometheus: {address: http://127.0.0.1:9090}\n";
    let p = problems(text);
    for expected in [
        "r.yaml:6:15: traffic.kubernetes.deployment: expected the stable Deployment's name",
        "traffic.kubernetes.namespace: expected a name of lowercase letters",
        "analysis.statistics.confidence",
    ] {
        assert!(p.iter().any(|l| l.contains(expected)), "{expected}: {p:?}");
    }
}

#[test]
fn a_file_without_a_name_is_told_with_its_other_problems() {
    let text = MINIMAL
        .replace("name: checkout\n", "")
        .replace("127.0.0.1:8080", "nowhere");
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(
        p[0],
        "r.yaml:1:1: name: expected the rollout's name (1 to 63 characters of a-z, 0-9 and -)"
    );
    assert!(
        p[1].contains("traffic.listen: expected an address"),
        "{p:?}"
    );
}

#[test]
fn advisory_mode_and_advisory_checks_are_read() {
    let r = parse(MINIMAL, "r.yaml").unwrap();
    assert_eq!(r.analysis.mode, Mode::Enforce);
    assert!(r.analysis.advisory_checks.is_empty());
    assert!(!r.plan().advisory);
    let r = parse(&format!("{MINIMAL}analysis:\n  mode: enforce\n"), "r.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!r.plan().advisory);
    let r = parse(&format!("{MINIMAL}analysis:\n  mode: advisory\n"), "r.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.analysis.mode, Mode::Advisory);
    assert!(r.plan().advisory);
    // Per check: the judge's metric names, in the section's order.
    let text = format!(
        "{MINIMAL}analysis:\n  errorRate: {{ max: 5%, advisory: true }}\n  latencyP50: {{ max: 100ms, advisory: false }}\n  latencyP99: {{ max: 2s, advisory: true }}\n  clientErrorRate: {{ advisory: true }}\n  prometheus: {{address: http://127.0.0.1:9090, requests: r, errors: e, latencyBuckets: b, clientErrors: c}}\n  custom:\n    - {{name: signups, numerator: a, denominator: b, direction: higherIsBetter, advisory: true}}\n    - {{name: carts, numerator: a, denominator: b, direction: higherIsBetter}}\n"
    );
    let r = parse(&text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.analysis.mode, Mode::Enforce);
    assert_eq!(
        r.analysis.advisory_checks,
        [
            "error-rate",
            "latency-p99",
            "custom/signups",
            "client-error-rate"
        ]
    );
    // A mode serin does not know, and advisory on a check that is off,
    // are refused at their place.
    let p = problems(&format!("{MINIMAL}analysis:\n  mode: dry-run\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  clientErrorRate: {{ maxRatioToStable: off, advisory: true }}\n"
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("r.yaml:11:")
            && p[0].contains("clientErrorRate.advisory: expected a check to make advisory"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{MINIMAL}analysis:\n  errorRate: {{ max: 5%, advisory: yes please }}\n"
    ));
    assert!(p[0].starts_with("r.yaml:11:"), "{p:?}");
    // A section written replaces the defaults: advisory alone is no check.
    for (section, field) in [
        ("errorRate: { advisory: true }", "errorRate"),
        ("latencyP95: { advisory: true }", "latencyP95"),
    ] {
        let p = problems(&format!("{MINIMAL}analysis:\n  {section}\n"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("r.yaml:11:")
                && p[0].contains(&format!(
                    "analysis.{field}.advisory: expected a check to make advisory, but {field} has neither max nor maxRatioToStable"
                )),
            "{p:?}"
        );
    }
    let r = parse(
        &format!("{MINIMAL}analysis:\n  errorRate: {{ maxRatioToStable: 2, advisory: true }}\n"),
        "r.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.analysis.advisory_checks, ["error-rate"]);
}

#[test]
fn an_early_pause_needs_a_duration_and_the_sequential_method() {
    let r = parse(
        &with_steps("  - setWeight: 10\n  - pause: { duration: 10m, early: true }\n  - setWeight: 50\n  - pause: { duration: 1m, early: false }\n  - pause: { duration: 1m }\n"),
        "r.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.steps[1..],
        [
            Step::PauseFor {
                duration: Duration::from_secs(600),
                early: true
            },
            Step::SetWeight(Weight::from_percent(50.0).expect("w")),
            Step::PauseFor {
                duration: Duration::from_secs(60),
                early: false
            },
            Step::PauseFor {
                duration: Duration::from_secs(60),
                early: false
            },
        ]
    );
    for bad in [
        "{ early: true }",
        "{ early: false }",
        "{ until: promoted, early: true }",
    ] {
        let p = problems(&with_steps(&format!(
            "  - setWeight: 10\n  - pause: {bad}\n"
        )));
        assert_eq!(p.len(), 1, "{bad}: {p:?}");
        assert!(
            p[0].starts_with("r.yaml:12:") && p[0].contains("pause.early: expected a duration"),
            "{bad}: {p:?}"
        );
    }
    // Only the sequential test can show a canary within its limits.
    for method in ["fixed", "none"] {
        let text = with_steps(
            "  - setWeight: 10\n  - pause: { duration: 10m, early: true }\n  - pause: { duration: 1m, early: true }\n",
        ) + &format!("analysis:\n  statistics: {{ method: {method} }}\n");
        let p = problems(&text);
        assert_eq!(p.len(), 2, "{method}: {p:?}");
        assert!(
            p[0].starts_with("r.yaml:12:")
                && p[1].starts_with("r.yaml:13:")
                && p[0].contains(&format!(
                    "pause.early: expected analysis.statistics.method sequential (early success rests on the sequential test; with method {method} a pause never ends early)"
                )),
            "{method}: {p:?}"
        );
    }
    let text = with_steps("  - setWeight: 10\n  - pause: { duration: 10m, early: true }\n")
        + "analysis:\n  statistics: { method: sequential }\n";
    assert!(parse(&text, "r.yaml").is_ok());
}

#[test]
fn a_baseline_is_read_where_the_provider_can_split_three_ways() {
    let r = parse(MINIMAL, "r.yaml").unwrap();
    assert_eq!(r.baseline, None);
    let text = format!("{MINIMAL}baseline:\n  upstream: http://127.0.0.1:9003\n");
    let r = parse(&text, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.baseline.as_deref(), Some("http://127.0.0.1:9003"));
    let nginx = MINIMAL.replace(
        "traffic:\n",
        "traffic:\n  provider: nginx\n  nginx: {include: /tmp/serin.conf, accessLog: /tmp/serin.log}\n",
    ) + "baseline: { upstream: http://127.0.0.1:9003 }\n";
    let r = parse(&nginx, "r.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.baseline.as_deref(), Some("http://127.0.0.1:9003"));

    for (baseline, expected) in [
        (
            "{}",
            "r.yaml:10:11: baseline.upstream: expected http://host:port of a fresh instance of the stable version (required by provider builtin)",
        ),
        (
            "{ upstream: http://127.0.0.1:9001 }",
            "r.yaml:10:23: baseline.upstream: expected a server of its own, got `http://127.0.0.1:9001`, the stable's",
        ),
        ("{ upstream: http://localhost:9002/ }", "the canary's"),
        ("{ upstream: ftp://x }", "r.yaml:10:23: baseline.upstream: "),
        (
            "{ upstream: http://127.0.0.1:9003, replicas: 2 }",
            "r.yaml:10:",
        ),
    ] {
        let p = problems(&format!("{MINIMAL}baseline: {baseline}\n"));
        assert_eq!(p.len(), 1, "{baseline}: {p:?}");
        assert!(p[0].contains(expected), "{baseline}: {p:?}");
    }
    // With Prometheus, `{{version}}` is `baseline` too (the source queries it).
    let r = parse(
        &format!(
            "{MINIMAL}analysis:\n  prometheus: {{address: http://127.0.0.1:9090, requests: 'r{{v=\"{{{{version}}}}\"}}', errors: 'e{{v=\"{{{{version}}}}\"}}'}}\nbaseline: {{ upstream: http://127.0.0.1:9003 }}\n"
        ),
        "r.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.analysis.judge.compare_with,
        serin_analysis::Reference::Baseline
    );
    // Kubernetes: nginx-ingress never (one canary share); Istio and Gateway
    // API run the baseline themselves, `baseline: {}`, no upstream.
    let kube = |provider: &str, route: &str, baseline: &str| {
        format!(
            "name: a\nstable: {{version: v1}}\ncanary: {{version: v2}}\ntraffic:\n  provider: {provider}\n  kubernetes: {{namespace: shop, deployment: a, {route}}}\nanalysis:\n  prometheus: {{address: http://127.0.0.1:9090}}\nbaseline: {baseline}\n"
        )
    };
    for baseline in ["{}", "{ upstream: http://127.0.0.1:9003 }"] {
        let p = problems(&kube("nginx-ingress", "ingress: a", baseline));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "r.yaml:9:11: baseline: provider nginx-ingress cannot split traffic three ways"
            ),
            "{p:?}"
        );
    }
    for (provider, route) in [
        ("istio", "virtualService: a"),
        ("gateway-api", "httpRoute: a"),
    ] {
        let r = parse(&kube(provider, route, "{}"), "r.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.baseline.as_deref(), Some("http://a-baseline.shop.svc:80"));
        let t = r.traffic.kubernetes.as_ref().expect("a Kubernetes target");
        assert!(t.baseline, "{provider}");
        assert_eq!(
            r.analysis.judge.compare_with,
            serin_analysis::Reference::Baseline
        );
        // The ready-made queries tell the baseline apart.
        let q = &r.analysis.prometheus.as_ref().expect("queries").requests;
        assert!(q.contains("a-baseline"), "{provider}: {q}");
        let without = parse(
            &kube(provider, route, "{}").replace("baseline: {}\n", ""),
            "r.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!without.traffic.kubernetes.as_ref().unwrap().baseline);
        assert!(
            !without
                .analysis
                .prometheus
                .as_ref()
                .unwrap()
                .requests
                .contains("baseline"),
            "{provider}"
        );
        let p = problems(&kube(
            provider,
            route,
            "{ upstream: http://127.0.0.1:9003 }",
        ));
        assert_eq!(p.len(), 1, "{provider}: {p:?}");
        assert!(
            p[0].starts_with(&format!(
                "r.yaml:9:23: baseline.upstream: provider {provider} runs the baseline itself"
            )),
            "{provider}: {p:?}"
        );
    }
}

#[test]
fn a_file_past_the_yaml_readers_limits_is_named_plainly() {
    let mut huge = format!("{MINIMAL}steps:\n");
    for _ in 0..130_000 {
        huge.push_str("  - setWeight: 5\n");
    }
    let p = problems(&huge);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("too large for a rollout file") && !p[0].contains("budget"),
        "{p:?}"
    );
}
