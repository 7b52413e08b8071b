//! Implausible metrics from a real Prometheus are missing data, not traffic.
//!
//! Debian's `prometheus` scrapes an exporter the test serves: a canary
//! failing 30 % of its requests, before and after one moment at which its
//! request counter jumps by 10^12 (or reads 1e30, a saturated counter).
//! Taken as traffic, that jump would dilute the 30 % errors to nothing and
//! the canary would pass and be promoted. `serin run` must instead call
//! those answers no data, naming the counter, leave them out, and roll the
//! canary back on its errors.
//!
//! The test drives the moments itself, never by sleeping: the counters stay
//! still (an idle service, which the judge calls not enough data) until
//! serin has judged once, so the stage's base is sound; then they move, with
//! the jump, until Prometheus holds it and serin has judged twice more on
//! it; then the jump goes and the counters go on moving.

mod common;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::exporter::Exporter;
use common::nginx::{free_port, local};
use common::prometheus::Prometheus;
use common::serin::{Proc, demo_app, serin_run, wait_for_port, write};

/// What the exporter's counters do.
#[derive(Clone, Copy)]
enum Counters {
    /// Still: stable 1 000 requests, canary 100 of which 30 failed.
    Idle,
    /// Moving since `since`: stable 200 requests a second without errors,
    /// canary 100 a second of which 30 % fail; the canary's request counter
    /// reads `jump` more than it counted.
    Moving { since: Instant, jump: f64 },
}

impl Counters {
    /// The exposition text now.
    fn text(self) -> String {
        let (k, jump) = match self {
            Counters::Idle => (0.0, 0.0),
            // Ten ticks a second; whole counts throughout.
            Counters::Moving { since, jump } => {
                ((since.elapsed().as_secs_f64() * 10.0).floor(), jump)
            }
        };
        let stable = 1000.0 + 20.0 * k;
        let (canary, canary_errors) = (100.0 + 10.0 * k, 30.0 + 3.0 * k);
        format!(
            "# TYPE requests_total counter\n\
             requests_total{{version=\"stable\"}} {stable}\n\
             requests_total{{version=\"canary\"}} {}\n\
             # TYPE errors_total counter\n\
             errors_total{{version=\"stable\"}} 0\n\
             errors_total{{version=\"canary\"}} {canary_errors}\n",
            canary + jump
        )
    }
}

/// `serin run`'s stderr (its decisions, one a line), read as it comes.
struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    ended: Arc<AtomicBool>,
}

impl Lines {
    fn read(run: &mut Proc) -> Lines {
        let stderr = run.child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (l, e) = (lines.clone(), ended.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
            e.store(true, Ordering::Relaxed);
        });
        Lines { lines, ended }
    }

    /// The verdict decisions so far.
    fn verdicts(&self) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(" verdict "))
            .count()
    }

    /// Waits (bounded) until there are at least `n` verdicts, or serin has
    /// ended.
    fn wait_verdicts(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.verdicts() < n && !self.ended.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline,
                "no verdict {n} within 30 s:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

const CANARY_REQUESTS: &str = "sum(requests_total{version=\"canary\"})";

/// Runs a one-step rollout (30 %, 3 s) judged on Prometheus while the
/// canary's request counter reads `jump` more than it counted for a while
/// (see the module's documentation). Returns serin's exit code and its
/// decisions.
fn rollout_with_a_jump(name: &str, jump: f64) -> (Option<i32>, String) {
    let (_s, stable) = demo_app("v1", &[]);
    let (_c, canary) = demo_app("v2", &[]);
    let counters = Arc::new(Mutex::new(Counters::Idle));
    let exporter = Exporter::start({
        let counters = counters.clone();
        move || counters.lock().unwrap().text()
    });
    let prometheus = Prometheus::start(&[exporter.addr]);
    prometheus.wait_for(CANARY_REQUESTS, 100.0, Duration::from_secs(20));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "name: {name}
stable:
  version: v1
  upstream: http://{stable}
canary:
  version: v2
  upstream: http://{canary}
traffic:
  provider: builtin
  listen: {listen}
steps:
  - setWeight: 30
  - pause: {{ duration: 3s }}
analysis:
  interval: 1s
  minRequests: 20
  errorRate: {{ max: 5% }}
  noDataLimit: 5
  prometheus:
    address: {url}
    requests: sum(requests_total{{version=\"{{{{version}}}}\"}})
    errors: sum(errors_total{{version=\"{{{{version}}}}\"}})
",
        listen = local(port),
        url = prometheus.url(),
    );
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let mut run = Proc::spawn(serin_run(&file, dir.path()), true);
    wait_for_port(local(port));
    let lines = Lines::read(&mut run);

    // One verdict on still counters: the stage began from sound numbers.
    lines.wait_verdicts(1);
    // Now the canary serves, 30 % errors, and its counter jumps.
    let since = Instant::now();
    *counters.lock().unwrap() = Counters::Moving { since, jump };
    prometheus.wait_for(CANARY_REQUESTS, jump, Duration::from_secs(20));
    // Every query serin sends from here on sees the jump until it goes;
    // the verdict after next was asked for after this moment.
    let seen = lines.verdicts();
    lines.wait_verdicts(seen + 2);
    // The jump goes; the counters go on as they were.
    *counters.lock().unwrap() = Counters::Moving { since, jump: 0.0 };

    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "serin run did not end within 60 s:\n{}",
            lines.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // The rest of its stderr.
    let end = Instant::now() + Duration::from_secs(10);
    while !lines.ended.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    (code, lines.text())
}

/// The no-data decisions in `out`.
fn no_data(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.contains(" verdict inconclusive: no data: "))
        .collect()
}

/// Asserts that no interval's numbers (shown, and kept in the history)
/// hold the jump: every canary count is one the exporter counted.
fn intervals_are_sound(out: &str) {
    let mut seen = 0;
    for l in out.lines().filter(|l| l.contains(" interval: ")) {
        let Some((_, canary)) = l.split_once("| canary errors ") else {
            continue;
        };
        seen += 1;
        if let Some((_, n)) = canary.split_once("% of ") {
            let n: f64 = n.split_whitespace().next().unwrap().parse().unwrap();
            assert!(n < 1e6, "an interval holds the jump: {l}\n{out}");
        }
    }
    assert!(seen > 0, "no interval shown:\n{out}");
}

/// The outcome line of rollout `name`.
fn outcome<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.starts_with(&format!("{name}: rolled back:"))
                || l.starts_with(&format!("{name}: promoted"))
        })
        .unwrap_or_else(|| panic!("no outcome line:\n{out}"))
}

#[test]
fn a_canary_request_counter_jumping_by_10_to_the_12_is_no_data_and_30_percent_errors_roll_back() {
    let (code, out) = rollout_with_a_jump("jump", 1e12);
    assert_eq!(code, Some(3), "rolled back, not promoted:\n{out}");
    assert!(!out.contains("promoted"), "{out}");
    let refused = no_data(&out);
    assert!(
        refused
            .iter()
            .any(|l| l.contains("canary requests rose by ") && l.contains("left out")),
        "the jump is no data naming the counter:\n{out}"
    );
    intervals_are_sound(&out);
    let outcome = outcome(&out, "jump");
    assert!(
        outcome.contains("canary error rate") && !outcome.contains("no data"),
        "rolled back on the canary's 30 % errors, judged from sound numbers: {outcome}"
    );
}

#[test]
fn a_canary_request_counter_at_1e30_is_no_data_and_30_percent_errors_roll_back() {
    let (code, out) = rollout_with_a_jump("saturated", 1e30);
    assert_eq!(code, Some(3), "rolled back, not promoted:\n{out}");
    assert!(!out.contains("promoted"), "{out}");
    let refused = no_data(&out);
    assert!(
        refused
            .iter()
            .any(|l| l.contains(CANARY_REQUESTS) && l.contains("1e+30")),
        "the saturated counter is no data, naming its query and value:\n{out}"
    );
    intervals_are_sound(&out);
    let outcome = outcome(&out, "saturated");
    assert!(
        outcome.contains("canary error rate") && !outcome.contains("no data"),
        "rolled back on the canary's 30 % errors, judged from sound numbers: {outcome}"
    );
}
