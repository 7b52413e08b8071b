//! The proxy: the current routing table, the recorder, the pooled upstream
//! client, and the path one request takes through them.
//!
//! The request path, in order: [`check`](Worker::handle) the request head,
//! choose the version ([`crate::split`](mod@crate::split)), rewrite the head
//! for the upstream ([`crate::forwarding`]), forward with a timeout, rewrite
//! the response head, and stream the response back through a body that
//! records the request when it has been sent ([`crate::body`]).
//!
//! Three timeouts, each counted where the fault is:
//! - `upstream_timeout`: the version's response head. It does not run while
//!   the proxy waits for the client's request body: it counts from the last
//!   moment the upstream had the turn (504, an error of the version).
//! - `client_body_timeout`: each wait for the client's next body bytes (408,
//!   against neither version).
//! - `upstream_body_timeout`: each wait for the upstream's next response body
//!   bytes (the response is cut; an error of the version).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::balance::Balancer;
use crate::body::{Exchange, HeadWait, Lane, ResponseBody};
use crate::failure::{Chain, Failure, WarnLimit};
use crate::forwarding;
use crate::pool::{ForwardBody, Pool};
use crate::recorder::{Recorder, StatusClass};
use crate::split;
use crate::table::RoutingTable;
use crate::weight::Weight;

/// How the proxy treats upstreams and shutdown.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// How long to wait for an upstream's response headers (including the
    /// connect) before answering 504. Default 30 s. Time spent waiting for
    /// the client's request body is not counted.
    pub upstream_timeout: Duration,
    /// How long to wait for each next part of an upstream's response body
    /// before cutting the response (counted against the version). Default 60 s.
    pub upstream_body_timeout: Duration,
    /// How long to wait for each next part of a client's request body before
    /// answering 408 (counted against neither version). Default 60 s.
    pub client_body_timeout: Duration,
    /// How long an idle pooled upstream connection is kept. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// After shutdown is asked for, how long open requests may take to finish
    /// before their connections are closed. Default 30 s.
    pub drain_timeout: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            upstream_timeout: Duration::from_secs(30),
            upstream_body_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A traffic-splitting reverse proxy: one routing table and one recorder.
/// Share it as `Arc<Proxy>` between [`serve`](crate::serve) (once, or once per
/// runtime), [`serve_admin`](crate::serve_admin) and whoever changes the weight.
pub struct Proxy {
    table: ArcSwap<RoutingTable>,
    /// Sequence numbers for the exact split; only requests that reach the split
    /// take one, so the split is exact over them.
    seq: AtomicU64,
    recorder: Recorder,
    /// Hands each serving runtime its own recorder shard.
    workers: AtomicUsize,
    options: ProxyOptions,
    warnings: WarnLimit,
    balancer: Balancer,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("table", &self.table.load())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy routing by `table`. Needs no runtime until it serves.
    pub fn new(table: RoutingTable, options: ProxyOptions) -> Arc<Proxy> {
        let recorder = Recorder::with_shards(
            std::thread::available_parallelism().map_or(1, |n| n.get().min(16)),
        );
        if table.baseline().is_some() {
            recorder.track_baseline();
        }
        Arc::new(Proxy {
            table: ArcSwap::from_pointee(table),
            seq: AtomicU64::new(0),
            recorder,
            workers: AtomicUsize::new(0),
            options,
            warnings: WarnLimit::new(),
            balancer: Balancer::default(),
        })
    }

    /// The routing table requests are routed by now.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Replaces the whole routing table. Takes effect on the next request;
    /// requests already forwarded and open connections are left alone.
    pub fn set_table(&self, table: RoutingTable) {
        if table.baseline().is_some() {
            // Before the table: a request it routes to the baseline is
            // in the snapshots from the first.
            self.recorder.track_baseline();
        }
        self.table.store(Arc::new(table));
    }

    /// Changes only the canary weight, keeping the rest of the table (also
    /// when another thread replaces the table at the same moment).
    pub fn set_weight(&self, weight: Weight) {
        self.table.rcu(|t| t.with_weight(weight));
    }

    /// The canary weight now.
    pub fn weight(&self) -> Weight {
        self.table.load().weight()
    }

    /// A new run begins ([`Recorder::begin_run`]): requests routed from now
    /// on count in its figures; those still open of an earlier run are, when
    /// they end, only [carried over](crate::VersionSnapshot::carried_over).
    /// Returns the new run's number. The caller takes the new run's starting
    /// snapshot after this call.
    pub fn begin_run(&self) -> u64 {
        self.recorder.begin_run()
    }

    /// What the proxy has recorded, per version.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Spreads client connections over the runtimes serving this proxy.
    pub(crate) fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The options the proxy was made with.
    pub fn options(&self) -> &ProxyOptions {
        &self.options
    }

    /// What one [`serve`](crate::serve) call needs: the proxy, and its own
    /// [`Lane`] (pool of keep-alive connections to the upstreams and recorder
    /// shard).
    pub(crate) fn worker(self: &Arc<Self>) -> Arc<Worker> {
        let lane = Arc::new(Lane {
            pool: Pool::new(self.options.pool_idle_timeout),
            recorder: self
                .recorder
                .shard(self.workers.fetch_add(1, Ordering::Relaxed)),
        });
        // Closes idle connections in the background until the lane is gone.
        let weak = Arc::downgrade(&lane);
        let every = lane.pool.expiry_interval();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(lane) => lane.pool.expire(),
                    None => return,
                }
            }
        });
        Arc::new(Worker {
            proxy: self.clone(),
            lane,
        })
    }
}

/// One serving runtime's view of the proxy: see [`Proxy::worker`].
pub(crate) struct Worker {
    proxy: Arc<Proxy>,
    lane: Arc<Lane>,
}

impl Worker {
    /// Serves one request from `client_ip` (the connection's peer, as a header
    /// value made once per connection).
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        client_ip: &HeaderValue,
    ) -> Response<ResponseBody> {
        let proxy = &*self.proxy;
        let received = Instant::now();
        let (mut head, body) = req.into_parts();

        if let Err(bad) = forwarding::check_request(
            &head.method,
            head.version,
            &head.headers,
            head.uri.authority(),
        ) {
            return refuse(bad.reason());
        }

        // Loaded once: the request is routed, connected and reported by the
        // same table, even if a promotion swaps it meanwhile.
        let table = proxy.table.load_full();
        let (version, via) = {
            let (version, via) =
                split::choose(&table, &head, || proxy.seq.fetch_add(1, Ordering::Relaxed));
            // check_request let only HTTP/1.0 through without Host.
            if head.version == http::Version::HTTP_10
                && head.uri.authority().is_none()
                && !head.headers.contains_key(header::HOST)
                && let Ok(host) =
                    HeaderValue::from_str(table.upstream(version).authority().as_str())
            {
                // An HTTP/1.0 request without Host: name the upstream.
                head.headers.insert(header::HOST, host);
            }
            (version, via)
        };
        let options = &proxy.options;
        let (body, upload) = ForwardBody::client(body, options.client_body_timeout);
        let by_route = via == split::Via::Route;
        let exchange = Exchange::begin(
            self.lane.clone(),
            version,
            by_route,
            received,
            upload.clone(),
        );

        // The upstream gets the origin form (`/path?query`); an absolute-form
        // target's authority (never with userinfo: check_request refused
        // that) wins over `Host` (RFC 9112 3.2.2).
        let target = std::mem::take(&mut head.uri).into_parts();
        if let Some(authority) = target.authority
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            head.headers.insert(header::HOST, host);
        }
        head.uri = target
            .path_and_query
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        forwarding::strip_hop_by_hop(&mut head.headers);
        forwarding::add_forwarded(&mut head.headers, client_ip);
        // An intermediary speaks its own version on each hop (RFC 9110 6.2).
        head.version = http::Version::HTTP_11;

        // Owned (not borrowed from this future), so that a client that goes
        // away before the head leaves it to finish on its own: see HeadWait.
        let sent = {
            let (lane, table) = (self.lane.clone(), table.clone());
            let req = Request::from_parts(head, body);
            async move { lane.pool.send(version, &table, req).await }
        };
        let mut wait = HeadWait::new(sent, exchange);
        let mut deadline = tokio::time::Instant::now() + options.upstream_timeout;
        let answer = loop {
            let Some(sent) = wait.sent() else {
                break None;
            };
            match tokio::time::timeout_at(deadline, sent).await {
                Ok(answer) => break Some(answer),
                // The head timeout runs only while the upstream has the turn:
                // while the client is still sending, look again later.
                Err(_elapsed) => match upload.as_deref() {
                    Some(up) => {
                        let next = up.head_deadline(options.upstream_timeout);
                        if next <= Instant::now() {
                            break None;
                        }
                        deadline = next.into();
                    }
                    None => break None,
                },
            }
        };
        let Some(exchange) = wait.settle() else {
            // HeadWait gives its exchange back exactly once, here.
            return local(StatusCode::BAD_GATEWAY, Failure::Upstream.body(), None);
        };
        let failure = match answer {
            Some(Ok((resp, lent))) => {
                let (mut head, body) = resp.into_parts();
                forwarding::strip_hop_by_hop(&mut head.headers);
                let class = StatusClass::of(head.status);
                let body = ResponseBody::upstream(
                    body,
                    lent,
                    exchange,
                    class,
                    options.upstream_body_timeout,
                );
                return Response::from_parts(head, body);
            }
            Some(Err(err)) => {
                let failure = Failure::of(&err);
                if !failure.is_client() {
                    let upstream = table.upstream(version);
                    proxy
                        .warnings
                        .warn(version, upstream, failure, &Chain(&err));
                }
                failure
            }
            None => {
                let upstream = table.upstream(version);
                let cause = format!("no response headers within {:?}", options.upstream_timeout);
                proxy
                    .warnings
                    .warn(version, upstream, Failure::Timeout, &cause);
                Failure::Timeout
            }
        };
        if failure.is_client() {
            // A client that broke or stalled its own upload is not the
            // version's fault; what follows on its connection is not framed
            // as it meant, so the connection is closed.
            exchange.cancel();
            let mut resp = local(failure.status(), failure.body(), None);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        local(failure.status(), failure.body(), Some(exchange))
    }
}

/// A response the proxy writes itself.
fn local(
    status: StatusCode,
    text: &'static str,
    exchange: Option<Exchange>,
) -> Response<ResponseBody> {
    let body = ResponseBody::local(text, exchange, StatusClass::of(status));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// 400 for a request refused before routing; the connection is closed after
/// it, since what follows on it may be framed as the client did not mean.
fn refuse(text: &'static str) -> Response<ResponseBody> {
    let mut resp = local(StatusCode::BAD_REQUEST, text, None);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
