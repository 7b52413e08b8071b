//! The two bodies on the request path: the client's request body on its way
//! to the upstream, and the response body on its way back, which is where each
//! request is recorded, exactly once.
//!
//! Both stream frame by frame; neither is ever collected. Each bounds how long
//! it waits for its next frame ([`Stall`]), and says whose fault the wait was:
//! - a client that sends nothing of its body for the client body timeout gets
//!   408 and counts against neither version (the proxy's head timeout does
//!   not run while the proxy waits on the client: see [`Upload`]);
//! - an upstream whose body stalls for the upstream body timeout has its
//!   response cut, and counts an error against its version.
//!
//! An [`Exchange`] dropped unrecorded (hyper drops the response future or
//! body when the client goes away) counts as a timeout of its version if the
//! client was waiting for the version's response head, and as cancelled
//! (neither version's fault) once the head has come or while the client was
//! still sending its body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::pool::Lent;
use crate::proxy::Worker;
use crate::recorder::StatusClass;
use crate::weight::Version;

/// The client's request body, forwarded as it arrives; or none, for a
/// body-less request sent again on a fresh connection ([`crate::pool`]).
///
/// Its error type marks a failure as the client's, so that when the upstream
/// exchange fails the proxy can tell a client that went away or stalled
/// mid-upload (no version's fault) from an upstream that failed.
#[derive(Debug)]
pub(crate) enum ForwardBody {
    /// A body that ended before it was forwarded (no body, or
    /// `Content-Length: 0`): nothing to time.
    Client(Incoming),
    /// A body still to come from the client, with its progress and a bound on
    /// each wait for the client's next bytes.
    Upload(Incoming, Arc<Upload>, Stall),
    Empty,
}

impl ForwardBody {
    /// The client's body; timed, with its progress in the returned [`Upload`],
    /// unless it has already ended.
    pub(crate) fn client(body: Incoming, idle: Duration) -> (ForwardBody, Option<Arc<Upload>>) {
        if body.is_end_stream() {
            return (ForwardBody::Client(body), None);
        }
        let upload = Arc::new(Upload::new());
        (
            ForwardBody::Upload(body, upload.clone(), Stall::new(idle)),
            Some(upload),
        )
    }
}

/// The client's side failed or stalled while its request body was being
/// forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientBodyError {
    /// The client's connection broke or its framing was bad.
    #[error("client request body: {0}")]
    Broken(#[source] hyper::Error),
    /// No byte of the body within the client body timeout.
    #[error("client request body: nothing received for {0:?}")]
    Stalled(Duration),
}

/// Whose turn it is in a request whose body is being forwarded: shared by
/// the [`ForwardBody`] (in the upstream connection's task) and the request's
/// handler and [`Exchange`].
#[derive(Debug)]
pub(crate) struct Upload {
    epoch: Instant,
    /// [`CLIENT`] while the proxy waits for the client's next bytes,
    /// [`FAILED`] once the client's body failed, else the microseconds after
    /// `epoch` at which the upstream side last got the turn (the client's
    /// last bytes, or the end of the body).
    turn: AtomicU64,
}

const CLIENT: u64 = u64::MAX;
const FAILED: u64 = u64::MAX - 1;

impl Upload {
    fn new() -> Upload {
        Upload {
            epoch: Instant::now(),
            turn: AtomicU64::new(0),
        }
    }

    fn set(&self, turn: u64) {
        self.turn.store(turn, Ordering::Relaxed);
    }

    fn upstream_turn(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(FAILED - 1);
        self.set(now.min(FAILED - 1));
    }

    /// Whether the client is what the request waits for (or failed).
    pub(crate) fn on_client(&self) -> bool {
        self.turn.load(Ordering::Relaxed) >= FAILED
    }

    /// Where the upstream's head timeout of `limit` ends, given whose turn
    /// it is: `limit` after the upstream last got the turn, or (while the
    /// client has it) `limit` from now, to be looked at again then.
    pub(crate) fn head_deadline(&self, limit: Duration) -> Instant {
        match self.turn.load(Ordering::Relaxed) {
            t if t >= FAILED => Instant::now() + limit,
            t => self.epoch + Duration::from_micros(t) + limit,
        }
    }
}

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

    /// The source had nothing: whether it has now waited longer than the limit.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
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
    fn progressed(&mut self) {
        self.armed = false;
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match &mut *self {
            ForwardBody::Client(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(ClientBodyError::Broken),
            ForwardBody::Upload(body, upload, stall) => match Pin::new(body).poll_frame(cx) {
                Poll::Pending => {
                    upload.set(CLIENT);
                    if stall.expired(cx) {
                        upload.set(FAILED);
                        return Poll::Ready(Some(Err(ClientBodyError::Stalled(stall.limit))));
                    }
                    Poll::Pending
                }
                Poll::Ready(Some(Err(err))) => {
                    upload.set(FAILED);
                    Poll::Ready(Some(Err(ClientBodyError::Broken(err))))
                }
                Poll::Ready(frame) => {
                    stall.progressed();
                    upload.upstream_turn();
                    Poll::Ready(frame.map(|f| f.map_err(ClientBodyError::Broken)))
                }
            },
            ForwardBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ForwardBody::Client(body) | ForwardBody::Upload(body, ..) => body.is_end_stream(),
            ForwardBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Client(body) | ForwardBody::Upload(body, ..) => body.size_hint(),
            ForwardBody::Empty => SizeHint::with_exact(0),
        }
    }
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
    worker: Arc<Worker>,
    version: Version,
    started: Instant,
    stage: Stage,
    upload: Option<Arc<Upload>>,
}

impl Exchange {
    pub(crate) fn begin(
        worker: Arc<Worker>,
        version: Version,
        started: Instant,
        upload: Option<Arc<Upload>>,
    ) -> Exchange {
        worker.recorder().started(version);
        Exchange {
            worker,
            version,
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
        self.worker
            .recorder()
            .record(self.version, class, self.started.elapsed());
        self.stage = Stage::Done;
    }

    /// The client failed: counted against neither version.
    pub(crate) fn cancel(mut self) {
        self.stage = Stage::Cancel;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        let recorder = self.worker.recorder();
        match self.stage {
            Stage::Head if !self.on_client() => {
                recorder.timed_out(self.version, self.started.elapsed());
            }
            Stage::Head | Stage::Cancel => recorder.cancelled(self.version),
            Stage::Done => {}
        }
        recorder.ended(self.version);
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
    /// The upstream's body; `idle` bounds each wait for its next frame.
    pub(crate) fn upstream(
        body: Incoming,
        lent: Lent,
        mut exchange: Exchange,
        class: StatusClass,
        idle: Duration,
    ) -> ResponseBody {
        exchange.headed();
        ResponseBody {
            source: Source::Upstream(body, Some(lent), Stall::new(idle)),
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
                x.worker.give_back(lent);
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
                    Poll::Ready(Some(Err(UpstreamStalled(stall.limit).into())))
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
        }
    }
}
