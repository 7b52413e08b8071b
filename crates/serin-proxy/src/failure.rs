//! When the upstream exchange fails: whose fault it is, what the client gets,
//! and a warning that does not flood the log.
//!
//! The version's faults (no connection, no response head in time, a broken
//! connection) are 502/504 and count against it; the client's (a body that
//! broke, or stalled past the client body timeout) are 400/408 and count
//! against neither version.

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::StatusCode;

use crate::pool::{ClientBodyError, SendError};
use crate::weight::Version;

/// What went wrong between the proxy and an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made (refused, unreachable, DNS): 502.
    Connect,
    /// No response headers within the upstream timeout: 504.
    Timeout,
    /// The connection broke or the upstream sent something that is not HTTP: 502.
    Upstream,
    /// The client's side failed while its body was being forwarded; not the
    /// version's fault and not counted against it.
    Client,
    /// The client sent nothing of its body for the client body timeout: 408,
    /// not counted against the version.
    ClientTimeout,
}

impl Failure {
    /// Sorts a failed exchange with an upstream.
    pub(crate) fn of(err: &SendError) -> Failure {
        let err = match err {
            SendError::Connect { .. } => return Failure::Connect,
            SendError::Exchange(err) => err,
        };
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(client) = e.downcast_ref::<ClientBodyError>() {
                return match client {
                    ClientBodyError::Broken(_) => Failure::Client,
                    ClientBodyError::Stalled(_) => Failure::ClientTimeout,
                };
            }
            source = e.source();
        }
        Failure::Upstream
    }

    /// Whether the client is at fault (the version is not).
    pub(crate) fn is_client(self) -> bool {
        matches!(self, Failure::Client | Failure::ClientTimeout)
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            Failure::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Failure::Client => StatusCode::BAD_REQUEST,
            Failure::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Failure::Connect | Failure::Upstream => StatusCode::BAD_GATEWAY,
        }
    }

    pub(crate) fn body(self) -> &'static str {
        match self {
            Failure::Connect => "upstream unreachable\n",
            Failure::Timeout => "upstream timed out\n",
            Failure::Upstream => "upstream failed\n",
            Failure::Client => "request body failed\n",
            Failure::ClientTimeout => "request body timed out\n",
        }
    }
}

/// At most one warning per second about upstream failures; the ones held back
/// are counted and reported with the next.
#[derive(Debug)]
pub(crate) struct WarnLimit {
    epoch: Instant,
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl WarnLimit {
    pub(crate) fn new() -> WarnLimit {
        WarnLimit {
            epoch: Instant::now(),
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    pub(crate) fn warn(
        &self,
        version: Version,
        upstream: &dyn std::fmt::Display,
        failure: Failure,
        cause: &dyn std::fmt::Display,
    ) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now < next
            || self
                .next_ms
                .compare_exchange(next, now + 1000, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let held_back = self.held_back.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %version,
            %upstream,
            status = failure.status().as_u16(),
            cause = %cause,
            similar_warnings_held_back = held_back,
            "upstream request failed"
        );
    }
}

/// Displays an error with its chain of causes, `a: b: c`.
pub(crate) struct Chain<'e>(pub(crate) &'e (dyn StdError + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}
