//! Keep-alive connections to the two upstreams, one pool per serving runtime,
//! and the client's request body sent on them ([`ForwardBody`]).
//!
//! A request takes the most recently used idle connection to its version's
//! upstream (or opens one), and its response body gives the connection back
//! once the upstream's response has been read to the end
//! ([`crate::body::ResponseBody`]). A connection the upstream closed while it
//! sat idle hands the request back unsent, and the next one is tried, so a
//! request is only failed for what happened to it.
//!
//! An upstream may close an idle connection (its keep-alive timeout, however
//! short) just as a request goes out on it: the request was written and
//! nothing came back. A request that may be sent twice (idempotent method, no
//! body: RFC 9110 9.2.2) is then sent again, once, on a fresh connection,
//! whatever the connection's idle age, as nginx does; only if that fails too
//! does it count against the version. A request that may not be sent twice
//! gets the 502: the proxy cannot tell this race from an upstream that
//! crashed on it.
//!
//! Why not hyper-util's pooled client: it keys its pool by hashing the
//! upstream's scheme and authority on every request, re-parses the request
//! URI, and spawns a task per request to return the connection; the proxy
//! knows the version it routes to and when the body is done, and nothing
//! else is needed. Each serving runtime has its own pool, so its connections
//! are driven on its own core and the locks below are never contended.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stall::Stall;
use crate::table::{RoutingTable, Upstream};
use crate::weight::Version;

/// Idle connections kept per version at most; more are closed when given back.
const MAX_IDLE: usize = 1024;

/// Why a request could not be exchanged with its upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No TCP connection could be made.
    #[error("connect to {upstream}: {source}")]
    Connect {
        upstream: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection failed before response headers arrived (or the request
    /// body failed: see [`crate::failure::Failure::of`]).
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

/// A connection lent to one request; see [`Pool::give_back`].
#[derive(Debug)]
pub(crate) struct Lent {
    sender: SendRequest<ForwardBody>,
    version: Version,
    generation: u64,
}

struct Idle {
    sender: SendRequest<ForwardBody>,
    since: Instant,
}

/// One version's idle connections.
#[derive(Default)]
struct Slot {
    /// The upstream the connections go to; when the table names another, the
    /// slot is emptied and `generation` moves on, so connections lent before
    /// the change are not given back.
    authority: Option<http::uri::Authority>,
    generation: u64,
    /// Oldest first: requests take from the back, expiry starts at the front.
    idle: VecDeque<Idle>,
}

impl Slot {
    /// Empties the slot if `upstream` is not the one its connections go to.
    fn aim(&mut self, upstream: &Upstream) {
        if self.authority.as_ref().map(|a| a.as_str()) != Some(upstream.authority().as_str()) {
            self.authority = Some(upstream.authority().clone());
            self.generation += 1;
            self.idle.clear();
        }
    }

    fn expire(&mut self, older_than: Duration) {
        while self
            .idle
            .front()
            .is_some_and(|i| i.since.elapsed() >= older_than || i.sender.is_closed())
        {
            self.idle.pop_front();
        }
    }
}

/// The keep-alive connections of one serving runtime.
pub(crate) struct Pool {
    slots: [Mutex<Slot>; 3],
    idle_timeout: Duration,
}

/// What to do next for one request: use an idle connection or open one.
enum Pick {
    /// An idle connection.
    Idle(SendRequest<ForwardBody>, u64),
    Connect(Upstream, u64),
}

impl Pool {
    pub(crate) fn new(idle_timeout: Duration) -> Pool {
        Pool {
            slots: Default::default(),
            idle_timeout,
        }
    }

    fn slot(&self, version: Version) -> MutexGuard<'_, Slot> {
        let slot = &self.slots[version.index()];
        // A panic while holding the lock leaves a consistent slot behind.
        slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next connection to try for `version` of `table`; a new one if
    /// `fresh`.
    fn pick(&self, version: Version, table: &RoutingTable, fresh: bool) -> Pick {
        let upstream = table.upstream(version);
        let mut slot = self.slot(version);
        slot.aim(upstream);
        let generation = slot.generation;
        if fresh {
            return Pick::Connect(upstream.clone(), generation);
        }
        // The newest is the warmest; if it is too old, so are all the others.
        if let Some(idle) = slot.idle.pop_back() {
            let idle_for = idle.since.elapsed();
            if idle_for < self.idle_timeout {
                return Pick::Idle(idle.sender, generation);
            }
            slot.idle.clear();
        }
        Pick::Connect(upstream.clone(), generation)
    }

    /// Sends `req` to `version`'s upstream in `table` (the table the request
    /// was routed by, also when it is sent again), on an idle connection or a
    /// new one. Returns the response (its body still to be read) and the
    /// connection, to be given back when the body is done.
    pub(crate) async fn send(
        &self,
        version: Version,
        table: &RoutingTable,
        mut req: Request<ForwardBody>,
    ) -> Result<(Response<Incoming>, Lent), SendError> {
        let mut fresh = false;
        loop {
            match self.pick(version, table, fresh) {
                Pick::Idle(mut sender, generation) => {
                    // Waits only while the connection finishes reading its
                    // previous response; an error means it has closed.
                    if sender.ready().await.is_err() {
                        continue;
                    }
                    let again = replayable(&req);
                    match sender.try_send_request(req).await {
                        Ok(resp) => return Ok((resp, lend(sender, version, generation))),
                        Err(mut err) => match (err.take_message(), again) {
                            // Never written: the connection closed under it.
                            (Some(unsent), _) => req = unsent,
                            // Written, and the connection closed or broke
                            // before any answer: the upstream hung up as it
                            // went out.
                            (None, Some(copy)) if hung_up(err.error()) => {
                                tracing::debug!(
                                    "pooled upstream connection closed under a request; sending it again on a new one"
                                );
                                req = copy;
                                fresh = true;
                            }
                            (None, _) => return Err(err.into_error().into()),
                        },
                    }
                }
                Pick::Connect(upstream, generation) => {
                    let mut sender = connect(&upstream).await?;
                    let resp = sender.send_request(req).await?;
                    return Ok((resp, lend(sender, version, generation)));
                }
            }
        }
    }

    /// Keeps a connection whose response was read to the end for the next
    /// request, unless its upstream has changed since it was lent.
    pub(crate) fn give_back(&self, lent: Lent) {
        if lent.sender.is_closed() {
            return;
        }
        let mut slot = self.slot(lent.version);
        if slot.generation == lent.generation && slot.idle.len() < MAX_IDLE {
            slot.idle.push_back(Idle {
                sender: lent.sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for longer than the idle timeout, and those the
    /// upstream has closed.
    pub(crate) fn expire(&self) {
        for version in Version::ALL {
            self.slot(version).expire(self.idle_timeout);
        }
    }

    /// How often [`Pool::expire`] should run.
    pub(crate) fn expiry_interval(&self) -> Duration {
        (self.idle_timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }
}

/// Whether a pooled connection failed the way a connection the upstream
/// closed as the request went out does: closed, reset, or ended before a
/// response (not an answer that failed to parse, nor a request that failed
/// on our side).
fn hung_up(err: &hyper::Error) -> bool {
    !err.is_parse() && !err.is_user() && !err.is_timeout()
}

/// A copy of `req` to send again, if sending it twice is harmless: an
/// idempotent method (RFC 9110 9.2.2) and no body.
fn replayable(req: &Request<ForwardBody>) -> Option<Request<ForwardBody>> {
    if !req.method().is_idempotent() || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(ForwardBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

fn lend(sender: SendRequest<ForwardBody>, version: Version, generation: u64) -> Lent {
    Lent {
        sender,
        version,
        generation,
    }
}

/// Opens a connection to `upstream` and drives it on this runtime.
async fn connect(upstream: &Upstream) -> Result<SendRequest<ForwardBody>, SendError> {
    let authority = upstream.authority();
    // `[::1]` is the URI spelling; the socket wants `::1`.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|source| SendError::Connect {
            upstream: upstream.to_string(),
            source,
        })?;
    // Small requests and responses must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        // One buffer per write: requests are small (see server.rs).
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(%err, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

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
/// handler and [`Exchange`](crate::body::Exchange).
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
                        return Poll::Ready(Some(Err(ClientBodyError::Stalled(stall.limit()))));
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
