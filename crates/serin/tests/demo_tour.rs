//! `serin demo`, the README's first command, end to end: the bad canary is
//! rolled back by the judge, the good one promoted, both reports written.

mod common;

use std::time::Duration;

use common::serin::{Proc, serin, text};

#[test]
fn the_tour_rolls_back_the_bad_canary_and_promotes_the_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cmd = serin();
    cmd.args(["demo", "--state-dir", &state.display().to_string()]);
    let o = Proc::spawn(cmd, true).wait_output(Duration::from_secs(120));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("v1.2.0: rolled-back"), "{out}");
    assert!(out.contains("v1.2.1: promoted"), "{out}");
    assert!(
        out.contains("verdict fail: canary error rate"),
        "the failing verdict carries its numbers: {out}"
    );
    for act in ["rolled-back", "promoted"] {
        let html = std::fs::read_to_string(state.join(format!("demo-{act}.html"))).unwrap();
        assert!(html.contains("<svg"), "{act} report has charts");
    }
}

/// Two tours in one state directory: four runs of `checkout`. Each report
/// covers exactly its own run: the second tour's promoted report shows the
/// good canary's run alone (its number, its own decisions and totals, no
/// trace of the bad canary's failing verdicts), and the history keeps all
/// four runs apart, newest last.
#[test]
fn a_second_tour_reports_only_its_own_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for tour in 1..=2 {
        let mut cmd = serin();
        cmd.args(["demo", "--state-dir", &state.display().to_string()]);
        let o = Proc::spawn(cmd, true).wait_output(Duration::from_secs(120));
        assert_eq!(o.status.code(), Some(0), "tour {tour}: {}", text(&o));
    }
    let html = std::fs::read_to_string(state.join("demo-promoted.html")).unwrap();
    assert!(
        html.contains("<title>serin report: checkout, run 4</title>"),
        "the promoted report is run 4's"
    );
    assert!(
        !html.contains("v1.2.0"),
        "nothing of the bad canary's runs in the good one's report"
    );
    assert!(
        !html.contains("class=\"v-fail\""),
        "no failing verdict in the promoted run"
    );
    assert!(
        html.contains("promoted (all steps completed)"),
        "its outcome"
    );
    // Its decisions: one `deployed`, one `started`, one `promoted`.
    for kind in ["deployed", "started", "promoted"] {
        assert_eq!(
            html.matches(&format!("<tr class=\"k-{kind}\">")).count(),
            1,
            "one {kind} decision in the run"
        );
    }
    let rows = html.matches("<tr class=\"k-").count();
    assert!(
        html.contains(&format!("<b>{rows}</b>")),
        "the decisions count ({rows}) is the run's"
    );
    let bad = std::fs::read_to_string(state.join("demo-rolled-back.html")).unwrap();
    assert!(bad.contains("<title>serin report: checkout, run 3</title>"));
    assert!(!bad.contains("v1.2.1"), "nothing of the good canary's run");
    assert!(bad.contains("rolled back by analysis"), "its typed outcome");
}
