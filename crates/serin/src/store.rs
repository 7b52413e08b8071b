//! Durable state: rollouts, their decisions (events) and per-interval metric
//! samples, in SQLite under the state directory (`--state-dir`,
//! `SERIN_STATE_DIR`, default `.serin/`).
//!
//! # Guarantees
//! - [`Store::save`] writes a rollout's whole state and its new decisions in
//!   one transaction. The driver calls it *before* it applies a decision, so
//!   whatever was acknowledged survives `kill -9`.
//! - Writes are conditional on the generation read (`WHERE generation = ?`):
//!   a second writer for the same rollout fails instead of clobbering.
//! - The schema is versioned (`PRAGMA user_version`) and migrated forward on
//!   open; a database from a newer serin is refused rather than damaged.
//!
//! rusqlite is blocking; calls are short (one small transaction), and async
//! callers run them on `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serin_proxy::Weight;

use crate::rollout::{
    Actor, Decision, DecisionKind, Hold, Outcome, Phase, RecordedVerdict, SplitSeen, State,
};
use crate::time::Millis;

/// One step of the schema: SQL, or SQL and then code that fills what SQL
/// alone cannot.
enum Migration {
    Sql(&'static str),
    SqlThen(
        &'static str,
        fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ),
}

/// Each entry migrates the schema from version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[
    // 0 -> 1: rollouts, events, samples.
    Migration::Sql(
        "CREATE TABLE rollouts (
        name            TEXT PRIMARY KEY,
        spec            TEXT NOT NULL,
        stable_version  TEXT NOT NULL,
        canary_version  TEXT,
        stable_upstream TEXT,
        canary_upstream TEXT,
        phase           TEXT NOT NULL,
        step            INTEGER NOT NULL,
        weight          INTEGER NOT NULL,
        step_started_ms INTEGER NOT NULL,
        hold            TEXT,
        pause_served_ms INTEGER,
        next_analysis_ms INTEGER NOT NULL,
        stage_judged    INTEGER NOT NULL,
        no_data_streak  INTEGER NOT NULL,
        reason          TEXT NOT NULL,
        last_verdict    TEXT,
        last_verdict_reason TEXT,
        last_verdict_ms INTEGER,
        generation      INTEGER NOT NULL,
        created_ms      INTEGER NOT NULL,
        updated_ms      INTEGER NOT NULL
    );
    CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        rollout  TEXT NOT NULL,
        at_ms    INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        step     INTEGER NOT NULL,
        weight   INTEGER NOT NULL,
        phase    TEXT NOT NULL,
        verdict  TEXT,
        reason   TEXT NOT NULL
    );
    CREATE INDEX events_by_rollout ON events (rollout, id);
    CREATE TABLE samples (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        rollout  TEXT NOT NULL,
        at_ms    INTEGER NOT NULL,
        step     INTEGER NOT NULL,
        weight   INTEGER NOT NULL,
        verdict  TEXT NOT NULL,
        stable   TEXT NOT NULL,
        canary   TEXT NOT NULL
    );
    CREATE INDEX samples_by_rollout ON samples (rollout, id);",
    ),
    // 1 -> 2: the version a promotion replaced, for the report.
    Migration::Sql("ALTER TABLE rollouts ADD COLUMN former_stable_version TEXT;"),
    // 2 -> 3: runs. Every deploy (and every `serin run`) is a run of its
    // own, numbered 1, 2, 3 ... per rollout name; its decisions and samples
    // carry its number (0: outside any run, e.g. a registration), and the
    // run row keeps its versions, start, end and typed outcome.
    Migration::SqlThen(
        "CREATE TABLE runs (
            rollout        TEXT NOT NULL,
            run            INTEGER NOT NULL,
            stable_version TEXT,
            canary_version TEXT,
            started_ms     INTEGER NOT NULL,
            ended_ms       INTEGER,
            outcome        TEXT,
            reason         TEXT,
            PRIMARY KEY (rollout, run)
        );
        ALTER TABLE events ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE samples ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE rollouts ADD COLUMN run INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE rollouts ADD COLUMN outcome TEXT;
        CREATE INDEX events_by_run ON events (rollout, run, id);
        CREATE INDEX samples_by_run ON samples (rollout, run, id);",
        split_into_runs,
    ),
    // 3 -> 4: issue 17. The split the last verdict saw (JSON, null before
    // one was tested) and whether a "would have rolled back" episode is
    // open, kept with the state; and each interval's baseline numbers
    // (null without a baseline).
    Migration::Sql(
        "ALTER TABLE rollouts ADD COLUMN split TEXT;
        ALTER TABLE rollouts ADD COLUMN would_roll_back INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE samples ADD COLUMN baseline TEXT;",
    ),
];

/// Schema 2 had no runs: a rollout's decisions were one list. They are
/// split where runs ended: every `promoted` or `rolled-back` decision ends
/// a run, and the next decision begins the next one (run 1 is everything up
/// to the first end). A sample belongs to the last run that started at or
/// before it (samples before the first run's start: run 1). The outcome of
/// an old run is read from its last decision's reason (who acted was not
/// recorded: [`Actor::Unrecorded`]); the versions are known only for the
/// rollout's last run (from its row), earlier runs show none. A rollout in
/// progress whose run has no decision yet gets a run of its own from its
/// row.
fn split_into_runs(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    struct Old {
        id: i64,
        at: i64,
        kind: String,
        reason: String,
    }
    struct OldRun {
        started: i64,
        ended: Option<i64>,
        outcome: Option<Outcome>,
        reason: Option<String>,
        ids: Vec<i64>,
    }
    let names: Vec<String> = tx
        .prepare("SELECT DISTINCT rollout FROM events UNION SELECT name FROM rollouts")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in names {
        let events: Vec<Old> = tx
            .prepare("SELECT id, at_ms, kind, reason FROM events WHERE rollout = ?1 ORDER BY id")?
            .query_map(params![name], |r| {
                Ok(Old {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    kind: r.get(2)?,
                    reason: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut runs: Vec<OldRun> = Vec::new();
        for e in events {
            if runs.last().is_none_or(|r| r.ended.is_some()) {
                runs.push(OldRun {
                    started: e.at,
                    ended: None,
                    outcome: None,
                    reason: None,
                    ids: Vec::new(),
                });
            }
            let Some(run) = runs.last_mut() else { continue };
            run.ids.push(e.id);
            if let Some(outcome) = legacy_outcome(&e.kind, &e.reason) {
                run.ended = Some(e.at);
                run.outcome = Some(outcome);
                run.reason = Some(e.reason);
            }
        }
        // The rollout's row, if it is still registered.
        /// stable, canary, former stable, phase, updated.
        type Row = (String, Option<String>, Option<String>, String, i64);
        let row: Option<Row> = tx
            .query_row(
                "SELECT stable_version, canary_version, former_stable_version, phase, updated_ms
                 FROM rollouts WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let in_progress = row.as_ref().is_some_and(|(_, canary, _, phase, _)| {
            canary.is_some() && !Phase::parse(phase).is_some_and(Phase::is_finished)
        });
        if in_progress && runs.last().is_none_or(|r| r.ended.is_some()) {
            let started = row.as_ref().map_or(0, |r| r.4);
            runs.push(OldRun {
                started,
                ended: None,
                outcome: None,
                reason: None,
                ids: Vec::new(),
            });
        }
        let last = runs.len();
        // (stable, canary) of each run: the last run's from the rollout's
        // row; an earlier one's from the run after it, while the chain is
        // known: a rolled-back run left its stable as the next run's stable,
        // a promoted run's canary is the next run's stable.
        let mut known: Vec<(Option<String>, Option<String>)> = vec![(None, None); last];
        if let (Some((stable, canary, former, _, _)), Some(run)) = (&row, runs.last()) {
            known[last - 1] = if run.outcome.as_ref().is_some_and(Outcome::promoted) {
                (former.clone(), Some(stable.clone()))
            } else {
                (Some(stable.clone()), canary.clone())
            };
        }
        for i in (0..last.saturating_sub(1)).rev() {
            let Some(next_stable) = known[i + 1].0.clone() else {
                break;
            };
            known[i] = if runs[i].outcome.as_ref().is_some_and(Outcome::promoted) {
                (None, Some(next_stable))
            } else {
                (Some(next_stable), None)
            };
        }
        for (i, run) in runs.iter().enumerate() {
            let number = i as i64 + 1;
            let versions = known[i].clone();
            tx.execute(
                "INSERT INTO runs (rollout, run, stable_version, canary_version, started_ms, ended_ms, outcome, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    name,
                    number,
                    versions.0,
                    versions.1,
                    run.started,
                    run.ended,
                    run.outcome.as_ref().map(outcome_json),
                    run.reason
                ],
            )?;
            for id in &run.ids {
                tx.execute(
                    "UPDATE events SET run = ?1 WHERE id = ?2",
                    params![number, id],
                )?;
            }
            tx.execute(
                "UPDATE samples SET run = ?1 WHERE rollout = ?2 AND at_ms >= ?3",
                params![number, name, run.started],
            )?;
        }
        if last > 0 {
            tx.execute(
                "UPDATE samples SET run = 1 WHERE rollout = ?1 AND run = 0",
                params![name],
            )?;
            let outcome = runs[last - 1].outcome.as_ref().map(outcome_json);
            tx.execute(
                "UPDATE rollouts SET run = ?1, outcome = ?2 WHERE name = ?3",
                params![last as i64, outcome, name],
            )?;
        }
    }
    Ok(())
}

/// The outcome of a schema-2 run, from its last decision (see [`split_into_runs`]).
fn legacy_outcome(kind: &str, reason: &str) -> Option<Outcome> {
    match kind {
        "promoted" => Some(Outcome::Promoted {
            by: reason
                .contains("by an operator")
                .then_some(Actor::Unrecorded),
        }),
        "rolled-back" => Some(if reason == "manual" {
            Outcome::Operator {
                by: Actor::Unrecorded,
            }
        } else if let Some(rest) = reason.strip_prefix("no data for ") {
            Outcome::NoData {
                intervals: rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            }
        } else if let Some(rest) = reason.strip_prefix("no progress within the progress deadline (")
        {
            Outcome::Deadline {
                deadline_ms: rest
                    .split(')')
                    .next()
                    .and_then(|d| crate::time::parse_duration(d).ok())
                    .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX)),
            }
        } else if reason.starts_with("rolled back before serin stopped") {
            Outcome::Recovered {
                reason: reason.to_string(),
                of: None,
            }
        } else {
            Outcome::Analysis {
                check: reason.to_string(),
            }
        }),
        _ => None,
    }
}

fn outcome_json(o: &Outcome) -> String {
    serde_json::to_string(o).unwrap_or_default()
}

/// The schema version of an open database; one newer than this serin knows
/// is refused (it would be damaged, or misread).
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    Ok(version)
}

/// Something the store could not do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (disk, permissions, corruption).
    #[error("state database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The state directory could not be created.
    #[error("state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Another process owns the state directory.
    #[error(transparent)]
    Owned(#[from] crate::statedir::LockError),
    /// The database was written by a newer serin.
    #[error("state database {path} has schema version {found}; this serin knows up to {known}")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// The database was written by an older serin, and only reading was
    /// asked for: it is not migrated behind its writer's back.
    #[error(
        "state database {path} has schema version {found}, from an older serin; this serin reads version {known} and migrates only as its owner: read it with the serin that wrote it, or start this serin's `serve` or `run` on it"
    )]
    TooOld {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// Another writer changed the rollout since it was read.
    #[error("rollout {0} was changed by another writer; reload and retry")]
    Conflict(String),
    /// No such rollout.
    #[error("no rollout named {0}")]
    NotFound(String),
    /// The store could not be reached (a lost blocking task; for the
    /// cluster's status store, the API server).
    #[error("{0}")]
    Unavailable(String),
    /// The rollout has no run of this number.
    #[error("{rollout} has no run {run}{}", match last { 0 => " (it has had no run yet)".to_string(), n => format!(" (its runs are 1 to {n})") })]
    NoRun {
        /// The rollout.
        rollout: String,
        /// The run asked for.
        run: u32,
        /// Its last run (0: none).
        last: u32,
    },
    /// The database file exists but is empty: not a database serin wrote
    /// (SQLite would silently start a new one over it).
    #[error(
        "state database {path} is an empty file (0 bytes), not a serin database; \
         it may have been truncated: restore it from a backup, or move it away to start with no rollouts"
    )]
    Empty {
        /// The database file.
        path: PathBuf,
    },
    /// A stored value does not parse (the file was edited by hand?).
    #[error("state database: rollout {rollout}: bad {field} `{value}`")]
    Corrupt {
        /// The rollout.
        rollout: String,
        /// The column.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

/// A row of [`Store::list_each`]: the rollout's name, and its record or why
/// it cannot be read.
pub type Row = (String, Result<RolloutRecord, StoreError>);

/// A rollout as stored: its file, versions, state and last verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRecord {
    /// The rollout's name.
    pub name: String,
    /// The rollout file as registered (YAML or JSON text).
    pub spec: String,
    /// The stable version (after promotion: the former canary).
    pub stable_version: String,
    /// The canary version, if one is deployed.
    pub canary_version: Option<String>,
    /// The stable version the last promotion replaced (none before one).
    pub former_stable_version: Option<String>,
    /// Where stable's requests go (built-in and nginx providers): the file's
    /// upstream, or the former canary's after a promotion.
    pub stable_upstream: Option<String>,
    /// Where canary's requests go: the file's, or the one given to `deploy`.
    pub canary_upstream: Option<String>,
    /// The machine's state.
    pub state: State,
    /// The last verdict: (`pass|fail|inconclusive`, reason, time).
    pub last_verdict: Option<(String, String, Millis)>,
    /// Bumped by every write; writes check it.
    pub generation: i64,
    /// The current (or last) run's number; 0 before the first deploy.
    pub run: u32,
}

/// One run: a deploy (or a `serin run`) of a canary, from its start to its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The rollout's name.
    pub rollout: String,
    /// Its number: 1, 2, 3 ... per rollout name.
    pub run: u32,
    /// The stable version when it started (none for runs recorded before
    /// serin kept runs, except a rollout's last one).
    pub stable_version: Option<String>,
    /// The canary it rolled out.
    pub canary_version: Option<String>,
    /// When it started.
    pub started: Millis,
    /// When it ended; none while it runs.
    pub ended: Option<Millis>,
    /// How it ended.
    pub outcome: Option<Outcome>,
    /// The words of its end (the rollout's reason then).
    pub reason: Option<String>,
}

/// A stored decision.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    /// Its order.
    pub id: i64,
    /// The run it belongs to (0: outside any run, e.g. a registration).
    pub run: u32,
    /// The decision.
    pub decision: Decision,
    /// The kind as stored (`started`, `verdict`, ...).
    pub kind: String,
    /// The phase as stored.
    pub phase: String,
}

/// Per-interval metrics of both versions, for the report's charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When.
    pub at: Millis,
    /// The step index.
    pub step: usize,
    /// The weight in force.
    pub weight: Weight,
    /// The verdict of that interval.
    pub verdict: String,
    /// Stable's numbers over the interval.
    pub stable: VersionSample,
    /// Canary's numbers over the interval.
    pub canary: VersionSample,
    /// The baseline's numbers over the interval, when the rollout has one
    /// (a fresh copy of the stable's version beside the canary).
    pub baseline: Option<VersionSample>,
}

/// One version's numbers over one interval (not cumulative).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionSample {
    /// Requests answered in the interval.
    pub requests: u64,
    /// Of which errors (5xx or upstream failure).
    pub errors: u64,
    /// Median latency, if any request was answered.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency.
    pub p99_ms: Option<f64>,
}

impl VersionSample {
    /// Errors per request, `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// The SQLite store. Cheap to clone; one connection behind a mutex (writes
/// are tiny, and SQLite serialises writers anyway).
/// Bytes set aside for a pending-rollback record (a reason and an
/// outcome's JSON take a few hundred).
const PENDING_RESERVE: usize = 4096;

#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    /// Held while any clone lives, when opened by [`Store::open_owned`].
    _owner: Option<Arc<crate::statedir::StateLock>>,
    /// Opened as an unchanging file ([`Store::open_reader`] on a state dir
    /// this process cannot write): SQLite writes nothing beside it.
    immutable: bool,
}

impl Store {
    /// Where a rollback the database could not take is recorded until it
    /// can (`DIR/NAME.rollback-pending`, beside the database): a small file
    /// written and synced on its own, so a crash meanwhile loses nothing.
    pub fn pending_rollback_path(&self, name: &str) -> PathBuf {
        self.path.with_file_name(format!("{name}.rollback-pending"))
    }

    /// Space set aside, at the start of each run, for that run's
    /// pending-rollback record: `DIR/NAME.rollback-reserve`, written and
    /// synced while the disk has room. A rollback recorded when the disk is
    /// full ([`Store::write_pending_rollback`]) is written over these bytes
    /// and renamed into place, which takes no new space: the record keeps
    /// its cause (a new file on a full disk was left empty, and the next
    /// start rolled back with no reason and exit 3).
    fn reserve_path(&self, name: &str) -> PathBuf {
        self.path.with_file_name(format!("{name}.rollback-reserve"))
    }

    /// Sets aside the space of `name`'s pending-rollback record (see
    /// [`Store::reserve_path`]); kept if already there.
    pub fn reserve_pending_rollback(&self, name: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = self.reserve_path(name);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= PENDING_RESERVE as u64) {
            return Ok(());
        }
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[b' '; PENDING_RESERVE])?;
        file.sync_all()
    }

    /// Records a rollback the database could not take (`text`: its reason,
    /// then its outcome's JSON) in [`Store::pending_rollback_path`], synced:
    /// over the space set aside for it when there is some, so a full disk
    /// does not leave the record empty.
    pub fn write_pending_rollback(&self, name: &str, text: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        let path = self.pending_rollback_path(name);
        let reserve = self.reserve_path(name);
        let reserved = text.len() <= PENDING_RESERVE
            && std::fs::metadata(&reserve).is_ok_and(|m| m.len() >= text.len() as u64);
        let mut file = if reserved {
            std::fs::OpenOptions::new().write(true).open(&reserve)?
        } else {
            std::fs::File::create(&path)?
        };
        file.write_all(text.as_bytes())?;
        file.set_len(text.len() as u64)?;
        file.sync_all()?;
        if reserved {
            std::fs::rename(&reserve, &path)?;
        }
        Ok(())
    }

    /// Opens `DIR/serin.db` as its one owner (`serve`, `run`, `demo`): takes
    /// the state directory's lock first (see [`crate::statedir`]) and keeps
    /// it while the store (any clone) lives.
    pub fn open_owned(dir: &Path) -> Result<Store, StoreError> {
        create_dir(dir)?;
        let lock = crate::statedir::lock(dir)?;
        let mut store = Store::open(dir)?;
        store._owner = Some(Arc::new(lock));
        Ok(store)
    }

    /// Opens (creating if needed) `DIR/serin.db` and migrates it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        create_dir(dir)?;
        let path = dir.join("serin.db");
        if is_empty_file(&path) {
            return Err(StoreError::Empty { path });
        }
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sql)?;
        // WAL: readers (`serin status` in another process) never block the writer.
        // synchronous=FULL: a commit is on disk before `save` returns.
        // busy_timeout=250ms: a database another process holds (a backup
        // tool, an sqlite3 shell) fails a write quickly; the driver retries
        // with backoff and rolls back meanwhile, and nobody waits on the
        // connection's lock for seconds.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 250;",
        )
        .map_err(sql)?;
        let version = schema_version(&conn, &path)?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(sql)?;
            match migration {
                Migration::Sql(text) => tx.execute_batch(text).map_err(sql)?,
                Migration::SqlThen(text, then) => {
                    tx.execute_batch(text).map_err(sql)?;
                    then(&tx).map_err(sql)?;
                }
            }
            tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(Store {
            path,
            conn: Arc::new(Mutex::new(conn)),
            _owner: None,
            immutable: false,
        })
    }

    /// Opens `DIR/serin.db` only to read it (`serin status`, `history` and
    /// `report` on a state dir no process serves): read-only, never created
    /// and never migrated, so a reader cannot change a database another
    /// serin (an older one, say) is writing. A database of another schema
    /// version is refused with what to do.
    ///
    /// A database this process cannot write beside (another user's state
    /// dir, a read-only mount, an archived copy) cannot be read the usual
    /// way: SQLite needs to create or write its `serin.db-shm` to read a
    /// WAL database. It is then opened as an unchanging file (SQLite's
    /// `immutable`), which writes nothing, when no write-ahead log holds
    /// writes that are not in the file yet; [`Store::is_immutable`] says
    /// so, for a note to the user.
    pub fn open_reader(dir: &Path) -> Result<Store, StoreError> {
        match Store::open_reader_as(dir, false) {
            Err(StoreError::Sqlite { source, .. })
                if cannot_write_beside(&source) && !has_log(&dir.join("serin.db")) =>
            {
                Store::open_reader_as(dir, true)
            }
            other => other,
        }
    }

    /// Whether the store was opened as an unchanging file (see
    /// [`Store::open_reader`]).
    pub fn is_immutable(&self) -> bool {
        self.immutable
    }

    /// [`Store::open_reader`], read the usual way or as an unchanging file.
    fn open_reader_as(dir: &Path, immutable: bool) -> Result<Store, StoreError> {
        let path = dir.join("serin.db");
        if is_empty_file(&path) {
            return Err(StoreError::Empty { path });
        }
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if immutable {
            // A URI: the path is absolute and its `%`, `?` and `#` escaped.
            let absolute = std::path::absolute(&path).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            Connection::open_with_flags(
                format!("file:{}?immutable=1", uri_path(&absolute)),
                flags | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )
        } else {
            Connection::open_with_flags(&path, flags)
        }
        .map_err(sql)?;
        conn.execute_batch("PRAGMA busy_timeout = 250;")
            .map_err(sql)?;
        let version = schema_version(&conn, &path)?;
        let known = MIGRATIONS.len() as i64;
        if version < known {
            return Err(StoreError::TooOld {
                path,
                found: version,
                known,
            });
        }
        Ok(Store {
            path,
            conn: Arc::new(Mutex::new(conn)),
            _owner: None,
            immutable,
        })
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (the
        // transaction rolls back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a rollout, or replaces its file and state (`serin init` again).
    /// Its runs, decisions and samples are kept; its run number (and, on a
    /// re-registration, the last run's outcome) stays the last run's, also
    /// after a cleanup: the next deploy is the next number.
    pub fn register(
        &self,
        record: &RolloutRecord,
        now: Millis,
    ) -> Result<RolloutRecord, StoreError> {
        // A run still open is over: the registration replaces its state
        // (callers that know who registered end it first, saying so).
        self.end_unfinished_run(
            &record.name,
            Actor::Unrecorded,
            "ended unfinished: registered again",
            now,
        )?;
        let conn = self.lock();
        let s = &record.state;
        conn.execute(
            "INSERT INTO rollouts (name, spec, stable_version, canary_version, phase, step, weight,
                step_started_ms, hold, pause_served_ms, next_analysis_ms, stage_judged, no_data_streak,
                reason, last_verdict, last_verdict_reason, last_verdict_ms, generation, created_ms, updated_ms,
                stable_upstream, canary_upstream, former_stable_version, outcome, run)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, NULL, NULL, NULL, 1, ?15, ?15, ?16, ?17, ?18, ?19,
                (SELECT COALESCE(MAX(run), 0) FROM runs WHERE rollout = ?1))
             ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, stable_version = excluded.stable_version,
                canary_version = excluded.canary_version, stable_upstream = excluded.stable_upstream,
                canary_upstream = excluded.canary_upstream, former_stable_version = excluded.former_stable_version,
                phase = excluded.phase, step = excluded.step,
                weight = excluded.weight, step_started_ms = excluded.step_started_ms, hold = excluded.hold,
                pause_served_ms = excluded.pause_served_ms, next_analysis_ms = excluded.next_analysis_ms,
                stage_judged = excluded.stage_judged, no_data_streak = excluded.no_data_streak,
                reason = excluded.reason, last_verdict = NULL, last_verdict_reason = NULL,
                last_verdict_ms = NULL, split = NULL, would_roll_back = 0, generation = rollouts.generation + 1, updated_ms = excluded.updated_ms",
            params![
                record.name,
                record.spec,
                record.stable_version,
                record.canary_version,
                s.phase.as_str(),
                s.step as i64,
                s.weight.hundredths(),
                s.step_started.0 as i64,
                s.hold.map(Hold::as_str),
                s.pause_served_ms.map(|v| v as i64),
                s.next_analysis.0 as i64,
                s.stage_judged,
                s.no_data_streak,
                s.reason,
                now.0 as i64,
                record.stable_upstream,
                record.canary_upstream,
                record.former_stable_version,
                s.outcome.as_ref().map(outcome_json),
            ],
        )
        .map_err(|e| self.sql(e))?;
        drop(conn);
        // A new run starts from nothing: a rollback recorded for an earlier
        // one (see `pending_rollback_path`) is not this run's.
        let _ = std::fs::remove_file(self.pending_rollback_path(&record.name));
        self.get(&record.name)
    }

    /// Ends `name`'s run that never ended (a rollout registered again, or
    /// cleaned up, while its run was in progress; a `serin run` killed and
    /// started afresh): rolled back by `by`, its reason `why` and a
    /// rolled-back decision in its history, so no run is left without an
    /// outcome. Returns its number, if there was one.
    pub fn end_unfinished_run(
        &self,
        name: &str,
        by: Actor,
        why: &str,
        now: Millis,
    ) -> Result<Option<u32>, StoreError> {
        self.end_open_run(name, Outcome::Operator { by }, why, now)
    }

    /// Ends `name`'s run left open by a process that died (a `serin run`
    /// killed, then started again): [`Outcome::Abandoned`], not an
    /// operator's rollback, since nobody decided it.
    pub fn end_abandoned_run(
        &self,
        name: &str,
        why: &str,
        now: Millis,
    ) -> Result<Option<u32>, StoreError> {
        let outcome = Outcome::Abandoned {
            why: why.to_string(),
        };
        self.end_open_run(name, outcome, why, now)
    }

    fn end_open_run(
        &self,
        name: &str,
        outcome: Outcome,
        why: &str,
        now: Millis,
    ) -> Result<Option<u32>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let open: Option<i64> = tx
            .query_row(
                "SELECT MAX(run) FROM runs WHERE rollout = ?1 AND ended_ms IS NULL",
                params![name],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        let Some(run) = open else {
            return Ok(None);
        };
        let step: i64 = tx
            .query_row(
                "SELECT step FROM rollouts WHERE name = ?1 AND run = ?2",
                params![name, run],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sql(e))?
            .unwrap_or(0);
        let reason = match &outcome {
            Outcome::Abandoned { .. } => format!("{outcome}; all traffic to stable"),
            _ => format!("{why}: all traffic to stable ({outcome})"),
        };
        tx.execute(
            "UPDATE runs SET ended_ms = ?3, outcome = ?4, reason = ?5
             WHERE rollout = ?1 AND run = ?2 AND ended_ms IS NULL",
            params![name, run, now.0 as i64, outcome_json(&outcome), reason],
        )
        .map_err(|e| self.sql(e))?;
        let run = u32::try_from(run).unwrap_or(0);
        let said = Decision {
            at: now,
            kind: crate::rollout::DecisionKind::RolledBack,
            step: usize::try_from(step).unwrap_or(0),
            weight: Weight::ZERO,
            phase: Phase::RolledBack,
            verdict: None,
            reason,
        };
        insert_event(&tx, name, run, &said).map_err(|e| self.sql(e))?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(Some(run))
    }

    /// Writes a rollout's new state, versions, last verdict and decisions in
    /// one transaction, if nobody wrote it since `record.generation`. Returns
    /// the new generation.
    pub fn save(
        &self,
        record: &RolloutRecord,
        decisions: &[Decision],
        now: Millis,
    ) -> Result<i64, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        self.write(&tx, record, decisions, now)?;
        tx.commit().map_err(|e| self.sql(e))?;
        Ok(record.generation + 1)
    }

    /// Starts the rollout's next run (1, 2, 3 ... per name, counting runs
    /// kept after a cleanup) with `record`'s versions and state, and writes
    /// `record` and `decisions` as its first, in one transaction (checked
    /// against `record.generation` as [`Store::save`] is). Returns the
    /// record as written: its new run and generation.
    pub fn start_run(
        &self,
        record: &RolloutRecord,
        decisions: &[Decision],
        now: Millis,
    ) -> Result<RolloutRecord, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let last: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(run), 0) FROM runs WHERE rollout = ?1",
                params![record.name],
                |r| r.get(0),
            )
            .map_err(|e| self.sql(e))?;
        let mut next = record.clone();
        next.run = u32::try_from(last + 1).unwrap_or(u32::MAX);
        // A run starts without an end.
        next.state.outcome = None;
        tx.execute(
            "INSERT INTO runs (rollout, run, stable_version, canary_version, started_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                record.name,
                next.run,
                record.stable_version,
                record.canary_version,
                now.0 as i64
            ],
        )
        .map_err(|e| self.sql(e))?;
        self.write(&tx, &next, decisions, now)?;
        tx.commit().map_err(|e| self.sql(e))?;
        next.generation += 1;
        if let Err(e) = self.reserve_pending_rollback(&record.name) {
            tracing::warn!(rollout = %record.name, "cannot set aside space for a rollback record: {e}");
        }
        Ok(next)
    }

    /// Appends decisions to a rollout's `run` on their own (a registration,
    /// which belongs to no run: 0).
    pub fn add_events(
        &self,
        rollout: &str,
        run: u32,
        decisions: &[Decision],
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        for d in decisions {
            insert_event(&tx, rollout, run, d).map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }

    fn write(
        &self,
        tx: &rusqlite::Transaction<'_>,
        record: &RolloutRecord,
        decisions: &[Decision],
        now: Millis,
    ) -> Result<(), StoreError> {
        let s = &record.state;
        let (lv, lvr, lvt) = match &record.last_verdict {
            Some((v, r, t)) => (Some(v.as_str()), Some(r.as_str()), Some(t.0 as i64)),
            None => (None, None, None),
        };
        let changed = tx
            .execute(
                "UPDATE rollouts SET stable_version = ?2, canary_version = ?3, phase = ?4, step = ?5,
                    weight = ?6, step_started_ms = ?7, hold = ?8, pause_served_ms = ?9,
                    next_analysis_ms = ?10, stage_judged = ?11, no_data_streak = ?12, reason = ?13,
                    last_verdict = ?14, last_verdict_reason = ?15, last_verdict_ms = ?16,
                    generation = generation + 1, updated_ms = ?17,
                    stable_upstream = ?19, canary_upstream = ?20, former_stable_version = ?21,
                    run = ?22, outcome = ?23, split = ?24, would_roll_back = ?25
                 WHERE name = ?1 AND generation = ?18",
                params![
                    record.name,
                    record.stable_version,
                    record.canary_version,
                    s.phase.as_str(),
                    s.step as i64,
                    s.weight.hundredths(),
                    s.step_started.0 as i64,
                    s.hold.map(Hold::as_str),
                    s.pause_served_ms.map(|v| v as i64),
                    s.next_analysis.0 as i64,
                    s.stage_judged,
                    s.no_data_streak,
                    s.reason,
                    lv,
                    lvr,
                    lvt,
                    now.0 as i64,
                    record.generation,
                    record.stable_upstream,
                    record.canary_upstream,
                    record.former_stable_version,
                    record.run,
                    s.outcome.as_ref().map(outcome_json),
                    s.split.as_ref().map(split_json),
                    s.would_roll_back,
                ],
            )
            .map_err(|e| self.sql(e))?;
        if changed != 1 {
            return Err(StoreError::Conflict(record.name.clone()));
        }
        for d in decisions {
            insert_event(tx, &record.name, record.run, d).map_err(|e| self.sql(e))?;
        }
        // The run's end, once: the first outcome written is the run's.
        if let (Some(outcome), true) = (&s.outcome, record.run > 0) {
            let ended = decisions
                .iter()
                .rev()
                .find(|d| d.phase.is_finished())
                .map_or(now, |d| d.at);
            tx.execute(
                "UPDATE runs SET ended_ms = ?3, outcome = ?4, reason = ?5
                 WHERE rollout = ?1 AND run = ?2 AND ended_ms IS NULL",
                params![
                    record.name,
                    record.run,
                    ended.0 as i64,
                    outcome_json(outcome),
                    s.reason
                ],
            )
            .map_err(|e| self.sql(e))?;
        }
        Ok(())
    }

    /// One rollout.
    pub fn get(&self, name: &str) -> Result<RolloutRecord, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("{SELECT_ROLLOUT} WHERE name = ?1"),
                params![name],
                RawRollout::from_row,
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        row.ok_or_else(|| StoreError::NotFound(name.to_string()))?
            .parse()
    }

    /// Every rollout by name, each row read on its own: a row that does not
    /// parse (an unknown phase, a hand-edited value) is an error beside its
    /// name and hides none of the others.
    pub fn list_each(&self) -> Result<Vec<Row>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!("{SELECT_ROLLOUT} ORDER BY name"))
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([], |r| {
                let name = match r.get_ref(0)? {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    other => format!("{other:?}"),
                };
                Ok((name, RawRollout::from_row(r)))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rows
            .into_iter()
            .map(|(name, raw)| {
                let record = raw.map_err(|e| self.sql(e)).and_then(RawRollout::parse);
                (name, record)
            })
            .collect())
    }

    /// Every rollout, by name; fails if any row does not parse (see
    /// [`Store::list_each`]).
    pub fn list(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        self.list_each()?.into_iter().map(|(_, row)| row).collect()
    }

    /// Unregisters a rollout (`serin cleanup`): its row goes, its runs
    /// with their decisions and samples stay readable (history, report).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.end_unfinished_run(
            name,
            Actor::Unrecorded,
            "ended unfinished: cleaned up",
            crate::time::now(),
        )?;
        let conn = self.lock();
        let n = conn
            .execute("DELETE FROM rollouts WHERE name = ?1", params![name])
            .map_err(|e| self.sql(e))?;
        drop(conn);
        if n == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        let _ = std::fs::remove_file(self.pending_rollback_path(name));
        let _ = std::fs::remove_file(self.reserve_path(name));
        Ok(())
    }

    /// Deletes everything kept of a rollout (`serin cleanup --purge`): its
    /// row if still registered, its runs, decisions and samples. Returns
    /// how many runs were deleted; no such rollout and no runs: not found.
    pub fn purge(&self, name: &str) -> Result<u32, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| self.sql(e))?;
        let mut n = 0;
        for table in [
            "rollouts WHERE name",
            "events WHERE rollout",
            "samples WHERE rollout",
        ] {
            n += tx
                .execute(&format!("DELETE FROM {table} = ?1"), params![name])
                .map_err(|e| self.sql(e))?;
        }
        let runs = tx
            .execute("DELETE FROM runs WHERE rollout = ?1", params![name])
            .map_err(|e| self.sql(e))?;
        if n + runs == 0 {
            return Err(StoreError::NotFound(name.to_string()));
        }
        tx.commit().map_err(|e| self.sql(e))?;
        let _ = std::fs::remove_file(self.pending_rollback_path(name));
        let _ = std::fs::remove_file(self.reserve_path(name));
        Ok(u32::try_from(runs).unwrap_or(u32::MAX))
    }

    /// A rollout's runs, oldest first (kept after a cleanup).
    pub fn runs(&self, name: &str) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT run, stable_version, canary_version, started_ms, ended_ms, outcome, reason
                 FROM runs WHERE rollout = ?1 ORDER BY run",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(run, stable, canary, started, ended, outcome, reason)| {
                let outcome = outcome
                    .map(|o| {
                        serde_json::from_str(&o).map_err(|_| StoreError::Corrupt {
                            rollout: name.to_string(),
                            field: "run outcome",
                            value: o.clone(),
                        })
                    })
                    .transpose()?;
                Ok(RunRecord {
                    rollout: name.to_string(),
                    run: u32::try_from(run).unwrap_or(0),
                    stable_version: stable,
                    canary_version: canary,
                    started: Millis(started.max(0) as u64),
                    ended: ended.map(|e| Millis(e.max(0) as u64)),
                    outcome,
                    reason,
                })
            })
            .collect()
    }

    /// One run of a rollout; `None`: its last. A rollout with no such run
    /// (or none at all) is [`StoreError::NoRun`], or [`StoreError::NotFound`]
    /// when nothing of that name is kept.
    pub fn run(&self, name: &str, run: Option<u32>) -> Result<RunRecord, StoreError> {
        let mut runs = self.runs(name)?;
        let last = runs.last().map_or(0, |r| r.run);
        if runs.is_empty() && run.is_none() && self.get(name).is_err() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        let at = match run {
            None => runs.len().checked_sub(1),
            Some(n) => runs.iter().position(|r| r.run == n),
        };
        match at {
            Some(i) => Ok(runs.swap_remove(i)),
            None => Err(StoreError::NoRun {
                rollout: name.to_string(),
                run: run.unwrap_or(0),
                last,
            }),
        }
    }

    /// A rollout's decisions, oldest first: all of them, or one run's.
    pub fn events(&self, name: &str) -> Result<Vec<EventRecord>, StoreError> {
        self.events_where(name, None)
    }

    /// One run's decisions, oldest first.
    pub fn run_events(&self, name: &str, run: u32) -> Result<Vec<EventRecord>, StoreError> {
        self.events_where(name, Some(run))
    }

    fn events_where(&self, name: &str, run: Option<u32>) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT id, at_ms, kind, step, weight, phase, verdict, reason, run
                 FROM events WHERE rollout = ?1 AND (?2 IS NULL OR run = ?2) ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![name, run], |r| {
                Ok((
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, String>(7)?,
                    ),
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(
                |((id, at, kind, step, weight, phase, verdict, reason), run)| {
                    let corrupt = |field, value: String| StoreError::Corrupt {
                        rollout: name.to_string(),
                        field,
                        value,
                    };
                    let decision = Decision {
                        at: Millis(at as u64),
                        kind: decision_kind(&kind)
                            .ok_or_else(|| corrupt("event kind", kind.clone()))?,
                        step: step as usize,
                        weight: weight_from(weight)
                            .ok_or_else(|| corrupt("weight", weight.to_string()))?,
                        phase: Phase::parse(&phase)
                            .ok_or_else(|| corrupt("phase", phase.clone()))?,
                        verdict: verdict.as_deref().and_then(RecordedVerdict::parse),
                        reason,
                    };
                    Ok(EventRecord {
                        id,
                        run: u32::try_from(run).unwrap_or(0),
                        decision,
                        kind,
                        phase,
                    })
                },
            )
            .collect()
    }

    /// The latest decision of `kind` in one run of a rollout, as (reason,
    /// time): e.g. the run's last "would have rolled back", which status
    /// shows. `None` when the run has none.
    pub fn last_event(
        &self,
        name: &str,
        run: u32,
        kind: DecisionKind,
    ) -> Result<Option<(String, Millis)>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT reason, at_ms FROM events
                 WHERE rollout = ?1 AND run = ?2 AND kind = ?3 ORDER BY id DESC LIMIT 1",
                params![name, run, kind.as_str()],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(row.map(|(reason, at)| (reason, Millis(at.max(0) as u64))))
    }

    /// How many verdicts of each kind a rollout's run has had
    /// (`serin_verdicts_total`, this run's: a new run starts from zero).
    pub fn verdict_counts(&self, name: &str, run: u32) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT verdict, COUNT(*) FROM events WHERE rollout = ?1 AND run = ?2
                 AND verdict IS NOT NULL GROUP BY verdict ORDER BY verdict",
            )
            .map_err(|e| self.sql(e))?;
        stmt.query_map(params![name, run], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })
        .map_err(|e| self.sql(e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| self.sql(e))
    }

    /// Appends one interval's metrics to a rollout's run.
    pub fn add_sample(&self, rollout: &str, run: u32, sample: &Sample) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO samples (rollout, at_ms, step, weight, verdict, stable, canary, run, baseline)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                rollout,
                sample.at.0 as i64,
                sample.step as i64,
                sample.weight.hundredths(),
                sample.verdict,
                serde_json::to_string(&sample.stable).unwrap_or_default(),
                serde_json::to_string(&sample.canary).unwrap_or_default(),
                run,
                sample
                    .baseline
                    .as_ref()
                    .map(|b| serde_json::to_string(b).unwrap_or_default()),
            ],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// A rollout's samples, oldest first: all of them.
    pub fn samples(&self, rollout: &str) -> Result<Vec<Sample>, StoreError> {
        self.samples_where(rollout, None)
    }

    /// One run's samples, oldest first.
    pub fn run_samples(&self, rollout: &str, run: u32) -> Result<Vec<Sample>, StoreError> {
        self.samples_where(rollout, Some(run))
    }

    fn samples_where(&self, rollout: &str, run: Option<u32>) -> Result<Vec<Sample>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT at_ms, step, weight, verdict, stable, canary, baseline
                 FROM samples WHERE rollout = ?1 AND (?2 IS NULL OR run = ?2) ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![rollout, run], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(at, step, weight, verdict, stable, canary, baseline)| {
                let corrupt = |field, value: String| StoreError::Corrupt {
                    rollout: rollout.to_string(),
                    field,
                    value,
                };
                Ok(Sample {
                    at: Millis(at as u64),
                    step: step as usize,
                    weight: weight_from(weight)
                        .ok_or_else(|| corrupt("weight", weight.to_string()))?,
                    verdict,
                    stable: serde_json::from_str(&stable)
                        .map_err(|_| corrupt("stable sample", stable.clone()))?,
                    canary: serde_json::from_str(&canary)
                        .map_err(|_| corrupt("canary sample", canary.clone()))?,
                    baseline: baseline
                        .map(|b| {
                            serde_json::from_str(&b).map_err(|_| corrupt("baseline sample", b))
                        })
                        .transpose()?,
                })
            })
            .collect()
    }
}

const SELECT_ROLLOUT: &str =
    "SELECT name, spec, stable_version, canary_version, phase, step, weight,
    step_started_ms, hold, pause_served_ms, next_analysis_ms, stage_judged, no_data_streak, reason,
    last_verdict, last_verdict_reason, last_verdict_ms, generation, stable_upstream, canary_upstream,
    former_stable_version, run, outcome, split, would_roll_back
    FROM rollouts";

/// The split as stored: `{mismatch, reason, requested, observed}`.
fn split_json(s: &SplitSeen) -> String {
    serde_json::json!({
        "mismatch": s.mismatch,
        "reason": s.reason,
        "requested": s.requested,
        "observed": s.observed,
    })
    .to_string()
}

/// The stored split back, or `None` when it is not one.
fn split_from(text: &str) -> Option<SplitSeen> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(SplitSeen {
        mismatch: v["mismatch"].as_bool()?,
        reason: v["reason"].as_str()?.to_string(),
        requested: v["requested"].as_f64()?,
        observed: v["observed"].as_f64()?,
    })
}

fn insert_event(
    tx: &rusqlite::Transaction<'_>,
    rollout: &str,
    run: u32,
    d: &Decision,
) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO events (rollout, at_ms, kind, step, weight, phase, verdict, reason, run)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            rollout,
            d.at.0 as i64,
            d.kind.as_str(),
            d.step as i64,
            d.weight.hundredths(),
            d.phase.as_str(),
            d.verdict.map(RecordedVerdict::as_str),
            d.reason,
            run,
        ],
    )
}

/// A row as SQLite returns it, before its values are checked.
struct RawRollout {
    name: String,
    spec: String,
    stable_version: String,
    canary_version: Option<String>,
    phase: String,
    step: i64,
    weight: i64,
    step_started_ms: i64,
    hold: Option<String>,
    pause_served_ms: Option<i64>,
    next_analysis_ms: i64,
    stage_judged: bool,
    no_data_streak: i64,
    reason: String,
    last_verdict: Option<String>,
    last_verdict_reason: Option<String>,
    last_verdict_ms: Option<i64>,
    generation: i64,
    stable_upstream: Option<String>,
    canary_upstream: Option<String>,
    former_stable_version: Option<String>,
    run: i64,
    outcome: Option<String>,
    split: Option<String>,
    would_roll_back: bool,
}

impl RawRollout {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRollout> {
        Ok(RawRollout {
            name: r.get(0)?,
            spec: r.get(1)?,
            stable_version: r.get(2)?,
            canary_version: r.get(3)?,
            phase: r.get(4)?,
            step: r.get(5)?,
            weight: r.get(6)?,
            step_started_ms: r.get(7)?,
            hold: r.get(8)?,
            pause_served_ms: r.get(9)?,
            next_analysis_ms: r.get(10)?,
            stage_judged: r.get(11)?,
            no_data_streak: r.get(12)?,
            reason: r.get(13)?,
            last_verdict: r.get(14)?,
            last_verdict_reason: r.get(15)?,
            last_verdict_ms: r.get(16)?,
            generation: r.get(17)?,
            stable_upstream: r.get(18)?,
            canary_upstream: r.get(19)?,
            former_stable_version: r.get(20)?,
            run: r.get(21)?,
            outcome: r.get(22)?,
            split: r.get(23)?,
            would_roll_back: r.get(24)?,
        })
    }

    fn parse(self) -> Result<RolloutRecord, StoreError> {
        let corrupt = |field, value: String| StoreError::Corrupt {
            rollout: self.name.clone(),
            field,
            value,
        };
        let phase =
            Phase::parse(&self.phase).ok_or_else(|| corrupt("phase", self.phase.clone()))?;
        let weight =
            weight_from(self.weight).ok_or_else(|| corrupt("weight", self.weight.to_string()))?;
        let hold = match self.hold.as_deref() {
            None => None,
            Some("step") => Some(Hold::Step),
            Some("operator") => Some(Hold::Operator),
            Some(other) => return Err(corrupt("hold", other.to_string())),
        };
        let last_verdict = match (
            self.last_verdict,
            self.last_verdict_reason,
            self.last_verdict_ms,
        ) {
            (Some(v), Some(r), Some(t)) => Some((v, r, Millis(t as u64))),
            _ => None,
        };
        let split = match self.split.as_deref() {
            None => None,
            Some(t) => Some(split_from(t).ok_or_else(|| corrupt("split", t.to_string()))?),
        };
        let outcome = match self.outcome.as_deref() {
            None => None,
            Some(o) => {
                Some(serde_json::from_str(o).map_err(|_| corrupt("outcome", o.to_string()))?)
            }
        };
        Ok(RolloutRecord {
            run: u32::try_from(self.run).unwrap_or(0),
            state: State {
                outcome,
                phase,
                step: self.step.max(0) as usize,
                weight,
                step_started: Millis(self.step_started_ms as u64),
                hold,
                pause_served_ms: self.pause_served_ms.map(|v| v as u64),
                next_analysis: Millis(self.next_analysis_ms as u64),
                stage_judged: self.stage_judged,
                no_data_streak: self.no_data_streak.max(0) as u32,
                reason: self.reason,
                split,
                would_roll_back: self.would_roll_back,
            },
            name: self.name,
            spec: self.spec,
            stable_version: self.stable_version,
            canary_version: self.canary_version,
            former_stable_version: self.former_stable_version,
            stable_upstream: self.stable_upstream,
            canary_upstream: self.canary_upstream,
            last_verdict,
            generation: self.generation,
        })
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
        path: dir.to_path_buf(),
        source,
    })
}

/// A database file of 0 bytes with no write-ahead log holding its pages.
/// (A database in WAL mode may have an empty main file and everything in
/// `serin.db-wal` until its first checkpoint; that one is not empty.)
/// SQLite's answer when a reader cannot create or write the files it keeps
/// beside a WAL database (`-shm`): the directory or the mount is read-only.
fn cannot_write_beside(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

/// Whether `path`'s write-ahead log holds anything (writes an unchanging
/// read of the file alone would miss).
fn has_log(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(PathBuf::from(wal)).is_ok_and(|m| m.len() > 0)
}

/// `path` for a `file:` URI: `%`, `?` and `#` percent-encoded.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

fn is_empty_file(path: &Path) -> bool {
    let len = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    len(path) == Some(0) && len(Path::new(&wal)).unwrap_or(0) == 0
}

fn weight_from(v: i64) -> Option<Weight> {
    u16::try_from(v)
        .ok()
        .and_then(|h| Weight::from_hundredths(h).ok())
}

fn decision_kind(s: &str) -> Option<crate::rollout::DecisionKind> {
    use crate::rollout::DecisionKind as K;
    [
        K::Started,
        K::Step,
        K::Verdict,
        K::Operator,
        K::Gate,
        K::Promoted,
        K::RolledBack,
        K::Registered,
        K::Deployed,
        K::WouldRollBack,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> RolloutRecord {
        RolloutRecord {
            name: name.into(),
            spec: "name: x".into(),
            stable_version: "v1".into(),
            canary_version: Some("v2".into()),
            former_stable_version: None,
            stable_upstream: Some("http://127.0.0.1:9001".into()),
            canary_upstream: None,
            state: State::new(Millis(5)),
            last_verdict: None,
            generation: 0,
            run: 0,
        }
    }

    /// A database at schema version `v`, as that serin made it.
    fn schema(dir: &Path, v: usize) -> Connection {
        let conn = Connection::open(dir.join("serin.db")).unwrap();
        for m in &MIGRATIONS[..v] {
            let (Migration::Sql(text) | Migration::SqlThen(text, _)) = m;
            conn.execute_batch(text).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {v}"))
            .unwrap();
        conn
    }

    #[test]
    fn a_rollback_record_is_written_over_the_space_its_run_set_aside() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.register(&record("checkout"), Millis(10)).unwrap();
        store.start_run(&r, &[], Millis(11)).unwrap();
        let reserve = dir.path().join("checkout.rollback-reserve");
        let set_aside = std::fs::metadata(&reserve).unwrap();
        assert_eq!(set_aside.len(), PENDING_RESERVE as u64);
        let text = "rolled back: serin run interrupted (SIGINT)\n{\"kind\":\"interrupted\"}";
        store.write_pending_rollback("checkout", text).unwrap();
        let pending = store.pending_rollback_path("checkout");
        assert_eq!(std::fs::read_to_string(&pending).unwrap(), text);
        // The same file, renamed: no new space was needed.
        assert_eq!(std::fs::metadata(&pending).unwrap().ino(), set_aside.ino());
        assert!(!reserve.exists());
        // Without space set aside it is written all the same.
        std::fs::remove_file(&pending).unwrap();
        store.write_pending_rollback("checkout", "why").unwrap();
        assert_eq!(std::fs::read_to_string(&pending).unwrap(), "why");
        // The next run sets space aside again; a cleanup removes it.
        store.start_run(&r, &[], Millis(12)).ok();
        store.reserve_pending_rollback("checkout").unwrap();
        assert!(reserve.exists());
        store.remove("checkout").unwrap();
        assert!(!reserve.exists() && !pending.exists());
    }

    #[test]
    fn round_trips_state_events_and_samples_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = store.register(&record("checkout"), Millis(10)).unwrap();
        assert_eq!(r.generation, 1);
        r.state.phase = Phase::Paused;
        r.state.hold = Some(Hold::Operator);
        r.state.weight = Weight::from_hundredths(2550).unwrap();
        r.state.pause_served_ms = Some(40_000);
        r.state.would_roll_back = true;
        r.state.split = Some(SplitSeen {
            mismatch: true,
            reason: "canary got 0.4 % of requests (12/3000), 5 % requested".into(),
            requested: 5.0,
            observed: 0.4,
        });
        r.last_verdict = Some(("fail".into(), "canary error rate 30 %".into(), Millis(99)));
        let d = Decision {
            at: Millis(99),
            kind: DecisionKind::Verdict,
            step: 3,
            weight: r.state.weight,
            phase: Phase::Paused,
            verdict: Some(RecordedVerdict::Fail),
            reason: "canary error rate 30 %".into(),
        };
        let generation = store
            .save(&r, std::slice::from_ref(&d), Millis(100))
            .unwrap();
        assert_eq!(generation, 2);
        store
            .add_sample(
                "checkout",
                0,
                &Sample {
                    at: Millis(99),
                    step: 3,
                    weight: r.state.weight,
                    verdict: "fail".into(),
                    stable: VersionSample {
                        requests: 10,
                        ..Default::default()
                    },
                    canary: VersionSample {
                        requests: 3,
                        errors: 1,
                        p95_ms: Some(12.5),
                        ..Default::default()
                    },
                    baseline: Some(VersionSample {
                        requests: 4,
                        ..Default::default()
                    }),
                },
            )
            .unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let back = store.get("checkout").unwrap();
        assert_eq!(back.state, r.state);
        assert_eq!(back.last_verdict, r.last_verdict);
        assert_eq!(back.generation, 2);
        let events = store.events("checkout").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].decision, d);
        let samples = store.samples("checkout").unwrap();
        assert_eq!(samples[0].canary.requests, 3);
        assert_eq!(samples[0].canary.p95_ms, Some(12.5));
        assert_eq!(samples[0].canary.error_rate(), Some(1.0 / 3.0));
        assert_eq!(samples[0].baseline.as_ref().map(|b| b.requests), Some(4));
        assert_eq!(back.state.split, r.state.split);
        assert!(back.state.would_roll_back);
    }

    #[test]
    fn the_last_would_roll_back_of_a_run_is_found_and_another_runs_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.register(&record("checkout"), Millis(10)).unwrap();
        let r = store.start_run(&r, &[], Millis(11)).unwrap();
        let said = |at, kind, reason: &str| Decision {
            at: Millis(at),
            kind,
            step: 1,
            weight: Weight::from_hundredths(2000).unwrap(),
            phase: Phase::Progressing,
            verdict: None,
            reason: reason.into(),
        };
        let kind = DecisionKind::WouldRollBack;
        assert_eq!(store.last_event("checkout", r.run, kind).unwrap(), None);
        let decisions = [
            said(20, kind, "would have rolled back: first"),
            said(30, kind, "would have rolled back: second"),
            said(40, DecisionKind::Step, "step 2"),
        ];
        let r2 = store.get("checkout").unwrap();
        store.save(&r2, &decisions, Millis(41)).unwrap();
        assert_eq!(
            store.last_event("checkout", r.run, kind).unwrap(),
            Some(("would have rolled back: second".into(), Millis(30)))
        );
        let r3 = store.start_run(&store.get("checkout").unwrap(), &[], Millis(50));
        let run = r3.unwrap().run;
        assert_ne!(run, r.run);
        assert_eq!(store.last_event("checkout", run, kind).unwrap(), None);
    }

    #[test]
    fn a_stale_writer_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.register(&record("a"), Millis(1)).unwrap();
        let mut first = r.clone();
        first.state.step = 4;
        store.save(&first, &[], Millis(2)).unwrap();
        let mut stale = r;
        stale.state.step = 9;
        assert!(matches!(
            store.save(&stale, &[], Millis(3)),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.get("a").unwrap().state.step, 4);
    }

    #[test]
    fn a_database_of_the_first_schema_is_migrated_and_keeps_its_rollouts() {
        let dir = tempfile::tempdir().unwrap();
        let conn = schema(dir.path(), 1);
        conn.execute_batch(
            "INSERT INTO rollouts VALUES ('old', 'name: old', 'v1', 'v2', NULL, NULL, 'Progressing',
                1, 500, 10, NULL, NULL, 20, 0, 0, 'waiting', NULL, NULL, NULL, 3, 1, 1);",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        let old = store.get("old").unwrap();
        assert_eq!((old.stable_version.as_str(), old.generation), ("v1", 3));
        assert_eq!(old.former_stable_version, None);
        // The new column is written and read back.
        let mut promoted = old.clone();
        promoted.former_stable_version = Some("v1".into());
        promoted.stable_version = "v2".into();
        store.save(&promoted, &[], Millis(2)).unwrap();
        let read = store.get("old").unwrap();
        assert_eq!(read.former_stable_version.as_deref(), Some("v1"));
        assert_eq!(read.stable_version, "v2");
    }

    #[test]
    fn an_unchanging_read_writes_nothing_and_a_pending_log_is_not_skipped() {
        // A state dir with a name a URI would misread.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a%20b?c#d");
        Store::open(&dir)
            .unwrap()
            .register(&record("a"), Millis(1))
            .unwrap();
        let db = dir.join("serin.db");
        let before = std::fs::read(&db).unwrap();
        let reader = Store::open_reader_as(&dir, true).unwrap();
        assert!(reader.is_immutable());
        assert_eq!(reader.get("a").unwrap().name, "a");
        assert!(reader.register(&record("b"), Millis(1)).is_err());
        drop(reader);
        let shm = dir.join("serin.db-shm");
        assert!(!shm.exists(), "nothing created beside it");
        assert_eq!(std::fs::read(&db).unwrap(), before, "nothing written");
        // The usual read is not an unchanging one.
        assert!(!Store::open_reader(&dir).unwrap().is_immutable());
        // A log with writes not in the file: an unchanging read would miss
        // them, so it is not taken.
        let writer = Store::open(&dir).unwrap();
        writer.register(&record("c"), Millis(2)).unwrap();
        assert!(has_log(&db));
        assert!(cannot_write_beside(&rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
            None
        )));
    }

    #[test]
    fn a_reader_neither_migrates_nor_writes() {
        let dir = tempfile::tempdir().unwrap();
        drop(schema(dir.path(), 2));
        let version = |dir: &Path| -> i64 {
            Connection::open(dir.join("serin.db"))
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap()
        };
        match Store::open_reader(dir.path()) {
            Err(e @ StoreError::TooOld { found: 2, .. }) => {
                assert!(e.to_string().contains("older serin"), "{e}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an older schema was read"),
        }
        assert_eq!(version(dir.path()), 2, "not migrated by a reader");
        // A current database reads, and refuses writes.
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path())
            .unwrap()
            .register(&record("a"), Millis(1))
            .unwrap();
        let reader = Store::open_reader(dir.path()).unwrap();
        assert_eq!(reader.get("a").unwrap().name, "a");
        assert!(reader.register(&record("b"), Millis(1)).is_err());
        // No database: not created.
        let empty = tempfile::tempdir().unwrap();
        assert!(Store::open_reader(empty.path()).is_err());
        assert!(!empty.path().join("serin.db").exists());
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("serin.db")).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn a_row_that_does_not_parse_hides_none_of_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.register(&record("a"), Millis(1)).unwrap();
        store.register(&record("b"), Millis(1)).unwrap();
        store
            .lock()
            .execute(
                "UPDATE rollouts SET phase = 'Exploding' WHERE name = 'a'",
                [],
            )
            .unwrap();
        assert!(store.list().is_err(), "the strict list fails");
        let rows = store.list_each().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "a");
        let e = rows[0].1.as_ref().expect_err("a is corrupt").to_string();
        assert!(e.contains("phase") && e.contains("Exploding"), "{e}");
        assert_eq!(rows[1].1.as_ref().expect("b reads").name, "b");
    }

    #[test]
    fn an_empty_database_file_is_refused_and_a_missing_one_is_created() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serin.db"), b"").unwrap();
        let e = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(e, StoreError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("0 bytes"), "{e}");
        assert_eq!(
            std::fs::metadata(dir.path().join("serin.db"))
                .unwrap()
                .len(),
            0,
            "left as it was"
        );
        // A fresh directory, and a database just created and not yet
        // checkpointed (its pages in the WAL), open fine.
        let fresh = tempfile::tempdir().unwrap();
        let store = Store::open(fresh.path()).unwrap();
        store.register(&record("a"), Millis(1)).unwrap();
        std::mem::forget(store);
        let again = Store::open(fresh.path()).unwrap();
        assert_eq!(again.get("a").unwrap().name, "a");
    }

    #[test]
    fn an_owned_store_keeps_the_state_dir_until_its_last_clone_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_owned(dir.path()).unwrap();
        let clone = store.clone();
        drop(store);
        let e = Store::open_owned(dir.path()).err().expect("still owned");
        assert!(e.to_string().contains("is in use by pid"), "{e}");
        // Readers do not need the lock.
        Store::open(dir.path()).unwrap();
        drop(clone);
        Store::open_owned(dir.path()).unwrap();
    }

    #[test]
    fn list_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.register(&record("b"), Millis(1)).unwrap();
        store.register(&record("a"), Millis(1)).unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        store.remove("a").unwrap();
        assert!(matches!(store.get("a"), Err(StoreError::NotFound(_))));
        assert!(matches!(store.remove("a"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn a_database_of_schema_2_is_split_into_runs_where_runs_ended() {
        let dir = tempfile::tempdir().unwrap();
        let conn = schema(dir.path(), 2);
        // Three runs of `checkout` as schema 2 kept them, one list: rolled
        // back by analysis, rolled back by an operator, then promoted; and
        // `billing` in progress with no decision yet.
        conn.execute_batch(
            r#"INSERT INTO rollouts VALUES ('checkout', 'name: checkout', 'v4', NULL, NULL, NULL,
                'Succeeded', 4, 0, 10, NULL, NULL, 20, 1, 0, 'all steps completed', NULL, NULL,
                NULL, 9, 1, 1, 'v1');
             INSERT INTO rollouts VALUES ('billing', 'name: billing', 'b1', 'b2', NULL, NULL,
                'Initializing', 0, 0, 10, NULL, NULL, 20, 0, 0, 'waiting for health checks', NULL,
                NULL, NULL, 2, 1, 7000, NULL);
             INSERT INTO events (rollout, at_ms, kind, step, weight, phase, verdict, reason) VALUES
                ('checkout', 1000, 'started', 0, 500, 'Progressing', NULL, 'health checks passed'),
                ('checkout', 2000, 'verdict', 0, 500, 'RolledBack', 'fail', 'canary error rate 30 %'),
                ('checkout', 2000, 'rolled-back', 0, 0, 'RolledBack', NULL, 'canary error rate 30 %'),
                ('checkout', 3000, 'started', 0, 500, 'Progressing', NULL, 'health checks passed'),
                ('checkout', 3500, 'operator', 0, 500, 'Progressing', NULL, 'rollback requested'),
                ('checkout', 3500, 'rolled-back', 0, 0, 'RolledBack', NULL, 'manual'),
                ('checkout', 5000, 'started', 0, 500, 'Progressing', NULL, 'health checks passed'),
                ('checkout', 6000, 'promoted', 4, 0, 'Succeeded', NULL, 'all steps completed');
             INSERT INTO samples (rollout, at_ms, step, weight, verdict, stable, canary) VALUES
                ('checkout', 1500, 0, 500, 'fail', '{"requests":1,"errors":0}', '{"requests":1,"errors":0}'),
                ('checkout', 3200, 0, 500, 'pass', '{"requests":1,"errors":0}', '{"requests":1,"errors":0}'),
                ('checkout', 5500, 0, 500, 'pass', '{"requests":1,"errors":0}', '{"requests":1,"errors":0}'),
                ('checkout', 5600, 0, 500, 'pass', '{"requests":1,"errors":0}', '{"requests":1,"errors":0}');"#,
        )
        .unwrap();
        drop(conn);
        let store = Store::open(dir.path()).unwrap();
        let runs = store.runs("checkout").unwrap();
        let summary: Vec<_> = runs
            .iter()
            .map(|r| (r.run, r.started.0, r.ended.map(|e| e.0), r.outcome.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    1,
                    1000,
                    Some(2000),
                    Some(Outcome::Analysis {
                        check: "canary error rate 30 %".into()
                    })
                ),
                (
                    2,
                    3000,
                    Some(3500),
                    Some(Outcome::Operator {
                        by: Actor::Unrecorded
                    })
                ),
                (3, 5000, Some(6000), Some(Outcome::Promoted { by: None })),
            ]
        );
        // The last run's versions are the row's: the promoted v4 replaced v1.
        assert_eq!(runs[2].stable_version.as_deref(), Some("v1"));
        assert_eq!(runs[2].canary_version.as_deref(), Some("v4"));
        // The runs before it were rolled back: v1 was their stable too;
        // their canaries are not known.
        assert_eq!(runs[1].stable_version.as_deref(), Some("v1"));
        assert_eq!(runs[0].stable_version.as_deref(), Some("v1"));
        assert_eq!(runs[0].canary_version, None);
        let per_run = |n| store.run_events("checkout", n).unwrap().len();
        assert_eq!((per_run(1), per_run(2), per_run(3)), (3, 3, 2));
        let samples = |n| store.run_samples("checkout", n).unwrap().len();
        assert_eq!((samples(1), samples(2), samples(3)), (1, 1, 2));
        let checkout = store.get("checkout").unwrap();
        assert_eq!(checkout.run, 3);
        assert_eq!(checkout.state.outcome, Some(Outcome::Promoted { by: None }));
        // A rollout in progress with no decision yet has its open run.
        let billing = store.run("billing", None).unwrap();
        assert_eq!((billing.run, billing.ended), (1, None));
        assert_eq!(billing.canary_version.as_deref(), Some("b2"));
        assert_eq!(store.get("billing").unwrap().run, 1);
        // The next run continues the numbering.
        let next = store.start_run(&checkout, &[], Millis(7000)).unwrap();
        assert_eq!(next.run, 4);
    }

    #[test]
    fn a_run_left_open_by_a_new_registration_or_a_cleanup_is_ended_with_who_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.register(&record("a"), Millis(1)).unwrap();
        store.start_run(&r, &[], Millis(2)).unwrap();
        // Registered again while run 1 was in progress.
        assert_eq!(
            store
                .end_unfinished_run(
                    "a",
                    Actor::Cli,
                    "ended unfinished: registered again",
                    Millis(5)
                )
                .unwrap(),
            Some(1)
        );
        let r = store.register(&record("a"), Millis(5)).unwrap();
        let run = store.run("a", Some(1)).unwrap();
        assert_eq!(run.ended, Some(Millis(5)));
        assert_eq!(run.outcome, Some(Outcome::Operator { by: Actor::Cli }));
        let last = store.run_events("a", 1).unwrap().pop().unwrap();
        assert_eq!(last.kind, "rolled-back");
        assert!(
            last.decision
                .reason
                .starts_with("ended unfinished: registered again"),
            "{}",
            last.decision.reason
        );
        // Run 2, then a cleanup that did not end it: ended by the cleanup.
        store.start_run(&r, &[], Millis(6)).unwrap();
        store.remove("a").unwrap();
        let run = store.run("a", Some(2)).unwrap();
        assert!(run.ended.is_some() && run.outcome.is_some(), "{run:?}");
        assert!(
            run.reason.as_deref().unwrap_or("").contains("cleaned up"),
            "{run:?}"
        );
        // Nothing open: nothing to end.
        assert_eq!(
            store
                .end_unfinished_run("a", Actor::Cli, "x", Millis(9))
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_run_whose_process_died_is_abandoned_not_an_operators_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.register(&record("a"), Millis(1)).unwrap();
        store.start_run(&r, &[], Millis(2)).unwrap();
        assert_eq!(
            store.end_abandoned_run("a", "killed", Millis(5)).unwrap(),
            Some(1)
        );
        let run = store.run("a", Some(1)).unwrap();
        assert_eq!(
            run.outcome,
            Some(Outcome::Abandoned {
                why: "killed".into()
            })
        );
        assert_eq!(
            run.reason.as_deref(),
            Some("abandoned: killed; all traffic to stable")
        );
        assert!(!run.outcome.unwrap().stopped_from_outside());
        let last = store.run_events("a", 1).unwrap().pop().unwrap();
        assert_eq!(last.kind, "rolled-back");
    }

    #[test]
    fn runs_are_numbered_per_name_end_once_and_outlive_a_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = store.register(&record("a"), Millis(1)).unwrap();
        assert_eq!(r.run, 0);
        let mut first = store.start_run(&r, &[], Millis(2)).unwrap();
        assert_eq!(first.run, 1);
        first.state.phase = Phase::RolledBack;
        first.state.outcome = Some(Outcome::Operator { by: Actor::Cli });
        first.generation = store.save(&first, &[], Millis(3)).unwrap();
        // A later write does not move the run's end.
        store.save(&first, &[], Millis(9)).unwrap();
        let second = store
            .start_run(&store.get("a").unwrap(), &[], Millis(10))
            .unwrap();
        assert_eq!(second.run, 2);
        let runs = store.runs("a").unwrap();
        assert_eq!(runs[0].ended, Some(Millis(3)));
        assert_eq!(runs[1].ended, None);
        assert_eq!(store.verdict_counts("a", 2).unwrap(), vec![]);
        // Unregistered: the runs stay; purged: gone, and said how many.
        store.remove("a").unwrap();
        assert!(store.get("a").is_err());
        // Registered again after the cleanup: its last run is still 2.
        assert_eq!(store.register(&record("a"), Millis(11)).unwrap().run, 2);
        store.remove("a").unwrap();
        assert_eq!(store.runs("a").unwrap().len(), 2);
        assert_eq!(store.run("a", Some(1)).unwrap().run, 1);
        let e = store.run("a", Some(7)).unwrap_err().to_string();
        assert!(e.contains("no run 7") && e.contains("1 to 2"), "{e}");
        assert_eq!(store.purge("a").unwrap(), 2);
        assert!(store.runs("a").unwrap().is_empty());
        assert!(matches!(store.purge("a"), Err(StoreError::NotFound(_))));
    }
}
