//! The client side of the daemon's API: where it is, the token, and one
//! JSON request at a time.
//!
//! # Where the API is
//!
//! 1. `--api URL` (`SERIN_API`), with `--token` (`SERIN_TOKEN`); a
//!    `--state-dir` flag beats an exported `SERIN_API` (not a `--api` flag).
//! 2. Otherwise the state dir (`--state-dir`, `SERIN_STATE_DIR`, default
//!    `.serin`): the `serin serve` or `serin run` that owns it wrote where
//!    its API listens into `DIR/api.json` ([`crate::statedir`]), and
//!    `serin run` its token with it (used unless `--token` is given: an
//!    exported `SERIN_TOKEN`, meant for a `serin serve`, does not replace it).
//! 3. Otherwise, with the default state dir, `http://127.0.0.1:9900` (the
//!    default `serin serve --listen`).
//!
//! Nothing answering yet is waited for, up to [`WAIT`]: a daemon started in
//! the same breath (`serin serve & serin init FILE`) has not written its file
//! or bound its port yet. Only "nothing there" is waited for (no file, a
//! refused connection), never an answer; once serin answered, it is not
//! waited for again. Giving up says what was waited for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::serve::DEFAULT_STATE_DIR;
use crate::error::Error;
use crate::exit::invalid;
use crate::statedir::{self, Found};
use crate::wire::ErrorBody;

/// The API's address when neither `--api` nor the state dir names one.
pub const DEFAULT_API: &str = "http://127.0.0.1:9900";

/// How long a command waits for a serin that is starting.
pub const WAIT: Duration = Duration::from_secs(5);

/// How often it looks again meanwhile.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The API of a `serin serve` or `serin run`. Without it: the one that
    /// owns the state dir (it writes DIR/api.json), else
    /// http://127.0.0.1:9900.
    #[arg(long = "api", env = "SERIN_API")]
    pub api: Option<String>,
    /// Bearer token for commands that change something: visible ASCII
    /// characters, no spaces (anything else is refused, exit 2). An empty
    /// SERIN_TOKEN (`SERIN_TOKEN=`) means no token. Not needed for a
    /// `serin run` found through its state dir: its token is read there,
    /// and used rather than SERIN_TOKEN (a `--token` flag still wins).
    #[arg(long = "token", env = "SERIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The state dir of the `serin serve` or `serin run` to talk to (default
    /// .serin); read directly by status, history and report when no serin
    /// serves it.
    #[arg(long = "state-dir", env = "SERIN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl ApiArgs {
    /// The API to talk to, if one is named: `--api` (or SERIN_API), except
    /// that a `--state-dir` typed on the command line beats an exported
    /// SERIN_API (meant for a daemon elsewhere: a rollback went to the
    /// daemon's rollout of that name, not the `serin run` the flag named).
    pub fn api_in_force(&self) -> Option<&String> {
        let from_env = |var: &str, value: Option<&std::ffi::OsStr>| {
            value.is_some() && std::env::var_os(var).as_deref() == value
        };
        let api_from_env = from_env("SERIN_API", self.api.as_deref().map(std::ffi::OsStr::new));
        let dir_typed = self.state_dir.is_some()
            && !from_env(
                "SERIN_STATE_DIR",
                self.state_dir.as_deref().map(|d| d.as_os_str()),
            );
        self.api.as_ref().filter(|_| !(api_from_env && dir_typed))
    }

    /// The state dir named, or the default.
    pub fn dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

/// A failed API call: the daemon's own message when it sent one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The daemon answered with an error status.
    #[error("{message} (HTTP {status})")]
    Status {
        /// The status.
        status: StatusCode,
        /// The daemon's `error` field, or the body.
        message: String,
    },
    /// No answer at all.
    #[error(
        "cannot reach serin at {api}: {why} (is `serin serve` running? set --api or SERIN_API)"
    )]
    Unreachable {
        /// The address tried.
        api: String,
        /// Why.
        why: String,
    },
    /// Nothing was found to talk to within [`WAIT`].
    #[error("{0}")]
    NotFound(String),
}

/// Where the API is, as looked up once.
#[derive(Debug, Clone)]
enum Source {
    /// `--api`.
    Flag(String),
    /// The state dir; `named` when `--state-dir` or `SERIN_STATE_DIR` gave it.
    Dir { dir: PathBuf, named: bool },
}

/// One place to send a request to.
struct Target {
    base: String,
    token: Option<String>,
    /// Where the address was read, when a live serin wrote it: it bound
    /// its port before writing the file, so a refused connection there is
    /// not a serin starting up but one stopping (or killed and not yet
    /// reaped by its parent), not worth waiting for.
    written_by: Option<String>,
}

/// Sends JSON requests to the daemon.
pub struct ApiClient {
    source: Source,
    token: Option<String>,
    /// The token came from `SERIN_TOKEN`, not from `--token`.
    token_from_env: bool,
    /// Who this client says it is (attribution only): `cli` unless told.
    actor: crate::rollout::Actor,
    /// Serin answered once: it is not waited for again.
    answered: AtomicBool,
    /// The stored state, read in this process (`status`, `history`,
    /// `report` on a state dir no process serves).
    local: Option<crate::cli::local::Local>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

/// Checks `--api`: `http://host:port` only.
fn checked_url(api: &str) -> anyhow::Result<String> {
    let base = api.trim_end_matches('/').to_string();
    let expected = || {
        Error::invalid(format!(
            "--api: expected a URL like http://127.0.0.1:9900, got `{api}`"
        ))
    };
    let uri: http::Uri = base.parse().map_err(|_| expected())?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(expected().into());
    }
    Ok(base)
}

/// Whether a command that only reads goes to the store itself: no `--api`
/// (`found` is what the state dir holds), and no live serin on the state
/// dir. The default state dir with no `api.json` at all, while a daemon
/// answers at the default address (`default_answers`, asked only then),
/// goes to that daemon, as the commands that change something do (a
/// `.serin` left by a `serin run` in the same directory must not hide it).
fn reads_the_store(
    found: Option<&Found>,
    dir_named: bool,
    default_answers: impl FnOnce() -> bool,
) -> bool {
    match found {
        None | Some(Found::Live(_)) => false,
        Some(Found::Absent) if !dir_named => !default_answers(),
        Some(_) => true,
    }
}

/// Rollbacks that a `serin run` put in force but could not write (the
/// state database was locked when it was stopped; each is recorded in
/// `DIR/NAME.rollback-pending`), written now that nothing owns the state
/// dir, as the next start would write them: otherwise `history` and
/// `report` showed the run in progress, against `status`, until some serin
/// started on the dir again. Nothing is written while another process owns
/// the dir or the database still cannot take it (status then says the
/// rollback from its record); each one written is said on stderr.
fn write_pending_rollbacks(dir: &std::path::Path) {
    let pending: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rollback-pending").map(str::to_string)
        })
        .collect();
    if pending.is_empty() || !dir.join("serin.db").is_file() {
        return;
    }
    // The dir's one-owner lock first: a serin that owns it writes its own.
    let Ok(store) = crate::store::Store::open_owned(dir) else {
        return;
    };
    for name in pending {
        let path = store.pending_rollback_path(&name);
        match write_pending_rollback(&store, &name, &path) {
            Ok(true) => {
                if let Err(e) = std::fs::remove_file(&path) {
                    crate::errln!("cannot remove {}: {e}", path.display());
                }
                crate::errln!(
                    "{name}: the rollback recorded in {} (the state database could not take it when serin stopped) is written to the state database now",
                    path.display()
                );
            }
            Ok(false) => {}
            Err(e) => crate::errln!(
                "{name}: the rollback recorded in {} is not written yet: {e}",
                path.display()
            ),
        }
    }
}

/// Writes `name`'s recorded rollback through the state machine, as
/// [`crate::controller::driver::Driver::run`] does on a start; `Ok(true)`
/// when the record is done with (written now, or the run had ended).
fn write_pending_rollback(
    store: &crate::store::Store,
    name: &str,
    path: &std::path::Path,
) -> anyhow::Result<bool> {
    use crate::controller::machine::{self, Input};
    let Ok(recorded) = std::fs::read_to_string(path) else {
        return Ok(false);
    };
    let mut record = store.get(name)?;
    if record.state.phase.is_finished() {
        return Ok(record.state.phase == crate::rollout::Phase::RolledBack);
    }
    let setup = (crate::runtime::parser())(&record.spec, &format!("the stored rollout {name}"))
        .map_err(|e| anyhow!(e))?;
    // The reason, then the outcome's JSON on a line of its own.
    let (reason, of) = match recorded.trim().split_once('\n') {
        Some((reason, json)) => (reason, serde_json::from_str(json.trim()).ok()),
        None => (recorded.trim(), None),
    };
    let reason = reason.trim().to_string();
    let now = crate::time::now();
    let t = machine::step(
        &setup.plan,
        &record.state,
        now,
        Input::RecoveredRollback { reason, of },
    )
    .map_err(|e| anyhow!(e.0))?;
    record.state = t.state;
    store.save(&record, &t.decisions, now)?;
    Ok(true)
}

impl ApiClient {
    /// A client for `args`; refuses an `--api` that is not `http://host:port`.
    pub fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let source = match args.api_in_force() {
            Some(api) => Source::Flag(checked_url(api)?),
            None => Source::Dir {
                dir: args.dir(),
                named: args.state_dir.is_some(),
            },
        };
        let token = match args.token.as_deref() {
            // `SERIN_TOKEN=` clears the token rather than sending an empty one.
            Some("") if std::env::var_os("SERIN_TOKEN").is_some_and(|v| v.is_empty()) => None,
            Some(t) => Some(super::bearer_token(t)?),
            None => None,
        };
        // clap merges the flag and the variable; the same value in both is
        // taken as the variable's (it then yields to `serin run`'s own).
        let token_from_env = args.token.is_some()
            && std::env::var_os("SERIN_TOKEN").is_some_and(|v| {
                Some(v.as_os_str()) == args.token.as_deref().map(std::ffi::OsStr::new)
            });
        Ok(ApiClient {
            source,
            token,
            token_from_env,
            actor: crate::rollout::Actor::Cli,
            answered: AtomicBool::new(false),
            local: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The same client naming itself `actor` to the API (`serin monitor`).
    pub fn acting_as(mut self, actor: crate::rollout::Actor) -> ApiClient {
        self.actor = actor;
        self
    }

    /// `DELETE path` → JSON (`?purge=true` answers what it deleted).
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.call(Method::DELETE, path, None, None).await?;
        serde_json::from_slice(&body).with_context(|| format!("unexpected answer to DELETE {path}"))
    }

    /// A client for a command that only reads (`status`, `history`,
    /// `report`): on a state dir that no process serves, it reads the store
    /// directly ([`crate::cli::local`]) and says so on stderr.
    pub fn reading(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let mut client = ApiClient::new(args)?;
        // The state dir is looked at once (with `--api`, not at all).
        let found = args
            .api_in_force()
            .is_none()
            .then(|| statedir::find(&args.dir()));
        let default_answers = || {
            DEFAULT_API
                .trim_start_matches("http://")
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| {
                    // Loopback: refused at once when nothing listens.
                    std::net::TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok()
                })
        };
        if reads_the_store(found.as_ref(), args.state_dir.is_some(), default_answers) {
            write_pending_rollbacks(&args.dir());
            client.local = crate::cli::local::Local::open(&args.dir())?;
        }
        if let Some(local) = &client.local {
            crate::errln!(
                "no serin serves {}: read from its store",
                local.dir().display()
            );
        }
        Ok(client)
    }

    /// Where to send a request now, or (`Err`) what is missing.
    fn target(&self) -> Result<Target, String> {
        match &self.source {
            Source::Flag(base) => Ok(Target {
                base: base.clone(),
                token: self.token.clone(),
                written_by: None,
            }),
            Source::Dir { dir, named } => {
                let file = dir.join(statedir::API_FILE);
                let missing = match statedir::find(dir) {
                    Found::Live(api) => {
                        return Ok(Target {
                            written_by: Some(format!(
                                "{} names pid {} (`serin {}`), which still runs",
                                file.display(),
                                api.pid,
                                api.command
                            )),
                            base: checked_url(&api.url)
                                .map_err(|e| format!("{}: {e}", file.display()))?,
                            // Its own token goes only to the address it
                            // names, and is the one it takes: SERIN_TOKEN
                            // exported for a `serin serve` would be refused.
                            token: match api.token {
                                Some(own) if self.token_from_env || self.token.is_none() => {
                                    Some(own)
                                }
                                own => self.token.clone().or(own),
                            },
                        });
                    }
                    Found::Absent => format!("no {}", file.display()),
                    // A file left by a killed serin, or one not written
                    // as serin writes it, is never passed over for the
                    // default address: another daemon there may have a
                    // rollout of the same name.
                    Found::Stale(api) => {
                        return Err(format!(
                            "{} names pid {}, which no longer runs the serin that wrote it (killed?); nothing serves {} (remove the file, or name the API with --api)",
                            file.display(),
                            api.pid,
                            dir.display()
                        ));
                    }
                    Found::Unreadable(why) => return Err(why),
                };
                if *named {
                    return Err(missing);
                }
                Ok(Target {
                    base: DEFAULT_API.to_string(),
                    token: self.token.clone(),
                    written_by: None,
                })
            }
        }
    }

    /// A "no such rollout" from the daemon at the default address, found
    /// because nothing serves the state dir: says which serin answered,
    /// and where a finished `serin run`'s state would be read instead.
    fn said_where(&self, target: &Target, answer: anyhow::Result<Bytes>) -> anyhow::Result<Bytes> {
        let Source::Dir { dir, named: false } = &self.source else {
            return answer;
        };
        if target.base != DEFAULT_API {
            return answer;
        }
        answer.map_err(|e| match e.downcast::<ApiError>() {
            Ok(ApiError::Status { status, message }) if status == StatusCode::NOT_FOUND => {
                let stored = dir.join("serin.db").is_file();
                ApiError::Status {
                    status,
                    message: format!(
                        "{message}: asked the serin at {DEFAULT_API} (nothing serves state dir {}){}",
                        dir.display(),
                        if stored {
                            format!(
                                "; {} holds a state no process serves (a finished `serin run`?): add --state-dir {} to read it",
                                dir.display(),
                                dir.display()
                            )
                        } else {
                            String::new()
                        }
                    ),
                }
                .into()
            }
            Ok(other) => other.into(),
            Err(e) => e,
        })
    }

    /// What was waited for, when giving up.
    fn gave_up(&self, why: &str) -> anyhow::Error {
        let waited = WAIT.as_secs();
        match &self.source {
            Source::Flag(base) => ApiError::Unreachable {
                api: base.clone(),
                why: format!("{why}; waited {waited} s for it to start"),
            }
            .into(),
            Source::Dir { dir, named: true } => ApiError::NotFound(format!(
                "no serin serves state dir {}: waited {waited} s for a `serin serve` or `serin run` \
                 on it to write {} ({why}); start one with --state-dir {}, or name its API with --api",
                dir.display(),
                dir.join(statedir::API_FILE).display(),
                dir.display()
            ))
            .into(),
            Source::Dir { dir, named: false } => ApiError::NotFound(format!(
                "cannot reach serin: waited {waited} s for a `serin serve` or `serin run` on state dir {} \
                 ({}) and for one at {DEFAULT_API} ({why}); start `serin serve`, or name the state dir \
                 with --state-dir or the API with --api",
                dir.display(),
                match statedir::find(dir) {
                    Found::Stale(api) => format!(
                        "{} names pid {}, which no longer runs the serin that wrote it",
                        dir.join(statedir::API_FILE).display(),
                        api.pid
                    ),
                    Found::Unreadable(why) => why,
                    _ => format!("no {}", dir.join(statedir::API_FILE).display()),
                }
            ))
            .into(),
        }
    }

    /// `GET path` → JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.call(Method::GET, path, None, None).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("unexpected answer from serin to {path}"))
    }

    /// `GET path` → text (HTML report).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let body = self.call(Method::GET, path, None, None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `DELETE path`, expecting no body back.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, path, None, None)
            .await
            .map(|_| ())
    }

    /// `method path` with a JSON body → JSON.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let json = serde_json::to_vec(body)?;
        let answer = self
            .call(method, path, Some(json), Some("application/json"))
            .await?;
        serde_json::from_slice(&answer)
            .with_context(|| format!("unexpected answer from serin to {path}"))
    }

    /// `method path` with a raw body and content type → JSON.
    pub async fn send_raw<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<T> {
        let answer = self
            .call(method, path, Some(body), Some(content_type))
            .await?;
        serde_json::from_slice(&answer)
            .with_context(|| format!("unexpected answer from serin to {path}"))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> anyhow::Result<Bytes> {
        if let Some(local) = &self.local {
            if method != Method::GET {
                return Err(Error::new(
                    crate::error::Kind::Internal,
                    format!("{method} {path} sent to a stored state"),
                )
                .into());
            }
            let (status, bytes) = local.get(path).await?;
            return answer(status, bytes);
        }
        let body = Bytes::from(body.unwrap_or_default());
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let why = match self.target() {
                Ok(target) => match self
                    .once(&target, method.clone(), path, body.clone(), content_type)
                    .await
                {
                    Ok(answer) => {
                        self.answered.store(true, Ordering::Relaxed);
                        return self.said_where(&target, answer);
                    }
                    Err(why) if target.written_by.is_some() => {
                        return Err(ApiError::NotFound(format!(
                            "{}, but nothing listens at {} ({why}): that serin is stopping, or was \
                             killed and its parent has not reaped it yet",
                            target.written_by.unwrap_or_default(),
                            target.base
                        ))
                        .into());
                    }
                    Err(why) => why,
                },
                Err(why) => why,
            };
            if self.answered.load(Ordering::Relaxed) {
                // It answered before (`serin monitor`): it has stopped.
                return Err(ApiError::NotFound(format!(
                    "serin no longer answers ({why}): the `serin serve` or `serin run` this command \
                     talked to has stopped"
                ))
                .into());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.gave_up(&why));
            }
            tokio::time::sleep(LOOK_AGAIN).await;
        }
    }

    /// One request to `target`: the outcome, or (`Err`) why nothing
    /// answered there (a refused connection: worth waiting for).
    async fn once(
        &self,
        target: &Target,
        method: Method,
        path: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Result<anyhow::Result<Bytes>, String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", target.base));
        if let Some(token) = &target.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request = request.header(crate::rollout::ACTOR_HEADER, self.actor.as_str());
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.into())),
        };
        let unreachable = |why: String| ApiError::Unreachable {
            api: target.base.clone(),
            why,
        };
        let response =
            match tokio::time::timeout(Duration::from_secs(30), self.client.request(request)).await
            {
                Err(_) => return Ok(Err(unreachable("no answer within 30 s".into()).into())),
                // Nothing listens (yet): the request never reached anyone.
                Ok(Err(e)) if e.is_connect() => return Err(error_chain(&e)),
                Ok(Err(e)) => return Ok(Err(unreachable(error_chain(&e)).into())),
                Ok(Ok(r)) => r,
            };
        self.answered.store(true, Ordering::Relaxed);
        let status = response.status();
        let bytes = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Ok(Err(unreachable(e.to_string()).into())),
        };
        Ok(answer(status, bytes))
    }
}

/// An answer's body, or the error it says.
fn answer(status: StatusCode, bytes: Bytes) -> anyhow::Result<Bytes> {
    if status.is_success() {
        return Ok(bytes);
    }
    let message = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
    let err = ApiError::Status { status, message };
    // The daemon refused our input: that is the user's input, exit 2.
    if status == StatusCode::BAD_REQUEST {
        return Err(anyhow!(Error::invalid(err.to_string())));
    }
    Err(err.into())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `/api/v1/rollouts/NAME` plus `rest`. Names are `[a-z0-9-]`; anything else
/// is refused (exit 2) before it reaches a URL.
pub fn rollout_path(name: &str, rest: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(format!(
            "NAME: expected a rollout name of a-z, 0-9 and -, got `{name}`"
        )));
    }
    Ok(format!("/api/v1/rollouts/{name}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_command_asks_the_default_address_only_when_it_matters() {
        let api = statedir::ApiFile {
            url: "http://127.0.0.1:1".into(),
            pid: 1,
            command: "run".into(),
            token: None,
        };
        let never = || -> bool { panic!("the default address was asked") };
        // --api, or a live serin on the state dir: the API.
        assert!(!reads_the_store(None, false, never));
        assert!(!reads_the_store(
            Some(&Found::Live(api.clone())),
            false,
            never
        ));
        // A stale file, or a named dir without one: the store, no connect.
        assert!(reads_the_store(Some(&Found::Stale(api)), false, never));
        assert!(reads_the_store(Some(&Found::Absent), true, never));
        // The default dir with no file: the daemon at the default address
        // if one answers, else the store.
        assert!(!reads_the_store(Some(&Found::Absent), false, || true));
        assert!(reads_the_store(Some(&Found::Absent), false, || false));
    }

    #[tokio::test]
    async fn a_rollout_missing_at_the_default_address_says_who_answered_and_where_a_state_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serin.db"), b"").unwrap();
        let args = ApiArgs {
            api: None,
            token: None,
            state_dir: None,
        };
        let mut client = ApiClient::new(&args).unwrap();
        client.source = Source::Dir {
            dir: dir.path().to_path_buf(),
            named: false,
        };
        let target = Target {
            base: DEFAULT_API.to_string(),
            token: None,
            written_by: None,
        };
        let missing = || {
            Err(ApiError::Status {
                status: StatusCode::NOT_FOUND,
                message: "no rollout named trio".into(),
            }
            .into())
        };
        let said = client
            .said_where(&target, missing())
            .unwrap_err()
            .to_string();
        assert!(
            said.contains("asked the serin at http://127.0.0.1:9900")
                && said.contains(&format!("add --state-dir {}", dir.path().display())),
            "{said}"
        );
        // Found through the state dir, or named: as the daemon said it.
        let elsewhere = Target {
            base: "http://127.0.0.1:1".into(),
            token: None,
            written_by: None,
        };
        let said = client
            .said_where(&elsewhere, missing())
            .unwrap_err()
            .to_string();
        assert_eq!(said, "no rollout named trio (HTTP 404 Not Found)");
    }
}
