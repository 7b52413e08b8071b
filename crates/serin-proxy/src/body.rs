//! The two bodies on the request path: the client's request body on its way
//! to the upstream, and the response body on its way back, which is where each
//! request is recorded, exactly once.
//!
//! Both stream frame by frame; neither is ever collected.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::pool::Lent;
use crate::proxy::Worker;
use crate::recorder::StatusClass;
use crate::weight::Version;

/// The client's request body, forwarded as it arrives; or none, for a
/// body-less request sent again on a fresh connection ([`crate::pool`]).
///
/// Its error type marks a failure as the client's, so that when the upstream
/// exchange fails the proxy can tell a client that went away mid-upload (no
/// version's fault) from an upstream that failed.
#[derive(Debug)]
pub(crate) enum ForwardBody {
    Client(Incoming),
    Empty,
}

/// The client's connection failed while its request body was being forwarded.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub(crate) struct ClientBodyError(#[source] hyper::Error);

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match &mut *self {
            ForwardBody::Client(body) => Pin::new(body).poll_frame(cx).map_err(ClientBodyError),
            ForwardBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ForwardBody::Client(body) => body.is_end_stream(),
            ForwardBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Client(body) => body.size_hint(),
            ForwardBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// One request of one version, from the moment it was routed until it is
/// recorded. Dropped without [`Exchange::answered`], it counts as cancelled:
/// the client went away (hyper drops the response future or body).
pub(crate) struct Exchange {
    worker: Arc<Worker>,
    version: Version,
    started: Instant,
    done: bool,
}

impl Exchange {
    pub(crate) fn begin(worker: Arc<Worker>, version: Version, started: Instant) -> Exchange {
        worker.recorder().started(version);
        Exchange {
            worker,
            version,
            started,
            done: false,
        }
    }

    /// The response was fully sent with this status class.
    pub(crate) fn answered(mut self, class: StatusClass) {
        self.worker
            .recorder()
            .record(self.version, class, self.started.elapsed());
        self.done = true;
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            self.worker.recorder().cancelled(self.version);
        }
        self.worker.recorder().ended(self.version);
    }
}

/// The response body sent to the client: the upstream's, streamed, or a short
/// one the proxy wrote itself (400, 502, 504).
pub struct ResponseBody {
    source: Source,
    /// Present until the request is recorded; `None` for responses that belong
    /// to no version (requests refused before routing).
    exchange: Option<Exchange>,
    class: StatusClass,
}

enum Source {
    /// The upstream's body, and its connection until the body has been read
    /// to the end (then it goes back to the pool for the next request).
    Upstream(Incoming, Option<Lent>),
    Local(Option<Bytes>),
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl ResponseBody {
    pub(crate) fn upstream(
        body: Incoming,
        lent: Lent,
        exchange: Exchange,
        class: StatusClass,
    ) -> ResponseBody {
        ResponseBody {
            source: Source::Upstream(body, Some(lent)),
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
            Source::Upstream(_, lent) => lent.take(),
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
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Every field is Unpin (Incoming, Bytes, plain data).
        let this = self.get_mut();
        let polled = match &mut this.source {
            Source::Upstream(b, _) => Pin::new(b).poll_frame(cx),
            Source::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        match &polled {
            Poll::Ready(None) => this.finish(this.class, true),
            // The upstream failed mid-body: the client gets a cut response, and
            // the version an error.
            Poll::Ready(Some(Err(_))) => this.finish(StatusClass::ServerError, false),
            Poll::Ready(Some(Ok(_))) if this.is_end_stream() => this.finish(this.class, true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Upstream(b, _) => b.is_end_stream(),
            Source::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Upstream(b, _) => b.size_hint(),
            Source::Local(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may drop a body it knows is complete (an empty one, or one whose
        // Content-Length it has written) without polling it to the end.
        if self.exchange.is_some() && self.is_end_stream() {
            self.finish(self.class, true);
        }
    }
}
