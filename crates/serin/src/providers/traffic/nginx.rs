//! A real nginx as the traffic router (`traffic.provider: nginx`).
//!
//! serin owns one include file (`traffic.nginx.include`). It holds, for one
//! rollout: an `upstream` per version (with keepalive), the weighted split
//! (`split_clients`, keyed by the sticky cookie or header when there is one,
//! else by `$request_id`), a `map` per route override, a JSON `log_format`
//! naming the version that served each request, and a `server` on
//! `traffic.listen`.
//!
//! # Changing the file ([`install`])
//! 1. The new text goes to a temporary file next to the include and is
//!    renamed over it (atomic: nginx never reads half a file).
//! 2. The configured `test` (`nginx -t`) runs against the whole
//!    configuration, then `reload`.
//! 3. If either fails, the previous text is put back (atomically again) and
//!    nginx, which never loaded the new file, keeps serving the old split.
//!    The error says which command failed and what it printed. While the
//!    test runs, the new text is on disk: a reload by anyone else in that
//!    moment would load it untested.
//!
//! Monotone stickiness: `split_clients` maps a MurmurHash2 of the key to a
//! point in 0–100 % and takes the first bucket it falls in. The canary bucket
//! comes first, so raising its share only moves keys from stable to canary.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serin_proxy::{Match, Route, StickyKey, Upstream, Version, Weight};
use tokio::sync::Mutex;

use crate::controller::driver::{BoxFuture, TrafficRouter};

/// How long `test` or `reload` may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Sticky key, if any.
    pub sticky: Option<StickyKey>,
    /// Route overrides, checked in order before the weight.
    pub routes: Vec<Route>,
}

/// Splits a command line on white space (no quoting: paths with spaces are
/// not supported in `test`/`reload`; say so in the docs).
pub fn argv(command: &str) -> Vec<String> {
    command.split_whitespace().map(str::to_string).collect()
}

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
    let _ = writeln!(
        f,
        "# Managed by serin for rollout `{}`: every change rewrites this file.\n\
         # Canary weight: {weight} %.\n",
        config.rollout
    );
    for (version, upstream) in [
        (Version::Stable, &config.stable),
        (Version::Canary, &config.canary),
    ] {
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
    match weight.hundredths() {
        0 => {
            let _ = writeln!(f, "    * stable;");
        }
        10_000 => {
            let _ = writeln!(f, "    * canary;");
        }
        h => {
            let _ = writeln!(f, "    {}.{:02}% canary;\n    * stable;", h / 100, h % 100);
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
    chain.push(format!("$serin_{id}_split"));
    let _ = writeln!(
        f,
        "map \"{}\" $serin_{id}_version {{\n    ~^:*(?<v>stable|canary) $v;\n    default stable;\n}}\n",
        chain.join(":")
    );
    let _ = writeln!(
        f,
        "log_format serin_{id} escape=json '{{\"time\":\"$time_iso8601\",\"version\":\"$serin_{id}_version\",\
         \"status\":\"$status\",\"request_time\":\"$request_time\",\
         \"upstream_response_time\":\"$upstream_response_time\",\"upstream_status\":\"$upstream_status\"}}';\n"
    );
    let _ = writeln!(
        f,
        "server {{\n    listen {};\n    access_log {} serin_{id};\n\n    location / {{\n        \
         proxy_pass http://serin_{id}_$serin_{id}_version;\n        \
         proxy_http_version 1.1;\n        \
         proxy_set_header Connection \"\";\n        \
         proxy_set_header Host $host;\n        \
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n        \
         proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n}}",
        config.listen,
        quote(&config.access_log.display().to_string())
    );
    f
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
    /// A command failed; the old file is back in place.
    #[error("`{command}` failed ({status}); the previous configuration is back in place: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status or "timed out".
        status: String,
        /// What it printed.
        output: String,
    },
}

/// Runs a command with a timeout; Ok if it exits 0.
async fn run(argv: &[String]) -> Result<(), NginxError> {
    let command = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(NginxError::Command {
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
            command,
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
                .trim()
                .to_string(),
        }),
        Ok(Err(e)) => Err(NginxError::Command {
            command,
            status: "could not start".into(),
            output: e.to_string(),
        }),
        Err(_) => Err(NginxError::Command {
            command,
            status: format!("no answer within {} s", COMMAND_TIMEOUT.as_secs()),
            output: String::new(),
        }),
    }
}

/// Writes `text` to `path` atomically (temp file in the same directory, then rename).
fn write_atomically(path: &Path, text: &str) -> Result<(), NginxError> {
    let file = |source| NginxError::File {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("serin-tmp");
    std::fs::write(&tmp, text).map_err(file)?;
    std::fs::rename(&tmp, path).map_err(file)
}

/// Puts `text` in place as the include file: test, then reload; on failure
/// the previous text goes back. Returns the command's error if any.
pub async fn install(config: &NginxConfig, text: &str) -> Result<(), NginxError> {
    let previous = std::fs::read_to_string(&config.include).ok();
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
    if let Err(e) = run(&config.test).await {
        restore()?;
        return Err(e);
    }
    if let Err(e) = run(&config.reload).await {
        restore()?;
        // nginx may have half-applied nothing (a failed reload keeps the old
        // workers), but make sure it serves what is on disk again.
        let _ = run(&config.reload).await;
        return Err(e);
    }
    Ok(())
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
    fn check_ready(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let (stable, canary) = {
                let c = self.config.lock().await;
                (c.stable.clone(), c.canary.clone())
            };
            super::builtin::check_upstreams(&[
                (Version::Stable, &stable),
                (Version::Canary, &canary),
            ])
            .await
        })
    }

    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let config = self.config.lock().await;
            install(&config, &render(&config, weight))
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn promote(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut config = self.config.lock().await;
            let mut promoted = config.clone();
            promoted.stable = config.canary.clone();
            install(&promoted, &render(&promoted, Weight::ZERO))
                .await
                .map_err(|e| e.to_string())?;
            *config = promoted;
            Ok(())
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
    }

    #[test]
    fn quoting_escapes_what_nginx_would_interpret() {
        assert_eq!(quote(r#"a"b$c\d"#), r#""a\"b\$c\\d""#);
        assert_eq!(ident("check-out"), "check_out");
    }
}
