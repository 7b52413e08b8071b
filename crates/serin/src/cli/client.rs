//! The client side of the daemon's API: where it is (`--api`, `SERIN_API`),
//! the token (`--token`, `SERIN_TOKEN`), and one JSON request at a time.

use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::exit::invalid;
use crate::wire::ErrorBody;

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The daemon's address.
    #[arg(
        long = "api",
        env = "SERIN_API",
        default_value = "http://127.0.0.1:9900"
    )]
    pub api: String,
    /// Bearer token for commands that change something: visible ASCII
    /// characters, no spaces (anything else is refused, exit 2). An empty
    /// SERIN_TOKEN (`SERIN_TOKEN=`) means no token.
    #[arg(long = "token", env = "SERIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A failed API call: the daemon's own message when it sent one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The daemon answered with an error status.
    #[error("{message} (HTTP {status})")]
    Status {
        /// The status.
        status: StatusCode,
        /// The daemon's `error` field, or the body.
        message: String,
    },
    /// No answer at all.
    #[error(
        "cannot reach serin at {api}: {why} (is `serin serve` running? set --api or SERIN_API)"
    )]
    Unreachable {
        /// The address tried.
        api: String,
        /// Why.
        why: String,
    },
}

/// Sends JSON requests to the daemon.
pub struct ApiClient {
    base: String,
    token: Option<String>,
    /// Who this client says it is (attribution only): `cli` unless told.
    actor: crate::rollout::Actor,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// A client for `args.api`; refuses anything but `http://host:port`.
    pub fn new(args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let base = args.api.trim_end_matches('/').to_string();
        let uri: http::Uri = base.parse().map_err(|_| {
            Error::invalid(format!(
                "--api: expected a URL like http://127.0.0.1:9900, got `{}`",
                args.api
            ))
        })?;
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(Error::invalid(format!(
                "--api: expected a URL like http://127.0.0.1:9900, got `{}`",
                args.api
            ))
            .into());
        }
        let token = match args.token.as_deref() {
            // `SERIN_TOKEN=` clears the token rather than sending an empty one.
            Some("") if std::env::var_os("SERIN_TOKEN").is_some_and(|v| v.is_empty()) => None,
            Some(t) => Some(super::bearer_token(t)?),
            None => None,
        };
        Ok(ApiClient {
            base,
            token,
            actor: crate::rollout::Actor::Cli,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The same client naming itself `actor` to the API (`serin monitor`).
    pub fn acting_as(mut self, actor: crate::rollout::Actor) -> ApiClient {
        self.actor = actor;
        self
    }

    /// `DELETE path` → JSON (`?purge=true` answers what it deleted).
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.call(Method::DELETE, path, None, None).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("unexpected answer from {}{path}", self.base))
    }

    /// `GET path` → JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let body = self.call(Method::GET, path, None, None).await?;
        serde_json::from_slice(&body)
            .with_context(|| format!("unexpected answer from {}{path}", self.base))
    }

    /// `GET path` → text (HTML report).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let body = self.call(Method::GET, path, None, None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// `DELETE path`, expecting no body back.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.call(Method::DELETE, path, None, None)
            .await
            .map(|_| ())
    }

    /// `method path` with a JSON body → JSON.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let json = serde_json::to_vec(body)?;
        let answer = self
            .call(method, path, Some(json), Some("application/json"))
            .await?;
        serde_json::from_slice(&answer)
            .with_context(|| format!("unexpected answer from {}{path}", self.base))
    }

    /// `method path` with a raw body and content type → JSON.
    pub async fn send_raw<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> anyhow::Result<T> {
        let answer = self
            .call(method, path, Some(body), Some(content_type))
            .await?;
        serde_json::from_slice(&answer)
            .with_context(|| format!("unexpected answer from {}{path}", self.base))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> anyhow::Result<Bytes> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request = request.header(crate::rollout::ACTOR_HEADER, self.actor.as_str());
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let unreachable = |why: String| ApiError::Unreachable {
            api: self.base.clone(),
            why,
        };
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .map_err(|_| unreachable("no answer within 30 s".into()))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        let err = ApiError::Status { status, message };
        // The daemon refused our input: that is the user's input, exit 2.
        if status == StatusCode::BAD_REQUEST {
            return Err(anyhow!(Error::invalid(err.to_string())));
        }
        Err(err.into())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `/api/v1/rollouts/NAME` plus `rest`. Names are `[a-z0-9-]`; anything else
/// is refused (exit 2) before it reaches a URL.
pub fn rollout_path(name: &str, rest: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(format!(
            "NAME: expected a rollout name of a-z, 0-9 and -, got `{name}`"
        )));
    }
    Ok(format!("/api/v1/rollouts/{name}{rest}"))
}
