//! A bound on each wait for a body's next frame, shared by the client's
//! request body ([`crate::pool::ForwardBody`]) and the upstream's response
//! body ([`crate::body::ResponseBody`]).

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::Sleep;

/// A bound on each wait for a body's next frame: armed when the source has
/// nothing to give, disarmed when it gives a frame. The timer is made on the
/// first wait and moved (not remade) on later ones; a body whose frames are
/// always ready never makes one.
#[derive(Debug)]
pub(crate) struct Stall {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Stall {
    pub(crate) fn new(limit: Duration) -> Stall {
        Stall {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// The longest wait allowed.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// The source had nothing: whether it has now waited longer than the limit.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.limit;
            match &mut self.sleep {
                // A later deadline: tokio moves it without touching its wheel.
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.sleep
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    /// The source gave a frame.
    pub(crate) fn progressed(&mut self) {
        self.armed = false;
    }
}
