//! `serin status|promote|rollback|pause|resume|traffic NAME --kubernetes
//! [-n NS]`: the operator's commands on a `Rollout` resource, from a laptop
//! with a kubeconfig (as kubectl finds it), with no port-forward to a serin
//! replica.
//!
//! `status` reads the Rollout's status. The others write a request
//! ([`crate::cluster::requests`]: an annotation, not a spec field, so a
//! GitOps re-sync does not undo it) and wait for the controller's answer in
//! `status.lastRequest`; no answer within `--wait` (30 s) is said so
//! (unavailable, exit 1: no controller acted), and the request is left for the next
//! leader, which acts on it only if it is younger than
//! [`crate::cluster::requests::REQUEST_TTL`].

use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

use crate::cli::block_on;
use crate::cli::output::OutputFormat;
use crate::cluster::requests::{
    Action, Answer, CLI_FIELD_MANAGER, REQUEST_ANNOTATION, Request, may_replace,
};
use crate::cluster::resource::{Rollout, RolloutStatus};
use crate::error::{Error, Kind};
use crate::exit::Exit;

/// How often it looks.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Where the Rollout is: `--kubernetes [-n NS]`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Act on the Rollout resource NAME in the cluster of the current
    /// kubeconfig context (as kubectl finds it), not on a serin daemon.
    #[arg(long)]
    pub kubernetes: bool,
    /// The Rollout's namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, value_name = "NS", requires = "kubernetes")]
    pub namespace: Option<String>,
    /// How long to wait for the controller's answer to a request.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = wait_duration, requires = "kubernetes")]
    pub wait: Duration,
}

fn wait_duration(text: &str) -> Result<Duration, String> {
    let d = crate::time::parse_duration(text)?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err("expected a duration above 0 and at most 1h, like 30s or 2m".into());
    }
    Ok(d)
}

/// What an operator asks of a Rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ask {
    /// `promote [--full]`.
    Promote {
        /// `--full`.
        full: bool,
    },
    /// `rollback`.
    Rollback,
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `traffic PCT`.
    Traffic(serin_proxy::Weight),
}

/// The namespace's Rollouts, read without their spec's types: an operator
/// can read the status of, and roll back, a Rollout whose spec this
/// version of serin does not understand.
async fn rollouts(args: &KubeArgs) -> Result<(Api<DynamicObject>, String), Error> {
    let client = crate::providers::traffic::kubernetes::client_from_env().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let resource = ApiResource::erase::<Rollout>(&());
    Ok((
        Api::namespaced_with(client, &namespace, &resource),
        namespace,
    ))
}

/// The Rollout's status as the controller wrote it (empty before it did;
/// fields this version does not know are left out).
fn status_of(rollout: &DynamicObject) -> RolloutStatus {
    rollout
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn cluster_error(what: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 404 => Error::new(
            Kind::NotFound,
            format!("{what}: no such Rollout (kubectl get rollouts.serin.dev -A lists them)"),
        ),
        kube::Error::Api(s) if s.code == 409 => Error::conflict(format!(
            "{what}: changed while being written ({}); try again",
            s.message
        )),
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Error::refused(format!(
            "{what}: the cluster refused: {} (your kubeconfig user needs get and patch on rollouts.serin.dev)",
            s.message
        )),
        kube::Error::Api(s) => {
            Error::unavailable(format!("{what}: {} {}: {}", s.code, s.reason, s.message))
        }
        other => Error::unavailable(format!("{what}: {other}")),
    }
}

/// `serin status [NAME] --kubernetes`: one Rollout, or every one in the
/// namespace.
pub fn status(name: Option<&str>, args: &KubeArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    let name = name.map(str::to_owned);
    let args = args.clone();
    block_on(async move {
        let (api, namespace) = rollouts(&args).await?;
        let listed = match &name {
            Some(name) => {
                let what = format!("Rollout {namespace}/{name}");
                vec![api.get(name).await.map_err(|e| cluster_error(&what, e))?]
            }
            None => {
                let what = format!("Rollouts in {namespace}");
                api.list(&Default::default())
                    .await
                    .map_err(|e| cluster_error(&what, e))?
                    .items
            }
        };
        let docs: Vec<serde_json::Value> = listed
            .iter()
            .map(|r| {
                json!({
                    "name": r.metadata.name,
                    "namespace": namespace,
                    "generation": r.metadata.generation,
                    "status": status_of(r),
                })
            })
            .collect();
        match (output, &name) {
            (OutputFormat::Json, Some(_)) => {
                crate::outln!("{}", serde_json::to_string_pretty(&docs[0])?);
            }
            (OutputFormat::Json, None) => {
                crate::outln!("{}", serde_json::to_string_pretty(&docs)?);
            }
            (OutputFormat::Text, _) => {
                if listed.is_empty() {
                    crate::outln!("no Rollouts in namespace {namespace}");
                }
                for r in &listed {
                    let name = r.metadata.name.as_deref().unwrap_or_default();
                    print_status(name, &namespace, r, &status_of(r));
                }
            }
        }
        Ok(Exit::Success)
    })
}

fn print_status(name: &str, namespace: &str, rollout: &DynamicObject, s: &RolloutStatus) {
    let phase = s.phase.as_deref().unwrap_or("not seen by a controller yet");
    let mut head = format!("{name} ({namespace})  {phase}");
    if let Some(run) = s.run {
        head.push_str(&format!("  run {run}"));
    }
    if let Some(step) = s.step {
        head.push_str(&format!("  step {step}"));
    }
    if let Some(w) = s.weight {
        head.push_str(&format!("  canary weight {w} %"));
    }
    crate::outln!("{head}");
    if let Some(v) = &s.canary_version {
        crate::outln!("  canary {v}");
    }
    if let Some(v) = &s.last_verdict {
        crate::outln!(
            "  last verdict: {v}{}",
            s.last_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    if s.observed_generation.is_some() && s.observed_generation != rollout.metadata.generation {
        crate::outln!(
            "  the controller has not seen the latest spec yet (generation {:?}, seen {:?})",
            rollout.metadata.generation.unwrap_or(0),
            s.observed_generation.unwrap_or(0)
        );
    }
    for c in &s.conditions {
        crate::outln!("  {}={} {}: {}", c.type_, c.status, c.reason, c.message);
    }
    if !s.decisions.is_empty() {
        crate::outln!("  recent decisions (this run):");
        for d in &s.decisions {
            crate::outln!("    {}  {}  {}", d.at, d.kind, d.reason);
        }
    }
    if let Some(a) = &s.last_request {
        crate::outln!(
            "  last request: {} by {} at {}: {} ({})",
            a.action,
            a.by,
            a.at,
            if a.accepted { "done" } else { "refused" },
            a.message
        );
    }
}

/// Who asks, for the record: `$USER@host` (attribution only).
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into());
    let by = match crate::cluster::lease::hostname() {
        Some(host) => format!("{user}@{host}"),
        None => user,
    };
    by.chars().filter(|c| !c.is_control()).take(253).collect()
}

/// The request for `ask`, asked now.
pub fn request(ask: Ask, by: &str) -> Request {
    let action = match ask {
        Ask::Promote { .. } => Action::Promote,
        Ask::Rollback => Action::Rollback,
        Ask::Pause => Action::Pause,
        Ask::Resume => Action::Resume,
        Ask::Traffic(_) => Action::Traffic,
    };
    let mut r = Request::new(action, by, crate::time::now());
    match ask {
        Ask::Promote { full } => r.full = full,
        Ask::Traffic(w) => r.weight = Some(w.percent()),
        _ => {}
    }
    r
}

/// `serin promote|rollback|pause|resume|traffic NAME --kubernetes`.
pub fn act(name: &str, args: &KubeArgs, ask: Ask, output: OutputFormat) -> anyhow::Result<Exit> {
    let name = name.to_owned();
    let args = args.clone();
    block_on(async move {
        let (api, namespace) = rollouts(&args).await?;
        let what = format!("Rollout {namespace}/{name}");
        let req = request(ask, &who());
        write_request(&api, &name, &req, &what).await?;
        let answer = wait_for_answer(&api, &name, &req.id, &what, args.wait).await?;
        match output {
            OutputFormat::Json => crate::outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "name": name,
                    "namespace": namespace,
                    "request": req,
                    "answer": answer,
                }))?
            ),
            OutputFormat::Text => crate::outln!(
                "{what}: {} {}: {}",
                req.action.as_str(),
                if answer.accepted { "done" } else { "refused" },
                answer.message
            ),
        }
        if answer.accepted {
            Ok(Exit::Success)
        } else {
            Err(Error::conflict(format!("{what}: {}", answer.message)).into())
        }
    })
}

/// How many times a request is written again when the Rollout changed
/// between reading and writing (its status changes with every decision).
const WRITE_ATTEMPTS: u32 = 10;

/// Writes `req` into the annotation, under the resourceVersion of the read
/// that found nothing pending (so another operator's request written in
/// between is never silently replaced); a 409 is read again and retried.
async fn write_request(
    api: &Api<DynamicObject>,
    name: &str,
    req: &Request,
    what: &str,
) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(CLI_FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let rollout = api.get(name).await.map_err(|e| cluster_error(what, e))?;
        let current = rollout
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REQUEST_ANNOTATION))
            .map(String::as_str);
        let status = status_of(&rollout);
        may_replace(current, status.last_request.as_ref(), req, what)?;
        let patch = json!({
            "metadata": {
                "resourceVersion": rollout.metadata.resource_version,
                "annotations": { REQUEST_ANNOTATION: req.to_annotation() },
            }
        });
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < WRITE_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(cluster_error(what, e)),
        }
    }
}

async fn wait_for_answer(
    api: &Api<DynamicObject>,
    name: &str,
    id: &str,
    what: &str,
    within: Duration,
) -> Result<Answer, Error> {
    let started = Instant::now();
    loop {
        let rollout = api.get(name).await.map_err(|e| cluster_error(what, e))?;
        if let Some(answer) = status_of(&rollout).last_request.filter(|a| a.id == id) {
            return Ok(answer);
        }
        if started.elapsed() >= within {
            return Err(Error::unavailable(format!(
                "{what}: no serin controller answered the request (id {id}) in {}: is `serin serve --kubernetes` running and leading (kubectl -n serin-system get pods, kubectl -n serin-system get lease serin)? The request stays on the Rollout; a controller acts on it only within {} minutes of now",
                crate::time::human(within),
                crate::cluster::requests::REQUEST_TTL.as_secs() / 60
            )));
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_what_the_command_line_asked() {
        let w = serin_proxy::Weight::from_percent(12.5).unwrap();
        let r = request(Ask::Traffic(w), "alice@laptop");
        assert_eq!(
            (r.action, r.weight, r.full),
            (Action::Traffic, Some(12.5), false)
        );
        let r = request(Ask::Promote { full: true }, "alice@laptop");
        assert_eq!((r.action, r.full), (Action::Promote, true));
        // What the CLI writes, the controller reads.
        Request::parse(&r.to_annotation(), "shop/checkout").unwrap();
    }

    #[test]
    fn who_is_printable() {
        assert!(!who().chars().any(char::is_control));
    }
}
