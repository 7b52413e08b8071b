//! Test harness: small hyper upstreams, a proxy on a free port, a client, and
//! raw-socket helpers. Everything binds 127.0.0.1:0 and stops on Drop.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serin_proxy::{Proxy, ProxyOptions, RoutingTable, Weight};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// An upstream server; aborted on Drop.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    /// An upstream served by `task` on `addr`.
    pub fn from_task(addr: SocketAddr, task: JoinHandle<()>) -> Upstream {
        Upstream { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an upstream answering with `handler`.
pub async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Upstream { addr, task }
}

/// An upstream that answers 200 with its name in body and `x-version`.
pub async fn named(name: &'static str) -> Upstream {
    upstream(move |_req| async move {
        Response::builder()
            .header("x-version", name)
            .body(full(name))
            .unwrap()
    })
    .await
}

/// The table sending `pct` % of requests to `canary`, the rest to `stable`.
pub fn table(stable: &Upstream, canary: &Upstream, pct: f64) -> RoutingTable {
    RoutingTable::new(
        &stable.url(),
        &canary.url(),
        Weight::from_percent(pct).unwrap(),
    )
    .unwrap()
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy serving on a free port; shut down (gracefully) on Drop.
pub struct Running {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks for shutdown and returns the serve task, to await its drain.
    pub fn shutdown(&mut self) -> JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub async fn start_proxy(table: RoutingTable, options: ProxyOptions) -> Running {
    let proxy = Proxy::new(table, options);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serin_proxy::serve(listener, proxy.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        proxy,
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A proxy served from every core by `serve_per_core` (as serin serves one)
/// on a free port; shut down (gracefully) on Drop.
pub async fn start_per_core(table: RoutingTable, options: ProxyOptions) -> Running {
    let proxy = Proxy::new(table, options);
    let listener = serin_proxy::bind_per_core("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = serin_proxy::serve_per_core(listener, proxy.clone(), async move {
        let _ = stopped.await;
    });
    let task = tokio::spawn(async move { served.await.unwrap() });
    Running {
        proxy,
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// An admin server for `proxy`; aborted on Drop.
pub struct Admin {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_admin(proxy: Arc<Proxy>, rollout: &str) -> Admin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serin_proxy::serve_admin(
        listener,
        proxy,
        rollout.to_owned(),
        None,
        std::future::pending(),
    ));
    Admin { addr, task }
}

pub type TestClient = Client<HttpConnector, Body>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `req` and reads the whole answer, within 10 s.
pub async fn send(client: &TestClient, req: Request<Body>) -> Answer {
    tokio::time::timeout(Duration::from_secs(10), async {
        let resp = client.request(req).await.expect("request");
        let (head, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: head.status,
            headers: head.headers,
            body,
        }
    })
    .await
    .expect("answer within 10 s")
}

pub async fn get(client: &TestClient, url: &str) -> Answer {
    send(client, Request::get(url).body(full("")).unwrap()).await
}

/// Writes `bytes` on a fresh connection and reads until the server closes it
/// or 3 s pass. Returns what was read and whether the server closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_until_close(&mut s, Duration::from_secs(3)).await
}

pub async fn read_until_close(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A minimal Prometheus text parser: every non-comment line must be
/// `name{labels} value`; returns (name, labels, value) triples.
/// One sample: metric name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (
                n,
                rest.strip_suffix('}')
                    .unwrap_or_else(|| panic!("no closing brace: {line}")),
            ),
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        let mut pairs = Vec::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("bad label: {line}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => panic!("dangling escape: {line}"),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label: {line}"),
                }
            };
            pairs.push((k.to_owned(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        out.push((name.to_owned(), pairs, value));
    }
    out
}

/// The value of the series `name` whose labels include all of `want`.
pub fn metric(parsed: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = parsed
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].2
}
