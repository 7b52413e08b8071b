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

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "serin.lock";

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
