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
