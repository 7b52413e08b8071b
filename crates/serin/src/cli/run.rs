//! `serin run FILE`: one rollout in the foreground — proxy, analysis and
//! state in this process — exiting with its outcome (0 promoted, 3 rolled
//! back by analysis, 4 stopped by an operator, 1 runtime failure, 2 bad file).
//!
//! On a terminal it draws a progress bar; otherwise (CI logs, pipes) it
//! prints one line per event. A closed output (`| head -3`) never stops the
//! rollout: what cannot be written is dropped, and the rollout goes on to
//! its end. Ctrl-C is an operator's stop: the canary's
//! weight goes to 0 before the process exits (exit 4).

use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serin_proxy::Weight;

use crate::api::guard::Guard;
use crate::cli::output::OutputFormat;
use crate::cli::serve::{DEFAULT_STATE_DIR, StateArgs};
use crate::controller::driver::{DriverError, Health, Progress};
use crate::controller::machine::Input;
use crate::daemon::Daemon;
use crate::error::{Error, Kind};
use crate::exit::{Exit, invalid};
use crate::rollout::{Decision, DecisionKind, Phase, RecordedVerdict, State, Stop};
use crate::runtime::{DataPlane, RunningDriver, Setup};
use crate::statedir;
use crate::store::{RolloutRecord, Sample, Store};
use crate::time::{self, rfc3339};

/// Flags of `serin run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rollout file.
    pub file: PathBuf,
    #[command(flatten)]
    pub state: StateArgs,
    /// Also write the HTML report here when the rollout ends.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// The outcome of a finished run as an exit code: 0 promoted, 4 stopped
/// from outside (an operator, `serin monitor`, a signal), 3 rolled back by
/// the rollout's own checks; 1 when it did not end.
pub fn exit_for(record: &RolloutRecord) -> Exit {
    match &record.state.outcome {
        Some(o) if o.promoted() => Exit::Success,
        Some(o) if o.stopped_from_outside() => Exit::Stopped,
        Some(_) => Exit::RolledBack,
        None => Exit::Runtime,
    }
}

pub fn run(args: Args, output: OutputFormat) -> anyhow::Result<Exit> {
    let text = crate::spec::read_text(&args.file)
        .map_err(|e| invalid(format!("{}: {e}", args.file.display())))?;
    let setup =
        (crate::runtime::parser())(&text, &args.file.display().to_string()).map_err(invalid)?;
    let store = args.state.open()?;
    let rt = crate::runtime::tokio_runtime()?;
    rt.block_on(run_serving(
        setup,
        text,
        store,
        args.report,
        output,
        Some(&args.state.state_dir),
    ))
}

/// Runs `setup` to its end; shared by `serin run` and the demo tour.
pub async fn run_setup(
    setup: Setup,
    text: String,
    store: Store,
    report: Option<PathBuf>,
    output: OutputFormat,
) -> anyhow::Result<Exit> {
    run_serving(setup, text, store, report, output, None).await
}

/// Runs `setup` to its end, serving the API for it while it runs when
/// `api_dir` (the state dir, where `api.json` says where) is given.
///
/// The rollout runs inside a [`Daemon`] of its own ([`Daemon::for_run`]),
/// so `serin status`, `promote`, `rollback`, `pause`, `resume`, `traffic`,
/// `monitor` and the dashboard work on it as on `serin serve`'s.
async fn run_serving(
    setup: Setup,
    text: String,
    store: Store,
    report: Option<PathBuf>,
    output: OutputFormat,
    api_dir: Option<&Path>,
) -> anyhow::Result<Exit> {
    // The data plane starts before anything is written: a port in use or
    // nginx refusing the file (the machine's state, not the file's fault:
    // its kind, unavailable, exit 1, is kept) leaves no run behind that
    // never started (an outside breaker found "run 1 in progress" after
    // two such failures).
    let resumed = resumable(&store, &setup, &text);
    let weight = resumed
        .as_ref()
        .map_or(serin_proxy::Weight::ZERO, |r| r.state.weight);
    let carried_on = resumed.is_some();
    let plane = DataPlane::start(&setup, weight).await?;
    let record = match resumed {
        Some(record) => record,
        None => match register(&store, &setup, &text) {
            Ok(record) => record,
            Err(e) => {
                plane.stop().await;
                return Err(e);
            }
        },
    };
    let address = plane.addr;
    let driver = RunningDriver::spawn(&setup, store.clone(), record.clone(), &plane);
    let handle = driver.handle.clone();
    let mut progress = handle.subscribe();
    let mut health = handle.watch_health();
    let token = api_dir.map(|_| new_token());
    let daemon = Daemon::for_run(
        store.clone(),
        token.clone(),
        crate::runtime::parser(),
        &setup.name,
    );
    // A run carried on from an earlier serin: its proxy counts from now,
    // not from the run's start, and status says so.
    daemon.adopt(setup.clone(), plane, driver, carried_on);
    let mut view = View::new(&setup, &record, output);
    // A run carried on from an earlier process: its would-roll-backs so far
    // count in the summary too (they are in the store, not seen here).
    if carried_on {
        view.would_roll_back = store
            .run_events(&record.name, record.run)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e.decision.kind == DecisionKind::WouldRollBack)
                    .count()
            })
            .unwrap_or(0);
    }
    view.line(&format!(
        "{}: {} → {} through {} ({} steps; run {})",
        setup.name,
        setup.stable_version,
        setup.canary_version,
        address.map_or_else(|| "the cluster".to_string(), |a| a.to_string()),
        setup.plan.steps.len(),
        record.run
    ));
    let api = match (api_dir, token) {
        (Some(dir), Some(token)) => RunApi::start(daemon.clone(), dir, token).await,
        _ => None,
    };
    if let (Some(api), Some(dir)) = (&api, api_dir) {
        let flag = if dir == Path::new(DEFAULT_STATE_DIR) {
            String::new()
        } else {
            format!(" --state-dir {}", dir.display())
        };
        view.line(&format!(
            "API and dashboard at {}/ (token in {}); from another shell: serin promote {}{flag}",
            api.url,
            dir.join(statedir::API_FILE).display(),
            setup.name,
        ));
    }
    let mut interrupted = false;
    // Interrupted, with the rollback in force but a state database that
    // cannot take it: why. The run ends without waiting for the database
    // (the rollback is recorded beside it and written on the next start).
    let mut store_stuck: Option<String> = None;
    // Made once: its handlers stay installed across the loop's turns (made
    // each turn, it re-read /proc and re-registered on every progress
    // event, and a signal between two turns could be missed).
    let signal = crate::cli::signals::which_or_hangup();
    tokio::pin!(signal);
    // Until the driver ends: it drops its side of the health channel then.
    loop {
        tokio::select! {
            p = progress.recv() => {
                if let Ok(p) = p {
                    view.show(&p);
                }
            }
            changed = health.changed() => {
                match changed {
                    Ok(()) => {
                        let h = health.borrow_and_update().clone();
                        view.health(&h);
                    }
                    Err(_) => break,
                }
            }
            signal = &mut signal, if !interrupted => {
                interrupted = true;
                view.line(&format!("interrupted: rolling back (all traffic to stable) on {signal}; interrupt again to exit at once"));
                let doc = (output == OutputFormat::Json).then(|| (record.name.clone(), record.run));
                exit_on_second_signal(api_dir.map(|d| d.join(statedir::API_FILE)), doc);
                let stop = Stop::Interrupted(signal.to_string());
                if let Err(e) = handle.command(Input::Rollback(stop)).await {
                    view.line(&format!("rollback refused: {e}"));
                }
            }
        }
        if interrupted && store_stuck.is_none() {
            store_stuck = rolled_back_but_unwritten(&health.borrow());
            if store_stuck.is_some() {
                break;
            }
        }
    }
    // Nothing commands an ended rollout: the API goes first.
    if let Some(api) = api {
        api.stop().await;
    }
    let Some(taken) = daemon
        .take_all()
        .await
        .into_iter()
        .find(|t| t.name == setup.name)
    else {
        return Err(Error::new(Kind::Internal, "the rollout left serin run's registry").into());
    };
    let result = match taken.driver {
        // One last write, then the driver stops: the rollback stays
        // recorded beside the database for the next start.
        Some(driver) if store_stuck.is_some() => driver.finish(std::future::ready(())).await,
        Some(driver) => driver.finish(std::future::pending()).await,
        None => Err(DriverError::Stopped),
    };
    // Drain what the driver said last.
    while let Ok(p) = progress.try_recv() {
        view.show(&p);
    }
    let record = result.map_err(|e| anyhow::anyhow!(e))?;
    if let (Some(_), Some(addr)) = (&taken.plane.proxy, taken.plane.addr) {
        view.line(&crate::cli::closing(
            &addr.to_string(),
            crate::cli::AFTER_RUN,
        ));
    }
    taken.plane.stop().await;
    // What the driver said last of what is in force.
    let last = health.borrow().clone();
    // The driver's last write may have got through after all.
    let unwritten = store_stuck.filter(|_| {
        store
            .get(&record.name)
            .map_or(true, |stored| stored.state.phase != record.state.phase)
    });
    if let Some(error) = &unwritten {
        // In force but not written: said as such, not as "NOT in force".
        let mut in_force = last.clone();
        in_force.store_error = None;
        in_force.unsaved = false;
        // The store's failure is said below, with what it means; nothing
        // says it was written ("writable again" was printed here before).
        view.told.1 = None;
        view.health(&in_force);
        view.done(&record, &in_force);
        let pending = store.pending_rollback_path(&record.name);
        let recorded = if pending.exists() {
            format!(
                "the rollback is recorded in {} and will be written on the next start (serin run or serin serve on this state dir)",
                pending.display()
            )
        } else {
            format!(
                "the rollback could not be recorded in {} either: the next start finds the run in progress and carries it on",
                pending.display()
            )
        };
        view.line(&format!(
            "the state database could not be written ({error}); all traffic is on stable; {recorded}"
        ));
    } else {
        view.health(&last);
        view.done(&record, &last);
    }
    if let Some(path) = report.as_ref().filter(|_| unwritten.is_some()) {
        view.line(&format!(
            "--report {}: not written (the state database does not have the run's end)",
            path.display()
        ));
    } else if let Some(path) = &report {
        // This run's report: its own decisions, samples and totals only.
        let r = crate::report::Report::load(&store, &record.name, Some(record.run))?;
        std::fs::write(path, r.to_html())
            .map_err(|e| invalid(format!("--report {}: {e}", path.display())))?;
        view.line(&format!("report written to {}", path.display()));
    }
    let exit = exit_for(&record);
    if output == OutputFormat::Json {
        let mut status = crate::daemon::status_of(&record, None, setup.plan.steps.len());
        if status.metrics.is_none() && record.state.phase.is_finished() {
            // The run's own figures, from its recorded intervals.
            status.metrics = crate::daemon::finished_run_metrics(&store, &record);
        }
        let document = serde_json::json!({
            "name": record.name,
            "run": record.run,
            "outcome": record.state.outcome,
            "exit": exit as i32,
            "reason": record.state.reason,
            "stableVersion": record.stable_version,
            "report": report,
            "status": status,
        });
        crate::cli::output::write_ignoring(
            true,
            &format!("{}\n", serde_json::to_string_pretty(&document)?),
        );
    }
    Ok(exit)
}

/// After an interrupt: why the store cannot take the rollback, when the
/// rollback is in force (all traffic on stable) and only the write is
/// missing; `None` while anything else is still pending.
fn rolled_back_but_unwritten(h: &Health) -> Option<String> {
    let in_force = h.weight_in_force == Some(Weight::ZERO)
        && h.weight_pending.is_none()
        && !h.promotion_pending;
    if in_force && h.unsaved {
        h.store_error.clone()
    } else {
        None
    }
}

/// After the first interrupt, a second one exits at once (exit 4), whatever
/// the rollback is waiting for; `api_file` (this run's `api.json`) is
/// removed on the way out. With `-o json` (`json`: the rollout's name and
/// run) stdout still gets its one document, saying the run did not end.
fn exit_on_second_signal(api_file: Option<PathBuf>, json: Option<(String, u32)>) {
    tokio::spawn(async move {
        let signal = crate::cli::signals::which_or_hangup().await;
        if let Some(bar) = active_bar() {
            bar.finish_and_clear();
        }
        restore_control_echo();
        let said = format!(
            "second interrupt ({signal}): exiting now; whatever was not in force or not written is carried on by the next start"
        );
        crate::cli::output::write_ignoring(false, &format!("{said}\n"));
        if let Some((name, run)) = json {
            let document = serde_json::json!({
                "name": name,
                "run": run,
                "outcome": null,
                "exit": Exit::Stopped as i32,
                "reason": said,
            });
            crate::cli::output::write_ignoring(
                true,
                &format!(
                    "{}\n",
                    serde_json::to_string_pretty(&document).unwrap_or_default()
                ),
            );
        }
        if let Some(file) = api_file {
            let _ = std::fs::remove_file(file);
        }
        std::process::exit(Exit::Stopped as i32);
    });
}

/// A new bearer token for `serin run`'s API: 32 random bytes in hex.
fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `serin run`'s API while its rollout runs: on a free loopback port,
/// written into `DIR/api.json` with its token.
struct RunApi {
    url: String,
    _published: Option<statedir::Published>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunApi {
    /// Serves `daemon`'s API; `None` (said in the log) if it cannot: the
    /// rollout runs without it.
    async fn start(daemon: Arc<Daemon>, dir: &Path, token: String) -> Option<RunApi> {
        let listener = match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "serin run serves no API (no loopback port: {e}); the rollout runs without it"
                );
                return None;
            }
        };
        let own = listener.local_addr().ok()?;
        let app = crate::api::server::router(daemon, Guard::new(own, &[]));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        let url = format!("http://{own}");
        let file = statedir::ApiFile {
            url: url.clone(),
            pid: std::process::id(),
            command: "run".into(),
            token: Some(token),
        };
        let published = statedir::publish(dir, &file)
            .inspect_err(|e| {
                tracing::warn!(
                    "cannot write {}: {e}; the CLI finds this serin run only with --api {url} and its token",
                    dir.join(statedir::API_FILE).display()
                );
            })
            .ok();
        Some(RunApi {
            url,
            _published: published,
            stop,
            task,
        })
    }

    /// `api.json` removed, the listener closed, requests in flight
    /// answered (5 s at most).
    async fn stop(self) {
        drop(self._published);
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// A rollout of the same name left in progress (a crash, a killed run) with
/// the same file carries on where it was; anything else starts afresh.
fn resumable(store: &Store, setup: &Setup, text: &str) -> Option<RolloutRecord> {
    store.get(&setup.name).ok().filter(|existing| {
        !existing.state.phase.is_finished()
            && existing.spec == text
            && existing.canary_version.as_deref() == Some(setup.canary_version.as_str())
    })
}

/// Registers the rollout afresh and starts a run of its own.
fn register(store: &Store, setup: &Setup, text: &str) -> anyhow::Result<RolloutRecord> {
    let now = time::now();
    let record = setup.record(text, Some(setup.canary_version.clone()), State::new(now));
    // A run left in progress (a killed serin run, a stopped `serin serve`,
    // another file) ends here, said on stderr. Nobody decided its end: the
    // process that ran it is gone.
    if let Ok(existing) = store.get(&setup.name)
        && let Some(said) = replaced(&existing, &record)
    {
        crate::errln!("{said}");
    }
    store.end_abandoned_run(
        &setup.name,
        "the serin that ran it (a serin run, or a serin serve) stopped without ending it; a new serin run of this rollout replaced it",
        now,
    )?;
    let record = store.register(&record, now)?;
    // Registered (outside any run), then a run of its own from zero.
    let by = crate::rollout::Actor::Cli;
    store.add_events(
        &record.name,
        0,
        &[crate::daemon::registered(&record, by, now)],
    )?;
    let said = crate::daemon::deployed(&record, by, now);
    Ok(store.start_run(&record, &[said], now)?)
}

/// What `serin run` says when it replaces `existing`'s run in progress
/// with `new` (another file, or the same after its run was cut short):
/// the run's number, where it was, and the fields that differ.
fn replaced(existing: &RolloutRecord, new: &RolloutRecord) -> Option<String> {
    let deployed = existing.canary_version.is_some();
    if existing.state.phase.is_finished() || !deployed || existing.run == 0 {
        return None;
    }
    let mut changed = Vec::new();
    let mut field = |what: &str, was: Option<&str>, now: Option<&str>| {
        if was != now {
            changed.push(format!(
                "{what} {} -> {}",
                was.unwrap_or("none"),
                now.unwrap_or("none")
            ));
        }
    };
    field(
        "stable version",
        Some(&existing.stable_version),
        Some(&new.stable_version),
    );
    field(
        "canary version",
        existing.canary_version.as_deref(),
        new.canary_version.as_deref(),
    );
    field(
        "stable upstream",
        existing.stable_upstream.as_deref(),
        new.stable_upstream.as_deref(),
    );
    field(
        "canary upstream",
        existing.canary_upstream.as_deref(),
        new.canary_upstream.as_deref(),
    );
    let differs = if changed.is_empty() && existing.spec != new.spec {
        "; the file differs (steps, checks or other settings)".to_string()
    } else if changed.is_empty() {
        "; the same file".to_string()
    } else {
        format!("; changed: {}", changed.join(", "))
    };
    Some(format!(
        "{}: replaces run {} in progress ({}, step {}, canary {} %), which no serin runs now: it ends as abandoned{differs}",
        existing.name,
        existing.run,
        existing.state.phase.as_str(),
        existing.state.step + 1,
        existing.state.weight,
    ))
}

/// The bar `serin run` draws, while it draws one, so that log lines
/// ([`LogWriter`]) are written above it instead of through it.
static ACTIVE_BAR: std::sync::Mutex<Option<ProgressBar>> = std::sync::Mutex::new(None);

fn active_bar() -> Option<ProgressBar> {
    ACTIVE_BAR.lock().map_or(None, |b| b.clone())
}

fn set_active_bar(bar: Option<ProgressBar>) {
    if let Ok(mut slot) = ACTIVE_BAR.lock() {
        *slot = bar;
    }
}

/// Where log lines (tracing) go: stderr, but while `serin run` draws its
/// progress bar the bar is cleared for the line and drawn again below it,
/// so a warning never leaves a torn copy of the bar on the screen.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log event, buffered and written whole when dropped.
#[derive(Debug)]
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        use std::io::Write as _;
        let text = std::mem::take(&mut self.0);
        let write = || {
            let _ = std::io::stderr().lock().write_all(&text);
        };
        match active_bar() {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }
}

/// Turns off the terminal's echo of control characters (`ECHOCTL`) while it
/// lives, and restores it on drop. indicatif pads the bar to the terminal's
/// width and leaves the cursor in its last column, so the `^C` a terminal
/// echoes for Ctrl-C wraps to a new line, and the bar as it was stays on the
/// screen above the rollback (what the operator sees last would be
/// `Progressing · canary 20 %`).
struct QuietControlEcho {
    fd: std::io::Stderr,
    saved: rustix::termios::Termios,
}

/// The terminal's settings before [`QuietControlEcho`], for an exit that
/// runs no destructors (a second interrupt).
static SAVED_ECHO: std::sync::Mutex<Option<rustix::termios::Termios>> = std::sync::Mutex::new(None);

/// Puts back what [`QuietControlEcho`] changed, if it did.
fn restore_control_echo() {
    if let Some(saved) = SAVED_ECHO.lock().ok().and_then(|mut s| s.take()) {
        let _ = rustix::termios::tcsetattr(
            std::io::stderr(),
            rustix::termios::OptionalActions::Now,
            &saved,
        );
    }
}

impl QuietControlEcho {
    fn on(fd: std::io::Stderr) -> Option<QuietControlEcho> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(&fd).ok()?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(LocalModes::ECHOCTL);
        tcsetattr(&fd, OptionalActions::Now, &quiet).ok()?;
        if let Ok(mut slot) = SAVED_ECHO.lock() {
            *slot = Some(saved.clone());
        }
        Some(QuietControlEcho { fd, saved })
    }
}

impl Drop for QuietControlEcho {
    fn drop(&mut self) {
        if let Ok(mut slot) = SAVED_ECHO.lock() {
            *slot = None;
        }
        let _ = rustix::termios::tcsetattr(
            &self.fd,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// While the state database cannot be written, what a rollout in
/// `phase` waits for instead of its stored reason, as `serin status` says
/// it: that reason may count down a pause whose end cannot be written, so
/// it would repeat a countdown that is not running.
fn store_failing(phase: Phase, health: &Health) -> Option<String> {
    let error = health.store_error.as_ref()?;
    if phase.is_finished() {
        return None;
    }
    let since = health
        .store_failing_since
        .map(|t| format!(" since {}", crate::time::clock(t)))
        .unwrap_or_default();
    Some(format!(
        "the state database cannot be written{since} ({error}): nothing moves forward (no step, no end of a pause, no promotion) until it can; a failing canary is still rolled back"
    ))
}

/// What a person sees: a bar on a terminal, lines elsewhere.
///
/// The bar is two lines:
/// ```text
/// checkout [=====>     ] step 2/6 · Progressing · canary 20 % · last verdict pass
///   pausing 1m: 40s left (until 12:04:04 UTC)
/// ```
/// the steps completed (the fill), the step as status numbers it, the phase, the weight in force and the
/// latest verdict; below, what the rollout waits for (its status reason,
/// cut to the terminal's width), as a log file says it every 30 s.
struct View {
    bar: Option<ProgressBar>,
    /// The bar's first line after the fill (the bar's message is the
    /// second line, the waiting reason).
    status: std::sync::Arc<std::sync::Mutex<String>>,
    /// The reason of the last decision, which a log already has a line of.
    decided: String,
    /// The terminal's echo of control characters, off while the bar is drawn.
    _echo: Option<QuietControlEcho>,
    steps: usize,
    json: bool,
    weight: Weight,
    phase: Phase,
    verdict: String,
    /// What the last health told: (not in force, store error), to print
    /// each change once.
    told: (Vec<String>, Option<String>),
    /// The last health seen, told again in the light of a new phase.
    last: Health,
    /// "Would have rolled back" decisions seen (advisory mode or checks).
    would_roll_back: usize,
}

/// Whether this process is in its terminal's foreground process group
/// (a job started with `&` is not: it may not change the terminal's modes).
fn in_foreground() -> bool {
    let stderr = std::io::stderr();
    rustix::termios::tcgetpgrp(&stderr).is_ok_and(|group| group == rustix::process::getpgrp())
}

impl View {
    fn new(setup: &Setup, record: &RolloutRecord, output: OutputFormat) -> View {
        let json = output == OutputFormat::Json;
        let steps = setup.plan.steps.len();
        let status = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        // A bar only in the terminal's foreground: `serin run … &` that
        // set the terminal's modes was stopped by SIGTTOU (frozen, its port
        // bound but never served); in the background it writes lines.
        let bar = (!json && std::io::stderr().is_terminal() && in_foreground()).then(|| {
            let bar = ProgressBar::new(steps as u64);
            let shown = status.clone();
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:.bold} [{bar:30.cyan/blue}] {status}\n  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "status",
                    move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        if let Ok(s) = shown.lock() {
                            let _ = w.write_str(&s);
                        }
                    },
                )
                .progress_chars("=> "),
            );
            bar.set_prefix(setup.name.clone());
            bar.set_message(record.state.reason.clone());
            bar.set_position(record.state.step.min(steps) as u64);
            bar.enable_steady_tick(Duration::from_millis(250));
            set_active_bar(Some(bar.clone()));
            bar
        });
        let view = View {
            _echo: bar
                .as_ref()
                .and_then(|_| QuietControlEcho::on(std::io::stderr())),
            bar,
            status,
            decided: String::new(),
            steps,
            json,
            weight: record.state.weight,
            phase: record.state.phase,
            verdict: String::new(),
            told: (Vec::new(), None),
            last: Health::default(),
            would_roll_back: 0,
        };
        view.redraw();
        view
    }

    /// The bar's text after the fill.
    fn message(&self, done: u64) -> String {
        // The step as status numbers it (the fill shows the steps done).
        let mut m = format!(
            "step {}/{} · {} · canary {} %",
            crate::wire::step_number(usize::try_from(done).unwrap_or(usize::MAX), self.steps),
            self.steps,
            self.phase.as_str(),
            self.weight
        );
        if !self.verdict.is_empty() {
            m.push_str(" · last verdict ");
            m.push_str(&self.verdict);
        }
        m
    }

    fn redraw(&self) {
        if let Some(bar) = &self.bar {
            if let Ok(mut s) = self.status.lock() {
                *s = self.message(bar.position());
            }
            bar.tick();
        }
    }

    /// A line above the bar (or on stderr without one); JSON mode keeps
    /// stdout for the final document.
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => crate::cli::output::write_ignoring(false, &format!("{text}\n")),
        }
    }

    fn show(&mut self, p: &Progress) {
        match p {
            Progress::Decision(d) => {
                if let Some(bar) = &self.bar {
                    // A decision names the step it was made in; promotion
                    // comes after the last one.
                    let done = if d.kind == DecisionKind::Promoted {
                        self.steps
                    } else {
                        d.step.min(self.steps)
                    };
                    bar.set_position(done as u64);
                }
                // The bar shows the weight in force (from WeightApplied and
                // the health), never one only decided.
                self.phase = d.phase;
                if d.kind == DecisionKind::WouldRollBack {
                    self.would_roll_back += 1;
                }
                if let Some(v) = d.verdict {
                    self.verdict = v.to_string();
                }
                // Passing verdicts every interval would drown the log; the
                // bar shows the latest, and failures and steps get a line.
                let quiet =
                    d.kind == DecisionKind::Verdict && d.verdict != Some(RecordedVerdict::Fail);
                if !quiet || self.bar.is_none() {
                    self.line(&decision_line(d));
                }
                self.decided = d.reason.clone();
                let last = self.last.clone();
                self.health(&last);
            }
            Progress::Sample(s) => {
                if self.bar.is_none() && !self.json {
                    crate::cli::output::write_ignoring(false, &format!("{}\n", sample_line(s)));
                }
            }
            Progress::WeightApplied {
                weight,
                since_decision,
            } => {
                self.weight = *weight;
                tracing::debug!(%weight, ?since_decision, "weight applied");
            }
            Progress::RouterError(e) => {
                self.line(&format!("data plane refused a change (retrying): {e}"))
            }
            Progress::Waiting { reason, tell } => {
                // Not a countdown that is not running while the store fails.
                let failing = store_failing(self.phase, &self.last);
                match &self.bar {
                    Some(bar) => bar.set_message(failing.unwrap_or_else(|| reason.clone())),
                    // A log says it when it changes (unless the decision just
                    // said it, or the health check's warning does) and every
                    // 30 s while it stays; while the store fails, why nothing
                    // moves, every 30 s.
                    None if *tell
                        && (failing.is_some() || *reason != self.decided)
                        && self.phase != Phase::Initializing =>
                    {
                        let waiting = failing.unwrap_or_else(|| reason.clone());
                        self.line(&format!("{} waiting: {waiting}", rfc3339(time::now())))
                    }
                    None => {}
                }
            }
        }
        self.redraw();
    }

    /// Says, once per change, what the rollout decided that is not in
    /// force (a rollback nginx has not taken yet) and whether the state
    /// database can be written.
    fn health(&mut self, h: &Health) {
        self.last = h.clone();
        if let Some(w) = h.weight_in_force {
            self.weight = w;
        }
        let mut pending = h.clone();
        pending.store_error = None;
        if pending.router_error.is_none() {
            // A change on its way to the data plane (every promotion and
            // every step passes through this for a moment) is news only
            // when the data plane refuses it.
            pending.weight_pending = None;
            pending.promotion_pending = false;
        }
        let not_in_force = crate::wire::not_in_force(self.phase, &pending);
        if not_in_force != self.told.0 {
            for what in &not_in_force {
                self.line(what);
            }
            if not_in_force.is_empty() && !self.told.0.is_empty() {
                let w = h.weight_in_force.map_or("-".into(), |w| format!("{w} %"));
                self.line(&format!("now in force: canary {w}"));
            }
            self.told.0 = not_in_force;
        }
        if h.store_error != self.told.1 {
            match &h.store_error {
                Some(e) => self.line(&format!(
                    "state not written yet (nothing moves forward until it is; a failing canary is still rolled back): {e}"
                )),
                None => self.line("state database writable again: state written"),
            }
            self.told.1 = h.store_error.clone();
        }
        self.redraw();
    }

    fn done(&self, record: &RolloutRecord, health: &Health) {
        if let Some(bar) = &self.bar {
            set_active_bar(None);
            bar.finish_and_clear();
        }
        let not_in_force = crate::wire::not_in_force(record.state.phase, health);
        let outcome = match record.state.phase {
            _ if !not_in_force.is_empty() && record.state.phase.is_finished() => format!(
                "{} decided but NOT in force: {} ({})",
                record.state.phase.as_str(),
                not_in_force.join("; "),
                record.state.reason
            ),
            Phase::Succeeded => format!("promoted: {} is the new stable", record.stable_version),
            // An outcome's words already say "rolled back ...".
            Phase::RolledBack if record.state.reason.starts_with("rolled back") => {
                record.state.reason.clone()
            }
            Phase::RolledBack => format!("rolled back: {}", record.state.reason),
            p => format!("stopped in phase {}", p.as_str()),
        };
        self.line(&format!("{}: {outcome}", record.name));
        if let Some(said) = advisory_summary(self.would_roll_back) {
            self.line(&format!("{}: {said}", record.name));
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.bar.is_some() {
            set_active_bar(None);
        }
    }
}

/// The final summary's advisory line, when the judge would have rolled
/// back at least once.
fn advisory_summary(would_roll_back: usize) -> Option<String> {
    match would_roll_back {
        0 => None,
        1 => Some("advisory: would have rolled back 1 time".into()),
        n => Some(format!("advisory: would have rolled back {n} times")),
    }
}

fn decision_line(d: &Decision) -> String {
    // The canary's weight after a promotion is 0 % because the canary is
    // the stable now: "weight 0 % promoted" read as promoted at 0 %.
    if d.kind == DecisionKind::Promoted {
        return format!(
            "{} step {} promoted (all traffic on the new stable): {}",
            rfc3339(d.at),
            d.step + 1,
            d.reason
        );
    }
    format!(
        "{} step {} weight {} % {}{}: {}",
        rfc3339(d.at),
        d.step + 1,
        d.weight,
        d.kind.as_str(),
        d.verdict.map(|v| format!(" {v}")).unwrap_or_default(),
        d.reason
    )
}

fn sample_line(s: &Sample) -> String {
    let rate = |v: &crate::store::VersionSample| {
        v.error_rate().map_or("-".to_string(), |r| {
            format!("{:.2}% of {}", 100.0 * r, v.requests)
        })
    };
    let p95 =
        |v: &crate::store::VersionSample| v.p95_ms.map_or("-".to_string(), |p| format!("{p:.1}ms"));
    format!(
        "{} interval: stable errors {} p95 {} | canary errors {} p95 {} | {}",
        rfc3339(s.at),
        rate(&s.stable),
        p95(&s.stable),
        rate(&s.canary),
        p95(&s.canary),
        s.verdict
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn replacing_a_run_in_progress_names_it_and_what_changed() {
        use super::*;
        let record = |canary: &str, spec: &str| RolloutRecord {
            name: "a".into(),
            spec: spec.into(),
            stable_version: "v1".into(),
            canary_version: Some(canary.into()),
            former_stable_version: None,
            stable_upstream: Some("http://127.0.0.1:1".into()),
            canary_upstream: Some("http://127.0.0.1:2".into()),
            state: State::new(crate::time::Millis(5)),
            last_verdict: None,
            generation: 0,
            run: 3,
        };
        let mut existing = record("v2", "x");
        existing.state.phase = Phase::Paused;
        let said = replaced(&existing, &record("v3", "y")).unwrap();
        assert!(
            said.starts_with("a: replaces run 3 in progress (Paused"),
            "{said}"
        );
        assert!(said.contains("changed: canary version v2 -> v3"), "{said}");
        let said = replaced(&existing, &record("v2", "y")).unwrap();
        assert!(said.contains("the file differs"), "{said}");
        existing.state.phase = Phase::Succeeded;
        assert_eq!(replaced(&existing, &record("v3", "y")), None);
    }

    #[test]
    fn while_the_store_fails_the_wait_says_so_not_a_countdown() {
        use super::*;
        let mut health = Health::default();
        assert_eq!(store_failing(Phase::Paused, &health), None);
        health.store_error = Some("database or disk is full".into());
        health.store_failing_since = Some(crate::time::Millis(0));
        let said = store_failing(Phase::Paused, &health).unwrap();
        assert!(said.starts_with("the state database cannot be written since 00:00:00 UTC (database or disk is full): nothing moves forward"), "{said}");
        assert_eq!(store_failing(Phase::RolledBack, &health), None);
    }

    use super::*;

    #[test]
    fn the_summary_counts_would_roll_back_only_when_there_is_one() {
        assert_eq!(advisory_summary(0), None);
        assert_eq!(
            advisory_summary(3).as_deref(),
            Some("advisory: would have rolled back 3 times")
        );
    }

    #[test]
    fn a_promotion_is_not_said_as_weight_0_percent() {
        let d = Decision {
            at: crate::time::Millis(0),
            kind: DecisionKind::Promoted,
            step: 3,
            weight: Weight::ZERO,
            phase: Phase::Succeeded,
            verdict: None,
            reason: "promoted (all steps completed); the canary is the new stable".into(),
        };
        let line = decision_line(&d);
        assert!(!line.contains("weight 0 %"), "{line}");
        assert!(
            line.contains("step 4 promoted (all traffic on the new stable): promoted"),
            "{line}"
        );
    }
}
