//! The response body on its way back to the client, which is where each
//! request is recorded, exactly once, and where its upstream connection goes
//! back to the pool.
//!
//! It streams frame by frame, never collected, and bounds how long it waits
//! for the upstream's next frame ([`Stall`]): an upstream whose body stalls for
//! the upstream body timeout has its response cut, and counts an error against
//! its version. (The client's request body, on its way to the upstream, is
//! [`crate::pool::ForwardBody`].)
//!
//! An [`Exchange`] dropped unrecorded (hyper drops the response future or
//! body when the client goes away) counts as a timeout of its version when
//! the client left while the version kept it waiting:
//! - before the response head (the version had the turn, whatever how long),
//!   unless its head comes within [`ANSWER_GRACE`] after the client left
//!   ([`HeadWait`]): it had answered (recorded so, with the head's status),
//!   and the client left on its own (it closed its write side, which hyper,
//!   as nginx, takes for gone) or while the proxy itself was slow to pass the
//!   answer on;
//! - mid-body, when the proxy had been waiting for the upstream's next body
//!   bytes for at least [`SILENT_UPSTREAM`] (the version stalled its body).
//!
//! Its latency is then the time until the client left. Otherwise (the client
//! was still sending its body, or left while the upstream's body was
//! flowing) it is cancelled, neither version's fault.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::pool::{Lent, Pool, Upload};
use crate::recorder::{Shard, StatusClass};
use crate::stall::Stall;
use crate::weight::Version;

/// How long an upstream must have sent nothing of its response body, the
/// proxy waiting for it, for a client that leaves then to count as a timeout
/// of the version rather than a cancel. Far longer than the gaps between the
/// parts of a body that flows (milliseconds), far shorter than the timeouts
/// clients give up after (seconds): a body stalled for a second when its
/// client gave up is the version's failure; a client that leaves a flowing
/// body (it had what it wanted, or was slow itself) is not. Only a wait the
/// proxy saw (its timer fired) counts, so a client that leaves while the
/// proxy itself was stalled does not count against the version.
pub const SILENT_UPSTREAM: Duration = Duration::from_secs(1);

/// When a client leaves before the response head, how long the version's
/// exchange goes on to learn whether it had in fact answered: a head that
/// comes within it was there (or all but) when the client left, and the
/// client did not leave because of the version (it closed its write side at
/// once, or the proxy itself was held up passing the answer on). Such a
/// request is recorded as answered, with the head's status and the time to
/// it, so nothing of it is lost: a slow version's latency still counts. Short,
/// so that a version slower than its clients' patience is still their
/// timeout.
pub const ANSWER_GRACE: Duration = Duration::from_millis(200);

/// What a request's [`Exchange`] needs of the runtime serving it: its pool, to
/// give the upstream connection back, and its recorder shard. One per serving
/// runtime, so that with one runtime per core a request never waits on a
/// connection driven by another core, nor writes to counters another core is
/// writing.
pub(crate) struct Lane {
    pub(crate) pool: Pool,
    pub(crate) recorder: Arc<Shard>,
}

/// How far one request has come, for what dropping its [`Exchange`] means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for the version's response head: a drop is a timeout of the
    /// version (unless the client was still sending its body).
    Head,
    /// The head came, or the client failed: a drop is a cancel.
    Cancel,
    /// Recorded.
    Done,
}

/// One request of one version, from the moment it was routed until it is
/// recorded. Dropped unrecorded (hyper drops the response future or body when
/// the client goes away), it counts as a timeout of the version while the
/// client waited for the response head, and as cancelled after: see the
/// module docs.
pub(crate) struct Exchange {
    lane: Arc<Lane>,
    /// The recorder's run in force when it was routed: it counts in that
    /// run's figures only.
    run: u64,
    version: Version,
    /// A route override sent it (whatever the weight).
    by_route: bool,
    started: Instant,
    stage: Stage,
    upload: Option<Arc<Upload>>,
}

impl Exchange {
    pub(crate) fn begin(
        lane: Arc<Lane>,
        version: Version,
        by_route: bool,
        started: Instant,
        upload: Option<Arc<Upload>>,
    ) -> Exchange {
        lane.recorder.started(version);
        Exchange {
            run: lane.recorder.run(),
            lane,
            version,
            by_route,
            started,
            stage: Stage::Head,
            upload,
        }
    }

    /// The version's response head came.
    pub(crate) fn headed(&mut self) {
        self.stage = Stage::Cancel;
    }

    /// Whether the client's request body failed or is what the request waits
    /// for.
    pub(crate) fn on_client(&self) -> bool {
        self.upload.as_deref().is_some_and(Upload::on_client)
    }

    /// The response was fully sent with this status class.
    pub(crate) fn answered(mut self, class: StatusClass) {
        self.lane.recorder.record(
            self.run,
            self.version,
            class,
            self.started.elapsed(),
            self.by_route,
        );
        self.stage = Stage::Done;
    }

    /// The client gave up after `waited` while the version kept it waiting
    /// (no response head, or its body stalled): a timeout of the version.
    fn gave_up(mut self, waited: Duration) {
        self.lane
            .recorder
            .timed_out(self.run, self.version, waited, self.by_route);
        self.stage = Stage::Done;
    }

    /// The client failed: counted against neither version.
    pub(crate) fn cancel(mut self) {
        self.stage = Stage::Cancel;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let recorder = &self.lane.recorder;
        match self.stage {
            Stage::Head if !self.on_client() => {
                recorder.timed_out(
                    self.run,
                    self.version,
                    self.started.elapsed(),
                    self.by_route,
                );
            }
            Stage::Head | Stage::Cancel => recorder.cancelled(self.run, self.version),
            Stage::Done => {}
        }
        recorder.ended(self.version);
    }
}

/// A request's [`Exchange`] while the proxy waits for the version's response
/// head, with the upstream exchange it waits on.
///
/// Dropped before [`HeadWait::settle`] (the client went away), the exchange
/// is not judged at once: the upstream exchange goes on, on a task of its
/// own, for [`ANSWER_GRACE`]. A head that comes within it makes the request
/// answered, with the head's status class and the time to the head; none
/// makes it a timeout of the version, its latency the time until the client
/// left. A client still sending its body is cancelled at once, as before.
pub(crate) struct HeadWait<F, E>
where
    F: Future<Output = Result<(Response<Incoming>, Lent), E>> + Send + 'static,
{
    sent: Option<Pin<Box<F>>>,
    exchange: Option<Exchange>,
}

impl<F, E> HeadWait<F, E>
where
    F: Future<Output = Result<(Response<Incoming>, Lent), E>> + Send + 'static,
{
    pub(crate) fn new(sent: F, exchange: Exchange) -> HeadWait<F, E> {
        HeadWait {
            sent: Some(Box::pin(sent)),
            exchange: Some(exchange),
        }
    }

    /// The upstream exchange, to be awaited; `None` once settled.
    pub(crate) fn sent(&mut self) -> Option<&mut Pin<Box<F>>> {
        self.sent.as_mut()
    }

    /// The wait is over (an answer, a failure or the upstream timeout): the
    /// exchange, for the caller to record.
    pub(crate) fn settle(mut self) -> Option<Exchange> {
        self.sent = None;
        self.exchange.take()
    }
}

impl<F, E> Drop for HeadWait<F, E>
where
    F: Future<Output = Result<(Response<Incoming>, Lent), E>> + Send + 'static,
{
    fn drop(&mut self) {
        let (Some(sent), Some(exchange)) = (self.sent.take(), self.exchange.take()) else {
            return;
        };
        if exchange.on_client() {
            return exchange.cancel();
        }
        let left = exchange.started.elapsed();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return exchange.gave_up(left);
        };
        runtime.spawn(async move {
            match tokio::time::timeout(ANSWER_GRACE, sent).await {
                // It had answered: recorded so; the response is dropped
                // and its upstream connection closes.
                Ok(Ok((resp, _lent))) => exchange.answered(StatusClass::of(resp.status())),
                // It failed or kept the client waiting: the version's.
                Ok(Err(_)) | Err(_) => exchange.gave_up(left),
            }
        });
    }
}

/// The response body sent to the client: the upstream's, streamed, or a short
/// one the proxy wrote itself (400, 408, 502, 504).
///
/// Its errors (the upstream failed or stalled mid-body) cut the response.
pub struct ResponseBody {
    source: Source,
    /// Present until the request is recorded; `None` for responses that belong
    /// to no version (requests refused before routing).
    exchange: Option<Exchange>,
    class: StatusClass,
}

enum Source {
    /// The upstream's body, its connection until the body has been read to
    /// the end (then it goes back to the pool for the next request), and the
    /// bound on each wait for its next frame.
    Upstream(Incoming, Option<Lent>, Stall),
    Local(Option<Bytes>),
}

/// The upstream sent nothing of its response body for the upstream body
/// timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body: nothing received for {0:?}")]
struct UpstreamStalled(Duration);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// The upstream's body; `idle` bounds each wait for its next frame (and
    /// [`SILENT_UPSTREAM`] marks a wait whose client leaving is the version's
    /// fault).
    pub(crate) fn upstream(
        body: Incoming,
        lent: Lent,
        mut exchange: Exchange,
        class: StatusClass,
        idle: Duration,
    ) -> ResponseBody {
        exchange.headed();
        ResponseBody {
            source: Source::Upstream(body, Some(lent), Stall::noticing(idle, SILENT_UPSTREAM)),
            exchange: Some(exchange),
            class,
        }
    }

    pub(crate) fn local(
        text: &'static str,
        exchange: Option<Exchange>,
        class: StatusClass,
    ) -> ResponseBody {
        ResponseBody {
            source: Source::Local(Some(Bytes::from_static(text.as_bytes()))),
            exchange,
            class,
        }
    }

    /// Records the request. After a complete body (`reuse`) the upstream
    /// connection is given back; after a failed one it is closed.
    fn finish(&mut self, class: StatusClass, reuse: bool) {
        let lent = match &mut self.source {
            Source::Upstream(_, lent, _) => lent.take(),
            Source::Local(_) => None,
        };
        if let Some(x) = self.exchange.take() {
            if let Some(lent) = lent
                && reuse
            {
                x.lane.pool.give_back(lent);
            }
            x.answered(class);
        }
    }

    /// The upstream's body failed or stalled: the client gets a cut response,
    /// and the version an error, unless it failed because the client's own
    /// body did (hyper ends the upstream exchange then).
    fn failed(&mut self) {
        match self.exchange.take() {
            Some(x) if x.on_client() => x.cancel(),
            x => {
                self.exchange = x;
                self.finish(StatusClass::ServerError, false);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Every field is Unpin (Incoming, Bytes, a boxed timer, plain data).
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Upstream(b, _, stall) => match Pin::new(b).poll_frame(cx) {
                Poll::Pending if stall.expired(cx) => {
                    Poll::Ready(Some(Err(UpstreamStalled(stall.limit()).into())))
                }
                Poll::Pending => Poll::Pending,
                ready => {
                    stall.progressed();
                    ready.map_err(BoxError::from)
                }
            },
            Source::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(None) => this.finish(this.class, true),
            Poll::Ready(Some(Err(_))) => this.failed(),
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.finish(this.class, true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(b, ..) => b.is_end_stream(),
            Source::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(b, ..) => b.size_hint(),
            Source::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is complete (an empty one, or one whose
        // Content-Length it has written) without polling it to the end. A
        // 502/504 the proxy wrote counts against its version whether or not
        // the client stayed to read it.
        if self.exchange.is_some()
            && (self.is_end_stream() || matches!(self.source, Source::Local(_)))
        {
            self.finish(self.class, true);
        } else if let Source::Upstream(_, _, stall) = &self.source
            && stall.silent()
            && let Some(x) = self.exchange.take()
        {
            // The client left while the upstream's body was stalled.
            let waited = x.started.elapsed();
            x.gave_up(waited);
        }
    }
}
