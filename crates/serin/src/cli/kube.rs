//! `serin status|promote|rollback|pause|resume|traffic NAME --kubernetes
//! [-n NS]`: the operator's commands on a `Rollout` resource, from a laptop
//! with a kubeconfig (as kubectl finds it), with no port-forward to a serin
//! replica.
//!
//! `status` reads the Rollout's status; `-o json` prints, per Rollout, the
//! same status object as the API's `GET /api/v1/rollouts/NAME` (docs/api.md)
//! with a `kubernetes` member added (namespace, generations, conditions,
//! the last request and the last run). The others write a request
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
use crate::cluster::resource::{IDLE, Rollout, RolloutSpec, RolloutStatus};
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
/// Also the kubeconfig context's namespace (where a controller run
/// locally with this context keeps its Lease).
async fn rollouts(args: &KubeArgs) -> Result<(Api<DynamicObject>, String, String), Error> {
    let client = crate::providers::traffic::kubernetes::client_from_env().await?;
    let context = client.default_namespace().to_owned();
    let namespace = args.namespace.clone().unwrap_or_else(|| context.clone());
    let resource = ApiResource::erase::<Rollout>(&());
    Ok((
        Api::namespaced_with(client, &namespace, &resource),
        namespace,
        context,
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
        let (api, namespace, _) = rollouts(&args).await?;
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
        let docs: Vec<serde_json::Value> =
            listed.iter().map(|r| api_status(r, &namespace)).collect();
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
                    print_status(name, &namespace, r, &status_of(r), steps_of(r));
                }
            }
        }
        Ok(Exit::Success)
    })
}

/// How many steps the Rollout's plan has (its spec checked as the
/// controller checks it), if this version of serin reads it.
fn steps_of(rollout: &DynamicObject) -> Option<usize> {
    let spec: RolloutSpec = serde_json::from_value(rollout.data.get("spec")?.clone()).ok()?;
    let name = rollout.metadata.name.as_deref().unwrap_or_default();
    let mut typed = Rollout::new(name, spec);
    typed.metadata.namespace = rollout.metadata.namespace.clone();
    typed.check().ok().map(|r| r.steps.len())
}

/// Whether a controller has written the status (a phase, or conditions).
fn seen(s: &RolloutStatus) -> bool {
    s.phase.is_some() || !s.conditions.is_empty() || s.observed_generation.is_some()
}

/// The Rollout's status as the API's status object (`crate::wire`), with
/// a `kubernetes` member for what only the cluster has.
fn api_status(r: &DynamicObject, namespace: &str) -> serde_json::Value {
    let s = status_of(r);
    let steps = steps_of(r).unwrap_or(0);
    let state = s.state.clone().unwrap_or_default();
    let phase = s
        .phase
        .clone()
        .unwrap_or_else(|| if seen(&s) { IDLE } else { "NotSeen" }.to_string());
    let paused_by = (phase == "Paused").then(|| state.hold.clone()).flatten();
    let mut reason = s.message.clone().unwrap_or_default();
    if !s.not_in_force.is_empty() {
        reason = format!("{}; {reason}", s.not_in_force.join("; "));
    }
    let wire = crate::wire::RolloutStatus {
        name: r.metadata.name.clone().unwrap_or_default(),
        phase,
        step: match (s.step, steps) {
            (Some(n), 0) => n as usize,
            (Some(n), m) => (n as usize).min(m),
            (None, _) => 0,
        },
        steps,
        weight: s.weight.unwrap_or(0.0),
        weight_in_force: (seen(&s) && s.not_in_force.is_empty()).then_some(s.weight.unwrap_or(0.0)),
        not_in_force: s.not_in_force.clone(),
        reason,
        run: u32::try_from(s.run.unwrap_or(0)).unwrap_or(u32::MAX),
        outcome: state
            .outcome
            .as_deref()
            .and_then(|o| serde_json::from_str(o).ok()),
        paused_by,
        stable: crate::wire::VersionRef {
            version: s.stable_version.clone(),
        },
        canary: crate::wire::VersionRef {
            version: s.canary_version.clone(),
        },
        last_verdict: match (&s.last_verdict, &s.last_reason) {
            (Some(v), Some(why)) => Some(crate::wire::LastVerdict {
                verdict: v.clone(),
                reason: why.clone(),
                at: state
                    .last_verdict_ms
                    .map(|ms| crate::time::rfc3339(crate::time::Millis(ms)))
                    .unwrap_or_default(),
            }),
            _ => None,
        },
        metrics: None,
        proxy: None,
        // Not kept in a Rollout's status yet.
        split: None,
        would_roll_back: None,
    };
    let mut doc = serde_json::to_value(&wire).unwrap_or_default();
    doc["kubernetes"] = json!({
        "namespace": namespace,
        "generation": r.metadata.generation,
        "observedGeneration": s.observed_generation,
        "conditions": s.conditions,
        "lastRequest": s.last_request,
        "lastRun": s.last_run,
    });
    doc
}

fn print_status(
    name: &str,
    namespace: &str,
    rollout: &DynamicObject,
    s: &RolloutStatus,
    steps: Option<usize>,
) {
    let phase = match &s.phase {
        Some(p) => p.as_str(),
        None if seen(s) => IDLE,
        None => "not seen by a controller yet",
    };
    let mut head = format!("{name} ({namespace})  {phase}");
    if let Some(run) = s.run {
        head.push_str(&format!("  run {run}"));
    }
    if let Some(step) = s.step {
        match steps {
            Some(m) if m > 0 => {
                head.push_str(&format!("  step {}/{m}", (step as usize).min(m)));
            }
            _ => head.push_str(&format!("  step {step}")),
        }
    }
    if let Some(w) = s.weight {
        head.push_str(&format!("  canary weight {w} %"));
    }
    crate::outln!("{head}");
    if let Some(v) = &s.canary_version {
        crate::outln!("  canary {v}");
    }
    for n in &s.not_in_force {
        crate::outln!("  NOT IN FORCE: {n}");
    }
    if let Some(m) = &s.message {
        crate::outln!("  {m}");
    }
    if let Some(l) = &s.last_run {
        crate::outln!("  last run: {l}");
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
        let (api, namespace, context) = rollouts(&args).await?;
        let what = format!("Rollout {namespace}/{name}");
        let req = request(ask, &who());
        // Ctrl-C from the moment the request may be written says it stays.
        let interrupted = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| Error::unavailable(format!("listening for Ctrl-C: {e}")))?;
        write_request(&api, &name, &req, &what).await?;
        let answer = wait_for_answer(
            &api,
            &name,
            &req.id,
            &what,
            (args.wait, interrupted),
            &context,
        )
        .await?;
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
            // A refusal is said once, on stderr (the error below).
            OutputFormat::Text if answer.accepted => {
                crate::outln!("{what}: {} done: {}", req.action.as_str(), answer.message)
            }
            OutputFormat::Text => {}
        }
        if answer.accepted {
            Ok(Exit::Success)
        } else {
            Err(Error::conflict(format!(
                "{what}: {} refused: {}",
                req.action.as_str(),
                answer.message
            ))
            .into())
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
        if !seen(&status) {
            return Err(Error::unavailable(not_seen(what, api.namespace())));
        }
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

/// Why a request on a Rollout whose status no controller ever wrote is
/// not written: nothing would answer it.
fn not_seen(what: &str, namespace: Option<&str>) -> String {
    let ns = namespace.unwrap_or("its namespace");
    format!(
        "{what}: no serin controller has seen this Rollout (its status is empty), so nothing would act on the request; nothing was written. A controller acts only on the Rollouts of the namespaces it watches: is one running (kubectl -n serin-system get pods,lease serin) and watching namespace {ns} (started without --namespace, or with --namespace {ns})?"
    )
}

/// What a request no controller answered says: where to look for one, in
/// the cluster (serin-system) or run locally (the Lease in its kubeconfig
/// context's namespace, `context` for the context used here).
fn no_answer(what: &str, id: &str, within: Duration, context: &str) -> String {
    format!(
        "{what}: no serin controller answered the request (id {id}) in {}: is `serin serve --kubernetes` running and leading? Installed in the cluster: kubectl -n serin-system get pods,lease serin; run on your machine: its Lease `serin` is in its kubeconfig context's namespace (with this context: kubectl -n {context} get lease serin). The request stays on the Rollout; a controller acts on it only within {} minutes of now",
        crate::time::human(within),
        crate::cluster::requests::REQUEST_TTL.as_secs() / 60
    )
}

async fn wait_for_answer(
    api: &Api<DynamicObject>,
    name: &str,
    id: &str,
    what: &str,
    (within, mut interrupted): (Duration, tokio::signal::unix::Signal),
    context: &str,
) -> Result<Answer, Error> {
    let started = Instant::now();
    loop {
        let rollout = api.get(name).await.map_err(|e| cluster_error(what, e))?;
        // The provisional answer is followed by the real one within
        // moments, unless its controller stopped: then it is the answer.
        if let Some(answer) = status_of(&rollout).last_request.filter(|a| a.id == id)
            && (answer.message != crate::cluster::requests::ACTED_UNANSWERED
                || started.elapsed() >= within)
        {
            return Ok(answer);
        }
        if started.elapsed() >= within {
            return Err(Error::unavailable(no_answer(what, id, within, context)));
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            _ = interrupted.recv() => return Err(Error::unavailable(interrupted_text(what, id))),
        }
    }
}

/// What Ctrl-C while waiting for an answer says: the request stays.
fn interrupted_text(what: &str, id: &str) -> String {
    format!(
        "{what}: interrupted while waiting; the request (id {id}) is still pending: the controller will act on it (within {} minutes of when it was asked), and status.lastRequest will say how",
        crate::cluster::requests::REQUEST_TTL.as_secs() / 60
    )
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
    fn no_answer_names_both_places_a_controller_keeps_its_lease() {
        let said = no_answer(
            "Rollout shop/checkout",
            "r1",
            Duration::from_secs(30),
            "dev",
        );
        assert!(
            said.contains("kubectl -n serin-system get pods,lease serin"),
            "{said}"
        );
        assert!(said.contains("kubectl -n dev get lease serin"), "{said}");
    }

    #[test]
    fn who_is_printable() {
        assert!(!who().chars().any(char::is_control));
    }
}
