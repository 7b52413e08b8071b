//! The daemon's HTTP API (axum): the SPEC's `/api/v1` routes, `/metrics`,
//! `/healthz` and the dashboard at `/`. `serin serve` and `serin run` serve
//! the same router; `serin run`'s registers, deploys and cleans up nothing
//! (409), and always has a token (its own, in `DIR/api.json`).
//!
//! Every request passes [`Guard`] first (its Host names this daemon; a
//! mutation does not come from another site's page). Reads are then open;
//! every mutation needs `Authorization: Bearer TOKEN` when the daemon has a
//! token. Errors are JSON `{"error": "..."}` with a status
//! that says whose fault it is: 401 no or wrong token, 403 a request from a
//! web page (see [`super::guard`]); the daemon's own errors carry a kind
//! whose status is [`crate::error::Kind::status`] (400 bad input, 404 no such
//! rollout, 403 not allowed by the operator, 409 does not fit the rollout's
//! phase, 503 a port, nginx, the cluster or the database cannot now, 500 ours).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;

use super::guard::Guard;
use crate::cluster::view::ClusterView;
use crate::controller::machine::Input;
use crate::daemon::{Daemon, DaemonError, Registered};
use crate::rollout::{ACTOR_HEADER, Actor, Stop};
use crate::wire::{DeployRequest, ErrorBody, PromoteRequest, RollbackRequest, WeightRequest};

/// Request bodies larger than this are refused (a rollout file is a few KiB).
pub const BODY_LIMIT: usize = 1024 * 1024;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Refuses what [`Guard`] refuses (403) before any handler runs.
async fn guarded(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.uri().path(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            tracing::warn!(method = %request.method(), path = %request.uri().path(), "{why}");
            ApiError(StatusCode::FORBIDDEN, why).into_response()
        }
    }
}

/// The whole API as an axum router; `guard` says which requests it answers.
pub fn router(daemon: Arc<Daemon>, guard: Guard) -> Router {
    router_with(daemon, guard, None)
}

/// [`router`], with the cluster's Rollouts (`serin serve --kubernetes`):
/// `GET /api/v1/kubernetes/rollouts[/{namespace}/{name}]` and their gauges
/// in `/metrics`, read-only. Without a view those routes answer 404 saying
/// the daemon does not run with --kubernetes.
pub fn router_with(daemon: Arc<Daemon>, guard: Guard, cluster: Option<ClusterView>) -> Router {
    let kube = Router::new()
        .route(
            "/api/v1/kubernetes/rollouts",
            get(kube_list).fallback(kube_read_only),
        )
        .route(
            "/api/v1/kubernetes/rollouts/{namespace}/{name}",
            get(kube_one).fallback(kube_read_only),
        )
        .with_state(cluster.clone());
    let scraped = cluster;
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move |State(daemon): State<Arc<Daemon>>| metrics(daemon, scraped.clone())),
        )
        .merge(kube)
        .route("/api/v1/rollouts", get(list).post(register))
        .route("/api/v1/rollouts/{name}", get(status).delete(cleanup))
        .route("/api/v1/rollouts/{name}/deploy", post(deploy))
        .route("/api/v1/rollouts/{name}/promote", post(promote))
        .route("/api/v1/rollouts/{name}/rollback", post(rollback))
        .route("/api/v1/rollouts/{name}/pause", post(pause))
        .route("/api/v1/rollouts/{name}/resume", post(resume))
        .route("/api/v1/rollouts/{name}/weight", put(set_weight))
        .route("/api/v1/rollouts/{name}/events", get(events))
        .route("/api/v1/rollouts/{name}/report", get(report))
        .route("/api/v1/rollouts/{name}/history", get(history))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API is under /api/v1".into(),
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            guarded,
        ))
        .with_state(daemon)
}

/// An error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        ApiError(e.kind().status(), e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Checks the bearer token of a mutation (in constant time: see
/// [`serin_proxy::bearer_matches`]).
fn authorize(daemon: &Daemon, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = daemon.token() else {
        return Ok(());
    };
    let same = serin_proxy::bearer_matches(headers, expected);
    if same {
        Ok(())
    } else if actor(headers) == Actor::Dashboard {
        // The dashboard's user has a token field, not --state-dir or
        // SERIN_TOKEN: say what was wrong with what they typed and where
        // the right token is.
        let sent = headers.contains_key(header::AUTHORIZATION);
        let what = if sent {
            "the token in the token field was rejected"
        } else {
            "this action needs a token"
        };
        let where_ = if daemon.foreground().is_some() {
            "paste this serin run's own token (the `token` in `api.json` in its state dir, DIR/api.json)"
        } else {
            "paste the token this daemon was started with (its --token, or SERIN_TOKEN where it was started)"
        };
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            format!("{what}: {where_} into the token field at the top right"),
        ))
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            if daemon.foreground().is_some() {
                // `serin run`'s token is its own, never the operator's.
                "this command needs `Authorization: Bearer TOKEN` with this serin run's own token: it is in `api.json` in its state dir, where the CLI reads it (`--state-dir DIR`, without --token)".into()
            } else {
                "this command needs `Authorization: Bearer TOKEN` with the daemon's token (--token or SERIN_TOKEN)".into()
            },
        ))
    }
}

/// Who sent a request, as it names itself in [`ACTOR_HEADER`]: attribution
/// only (the token above decides what may be done).
fn actor(headers: &HeaderMap) -> Actor {
    Actor::from_header(headers.get(ACTOR_HEADER).and_then(|v| v.to_str().ok()))
}

/// `serin run`'s API changes only the one rollout it runs: what it does not
/// do (register, deploy, clean up) is refused (409) with what to do instead.
fn not_in_run(daemon: &Daemon, change: Change) -> ApiResult<()> {
    let Some(name) = daemon.foreground() else {
        return Ok(());
    };
    let why = match change {
        Change::Register => format!(
            "this API is `serin run` of rollout {name}: it runs that one file and registers no other; \
             `serin init` needs a `serin serve` (on another --state-dir, or with --api)"
        ),
        Change::Deploy => format!(
            "this API is `serin run` of rollout {name}: it rolls out the canary its file names and deploys \
             no other version; run a file with the new version, or register it with `serin serve`"
        ),
        Change::Cleanup => format!(
            "this API is `serin run` of rollout {name}: it ends with its rollout and closes its proxy then; \
             `serin rollback {name}` (or Ctrl-C where it runs) ends it now"
        ),
    };
    Err(ApiError(StatusCode::CONFLICT, why))
}

/// What `serin run`'s API refuses.
#[derive(Clone, Copy)]
enum Change {
    Register,
    Deploy,
    Cleanup,
}

/// A JSON body, or `{}` when empty, with serde's message on error.
/// A request body of at most [`BODY_LIMIT`] bytes; anything else the
/// body extractor refuses (a larger one: 413) answers with a JSON error, as
/// every other refusal does.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError(
                e.status(),
                format!("request body: larger than {BODY_LIMIT} bytes"),
            )),
            Err(e) => Err(ApiError(
                e.status(),
                format!("request body: {}", e.body_text()),
            )),
        }
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes, what: &str) -> ApiResult<T> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("{what}: {e}")))
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn metrics(daemon: Arc<Daemon>, cluster: Option<ClusterView>) -> Response {
    let mut text = daemon.metrics_text().await;
    if let Some(view) = cluster {
        text.push_str(&view.metrics_text());
    }
    (
        [(header::CONTENT_TYPE, serin_proxy::METRICS_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The cluster's view, or 404 when the daemon does not run with --kubernetes.
fn cluster_view(cluster: Option<ClusterView>) -> ApiResult<ClusterView> {
    cluster.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this daemon was not started with --kubernetes: it shows no Kubernetes Rollouts \
             (serin serve --kubernetes does; serin status --kubernetes reads them from the cluster)"
                .into(),
        )
    })
}

fn cluster_error(e: crate::error::Error) -> ApiError {
    ApiError(e.kind().status(), e.to_string())
}

/// Every Rollout the cluster view holds (read-only).
async fn kube_list(State(cluster): State<Option<ClusterView>>) -> ApiResult<Response> {
    let view = cluster_view(cluster)?;
    Ok(axum::Json(view.list().map_err(cluster_error)?).into_response())
}

/// One Rollout of the cluster view (read-only).
async fn kube_one(
    State(cluster): State<Option<ClusterView>>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let view = cluster_view(cluster)?;
    Ok(axum::Json(view.one(&namespace, &name).map_err(cluster_error)?).into_response())
}

/// Anything but GET on the cluster's Rollouts: nothing over HTTP changes
/// a Rollout in the cluster.
async fn kube_read_only() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "the cluster's Rollouts are read-only here: act on one with `serin promote|rollback|pause|resume|traffic NAME --kubernetes -n NAMESPACE` (it writes a request on the Rollout that the leading replica answers)".into(),
    )
}

async fn list(State(daemon): State<Arc<Daemon>>) -> ApiResult<Response> {
    Ok(axum::Json(daemon.list().await?).into_response())
}

async fn status(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    Ok(axum::Json(daemon.status(&name).await?).into_response())
}

/// Runs a change to the daemon to its end on a task of its own: a client
/// that goes away (a timeout, Ctrl-C, a closed tab) drops the handler, and
/// with it any future it was awaiting; a cleanup stopped halfway would leave
/// a stored rollout that nothing controls. The answer is lost, the change is
/// not.
async fn to_the_end<T: Send + 'static>(
    change: impl Future<Output = Result<T, DaemonError>> + Send + 'static,
) -> ApiResult<T> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the change failed inside serin: {e}"),
        )),
    }
}

async fn register(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<Response> {
    authorize(&daemon, &headers)?;
    not_in_run(&daemon, Change::Register)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "request body: expected a rollout file as UTF-8 YAML or JSON".into(),
        )
    })?;
    let text = text.to_owned();
    let by = actor(&headers);
    Ok(
        match to_the_end(async move { daemon.register(&text, by).await }).await? {
            Registered::New(status) => (StatusCode::CREATED, axum::Json(status)).into_response(),
            // The file its run in progress runs: nothing changed.
            Registered::Unchanged(status) => (StatusCode::OK, axum::Json(status)).into_response(),
        },
    )
}

#[derive(Deserialize)]
struct CleanupQuery {
    #[serde(default)]
    purge: bool,
}

async fn cleanup(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    q: Result<Query<CleanupQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query(q)?;
    authorize(&daemon, &headers)?;
    not_in_run(&daemon, Change::Cleanup)?;
    let by = actor(&headers);
    let purged = to_the_end(async move { daemon.cleanup(&name, q.purge, by).await }).await?;
    Ok(match purged {
        Some(runs) => axum::Json(serde_json::json!({ "purgedRuns": runs })).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn deploy(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    authorize(&daemon, &headers)?;
    not_in_run(&daemon, Change::Deploy)?;
    let req: DeployRequest = json_body(
        &body,
        "deploy body (expected {\"version\":\"v2\",\"upstream\":\"http://…\"})",
    )?;
    let by = actor(&headers);
    let status = to_the_end(async move { daemon.deploy(&name, req, by).await }).await?;
    Ok(axum::Json(status).into_response())
}

async fn promote(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    authorize(&daemon, &headers)?;
    let req: PromoteRequest = json_body(&body, "promote body (expected {\"full\":false})")?;
    let input = Input::Promote {
        full: req.full,
        by: actor(&headers),
    };
    let status = to_the_end(async move { daemon.command(&name, input).await }).await?;
    Ok(axum::Json(status).into_response())
}

async fn rollback(
    State(d): State<Arc<Daemon>>,
    h: HeaderMap,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    authorize(&d, &h)?;
    let req: RollbackRequest = json_body(
        &body,
        "rollback body (expected {} or {\"breach\":{\"metric\":\"error-rate\",\"threshold\":5,\"value\":12}})",
    )?;
    let stop = match req.breach {
        Some(breach) => Stop::Monitor(breach),
        None => Stop::Operator(actor(&h)),
    };
    let status = to_the_end(async move { d.command(&name, Input::Rollback(stop)).await }).await?;
    Ok(axum::Json(status).into_response())
}

async fn pause(
    State(d): State<Arc<Daemon>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&d, &h)?;
    let by = actor(&h);
    let status = to_the_end(async move { d.command(&name, Input::Pause { by }).await }).await?;
    Ok(axum::Json(status).into_response())
}

async fn resume(
    State(d): State<Arc<Daemon>>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    authorize(&d, &h)?;
    let by = actor(&h);
    let status = to_the_end(async move { d.command(&name, Input::Resume { by }).await }).await?;
    Ok(axum::Json(status).into_response())
}

async fn set_weight(
    State(daemon): State<Arc<Daemon>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    authorize(&daemon, &headers)?;
    let req: WeightRequest = json_body(&body, "weight body (expected {\"weight\":25})")?;
    let weight = serin_proxy::Weight::from_percent(req.weight)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("weight: {e}")))?;
    let by = actor(&headers);
    let status =
        to_the_end(async move { daemon.command(&name, Input::SetWeight { weight, by }).await })
            .await?;
    Ok(axum::Json(status).into_response())
}

async fn events(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query(q)?;
    Ok(axum::Json(daemon.report(&name, q.run).await?.timeline).into_response())
}

/// A query string that does not read is a 400 in the API's JSON error,
/// naming what was expected (axum's own answer is plain text).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<Query<T>> {
    q.map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "query: {} (`run` is a run number 1, 2, 3 …; `purge` true or false; `format` json or html)",
                e.body_text()
            ),
        )
    })
}

#[derive(Deserialize)]
struct RunQuery {
    run: Option<u32>,
}

/// Every run of a rollout (or one: `?run=N`), with its decisions.
async fn history(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    q: Result<Query<RunQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query(q)?;
    Ok(axum::Json(daemon.history(&name, q.run).await?).into_response())
}

#[derive(Deserialize)]
struct ReportQuery {
    format: Option<String>,
    /// One run (1, 2, 3 ...); the last without.
    run: Option<u32>,
}

async fn report(
    State(daemon): State<Arc<Daemon>>,
    Path(name): Path<String>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query(q)?;
    let report = daemon.report(&name, q.run).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(axum::Json(report).into_response()),
        Some("html") => Ok(Html(report.to_html()).into_response()),
        Some(other) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("format: expected json or html, got `{other}`"),
        )),
    }
}
