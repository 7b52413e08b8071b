//! Commands that change a rollout through the daemon: `init`, `deploy`,
//! `traffic`, `promote`, `rollback`, `pause`, `resume`, `cleanup`.

use std::path::PathBuf;

use http::Method;
use serde_json::json;

use crate::cli::block_on;
use crate::cli::client::{ApiArgs, ApiClient, rollout_path};
use crate::cli::inspect::print_status;
use crate::cli::kube::{Ask, KubeArgs};
use crate::cli::output::OutputFormat;
use crate::exit::{Exit, invalid};
use crate::wire::{DeployRequest, PromoteRequest, RolloutStatus, WeightRequest};

/// `serin init FILE`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The rollout file (YAML or JSON).
    pub file: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `serin deploy NAME VERSION [--upstream URL]`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The rollout.
    pub name: String,
    /// The canary version to roll out.
    #[arg(id = "canary_version", value_name = "VERSION")]
    pub version: String,
    /// The canary's upstream, if not the rollout file's.
    #[arg(long)]
    pub upstream: Option<String>,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `serin traffic NAME PCT`.
#[derive(Debug, clap::Args)]
pub struct TrafficArgs {
    /// The rollout.
    pub name: String,
    /// Canary weight in percent (0–100, two decimals); holds the automation.
    #[arg(value_name = "PCT")]
    pub weight: String,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `serin promote NAME [--full]`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// The rollout.
    pub name: String,
    /// Skip every remaining step: the canary becomes stable now.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `serin rollback|pause|resume|cleanup NAME`.
#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// The rollout.
    pub name: String,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `serin cleanup NAME [--purge]`.
#[derive(Debug, clap::Args)]
pub struct CleanupArgs {
    /// The rollout.
    pub name: String,
    /// Also delete its kept runs (history and reports); without it they
    /// stay readable after the rollout is unregistered.
    #[arg(long)]
    pub purge: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// A command without a body of its own.
#[derive(Debug, Clone, Copy)]
pub enum Simple {
    /// All traffic to stable now.
    Rollback,
    /// Hold the automation.
    Pause,
    /// Continue the automation.
    Resume,
}

fn done(status: &RolloutStatus, output: OutputFormat, what: &str) -> anyhow::Result<Exit> {
    match output {
        OutputFormat::Json => crate::outln!("{}", serde_json::to_string_pretty(status)?),
        OutputFormat::Text => {
            crate::outln!("{}", answer_line(what, &status.not_in_force));
            print_status(status);
        }
    }
    Ok(Exit::Success)
}

/// The end of a sentence of `notInForce` that names a change merely on
/// its way to the data plane (see [`crate::wire::not_in_force`]).
const BEING_APPLIED: &str = "(being applied)";

/// The answer's first line: `what`, and what of it is not in force. A
/// change the data plane refuses is not claimed done ("decided, NOT in
/// force yet"); one merely on its way there (every promotion passes
/// through this for a moment) is "being applied", without the alarm; a
/// decision in force that the state database has not taken is said as such.
fn answer_line(what: &str, not_in_force: &[String]) -> String {
    let (unwritten, rest): (Vec<&String>, Vec<&String>) = not_in_force
        .iter()
        .partition(|s| s.starts_with("state not written yet"));
    let (applying, refused): (Vec<&String>, Vec<&String>) =
        rest.into_iter().partition(|s| s.ends_with(BEING_APPLIED));
    let join = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ");
    let mut notes = Vec::new();
    if !refused.is_empty() {
        notes.push(format!("decided, NOT in force yet: {}", join(&refused)));
    } else if !applying.is_empty() {
        let what: Vec<String> = applying
            .iter()
            .map(|s| s.trim_end_matches(BEING_APPLIED).trim_end().to_string())
            .map(|s| s.replace(" not applied yet", ""))
            .collect();
        notes.push(format!("being applied: {}", what.join("; ")));
    }
    if !unwritten.is_empty() {
        notes.push(join(&unwritten));
    }
    if notes.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({})", notes.join("; "))
    }
}

/// How long an answer waits for a change on its way to the data plane.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// `status` once what it decided is in force, asked again for a moment
/// (up to [`SETTLE`]) while a change is merely on its way to the data
/// plane; at once when everything is in force, or something is refused
/// or not written (waiting would not change that).
async fn settled(client: &ApiClient, name: &str, mut status: RolloutStatus) -> RolloutStatus {
    let Ok(path) = rollout_path(name, "") else {
        return status;
    };
    let deadline = tokio::time::Instant::now() + SETTLE;
    let applying = |s: &RolloutStatus| {
        !s.not_in_force.is_empty() && s.not_in_force.iter().all(|n| n.ends_with(BEING_APPLIED))
    };
    while applying(&status) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match client.get::<RolloutStatus>(&path).await {
            Ok(now) => status = now,
            Err(_) => break,
        }
    }
    status
}

pub fn init(args: InitArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    let text = crate::spec::read_text(&args.file)
        .map(String::into_bytes)
        .map_err(|e| invalid(format!("{}: {e}", args.file.display())))?;
    let content_type = match args.file.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/yaml",
    };
    block_on(async move {
        let client = ApiClient::new(&args.api)?;
        let status: RolloutStatus = client
            .send_raw(Method::POST, "/api/v1/rollouts", text, content_type)
            .await
            .map_err(|e| with_file(e, &args.file))?;
        // A rollout in progress was given the file it runs: nothing changed.
        let said = if status.canary.version.is_some()
            && matches!(
                status.phase.as_str(),
                "Initializing" | "Progressing" | "Paused"
            ) {
            format!(
                "{} unchanged: its run in progress runs this file ({}, canary weight {} %)",
                status.name, status.phase, status.weight
            )
        } else {
            format!("registered {}: all traffic on stable", status.name)
        };
        done(&status, output, &said)
    })
}

/// The daemon names the body "request body"; the user knows it as their file.
fn with_file(e: anyhow::Error, file: &std::path::Path) -> anyhow::Error {
    if let Some(inv) = e.downcast_ref::<crate::error::Error>()
        && inv.kind() == crate::error::Kind::Invalid
    {
        return invalid(
            inv.message()
                .replace("request body", &file.display().to_string()),
        );
    }
    e
}

pub fn deploy(args: DeployArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    block_on(async move {
        let client = ApiClient::new(&args.api)?;
        let body = DeployRequest {
            version: args.version.clone(),
            upstream: args.upstream.clone(),
        };
        let status: RolloutStatus = client
            .send(Method::POST, &rollout_path(&args.name, "/deploy")?, &body)
            .await?;
        done(
            &status,
            output,
            &format!("deploying {} as the canary of {}", args.version, args.name),
        )
    })
}

pub fn traffic(args: TrafficArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    let weight: serin_proxy::Weight = args
        .weight
        .parse()
        .map_err(|e| invalid(format!("PCT: {e}")))?;
    if args.kube.kubernetes {
        return crate::cli::kube::act(&args.name, &args.kube, Ask::Traffic(weight), output);
    }
    block_on(async move {
        let client = ApiClient::new(&args.api)?;
        let body = WeightRequest {
            weight: weight.percent(),
        };
        let status: RolloutStatus = client
            .send(Method::PUT, &rollout_path(&args.name, "/weight")?, &body)
            .await?;
        let status = settled(&client, &args.name, status).await;
        done(
            &status,
            output,
            &format!(
                "canary weight of {} set to {weight} %; automation held: no further step until \
                 `serin resume` or `serin promote`; analysis continues, and a failing verdict \
                 still rolls back",
                args.name
            ),
        )
    })
}

pub fn promote(args: PromoteArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    if args.kube.kubernetes {
        let ask = Ask::Promote { full: args.full };
        return crate::cli::kube::act(&args.name, &args.kube, ask, output);
    }
    block_on(async move {
        let client = ApiClient::new(&args.api)?;
        let body = PromoteRequest { full: args.full };
        let status: RolloutStatus = client
            .send(Method::POST, &rollout_path(&args.name, "/promote")?, &body)
            .await?;
        let status = settled(&client, &args.name, status).await;
        // A plain promote is no evidence: after the last pause the rollout
        // promotes on a passing verdict, which the answer says.
        let what = if args.full {
            "promoted fully"
        } else if status.phase == "Succeeded" {
            "pause ended: promoted on its passing verdict"
        } else if status.phase != "RolledBack" && status.reason.starts_with("pause complete") {
            "pause ended: it promotes on its first passing verdict (`serin status` says what it waits for; `--full` promotes without one)"
        } else {
            "pause ended"
        };
        done(&status, output, &format!("{}: {what}", args.name))
    })
}

pub fn simple(args: NameArgs, which: Simple, output: OutputFormat) -> anyhow::Result<Exit> {
    let (verb, what) = match which {
        Simple::Rollback => ("rollback", "rolled back: all traffic on stable"),
        Simple::Pause => ("pause", "paused"),
        Simple::Resume => ("resume", "resumed"),
    };
    if args.kube.kubernetes {
        let ask = match which {
            Simple::Rollback => Ask::Rollback,
            Simple::Pause => Ask::Pause,
            Simple::Resume => Ask::Resume,
        };
        return crate::cli::kube::act(&args.name, &args.kube, ask, output);
    }
    block_on(async move {
        let client = ApiClient::new(&args.api)?;
        let status: RolloutStatus = client
            .send(
                Method::POST,
                &rollout_path(&args.name, &format!("/{verb}"))?,
                &json!({}),
            )
            .await?;
        let status = settled(&client, &args.name, status).await;
        done(&status, output, &format!("{}: {what}", args.name))
    })
}

pub fn cleanup(args: CleanupArgs, output: OutputFormat) -> anyhow::Result<Exit> {
    block_on(async move {
        let client = ApiClient::new(&args.api)?;
        let path = rollout_path(&args.name, "")?;
        // The built-in proxy's address, which closes with it.
        let proxy = client
            .get::<RolloutStatus>(&path)
            .await
            .ok()
            .and_then(|s| s.proxy);
        let purged = if args.purge {
            let answer: serde_json::Value =
                client.delete_json(&format!("{path}?purge=true")).await?;
            Some(answer["purgedRuns"].as_u64().unwrap_or(0))
        } else {
            client.delete(&path).await?;
            None
        };
        let closing = proxy.map(|addr| crate::cli::closing(&addr, crate::cli::AFTER_CLEANUP));
        match output {
            OutputFormat::Json => {
                crate::outln!(
                    "{}",
                    json!({"name": args.name, "removed": true, "purgedRuns": purged.unwrap_or(0)})
                );
                if let Some(line) = closing {
                    crate::errln!("{line}");
                }
            }
            OutputFormat::Text => {
                match purged {
                    Some(runs) => crate::outln!(
                        "{}: canary weight 0, proxy stopped, rollout removed; purged: its {runs} run(s) with their history and reports are deleted",
                        args.name
                    ),
                    None => crate::outln!(
                        "{}: canary weight 0, proxy stopped, rollout removed; its runs are kept (`serin history {}`, `serin report {}`; `serin cleanup {} --purge` deletes them)",
                        args.name,
                        args.name,
                        args.name,
                        args.name
                    ),
                }
                if let Some(line) = closing {
                    crate::outln!("{line}");
                }
            }
        }
        Ok(Exit::Success)
    })
}

#[cfg(test)]
mod tests {
    use super::answer_line;

    fn said(not_in_force: &[&str]) -> String {
        let v: Vec<String> = not_in_force.iter().map(|s| s.to_string()).collect();
        answer_line("checkout: promoted fully", &v)
    }

    #[test]
    fn a_change_on_its_way_is_being_applied_and_only_a_refusal_is_not_in_force() {
        assert_eq!(said(&[]), "checkout: promoted fully");
        // Fails before this change: "(decided, NOT in force yet: promotion
        // not applied yet (being applied))".
        let applying = said(&["promotion not applied yet (being applied)"]);
        assert_eq!(
            applying,
            "checkout: promoted fully (being applied: promotion)"
        );
        assert!(!applying.contains("NOT"), "{applying}");
        let refused = said(&["promotion not applied yet: nginx -t: failed"]);
        assert!(
            refused.contains("NOT in force yet: promotion not applied yet: nginx -t: failed"),
            "{refused}"
        );
        // In force, but not written: no "NOT in force" either.
        let unwritten = said(&["state not written yet: database is locked"]);
        assert_eq!(
            unwritten,
            "checkout: promoted fully (state not written yet: database is locked)"
        );
        let both = said(&[
            "rollback not applied yet (being applied)",
            "state not written yet: database is locked",
        ]);
        assert!(!both.contains("NOT"), "{both}");
        assert!(both.contains("being applied: rollback"), "{both}");
    }
}
