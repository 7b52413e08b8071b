//! Accepting connections and shutting down: the shell around [`Proxy`].
//!
//! [`serve_per_core`] is how serin serves a proxy (`serin proxy`, and each
//! rollout of `serin run` and `serin serve`): one single-threaded runtime per
//! core, each with its own listening socket on the same address
//! (`SO_REUSEPORT`) and its own upstream pool, so a request is served start to end on one thread with no
//! wake-ups across cores (measured against one multi-thread runtime in
//! docs/benchmarks.md). The runtimes are started on first use and shared by
//! every proxy of the process, so a daemon with many rollouts has one thread
//! per core for all of them, not per rollout. [`serve`] is one such runtime's
//! part, for a caller that brings its own runtime.
//!
//! Shutdown order: when the `shutdown` future resolves, stop accepting, ask
//! every open connection to finish its current request and close (idle ones
//! close at once), wait for them up to the proxy's `drain_timeout`, then close
//! whatever is left. The caller binds the listener, so it chooses the address
//! (tests bind `127.0.0.1:0`) and sees bind errors itself.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use std::{io, thread};

use http::HeaderValue;
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinHandle, JoinSet};

use crate::admin::Admin;
use crate::balance::{Member, Open};
use crate::proxy::Proxy;

/// Serves the proxy on `listener` until `shutdown` resolves, then drains open
/// requests (up to [`ProxyOptions::drain_timeout`](crate::ProxyOptions)).
///
/// Each call keeps its own pool of upstream connections, driven by the runtime
/// it runs on. [`serve_per_core`] calls it once on each core's runtime, sharing
/// one `Proxy` (and so one table and one recorder); tests call it on theirs.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, shutdown: impl Future<Output = ()>) {
    let drain = proxy.options().drain_timeout;
    let worker = proxy.worker();
    let incoming = Connections::Balanced {
        listener,
        member: proxy.balancer().join(),
        proxy: proxy.clone(),
    };
    accept_loop(incoming, shutdown, drain, move |peer: SocketAddr| {
        let worker = worker.clone();
        // Made once per connection: every request on it carries the same IP.
        let client_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        service_fn(move |req: http::Request<Incoming>| {
            let worker = worker.clone();
            let client_ip = client_ip.clone();
            async move { Ok::<_, Infallible>(worker.handle(req, &client_ip).await) }
        })
    })
    .await;
}

/// The listening sockets of [`serve_per_core`]: one per core, all bound to one
/// address with `SO_REUSEPORT` (the kernel spreads new connections over
/// them; the runtimes even out what it spreads unevenly, `balance`), each
/// registered with its core's runtime.
#[derive(Debug)]
pub struct PerCoreListener {
    each: Vec<(Handle, TcpListener)>,
    addr: SocketAddr,
}

impl PerCoreListener {
    /// The address bound (with the port chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many runtimes accept on it: one per core.
    pub fn cores(&self) -> usize {
        self.each.len()
    }
}

/// Binds `addr` for [`serve_per_core`] (backlog 1024 per core), starting the
/// per-core runtimes if this is the first.
///
/// An address that any socket is listening on is refused with
/// [`io::ErrorKind::AddrInUse`], also when it is another serin's
/// `SO_REUSEPORT` group: a second serin of the same user would otherwise join
/// it without an error and take part of the first one's traffic. For that the
/// address is first bound by a socket without `SO_REUSEPORT` (which also
/// chooses the port for port 0), then let go for the per-core sockets.
pub fn bind_per_core(addr: SocketAddr) -> io::Result<PerCoreListener> {
    let cores = cores()?;
    let socket = || -> io::Result<TcpSocket> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        Ok(socket)
    };
    let addr = {
        let alone = socket()?;
        alone.bind(addr)?;
        alone.local_addr()?
    };
    let mut each = Vec::with_capacity(cores.len());
    for core in cores {
        let socket = socket()?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        let _entered = core.enter();
        each.push((core.clone(), socket.listen(1024)?));
    }
    Ok(PerCoreListener { each, addr })
}

/// Serves the proxy on `listener` from every core until `shutdown` resolves,
/// then drains open requests as [`serve`] does, on every core at once, and
/// returns when all have finished.
///
/// Dropped before that, it stops serving at once (as dropping [`serve`]
/// does). An error says a core's accept loop panicked; the other cores kept
/// serving until the shutdown.
pub async fn serve_per_core(
    listener: PerCoreListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), JoinError> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut serving = Serving(Vec::with_capacity(listener.each.len()));
    for (core, listener) in listener.each {
        let mut stopped = stopped.clone();
        let until_stopped = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        serving
            .0
            .push(core.spawn(serve(listener, proxy.clone(), until_stopped)));
    }
    shutdown.await;
    let _ = stop.send(true);
    let mut result = Ok(());
    for task in &mut serving.0 {
        if let Err(err) = task.await {
            result = result.and(Err(err));
        }
    }
    result
}

/// The accept loops of one [`serve_per_core`]; aborted if it is dropped.
struct Serving(Vec<JoinHandle<()>>);

impl Drop for Serving {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The per-core runtimes, started on first use and running until the process
/// exits; each is driven by its own thread, `serin-proxy-N`.
fn cores() -> io::Result<&'static [Handle]> {
    static CORES: Mutex<Option<&'static [Handle]>> = Mutex::new(None);
    let mut cores = CORES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(started) = *cores {
        return Ok(started);
    }
    let n = thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        handles.push(start_core(i)?);
    }
    let started: &'static [Handle] = Vec::leak(handles);
    *cores = Some(started);
    Ok(started)
}

/// Starts core `i`'s runtime on its own thread and returns its handle. The
/// runtime is made (and would be dropped) on that thread, never in the
/// caller's async context.
fn start_core(i: usize) -> io::Result<Handle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    thread::Builder::new()
        .name(format!("serin-proxy-{i}"))
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    // Drives the tasks spawned onto it, for good.
                    rt.block_on(std::future::pending::<()>());
                }
                Err(err) => {
                    let _ = tx.send(Err(err));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| io::Error::other("a proxy runtime thread ended as it started"))?
}

/// Serves the admin endpoints (`GET /metrics`, `GET`/`PUT /weight`) of `proxy`
/// on `listener` until `shutdown` resolves. `rollout` is the `rollout` label of
/// every metric. With `token`, `PUT /weight` needs `Authorization: Bearer
/// TOKEN` (401 without it); reads stay open.
pub async fn serve_admin(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    rollout: String,
    token: Option<String>,
    shutdown: impl Future<Output = ()>,
) {
    let admin = Arc::new(Admin::new(proxy, rollout, token));
    let incoming = Connections::Plain(listener);
    accept_loop(incoming, shutdown, Duration::from_secs(5), move |_peer| {
        let admin = admin.clone();
        service_fn(move |req: http::Request<Incoming>| {
            let admin = admin.clone();
            async move { Ok::<_, Infallible>(admin.handle(req).await) }
        })
    })
    .await;
}

/// Where an accept loop gets its connections.
enum Connections {
    /// Straight from the listener (the admin server).
    Plain(TcpListener),
    /// From the listener or another runtime of the same proxy, spread evenly
    /// ([`crate::balance`]).
    Balanced {
        listener: TcpListener,
        member: Member,
        proxy: Arc<Proxy>,
    },
}

impl Connections {
    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr, Option<Open>)> {
        match self {
            Connections::Plain(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((stream, peer, None))
            }
            Connections::Balanced {
                listener,
                member,
                proxy,
            } => {
                let (stream, peer, open) = member.accept(proxy.balancer(), listener).await?;
                Ok((stream, peer, Some(open)))
            }
        }
    }
}

async fn accept_loop<S, B>(
    mut incoming: Connections,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    mut service_for: impl FnMut(SocketAddr) -> S,
) where
    S: HttpService<Incoming, ResBody = B> + Send + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let drain_signal = Arc::new(Drain::default());
    let mut connections = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new());
    // Head and body copied into one buffer and written with one write(2),
    // rather than a writev(2) of several slices: most answers are small, and
    // it measured faster with a steadier p99 (docs/benchmarks.md).
    builder.writev(false);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = incoming.accept() => {
                let (stream, peer, open) = match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        // Out of file descriptors and the like: back off rather
                        // than spin, and keep serving the connections we have.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let conn = builder.serve_connection(io(stream), service_for(peer));
                let conn = Draining::new(conn, drain_signal.clone());
                connections.spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(%peer, %err, "connection ended with an error");
                    }
                    drop(open);
                });
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Stop accepting: closes the listener, and no connection is handed over.
    drop(incoming);
    drain_signal.ask();
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain timeout: closing open connections"
        );
    }
    connections.shutdown().await;
}

/// Asks every open connection to finish the request it is serving and close
/// (idle ones close at once).
///
/// hyper-util's `GracefulShutdown` does the same with a watch channel that
/// every connection polls each time it wakes, i.e. on every request; here a
/// connection registers its task once and is woken only when asked.
#[derive(Default)]
struct Drain {
    asked: AtomicBool,
    waiting: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
}

impl Drain {
    fn ask(&self) {
        self.asked.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *self.lock());
        for waker in waiting.into_values() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A served connection that closes gracefully when its [`Drain`] is asked.
struct Draining<C> {
    conn: Pin<Box<C>>,
    drain: Arc<Drain>,
    /// Where its task's waker is registered with the drain, once registered.
    id: Option<u64>,
    closing: bool,
}

impl<C> Draining<C> {
    fn new(conn: C, drain: Arc<Drain>) -> Draining<C> {
        Draining {
            conn: Box::pin(conn),
            drain,
            id: None,
            closing: false,
        }
    }
}

impl<I, S> Future for Draining<http1::Connection<I, S>>
where
    http1::Connection<I, S>: Future,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: HttpService<Incoming>,
    S::ResBody: Body + 'static,
    <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = <http1::Connection<I, S> as Future>::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.closing {
            if this.id.is_none() {
                // A spawned task keeps its waker: registering it once is enough.
                let id = this.drain.next_id.fetch_add(1, Ordering::Relaxed);
                this.drain.lock().insert(id, cx.waker().clone());
                this.id = Some(id);
            }
            if this.drain.asked.load(Ordering::SeqCst) {
                this.conn.as_mut().graceful_shutdown();
                this.closing = true;
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Draining<C> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.drain.lock().remove(&id);
        }
    }
}

fn io(stream: TcpStream) -> TokioIo<TcpStream> {
    // Best effort: a socket that refuses NODELAY still works, only slower.
    let _ = stream.set_nodelay(true);
    TokioIo::new(stream)
}
