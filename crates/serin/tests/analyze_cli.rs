//! `serin analyze` as a CI step would run it: exit 0 on a healthy recording,
//! 3 with the time of the first `fail`, 2 on bad input with the line named.

mod common;

use common::serin::{serin, text, write};

fn line(t: u64, stable: (u64, u64), canary: (u64, u64)) -> String {
    let le = "[5, 10, 25, 50, 100, 250, 500, 1000]";
    let counts = |n: u64| {
        let c: Vec<u64> = [0.1, 0.4, 0.8, 0.95, 1.0, 1.0, 1.0, 1.0]
            .iter()
            .map(|f| (n as f64 * f) as u64)
            .collect();
        format!("{c:?}")
    };
    format!(
        r#"{{"t": {t}.0, "stable": {{"requests": {}, "errors": {}, "latencyMs": {{"le": {le}, "counts": {}}}}}, "canary": {{"requests": {}, "errors": {}, "latencyMs": {{"le": {le}, "counts": {}}}}}}}"#,
        stable.0,
        stable.1,
        counts(stable.0),
        canary.0,
        canary.1,
        counts(canary.0)
    ) + "\n"
}

const CONFIG: &str = "name: a\nstable: {version: v1, upstream: 'http://127.0.0.1:1'}\ncanary: {version: v2, upstream: 'http://127.0.0.1:2'}\ntraffic: {listen: '127.0.0.1:0'}\nanalysis:\n  minRequests: 50\n";

fn analyze(dir: &std::path::Path, lines: &str) -> std::process::Output {
    let data = write(dir, "metrics.jsonl", lines);
    let config = write(dir, "rollout.yaml", CONFIG);
    serin()
        .args([
            "analyze",
            &data.display().to_string(),
            "--config",
            &config.display().to_string(),
            "-o",
            "json",
        ])
        .output()
        .unwrap()
}

#[test]
fn healthy_recording_passes_and_a_bad_one_fails_with_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let good: String = (1..=40)
        .map(|i| line(i, (i * 190, i), (i * 10, 0)))
        .collect();
    let o = analyze(dir.path(), &good);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "pass", "{v}");
    assert!(v["at"].is_null());
    assert_eq!(v["verdicts"].as_array().unwrap().len(), 40);

    let bad: String = (1..=40)
        .map(|i| line(i, (i * 190, i), (i * 10, i * 3)))
        .collect();
    let o = analyze(dir.path(), &bad);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "fail", "{v}");
    assert!(
        v["at"].as_f64().unwrap() >= 5.0,
        "not before minRequests: {v}"
    );
    assert!(v["reason"].as_str().unwrap().contains("error rate"), "{v}");
}

#[test]
fn bad_input_names_the_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    for (lines, expect) in [
        (
            format!("{}not json\n", line(1, (100, 1), (10, 0))),
            "metrics.jsonl:2: expected",
        ),
        (
            format!(
                "{}{}",
                line(1, (100, 1), (10, 0)),
                line(2, (90, 1), (20, 0))
            ),
            "metrics.jsonl:2: ",
        ),
        (String::new(), "no observations"),
    ] {
        let o = analyze(dir.path(), &lines);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "`{expect}` in {err}");
    }
}

/// An input without line ends (`/dev/zero`) is refused after a bounded
/// read, not read until memory runs out (an outside breaker saw exit 134
/// under a memory limit).
#[test]
fn an_endless_line_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "rollout.yaml", CONFIG);
    let mut cmd = serin();
    cmd.args([
        "analyze",
        "/dev/zero",
        "--config",
        &config.display().to_string(),
    ]);
    let o = common::serin::Proc::spawn(cmd, true).wait_output(std::time::Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("/dev/zero:1: longer than 1024 KiB"),
        "{}",
        text(&o)
    );
}

/// `serin analyze … | head -1` in a CI script with `pipefail`: the verdict is
/// the exit code, so a reader that went away must not turn a fail into 0
/// (it did: the write panicked and the closed-pipe hook exited 0).
#[test]
fn a_closed_output_keeps_the_verdicts_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let bad: String = (1..=40)
        .map(|i| line(i, (i * 190, i), (i * 10, i * 3)))
        .collect();
    let data = write(dir.path(), "metrics.jsonl", &bad);
    let config = write(dir.path(), "rollout.yaml", CONFIG);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // every write to stdout now fails with a broken pipe
    let o = serin()
        .args([
            "analyze",
            &data.display().to_string(),
            "--config",
            &config.display().to_string(),
        ])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}
