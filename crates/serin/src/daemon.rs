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
use tokio::sync::Mutex;

use crate::api::wire::{self, DeployRequest, RolloutStatus};
use crate::controller::driver::DriverError;
use crate::controller::driver::Health;
use crate::controller::machine::Input;
use crate::error::Kind;
use crate::report::Report;
use crate::rollout::{Phase, State};
use crate::runtime::{DataPlane, RunningDriver, Setup};
use crate::store::{RolloutRecord, Store, StoreError};
use crate::time::{self, rfc3339};

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

/// Turns a rollout file's text into a [`Setup`]; `origin` names it in errors.
pub type Parser = Arc<dyn Fn(&str, &str) -> Result<Setup, String> + Send + Sync>;

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

struct Entry {
    setup: Setup,
    plane: DataPlane,
    driver: Option<RunningDriver>,
    /// The canary weight the plane took when the daemon started it again
    /// (what is in force while no driver runs; none after `register`).
    started_at: Option<Weight>,
}

/// Where a rollout runs here, for its status: its data plane and, once
/// deployed, its driver.
trait Here {
    fn plane(&self) -> &DataPlane;
    fn driver(&self) -> Option<&RunningDriver>;
    /// The weight the plane took when started again, if it was.
    fn started_at(&self) -> Option<Weight>;
}

impl Here for Entry {
    fn plane(&self) -> &DataPlane {
        &self.plane
    }
    fn driver(&self) -> Option<&RunningDriver> {
        self.driver.as_ref()
    }
    fn started_at(&self) -> Option<Weight> {
        self.started_at
    }
}

impl Here for DataPlane {
    fn plane(&self) -> &DataPlane {
        self
    }
    fn driver(&self) -> Option<&RunningDriver> {
        None
    }
    fn started_at(&self) -> Option<Weight> {
        None
    }
}

/// The registry of rollouts.
pub struct Daemon {
    store: Store,
    token: Option<String>,
    commands: Commands,
    paths: Paths,
    parse: Parser,
    rollouts: Mutex<BTreeMap<String, Entry>>,
    /// Stored rollouts that do not run here (none of them in `rollouts`),
    /// with why. Changed only under the `rollouts` lock.
    down: std::sync::Mutex<BTreeMap<String, Down>>,
}

/// Why a stored rollout does not run in this daemon.
enum Down {
    /// Its data plane could not start yet for want of something that may
    /// come back (the last error); a background task retries.
    Starting(String),
    /// It was not started and will not be (a row that does not read, a
    /// file no longer valid, what the operator did not allow).
    NotRunning(String),
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
            rollouts: Mutex::new(BTreeMap::new()),
            down: std::sync::Mutex::new(BTreeMap::new()),
        });
        let rows = daemon.store.list_each()?;
        let mut map = daemon.rollouts.lock().await;
        for (name, row) in rows {
            let record = match row {
                Ok(r) => r,
                Err(e) => {
                    daemon.not_start(&name, format!("its row cannot be read: {e}"));
                    continue;
                }
            };
            let setup = match daemon.setup_for(&record) {
                Ok(s) => s,
                Err(why) => {
                    daemon.not_start(&name, why);
                    continue;
                }
            };
            let plane = match DataPlane::start(&setup, record.state.weight).await {
                Ok(p) => p,
                Err(e) => {
                    let why = e.to_string();
                    tracing::error!(rollout = %name, "not started yet: {e}; retrying in {RETRY_FIRST:?}");
                    daemon.down_map().insert(name.clone(), Down::Starting(why));
                    tokio::spawn(keep_starting(Arc::downgrade(&daemon), name));
                    continue;
                }
            };
            let entry = daemon.entry(setup, &record, plane);
            map.insert(record.name.clone(), entry);
        }
        drop(map);
        Ok(daemon)
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
        }
    }

    /// One try at starting a rollout whose data plane could not start:
    /// `Ok` when it runs now or no longer waits (cleaned up, registered
    /// again, the daemon stopping), the error to retry on otherwise. The
    /// `rollouts` lock is not held while the plane starts.
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
                let _map = self.rollouts.lock().await;
                if self.why_starting(name).is_some() {
                    self.not_start(name, why);
                }
                return Ok(());
            }
        };
        let plane = DataPlane::start(&setup, record.state.weight)
            .await
            .map_err(|e| e.to_string())?;
        let mut map = self.rollouts.lock().await;
        if self.why_starting(name).is_none() {
            drop(map);
            plane.stop().await;
            return Ok(());
        }
        // An operator's rollback (taken under the lock) while the plane
        // started: the plane took the weight before it; start again.
        if self.store.get(name).ok().map(|r| r.generation) != Some(record.generation) {
            drop(map);
            plane.stop().await;
            return Err("the rollout changed while its data plane started".into());
        }
        self.down_map().remove(name);
        tracing::info!(rollout = %name, weight = %record.state.weight, "started: the stored weight is in force");
        let entry = self.entry(setup, &record, plane);
        map.insert(name.to_string(), entry);
        Ok(())
    }

    fn down_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Down>> {
        self.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why a stored rollout's data plane has not started yet, if it is
    /// being retried.
    fn why_starting(&self, name: &str) -> Option<String> {
        match self.down_map().get(name) {
            Some(Down::Starting(why)) => Some(why.clone()),
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
    fn not_start(&self, name: &str, why: String) {
        tracing::error!(rollout = %name, "not started: {why}");
        self.down_map()
            .insert(name.to_string(), Down::NotRunning(why));
    }

    /// Why a stored rollout was not started here, if it was not.
    fn why_not_running(&self, name: &str) -> Option<String> {
        match self.down_map().get(name) {
            Some(Down::NotRunning(why)) => Some(why.clone()),
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
            None => DaemonError::NotFound(format!(
                "no rollout named {name}; `serin init FILE` registers one"
            )),
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
        setup.table = RoutingTable::new(&stable, &canary, Weight::ZERO)
            .map_err(|e| e.to_string())?
            .with_sticky(table.sticky().cloned())
            .with_routes(table.routes().to_vec());
        if let Some(version) = &record.canary_version {
            setup.retarget_canary(version);
        }
        Ok(setup)
    }

    /// Registers (or updates) a rollout from its file: all traffic on stable.
    pub async fn register(&self, text: &str) -> Result<RolloutStatus, DaemonError> {
        let setup = (self.parse)(text, "request body").map_err(DaemonError::Invalid)?;
        self.permitted(&setup).map_err(DaemonError::Refused)?;
        let mut map = self.rollouts.lock().await;
        if let Some(entry) = map.get(&setup.name)
            && entry.driver.as_ref().is_some_and(|d| !d.is_finished())
        {
            return Err(DaemonError::Conflict(format!(
                "rollout {} is in progress; roll it back or let it finish before registering it again",
                setup.name
            )));
        }
        if let Some(old) = map.remove(&setup.name) {
            old.plane.stop().await;
        }
        let now = time::now();
        let mut state = State::new(now);
        state.reason = format!(
            "registered; `serin deploy {} VERSION` starts a rollout",
            setup.name
        );
        let record = setup.record(text, None, state);
        let plane = DataPlane::start(&setup, Weight::ZERO).await?;
        let record = match self.store.register(&record, now) {
            Ok(r) => r,
            Err(e) => {
                plane.stop().await;
                return Err(e.into());
            }
        };
        self.down_map().remove(&setup.name);
        let status = self.status_of(&record, Some(&plane));
        map.insert(
            setup.name.clone(),
            Entry {
                setup,
                plane,
                driver: None,
                started_at: None,
            },
        );
        Ok(status)
    }

    /// Starts the rollout of `req.version` as the canary.
    pub async fn deploy(
        &self,
        name: &str,
        req: DeployRequest,
    ) -> Result<RolloutStatus, DaemonError> {
        if req.version.trim().is_empty() {
            return Err(DaemonError::Invalid(
                "version: expected a version name, got an empty string".into(),
            ));
        }
        let mut map = self.rollouts.lock().await;
        let entry = map.get_mut(name).ok_or_else(|| self.absent(name))?;
        if entry.driver.as_ref().is_some_and(|d| !d.is_finished()) {
            return Err(DaemonError::Conflict(format!(
                "rollout {name} is already in progress; promote, roll back or wait"
            )));
        }
        let mut record = self.store.get(name)?;
        if record.stable_version == req.version {
            return Err(DaemonError::Invalid(format!(
                "version: {} is already the stable version of {name}",
                req.version
            )));
        }
        if let Some(upstream) = &req.upstream {
            let table = RoutingTable::new(
                &entry.setup.table.upstream(Version::Stable).to_string(),
                upstream,
                Weight::ZERO,
            )
            .map_err(|e| DaemonError::Invalid(format!("upstream: {e}")))?;
            record.canary_upstream = Some(table.upstream(Version::Canary).to_string());
        }
        record.canary_version = Some(req.version.clone());
        // A new rollout: the version an earlier promotion replaced is history.
        record.former_stable_version = None;
        let now = time::now();
        record.state = State::new(now);
        record.last_verdict = None;
        record.generation = self.store.save(&record, &[], now)?;
        // The table follows the record: stable may be a former canary, the
        // canary may have a new upstream.
        entry.setup = self.setup_for(&record).map_err(DaemonError::Internal)?;
        entry.plane.update(&entry.setup).await;
        entry.driver = Some(RunningDriver::spawn(
            &entry.setup,
            self.store.clone(),
            record.clone(),
            &entry.plane,
        ));
        Ok(self.status_of(&record, Some(&entry.plane)))
    }

    /// Sends an operator command to the rollout's driver.
    pub async fn command(&self, name: &str, input: Input) -> Result<RolloutStatus, DaemonError> {
        let handle = {
            let map = self.rollouts.lock().await;
            let Some(entry) = map.get(name) else {
                // Under the lock: the plane cannot start meanwhile.
                return self.rollback_while_starting(name, input);
            };
            match &entry.driver {
                Some(d) if !d.is_finished() => d.handle.clone(),
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
        let map = self.rollouts.lock().await;
        Ok(self.status_of(&record, map.get(name)))
    }

    /// An operator's rollback of a rollout whose data plane does not start
    /// yet is never refused: it is decided and written now, and the plane
    /// starts at weight 0 when it can. Other commands wait for the plane.
    fn rollback_while_starting(
        &self,
        name: &str,
        input: Input,
    ) -> Result<RolloutStatus, DaemonError> {
        if input != Input::Rollback || self.why_starting(name).is_none() {
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
        Ok(self.status_of(&record, None::<&Entry>))
    }

    /// Stops and forgets a rollout: weight 0 first, then driver and proxy.
    pub async fn cleanup(&self, name: &str) -> Result<(), DaemonError> {
        let mut map = self.rollouts.lock().await;
        let entry = map.remove(name);
        if let Some(entry) = entry {
            if let Err(e) = entry.plane.cleanup().await {
                tracing::error!(rollout = %name, "cleanup could not set the weight to 0: {e}");
            }
            if let Some(driver) = entry.driver {
                let _ = driver.finish(async {}).await;
            }
            entry.plane.stop().await;
        }
        self.store.remove(name)?;
        self.down_map().remove(name);
        Ok(())
    }

    /// One rollout's status (a row that cannot be read is reported as
    /// `Unreadable`).
    pub async fn status(&self, name: &str) -> Result<RolloutStatus, DaemonError> {
        let record = match self.store.get(name) {
            Ok(r) => r,
            Err(e @ StoreError::Corrupt { .. }) => return Ok(unreadable(name, &e)),
            Err(e) => return Err(e.into()),
        };
        let map = self.rollouts.lock().await;
        Ok(self.status_of(&record, map.get(name)))
    }

    /// Every rollout's status, by name; one whose row cannot be read is
    /// listed as `Unreadable` beside the others.
    pub async fn list(&self) -> Result<Vec<RolloutStatus>, DaemonError> {
        let rows = self.store.list_each()?;
        let map = self.rollouts.lock().await;
        Ok(rows
            .iter()
            .map(|(name, row)| match row {
                Ok(r) => self.status_of(r, map.get(name)),
                Err(e) => unreadable(name, e),
            })
            .collect())
    }

    /// A rollout's report.
    pub async fn report(&self, name: &str) -> Result<Report, DaemonError> {
        let record = self.store.get(name)?;
        let events = self.store.events(name)?;
        let samples = self.store.samples(name)?;
        Ok(Report::new(&record, &events, &samples))
    }

    /// The Prometheus page: proxy figures, weights, phases, verdict counts.
    pub async fn metrics_text(&self) -> String {
        let map = self.rollouts.lock().await;
        // (rollout, weight in force, router error, store error, unsaved).
        let in_force: Vec<(String, Option<Weight>, bool, bool, bool)> = map
            .iter()
            .map(|(name, e)| match &e.driver {
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
            })
            .collect();
        let snapshots: Vec<_> = map
            .iter()
            .filter_map(|(name, e)| {
                let proxy = e.plane.proxy.as_ref()?;
                Some((name.clone(), proxy.weight(), proxy.recorder().snapshot()))
            })
            .collect();
        drop(map);
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
        out.push_str("# HELP serin_verdicts_total Analysis verdicts, by kind.\n# TYPE serin_verdicts_total counter\n");
        for r in &records {
            let counts = self.store.verdict_counts(&r.name).unwrap_or_default();
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

    fn status_of(&self, record: &RolloutRecord, here: Option<&impl Here>) -> RolloutStatus {
        let plane = here.map(|h| h.plane());
        let proxy = plane.and_then(|p| p.proxy.as_ref());
        let mut status = status_of(
            record,
            proxy.map(|p| p.recorder().snapshot()).as_ref(),
            self.steps_of(record),
        );
        // What is in force: the driver knows; without one, the built-in
        // proxy's own weight, or the weight another data plane took when
        // the daemon started it (nothing has changed it since).
        match here.and_then(|h| h.driver()) {
            Some(driver) => status = status.with_health(record, &driver.health()),
            None => {
                status.weight_in_force = proxy
                    .map(|p| p.weight())
                    .or_else(|| here.and_then(|h| h.started_at()))
                    .map(Weight::percent)
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

    fn steps_of(&self, record: &RolloutRecord) -> usize {
        (self.parse)(&record.spec, "stored rollout").map_or(0, |s| s.plan.steps.len())
    }

    /// Stops every driver (rollouts stay where they are, to be resumed) and
    /// every proxy.
    pub async fn shutdown(&self) {
        let mut map = self.rollouts.lock().await;
        self.down_map()
            .retain(|_, d| matches!(d, Down::NotRunning(_)));
        for (_, entry) in std::mem::take(&mut *map) {
            if let Some(driver) = entry.driver {
                let _ = driver.finish(async {}).await;
            }
            entry.plane.stop().await;
        }
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
                let _map = daemon.rollouts.lock().await;
                if let Some(Down::Starting(last)) = daemon.down_map().get_mut(&name) {
                    *last = why;
                }
            }
        }
    }
}

/// The status of a rollout whose row cannot be read: nothing of it runs here.
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
        paused_by: None,
        stable: wire::VersionRef { version: None },
        canary: wire::VersionRef { version: None },
        last_verdict: None,
        metrics: None,
    }
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
        step: record.state.step,
        steps,
        weight: record.state.weight.percent(),
        weight_in_force: None,
        not_in_force: Vec::new(),
        reason: record.state.reason.clone(),
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
        metrics: snapshot.map(|s| wire::Metrics {
            stable: version_metrics(&s.stable),
            canary: version_metrics(&s.canary),
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
