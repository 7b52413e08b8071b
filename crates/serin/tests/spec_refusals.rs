//! Rollout files serin refuses when it reads them: `serin run` exits 2,
//! naming the file, line and column and what was expected, and creates
//! nothing. Each case was read as valid (or refused without a place)
//! before these checks.

mod common;

use common::nginx::{free_port, local};
use common::rollout::Rollout;
use std::time::Duration;

use common::serin::{Proc, serin_run, text, write};

fn good() -> String {
    Rollout::new(
        "refused",
        local(free_port()),
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    )
    .steps("  - setWeight: 20\n  - pause: { duration: 1s }\n  - setWeight: 50\n  - pause: { duration: 1s }\n")
    .yaml()
}

#[test]
fn plans_and_limits_that_could_never_be_judged_are_refused_with_their_place() {
    let good = good();
    // The lines of `good()`: 11 steps, 12 setWeight: 20, 13 its pause,
    // 14 setWeight: 50, 18 minRequests, 19 errorRate.
    let cases: Vec<(String, &str, &str)> = vec![
        (
            good.replace("minRequests: 20", "minRequests: 0"),
            ":18:16:",
            "analysis.minRequests: expected at least 1",
        ),
        (
            good.replace("  - setWeight: 50", "  - setWeight: 5"),
            ":14:16:",
            "setWeight: 5 lowers the canary weight from 20 %",
        ),
        (
            good.replace("  - setWeight: 50", "  - lowerWeight: 0"),
            ":14:18:",
            "lowerWeight: 0 is the last weight",
        ),
        (
            good.replace("  - setWeight: 20", "  - setWeight: 0")
                .replace("  - setWeight: 50", "  - setWeight: 0"),
            ":12:3:",
            "expected a setWeight above 0 before the end",
        ),
        (
            good.replace("{ max: 5% }", "{ max: 0% }"),
            ":19:",
            "analysis.errorRate.max: expected a percentage above 0%",
        ),
        (
            good.replace("  - setWeight: 50", "  - setWeight: 99.999999999999999999"),
            ":14:16:",
            "at most two decimals",
        ),
        (
            good.replace("duration: 1s", "duration: 1"),
            ":13:",
            "a number without its unit",
        ),
        (
            {
                let a = good.find("steps:").unwrap();
                let b = good.find("analysis:").unwrap();
                format!("{}steps:\n{}", &good[..a], &good[b..])
            },
            ":11:",
            "expected at least one step",
        ),
    ];
    for (i, (yaml, place, expected)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "bad.yaml", yaml);
        // Bounded: a file read as valid would start a rollout and wait.
        let o =
            Proc::spawn(serin_run(&file, dir.path()), true).wait_output(Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(2), "case {i}: {}\n{yaml}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("bad.yaml{place}")),
            "case {i}: names the place {place}: {err}"
        );
        assert!(err.contains(expected), "case {i}: says `{expected}`: {err}");
        assert!(
            !dir.path().join("state").exists(),
            "case {i}: nothing created"
        );
    }
}

#[test]
fn kubernetes_and_judge_problems_come_together_each_with_its_place() {
    // Before: the judge's problem alone; the Kubernetes ones were found
    // only after the file was read, without a place, the first one only.
    let yaml = "\
name: checkout
stable:
  version: v1.1.0
canary:
  version: v1/2
traffic:
  provider: gateway-api
  kubernetes:
    namespace: shop
    deployment: checkout
    service: Checkout
    httpRoute: checkout
analysis:
  statistics: { confidence: 1.5 }
  prometheus:
    address: http://127.0.0.1:9
";
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", yaml);
    // Bounded: a file read as valid would try to reach a cluster.
    let o = Proc::spawn(serin_run(&file, dir.path()), true).wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for (place, expected) in [
        (":5:12:", "canary.version: `v1/2` cannot be an image tag"),
        (
            ":11:14:",
            "traffic.kubernetes.service: expected a Service name: lowercase letters",
        ),
        (
            ":14:29:",
            "analysis.statistics.confidence: expected a number between 0.5 and 1",
        ),
    ] {
        assert!(
            err.contains(&format!("bad.yaml{place} {expected}")),
            "says `{expected}` at {place}: {err}"
        );
    }
    assert!(!dir.path().join("state").exists(), "nothing created");
}

#[test]
fn a_route_serin_would_own_is_refused_field_by_field_with_its_place() {
    // `httpRoute` as a mapping: the HTTPRoute serin creates. Each problem
    // of it comes with the file's others, at its place; before, a mapping
    // there was refused as not a name.
    let yaml = "\
name: checkout
stable:
  version: v1.1.0
canary:
  version: v1.2.0
traffic:
  provider: gateway-api
  kubernetes:
    namespace: shop
    deployment: checkout
    httpRoute:
      parentRefs:
        - { sectionName: https }
      hostnames: [checkout.example.com, Shop.Example.com]
      port: 0
analysis:
  prometheus:
    address: http://127.0.0.1:9
";
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "bad.yaml", yaml);
    // Bounded: a file read as valid would try to reach a cluster.
    let o = Proc::spawn(serin_run(&file, dir.path()), true).wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for (place, expected) in [
        (
            ":13:11:",
            "traffic.kubernetes.httpRoute.parentRefs[0].name: expected the name of a Gateway",
        ),
        (
            ":14:41:",
            "traffic.kubernetes.httpRoute.hostnames[1]: expected a host name like checkout.example.com",
        ),
        (
            ":15:13:",
            "traffic.kubernetes.httpRoute.port: expected the Service's port, 1 to 65535, got 0",
        ),
    ] {
        assert!(
            err.contains(&format!("bad.yaml{place} {expected}")),
            "says `{expected}` at {place}: {err}"
        );
    }
    assert!(!dir.path().join("state").exists(), "nothing created");

    // An unknown key is refused where it is written, as elsewhere.
    let typo = yaml
        .replace("      hostnames:", "      hostname:")
        .replace("        - { sectionName: https }", "        - { name: gw }")
        .replace("      port: 0\n", "");
    let file = write(dir.path(), "typo.yaml", &typo);
    let o = Proc::spawn(serin_run(&file, dir.path()), true).wait_output(Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("typo.yaml:14:7: unknown field `hostname`"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing created");
}

/// A file without an end (`/dev/zero`) is refused after a bounded read by
/// `serin run` and `serin init`, not read until memory runs out (an outside
/// tester saw 4.7 GB in 2 s). Fails before this change (the read never
/// ends).
#[test]
fn an_endless_rollout_file_is_refused_after_a_bounded_read() {
    for args in [
        vec!["run", "/dev/zero", "--state-dir", "/nonexistent/never-used"],
        vec!["init", "/dev/zero", "--api", "http://127.0.0.1:1"],
    ] {
        let mut cmd = common::serin::serin();
        cmd.args(&args);
        let o =
            common::serin::Proc::spawn(cmd, true).wait_output(std::time::Duration::from_secs(30));
        let said = common::serin::text(&o);
        assert_eq!(o.status.code(), Some(2), "serin {args:?}: {said}");
        assert!(
            said.contains("/dev/zero: larger than 1024 KiB"),
            "serin {args:?}: {said}"
        );
    }
}
