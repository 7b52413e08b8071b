//! How `serin serve` stops (SIGINT or SIGTERM), in this order:
//!
//! 1. **Stop accepting API requests.** The API's listener closes; requests
//!    in flight (a register or a cleanup under way) run to their end.
//! 2. **Stop the drivers.** Each rollout's driver is interrupted where it
//!    is: its state is already in the store (persist before apply), so the
//!    next `serin serve` resumes it there. Nothing changes a weight after
//!    this step.
//! 3. **Flush the webhooks.** Each driver's notifier gets up to 10 s to
//!    deliver the messages it still has.
//! 4. **Drain the proxies.** Each built-in proxy stops accepting and lets
//!    its open requests finish (up to its drain timeout, 30 s), at the
//!    weight in force. nginx and Kubernetes keep serving what they have.
//! 5. **Release the state lock.** The daemon, and with it the last clone of
//!    its store, is dropped: `DIR/serin.lock` is free for the next owner.
//!
//! Steps 2 to 4 run for all rollouts at once (each step joins them all),
//! so stopping many rollouts with slow drains takes about one drain, not
//! one per rollout.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::daemon::{Daemon, Taken};

/// Serves the API (`app` on `listener`) until `signal` resolves, then stops
/// the daemon in the order above; returns once the state lock is released
/// (as far as this process holds nothing else of the store).
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    daemon: Arc<Daemon>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // 1.
    axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(signal)
        .await?;
    // 2 to 4.
    stop_rollouts(daemon.take_all().await).await;
    // 5.
    if let Err(daemon) = Arc::try_unwrap(daemon) {
        tracing::warn!(
            users = Arc::strong_count(&daemon),
            "the daemon is still in use at shutdown; the state lock is released when the process exits"
        );
    }
    Ok(())
}

/// Steps 2 to 4 for every rollout at once: all drivers stopped and their
/// webhooks flushed (joined), then all proxies drained (joined).
pub async fn stop_rollouts(rollouts: Vec<Taken>) {
    let mut drivers = JoinSet::new();
    let mut planes = Vec::new();
    for rollout in rollouts {
        if let Some(driver) = rollout.driver {
            let name = rollout.name.clone();
            drivers.spawn(async move {
                if let Err(e) = driver.finish(async {}).await {
                    tracing::debug!(rollout = %name, "driver stopped: {e}");
                }
            });
        }
        planes.push(rollout.plane);
    }
    while drivers.join_next().await.is_some() {}
    let mut drains = JoinSet::new();
    for plane in planes {
        drains.spawn(plane.stop());
    }
    while drains.join_next().await.is_some() {}
}
