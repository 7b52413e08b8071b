//! Ctrl-C and SIGTERM, as one future.

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
