//! A real nginx as the traffic router (`traffic.provider: nginx`).
//!
//! serin owns one include file (`traffic.nginx.include`). It holds, for one
//! rollout: an `upstream` per version (with keepalive; a third for the
//! baseline when the rollout has one), the weighted split (`split_clients`,
//! keyed by the sticky cookie or header when there is one, else by
//! `$request_id`), a `map` per route override, a JSON `log_format` naming
//! the version that served each request and whether a route override sent it
//! (`"routed":"1"`), and a `server` on `traffic.listen`.
//!
//! # Changing the file ([`install`])
//! 1. The new text goes to a temporary file next to the include and is
//!    renamed over it (atomic: nginx never reads half a file).
//! 2. The configured `test` (`nginx -t`) runs against the whole
//!    configuration, then `reload`.
//! 3. If either fails, the previous text is put back (atomically again) and
//!    nginx, which never loaded the new file, keeps serving the old split.
//!    The error says which step failed (`nginx -t: …` or `nginx reload: …`)
//!    and what the command printed. While the test runs, the new text is on
//!    disk: a reload by anyone else in that moment would load it untested.
//! 4. A reload returns before nginx serves the new file: its master starts
//!    new workers, and the old ones keep accepting requests with the old
//!    split for about 100 ms more. So a change counts as applied only once
//!    nginx answers with it: the file's `server` has a marker location
//!    ([`MARKER_PATH`]) answering a fingerprint of the file, and serin asks
//!    it on fresh connections until only the new fingerprint has answered
//!    for [`SETTLE`] (at most [`SERVE_TIMEOUT`], else the change is an
//!    error).
//!
//! Monotone stickiness: `split_clients` maps a MurmurHash2 of the key to a
//! point in 0–100 % and takes the first bucket it falls in. The canary bucket
//! comes first, so raising its share only moves keys from stable to canary.
//!
//! With a baseline, the baseline's bucket comes last (`*`) and has the
//! canary's share ([`Weight::baseline_share`]: `min(w, 100 − w)`), taken from
//! the stable's, as in the built-in proxy: `w% canary; (100 − 2w)% stable;
//! * baseline`. Route overrides never send to the baseline.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serin_proxy::{Match, Route, StickyKey, Upstream, Version, Weight};
use tokio::sync::Mutex;

use crate::controller::seams::{BoxFuture, TrafficRouter};
use crate::error::{Error, Kind};

/// How long `test` or `reload` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The path of the marker location in the generated server. It answers
/// the file's fingerprint and is left out of the access log (so it never
/// counts as a request of either version).
pub const MARKER_PATH: &str = "/.serin/generation";
/// How long only the new fingerprint must answer before a change counts
/// as applied: longer than nginx's master waits (100 ms) between starting
/// new workers and telling the old ones to stop accepting.
pub const SETTLE: Duration = Duration::from_millis(500);
/// How long nginx may take to serve a reloaded file before the change is
/// an error.
pub const SERVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two questions to the marker.
const POLL: Duration = Duration::from_millis(10);

/// What the nginx router needs from the rollout file.
#[derive(Debug, Clone, PartialEq)]
pub struct NginxConfig {
    /// The rollout's name (used in nginx variable and upstream names).
    pub rollout: String,
    /// The include file serin owns.
    pub include: PathBuf,
    /// The configuration test, e.g. `nginx -t`.
    pub test: Vec<String>,
    /// The reload, e.g. `nginx -s reload`.
    pub reload: Vec<String>,
    /// The JSON access log serin reads for metrics.
    pub access_log: PathBuf,
    /// Where the generated server listens.
    pub listen: SocketAddr,
    /// Stable's upstream.
    pub stable: Upstream,
    /// Canary's upstream.
    pub canary: Upstream,
    /// The baseline's upstream (the stable's version started fresh, given
    /// the canary's share), if the rollout has one.
    pub baseline: Option<Upstream>,
    /// Sticky key, if any.
    pub sticky: Option<StickyKey>,
    /// Route overrides, checked in order before the weight.
    pub routes: Vec<Route>,
}

/// How `test` and `reload` commands are split: the rollout file's reading.
pub use crate::spec::argv;

/// Names usable inside nginx identifiers: `[a-z0-9_]`.
fn ident(rollout: &str) -> String {
    rollout
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Quotes a string for nginx's configuration syntax.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// nginx's variable for a request header: lowercase, `-` → `_`.
fn header_var(name: &str) -> String {
    format!("$http_{}", name.to_ascii_lowercase().replace('-', "_"))
}

/// The include file for `config` at `weight`. Pure, so it is golden-tested.
pub fn render(config: &NginxConfig, weight: Weight) -> String {
    let id = ident(&config.rollout);
    let mut f = String::new();
    let baseline = match config.baseline {
        Some(_) => weight.baseline_share(),
        None => Weight::ZERO,
    };
    let _ = write!(
        f,
        "{}\n# Canary weight: {weight} %.",
        header(&config.rollout)
    );
    if config.baseline.is_some() {
        let _ = write!(f, " Baseline weight: {baseline} %.");
    }
    f.push_str("\n\n");
    let upstreams = [
        (Version::Stable, Some(&config.stable)),
        (Version::Canary, Some(&config.canary)),
        (Version::Baseline, config.baseline.as_ref()),
    ];
    for (version, upstream) in upstreams {
        let Some(upstream) = upstream else { continue };
        let _ = writeln!(
            f,
            "upstream serin_{id}_{version} {{\n    server {};\n    keepalive 32;\n}}\n",
            upstream.authority()
        );
    }
    // The key of the split: the sticky field when the request has it, else a
    // per-request id (an even split over requests, not users).
    let key = match &config.sticky {
        None => "$request_id".to_string(),
        Some(sticky) => {
            let field = match sticky {
                StickyKey::Cookie(name) => format!("$cookie_{name}"),
                StickyKey::Header(name) => header_var(name.as_str()),
            };
            let _ = writeln!(
                f,
                "map {field} $serin_{id}_key {{\n    \"\" $request_id;\n    default {field};\n}}\n"
            );
            format!("$serin_{id}_key")
        }
    };
    let _ = writeln!(f, "split_clients \"{key}\" $serin_{id}_split {{");
    // Canary first, the stable next, the baseline last (`*`); a share of
    // zero is left out, and the last one written takes the rest.
    let (w, b) = (weight.hundredths(), baseline.hundredths());
    let shares = [
        (Version::Canary, w),
        (Version::Stable, 10_000 - w - b),
        (Version::Baseline, b),
    ];
    let last = shares.iter().rposition(|&(_, h)| h > 0).unwrap_or(1);
    for (i, &(version, h)) in shares.iter().enumerate() {
        if i == last {
            let _ = writeln!(f, "    * {version};");
        } else if h > 0 {
            let _ = writeln!(f, "    {}.{:02}% {version};", h / 100, h % 100);
        }
    }
    f.push_str("}\n\n");
    // Routes: one map each, yielding a version or "". The first non-empty one
    // wins; without any, the split decides.
    let mut chain = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let (field, value) = match &route.when {
            Match::Header { name, value } => (
                header_var(name.as_str()),
                value.to_str().unwrap_or("").to_string(),
            ),
            Match::Cookie { name, value } => (format!("$cookie_{name}"), value.clone()),
        };
        let _ = writeln!(
            f,
            "map {field} $serin_{id}_route{i} {{\n    {} {};\n    default \"\";\n}}\n",
            quote(&value),
            route.version
        );
        chain.push(format!("$serin_{id}_route{i}"));
    }
    // Whether a route override decided: one of the routes' maps is not "".
    let routed = if chain.is_empty() {
        "0".to_string()
    } else {
        let _ = writeln!(
            f,
            "map \"{}\" $serin_{id}_routed {{\n    ~[a-z] 1;\n    default 0;\n}}\n",
            chain.join(":")
        );
        format!("$serin_{id}_routed")
    };
    chain.push(format!("$serin_{id}_split"));
    let _ = writeln!(
        f,
        "map \"{}\" $serin_{id}_version {{\n    ~^:*(?<v>stable|canary|baseline) $v;\n    default stable;\n}}\n",
        chain.join(":")
    );
    let _ = writeln!(
        f,
        "log_format serin_{id} escape=json '{{\"time\":\"$time_iso8601\",\"version\":\"$serin_{id}_version\",\
         \"status\":\"$status\",\"request_time\":\"$request_time\",\
         \"upstream_response_time\":\"$upstream_response_time\",\"upstream_status\":\"$upstream_status\",\
         \"request_completion\":\"$request_completion\",\"routed\":\"{routed}\"}}';\n"
    );
    let _ = write!(
        f,
        "server {{\n    listen {};\n    access_log {} serin_{id};\n\n    location / {{\n        \
         proxy_pass http://serin_{id}_$serin_{id}_version;\n        \
         proxy_http_version 1.1;\n        \
         proxy_set_header Connection \"\";\n        \
         proxy_set_header Host $host;\n        \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n        \
         proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n",
        config.listen,
        quote(&config.access_log.display().to_string())
    );
    // The marker answers a fingerprint of everything above it: the same
    // file gives the same one, any change a new one.
    let marker = fingerprint(&f);
    let _ = writeln!(
        f,
        "\n    # serin asks this to know when nginx serves this file.\n    \
         location = {MARKER_PATH} {{\n        access_log off;\n        \
         default_type text/plain;\n        return 200 \"{marker}\\n\";\n    }}\n}}"
    );
    f
}

/// A hash of `text`, in hex: the generated file's fingerprint (only ever
/// compared within one process, so std's hasher does).
fn fingerprint(text: &str) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The fingerprint the marker of a generated file answers.
pub fn marker_of(text: &str) -> Option<String> {
    let after = text.split_once(&format!("location = {MARKER_PATH} {{"))?.1;
    let value = after.split_once("return 200 \"")?.1;
    let end = value.find('\\')?;
    Some(value[..end].to_string())
}

/// A failed change, with the command's own words.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    /// The file could not be written or renamed.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A command failed; the old file is back in place. Shown as
    /// `nginx -t: <what it printed> (…)`.
    #[error(
        "{step}: {} (`{command}`: {status}); the previous configuration is back in place",
        one_line(output, status)
    )]
    Command {
        /// Which step: `nginx -t` or `nginx reload`.
        step: &'static str,
        /// The command line.
        command: String,
        /// Exit status or "timed out".
        status: String,
        /// What it printed.
        output: String,
    },
    /// The include path holds a file serin did not write: it is never
    /// replaced (it could be the operator's own site, or another rollout's).
    #[error(
        "{path} exists and is not this rollout's (it does not begin with `{header}`): serin replaces only a file it wrote; remove it or give traffic.nginx.include a path of its own"
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// The first line serin's file for this rollout begins with.
        header: String,
    },
    /// The access log path holds something serin's log is not: nginx would
    /// append to it (the operator's file, a link to one).
    #[error(
        "{path}: {why}; traffic.nginx.accessLog must be a file of its own, new or holding only serin's log lines"
    )]
    NotALog {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// nginx reloaded, but did not answer with the new file in time.
    #[error(
        "nginx reloaded but did not serve the new configuration within {} s: {detail}",
        SERVE_TIMEOUT.as_secs()
    )]
    NotServed {
        /// What the marker answered last.
        detail: String,
    },
}

impl From<NginxError> for Error {
    /// nginx that refuses or fails a change is unavailable (the same change
    /// may pass once nginx or its configuration is fixed); a path serin
    /// must not write is a conflict with whoever owns it.
    fn from(e: NginxError) -> Error {
        let kind = match &e {
            NginxError::File { .. } | NginxError::Command { .. } | NginxError::NotServed { .. } => {
                Kind::Unavailable
            }
            NginxError::NotOurs { .. } | NginxError::NotALog { .. } => Kind::Conflict,
        };
        Error::new(kind, e.to_string())
    }
}

/// A command's output on one line (its status when it printed nothing).
fn one_line(output: &str, status: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        status.to_string()
    } else {
        lines.join("; ")
    }
}

/// Runs a command with a timeout; Ok if it exits 0. `step` names it in errors.
async fn run(step: &'static str, argv: &[String]) -> Result<(), NginxError> {
    let command = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(NginxError::Command {
            step,
            command,
            status: "empty command".into(),
            output: String::new(),
        });
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(NginxError::Command {
            step,
            command,
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
                .trim()
                .to_string(),
        }),
        Ok(Err(e)) => Err(NginxError::Command {
            step,
            command,
            status: "could not start".into(),
            output: e.to_string(),
        }),
        Err(_) => Err(NginxError::Command {
            step,
            command,
            status: format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
            output: String::new(),
        }),
    }
}

/// nginx appends serin's JSON lines to the access log, so it must be a log
/// of its own: absent (nginx creates it), or a plain file with one link that
/// is empty or begins with one of serin's lines. Checked before every write,
/// so a log swapped for a link (or a hard link) to another file after it was
/// registered is refused too.
fn check_access_log(path: &Path) -> Result<(), NginxError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let refuse = |why: &str| NginxError::NotALog {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NginxError::File {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link"));
    }
    if !meta.is_file() {
        return Err(refuse("it is not a regular file"));
    }
    if meta.nlink() > 1 {
        return Err(refuse("it has other names (a hard link)"));
    }
    let mut head = [0u8; 9];
    let n = std::fs::File::open(path)
        .and_then(|f| f.take(9).read(&mut head))
        .map_err(|source| NginxError::File {
            path: path.to_path_buf(),
            source,
        })?;
    if n > 0 && !b"{\"time\":\"".starts_with(&head[..n]) {
        return Err(refuse("it holds something other than serin's log lines"));
    }
    Ok(())
}

/// The first line of the file serin writes for `rollout`: how serin knows a
/// file at the include path is its own.
fn header(rollout: &str) -> String {
    format!("# Managed by serin for rollout `{rollout}`: every change rewrites this file.")
}

/// Writes `text` to `path` atomically (temp file in the same directory, then
/// rename). The temp file is made anew (`create_new`: never through a
/// symbolic link someone left at its name).
fn write_atomically(path: &Path, text: &str) -> Result<(), NginxError> {
    use std::io::Write as _;
    let file = |source| NginxError::File {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("serin-tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(file)?;
    f.write_all(text.as_bytes()).map_err(file)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(file)
}

/// Puts `text` in place as the include file: test, then reload, then, for a
/// generated file (one with a marker), waits until nginx serves it. On any
/// failure the previous text goes back (or the file is removed if there was
/// none) and the error says what failed.
pub async fn install(config: &NginxConfig, text: &str) -> Result<(), NginxError> {
    check_access_log(&config.access_log)?;
    let previous = std::fs::read_to_string(&config.include).ok();
    let ours = header(&config.rollout);
    if let Ok(meta) = std::fs::symlink_metadata(&config.include)
        && (!meta.is_file() || !previous.as_deref().is_some_and(|p| p.starts_with(&ours)))
    {
        return Err(NginxError::NotOurs {
            path: config.include.clone(),
            header: ours,
        });
    }
    if let Some(parent) = config.include.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| NginxError::File {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    write_atomically(&config.include, text)?;
    let restore = || match &previous {
        Some(old) => write_atomically(&config.include, old),
        None => std::fs::remove_file(&config.include).map_err(|source| NginxError::File {
            path: config.include.clone(),
            source,
        }),
    };
    if let Err(e) = run(TEST, &config.test).await {
        restore()?;
        return Err(e);
    }
    if let Err(e) = run(RELOAD, &config.reload).await {
        restore()?;
        // nginx may have half-applied nothing (a failed reload keeps the old
        // workers), but make sure it serves what is on disk again.
        let _ = run(RELOAD, &config.reload).await;
        return Err(e);
    }
    if let Some(marker) = marker_of(text)
        && let Err(e) = wait_served(config.listen, &marker).await
    {
        // Not served (the file is not one nginx includes, or nginx never
        // took it): what is on disk goes back to what nginx serves.
        restore()?;
        let _ = run(RELOAD, &config.reload).await;
        return Err(e);
    }
    Ok(())
}

const TEST: &str = "nginx -t";
const RELOAD: &str = "nginx reload";

/// Where serin asks the marker: the listen address, or loopback when nginx
/// listens on every address.
fn marker_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks the marker once, on a fresh connection (a client of its own, so
/// whichever worker accepts, old or new, answers): the fingerprint it
/// answers.
async fn ask_marker(addr: SocketAddr) -> Result<String, String> {
    use http_body_util::{BodyExt as _, Empty, Limited};
    use hyper_util::client::legacy::Client;
    let client =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}{MARKER_PATH}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let exchange = async {
        let response = client.get(uri).await.map_err(|e| format!("{e}"))?;
        let status = response.status();
        if status != http::StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| format!("read: {e}"))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 1 s".into()))
}

/// Waits until only `marker` has answered for [`SETTLE`] (bounded by
/// [`SERVE_TIMEOUT`]): nginx serves the new file, and its old workers no
/// longer take requests.
async fn wait_served(listen: SocketAddr, marker: &str) -> Result<(), NginxError> {
    let addr = marker_addr(listen);
    let deadline = tokio::time::Instant::now() + SERVE_TIMEOUT;
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let last = match ask_marker(addr).await {
            Ok(answer) if answer == marker => {
                let now = tokio::time::Instant::now();
                let first = *since.get_or_insert(now);
                if now.duration_since(first) >= SETTLE {
                    return Ok(());
                }
                None
            }
            Ok(answer) => Some(format!(
                "http://{addr}{MARKER_PATH} still answers `{answer}`, not `{marker}`"
            )),
            Err(e) => Some(format!("http://{addr}{MARKER_PATH}: {e}")),
        };
        if let Some(detail) = last {
            since = None;
            if tokio::time::Instant::now() >= deadline {
                return Err(NginxError::NotServed { detail });
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Routes through a real nginx by rewriting serin's include file.
pub struct NginxRouter {
    config: Mutex<NginxConfig>,
}

impl NginxRouter {
    /// A router for `config`; nothing is written until the first weight.
    pub fn new(config: NginxConfig) -> NginxRouter {
        NginxRouter {
            config: Mutex::new(config),
        }
    }

    /// Replaces the configuration (new upstreams); written with the next weight.
    pub async fn set_config(&self, config: NginxConfig) {
        *self.config.lock().await = config;
    }
}

impl TrafficRouter for NginxRouter {
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let (stable, canary, baseline) = {
                let c = self.config.lock().await;
                (c.stable.clone(), c.canary.clone(), c.baseline.clone())
            };
            let mut upstreams = vec![(Version::Stable, &stable), (Version::Canary, &canary)];
            if let Some(baseline) = &baseline {
                upstreams.push((Version::Baseline, baseline));
            }
            super::builtin::check_upstreams(&upstreams).await
        })
    }

    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let config = self.config.lock().await;
            Ok(install(&config, &render(&config, weight)).await?)
        })
    }

    fn promote(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut config = self.config.lock().await;
            let mut promoted = config.clone();
            promoted.stable = config.canary.clone();
            // The baseline ran the old stable's version: it ends here.
            promoted.baseline = None;
            install(&promoted, &render(&promoted, Weight::ZERO)).await?;
            *config = promoted;
            Ok(())
        })
    }

    /// Weight 0 and no header or cookie routes in the include file (the
    /// configuration keeps them for the next weight).
    fn withdraw(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let config = self.config.lock().await;
            let without = NginxConfig {
                routes: Vec::new(),
                ..config.clone()
            };
            Ok(install(&without, &render(&without, Weight::ZERO)).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> NginxConfig {
        NginxConfig {
            rollout: "check-out".into(),
            include: "/tmp/x.conf".into(),
            test: argv("nginx -t"),
            reload: argv("nginx -s reload"),
            access_log: "/var/log/nginx/serin-checkout.json".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            stable: Upstream::parse("http://127.0.0.1:9001").unwrap(),
            canary: Upstream::parse("http://127.0.0.1:9002").unwrap(),
            baseline: None,
            sticky: None,
            routes: vec![],
        }
    }

    #[test]
    fn weights_are_written_with_two_decimals_and_edges_collapse() {
        let c = config();
        let at = |h| render(&c, Weight::from_hundredths(h).unwrap());
        assert!(at(525).contains("    5.25% canary;\n    * stable;"));
        assert!(
            at(0).contains(
                "split_clients \"$request_id\" $serin_check_out_split {\n    * stable;\n}"
            )
        );
        assert!(at(10_000).contains("{\n    * canary;\n}"));
        assert!(at(2500).contains(
            "upstream serin_check_out_canary {\n    server 127.0.0.1:9002;\n    keepalive 32;"
        ));
        assert!(at(2500).contains("listen 127.0.0.1:8080;"));
        assert!(at(2500).contains("proxy_pass http://serin_check_out_$serin_check_out_version;"));
    }

    #[test]
    fn a_baseline_has_its_upstream_and_the_canarys_share_last() {
        let mut c = config();
        c.baseline = Some(Upstream::parse("http://127.0.0.1:9003").unwrap());
        let at = |h| render(&c, Weight::from_hundredths(h).unwrap());
        let split = |text: &str| {
            let from = text.find("split_clients").unwrap();
            let to = from + text[from..].find('}').unwrap();
            text[from..=to].to_string()
        };
        let text = at(525);
        assert!(text.contains("# Canary weight: 5.25 %. Baseline weight: 5.25 %.\n"));
        assert!(text.contains(
            "upstream serin_check_out_baseline {\n    server 127.0.0.1:9003;\n    keepalive 32;"
        ));
        assert!(
            split(&text).ends_with("{\n    5.25% canary;\n    89.50% stable;\n    * baseline;\n}"),
            "{}",
            split(&text)
        );
        assert!(text.contains("~^:*(?<v>stable|canary|baseline) $v;"));
        assert!(split(&at(0)).ends_with("{\n    * stable;\n}"));
        assert!(split(&at(5000)).ends_with("{\n    50.00% canary;\n    * baseline;\n}"));
        assert!(split(&at(6000)).ends_with("{\n    60.00% canary;\n    * baseline;\n}"));
        assert!(split(&at(10_000)).ends_with("{\n    * canary;\n}"));
        // Without a baseline, as before: no third upstream, two shares.
        let plain = render(&config(), Weight::from_hundredths(525).unwrap());
        assert!(!plain.contains("serin_check_out_baseline"));
        assert!(split(&plain).ends_with("{\n    5.25% canary;\n    * stable;\n}"));
        assert!(plain.contains("\"routed\":\"0\""));
    }

    #[test]
    fn sticky_key_falls_back_to_the_request_id_and_routes_come_first() {
        let mut c = config();
        c.sticky = Some(StickyKey::header("X-User-Id").unwrap());
        c.routes = vec![
            Route::header("X-Canary", "always", Version::Canary).unwrap(),
            Route::cookie("beta", "no", Version::Stable).unwrap(),
        ];
        let text = render(&c, Weight::from_hundredths(500).unwrap());
        assert!(text.contains("map $http_x_user_id $serin_check_out_key {\n    \"\" $request_id;\n    default $http_x_user_id;"));
        assert!(text.contains("split_clients \"$serin_check_out_key\""));
        assert!(
            text.contains("map $http_x_canary $serin_check_out_route0 {\n    \"always\" canary;")
        );
        assert!(text.contains("map $cookie_beta $serin_check_out_route1 {\n    \"no\" stable;"));
        assert!(text.contains(
            "map \"$serin_check_out_route0:$serin_check_out_route1:$serin_check_out_split\" $serin_check_out_version"
        ));
        assert!(text.contains(
            "map \"$serin_check_out_route0:$serin_check_out_route1\" $serin_check_out_routed {\n    ~[a-z] 1;\n    default 0;\n}"
        ));
        assert!(text.contains("\"routed\":\"$serin_check_out_routed\"}';"));
    }

    #[test]
    fn the_marker_answers_a_fingerprint_of_the_file() {
        let c = config();
        let at = |h| render(&c, Weight::from_hundredths(h).unwrap());
        let m20 = marker_of(&at(2000)).expect("a marker");
        assert_eq!(m20.len(), 16, "{m20}");
        assert_eq!(
            marker_of(&at(2000)),
            Some(m20.clone()),
            "same file, same marker"
        );
        assert_ne!(
            marker_of(&at(0)),
            Some(m20.clone()),
            "another weight, another marker"
        );
        let text = at(2000);
        assert!(text.contains(&format!(
            "    location = {MARKER_PATH} {{\n        access_log off;\n        default_type text/plain;\n        return 200 \"{m20}\\n\";\n    }}\n}}\n"
        )), "{text}");
        assert_eq!(marker_of("server {}"), None);
        assert_eq!(
            marker_addr("0.0.0.0:8080".parse().unwrap()),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            marker_addr("[::]:8080".parse().unwrap()),
            "[::1]:8080".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn a_failed_step_says_which_and_what_it_printed() {
        let e = NginxError::Command {
            step: TEST,
            command: "nginx -t -q".into(),
            status: "exit status: 1".into(),
            output:
                "nginx: [emerg] unknown directive \"x\"\nnginx: configuration file test failed\n"
                    .into(),
        };
        assert_eq!(
            e.to_string(),
            "nginx -t: nginx: [emerg] unknown directive \"x\"; nginx: configuration file test failed \
             (`nginx -t -q`: exit status: 1); the previous configuration is back in place"
        );
    }

    #[test]
    fn quoting_escapes_what_nginx_would_interpret() {
        assert_eq!(quote(r#"a"b$c\d"#), r#""a\"b\$c\\d""#);
        assert_eq!(ident("check-out"), "check_out");
    }
}
