//! `serin status`, `history` and `report` on a state dir that no process
//! serves (a `serin run` that has finished, a stopped `serin serve`): the
//! store is read directly, so a CI job can print the history and the report
//! of the `serin run` it just ran.
//!
//! The requests go, in this process, to the same API router over a daemon
//! that runs nothing ([`Daemon::reader`]): what is printed is what the API
//! would answer for the stored records, with no live figures. Only reads
//! are sent this way.

use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, header};
use http_body_util::BodyExt;
use tower::ServiceExt as _;

use crate::api::guard::Guard;
use crate::daemon::Daemon;
use crate::error::Error;
use crate::store::Store;

/// The database file inside a state dir.
const DATABASE: &str = "serin.db";

/// The rollouts with a rollback recorded beside the database in `dir`
/// (`NAME.rollback-pending`), which the database could not take.
fn pending_rollbacks(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rollback-pending").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// The API of a stored state, answered in this process.
pub struct Local {
    router: axum::Router,
    dir: PathBuf,
}

impl Local {
    /// The state in `dir`, which no running serin serves (the caller
    /// knows: no `--api`, no live `api.json`), when it holds a database.
    pub fn open(dir: &Path) -> anyhow::Result<Option<Local>> {
        if !dir.join(DATABASE).is_file() {
            return Ok(None);
        }
        Ok(Some(Local::over(dir)?))
    }

    fn over(dir: &Path) -> anyhow::Result<Local> {
        let store = Store::open_reader(dir).map_err(|e| {
            Error::unavailable(format!("cannot read the state in {}: {e}", dir.display()))
        })?;
        if store.is_immutable() {
            crate::errln!(
                "{} cannot be written here (another user's, or a read-only mount): its store is read read-only, as it was last written",
                dir.display()
            );
            for name in pending_rollbacks(dir) {
                crate::errln!(
                    "{name}: the rollback recorded in {} is not written to the state database (it cannot be written here); status shows it from that record",
                    dir.join(format!("{name}.rollback-pending")).display()
                );
            }
        }
        let daemon = Daemon::reader(store, crate::runtime::parser());
        let guard = Guard::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), &[]);
        Ok(Local {
            router: crate::api::server::router(daemon, guard),
            dir: dir.to_path_buf(),
        })
    }

    /// Where the state is read from, for a note to the user.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `GET path`: the status and the body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let request = http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, "127.0.0.1")
            .body(Body::empty())?;
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let is_status = path == "/api/v1/rollouts"
            || path
                .strip_prefix("/api/v1/rollouts/")
                .is_some_and(|rest| !rest.contains('/') && !rest.contains('?'));
        if status.is_success() && is_status {
            return Ok((status, self.with_pending_rollbacks(bytes)));
        }
        Ok((status, bytes))
    }

    /// Status as stored, and a rollback the database could not take (its
    /// record `NAME.rollback-pending` beside it, which the next start
    /// writes): rolled back, said so. The stored phase alone would tell a
    /// CI job the rollout is still in progress.
    fn with_pending_rollbacks(&self, bytes: Bytes) -> Bytes {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return bytes;
        };
        let mut changed = false;
        let one = |v: &mut serde_json::Value| {
            let Some(name) = v.get("name").and_then(|n| n.as_str()) else {
                return false;
            };
            if v.get("phase").and_then(|p| p.as_str()) == Some("RolledBack") {
                return false;
            }
            let file = self.dir.join(format!("{name}.rollback-pending"));
            let Ok(text) = std::fs::read_to_string(&file) else {
                // In progress as stored, yet nothing runs it: the serin that
                // ran it stopped during the run. Its stored reason ("waiting
                // for `serin promote`") would send an operator to a command
                // nothing can answer.
                let phase = v.get("phase").and_then(|p| p.as_str()).unwrap_or("");
                let deployed = v.pointer("/canary/version").is_some_and(|c| !c.is_null());
                if deployed && matches!(phase, "Initializing" | "Progressing" | "Paused") {
                    let was = v
                        .get("reason")
                        .and_then(|r| r.as_str())
                        .unwrap_or("")
                        .to_string();
                    v["reason"] = format!(
                        "no serin runs it now: the serin that ran it stopped during the run; `serin run` or `serin serve` on this state dir resumes it (it said: {was})"
                    )
                    .into();
                    return true;
                }
                return false;
            };
            let mut lines = text.lines();
            let cause = lines.next().unwrap_or("").trim();
            // The record holds the state's whole reason, which says
            // "rolled back:" itself.
            let cause = cause.strip_prefix("rolled back: ").unwrap_or(cause);
            let cause = if cause.is_empty() {
                "its cause was not recorded"
            } else {
                cause
            };
            v["phase"] = "RolledBack".into();
            // In force before it was recorded: the canary has no traffic.
            v["weight"] = 0.0.into();
            v["weightInForce"] = 0.0.into();
            if let Some(outcome) = lines
                .next()
                .and_then(|json| serde_json::from_str::<serde_json::Value>(json.trim()).ok())
            {
                v["outcome"] = outcome;
            }
            v["reason"] = format!(
                "rolled back: {cause} (recorded in {} when the state database could not take it; the next serin start on this state dir writes it)",
                file.display()
            )
            .into();
            true
        };
        match &mut value {
            serde_json::Value::Array(all) => {
                for v in all {
                    changed |= one(v);
                }
            }
            v => changed = one(v),
        }
        if !changed {
            return bytes;
        }
        serde_json::to_vec(&value).map_or(bytes, Bytes::from)
    }
}
