//! The recorder's figures in the Prometheus text format (version 0.0.4), under
//! the names the SPEC fixes.
//!
//! One page may hold many rollouts (the daemon runs one proxy per rollout), and
//! the format wants each metric family's lines together under one `# TYPE`, so
//! [`encode`] takes every rollout at once and writes family by family.

use std::fmt::Write;

use crate::recorder::{RecorderSnapshot, StatusClass, VersionSnapshot};
use crate::weight::{Version, Weight};

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (`le`) of `serin_request_duration_seconds`, as written and in
/// microseconds. Counts come from the HDR histogram, whose buckets are within
/// 1 % of these bounds: a request is counted under the bound whose HDR bucket
/// holds it.
pub const LATENCY_BOUNDS: [(&str, u64); 18] = [
    ("0.0001", 100),
    ("0.00025", 250),
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
    ("10", 10_000_000),
    ("30", 30_000_000),
    ("60", 60_000_000),
];

/// The `code` label of requests whose client gave up waiting for the
/// version's response head or stalled body ([`VersionSnapshot::timed_out`]).
const TIMEOUT: &str = "timeout";

/// One rollout's figures, as the page shows them.
#[derive(Debug, Clone, Copy)]
pub struct RolloutMetrics<'a> {
    /// The `rollout` label value (any text; it is escaped).
    pub rollout: &'a str,
    /// The canary weight now.
    pub weight: Weight,
    /// The recorder's figures.
    pub snapshot: &'a RecorderSnapshot,
}

/// Appends the metrics of every rollout in `rollouts` to `out`:
///
/// `version` is `stable`, `canary`, and `baseline` for a rollout whose proxy
/// has had a baseline ([`RecorderSnapshot::baseline`]); without one, no
/// `baseline` series is written.
///
/// - `serin_requests_total{rollout,version,code}` counter, `code` = `1xx`..`5xx`,
///   or `timeout`: the client gave up before the version sent its response
///   head, or while its body had been stalled for [`crate::SILENT_UPSTREAM`]
///   (an error of the version, like `5xx`; its latency is the time waited)
/// - `serin_requests_cancelled_total{rollout,version}` counter: the client went
///   away while the response body flowed, or failed sending its body; in no class
///   and no latency, against neither version
/// - `serin_requests_carried_over_total{rollout,version}` counter: requests
///   routed in an earlier run that ended after a later run began
///   ([`VersionSnapshot::carried_over`]); in no other family, so that no run
///   is credited with another's requests
/// - `serin_requests_in_flight{rollout,version}` gauge
/// - `serin_request_duration_seconds{rollout,version}` histogram
/// - `serin_canary_weight{rollout}` gauge, in percent
pub fn encode(rollouts: &[RolloutMetrics<'_>], out: &mut String) {
    family(
        out,
        "serin_requests_total",
        "counter",
        "Requests answered since the proxy started, by version and status class, except those carried over from one run into the next (serin_requests_carried_over_total); code=\"timeout\": the client gave up waiting for the version's response head, or on a response body the version had stalled for a second (an error).",
    );
    for r in rollouts {
        for (v, s) in versions(r.snapshot) {
            for class in StatusClass::ALL {
                line(
                    out,
                    "serin_requests_total",
                    r.rollout,
                    v,
                    &[("code", class.label())],
                    s.requests_of(class),
                );
            }
            line(
                out,
                "serin_requests_total",
                r.rollout,
                v,
                &[("code", TIMEOUT)],
                s.timed_out,
            );
        }
    }

    family(
        out,
        "serin_requests_cancelled_total",
        "counter",
        "Requests whose client went away while the response body flowed, or failed sending its body, since the proxy started; counted against neither version.",
    );
    for_each_version(rollouts, |r, v, s| {
        line(
            out,
            "serin_requests_cancelled_total",
            r,
            v,
            &[],
            s.cancelled,
        );
    });

    family(
        out,
        "serin_requests_carried_over_total",
        "counter",
        "Requests routed in one run that ended (answered, timed out or cancelled) after the next run began, since the proxy started; counted in no other family.",
    );
    for_each_version(rollouts, |r, v, s| {
        line(
            out,
            "serin_requests_carried_over_total",
            r,
            v,
            &[],
            s.carried_over,
        );
    });

    family(
        out,
        "serin_requests_in_flight",
        "gauge",
        "Requests started and not yet fully answered.",
    );
    for_each_version(rollouts, |r, v, s| {
        line(out, "serin_requests_in_flight", r, v, &[], s.in_flight);
    });

    family(
        out,
        "serin_request_duration_seconds",
        "histogram",
        "Time from request received to response fully sent, since the proxy started, except requests carried over into a later run.",
    );
    for_each_version(rollouts, |r, v, s| histogram(out, r, v, s));

    family(
        out,
        "serin_canary_weight",
        "gauge",
        "Percentage of requests sent to the canary.",
    );
    for r in rollouts {
        out.push_str("serin_canary_weight{rollout=\"");
        escape(out, r.rollout);
        let _ = writeln!(out, "\"}} {}", r.weight);
    }
}

fn for_each_version<'a>(
    rollouts: &[RolloutMetrics<'a>],
    mut f: impl FnMut(&'a str, Version, &'a VersionSnapshot),
) {
    for r in rollouts {
        for (v, s) in versions(r.snapshot) {
            f(r.rollout, v, s);
        }
    }
}

/// The versions the snapshot has figures of: stable and canary, and the
/// baseline once one has been in force.
fn versions(s: &RecorderSnapshot) -> impl Iterator<Item = (Version, &VersionSnapshot)> {
    Version::ALL
        .into_iter()
        .filter_map(|v| s.version(v).map(|figures| (v, figures)))
}

fn histogram(out: &mut String, rollout: &str, v: Version, s: &VersionSnapshot) {
    let name = "serin_request_duration_seconds_bucket";
    for (le, micros) in LATENCY_BOUNDS {
        let n = s.latency.count_between(0, micros);
        line(out, name, rollout, v, &[("le", le)], n);
    }
    let count = s.latency.len();
    line(out, name, rollout, v, &[("le", "+Inf")], count);
    labels(out, "serin_request_duration_seconds_sum", rollout, v, &[]);
    let _ = writeln!(out, " {}", s.latency_sum.as_secs_f64());
    line(
        out,
        "serin_request_duration_seconds_count",
        rollout,
        v,
        &[],
        count,
    );
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, rollout: &str, v: Version, extra: &[(&str, &str)], n: u64) {
    labels(out, name, rollout, v, extra);
    let _ = writeln!(out, " {n}");
}

fn labels(out: &mut String, name: &str, rollout: &str, v: Version, extra: &[(&str, &str)]) {
    out.push_str(name);
    out.push_str("{rollout=\"");
    escape(out, rollout);
    out.push_str("\",version=\"");
    out.push_str(v.as_str());
    out.push('"');
    for (k, val) in extra {
        let _ = write!(out, ",{k}=\"{val}\"");
    }
    out.push('}');
}

/// Label values escape `\`, `"` and newline; nothing else needs it.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;
    use std::time::Duration;

    #[test]
    fn one_type_line_per_family_across_rollouts() {
        let a = Recorder::new();
        a.record(
            Version::Canary,
            StatusClass::ServerError,
            Duration::from_millis(7),
        );
        a.shard(0)
            .timed_out(0, Version::Stable, Duration::from_millis(2500), false);
        // A canary request of run 0 ending in run 1: carried over only.
        let late = a.shard(0);
        a.begin_run();
        late.record(
            0,
            Version::Canary,
            StatusClass::ServerError,
            Duration::from_millis(9),
            false,
        );
        let b = Recorder::new();
        let (sa, sb) = (a.snapshot(), b.snapshot());
        let mut out = String::new();
        encode(
            &[
                RolloutMetrics {
                    rollout: "a",
                    weight: Weight::from_hundredths(525).unwrap(),
                    snapshot: &sa,
                },
                RolloutMetrics {
                    rollout: "we\"ird\\\n",
                    weight: Weight::ZERO,
                    snapshot: &sb,
                },
            ],
            &mut out,
        );
        assert_eq!(
            out.matches("# TYPE serin_requests_total counter").count(),
            1
        );
        assert!(
            out.contains("serin_requests_total{rollout=\"a\",version=\"canary\",code=\"5xx\"} 1\n")
        );
        assert!(out.contains(
            "serin_requests_total{rollout=\"a\",version=\"stable\",code=\"timeout\"} 1\n"
        ));
        assert!(out.contains(
            "serin_requests_total{rollout=\"a\",version=\"canary\",code=\"timeout\"} 0\n"
        ));
        assert!(out.contains(
            "serin_request_duration_seconds_count{rollout=\"a\",version=\"stable\"} 1\n"
        ));
        assert!(
            out.contains("serin_requests_carried_over_total{rollout=\"a\",version=\"canary\"} 1\n")
        );
        assert!(
            out.contains("serin_requests_carried_over_total{rollout=\"a\",version=\"stable\"} 0\n")
        );
        assert!(out.contains("serin_canary_weight{rollout=\"a\"} 5.25\n"));
        assert!(out.contains("serin_canary_weight{rollout=\"we\\\"ird\\\\\\n\"} 0\n"));
        assert!(out.contains(
            "serin_request_duration_seconds_bucket{rollout=\"a\",version=\"canary\",le=\"0.005\"} 0\n"
        ));
        assert!(out.contains(
            "serin_request_duration_seconds_bucket{rollout=\"a\",version=\"canary\",le=\"0.01\"} 1\n"
        ));
        assert!(out.contains(
            "serin_request_duration_seconds_sum{rollout=\"a\",version=\"canary\"} 0.007\n"
        ));
        // Families are contiguous: once a family ends it never reappears.
        let mut seen = Vec::<String>::new();
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let fam = l
                .split('{')
                .next()
                .unwrap()
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_owned();
            if seen.last() != Some(&fam) {
                assert!(!seen.contains(&fam), "{fam} split");
                seen.push(fam);
            }
        }
    }
}
