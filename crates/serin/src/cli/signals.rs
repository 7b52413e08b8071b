//! Ctrl-C and SIGTERM (and for `serin run` and `serin serve` a closed
//! terminal, SIGHUP), as one future.

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
pub async fn terminated() {
    which().await;
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, with the signal's name.
pub async fn which() -> &'static str {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}

/// As [`which`], and SIGHUP too (the terminal closed, an ssh session
/// dropped): `serin run` then rolls back and ends as on Ctrl-C, and `serin
/// serve` stops as on SIGTERM, instead of dying with a rollout in progress. Under `nohup` (SIGHUP ignored when
/// serin started) it is left ignored.
pub async fn which_or_hangup() -> &'static str {
    #[cfg(unix)]
    {
        if !hangup_ignored()
            && let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            return tokio::select! {
                s = which() => s,
                _ = hup.recv() => "SIGHUP",
            };
        }
    }
    which().await
}

/// Whether this process ignores SIGHUP (started under `nohup`): signal 1's
/// bit in `SigIgn` of `/proc/self/status`.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & 1 != 0)
}
