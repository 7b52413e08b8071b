//! A bound on each wait for a body's next frame, shared by the client's
//! request body ([`crate::pool::ForwardBody`]) and the upstream's response
//! body ([`crate::body::ResponseBody`]).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A bound on each wait for a body's next frame: armed when the source has
/// nothing to give, disarmed when it gives a frame. The timer is made on the
/// first wait and moved (not remade) on later ones; a body whose frames are
/// always ready never makes one.
///
/// With a `notice` shorter than the limit, the same timer first fires at the
/// notice: from then on (until the next frame) the source is
/// [`silent`](Stall::silent). Only a timer that fired says so, so a wait the
/// proxy did not see (its own threads were stalled) never makes a source
/// silent.
#[derive(Debug)]
pub(crate) struct Stall {
    limit: Duration,
    notice: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the present wait began; `None` while not waiting.
    since: Option<Instant>,
    /// The present wait has lasted the notice.
    noticed: bool,
}

impl Stall {
    pub(crate) fn new(limit: Duration) -> Stall {
        Stall {
            limit,
            notice: None,
            sleep: None,
            since: None,
            noticed: false,
        }
    }

    /// A stall that also notices a wait of `notice` (see [`Stall::silent`]).
    pub(crate) fn noticing(limit: Duration, notice: Duration) -> Stall {
        Stall {
            notice: (notice < limit).then_some(notice),
            ..Stall::new(limit)
        }
    }

    /// The longest wait allowed.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// The source had nothing: whether it has now waited longer than the limit.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let since = match self.since {
            Some(since) => since,
            None => {
                let now = Instant::now();
                self.since = Some(now);
                self.noticed = false;
                let deadline = now + self.notice.unwrap_or(self.limit);
                match &mut self.sleep {
                    // A later deadline: tokio moves it without touching its wheel.
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                now
            }
        };
        let Some(sleep) = self.sleep.as_mut() else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.notice.is_none() || self.noticed {
            return true;
        }
        // The notice fired: the source is silent; now wait for the limit.
        self.noticed = true;
        sleep.as_mut().reset(since + self.limit);
        sleep.as_mut().poll(cx).is_ready()
    }

    /// The source gave a frame.
    pub(crate) fn progressed(&mut self) {
        self.since = None;
        self.noticed = false;
    }

    /// The source has given nothing for at least the notice, and the timer
    /// saw it: it is waiting still.
    pub(crate) fn silent(&self) -> bool {
        self.since.is_some() && self.noticed
    }
}
