//! Probes with a timeout: a GET for health checks (plain HTTP, like the
//! built-in proxy's upstreams) and a JSON POST for gates and pre-rollout
//! checks (HTTP or HTTPS, as Flagger's webhooks).

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long a probe may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// GETs `url` and returns the status, or why there was none.
pub async fn get(url: &str) -> Result<StatusCode, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL `{url}`: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("`{url}`: only http:// URLs can be probed"));
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "serin")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) => Ok(response.status()),
        Ok(Err(e)) => Err(format!("no answer: {e}")),
        Err(_) => Err(format!("no answer within {}s", TIMEOUT.as_secs())),
    }
}

/// POSTs `body` as JSON to `url` and returns the status, or why there was none.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<StatusCode, String> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    match client.post(url).json(body).send().await {
        Ok(r) => StatusCode::from_u16(r.status().as_u16()).map_err(|e| e.to_string()),
        Err(e) if e.is_builder() => Err(format!("bad URL `{url}`: {e}")),
        Err(e) => Err(format!("no answer: {e}")),
    }
}
