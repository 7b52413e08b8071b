//! One owner per state directory.
//!
//! `serin serve`, `serin run` and `serin demo` write the state database and
//! drive the rollouts in it; two of them on one directory would both write,
//! and the loser's driver would die on the conflict while its data plane
//! kept the weight it had. The owner holds an exclusive OS lock (`flock`) on
//! `DIR/serin.lock` for as long as it runs; the kernel releases it when the
//! process ends, however it ends (`kill -9` included), so nothing is left
//! stale. The file holds the owner's pid, for the message a second process
//! gets. Readers that only look at the database do not take the lock.
//!
//! # Where the owner's API listens: `DIR/api.json`
//!
//! The owner (`serin serve`, `serin run`) writes `DIR/api.json` once its API
//! answers, and removes it when it stops, so that the client commands find
//! it through the state dir alone (as `kubectl` finds a cluster through its
//! kubeconfig):
//!
//! ```json
//! {"url": "http://127.0.0.1:40123", "pid": 4242, "command": "run", "token": "9f…"}
//! ```
//!
//! - `url`: where a client on this machine reaches the API (a wildcard
//!   listen address is written as loopback).
//! - `pid`: the owner. A file left by an owner killed with `kill -9` is
//!   stale: the reader checks that the pid still runs ([`find`]); it never
//!   takes the lock, which would race a `serin serve` that is starting.
//! - `started`: when the owner started (field 22 of `/proc/PID/stat`, clock
//!   ticks since boot), written by [`publish`]. A pid is reused by the
//!   system once its process is gone; a file whose pid runs but started at
//!   another time is stale all the same.
//! - `command`: `serve` or `run`.
//! - `token`: only `serin run`'s, generated at its start, so that no other
//!   local user (the file is mode 0600) and no web page can steer it.
//!   `serin serve`'s own `--token`/`SERIN_TOKEN` is never written to disk.
//!
//! The file is written to a temporary name with mode 0600 and renamed, so a
//! reader sees the whole file or none.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "serin.lock";

/// The name of the file that says where the owner's API listens.
pub const API_FILE: &str = "api.json";

/// What `DIR/api.json` holds (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFile {
    /// Where a local client reaches the API: `http://127.0.0.1:PORT`.
    pub url: String,
    /// The owner's process id.
    pub pid: u32,
    /// `serve` or `run`.
    pub command: String,
    /// The bearer token mutations need (`serin run`'s own, generated at its
    /// start); never `serin serve`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `DIR/api.json` while its owner runs; removed on drop.
#[derive(Debug)]
pub struct Published {
    path: PathBuf,
}

impl Drop for Published {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `api.json` as written: the file, and when its owner started (see the
/// module docs; absent in files of older serins, and where `/proc` is not).
#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    #[serde(flatten)]
    api: ApiFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<u64>,
}

/// When process `pid` started: field 22 of `/proc/PID/stat` (after the
/// command name in parentheses, which may hold spaces and parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Writes `DIR/api.json` (mode 0600, atomically: a temporary file renamed),
/// with its owner's start time; it lives as long as the returned guard.
pub fn publish(dir: &Path, api: &ApiFile) -> std::io::Result<Published> {
    let api = &OnDisk {
        api: api.clone(),
        started: start_time(api.pid),
    };
    let path = dir.join(API_FILE);
    let tmp = dir.join(format!(".{API_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A file left by an older owner keeps its mode on open: set it.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(serde_json::to_string(api)?.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Published { path })
}

/// What a client finds in a state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A running owner's API.
    Live(ApiFile),
    /// A file whose owner no longer runs (killed with `kill -9`).
    Stale(ApiFile),
    /// No file (no owner, or one still starting).
    Absent,
    /// A file that does not read: why.
    Unreadable(String),
}

/// Reads `DIR/api.json` and checks that its owner still runs.
///
/// A client sends its token to the address the file names, so the file is
/// trusted only as serin writes it: a plain file (not a symbolic link), owned
/// by this user and readable by no one else (mode 0600), naming a loopback
/// `http://` address. Anything else is [`Found::Unreadable`], saying why.
pub fn find(dir: &Path) -> Found {
    let path = dir.join(API_FILE);
    let untrusted = |why: String| {
        Found::Unreadable(format!(
            "{}: {why}; not trusted (serin writes it as you, mode 0600, naming a loopback address): remove it",
            path.display()
        ))
    };
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Absent,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return untrusted("a symbolic link".into());
        }
        Err(e) => return Found::Unreadable(format!("{}: {e}", path.display())),
    };
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Found::Unreadable(format!("{}: {e}", path.display())),
        };
        if !meta.is_file() {
            return untrusted("not a plain file".into());
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return untrusted(format!(
                "owned by uid {}, not by you (uid {me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o077 != 0 {
            return untrusted(format!(
                "mode {:o}: others may read or write it",
                meta.mode() & 0o777
            ));
        }
    }
    let mut text = String::new();
    if let Err(e) = file.read_to_string(&mut text) {
        return Found::Unreadable(format!("{}: {e}", path.display()));
    }
    let OnDisk { api, started } = match serde_json::from_str(&text) {
        Ok(a) => a,
        Err(e) => return Found::Unreadable(format!("{}: {e}", path.display())),
    };
    if !loopback_url(&api.url) {
        return untrusted(format!(
            "it names {}, not a loopback http:// address",
            api.url
        ));
    }
    // The pid alone may be another process's now (reused after a kill -9).
    let same_process = started.is_none_or(|t| start_time(api.pid) == Some(t));
    if runs(api.pid) && same_process {
        Found::Live(api)
    } else {
        Found::Stale(api)
    }
}

/// `http://` to 127.0.0.0/8, `[::1]` or `localhost`, with a port.
fn loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    uri.scheme_str() == Some("http")
        && uri.port_u16().is_some()
        && (host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

/// Whether process `pid` exists (signal 0: nothing is sent). A process of
/// another user exists too (`EPERM`).
fn runs(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Why the state directory could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "state dir {} is in use by {}; stop that serin (serve, run or demo) first, or use another --state-dir",
        dir.display(),
        pid.map_or_else(|| "another process".to_string(), |p| format!("pid {p}"))
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The owner's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("state dir {}: lock file {}: {source}", dir.display(), file.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        file: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes `dir` (which must exist) for this process, or says who has it.
pub fn lock(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io {
        dir: dir.to_path_buf(),
        file: path.clone(),
        source,
    };
    // Not truncated on open: the owner's pid stays readable for a loser.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(LockError::InUse {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_file_not_written_as_serin_writes_it_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt as _;
        let api = |url: &str| ApiFile {
            url: url.into(),
            pid: std::process::id(),
            command: "serve".into(),
            token: None,
        };
        let untrusted = |dir: &Path, why: &str| match find(dir) {
            Found::Unreadable(said) => assert!(said.contains(why), "{said}"),
            other => panic!("trusted ({why}): {other:?}"),
        };
        // A URL off loopback, where a client would send its token.
        let dir = tempfile::tempdir().expect("dir");
        let _p = publish(dir.path(), &api("http://10.1.2.3:9900")).expect("publish");
        untrusted(dir.path(), "not a loopback http:// address");
        // Readable by others.
        let dir = tempfile::tempdir().expect("dir");
        let _p = publish(dir.path(), &api("http://127.0.0.1:9900")).expect("publish");
        let file = dir.path().join(API_FILE);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        untrusted(dir.path(), "mode 644");
        // A symbolic link to a file that would pass.
        let elsewhere = tempfile::tempdir().expect("dir");
        let _q = publish(elsewhere.path(), &api("http://127.0.0.1:9900")).expect("publish");
        let dir = tempfile::tempdir().expect("dir");
        std::os::unix::fs::symlink(elsewhere.path().join(API_FILE), dir.path().join(API_FILE))
            .expect("symlink");
        untrusted(dir.path(), "a symbolic link");
        // As serin writes it: trusted.
        assert!(matches!(find(elsewhere.path()), Found::Live(_)));
        for (url, ok) in [
            ("http://localhost:1", true),
            ("http://[::1]:1", true),
            ("http://127.0.0.2:1", true),
            ("https://127.0.0.1:1", false),
            ("http://127.0.0.1", false),
            ("http://example.com:1", false),
        ] {
            assert_eq!(loopback_url(url), ok, "{url}");
        }
    }

    #[test]
    fn the_api_file_is_private_read_while_its_owner_runs_and_removed_on_drop() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(find(dir.path()), Found::Absent);
        let api = ApiFile {
            url: "http://127.0.0.1:1234".into(),
            pid: std::process::id(),
            command: "run".into(),
            token: Some("t0k".into()),
        };
        let published = publish(dir.path(), &api).expect("publish");
        let mode = std::fs::metadata(dir.path().join(API_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(find(dir.path()), Found::Live(api.clone()));
        // Only the file itself is left: no temporary one.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [API_FILE]);
        drop(published);
        assert_eq!(find(dir.path()), Found::Absent);
    }

    #[test]
    fn an_api_file_whose_owner_is_gone_is_stale() {
        let dir = tempfile::tempdir().expect("dir");
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        child.wait().expect("wait");
        let api = ApiFile {
            url: "http://127.0.0.1:1234".into(),
            pid,
            command: "serve".into(),
            token: None,
        };
        let published = publish(dir.path(), &api).expect("publish");
        // Left behind as after `kill -9`.
        std::mem::forget(published);
        assert_eq!(find(dir.path()), Found::Stale(api));
        std::fs::write(dir.path().join(API_FILE), "{").expect("write");
        assert!(matches!(find(dir.path()), Found::Unreadable(_)));
    }

    #[test]
    fn an_api_file_whose_pid_was_reused_by_another_process_is_stale() {
        let dir = tempfile::tempdir().expect("dir");
        let api = ApiFile {
            url: "http://127.0.0.1:1234".into(),
            pid: std::process::id(),
            command: "run".into(),
            token: Some("t0k".into()),
        };
        let published = publish(dir.path(), &api).expect("publish");
        assert_eq!(find(dir.path()), Found::Live(api.clone()));
        let file = dir.path().join(API_FILE);
        let mut on_disk: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
        let started = on_disk["started"]
            .as_u64()
            .expect("the start time is written");
        // The same pid, now a process that started at another time: a
        // serin killed with kill -9 whose pid the system gave to another.
        on_disk["started"] = (started + 1).into();
        std::fs::write(&file, on_disk.to_string()).expect("write");
        assert_eq!(find(dir.path()), Found::Stale(api.clone()));
        // A file of an older serin, without it: the pid alone decides.
        on_disk.as_object_mut().expect("object").remove("started");
        std::fs::write(&file, on_disk.to_string()).expect("write");
        assert_eq!(find(dir.path()), Found::Live(api));
        drop(published);
    }

    #[test]
    fn a_second_lock_is_refused_with_the_owners_pid_and_free_after_release() {
        let dir = tempfile::tempdir().expect("dir");
        let held = lock(dir.path()).expect("first");
        match lock(dir.path()) {
            Err(LockError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        let msg = lock(dir.path()).expect_err("held").to_string();
        assert!(
            msg.contains(&format!("is in use by pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        lock(dir.path()).expect("free again");
    }
}
