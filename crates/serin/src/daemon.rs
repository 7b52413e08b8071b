//! The daemon's state: every registered rollout with its data plane and, while
//! a rollout is in progress, its driver. The HTTP API (`api::server`) is a thin
//! layer over these methods.
//!
//! # Lifecycle of a rollout in the daemon
//! - `register` (`serin init`): the file is validated, stored, and its proxy
//!   starts listening with all traffic on stable. No canary yet.
//! - `deploy`: a canary version (and optionally its upstream) starts the
//!   steps; a driver task runs them.
//! - Operator commands go to the driver; they are refused (409) when no
//!   rollout is in progress.
//! - `cleanup`: weight 0, driver and proxy stopped, the rollout forgotten.
//! - On start, every stored rollout gets its proxy back at its persisted
//!   weight, and every rollout in progress its driver. A rollout that cannot
//!   be started (a row that does not read, a file no longer valid, a command
//!   not allowed) is reported in its status as not running; the others
//!   start. One whose data plane cannot start for want of something that may
//!   come back (`nginx -t` failing, an address in use) is not abandoned: the
//!   daemon keeps trying to start it in the background (1 s, doubling to
//!   10 s), its status says its weight is not in force and why, and once
//!   the plane starts the stored weight is in force and its driver runs.
//!
//! # Locks
//! Nothing the API reads waits for the outside world. The registry (a map
//! from name to `Slot`) is behind a plain mutex held only to look a name
//! up or to put one in, never across an `.await`. Each running rollout is
//! behind its own lock, held only to read or change it in memory (status,
//! metrics, a deploy, a command's driver handle), never across an nginx
//! reload, a Kubernetes call, a webhook flush or a proxy drain.
//!
//! What does talk to the outside for a rollout (registering it, cleaning it
//! up, starting its data plane again, stopping it at shutdown) first
//! *reserves* its name: under the map lock the name's slot becomes
//! `Slot::Reserved` and the running entry, if any, is taken out. The
//! caller then works with no lock held; another caller that wants the same
//! name (a second `register`, a `cleanup`, a command) waits until the
//! reservation ends (a channel closing), then looks again, so two callers
//! never change one rollout at once. Readers do not wait: a reserved
//! rollout is reported from its stored record alone, without live figures.
//! The reservation ends by putting a running entry under the name, or by
//! leaving the name free (the rollout no longer runs here).
//!
//! # Commands
//! A rollout file sent over the API never makes the daemon run a program the
//! operator did not name: the nginx provider's test and reload commands must
//! each be given to `serin serve --allow-command` exactly ([`Commands`]).
//!
//! # Files
//! Nor does it make the daemon write or read a file the operator did not
//! allow: the nginx provider's include file (which the daemon writes,
//! replaces and removes) and access log (which nginx writes and the daemon
//! reads) must each lie inside a directory given to `serin serve
//! --allow-path` ([`Paths`]): an absolute path without `..`, symbolic links
//! resolved as far as the path exists. `serin run` (a local file, run by
//! its own operator) is not restricted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serin_proxy::{RolloutMetrics, RoutingTable, Version, VersionSnapshot, Weight};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use crate::controller::driver::DriverError;
use crate::controller::driver::Health;
use crate::controller::machine::Input;
use crate::error::Kind;
use crate::report::{History, Report};
use crate::rollout::{Actor, Decision, DecisionKind, Outcome, Phase, State};
use crate::runtime::{DataPlane, Parser, RunningDriver, Setup};
use crate::store::{RolloutRecord, Store, StoreError};
use crate::time::{self, rfc3339};
use crate::wire::{self, DeployRequest, RolloutStatus};

/// Why a daemon operation failed; the API maps each kind to a status.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// No such rollout (404).
    #[error("{0}")]
    NotFound(String),
    /// Not allowed by the operator's configuration (403).
    #[error("{0}")]
    Refused(String),
    /// The command does not fit the rollout's phase (409).
    #[error("{0}")]
    Conflict(String),
    /// Something serin depends on cannot answer now: the state database is
    /// locked or busy, a port is taken, nginx refuses or does not serve the
    /// change (503; the same request may succeed later).
    #[error("{0}")]
    Unavailable(String),
    /// Our fault (500).
    #[error("{0}")]
    Internal(String),
}

impl DaemonError {
    /// What kind of failure this is: the API's status comes from it
    /// ([`Kind::status`]).
    pub fn kind(&self) -> Kind {
        match self {
            DaemonError::Invalid(_) => Kind::Invalid,
            DaemonError::NotFound(_) => Kind::NotFound,
            DaemonError::Refused(_) => Kind::Refused,
            DaemonError::Conflict(_) => Kind::Conflict,
            DaemonError::Unavailable(_) => Kind::Unavailable,
            DaemonError::Internal(_) => Kind::Internal,
        }
    }
}

impl From<crate::error::Error> for DaemonError {
    fn from(e: crate::error::Error) -> DaemonError {
        let message = e.to_string();
        match e.kind() {
            Kind::Invalid => DaemonError::Invalid(message),
            Kind::NotFound => DaemonError::NotFound(message),
            Kind::Refused => DaemonError::Refused(message),
            Kind::Conflict => DaemonError::Conflict(message),
            Kind::Unavailable => DaemonError::Unavailable(message),
            Kind::Internal => DaemonError::Internal(message),
        }
    }
}

impl From<StoreError> for DaemonError {
    fn from(e: StoreError) -> DaemonError {
        match e {
            StoreError::NotFound(name) => DaemonError::NotFound(format!("no rollout named {name}")),
            StoreError::NoRun { .. } => DaemonError::NotFound(e.to_string()),
            StoreError::Conflict(_) => DaemonError::Conflict(e.to_string()),
            StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(ref f, _),
                ..
            } if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
            {
                DaemonError::Unavailable(e.to_string())
            }
            StoreError::Dir { .. } | StoreError::Owned(_) => {
                DaemonError::Unavailable(e.to_string())
            }
            other => DaemonError::Internal(other.to_string()),
        }
    }
}

impl From<DriverError> for DaemonError {
    fn from(e: DriverError) -> DaemonError {
        match e {
            DriverError::Refused(r) => DaemonError::Conflict(r.0),
            DriverError::Store(s) => s.into(),
            DriverError::Stopped => {
                DaemonError::Conflict("the rollout is no longer in progress".into())
            }
        }
    }
}

/// The programs the operator allowed rollout files to run (`serin serve
/// --allow-command`), each as its words.
#[derive(Debug, Clone, Default)]
pub struct Commands(Vec<Vec<String>>);

impl Commands {
    /// From `--allow-command` values, split on white space as rollout files'
    /// commands are.
    pub fn new(allowed: &[String]) -> Commands {
        Commands(
            allowed
                .iter()
                .map(|c| crate::providers::traffic::nginx::argv(c))
                .filter(|argv| !argv.is_empty())
                .collect(),
        )
    }

    /// Whether every command `setup` would run was allowed, word for word;
    /// if not, which are missing and how to allow them.
    pub fn check(&self, setup: &Setup) -> Result<(), String> {
        let mut missing = Vec::new();
        if let crate::runtime::PlaneKind::Nginx(n) = &setup.plane {
            for (field, argv) in [
                ("traffic.nginx.test", &n.test),
                ("traffic.nginx.reload", &n.reload),
            ] {
                if !self.0.contains(argv) {
                    missing.push((field, argv.join(" ")));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let fields: Vec<String> = missing
            .iter()
            .map(|(field, command)| format!("{field} runs `{command}`"))
            .collect();
        let flags: Vec<String> = missing
            .iter()
            .map(|(_, command)| format!("--allow-command {}", shell_quote(command)))
            .collect();
        Err(format!(
            "rollout {}: {}, which this daemon was not allowed to run; the daemon runs only commands \
             from its own configuration: start serin serve with {} (or run the file locally with serin run)",
            setup.name,
            fields.join(" and "),
            flags.join(" ")
        ))
    }
}

/// The directories the operator allowed rollout files' files to lie in
/// (`serin serve --allow-path`), each resolved (absolute, symbolic links
/// followed).
#[derive(Debug, Clone, Default)]
pub struct Paths(Vec<PathBuf>);

impl Paths {
    /// From `--allow-path` values: each must be an existing directory.
    pub fn new(allowed: &[PathBuf]) -> Result<Paths, String> {
        allowed
            .iter()
            .map(|dir| {
                let resolved = std::fs::canonicalize(dir).map_err(|e| {
                    format!(
                        "--allow-path {}: expected an existing directory: {e}",
                        dir.display()
                    )
                })?;
                if !resolved.is_dir() {
                    return Err(format!(
                        "--allow-path {}: expected a directory, not a file",
                        dir.display()
                    ));
                }
                Ok(resolved)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Paths)
    }

    /// Whether every file `setup` would make the daemon write or read lies
    /// inside an allowed directory; if not, which fields and how to allow them.
    pub fn check(&self, setup: &Setup) -> Result<(), String> {
        let crate::runtime::PlaneKind::Nginx(n) = &setup.plane else {
            return Ok(());
        };
        let mut problems = Vec::new();
        let mut dirs = Vec::new();
        for (field, what, path) in [
            ("traffic.nginx.include", "writes", &n.include),
            ("traffic.nginx.accessLog", "reads", &n.access_log),
        ] {
            match resolve(path) {
                Err(why) => problems.push(format!("{field}: {why}, got `{}`", path.display())),
                Ok(real)
                    if self
                        .0
                        .iter()
                        .any(|dir| real.starts_with(dir) && real != *dir) => {}
                Ok(real) => {
                    let shown = if real == *path {
                        format!("`{}`", path.display())
                    } else {
                        format!("`{}` (that is `{}`)", path.display(), real.display())
                    };
                    problems.push(format!(
                        "{field} {what} {shown}, outside the directories this daemon may use"
                    ));
                    let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let flags: Vec<String> = dirs
            .iter()
            .map(|d| format!("--allow-path {}", shell_quote(&d.display().to_string())))
            .collect();
        let fix = if flags.is_empty() {
            "give an absolute path without `..`".to_string()
        } else {
            format!(
                "the daemon writes and reads files only inside directories from its own configuration: \
                 start serin serve with {}",
                flags.join(" ")
            )
        };
        Err(format!(
            "rollout {}: {}; {fix} (or run the file locally with serin run)",
            setup.name,
            problems.join(" and ")
        ))
    }
}

/// Where `path` really is: absolute, without `.` or `..`, symbolic links
/// resolved as far as the path exists (what does not exist yet cannot be a
/// link).
fn resolve(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err("expected an absolute path".into());
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("expected a path without `..`".into());
    }
    let clean: PathBuf = path.components().collect();
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    loop {
        if existing.symlink_metadata().is_ok() {
            let mut real = std::fs::canonicalize(existing)
                .map_err(|e| format!("cannot resolve `{}`: {e}", existing.display()))?;
            for part in rest.iter().rev() {
                real.push(part);
            }
            return Ok(real);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Ok(clean),
        }
    }
}

/// `'text'` for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A rollout running here. Its setup (plan and steps included) is made
/// once, when it is registered or started, never from the file again.
struct Entry {
    setup: Setup,
    plane: DataPlane,
    driver: Option<RunningDriver>,
    /// The canary weight the plane took when the daemon started it again
    /// (what is in force while no driver runs; none after `register`).
    started_at: Option<Weight>,
    /// The proxy's figures when the current run was deployed: status counts
    /// from here (a new run starts from zero). None: from the proxy's start.
    run_baseline: Option<serin_proxy::RecorderSnapshot>,
    /// When the proxy started counting, when that is not the start of the
    /// current run (the daemon started it again, or no run is deployed):
    /// status says its figures count since then, not "this run".
    counting_since: Option<crate::time::Millis>,
}

/// What `register` did.
#[derive(Debug)]
pub enum Registered {
    /// Registered (first time, or again between runs): its status now.
    New(RolloutStatus),
    /// The file its run in progress runs was given again: nothing changed.
    Unchanged(RolloutStatus),
}

impl Registered {
    /// The rollout's status, either way.
    pub fn status(self) -> RolloutStatus {
        match self {
            Registered::New(s) | Registered::Unchanged(s) => s,
        }
    }
}

/// A running rollout behind its own lock, held only to read or change it
/// in memory; `None` once a [`Reservation`] has taken the entry out.
type Shared = Arc<Mutex<Option<Entry>>>;

/// A name in the registry (see "Locks" above).
enum Slot {
    /// The rollout runs here.
    Up(Shared),
    /// One caller holds the name while it talks to the outside for it; the
    /// channel closes when the caller is done.
    Reserved(watch::Receiver<()>),
}

impl Slot {
    fn up(entry: Entry) -> Slot {
        Slot::Up(Arc::new(Mutex::new(Some(entry))))
    }
}

/// A name one caller holds (`Slot::Reserved`). Dropping it leaves the
/// name free (nothing of the rollout runs here); [`Reservation::put`] puts
/// a running rollout under it. Either way, callers waiting for the name
/// look again.
struct Reservation<'a> {
    daemon: &'a Daemon,
    name: String,
    mine: watch::Receiver<()>,
    /// Closes the channel when dropped (after `Drop::drop` freed the name).
    _done: watch::Sender<()>,
}

impl Reservation<'_> {
    /// Ends the reservation with `entry` running under the name.
    fn put(self, entry: Entry) {
        self.daemon.map().insert(self.name.clone(), Slot::up(entry));
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut map = self.daemon.map();
        if matches!(map.get(&self.name), Some(Slot::Reserved(r)) if r.same_channel(&self.mine)) {
            map.remove(&self.name);
        }
    }
}

/// The registry of rollouts.
pub struct Daemon {
    store: Store,
    token: Option<String>,
    commands: Commands,
    paths: Paths,
    parse: Parser,
    /// The registry: held only to look up or put in a name.
    rollouts: std::sync::Mutex<BTreeMap<String, Slot>>,
    /// Stored rollouts that do not run here (none of them `Up` in
    /// `rollouts`), with why. Changed only by the caller that holds the
    /// name (or, at start, before the daemon is shared).
    down: std::sync::Mutex<BTreeMap<String, Down>>,
    /// `serin run`'s: the one rollout it runs (see [`Daemon::for_run`]).
    foreground: Option<String>,
    /// Where this daemon's API listens, once it does: no version's
    /// upstream may be it (its clients would reach the API).
    api: std::sync::OnceLock<std::net::SocketAddr>,
}

/// Why a stored rollout does not run in this daemon, with its plan's
/// number of steps (read once, for its status; 0 when the file does not
/// read).
enum Down {
    /// Its data plane could not start yet for want of something that may
    /// come back (the last error); a background task retries.
    Starting { last: String, steps: usize },
    /// It was not started and will not be (a row that does not read, a
    /// file no longer valid, what the operator did not allow).
    NotRunning { why: String, steps: usize },
}

/// The first wait before starting a data plane again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries.
const RETRY_MAX: Duration = Duration::from_secs(10);

impl Daemon {
    /// Opens the daemon over `store`, bringing back every stored rollout
    /// that can be: one that cannot is reported, the others start.
    pub async fn start(
        store: Store,
        token: Option<String>,
        commands: Commands,
        paths: Paths,
        parse: Parser,
    ) -> Result<Arc<Daemon>, DaemonError> {
        let daemon = Arc::new(Daemon {
            store,
            token,
            commands,
            paths,
            parse,
            rollouts: std::sync::Mutex::new(BTreeMap::new()),
            down: std::sync::Mutex::new(BTreeMap::new()),
            foreground: None,
            api: std::sync::OnceLock::new(),
        });
        let rows = daemon.store.list_each()?;
        // Each name once; a retry task spawned here touches only its own.
        for (name, row) in rows {
            let record = match row {
                Ok(r) => r,
                Err(e) => {
                    daemon.not_start(&name, format!("its row cannot be read: {e}"), 0);
                    continue;
                }
            };
            let setup = match daemon.setup_for(&record) {
                Ok(s) => s,
                Err(why) => {
                    daemon.not_start(&name, why, daemon.steps_in(&record.spec));
                    continue;
                }
            };
            let plane = match DataPlane::start(&setup, record.state.weight).await {
                Ok(p) => p,
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!(rollout = %name, "not started yet: {e}; retrying in {RETRY_FIRST:?}");
                    let steps = setup.plan.steps.len();
                    let down = Down::Starting { last: why, steps };
                    daemon.down_map().insert(name.clone(), down);
                    tokio::spawn(keep_starting(Arc::downgrade(&daemon), name));
                    continue;
                }
            };
            let entry = daemon.entry(setup, &record, plane);
            daemon.map().insert(record.name.clone(), Slot::up(entry));
        }
        Ok(daemon)
    }

    /// The daemon inside `serin run`: it runs the one rollout `serin run`
    /// gives it ([`Daemon::adopt`]) and answers the same API for it
    /// (status, commands, report, metrics); other stored rollouts are only
    /// read. It registers, deploys and cleans up nothing
    /// ([`Daemon::foreground`]).
    pub fn for_run(store: Store, token: Option<String>, parse: Parser, name: &str) -> Arc<Daemon> {
        Daemon::bare(store, token, parse, Some(name.to_string()))
    }

    /// A daemon that runs nothing, over a store no process serves: what
    /// `serin status`, `history` and `report` read it through
    /// (`cli::local`), so they answer as the API would.
    pub fn reader(store: Store, parse: Parser) -> Arc<Daemon> {
        Daemon::bare(store, None, parse, None)
    }

    fn bare(
        store: Store,
        token: Option<String>,
        parse: Parser,
        foreground: Option<String>,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            store,
            token,
            commands: Commands::new(&[]),
            paths: Paths(Vec::new()),
            parse,
            rollouts: std::sync::Mutex::new(BTreeMap::new()),
            down: std::sync::Mutex::new(BTreeMap::new()),
            foreground,
            api: std::sync::OnceLock::new(),
        })
    }

    /// Where this daemon's API listens (said once, when it does).
    pub fn serves_api_at(&self, addr: std::net::SocketAddr) {
        let _ = self.api.set(addr);
    }

    /// Why `upstream` is no server for a version: this daemon's API, or
    /// the address the rollout's proxy listens on (requests sent there
    /// come back through serin, not to a version).
    fn own_address(&self, upstream: &str, listen: Option<std::net::SocketAddr>) -> Option<String> {
        let is = |addr: std::net::SocketAddr| {
            crate::spec::same_server(upstream, &format!("http://{addr}"))
        };
        if let Some(api) = self.api.get().copied().filter(|a| is(*a)) {
            return Some(format!(
                "expected a version's server, got `{upstream}`, serin's own API at {api} (the service's clients would reach the API)"
            ));
        }
        listen.filter(|a| is(*a)).map(|a| {
            format!(
                "expected a version's server, got `{upstream}`, where serin's proxy listens ({a}: its requests would come back through serin's split)"
            )
        })
    }

    /// Puts `serin run`'s rollout, already running, under its name;
    /// `carried_on`: its run began under an earlier serin, so the figures
    /// count from now (status says since when), not over the whole run.
    pub fn adopt(&self, setup: Setup, plane: DataPlane, driver: RunningDriver, carried_on: bool) {
        let name = setup.name.clone();
        let entry = Entry {
            setup,
            plane,
            driver: Some(driver),
            started_at: None,
            // The plane was started for this run: it counts from its start;
            // a run carried on began earlier.
            run_baseline: None,
            counting_since: carried_on.then(time::now),
        };
        self.map().insert(name, Slot::up(entry));
    }

    /// The rollout `serin run` runs, when this is `serin run`'s daemon.
    pub fn foreground(&self) -> Option<&str> {
        self.foreground.as_deref()
    }

    /// A started rollout's entry: its plane and, while it is in progress,
    /// its driver (which applies the stored state again).
    fn entry(&self, setup: Setup, record: &RolloutRecord, plane: DataPlane) -> Entry {
        let driver = (record.canary_version.is_some() && !record.state.phase.is_finished())
            .then(|| RunningDriver::spawn(&setup, self.store.clone(), record.clone(), &plane));
        if driver.is_some() {
            tracing::info!(rollout = %record.name, phase = record.state.phase.as_str(), step = record.state.step, weight = %record.state.weight, "resumed");
        }
        Entry {
            setup,
            plane,
            driver,
            started_at: Some(record.state.weight),
            // A plane started again counts from its start, not the run's:
            // status says so.
            run_baseline: None,
            counting_since: Some(time::now()),
        }
    }

    /// One try at starting a rollout whose data plane could not start:
    /// `Ok` when it runs now or no longer waits (cleaned up, registered
    /// again, the daemon stopping), the error to retry on otherwise. Nothing
    /// is held while the plane starts; the name is held to put it in.
    async fn start_again(&self, name: &str) -> Result<(), String> {
        let record = match self.store.get(name) {
            Ok(r) => r,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(format!("the state database: {e}")),
        };
        // Neither the file nor the policy changes while the daemon runs;
        // should either fail, the rollout is not started, as at start.
        let setup = match self.setup_for(&record) {
            Ok(s) => s,
            Err(why) => {
                let (held, running) = self.reserve(name).await;
                match running {
                    Some(entry) => held.put(entry),
                    None if self.why_starting(name).is_some() => {
                        self.not_start(name, why, self.steps_in(&record.spec));
                    }
                    None => {}
                }
                return Ok(());
            }
        };
        let plane = DataPlane::start(&setup, record.state.weight)
            .await
            .map_err(|e| e.to_string())?;
        let (held, running) = self.reserve(name).await;
        if let Some(entry) = running {
            // Registered again meanwhile.
            held.put(entry);
            plane.stop().await;
            return Ok(());
        }
        if self.why_starting(name).is_none() {
            drop(held);
            plane.stop().await;
            return Ok(());
        }
        // An operator's rollback (taken with the name held) while the plane
        // started: the plane took the weight before it; start again.
        if self.store.get(name).ok().map(|r| r.generation) != Some(record.generation) {
            drop(held);
            plane.stop().await;
            return Err("the rollout changed while its data plane started".into());
        }
        self.down_map().remove(name);
        tracing::info!(rollout = %name, weight = %record.state.weight, "started: the stored weight is in force");
        let entry = self.entry(setup, &record, plane);
        held.put(entry);
        Ok(())
    }

    fn down_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The registry, locked: only to look up or put in a name (a
    /// `std::sync` guard, so it cannot be held across an `.await` in the
    /// API's futures).
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds `name` for this caller, waiting while another holds it; the
    /// entry that ran under it, if any, comes out with it (see "Locks").
    async fn reserve(&self, name: &str) -> (Reservation<'_>, Option<Entry>) {
        loop {
            let found = {
                let mut map = self.map();
                match map.get(name) {
                    Some(Slot::Reserved(other)) => Err(other.clone()),
                    _ => {
                        let (done, mine) = watch::channel(());
                        let old = map.insert(name.to_string(), Slot::Reserved(mine.clone()));
                        let taken = match old {
                            Some(Slot::Up(shared)) => Some(shared),
                            _ => None,
                        };
                        let held = Reservation {
                            daemon: self,
                            name: name.to_string(),
                            mine,
                            _done: done,
                        };
                        Ok((taken, held))
                    }
                }
            };
            match found {
                Ok((taken, held)) => {
                    // A reader or a deploy may have it locked for a moment.
                    let entry = match taken {
                        Some(shared) => shared.lock().await.take(),
                        None => None,
                    };
                    return (held, entry);
                }
                // Resolves (as an error) once that caller is done.
                Err(mut other) => {
                    let _ = other.changed().await;
                }
            }
        }
    }

    /// The running rollout `name`, locked (for in-memory work only),
    /// waiting while a caller holds the name; `None` if it does not run here.
    async fn locked(&self, name: &str) -> Option<OwnedMutexGuard<Option<Entry>>> {
        loop {
            let slot = match self.map().get(name) {
                None => return None,
                Some(Slot::Up(shared)) => Ok(shared.clone()),
                Some(Slot::Reserved(other)) => Err(other.clone()),
            };
            match slot {
                Ok(shared) => {
                    let guard = shared.lock_owned().await;
                    if guard.is_some() {
                        return Some(guard);
                    }
                    // Taken out by a reservation meanwhile: look again.
                }
                Err(mut other) => {
                    let _ = other.changed().await;
                }
            }
        }
    }

    /// The rollout `name`'s lock if it runs here (not reserved), not taken.
    fn shared(&self, name: &str) -> Option<Shared> {
        match self.map().get(name) {
            Some(Slot::Up(shared)) => Some(shared.clone()),
            _ => None,
        }
    }

    /// Every rollout running here (not reserved), by name, locks not taken.
    fn running(&self) -> Vec<(String, Shared)> {
        self.map()
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Up(shared) => Some((name.clone(), shared.clone())),
                Slot::Reserved(_) => None,
            })
            .collect()
    }

    /// `record`'s status with what runs here of it, if anything.
    async fn status_here(&self, record: &RolloutRecord) -> RolloutStatus {
        match self.shared(&record.name) {
            Some(shared) => {
                let entry = shared.lock().await;
                self.status_of(record, (*entry).as_ref())
            }
            None => self.status_of(record, None),
        }
    }

    /// Why a stored rollout's data plane has not started yet, if it is
    /// being retried.
    fn why_starting(&self, name: &str) -> Option<String> {
        match self.down_map().get(name) {
            Some(Down::Starting { last, .. }) => Some(last.clone()),
            _ => None,
        }
    }

    /// Whether the operator allowed everything `setup` would make the daemon
    /// run, write and read; if not, every reason.
    fn permitted(&self, setup: &Setup) -> Result<(), String> {
        let problems: Vec<String> = [self.commands.check(setup), self.paths.check(setup)]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Records (and logs) that a stored rollout was not started.
    fn not_start(&self, name: &str, why: String, steps: usize) {
        tracing::error!(rollout = %name, "not started: {why}");
        self.down_map()
            .insert(name.to_string(), Down::NotRunning { why, steps });
    }

    /// Why a stored rollout was not started here, if it was not.
    fn why_not_running(&self, name: &str) -> Option<String> {
        match self.down_map().get(name) {
            Some(Down::NotRunning { why, .. }) => Some(why.clone()),
            _ => None,
        }
    }

    /// The error for a command to a rollout this daemon does not run.
    fn absent(&self, name: &str) -> DaemonError {
        if let Some(why) = self.why_starting(name) {
            return DaemonError::Unavailable(format!(
                "rollout {name} is not started yet: its data plane does not start: {why}; \
                 the daemon keeps trying, and runs it once it starts"
            ));
        }
        match self.why_not_running(name) {
            Some(why) => DaemonError::Conflict(format!(
                "rollout {name} is not running in this daemon: {why}"
            )),
            None => match self.foreground() {
                Some(only) => DaemonError::NotFound(format!(
                    "rollout {name} does not run here: this is `serin run` of rollout {only}"
                )),
                None => DaemonError::NotFound(format!(
                    "no rollout named {name}; `serin init FILE` registers one"
                )),
            },
        }
    }

    /// The token mutations need, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The stored file's setup, with the upstreams the record says are in
    /// force, if the operator allows what it runs and touches; if not, why
    /// the rollout cannot run.
    fn setup_for(&self, record: &RolloutRecord) -> Result<Setup, String> {
        let mut setup = (self.parse)(&record.spec, &format!("stored rollout {}", record.name))
            .map_err(|e| format!("its stored file is no longer valid: {e}"))?;
        self.permitted(&setup)?;
        let table = &setup.table;
        let stable = record
            .stable_upstream
            .clone()
            .unwrap_or_else(|| table.upstream(Version::Stable).to_string());
        let canary = record
            .canary_upstream
            .clone()
            .unwrap_or_else(|| table.upstream(Version::Canary).to_string());
        setup.set_upstreams(&stable, &canary)?;
        if let Some(version) = &record.canary_version {
            setup.retarget_canary(version);
        }
        Ok(setup)
    }

    /// Registers (or updates) a rollout from its file: all traffic on stable.
    /// The file the rollout runs, given again while its run is in progress,
    /// changes nothing and is no error (a script that applies its files
    /// again): [`Registered::Unchanged`].
    pub async fn register(&self, text: &str, by: Actor) -> Result<Registered, DaemonError> {
        let mut setup = (self.parse)(text, "request body").map_err(DaemonError::Invalid)?;
        self.permitted(&setup).map_err(DaemonError::Refused)?;
        for (version, which) in [(Version::Stable, "stable"), (Version::Canary, "canary")] {
            if let Some(why) = self.own_address(&setup.table.upstream(version).to_string(), None) {
                return Err(DaemonError::Invalid(format!("{which}.upstream: {why}")));
            }
        }
        // The name is held from here on: the old plane drains and the new
        // one starts with no lock held; on an error the name is left free.
        let (held, old) = self.reserve(&setup.name).await;
        let stored = self.store.get(&setup.name).ok();
        let changed = stored.as_ref().map(|r| changed_fields(&r.spec, text));
        // A promotion made the former canary the stable: a file whose
        // `stable` is as it was keeps it (its `stable` names the version
        // the promotion replaced; going back to it is a rollback, not a
        // registration). A file that names another stable is followed.
        let kept = match (&stored, &changed) {
            (Some(r), Some(c))
                if r.stable_version != setup.stable_version
                    && !c.iter().any(|f| f == "stable" || f.starts_with("stable.")) =>
            {
                let upstream = r
                    .stable_upstream
                    .clone()
                    .unwrap_or_else(|| setup.table.upstream(Version::Stable).to_string());
                let canary = setup.table.upstream(Version::Canary).to_string();
                setup
                    .set_upstreams(&upstream, &canary)
                    .map_err(DaemonError::Invalid)?;
                let file = std::mem::replace(&mut setup.stable_version, r.stable_version.clone());
                format!(
                    "; the stable stays {} (promoted), not the file's {file}",
                    r.stable_version
                )
            }
            _ => String::new(),
        };
        // A proxy that moves: its old address stops answering now, which
        // its clients may not expect of a re-registration.
        let moved = old
            .as_ref()
            .and_then(|o| o.setup.listen)
            .filter(|was| setup.listen != Some(*was))
            .map(|was| {
                format!(
                    "; the proxy moved from {was} to {}: {was} stops answering now",
                    setup
                        .listen
                        .map_or("no address".to_string(), |a| a.to_string())
                )
            })
            .unwrap_or_default();
        // What ran before, to bring back if the new file cannot be stored.
        let before = old.as_ref().map(|o| o.setup.clone());
        if let Some(old) = old {
            if old.driver.as_ref().is_some_and(|d| !d.is_finished()) {
                if let (Some(c), Some(record)) = (&changed, &stored)
                    && c.is_empty()
                {
                    let status = self.status_of(record, Some(&old));
                    held.put(old);
                    return Ok(Registered::Unchanged(status));
                }
                held.put(old);
                let changed = changed.unwrap_or_default();
                return Err(DaemonError::Conflict(in_progress(&setup.name, &changed)));
            }
            old.plane.stop().await;
        }
        let now = time::now();
        let mut state = State::new(now);
        state.reason = match &changed {
            Some(c) if c.is_empty() => format!(
                "registered again, file unchanged{kept}; `serin deploy {} VERSION` starts a rollout",
                setup.name
            ),
            Some(c) => format!(
                "updated ({} changed{moved}{kept}); `serin deploy {} VERSION` starts a rollout",
                c.join(", "),
                setup.name
            ),
            None => format!(
                "registered; `serin deploy {} VERSION` starts a rollout",
                setup.name
            ),
        };
        let mut record = setup.record(text, None, state);
        if !kept.is_empty() {
            record.former_stable_version = stored.and_then(|r| r.former_stable_version);
        }
        let plane = match DataPlane::start(&setup, Weight::ZERO).await {
            Ok(plane) => plane,
            Err(e) => {
                self.restore(held, before).await;
                return Err(e.into());
            }
        };
        // A run the store still has open (its serin stopped during it) ends
        // here, saying who registered the rollout again.
        if let Err(e) = self.store.end_unfinished_run(
            &setup.name,
            by,
            "ended unfinished: registered again",
            now,
        ) {
            tracing::warn!(rollout = %setup.name, "the earlier run's end was not written: {e}");
        }
        let record = match self.store.register(&record, now) {
            Ok(r) => r,
            Err(e) => {
                // Nothing changed: the earlier file's proxy serves again
                // (a locked database took the service's address down).
                plane.stop().await;
                self.restore(held, before).await;
                return Err(e.into());
            }
        };
        // Outside any run (0): a registration prepares the next one.
        let said = registered(&record, by, now);
        if let Err(e) = self.store.add_events(&record.name, 0, &[said]) {
            tracing::warn!(rollout = %record.name, "the registration was not added to the history: {e}");
        }
        self.down_map().remove(&setup.name);
        let entry = Entry {
            setup,
            plane,
            driver: None,
            started_at: None,
            run_baseline: None,
            // No run yet: the figures count from the proxy's start.
            counting_since: Some(time::now()),
        };
        let status = self.status_of(&record, Some(&entry));
        held.put(entry);
        Ok(Registered::New(status))
    }

    /// A registration that failed after the earlier rollout's plane
    /// stopped: that plane starts again as it was, all traffic on stable
    /// (its run had ended), so a failed `init` changes nothing.
    async fn restore(&self, held: Reservation<'_>, before: Option<Setup>) {
        let Some(setup) = before else {
            return;
        };
        match DataPlane::start(&setup, Weight::ZERO).await {
            Ok(plane) => held.put(Entry {
                setup,
                plane,
                driver: None,
                started_at: Some(Weight::ZERO),
                run_baseline: None,
                counting_since: Some(time::now()),
            }),
            Err(e) => {
                tracing::error!(rollout = %setup.name, "the registration failed, and its earlier proxy did not start again: {e}");
            }
        }
    }

    /// Starts the rollout of `req.version` as the canary.
    pub async fn deploy(
        &self,
        name: &str,
        req: DeployRequest,
        by: Actor,
    ) -> Result<RolloutStatus, DaemonError> {
        // Under the rollout's own lock: nothing below talks to the outside
        // (the plane's `update` only changes its configuration in memory).
        let mut guard = self.locked(name).await;
        let entry = guard
            .as_mut()
            .and_then(|g| g.as_mut())
            .ok_or_else(|| self.absent(name))?;
        if let Some(driver) = entry.driver.as_ref().filter(|d| !d.is_finished()) {
            // Ended in force but not written yet: say so, as the other
            // commands do ("has already ended"), not "in progress".
            let health = driver.health();
            if let Some(ended) = health
                .unsaved_record
                .as_ref()
                .filter(|r| matches!(r.state.phase, Phase::RolledBack | Phase::Succeeded))
            {
                let why = health
                    .store_error
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default();
                return Err(DaemonError::Conflict(format!(
                    "rollout {name} has already ended ({}), but its end is not written to the state database yet{why}; deploy again once it is",
                    ended.state.phase.as_str()
                )));
            }
            return Err(DaemonError::Conflict(format!(
                "rollout {name} is already in progress; promote, roll back or wait"
            )));
        }
        let stable_upstream = entry.setup.table.upstream(Version::Stable).to_string();
        crate::spec::check_canary(&req.version, req.upstream.as_deref(), &stable_upstream)
            .map_err(DaemonError::Invalid)?;
        if let Some(why) = req
            .upstream
            .as_deref()
            .and_then(|u| self.own_address(u, entry.setup.listen))
        {
            return Err(DaemonError::Invalid(format!("upstream: {why}")));
        }
        let mut record = self.store.get(name)?;
        if record.stable_version == req.version {
            return Err(DaemonError::Invalid(format!(
                "version: {} is already the stable version of {name}",
                req.version
            )));
        }
        // The canary's upstream: the one given, else the file's, never one
        // an earlier deploy gave (after its promotion that is stable's own).
        record.canary_upstream = match &req.upstream {
            Some(upstream) => {
                let table = RoutingTable::new(&stable_upstream, upstream, Weight::ZERO)
                    .map_err(|e| DaemonError::Invalid(format!("upstream: {e}")))?;
                Some(table.upstream(Version::Canary).to_string())
            }
            None => None,
        };
        let next = self.setup_for(&record).map_err(DaemonError::Internal)?;
        let canary_upstream = next.table.upstream(Version::Canary).to_string();
        if canary_upstream == next.table.upstream(Version::Stable).to_string() {
            return Err(DaemonError::Invalid(format!(
                "upstream: the canary would go to stable's own server {canary_upstream} (the file's \
                 canary.upstream is the stable since a promotion); give the new version's with --upstream"
            )));
        }
        // Recorded as resolved: its promotion makes it stable's (a canary on
        // the file's upstream, promoted, left stable on the old server).
        record.canary_upstream = Some(canary_upstream);
        record.canary_version = Some(req.version.clone());
        // A new rollout: the version an earlier promotion replaced is history.
        record.former_stable_version = None;
        let now = time::now();
        record.state = State::new(now);
        record.last_verdict = None;
        // A new run, from zero: its number, versions and first decision.
        let said = deployed(&record, by, now);
        record = self.store.start_run(&record, &[said], now)?;
        // The table follows the record: stable may be a former canary, the
        // canary may have a new upstream.
        entry.setup = self.setup_for(&record).map_err(DaemonError::Internal)?;
        entry.plane.update(&entry.setup).await;
        entry.run_baseline = entry.plane.proxy.as_ref().map(|p| p.recorder().snapshot());
        entry.counting_since = None;
        entry.driver = Some(RunningDriver::spawn(
            &entry.setup,
            self.store.clone(),
            record.clone(),
            &entry.plane,
        ));
        Ok(self.status_of(&record, Some(&*entry)))
    }

    /// Sends an operator command to the rollout's driver.
    pub async fn command(&self, name: &str, input: Input) -> Result<RolloutStatus, DaemonError> {
        let handle = loop {
            let Some(guard) = self.locked(name).await else {
                if !matches!(input, Input::Rollback(_)) || self.why_starting(name).is_none() {
                    return Err(self.absent(name));
                }
                // With the name held, the plane cannot start meanwhile.
                let (held, running) = self.reserve(name).await;
                match running {
                    // It started meanwhile: the command goes to it.
                    Some(entry) => {
                        held.put(entry);
                        continue;
                    }
                    None => {
                        let status = self.rollback_while_starting(name, input);
                        drop(held);
                        return status;
                    }
                }
            };
            let Some(entry) = guard.as_ref() else {
                continue;
            };
            match &entry.driver {
                Some(d) if !d.is_finished() => break d.handle.clone(),
                _ => {
                    let record = self.store.get(name)?;
                    let why = if record.canary_version.is_none() {
                        format!(
                            "no rollout of {name} is in progress; `serin deploy {name} VERSION` starts one"
                        )
                    } else {
                        format!(
                            "the rollout of {name} has already ended ({}): {}",
                            record.state.phase.as_str(),
                            record.state.reason
                        )
                    };
                    return Err(DaemonError::Conflict(why));
                }
            }
        };
        let record = handle.command(input).await?;
        Ok(self.status_here(&record).await)
    }

    /// An operator's rollback of a rollout whose data plane does not start
    /// yet is never refused: it is decided and written now, and the plane
    /// starts at weight 0 when it can. Other commands wait for the plane.
    /// Called with the name held.
    fn rollback_while_starting(
        &self,
        name: &str,
        input: Input,
    ) -> Result<RolloutStatus, DaemonError> {
        if !matches!(input, Input::Rollback(_)) || self.why_starting(name).is_none() {
            return Err(self.absent(name));
        }
        let mut record = self.store.get(name)?;
        let setup = self.setup_for(&record).map_err(DaemonError::Internal)?;
        let now = time::now();
        let t = crate::controller::machine::step(&setup.plan, &record.state, now, input)
            .map_err(|r| DaemonError::Conflict(r.0))?;
        record.state = t.state;
        record.generation = self.store.save(&record, &t.decisions, now)?;
        tracing::warn!(rollout = %name, "rolled back by an operator while its data plane does not start; weight 0 is applied when it does");
        Ok(self.status_of(&record, None))
    }

    /// Stops and unregisters a rollout: weight 0 first, then driver and
    /// proxy. Its runs stay (history, reports) unless `purge`, which deletes
    /// them too and returns how many. The name is held throughout (a second
    /// cleanup or a register of it waits), no lock is: the weight change,
    /// the last webhooks and the proxy's drain hold up nothing else.
    pub async fn cleanup(
        &self,
        name: &str,
        purge: bool,
        by: Actor,
    ) -> Result<Option<u32>, DaemonError> {
        let (held, entry) = self.reserve(name).await;
        if let Some(entry) = entry {
            // Persist, then apply: the canary's 0 % is written before the
            // plane is asked for it and before the drain, so a crash from
            // here on restarts the rollout rolled back at 0 %, never at the
            // weight it had (found by an outside breaker: kill -9 during
            // the drain brought 50 % back).
            self.write_cleanup_rollback(name, by);
            if let Err(e) = entry.plane.cleanup().await {
                tracing::error!(rollout = %name, "cleanup could not set the weight to 0: {e}");
            }
            if let Some(driver) = entry.driver {
                let _ = driver.finish(async {}).await;
            }
            entry.plane.stop().await;
        }
        // A run left open (not running here) is ended by this cleanup, with who.
        if !purge
            && let Err(e) =
                self.store
                    .end_unfinished_run(name, by, "ended by serin cleanup", time::now())
        {
            tracing::warn!(rollout = %name, "the run's end was not written: {e}");
        }
        let purged = if purge {
            Some(self.store.purge(name)?)
        } else {
            self.store.remove(name)?;
            None
        };
        self.down_map().remove(name);
        drop(held);
        Ok(purged)
    }

    /// Writes a rollout in progress as rolled back at 0 % ("cleaned up"),
    /// before its cleanup touches the data plane. Its driver may write at
    /// the same moment: a write conflict is tried again on the new
    /// generation. A store that cannot take it is logged; the cleanup goes
    /// on in the safe direction.
    fn write_cleanup_rollback(&self, name: &str, by: Actor) {
        for _ in 0..3 {
            let mut record = match self.store.get(name) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(rollout = %name, "cleanup could not read the rollout to write 0 % first: {e}");
                    return;
                }
            };
            if record.state.phase.is_finished() && record.state.weight == Weight::ZERO {
                return;
            }
            record.state.phase = Phase::RolledBack;
            record.state.weight = Weight::ZERO;
            record.state.hold = None;
            let outcome = Outcome::Operator { by };
            record.state.reason =
                format!("ended by serin cleanup: all traffic to stable ({outcome})");
            record.state.outcome = Some(outcome);
            let now = time::now();
            // The run's end in its history too: who cleaned it up.
            let said = crate::rollout::Decision {
                at: now,
                kind: crate::rollout::DecisionKind::RolledBack,
                step: record.state.step,
                weight: Weight::ZERO,
                phase: Phase::RolledBack,
                verdict: None,
                reason: record.state.reason.clone(),
            };
            match self.store.save(&record, &[said], now) {
                Ok(_) => return,
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => {
                    tracing::error!(rollout = %name, "cleanup could not write 0 % first (going on): {e}");
                    return;
                }
            }
        }
    }

    /// One rollout's status (a row that cannot be read is reported as
    /// `Unreadable`).
    pub async fn status(&self, name: &str) -> Result<RolloutStatus, DaemonError> {
        let record = match self.store.get(name) {
            Ok(r) => r,
            Err(e @ StoreError::Corrupt { .. }) => return Ok(unreadable(name, &e)),
            Err(e) => return Err(e.into()),
        };
        Ok(self.status_here(&record).await)
    }

    /// Every rollout's status, by name; one whose row cannot be read is
    /// listed as `Unreadable` beside the others.
    pub async fn list(&self) -> Result<Vec<RolloutStatus>, DaemonError> {
        let rows = self.store.list_each()?;
        let running: BTreeMap<String, Shared> = self.running().into_iter().collect();
        let mut out = Vec::with_capacity(rows.len());
        for (name, row) in &rows {
            out.push(match (row, running.get(name)) {
                (Ok(r), Some(shared)) => self.status_of(r, (*shared.lock().await).as_ref()),
                (Ok(r), None) => self.status_of(r, None),
                (Err(e), _) => unreadable(name, e),
            });
        }
        Ok(out)
    }

    /// The report of one run of a rollout (the last without `run`), also
    /// of one cleaned up (its runs are kept).
    pub async fn report(&self, name: &str, run: Option<u32>) -> Result<Report, DaemonError> {
        let store = self.store.clone();
        let name = name.to_string();
        Ok(
            tokio::task::spawn_blocking(move || Report::load(&store, &name, run))
                .await
                .map_err(|e| DaemonError::Internal(format!("the report's task was lost: {e}")))??,
        )
    }

    /// A rollout's runs (or one), each with its decisions, and its
    /// registrations.
    pub async fn history(&self, name: &str, run: Option<u32>) -> Result<History, DaemonError> {
        let store = self.store.clone();
        let name = name.to_string();
        Ok(
            tokio::task::spawn_blocking(move || crate::report::history(&store, &name, run))
                .await
                .map_err(|e| {
                    DaemonError::Internal(format!("the history's task was lost: {e}"))
                })??,
        )
    }

    /// The Prometheus page: proxy figures, weights, phases, verdict counts.
    pub async fn metrics_text(&self) -> String {
        // (rollout, weight in force, router error, store error, unsaved).
        let mut in_force: Vec<(String, Option<Weight>, bool, bool, bool)> = Vec::new();
        let mut snapshots = Vec::new();
        for (name, shared) in self.running() {
            let guard = shared.lock().await;
            let Some(e) = guard.as_ref() else {
                continue;
            };
            in_force.push(match &e.driver {
                Some(d) => {
                    let h = d.health();
                    (
                        name.clone(),
                        h.weight_in_force,
                        h.router_error.is_some(),
                        h.store_error.is_some(),
                        h.unsaved,
                    )
                }
                None => {
                    let w = e.plane.proxy.as_ref().map(|p| p.weight());
                    (name.clone(), w, false, false, false)
                }
            });
            if let Some(proxy) = e.plane.proxy.as_ref() {
                snapshots.push((name, proxy.weight(), proxy.recorder().snapshot()));
            }
        }
        let figures: Vec<_> = snapshots
            .iter()
            .map(|(name, weight, snapshot)| RolloutMetrics {
                rollout: name,
                weight: *weight,
                snapshot,
            })
            .collect();
        let mut out = String::new();
        serin_proxy::encode_metrics(&figures, &mut out);
        let records: Vec<RolloutRecord> = self
            .store
            .list_each()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, row)| row.ok())
            .collect();
        out.push_str("# HELP serin_rollout_phase The rollout's phase (1 for the current one).\n# TYPE serin_rollout_phase gauge\n");
        for r in &records {
            for p in Phase::ALL {
                let _ = writeln!(
                    out,
                    "serin_rollout_phase{{rollout=\"{}\",phase=\"{}\"}} {}",
                    label(&r.name),
                    p.as_str(),
                    u8::from(r.state.phase == p)
                );
            }
        }
        out.push_str("# HELP serin_weight_in_force The canary weight (%) the data plane really serves (absent when not known).\n# TYPE serin_weight_in_force gauge\n");
        for (name, weight, ..) in &in_force {
            if let Some(w) = weight {
                let _ = writeln!(
                    out,
                    "serin_weight_in_force{{rollout=\"{}\"}} {}",
                    label(name),
                    w.percent()
                );
            }
        }
        for (metric, help, pick) in [
            (
                "serin_router_error",
                "1 while the data plane refuses what the rollout decided (e.g. nginx -t fails).",
                (|r: &(String, Option<Weight>, bool, bool, bool)| r.2) as fn(&_) -> bool,
            ),
            (
                "serin_store_error",
                "1 while the state database cannot be written (nothing moves forward).",
                |r| r.3,
            ),
            (
                "serin_state_unsaved",
                "1 while the state in force is ahead of the state database.",
                |r| r.4,
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for r in &in_force {
                let _ = writeln!(
                    out,
                    "{metric}{{rollout=\"{}\"}} {}",
                    label(&r.0),
                    u8::from(pick(r))
                );
            }
        }
        out.push_str("# HELP serin_rollout_run The rollout's current (or last) run: 1, 2, 3 ... per name; 0 before its first deploy.\n# TYPE serin_rollout_run gauge\n");
        for r in &records {
            let _ = writeln!(
                out,
                "serin_rollout_run{{rollout=\"{}\"}} {}",
                label(&r.name),
                r.run
            );
        }
        out.push_str("# HELP serin_verdicts_total Analysis verdicts of this run (serin_rollout_run), by kind; a new run starts from zero.\n# TYPE serin_verdicts_total counter\n");
        for r in &records {
            let counts = self
                .store
                .verdict_counts(&r.name, r.run)
                .unwrap_or_default();
            for v in ["pass", "fail", "inconclusive"] {
                let n = counts.iter().find(|(k, _)| k == v).map_or(0, |(_, n)| *n);
                let _ = writeln!(
                    out,
                    "serin_verdicts_total{{rollout=\"{}\",verdict=\"{v}\"}} {n}",
                    label(&r.name)
                );
            }
        }
        out
    }

    /// `record`'s status with what runs `here` of it, if anything.
    fn status_of(&self, stored: &RolloutRecord, here: Option<&Entry>) -> RolloutStatus {
        // What the driver has in force and could not write yet (a rollback
        // while the database is locked or full) is what status shows, with
        // `state not written yet`, not the stored phase it left.
        let unsaved = here
            .and_then(|e| e.driver.as_ref())
            .and_then(|d| d.health().unsaved_record)
            .filter(|r| r.name == stored.name && r.run >= stored.run);
        let record = unsaved.as_ref().unwrap_or(stored);
        let proxy = here.and_then(|e| e.plane.proxy.as_ref());
        let baseline = here.and_then(|e| e.run_baseline.as_ref());
        // A run that ended counts to its end, not on (after a promotion the
        // stable row would mix the two versions).
        let at_end = here
            .and_then(|e| e.driver.as_ref())
            .and_then(|d| d.figures_at_end().cloned());
        let mut status = status_of(
            record,
            proxy
                .map(|p| since(at_end.unwrap_or_else(|| p.recorder().snapshot()), baseline))
                .as_ref(),
            self.steps_of(record, here),
        );
        // What is in force: the driver knows; without one, the built-in
        // proxy's own weight, or the weight another data plane took when
        // the daemon started it (nothing has changed it since).
        match here.and_then(|e| e.driver.as_ref()) {
            Some(driver) => {
                let health = driver.health();
                status = status.with_health(record, &health);
                if let Some(said) = store_failing(record, &health) {
                    // What else is not in force, then the store.
                    let mut parts: Vec<String> = status
                        .not_in_force
                        .iter()
                        .filter(|s| !s.starts_with("state not written yet"))
                        .cloned()
                        .collect();
                    parts.push(said);
                    status.reason = parts.join("; ");
                }
            }
            None => {
                status.weight_in_force = proxy
                    .map(|p| p.weight())
                    .or_else(|| here.and_then(|e| e.started_at))
                    .map(Weight::percent)
            }
        }
        status.proxy = proxy
            .and(here.and_then(|e| e.plane.addr))
            .map(|a| a.to_string());
        if let (Some(m), Some(since)) =
            (status.metrics.as_mut(), here.and_then(|e| e.counting_since))
        {
            m.window = if record.run > 0 {
                format!(
                    "since {} (the proxy started again then; run {} began earlier)",
                    rfc3339(since),
                    record.run
                )
            } else {
                format!("since {} (the proxy's start; no run yet)", rfc3339(since))
            };
        }
        if status.metrics.is_none() && record.run > 0 && record.state.phase.is_finished() {
            // A finished run with no proxy here (a `serin run` that ended):
            // its figures from the intervals it recorded, as a daemon shows
            // its own from its proxy.
            status.metrics = finished_run_metrics(&self.store, record);
        }
        if record.run > 0 {
            // The run's latest "would have rolled back"; status goes on
            // without it when the store cannot say.
            match self
                .store
                .last_event(&record.name, record.run, DecisionKind::WouldRollBack)
            {
                Ok(last) => {
                    status.would_roll_back = last.map(|(reason, at)| wire::WouldRollBack {
                        reason,
                        at: rfc3339(at),
                    })
                }
                Err(e) => {
                    tracing::debug!(rollout = %record.name, "status without its would-roll-back: {e}")
                }
            }
        }
        if let Some(why) = self.why_not_running(&record.name) {
            status.reason = format!("not running in this daemon: {why}");
        }
        if let Some(why) = self.why_starting(&record.name) {
            // Nothing of what the record says is known to be in force: the
            // data plane did not start (nginx keeps what it had).
            let health = Health {
                weight_pending: Some(record.state.weight),
                router_error: Some(why),
                ..Health::default()
            };
            status.weight_in_force = None;
            status.not_in_force = wire::not_in_force(record.state.phase, &health);
            status.reason = format!(
                "{}; the daemon keeps trying to start its data plane; {}",
                status.not_in_force.join("; "),
                status.reason
            );
        }
        status
    }

    /// How many steps `record`'s plan has: from the setup made when it was
    /// registered or started, or the count kept when it was not; read from
    /// the file only while a caller holds the name (being registered,
    /// cleaned up or started).
    fn steps_of(&self, record: &RolloutRecord, here: Option<&Entry>) -> usize {
        if let Some(entry) = here {
            return entry.setup.plan.steps.len();
        }
        match self.down_map().get(&record.name) {
            Some(Down::Starting { steps, .. } | Down::NotRunning { steps, .. }) => *steps,
            None => self.steps_in(&record.spec),
        }
    }

    /// How many steps the plan of a stored rollout file has (0 if it does
    /// not read).
    fn steps_in(&self, spec: &str) -> usize {
        (self.parse)(spec, "stored rollout").map_or(0, |s| s.plan.steps.len())
    }

    /// Takes every running rollout out of the daemon, to be stopped by
    /// [`crate::shutdown`] (they stay where they are in the store, to be
    /// resumed): no data plane starts again afterwards, and the daemon
    /// answers for them from their records alone.
    pub async fn take_all(&self) -> Vec<Taken> {
        // No plane starts again from here on (a retry that is putting one
        // in holds its name, which is waited for below).
        self.down_map()
            .retain(|_, d| matches!(d, Down::NotRunning { .. }));
        let names: Vec<String> = self.map().keys().cloned().collect();
        let mut taken = Vec::new();
        for name in names {
            let (held, entry) = self.reserve(&name).await;
            drop(held);
            if let Some(entry) = entry {
                taken.push(Taken {
                    name,
                    driver: entry.driver,
                    plane: entry.plane,
                });
            }
        }
        taken
    }
}

/// A running rollout taken out of the daemon to be stopped.
pub struct Taken {
    /// The rollout's name.
    pub name: String,
    /// Its driver, once deployed (perhaps finished).
    pub driver: Option<RunningDriver>,
    /// Its data plane.
    pub plane: DataPlane,
}

/// Why `serin init` does not change a rollout in progress, naming what its
/// new file changes (`changed`) and what may change now.
fn in_progress(name: &str, changed: &[String]) -> String {
    let file = if changed.is_empty() {
        "the new file is the one it runs (nothing to change)".to_string()
    } else {
        format!(
            "the new file's {} take effect only after the run (roll it back or let it end, then \
             `serin init` again)",
            changed.join(", ")
        )
    };
    format!(
        "rollout {name} is in progress, and a run keeps the file it started with: {file}. \
         What may change now is what the commands change: the canary weight (`serin traffic {name} PCT`), \
         a pause (`serin pause {name}`, `serin resume {name}`), the end (`serin promote {name} [--full]`, \
         `serin rollback {name}`)"
    )
}

/// The fields of a rollout file that differ between `old` and `new`, by
/// path (`steps`, `analysis.errorRate.max`); a list is one field. A file
/// that does not read as a whole is one change, `the file`.
pub fn changed_fields(old: &str, new: &str) -> Vec<String> {
    let read = |t: &str| serde_saphyr::from_str::<serde_json::Value>(t).ok();
    let (Some(old), Some(new)) = (read(old), read(new)) else {
        return if old == new {
            Vec::new()
        } else {
            vec!["the file".into()]
        };
    };
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

fn diff(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff(&at, x, y, out),
                    _ => out.push(at),
                }
            }
        }
        (a, b) if a != b => out.push(if path.is_empty() {
            "the file".into()
        } else {
            path.to_string()
        }),
        _ => {}
    }
}

/// Tries to start a stored rollout's data plane again and again (1 s,
/// doubling to 10 s), each failure logged, until it runs or no longer waits.
async fn keep_starting(daemon: Weak<Daemon>, name: String) {
    let mut wait = RETRY_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        let Some(daemon) = daemon.upgrade() else {
            return;
        };
        if daemon.why_starting(&name).is_none() {
            return;
        }
        match daemon.start_again(&name).await {
            Ok(()) => return,
            Err(why) => {
                wait = (wait * 2).min(RETRY_MAX);
                tracing::warn!(rollout = %name, "not started yet: {why}; retrying in {wait:?}");
                // Only while it still waits (not cleaned up or registered).
                if let Some(Down::Starting { last, .. }) = daemon.down_map().get_mut(&name) {
                    *last = why;
                }
            }
        }
    }
}

/// The status of a rollout whose row cannot be read: nothing of it runs here.
/// The decision that records a registration, with who made it.
pub fn registered(record: &RolloutRecord, by: Actor, now: time::Millis) -> Decision {
    Decision {
        at: now,
        kind: DecisionKind::Registered,
        step: 0,
        weight: Weight::ZERO,
        phase: record.state.phase,
        verdict: None,
        reason: format!(
            "registered by {} (stable {})",
            by.said(),
            record.stable_version
        ),
    }
}

/// The decision that begins a run: the canary deployed, and by whom.
pub fn deployed(record: &RolloutRecord, by: Actor, now: time::Millis) -> Decision {
    Decision {
        at: now,
        kind: DecisionKind::Deployed,
        step: 0,
        weight: Weight::ZERO,
        phase: record.state.phase,
        verdict: None,
        reason: format!(
            "{} deployed as the canary of {} by {}",
            record.canary_version.as_deref().unwrap_or("?"),
            record.stable_version,
            by.said()
        ),
    }
}

fn unreadable(name: &str, error: &StoreError) -> RolloutStatus {
    RolloutStatus {
        name: name.to_string(),
        phase: "Unreadable".into(),
        step: 0,
        steps: 0,
        weight: 0.0,
        weight_in_force: None,
        not_in_force: Vec::new(),
        reason: format!(
            "not running in this daemon (no proxy, no driver): {error}; \
             fix the row, or `serin cleanup {name}` to forget it"
        ),
        run: 0,
        outcome: None,
        paused_by: None,
        stable: wire::VersionRef { version: None },
        canary: wire::VersionRef { version: None },
        last_verdict: None,
        would_roll_back: None,
        split: None,
        metrics: None,
        proxy: None,
    }
}

/// How status begins the reason of a rollout registered and never deployed.
pub const NOT_DEPLOYED: &str = "not deployed";

/// A rollout registered and never deployed (no run, no canary).
fn never_deployed(record: &RolloutRecord) -> bool {
    record.run == 0 && record.canary_version.is_none() && record.state.phase == Phase::Initializing
}

/// A status object from a record and, when its proxy runs here, live figures.
pub fn status_of(
    record: &RolloutRecord,
    snapshot: Option<&serin_proxy::RecorderSnapshot>,
    steps: usize,
) -> RolloutStatus {
    RolloutStatus {
        name: record.name.clone(),
        phase: record.state.phase.as_str().to_string(),
        step: wire::step_number(record.state.step, steps),
        steps,
        weight: record.state.weight.percent(),
        weight_in_force: None,
        not_in_force: Vec::new(),
        // Registered and never deployed: not "waiting for health checks"
        // (nothing is checked before a deploy), as the dashboard says.
        // A registration's own reason ("updated (analysis.interval
        // changed); …") is kept after it: it says what the registration did.
        reason: if never_deployed(record) {
            if record.state.reason == crate::rollout::State::new(time::Millis(0)).reason {
                format!(
                    "{NOT_DEPLOYED}: registered, no run yet (`serin deploy {} VERSION` starts one)",
                    record.name
                )
            } else {
                format!("{NOT_DEPLOYED}: {}", record.state.reason)
            }
        } else {
            record.state.reason.clone()
        },
        run: record.run,
        outcome: record.state.outcome.clone(),
        paused_by: record
            .state
            .hold
            .filter(|_| record.state.phase == Phase::Paused)
            .map(|h| h.as_str().to_string()),
        stable: wire::VersionRef {
            version: Some(record.stable_version.clone()),
        },
        canary: wire::VersionRef {
            version: record.canary_version.clone(),
        },
        last_verdict: record
            .last_verdict
            .as_ref()
            .map(|(v, reason, at)| wire::LastVerdict {
                verdict: v.clone(),
                reason: reason.clone(),
                at: rfc3339(*at),
            }),
        // The store has the run's decisions; [`Daemon::status_of`] adds it.
        would_roll_back: None,
        split: record.state.split.as_ref().map(wire::Split::from),
        metrics: snapshot.map(|s| {
            let (stable_version, canary_version) = run_versions(record);
            wire::Metrics {
                window: wire::THIS_RUN.to_string(),
                stable: version_metrics(&s.stable),
                canary: version_metrics(&s.canary),
                baseline: s.baseline.as_ref().map(version_metrics),
                stable_version,
                canary_version,
            }
        }),
        proxy: None,
    }
}

/// A finished run's figures from the intervals it recorded (none when it
/// recorded none or the store cannot say): what status shows of a run no
/// proxy here counted (`serin run`'s final status uses it too).
pub fn finished_run_metrics(store: &Store, record: &RolloutRecord) -> Option<wire::Metrics> {
    match store.run_samples(&record.name, record.run) {
        Ok(samples) if !samples.is_empty() => Some(metrics_of_samples(record, &samples)),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(rollout = %record.name, "status without the run's figures: {e}");
            None
        }
    }
}

/// What a finished run's figures say when only its recorded intervals are
/// left: requests and errors summed; latencies are per interval (in its
/// report), none for the whole run.
fn metrics_of_samples(record: &RolloutRecord, samples: &[crate::store::Sample]) -> wire::Metrics {
    let sum = |of: &dyn Fn(&crate::store::Sample) -> Option<&crate::store::VersionSample>| {
        let (requests, errors) = samples
            .iter()
            .filter_map(of)
            .fold((0u64, 0u64), |(r, e), v| {
                (r.saturating_add(v.requests), e.saturating_add(v.errors))
            });
        wire::VersionMetrics {
            requests,
            errors,
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            p50_ms: None,
            p95_ms: None,
            p99_ms: None,
        }
    };
    let (stable_version, canary_version) = run_versions(record);
    wire::Metrics {
        window: format!(
            "{} (its {} recorded intervals; latencies per interval in its report)",
            wire::THIS_RUN,
            samples.len()
        ),
        stable: sum(&|s| Some(&s.stable)),
        canary: sum(&|s| Some(&s.canary)),
        baseline: samples
            .iter()
            .any(|s| s.baseline.is_some())
            .then(|| sum(&|s| s.baseline.as_ref())),
        stable_version,
        canary_version,
    }
}

/// The versions a run's stable and canary figures are of. After a
/// promotion the record's stable is the run's canary and the run's stable
/// is the former one: the figures keep the roles they had in the run.
fn run_versions(record: &RolloutRecord) -> (Option<String>, Option<String>) {
    if record.state.outcome.as_ref().is_some_and(Outcome::promoted) {
        (
            record.former_stable_version.clone(),
            Some(record.stable_version.clone()),
        )
    } else {
        (
            Some(record.stable_version.clone()),
            record.canary_version.clone(),
        )
    }
}

/// While the state database cannot be written, what an active rollout's
/// status says instead of its stored reason: that reason may count down a
/// pause whose end cannot be written, so nothing ends when it says.
pub fn store_failing(record: &RolloutRecord, health: &Health) -> Option<String> {
    let error = health.store_error.as_ref()?;
    if !matches!(record.state.phase, Phase::Progressing | Phase::Paused) {
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

/// The figures counted since `baseline` (this run's), or all of them.
fn since(
    now: serin_proxy::RecorderSnapshot,
    baseline: Option<&serin_proxy::RecorderSnapshot>,
) -> serin_proxy::RecorderSnapshot {
    let Some(base) = baseline else {
        return now;
    };
    let minus = |mut v: VersionSnapshot, b: &VersionSnapshot| {
        for (n, m) in v.requests_by_class.iter_mut().zip(b.requests_by_class) {
            *n = n.saturating_sub(m);
        }
        v.timed_out = v.timed_out.saturating_sub(b.timed_out);
        v.cancelled = v.cancelled.saturating_sub(b.cancelled);
        v.latency_sum = v.latency_sum.saturating_sub(b.latency_sum);
        // The same bounds (one recorder): subtracting cannot fail; if it
        // did, the run's latencies are not known apart, so none are shown.
        if v.latency.subtract(&b.latency).is_err() {
            v.latency.reset();
        }
        v
    };
    serin_proxy::RecorderSnapshot {
        stable: minus(now.stable, &base.stable),
        canary: minus(now.canary, &base.canary),
        baseline: now.baseline.map(|v| match &base.baseline {
            Some(b) => minus(v, b),
            None => v,
        }),
    }
}

/// One version's figures from the recorder (latency histograms are in µs).
pub fn version_metrics(v: &VersionSnapshot) -> wire::VersionMetrics {
    let requests = v.requests();
    let q =
        |p: f64| (!v.latency.is_empty()).then(|| v.latency.value_at_quantile(p) as f64 / 1000.0);
    wire::VersionMetrics {
        requests,
        errors: v.errors(),
        error_rate: (requests > 0).then(|| v.errors() as f64 / requests as f64),
        p50_ms: q(0.50),
        p95_ms: q(0.95),
        p99_ms: q(0.99),
    }
}

/// Escapes a Prometheus label value.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A builtin-proxy rollout of two steps on a port the OS picks.
    const FILE: &str = "name: shop
stable: { version: v1, upstream: http://127.0.0.1:9 }
canary: { version: v2, upstream: http://127.0.0.1:7 }
traffic: { provider: builtin, listen: 127.0.0.1:0 }
steps:
  - setWeight: 20
  - pause: {}
analysis: { interval: 1s, errorRate: { max: 5% } }
";

    /// Status and list take the plan from the rollout registered, not from
    /// its file read again: the parser runs once, at registration.
    #[tokio::test]
    async fn status_does_not_read_the_rollout_file_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let parses = Arc::new(AtomicUsize::new(0));
        let counted = parses.clone();
        let inner = crate::runtime::parser();
        let parse: Parser = Arc::new(move |text: &str, origin: &str| {
            counted.fetch_add(1, Ordering::SeqCst);
            inner(text, origin)
        });
        let store = Store::open(dir.path()).expect("store");
        let daemon = Daemon::start(store, None, Commands::default(), Paths::default(), parse)
            .await
            .expect("daemon");
        let registered = daemon
            .register(FILE, Actor::Cli)
            .await
            .expect("register")
            .status();
        assert_eq!(registered.steps, 2);
        let after_register = parses.load(Ordering::SeqCst);
        for _ in 0..3 {
            assert_eq!(daemon.status("shop").await.expect("status").steps, 2);
            assert_eq!(daemon.list().await.expect("list")[0].steps, 2);
            daemon.metrics_text().await;
        }
        assert_eq!(parses.load(Ordering::SeqCst), after_register);
        crate::shutdown::stop_rollouts(daemon.take_all().await).await;
    }

    #[test]
    fn the_fields_a_new_file_changes_are_named_by_path() {
        let new = FILE
            .replace("interval: 1s", "interval: 2s")
            .replace("  - pause: {}\n", "  - pause: { duration: 5s }\n");
        assert_eq!(changed_fields(FILE, &new), ["analysis.interval", "steps"]);
        assert!(changed_fields(FILE, FILE).is_empty());
        let more = FILE.replace(
            "errorRate: { max: 5% }",
            "errorRate: { max: 5% }, minRequests: 9",
        );
        assert_eq!(changed_fields(FILE, &more), ["analysis.minRequests"]);
    }

    /// `serin init` of a rollout in progress is refused, naming the fields
    /// its new file changes (none for the same file) and what may change now;
    /// once the run has ended, the new file is taken and its changes said.
    /// Outside breaker: `serin init` under a locked database answered 503
    /// but had stopped the earlier proxy, taking the service's address down.
    #[tokio::test]
    async fn a_registration_the_store_refuses_leaves_the_earlier_proxy_serving() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let daemon = Daemon::start(
            store,
            None,
            Commands::default(),
            Paths::default(),
            crate::runtime::parser(),
        )
        .await
        .expect("daemon");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let file = FILE.replace("listen: 127.0.0.1:0", &format!("listen: {addr}"));
        daemon.register(&file, Actor::Cli).await.expect("register");
        assert!(std::net::TcpStream::connect(addr).is_ok(), "serving");
        let lock = rusqlite::Connection::open(dir.path().join("serin.db")).expect("open");
        lock.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        let changed = file.replace("interval: 1s", "interval: 2s");
        let err = daemon
            .register(&changed, Actor::Cli)
            .await
            .expect_err("the store is locked");
        assert_eq!(err.kind(), Kind::Unavailable, "{err}");
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "the earlier proxy serves again"
        );
        lock.execute_batch("COMMIT").expect("unlock");
        assert_eq!(daemon.status("shop").await.expect("status").name, "shop");
        crate::shutdown::stop_rollouts(daemon.take_all().await).await;
    }

    #[tokio::test]
    async fn init_updates_a_rollout_not_in_progress_and_says_what_waits_for_the_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let daemon = Daemon::start(
            store,
            None,
            Commands::default(),
            Paths::default(),
            crate::runtime::parser(),
        )
        .await
        .expect("daemon");
        daemon.register(FILE, Actor::Cli).await.expect("register");
        let req = DeployRequest {
            version: "v2".into(),
            upstream: None,
        };
        daemon
            .deploy("shop", req, Actor::Cli)
            .await
            .expect("deploy");
        let same = daemon.register(FILE, Actor::Cli).await.expect("same file");
        assert!(
            matches!(&same, Registered::Unchanged(s) if s.canary.version.as_deref() == Some("v2")),
            "{same:?}"
        );
        let new = FILE.replace("interval: 1s", "interval: 2s");
        let err = daemon
            .register(&new, Actor::Cli)
            .await
            .expect_err("in progress");
        let msg = err.to_string();
        assert_eq!(err.kind(), Kind::Conflict);
        assert!(
            msg.contains("the new file's analysis.interval take effect only after the run"),
            "{msg}"
        );
        assert!(
            msg.contains("serin traffic shop PCT") && msg.contains("serin rollback shop"),
            "{msg}"
        );
        assert!(
            daemon.store.get("shop").expect("get").spec == FILE,
            "changed during the run"
        );
        daemon
            .command(
                "shop",
                Input::Rollback(crate::rollout::Stop::Operator(Actor::Cli)),
            )
            .await
            .expect("rollback");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let updated = loop {
            match daemon.register(&new, Actor::Cli).await {
                Ok(s) => break s.status(),
                Err(e) => {
                    assert_eq!(e.kind(), Kind::Conflict, "{e}");
                    assert!(
                        std::time::Instant::now() < deadline,
                        "still in progress: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert!(
            updated
                .reason
                .starts_with("updated (analysis.interval changed)"),
            "{}",
            updated.reason
        );
        assert_eq!(daemon.store.get("shop").expect("get").spec, new);
        // A proxy that moves says its old address stops answering.
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let (a, b) = (port(), port());
        let at = |addr: std::net::SocketAddr| {
            new.replace("listen: 127.0.0.1:0", &format!("listen: {addr}"))
        };
        daemon.register(&at(a), Actor::Cli).await.expect("to a");
        let moved = daemon
            .register(&at(b), Actor::Cli)
            .await
            .expect("to b")
            .status();
        assert!(
            moved.reason.contains(&format!(
                "the proxy moved from {a} to {b}: {a} stops answering now"
            )),
            "{}",
            moved.reason
        );
        crate::shutdown::stop_rollouts(daemon.take_all().await).await;
    }
}
