//! Every command line of README.md and docs/*.md, run as written with the
//! real `serin` binary, so a reader who copies one gets what the page says.
//!
//! The convention the pages follow (ARCHITECTURE.md, "Around the code"):
//!
//! - Every fenced block names its language. Command lines live in ```` ```sh ````
//!   blocks, and only there; output is ```` ```text ````, files are
//!   ```` ```yaml ```` / ```` ```json ````. A block without a language, or a
//!   `$ ` prompt line outside an `sh` block, fails the test (a command must not
//!   hide where it is not run).
//! - Each line of an `sh` block is a command (a trailing `\` joins the next
//!   line; `#` starts a comment), run with `sh -c` in a fresh temporary
//!   directory holding a copy of `examples/` (and links to the repository's
//!   other directories), one after another. It must exit
//!   0, or N when its comment begins with `exit N` (`# exit 3: rolled back`).
//!   A `serin … -o json` line must print one JSON document on stdout.
//! - A line ending in `&` runs in the background until the block's session
//!   ends; when it names a `--listen` address the next line waits (bounded)
//!   until that address accepts connections. A background command that has
//!   failed by then fails the test.
//! - ```` ```sh continues ```` continues the previous `sh` block of the same
//!   page: same directory, its background commands still running. That is
//!   how a line that needs a prior step says so. Sessions run in parallel.
//! - Addresses: every `127.0.0.1:PORT` in a session's lines and in the copied
//!   examples becomes a free port (the same port for the same number), and so
//!   does serin's default API address 127.0.0.1:9900 (`SERIN_API` for the
//!   clients, `--listen` added to a `serin serve` without one). `cargo run
//!   --release -p serin --` is the `serin` that cargo built for this test.
//! - A line the test cannot run here is listed in [`NOT_RUN`] with the reason,
//!   word for word; a listed line the pages no longer have fails the test, and
//!   so does any other line that does not work.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::nginx::free_port;
use common::serin::BIN;

/// Lines of `sh` blocks that this test does not run, each with why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "serin status checkout --kubernetes -n shop",
        "needs a cluster where serin serve --kubernetes runs; k8s_controller.rs runs these commands against kubesim",
    ),
    (
        "serin traffic checkout 30 --kubernetes -n shop",
        "needs a cluster where serin serve --kubernetes runs; k8s_controller.rs runs these commands against kubesim",
    ),
    (
        "serin promote checkout --kubernetes -n shop",
        "needs a cluster where serin serve --kubernetes runs; k8s_controller.rs runs these commands against kubesim",
    ),
    (
        "serin rollback checkout --kubernetes -n shop",
        "needs a cluster where serin serve --kubernetes runs; k8s_controller.rs runs these commands against kubesim",
    ),
    (
        "scripts/test.sh",
        "the whole test suite, which runs this test (CI runs it: .ci/run)",
    ),
    (
        "kubectl apply -k deploy/kubernetes",
        "needs a Kubernetes cluster; k8s_packaging.rs applies it to kubesim",
    ),
    (
        "kubectl -n shop wait --for=condition=Ready rollout.serin.dev/checkout --timeout=30m",
        "needs a Kubernetes cluster; k8s_gitops.rs runs it against kubesim",
    ),
    (
        "cargo run -p serin --example crd > deploy/kubernetes/crd.yaml",
        "rewrites a checked-in file with cargo's build of an example; rollout_resource.rs checks that file equals the example's output",
    ),
    (
        "bench/proxy-vs-nginx.sh 15 10 64",
        "a benchmark of minutes; its output is the page's numbers",
    ),
    (
        "SESSIONS=shared bench/proxy-vs-nginx.sh 9 10 64",
        "a benchmark of minutes; its output is the page's numbers",
    ),
    (
        "bench/proxy-vs-nginx.sh 5 10 64",
        "a benchmark of minutes; its output is the page's numbers",
    ),
    (
        "bench/proxy-vs-nginx.sh 9 10 64",
        "a benchmark of minutes; its output is the page's numbers",
    ),
    (
        "bench/instructions-per-request.sh 10",
        "a benchmark under valgrind, minutes; its output is the page's numbers",
    ),
    (
        "cargo run --release -p serin --example rollback_latency -- 50",
        "a release build and a benchmark of minutes",
    ),
    (
        "cargo run --release -p serin-analysis --example judge_sim -- --runs 1000 --threads 2",
        "a release build and a benchmark of minutes",
    ),
    (
        "CARGO_TARGET_DIR=target-e2e cargo test -p serin --test nginx_e2e nginx_reloads -- --nocapture",
        "a second build of the test suite in its own target directory",
    ),
    (
        "cargo test -p serin --test k8s_controller the_leader_killed -- --nocapture",
        "a nested cargo build of a test this suite runs itself (k8s_controller.rs)",
    ),
    (
        "cargo run -p serin --example lease_failover -- 5",
        "a benchmark of minutes; its output is the page's numbers",
    ),
    (
        "bench/scale.sh",
        "a benchmark of minutes; its output is the page's numbers",
    ),
    (
        "bench/responsiveness.sh",
        "a benchmark of minutes; its output is the page's numbers",
    ),
];

/// How long one foreground command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(240);
/// How long a background command may take to accept connections.
const LISTEN_LIMIT: Duration = Duration::from_secs(30);
/// serin's default API address, which clients use without `--api`.
const DEFAULT_API_PORT: u16 = 9900;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One command line as the page writes it.
#[derive(Debug, Clone)]
struct Line {
    /// `file:line` of its first line.
    place: String,
    /// The command, continuations joined, comment and trailing `&` removed.
    command: String,
    /// Whether it ended in `&`.
    background: bool,
    /// The exit code its comment promises (0 without one).
    exit: i32,
}

/// Lines run in one directory, in order.
#[derive(Debug)]
struct Session {
    place: String,
    lines: Vec<Line>,
}

/// Reads the pages: their sessions, and the problems with their blocks.
fn read_pages() -> (Vec<Session>, Vec<String>, Vec<String>) {
    let mut pages = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    let mut sessions = Vec::new();
    let mut problems = Vec::new();
    let mut not_run_seen = Vec::new();
    for page in pages {
        let name = page
            .strip_prefix(repo())
            .unwrap_or(&page)
            .display()
            .to_string();
        let text = fs::read_to_string(&page).expect("page");
        read_page(
            &name,
            &text,
            &mut sessions,
            &mut problems,
            &mut not_run_seen,
        );
    }
    (sessions, problems, not_run_seen)
}

fn read_page(
    name: &str,
    text: &str,
    sessions: &mut Vec<Session>,
    problems: &mut Vec<String>,
    not_run_seen: &mut Vec<String>,
) {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut page_sessions: Vec<Session> = Vec::new();
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if !trimmed.starts_with("```") {
            i += 1;
            continue;
        }
        let indent = line.len() - trimmed.len();
        let info = trimmed.trim_start_matches('`').trim().to_string();
        let open = i + 1;
        let mut body: Vec<(usize, String)> = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            let l = lines[i];
            let cut = l.len() - l.trim_start().len();
            body.push((i + 1, l[cut.min(indent)..].to_string()));
            i += 1;
        }
        i += 1; // the closing fence
        let mut words = info.split_whitespace();
        match words.next() {
            None => problems.push(format!(
                "{name}:{open}: a fenced block without a language: write ```sh for \
                 command lines (run by this test) or ```text for output"
            )),
            Some("sh") => {
                let continues = match words.next() {
                    None => false,
                    Some("continues") => true,
                    Some(other) => {
                        problems.push(format!(
                            "{name}:{open}: ```sh {other}: expected ```sh or ```sh continues"
                        ));
                        false
                    }
                };
                let commands = commands(name, &body, problems, not_run_seen);
                match page_sessions.last_mut() {
                    Some(s) if continues => s.lines.extend(commands),
                    None if continues => problems.push(format!(
                        "{name}:{open}: ```sh continues, but no ```sh block before it on this page"
                    )),
                    _ => page_sessions.push(Session {
                        place: format!("{name}:{open}"),
                        lines: commands,
                    }),
                }
            }
            Some(_) => {
                for (n, l) in &body {
                    if l.trim_start().starts_with("$ ") {
                        problems.push(format!(
                            "{name}:{n}: a command line in a ```{info} block: put commands in a \
                             ```sh block (run by this test), output in ```text"
                        ));
                    }
                }
            }
        }
    }
    sessions.extend(page_sessions.into_iter().filter(|s| !s.lines.is_empty()));
}

/// The command lines of one `sh` block.
fn commands(
    name: &str,
    body: &[(usize, String)],
    problems: &mut Vec<String>,
    not_run_seen: &mut Vec<String>,
) -> Vec<Line> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < body.len() {
        let (first, _) = body[k];
        let mut joined = String::new();
        loop {
            let l = &body[k].1;
            k += 1;
            match l.trim_end().strip_suffix('\\') {
                Some(head) if k < body.len() => {
                    joined.push_str(head);
                    joined.push(' ');
                }
                _ => {
                    joined.push_str(l);
                    break;
                }
            }
        }
        let (command, comment) = split_comment(&joined);
        let mut command = command.trim().to_string();
        if command.is_empty() {
            continue;
        }
        let place = format!("{name}:{first}");
        let squeezed = command.split_whitespace().collect::<Vec<_>>().join(" ");
        if NOT_RUN.iter().any(|(l, _)| *l == squeezed) {
            not_run_seen.push(squeezed);
            continue;
        }
        if command.starts_with("$ ") {
            problems.push(format!(
                "{place}: a `$ ` prompt in a ```sh block: write the command alone"
            ));
            continue;
        }
        let background = command.ends_with('&') && !command.ends_with("&&");
        if background {
            command = command.trim_end_matches('&').trim_end().to_string();
        }
        let exit = match comment.trim().strip_prefix("exit ") {
            Some(rest) => match rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
            {
                Some(n) => n,
                None => {
                    problems.push(format!("{place}: `# exit` without a number"));
                    0
                }
            },
            None => 0,
        };
        out.push(Line {
            place,
            command,
            background,
            exit,
        });
    }
    out
}

/// Splits a shell line at its comment: a `#` at the start or after white
/// space, outside quotes.
fn split_comment(line: &str) -> (&str, &str) {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => {
                return (&line[..i], &line[i + 1..]);
            }
            None => {}
        }
        previous = c;
    }
    (line, "")
}

/// The ports written as `127.0.0.1:PORT` in `text`.
fn ports_in(text: &str, into: &mut Vec<u16>) {
    const HOST: &str = "127.0.0.1:";
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        rest = &rest[at + HOST.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(p) = digits.parse::<u16>()
            && p != 0
            && !into.contains(&p)
        {
            into.push(p);
        }
    }
}

/// `text` with every written port replaced by its free one.
fn map_ports(text: &str, ports: &BTreeMap<u16, u16>) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        out.push_str(&rest[..at + HOST.len()]);
        rest = &rest[at + HOST.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u16>().ok().and_then(|p| ports.get(&p)) {
            Some(free) => out.push_str(&free.to_string()),
            None => out.push_str(&digits),
        }
        rest = &rest[digits.len()..];
    }
    out.push_str(rest);
    out
}

/// A process group started for one line.
struct Started {
    place: String,
    command: String,
    child: Child,
    background: bool,
    log: PathBuf,
}

fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// Stops a line's process group: SIGTERM, then (bounded) SIGKILL.
fn stop(started: &mut Started) {
    let pgid = started.child.id();
    signal_group(pgid, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let _ = started.child.try_wait();
        if !group_alive(pgid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_group(pgid, "-KILL");
    let _ = started.child.wait();
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Copies `from` into `to`, ports mapped in every text file.
fn copy_mapped(from: &Path, to: &Path, ports: &BTreeMap<u16, u16>) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_mapped(&path, &target, ports);
        } else {
            let bytes = fs::read(&path).expect("read");
            match String::from_utf8(bytes) {
                Ok(text) => fs::write(&target, map_ports(&text, ports)).expect("write"),
                Err(e) => fs::write(&target, e.into_bytes()).expect("write"),
            }
        }
    }
}

/// Runs one session; `Err` says which line failed and how.
fn run_session(session: &Session) -> Result<(), String> {
    let examples = repo().join("examples");
    let mut written = vec![DEFAULT_API_PORT];
    for l in &session.lines {
        ports_in(&l.command, &mut written);
    }
    for entry in fs::read_dir(&examples).expect("examples/") {
        let path = entry.expect("entry").path();
        if let Ok(text) = fs::read_to_string(&path) {
            ports_in(&text, &mut written);
        }
    }
    let ports: BTreeMap<u16, u16> = written.iter().map(|&p| (p, free_port())).collect();
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("work");
    let logs = temp.path().join("logs");
    fs::create_dir_all(&logs).expect("logs");
    copy_mapped(&examples, &dir.join("examples"), &ports);
    // The rest of the repository, read where the pages name its files.
    for other in ["bench", "crates", "deploy", "docs", "scripts"] {
        std::os::unix::fs::symlink(repo().join(other), dir.join(other)).expect("symlink");
    }
    let bin_dir = Path::new(BIN).parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let api = format!("127.0.0.1:{}", ports[&DEFAULT_API_PORT]);
    let mut started: Vec<Started> = Vec::new();
    let result = (|| {
        for (n, line) in session.lines.iter().enumerate() {
            let mut command = map_ports(&line.command, &ports);
            if let Some(rest) = command.strip_prefix("cargo run --release -p serin -- ") {
                command = format!("serin {rest}");
            }
            if command.contains("serin serve") && !command.contains("--listen") {
                command =
                    command.replacen("serin serve", &format!("serin serve --listen {api}"), 1);
            }
            let log = logs.join(format!("{n}.log"));
            let stdout = logs.join(format!("{n}.out"));
            let out = fs::File::create(&stdout).expect("stdout");
            let err = fs::File::create(&log).expect("log");
            let child = Command::new("sh")
                .arg("-c")
                .arg(&command)
                .current_dir(&dir)
                .env("PATH", &path)
                .env("SERIN_API", format!("http://{api}"))
                .env("NO_COLOR", "1")
                .env_remove("SERIN_TOKEN")
                .env_remove("SERIN_STATE_DIR")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("{}: cannot start `{command}`: {e}", line.place))?;
            started.push(Started {
                place: line.place.clone(),
                command: command.clone(),
                child,
                background: line.background,
                log: log.clone(),
            });
            let this = started.last_mut().expect("just pushed");
            if line.background {
                if let Some(addr) = listen_address(&command) {
                    let deadline = Instant::now() + LISTEN_LIMIT;
                    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                        if let Ok(Some(status)) = this.child.try_wait() {
                            return Err(format!(
                                "{}: `{}` (run as `{command}`) exited ({status}) before it \
                                 listened on {addr}:\n{}",
                                line.place,
                                line.command,
                                tail(&log)
                            ));
                        }
                        if Instant::now() > deadline {
                            return Err(format!(
                                "{}: `{}`: nothing listens on {addr} after {LISTEN_LIMIT:?}:\n{}",
                                line.place,
                                line.command,
                                tail(&log)
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(25));
                    }
                }
                continue;
            }
            let deadline = Instant::now() + COMMAND_LIMIT;
            let status = loop {
                if let Ok(Some(status)) = this.child.try_wait() {
                    break status;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{}: `{}` did not end within {COMMAND_LIMIT:?}:\n{}",
                        line.place,
                        line.command,
                        tail(&log)
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            if status.code() != Some(line.exit) {
                return Err(format!(
                    "{}: `{}` (run as `{command}`) exited with {status}, expected exit {}:\n{}",
                    line.place,
                    line.command,
                    line.exit,
                    tail(&log)
                ));
            }
            // A command that failed as promised (exit 1 or 2) prints no result.
            if let Some(problem) = json_problem(&line.command, &stdout)
                && !matches!(line.exit, 1 | 2)
            {
                return Err(format!("{}: `{}`: {problem}", line.place, line.command));
            }
        }
        // Background commands must still be running (or have ended well).
        for s in &mut started {
            if s.background
                && let Ok(Some(status)) = s.child.try_wait()
                && !status.success()
            {
                return Err(format!(
                    "{}: background `{}` exited with {status}:\n{}",
                    s.place,
                    s.command,
                    tail(&s.log)
                ));
            }
        }
        Ok(())
    })();
    for s in &mut started {
        stop(s);
    }
    result.map_err(|e| format!("session {}: {e}", session.place))
}

/// For a `serin … -o json` line: what is wrong with its stdout, which must
/// be one JSON document and nothing else.
fn json_problem(command: &str, stdout: &Path) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let json = words.first() == Some(&"serin")
        && words
            .windows(2)
            .any(|w| w == ["-o", "json"] || w == ["--output", "json"])
        && !command.contains('|')
        && !command.contains('>');
    if !json {
        return None;
    }
    let text = fs::read_to_string(stdout).unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "-o json must print one JSON document on stdout: {e}; stdout was:\n{}",
            text.chars().take(2000).collect::<String>()
        )),
    }
}

/// The address a command listens on: its `--listen`.
fn listen_address(command: &str) -> Option<SocketAddr> {
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--listen" {
            return words.next()?.parse().ok();
        }
        if let Some(v) = w.strip_prefix("--listen=") {
            return v.parse().ok();
        }
    }
    None
}

#[test]
fn every_command_line_in_the_readme_and_docs_runs_as_written() {
    let (sessions, mut problems, seen) = read_pages();
    for (line, why) in NOT_RUN {
        if !seen.iter().any(|s| s == line) {
            problems.push(format!(
                "NOT_RUN lists `{line}` ({why}), which no page has any more: remove it"
            ));
        }
    }
    let n: usize = sessions.iter().map(|s| s.lines.len()).sum();
    assert!(n >= 40, "only {n} command lines found: {sessions:#?}");
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter()
            .map(|s| scope.spawn(move || run_session(s)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("session thread").err())
            .collect()
    });
    problems.extend(failures);
    assert!(
        problems.is_empty(),
        "{} problem(s) with the pages' command lines ({n} lines in {} sessions run):\n\n{}",
        problems.len(),
        sessions.len(),
        problems.join("\n\n")
    );
}

/// The `--long` flags in the `Options:` of a `--help` text.
fn flags_in_help(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let t = l.trim_start();
            let t = match t.strip_prefix('-') {
                Some(short) if !short.starts_with('-') => t.split(", ").nth(1)?,
                _ => t,
            };
            let flag = t.strip_prefix("--")?.split([' ', '=']).next()?;
            (!flag.is_empty()).then(|| format!("--{flag}"))
        })
        .collect()
}

#[test]
fn the_cli_reference_names_every_command_and_flag() {
    let cli = fs::read_to_string(repo().join("docs/cli.md")).expect("docs/cli.md");
    let help = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("serin --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 19, "{help}");
    let mut missing = Vec::new();
    for command in &commands {
        let heading = format!("`serin {command}");
        if !cli.lines().any(|l| {
            l.starts_with("## ")
                && (l.contains(&format!("{heading}`")) || l.contains(&format!("{heading} ")))
        }) {
            missing.push(format!("a section `## `serin {command}…`"));
        }
        let out = Command::new(BIN)
            .args([command.as_str(), "--help"])
            .output()
            .expect("serin CMD --help");
        for flag in flags_in_help(&String::from_utf8_lossy(&out.stdout)) {
            if !cli.contains(&format!("`{flag}")) && !cli.contains(&format!("{flag} ")) {
                missing.push(format!("`serin {command} {flag}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/cli.md does not name: {}",
        missing.join(", ")
    );
}

#[test]
fn the_api_reference_names_every_endpoint() {
    let api = fs::read_to_string(repo().join("docs/api.md")).expect("docs/api.md");
    let server =
        fs::read_to_string(repo().join("crates/serin/src/api/server.rs")).expect("server.rs");
    let mut missing = Vec::new();
    let mut n = 0;
    for line in server.lines() {
        let Some(rest) = line.trim().strip_prefix(".route(\"") else {
            continue;
        };
        let Some((path, handlers)) = rest.split_once('"') else {
            continue;
        };
        let path = path.replace("{name}", "NAME");
        for method in ["get", "post", "put", "delete"] {
            if handlers.contains(&format!("{method}(")) {
                n += 1;
                let endpoint = format!("`{} {path}`", method.to_uppercase());
                if !api.contains(&endpoint) {
                    missing.push(endpoint);
                }
            }
        }
    }
    assert!(n >= 15, "{n} endpoints read from server.rs");
    assert!(
        missing.is_empty(),
        "docs/api.md does not name: {}",
        missing.join(", ")
    );
}

/// The relative link targets in a page's text: `](target)`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

#[test]
fn the_pages_link_only_to_files_in_the_repository() {
    let root = repo().canonicalize().expect("repo");
    let mut pages = vec![root.join("README.md")];
    for e in fs::read_dir(root.join("docs")).expect("docs/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|e| e == "md") {
            pages.push(p);
        }
    }
    let mut problems = Vec::new();
    for page in &pages {
        let text = fs::read_to_string(page).expect("page");
        for target in links(&text) {
            let file = target.split('#').next().unwrap_or("");
            if file.is_empty() || target.starts_with("http://") || target.starts_with("https://") {
                // Within the page, or a web address (README: none at all).
                if page.ends_with("README.md") && !file.is_empty() {
                    problems.push(format!("README.md links outside the repository: {target}"));
                }
                continue;
            }
            let resolved = page.parent().expect("dir").join(file);
            match resolved.canonicalize() {
                Ok(p) if p.starts_with(&root) => {}
                Ok(p) => problems.push(format!(
                    "{}: `{target}` is outside the repository ({})",
                    page.display(),
                    p.display()
                )),
                Err(e) => problems.push(format!("{}: `{target}`: {e}", page.display())),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_of_the_pages_finds_commands_comments_and_continuations() {
    let page = "text\n```sh\nserin a   # exit 3: bad\nserin b \\\n  --x 'y # z' &\n```\n\
                ```sh continues\nserin c\n```\n```text\n$ serin d\n```\n```\nx\n```\n";
    let mut sessions = Vec::new();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    read_page("p.md", page, &mut sessions, &mut problems, &mut seen);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let lines = &sessions[0].lines;
    assert_eq!(lines.len(), 3);
    assert_eq!((lines[0].command.as_str(), lines[0].exit), ("serin a", 3));
    assert_eq!(lines[1].command, "serin b    --x 'y # z'");
    assert!(lines[1].background && !lines[0].background);
    assert_eq!(lines[2].place, "p.md:8");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("p.md:11: a command line in a ```text block"));
    assert!(problems[1].contains("p.md:13: a fenced block without a language"));
    let ports: BTreeMap<u16, u16> = [(8080, 20001), (9001, 20002)].into();
    assert_eq!(
        map_ports("http://127.0.0.1:8080/ 127.0.0.1:9001 127.0.0.1:7", &ports),
        "http://127.0.0.1:20001/ 127.0.0.1:20002 127.0.0.1:7"
    );
}
