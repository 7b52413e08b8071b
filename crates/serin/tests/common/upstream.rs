//! Tiny upstreams for tests: answer 200 with the version in `x-serin-version`.

use std::net::SocketAddr;

/// Starts an upstream on 127.0.0.1:0 in the current tokio runtime.
pub async fn versioned(version: &'static str) -> SocketAddr {
    let app = axum::Router::new()
        .fallback(move || async move { ([("x-serin-version", version)], version) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// GETs `url` with a fresh connection and returns the `x-serin-version` header.
pub async fn version_of(client: &Client, url: &str) -> Option<String> {
    let req = http::Request::get(url)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .ok()?;
    let resp = client.request(req).await.ok()?;
    resp.headers()
        .get("x-serin-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A pooled plain-HTTP client.
pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Makes a [`Client`].
pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}
