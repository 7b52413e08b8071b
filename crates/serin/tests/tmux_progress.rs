//! `serin run`'s progress bar as a person sees it: the real binary on a real
//! terminal (a detached tmux pane of 120×30), with demo apps and load behind
//! its proxy. The pane is captured while the rollout runs and after it ends.
//! tmux comes from scripts/install-test-deps.sh.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::free_port;
use common::rollout::Rollout;
use common::serin::{BIN, Proc, demo_app, load, serin, text, wait_for_port, write};

/// A tmux server of our own (its own socket), killed on Drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(tag: &str) -> Tmux {
        Tmux {
            socket: format!("serin-test-{tag}-{}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux (is it installed? scripts/install-test-deps.sh)")
    }

    /// The visible pane as text, one line per row, trailing blanks trimmed.
    fn capture(&self) -> String {
        let o = self.cmd(&["capture-pane", "-p", "-t", "main"]);
        assert!(o.status.success(), "capture-pane: {o:?}");
        String::from_utf8_lossy(&o.stdout).trim_end().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn rollout(name: &str, listen: SocketAddr, stable: SocketAddr, canary: SocketAddr) -> String {
    Rollout::new(name, listen, stable, canary)
        .latency_p95("300ms")
        .no_data_limit(10)
        .yaml()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs `serin run` in a 120×30 pane; returns the captures taken while it
/// ran (distinct, in order) and the final screen.
/// The canary's demo app starts `canary_late` after `serin run`, so that the
/// health checks wait (and log a warning) while the bar is drawn. With
/// `interrupt_at`, Ctrl-C is typed into the pane once the bar shows that
/// text, as an operator would.
fn run_in_tmux(
    tag: &str,
    canary_flags: &[&str],
    canary_late: Duration,
    interrupt_at: Option<&str>,
) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let canary = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let start_canary = || {
        let mut cmd = serin();
        cmd.args([
            "demo-app",
            "--listen",
            &canary.to_string(),
            "--version",
            "v2",
        ])
        .args(canary_flags);
        let p = Proc::spawn(cmd, false);
        wait_for_port(canary);
        p
    };
    let mut _canary = (canary_late.is_zero()).then(start_canary);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = write(
        dir.path(),
        "rollout.yaml",
        &rollout(tag, listen, stable, canary),
    );
    let state = dir.path().join("state");
    let script = format!(
        "cd {dir}; RUST_LOG=warn {bin} run {file} --state-dir {state}; echo \"serin exited with $?\"; stty -a | grep -o -- -*echoctl; sleep 120",
        dir = shell_quote(&dir.path().display().to_string()),
        bin = shell_quote(BIN),
        file = shell_quote(&file.display().to_string()),
        state = shell_quote(&state.display().to_string()),
    );
    let tmux = Tmux::new(tag);
    let o = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "main",
        "-x",
        "120",
        "-y",
        "30",
        &script,
    ]);
    assert!(o.status.success(), "tmux new-session: {o:?}");
    wait_for_port(listen);
    let _load = load(&format!("http://{listen}/"), 150, "60s");
    if !canary_late.is_zero() {
        std::thread::sleep(canary_late);
        _canary = Some(start_canary());
    }
    let mut captures: Vec<String> = Vec::new();
    let mut typed_ctrl_c = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let screen = tmux.capture();
        if screen.contains("serin exited with") {
            break screen;
        }
        if interrupt_at.is_some_and(|at| bar_line(&screen, tag).is_some_and(|b| b.contains(at)))
            && !captures
                .iter()
                .any(|c| c.contains("interrupted: rolling back"))
            && !typed_ctrl_c
        {
            let o = tmux.cmd(&["send-keys", "-t", "main", "C-c"]);
            assert!(o.status.success(), "tmux send-keys: {o:?}");
            typed_ctrl_c = true;
        }
        if captures.last() != Some(&screen) && !screen.is_empty() {
            captures.push(screen);
        }
        assert!(
            Instant::now() < deadline,
            "serin run did not end within 60 s; screen:\n{}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(150));
    };
    keep(tag, &captures, &last);
    (captures, last)
}

/// Leaves the captures in the target dir for a person to read.
fn keep(tag: &str, captures: &[String], last: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tmux");
    let _ = std::fs::create_dir_all(&dir);
    let mut all = String::new();
    for (i, c) in captures.iter().enumerate() {
        all.push_str(&format!("===== capture {i}\n{c}\n"));
    }
    all.push_str(&format!("===== final\n{last}\n"));
    let _ = std::fs::write(dir.join(format!("{tag}.txt")), all);
}

/// The bar is drawn once, at the bottom (its line, then the line of what
/// the rollout waits for, indented): nothing written while it is on the
/// screen (decisions, warnings) leaves a torn copy of it above.
fn assert_one_bar_at_the_bottom(captures: &[String], name: &str) {
    for c in captures {
        let lines: Vec<&str> = c.lines().collect();
        let bars = lines
            .iter()
            .filter(|l| l.starts_with(&format!("{name} [")))
            .count();
        let at = lines
            .iter()
            .rposition(|l| l.starts_with(&format!("{name} [")));
        let below = at.map_or(0, |i| lines.len() - 1 - i);
        let waiting_line = at.is_some_and(|i| lines[i + 1..].iter().all(|l| l.starts_with("  ")));
        assert!(
            bars <= 1 && (bars == 0 || (below <= 1 && waiting_line)),
            "one bar, at the bottom, with at most its waiting line below:\n{c}"
        );
    }
}

/// The line below the bar: what the rollout waits for.
fn waiting_line<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    let lines: Vec<&str> = screen.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.starts_with(name) && l.contains('[') && l.contains(']'))?;
    lines.get(at + 1).map(|l| l.trim())
}

/// The line of the bar in a capture: the one that starts with the name and
/// has the `[===>  ]` bar.
fn bar_line<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .rev()
        .find(|l| l.starts_with(name) && l.contains('[') && l.contains(']'))
}

#[test]
fn the_bar_shows_name_step_weight_and_phase_and_the_end_shows_the_outcome() {
    let (captures, last) = run_in_tmux("healthy", &[], Duration::ZERO, None);
    assert_one_bar_at_the_bottom(&captures, "healthy");
    let bars: Vec<&str> = captures
        .iter()
        .filter_map(|c| bar_line(c, "healthy"))
        .collect();
    assert!(
        bars.len() >= 3,
        "the bar was seen while the rollout ran: {captures:#?}"
    );
    for b in &bars {
        assert!(b.chars().count() <= 120, "fits the terminal: {b:?}");
        assert!(
            b.contains("step ") && b.contains("/6 ·"),
            "the step of 6, as status numbers it: {b:?}"
        );
        assert!(b.contains("canary "), "weight: {b:?}");
        assert!(
            b.contains("Progressing") || b.contains("Paused") || b.contains("Initializing"),
            "phase: {b:?}"
        );
    }
    for w in ["20 %", "50 %"] {
        assert!(
            bars.iter().any(|b| b.contains(&format!("canary {w}"))),
            "the bar showed weight {w}: {bars:#?}"
        );
    }
    assert!(
        bars.iter().any(|b| b.contains("Progressing")),
        "phase Progressing seen: {bars:#?}"
    );
    // Below the bar, what it waits for, as a log file would say it (fails
    // before this change: the bar was one line, without the reason).
    let waits: Vec<&str> = captures
        .iter()
        .filter_map(|c| waiting_line(c, "healthy"))
        .collect();
    assert!(
        waits.iter().any(|w| w.starts_with("pausing 2s: ")
            && w.contains(" left (until ")
            && w.ends_with(" UTC)")),
        "the time left in a pause under the bar: {waits:#?}"
    );
    for w in &waits {
        assert!(w.chars().count() <= 118, "cut to the terminal: {w:?}");
    }
    // The final screen: the outcome, no bar left behind, exit 0.
    assert!(
        last.contains("healthy: promoted: v2 is the new stable"),
        "outcome on the final screen:\n{last}"
    );
    assert!(last.contains("serin exited with 0"), "{last}");
    assert!(
        bar_line(&last, "healthy").is_none(),
        "the bar is cleared at the end:\n{last}"
    );
    // The decision lines above the bar stay readable: steps are logged.
    assert!(
        last.contains("canary weight set to 20 %") && last.contains("canary weight set to 50 %"),
        "{last}"
    );
}

#[test]
fn a_rolled_back_canary_leaves_the_reason_on_the_screen() {
    let (captures, last) = run_in_tmux("broken", &["--error-rate", "0.4"], Duration::ZERO, None);
    assert!(
        captures
            .iter()
            .any(|c| bar_line(c, "broken").is_some_and(|b| b.contains("canary 20 %"))),
        "the bar was seen at 20 %: {captures:#?}"
    );
    assert_one_bar_at_the_bottom(&captures, "broken");
    assert!(
        last.contains("broken: rolled back:") && last.contains("error rate"),
        "the outcome with its reason:\n{last}"
    );
    assert!(last.contains("serin exited with 3"), "{last}");
    assert!(bar_line(&last, "broken").is_none(), "bar cleared:\n{last}");
}

#[test]
fn a_warning_while_the_bar_is_drawn_is_written_above_it() {
    let (captures, last) = run_in_tmux("late", &[], Duration::from_millis(2500), None);
    assert!(
        captures.iter().any(|c| c.contains("WARN")
            && c.contains("waiting for both versions to answer")
            && bar_line(c, "late").is_some_and(|b| b.contains("Initializing"))),
        "the health-check warning and the bar in phase Initializing: {captures:#?}"
    );
    // The bar says it too: the canary and its health check's URL.
    assert!(
        captures
            .iter()
            .any(|c| waiting_line(c, "late").is_some_and(|w| w
                .starts_with("waiting for both versions to answer (stable v1, canary v2)")
                && w.contains("/healthz"))),
        "the failing health check under the bar: {captures:#?}"
    );
    assert_one_bar_at_the_bottom(&captures, "late");
    assert!(
        last.contains("late: promoted: v2 is the new stable"),
        "{last}"
    );
    assert!(last.contains("serin exited with 0"), "{last}");
}

#[test]
fn ctrl_c_stops_the_rollout_with_all_traffic_on_stable_and_exit_4() {
    let (captures, last) = run_in_tmux("stopped", &[], Duration::ZERO, Some("canary 20 %"));
    assert!(
        captures
            .iter()
            .any(|c| bar_line(c, "stopped").is_some_and(|b| b.contains("canary 20 %"))),
        "the bar was seen at 20 % before Ctrl-C: {captures:#?}"
    );
    assert!(
        last.contains("interrupted: rolling back (all traffic to stable)"),
        "Ctrl-C is answered on the screen:\n{last}"
    );
    assert!(
        last.contains("stopped: rolled back:"),
        "the outcome names the rollback:\n{last}"
    );
    assert!(
        !last.contains("promoted"),
        "never promoted after Ctrl-C:\n{last}"
    );
    assert!(last.contains("serin exited with 4"), "{last}");
    assert!(bar_line(&last, "stopped").is_none(), "bar cleared:\n{last}");
    // The terminal is left as it was found: control characters echoed.
    assert!(
        last.lines().any(|l| l.trim() == "echoctl"),
        "the terminal's echoctl is restored:\n{last}"
    );
}

/// `serin run FILE &` from an interactive shell: a job in the background
/// may not change the terminal's modes (SIGTTOU stopped it: its port bound
/// and never served, no api.json). It writes lines instead of a bar, serves
/// its address, and its API is found through the state dir.
#[test]
fn serin_run_started_in_the_background_of_a_shell_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let (_canary, canary) = demo_app("v2", &[]);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = Rollout::new("bg", listen, stable, canary)
        .steps("  - setWeight: 20\n  - pause: {}\n")
        .yaml();
    let file = write(dir.path(), "bg.yaml", &yaml);
    let state = dir.path().join("state");
    let tmux = Tmux::new("bg");
    let o = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "main",
        "-x",
        "120",
        "-y",
        "30",
        "bash --norc --noprofile -i",
    ]);
    assert!(o.status.success(), "tmux new-session: {o:?}");
    let line = format!(
        "RUST_LOG=warn {} run {} --state-dir {} &",
        shell_quote(BIN),
        shell_quote(&file.display().to_string()),
        shell_quote(&state.display().to_string())
    );
    let o = tmux.cmd(&["send-keys", "-t", "main", &line, "Enter"]);
    assert!(o.status.success(), "tmux send-keys: {o:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("api.json").exists() {
        assert!(
            Instant::now() < deadline,
            "no api.json: the background serin run is stuck; screen:\n{}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        common::http::get(listen, "/").status,
        200,
        "the service's address answers"
    );
    let promoted = serin()
        .args(["promote", "bg", "--full", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deadline = Instant::now() + Duration::from_secs(30);
    while state.join("api.json").exists() {
        assert!(
            Instant::now() < deadline,
            "serin run did not end; screen:\n{}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
