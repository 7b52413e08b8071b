//! A state dir no serin serves: one this user can
//! only read is read by `status` and `history`, read-only and unchanged.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::nginx::local;
use common::rollout::Rollout;
use common::serin::text;
use serin::rollout::State;
use serin::store::{RolloutRecord, Store};
use serin::time::Millis;

/// A state dir holding one registered rollout `name`, its database closed
/// (no `-wal`, no `-shm` beside it), readable by every user.
fn state_dir(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = Rollout::new(name, local(1), local(2), local(3)).yaml();
    let store = Store::open(dir.path()).unwrap();
    store
        .register(
            &RolloutRecord {
                name: name.into(),
                spec,
                stable_version: "v1".into(),
                canary_version: None,
                former_stable_version: None,
                stable_upstream: None,
                canary_upstream: None,
                state: State::new(Millis(5)),
                last_verdict: None,
                generation: 0,
                run: 0,
            },
            Millis(5),
        )
        .unwrap();
    drop(store);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.path().join("serin.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(!dir.path().join("serin.db-shm").exists());
    dir
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A copy of the binary every user may run: the checkout it was built in
/// may sit where `nobody` cannot reach (under /root).
fn binary_for_everyone() -> &'static Path {
    static COPY: std::sync::OnceLock<(tempfile::TempDir, std::path::PathBuf)> =
        std::sync::OnceLock::new();
    &COPY
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let bin = dir.path().join("serin");
            std::fs::copy(common::serin::BIN, &bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            (dir, bin)
        })
        .1
}

/// `serin ARGS` as a user who cannot write `dir` (root: as `nobody`; any
/// other user: with the dir and database made read-only).
fn as_reader(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        c.arg(binary_for_everyone());
        c
    } else {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join("serin.db"), std::fs::Permissions::from_mode(0o444))
            .unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new(common::serin::BIN)
    };
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1");
    cmd.env_remove("SERIN_API").env_remove("SERIN_TOKEN");
    cmd.args(args).arg("--state-dir").arg(dir);
    cmd.output().unwrap()
}

#[test]
fn status_and_history_read_a_state_dir_this_user_cannot_write() {
    let dir = state_dir("ro1");
    let before = std::fs::read(dir.path().join("serin.db")).unwrap();
    let status = as_reader(dir.path(), &["status", "ro1", "-o", "json"]);
    let out = text(&status);
    assert_eq!(status.status.code(), Some(0), "{out}");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["name"], "ro1", "{out}");
    assert!(out.contains("read read-only"), "said on stderr: {out}");
    let history = as_reader(dir.path(), &["history", "ro1"]);
    let out = text(&history);
    assert_eq!(history.status.code(), Some(0), "{out}");
    assert!(out.contains("ro1: 0 runs"), "{out}");
    assert!(out.contains("read read-only"), "{out}");
    // Nothing written beside it or in it.
    assert!(!dir.path().join("serin.db-shm").exists(), "no -shm created");
    assert!(!dir.path().join("serin.db-wal").exists(), "no -wal created");
    assert_eq!(std::fs::read(dir.path().join("serin.db")).unwrap(), before);
}

/// As root, a read-only bind mount in a mount namespace of its own (the
/// host's mounts are untouched); `unshare` and `mount` must work here.
#[test]
fn status_reads_a_state_dir_on_a_read_only_mount() {
    if !is_root() {
        // A user's read-only dir is the test above; a mount needs root.
        let dir = state_dir("ro2");
        let status = as_reader(dir.path(), &["status", "ro2"]);
        assert_eq!(status.status.code(), Some(0), "{}", text(&status));
        return;
    }
    let dir = state_dir("ro2");
    let mount = tempfile::tempdir().unwrap();
    let script = format!(
        "mount --bind '{src}' '{dst}' && mount -o remount,bind,ro '{dst}' && \
         touch '{dst}/probe' 2>/dev/null && echo WRITABLE; \
         RUST_LOG=warn NO_COLOR=1 '{bin}' status ro2 --state-dir '{dst}'",
        src = dir.path().display(),
        dst = mount.path().display(),
        bin = common::serin::BIN,
    );
    let output = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env_remove("SERIN_API")
        .output()
        .unwrap();
    let out = text(&output);
    assert!(!out.contains("WRITABLE"), "the mount is read-only: {out}");
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("ro2"), "{out}");
    assert!(out.contains("read read-only"), "{out}");
}

/// A `serin run` of another file on a state dir whose run is in progress
/// (its serin gone) says on stderr that it replaces that run, and what
/// changed; history no longer blames a killed `serin run`.
#[test]
fn serin_run_says_it_replaces_a_run_in_progress_and_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_stable, stable) = common::serin::demo_app("v1", &[]);
    let (_canary, canary) = common::serin::demo_app("v2", &[]);
    let port = common::nginx::free_port();
    let first = Rollout::new("rp", local(port), stable, canary).yaml();
    let store = Store::open(&state).unwrap();
    let record = RolloutRecord {
        name: "rp".into(),
        spec: first,
        stable_version: "v1".into(),
        canary_version: Some("v2".into()),
        former_stable_version: None,
        stable_upstream: Some(format!("http://{stable}")),
        canary_upstream: Some(format!("http://{canary}")),
        state: State::new(Millis(5)),
        last_verdict: None,
        generation: 0,
        run: 0,
    };
    let record = store.register(&record, Millis(5)).unwrap();
    let started = store.start_run(&record, &[], Millis(6)).unwrap();
    assert_eq!(started.run, 1);
    drop(store);
    let second = Rollout::new("rp", local(port), stable, canary)
        .versions("v1", "v3")
        .yaml();
    let file = common::serin::write(dir.path(), "second.yaml", &second);
    let run = common::serin::Proc::spawn(common::serin::serin_run(&file, dir.path()), true);
    common::serin::wait_for_port(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let mut run = run;
    run.kill();
    let output = run.wait_output(std::time::Duration::from_secs(10));
    let out = text(&output);
    assert!(
        out.contains("rp: replaces run 1 in progress"),
        "said on stderr: {out}"
    );
    assert!(out.contains("changed: canary version v2 -> v3"), "{out}");
    let history = common::serin::serin()
        .args(["history", "rp", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    let said = text(&history);
    assert!(!said.contains("killed or crashed"), "{said}");
    assert!(said.contains("a serin run, or a serin serve"), "{said}");
}
