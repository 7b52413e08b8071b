//! `serin run` with `traffic.provider: nginx` against Debian's real nginx on a
//! free port of 127.0.0.1: the split nginx serves follows the steps, the
//! judge reads nginx's JSON access log (a healthy canary is promoted, one
//! with 30 % errors rolled back), a configuration that fails `nginx -t`
//! leaves the old one serving, and reloads never drop a request.
//!
//! Requests are made by an in-test observer (one connection per request, so
//! every request sees the configuration nginx has at that moment), which
//! also records which version answered and when.

mod common;
mod stalling_canary;

use common::hooks;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::nginx::{Nginx, free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin_run, text, write};
use hooks::Hooks;

/// Milliseconds since the Unix epoch, the clock of `serin run`'s lines.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (serin's RFC 3339) as Unix milliseconds.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + mi) * 60 + sec) as u64 * 1000 + ms as u64)
}

/// The decisions `serin run` printed: (time, rest of the line).
fn decisions(out: &str) -> Vec<(u64, String)> {
    out.lines()
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            Some((parse_rfc3339(t)?, rest.to_string()))
        })
        .collect()
}

/// The weight changes among the decisions: (time, weight in %).
fn weight_steps(out: &str) -> Vec<(u64, f64)> {
    decisions(out)
        .into_iter()
        .filter_map(|(t, rest)| {
            let w = rest.split_once("canary weight set to ")?.1;
            Some((t, w.trim_end_matches(" %").parse().ok()?))
        })
        .collect()
}

/// One request through nginx, as the observer saw it.
#[derive(Debug, Clone)]
struct Seen {
    at_ms: u64,
    /// HTTP status, 0 when there was no answer.
    status: u16,
    version: Option<String>,
}

/// GET / on `addr` over a fresh connection: status and `x-serin-version`.
fn fetch(addr: SocketAddr) -> (u16, Option<String>) {
    let attempt = || -> Option<(u16, Option<String>)> {
        let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(s) => s,
            Err(e) => return Some((0, Some(format!("connect: {e}")))),
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw);
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let version = lines.find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-serin-version")
                .then(|| v.trim().to_string())
        });
        Some((status, version))
    };
    attempt().unwrap_or((0, None))
}

/// Waits (bounded) until nginx itself serves `addr`: five answers in a row
/// naming a version. Accepting connections is not enough: `nginx -t` binds
/// and listens on a server's new address for a moment while it tests the
/// file that adds it, and resets whatever connected meanwhile.
fn wait_served(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    while in_a_row < 5 {
        assert!(Instant::now() < deadline, "nginx does not serve {addr}");
        match fetch(addr) {
            (200, Some(_)) => in_a_row += 1,
            _ => {
                in_a_row = 0;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Threads sending requests one after another (paced) until stopped, or for
/// at most 90 s, recording every answer.
struct Observer {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Observer {
    fn start(addr: SocketAddr, threads: usize, pace: Duration) -> Observer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let (seen, stop) = (seen.clone(), stop.clone());
                std::thread::spawn(move || {
                    let end = Instant::now() + Duration::from_secs(90);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        let (status, version) = fetch(addr);
                        seen.lock().unwrap().push(Seen {
                            at_ms: now_ms(),
                            status,
                            version,
                        });
                        std::thread::sleep(pace);
                    }
                })
            })
            .collect();
        Observer {
            seen,
            stop,
            threads,
        }
    }

    /// Answers in `[from, to)` (ms), sorted by time.
    fn between(&self, from: u64, to: u64) -> Vec<Seen> {
        let mut v: Vec<Seen> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at_ms >= from && s.at_ms < to)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.at_ms);
        v
    }

    fn stop(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut v = self.seen.lock().unwrap().clone();
        v.sort_by_key(|s| s.at_ms);
        v
    }
}

/// The share of answers from `version`, and how many answers there were.
fn share(seen: &[Seen], version: &str) -> (f64, usize) {
    let n = seen.len();
    let k = seen
        .iter()
        .filter(|s| s.version.as_deref() == Some(version))
        .count();
    (
        if n == 0 {
            f64::NAN
        } else {
            k as f64 / n as f64
        },
        n,
    )
}

/// Asserts that `version` got `expected` (a fraction) of `seen`, within
/// 4.5 standard errors of a binomial share (at least 5 points), over at
/// least 50 answers.
fn assert_share(seen: &[Seen], version: &str, expected: f64, what: &str) {
    let (got, n) = share(seen, version);
    assert!(n >= 50, "{what}: only {n} answers observed");
    let tolerance = (4.5 * (expected * (1.0 - expected) / n as f64).sqrt()).max(0.05);
    assert!(
        (got - expected).abs() <= tolerance,
        "{what}: {got:.3} of {n} answers from {version}, expected {expected} ± {tolerance:.3}"
    );
}

/// Answers in `[from, …)` once there are at least `n` of them (waiting at
/// most 10 s).
fn at_least(observer: &Observer, from: u64, n: usize) -> Vec<Seen> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = observer.between(from, u64::MAX);
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Answers that were not a 200 (0 = no answer at all).
fn failures(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.status != 200).collect()
}

/// A rollout file for the nginx provider with the given steps.
fn rollout(
    name: &str,
    nginx: &Nginx,
    port: u16,
    stable: SocketAddr,
    canary: SocketAddr,
    test: &str,
    steps: &str,
) -> String {
    Rollout::new(name, local(port), stable, canary)
        .traffic(&format!(
            "  provider: nginx
  nginx:
    include: {include}
    test: {test}
    reload: {reload}
    accessLog: {log}
",
            include = nginx.include(&format!("serin-{name}")).display(),
            reload = nginx.command(&["-s", "reload"]).join(" "),
            log = nginx.dir.join(format!("logs/serin-{name}.json")).display(),
        ))
        .steps(steps)
        .yaml()
}

/// The configuration test most rollouts use: `nginx -t -q`.
fn nginx_test(nginx: &Nginx) -> String {
    nginx.command(&["-t", "-q"]).join(" ")
}

/// `serin run FILE --state-dir DIR/state` with its output captured.
fn spawn_run(file: &Path, dir: &Path) -> Proc {
    Proc::spawn(serin_run(file, dir), true)
}

/// Waits (bounded) until `path` contains `needle`.
fn wait_for_text(path: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never contained `{needle}` within {limit:?}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The share of `version` over the next `n` requests to `addr`.
fn sample(addr: SocketAddr, n: usize, version: &str) -> f64 {
    let seen: Vec<Seen> = (0..n)
        .map(|_| {
            let (status, version) = fetch(addr);
            Seen {
                at_ms: now_ms(),
                status,
                version,
            }
        })
        .collect();
    share(&seen, version).0
}

/// Waits (bounded) until 50 requests in a row reach `version` alone: after
/// a reload, nginx's old workers answer for a moment (about 150 ms here, see
/// docs/benchmarks.md). Returns the last share seen.
fn settles_on(addr: SocketAddr, version: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = sample(addr, 50, version);
        if s == 1.0 || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const STEPS: &str = "  - setWeight: 20
  - pause: { duration: 2s }
  - setWeight: 60
  - pause: { duration: 2s }
  - setWeight: 100
  - pause: { duration: 1s }
";

#[test]
fn the_split_through_nginx_follows_the_steps_and_a_healthy_canary_is_promoted() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout(
            "healthy",
            &nginx,
            port,
            stable,
            canary,
            &nginx_test(&nginx),
            STEPS,
        ),
    );
    let run = spawn_run(&file, dir.path());
    wait_served(local(port));
    let observer = Observer::start(local(port), 2, Duration::from_millis(4));
    let output = run.wait_output(Duration::from_secs(60));
    let out = text(&output);
    let seen = observer.stop();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{out}\n{}",
        nginx.error_log()
    );
    assert!(out.contains("promoted: v2 is the new stable"), "{out}");

    let steps = weight_steps(&out);
    let weights: Vec<f64> = steps.iter().map(|s| s.1).collect();
    assert_eq!(weights, [20.0, 60.0, 100.0], "{out}");
    let promoted = decisions(&out)
        .into_iter()
        .find(|(_, rest)| rest.contains(" promoted (all traffic on the new stable)"))
        .map(|(t, _)| t)
        .unwrap_or_else(|| panic!("no promotion line: {out}"));
    // From 700 ms after each decision (a reload takes a few ms to tens of
    // ms) to the next one, nginx's split is the step's weight.
    for (i, &(t, w)) in steps.iter().enumerate() {
        let end = steps.get(i + 1).map_or(promoted, |s| s.0);
        let window: Vec<Seen> = seen
            .iter()
            .filter(|s| s.at_ms >= t + 700 && s.at_ms < end)
            .cloned()
            .collect();
        assert_share(&window, "v2", w / 100.0, &format!("step {w} %"));
    }
    assert!(
        failures(&seen).is_empty(),
        "every request was answered 200 through {} reloads: {:?}",
        steps.len() + 1,
        failures(&seen)
    );
    // Promoted: nginx serves the new stable (v2) alone.
    assert_eq!(settles_on(local(port), "v2"), 1.0);
}

#[test]
fn a_canary_with_30_percent_errors_is_rolled_back_on_nginx_access_log_metrics() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &["--error-rate", "0.3"]);
    let port = free_port();
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout(
            "errors",
            &nginx,
            port,
            stable,
            canary,
            &nginx_test(&nginx),
            STEPS,
        ),
    );
    let run = spawn_run(&file, dir.path());
    wait_served(local(port));
    let observer = Observer::start(local(port), 2, Duration::from_millis(4));
    let output = run.wait_output(Duration::from_secs(60));
    observer.stop();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert!(
        out.contains("canary error rate"),
        "the reason names the error rate: {out}"
    );
    let weights: Vec<f64> = weight_steps(&out).iter().map(|s| s.1).collect();
    assert_eq!(weights, [20.0], "rolled back during the first step: {out}");
    // Rolled back: nginx serves stable alone.
    assert_eq!(settles_on(local(port), "v1"), 1.0);
}

/// A configuration test that refuses while `dir/BREAK` exists (counting its
/// refusals in `dir/REFUSED`), and runs nginx's own test otherwise.
fn breakable_test(nginx: &Nginx, dir: &Path) -> String {
    let script = dir.join("nginx-test.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {d}/BREAK ]; then\n  echo refusal >> {d}/REFUSED\n  \
             echo 'serin-test: configuration refused on purpose' >&2\n  exit 1\nfi\nexec {t}\n",
            d = dir.display(),
            t = nginx_test(nginx),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

fn refusals(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("REFUSED"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_configuration_that_fails_the_test_leaves_the_old_split_serving() {
    let nginx = Nginx::start();
    let hooks = Hooks::start();
    hooks.set_status("/gate1", 503);
    hooks.set_status("/gate2", 503);
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let steps = format!(
        "  - setWeight: 20\n  - pause: {{ until: webhook, url: {} }}\n  - setWeight: 60\n  \
         - pause: {{ until: webhook, url: {} }}\n  - setWeight: 100\n",
        hooks.url("/gate1"),
        hooks.url("/gate2")
    );
    let test = breakable_test(&nginx, dir.path());
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout("refused", &nginx, port, stable, canary, &test, &steps),
    );
    let include = nginx.include("serin-refused");
    let run = spawn_run(&file, dir.path());
    wait_served(local(port));
    let observer = Observer::start(local(port), 2, Duration::from_millis(4));

    // At the first gate, 20 % is in force.
    hooks.wait_for("/gate1", 1, Duration::from_secs(20));
    let good = wait_for_text(&include, "20.00% canary", Duration::from_secs(5));

    // From now on the configuration test refuses; the gate lets the rollout
    // go on to 60 %, which nginx must not get.
    std::fs::write(dir.path().join("BREAK"), "").unwrap();
    hooks.set_status("/gate1", 200);
    hooks.wait_for("/gate2", 1, Duration::from_secs(20));
    let broken_from = now_ms();
    let deadline = Instant::now() + Duration::from_secs(10);
    while refusals(dir.path()) < 3 {
        assert!(Instant::now() < deadline, "serin did not retry the change");
        std::thread::sleep(Duration::from_millis(50));
    }
    let while_broken = at_least(&observer, broken_from, 300);
    // Each retry puts the 60 % file in place for the length of the test
    // command and then takes it back: between retries the good file is there.
    let back = wait_for_text(&include, "20.00% canary", Duration::from_secs(5));
    assert_eq!(back, good, "the refused file was taken back");
    assert_share(&while_broken, "v2", 0.2, "nginx kept serving 20 %");
    assert!(
        failures(&while_broken).is_empty(),
        "{:?}\n{}",
        failures(&while_broken),
        nginx.error_log()
    );

    // The test passes again: serin's retry brings 60 % in.
    std::fs::remove_file(dir.path().join("BREAK")).unwrap();
    wait_for_text(&include, "60.00% canary", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let fixed = at_least(&observer, now_ms(), 300);
    assert_share(&fixed, "v2", 0.6, "60 % once the test passes");

    hooks.set_status("/gate2", 200);
    let output = run.wait_output(Duration::from_secs(30));
    let seen = observer.stop();
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("data plane refused a change"), "{out}");
    assert!(
        out.contains("nginx -t: serin-test: configuration refused on purpose"),
        "the refusal names the test step and quotes its output: {out}"
    );
    assert!(
        failures(&seen).is_empty(),
        "{:?}\n{}",
        failures(&seen),
        nginx.error_log()
    );
}

/// An nginx whose configuration test fails (here: another site in its
/// `conf.d` is broken) refuses serin's file at start: `serin run` exits 1
/// (runtime failure, not 2 "invalid input": the rollout file is fine) and
/// says `nginx -t` with nginx's own words; the daemon answers the
/// registration 503 (unavailable: the same file may pass once nginx does).
#[test]
fn a_configuration_nginx_refuses_at_start_is_exit_1_and_503() {
    let nginx = Nginx::start();
    std::fs::write(
        nginx.dir.join("conf.d/broken.conf"),
        "this_is_not_a_directive;\n",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (stable, canary) = (local(free_port()), local(free_port()));
    let yaml = nginx
        .rollout(
            "refused",
            free_port(),
            stable,
            canary,
            &nginx.test_command(),
        )
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let o = spawn_run(&file, dir.path()).wait_output(Duration::from_secs(40));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nginx -t:") && err.contains("this_is_not_a_directive"),
        "names the test and quotes nginx: {err}"
    );
    assert!(
        !nginx.include("serin-refused").exists(),
        "the refused file is taken back"
    );

    let token = "t0ken";
    let (_daemon, api) = common::daemon::serve_nginx(&nginx, &dir.path().join("daemon"), token);
    let auth = format!("Bearer {token}");
    let answer = common::http::http(
        api,
        "POST",
        "/api/v1/rollouts",
        &[
            ("Content-Type", "application/yaml"),
            ("Authorization", &auth),
        ],
        &yaml,
    );
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(answer.body.contains("nginx -t:"), "{}", answer.body);
}

/// When the data plane refuses a weight, the rollout must not report a
/// promotion that nginx never got. Steps 20 % → 100 %; from the moment 20 %
/// is in force, the configuration test refuses for 6 s (then passes again).
/// Whenever `serin run` ends with 0 ("promoted"), nginx must be serving the
/// new version alone.
#[test]
fn a_rollout_is_not_reported_promoted_while_nginx_refuses_its_changes() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let port = free_port();
    let test = breakable_test(&nginx, dir.path());
    let steps = "  - setWeight: 20\n  - pause: { duration: 1s }\n  - setWeight: 100\n  - pause: { duration: 1s }\n";
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout("stuck", &nginx, port, stable, canary, &test, steps),
    );
    let include = nginx.include("serin-stuck");
    let mut run = spawn_run(&file, dir.path());
    wait_served(local(port));
    let observer = Observer::start(local(port), 2, Duration::from_millis(4));
    wait_for_text(&include, "20.00% canary", Duration::from_secs(20));
    std::fs::write(dir.path().join("BREAK"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut ended_while_refusing = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = run.child.try_wait() {
            ended_while_refusing = Some((status.code(), settles_on(local(port), "v2")));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(dir.path().join("BREAK")).unwrap();
    let output = run.wait_output(Duration::from_secs(30));
    observer.stop();
    let out = text(&output);
    if let Some((code, share)) = ended_while_refusing {
        assert_ne!(
            code,
            Some(0),
            "serin run reported the canary promoted while nginx refused every change after \
             20 % ({} refusals); nginx then sent {share:.2} of requests to v2:\n{out}",
            refusals(dir.path())
        );
    }
    if output.status.code() == Some(0) {
        assert_eq!(
            settles_on(local(port), "v2"),
            1.0,
            "promoted: v2 serves alone\n{out}"
        );
    }
}

/// Quantiles of a small sample (nearest rank).
fn summary(mut v: Vec<i64>) -> String {
    v.sort_unstable();
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "min {} · median {} · p90 {} · max {} ms (n = {})",
        v[0],
        q(0.5),
        q(0.9),
        v[v.len() - 1],
        v.len()
    )
}

/// nginx's reload keeps serving, and the new split is in force a few ms
/// after serin decides. Asserts only that every request is answered and
/// every change is seen (bounded); the times are printed (run with
/// `--nocapture`) and recorded in docs/benchmarks.md.
#[test]
fn nginx_reloads_keep_serving_and_the_new_split_follows_the_decision() {
    let nginx = Nginx::start();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);

    // 1. Through `serin run`: the decision to set 100 % (the time on its
    //    line) to the first answer from v2 and the last answer from v1.
    let (mut first_new, mut last_old) = (Vec::new(), Vec::new());
    for i in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // A first pause at 0 % so that the observer runs before the decision.
        let steps =
            "  - pause: { duration: 1s }\n  - setWeight: 100\n  - pause: { duration: 1s }\n";
        let file = write(
            dir.path(),
            "rollout.yaml",
            &rollout(
                &format!("flip{i}"),
                &nginx,
                port,
                stable,
                canary,
                &nginx_test(&nginx),
                steps,
            ),
        );
        let run = spawn_run(&file, dir.path());
        wait_served(local(port));
        let observer = Observer::start(local(port), 2, Duration::from_millis(2));
        let output = run.wait_output(Duration::from_secs(30));
        let seen = observer.stop();
        let out = text(&output);
        assert_eq!(output.status.code(), Some(0), "{out}");
        assert!(
            failures(&seen).is_empty(),
            "{:?}\n{}",
            failures(&seen),
            nginx.error_log()
        );
        let t = weight_steps(&out)[0].0 as i64;
        assert!(
            seen.iter().any(|s| (s.at_ms as i64) < t - 100),
            "observed from before the decision: {out}"
        );
        let new = seen
            .iter()
            .find(|s| s.at_ms as i64 >= t && s.version.as_deref() == Some("v2"))
            .unwrap_or_else(|| panic!("v2 never answered: {out}"));
        first_new.push(new.at_ms as i64 - t);
        let old = seen
            .iter()
            .filter(|s| s.version.as_deref() == Some("v1"))
            .map(|s| s.at_ms as i64)
            .max()
            .unwrap_or(t);
        last_old.push(old - t);
    }

    // 2. The router alone: 20 changes 0 ↔ 100 % under load; from the call
    //    to the change's end (file, `nginx -t`, reload), to the first answer
    //    from the new version, and to the last answer from the old one.
    use serin::controller::seams::TrafficRouter;
    use serin::providers::traffic::nginx::{NginxConfig, NginxRouter};
    use serin_proxy::{Upstream, Weight};
    let port = free_port();
    let router = NginxRouter::new(NginxConfig {
        rollout: "bench".into(),
        include: nginx.include("serin-bench"),
        test: nginx.command(&["-t", "-q"]),
        reload: nginx.command(&["-s", "reload"]),
        access_log: nginx.dir.join("logs/serin-bench.json"),
        listen: local(port),
        stable: Upstream::parse(&format!("http://{stable}")).unwrap(),
        canary: Upstream::parse(&format!("http://{canary}")).unwrap(),
        baseline: None,
        sticky: None,
        routes: vec![],
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(router.apply_weight(Weight::ZERO)).unwrap();
    wait_served(local(port));
    let observer = Observer::start(local(port), 2, Duration::from_millis(2));
    let (mut applied, mut r_first, mut r_last) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..20 {
        let (weight, new, old) = if i % 2 == 0 {
            (Weight::FULL, "v2", "v1")
        } else {
            (Weight::ZERO, "v1", "v2")
        };
        let t0 = now_ms();
        rt.block_on(router.apply_weight(weight)).unwrap();
        applied.push((now_ms() - t0) as i64);
        // Settled: 20 answers in a row from the new version, 300 ms on.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let after = observer.between(t0, u64::MAX);
            let tail_new = after.len() >= 20
                && after[after.len() - 20..]
                    .iter()
                    .all(|s| s.version.as_deref() == Some(new));
            if tail_new && now_ms() >= t0 + 300 {
                let first = after
                    .iter()
                    .find(|s| s.version.as_deref() == Some(new))
                    .map_or(0, |s| s.at_ms);
                let last = after
                    .iter()
                    .filter(|s| s.version.as_deref() == Some(old))
                    .map(|s| s.at_ms)
                    .max()
                    .unwrap_or(t0);
                r_first.push(first as i64 - t0 as i64);
                r_last.push(last as i64 - t0 as i64);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {i} to {new} not seen: {}",
                nginx.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let seen = observer.stop();
    assert!(
        failures(&seen).is_empty(),
        "{} of {} requests failed across 20 reloads: {:?}",
        failures(&seen).len(),
        seen.len(),
        failures(&seen).iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "BENCH serin run, decision → first answer from the new split: {}",
        summary(first_new)
    );
    eprintln!(
        "BENCH serin run, decision → last answer from the old split: {}",
        summary(last_old)
    );
    eprintln!(
        "BENCH router, call → test and reload done: {}",
        summary(applied)
    );
    eprintln!(
        "BENCH router, call → first answer from the new split: {}",
        summary(r_first)
    );
    eprintln!(
        "BENCH router, call → last answer from the old split: {}",
        summary(r_last)
    );
    eprintln!(
        "BENCH requests during the 20 reloads: {}, failed: 0",
        seen.len()
    );
}

/// Applied means applied: when `serin run` exits after a rollback, nginx
/// already serves the rolled-back split alone. A reload returns before its
/// old workers stop taking requests; before serin waited for nginx to
/// serve the new file, requests made right after the exit still reached
/// the canary for a moment (fails before this change).
#[test]
fn after_a_rollback_exits_nginx_no_longer_answers_from_the_canary() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &["--error-rate", "0.5"]);
    let port = free_port();
    let steps = "  - setWeight: 50\n  - pause: { duration: 30s }\n  - setWeight: 100\n";
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout(
            "back",
            &nginx,
            port,
            stable,
            canary,
            &nginx_test(&nginx),
            steps,
        ),
    );
    let mut run = spawn_run(&file, dir.path());
    wait_served(local(port));
    let observer = Observer::start(local(port), 2, Duration::from_millis(4));
    let deadline = Instant::now() + Duration::from_secs(60);
    while matches!(run.child.try_wait(), Ok(None)) {
        assert!(Instant::now() < deadline, "serin run did not end");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Every request from here on starts after the exit: four threads, 100
    // requests each, on fresh connections.
    let after: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..4)
            .map(|_| s.spawn(|| (0..100).map(|_| fetch(local(port))).collect::<Vec<_>>()))
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    observer.stop();
    let output = run.wait_output(Duration::from_secs(5));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    let from_canary = after
        .iter()
        .filter(|(_, v)| v.as_deref() == Some("v2"))
        .count();
    assert_eq!(
        from_canary,
        0,
        "{from_canary} of {} requests made after serin run exited were answered by the canary",
        after.len()
    );
    let answered = after.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(answered, after.len(), "every request answered: {after:?}");
}

/// Issue 17 F4 with nginx: a canary that sends its head at once and stalls
/// the body of half its requests, under load whose clients give up after
/// 2 s. nginx logs each such request 499 with the upstream's 200 and its
/// connection open to the end (`$upstream_response_time` = `$request_time`):
/// a timeout of the canary, so it is rolled back on its error rate rather
/// than promoted on the healthy half.
#[test]
fn a_canary_that_stalls_half_its_bodies_is_rolled_back_on_nginx_access_log_metrics() {
    let nginx = Nginx::start();
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let canary = stalling_canary::stalling_canary();
    let port = free_port();
    let name = "bstall";
    // The error rate decides (the p95 ceiling is above the clients' 2 s).
    let yaml = Rollout::new(name, local(port), stable, canary)
        .traffic(&format!(
            "  provider: nginx
  nginx:
    include: {include}
    test: {test}
    reload: {reload}
    accessLog: {log}
",
            include = nginx.include(&format!("serin-{name}")).display(),
            test = nginx_test(&nginx),
            reload = nginx.command(&["-s", "reload"]).join(" "),
            log = nginx.dir.join(format!("logs/serin-{name}.json")).display(),
        ))
        .steps(stalling_canary::STEPS)
        .latency_p95("5s")
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = spawn_run(&file, dir.path());
    wait_served(local(port));
    let _load = stalling_canary::impatient_load(port);
    let output = run.wait_output(Duration::from_secs(60));
    stalling_canary::assert_rolled_back(&output, "canary error rate");
    // What nginx logged for the stalled requests: 499 after the canary's 200.
    let log = std::fs::read_to_string(nginx.dir.join(format!("logs/serin-{name}.json"))).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"status\":\"499\"")
            && l.contains("\"upstream_status\":\"200\"")
            && l.contains("\"version\":\"canary\"")),
        "{log}"
    );
}
