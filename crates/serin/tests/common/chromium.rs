//! Headless Chromium for tests: Debian's `chromium` with a throw-away
//! profile, nothing fetched but the page it is given, bounded in time.
//! scripts/install-test-deps.sh installs it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::serin::{Proc, text};

fn chromium_bin() -> &'static str {
    if Path::new("/usr/bin/chromium").exists() {
        "/usr/bin/chromium"
    } else {
        "chromium"
    }
}

/// Runs headless Chromium on `url` with the profile `profile` and the
/// `extra` flags (a screenshot, a DOM dump, a virtual time budget…), at
/// most 90 s; panics with its output if it fails.
pub fn chromium(profile: &Path, extra: &[&str], url: &str) -> Output {
    let mut cmd = Command::new(chromium_bin());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url);
    let o = Proc::spawn(cmd, true).wait_output(Duration::from_secs(90));
    assert!(
        o.status.success(),
        "chromium (is it installed? scripts/install-test-deps.sh): {}",
        text(&o)
    );
    o
}
