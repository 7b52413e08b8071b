//! Operators' requests to the Kubernetes controller: `serin promote|
//! rollback|pause|resume|traffic NAME --kubernetes` from a laptop.
//!
//! # Where a request is written, and why there
//! Not in `spec`: git owns it, and a GitOps re-sync would undo (or fight
//! over) a field the CLI wrote. Not in `status`: the controller owns it and
//! fences its writes by resourceVersion. A request is the annotation
//! [`REQUEST_ANNOTATION`] on the Rollout, a small JSON document with an id.
//! Argo CD and Flux apply with server-side apply and leave annotations
//! they never applied alone, so a re-sync neither removes a request nor
//! reverts what it did: the controller's answer and the decision it took
//! live in status and in the run's history, which no GitOps tool writes.
//!
//! # Protocol
//! 1. The CLI writes the annotation: `{"id", "action", "by", "atMillis"}`
//!    (and `full` / `weight` where the action takes them). Only one
//!    request is pending at a time: a request whose id status has not
//!    answered yet blocks others ([`Kind::Conflict`]), except a rollback,
//!    which always replaces it (the safe direction is never queued).
//! 2. The controller (the leader) sees the Rollout change, finds a request
//!    that [`pending`] says is unanswered, turns it into the machine's
//!    input, and writes [`Answer`] into `status.lastRequest` together with
//!    the decision (the status write is the record).
//! 3. The CLI waits for `status.lastRequest.id` to be its id and prints
//!    the answer; no answer within its wait means no controller acted
//!    (none running, or not leading), said so.
//!
//! A request older than [`REQUEST_TTL`] when a controller first sees it is
//! answered "expired" and not acted on: an operator who asked for a promote
//! ten minutes ago while no controller ran did not ask for one now.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serin_proxy::Weight;

use crate::error::{Error, Kind};
use crate::time::Millis;

/// The Rollout annotation that carries an operator's request.
pub const REQUEST_ANNOTATION: &str = "serin.dev/request";

/// How old a request may be when a controller first sees it.
pub const REQUEST_TTL: Duration = Duration::from_secs(300);

/// The field manager of the CLI's writes (the request annotation only).
pub const CLI_FIELD_MANAGER: &str = "serin-cli";

/// What an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// End the current pause (`full`: the canary becomes stable now).
    Promote,
    /// All traffic to stable now.
    Rollback,
    /// Hold the automation.
    Pause,
    /// Continue the automation.
    Resume,
    /// Set the canary weight by hand and hold the automation.
    Traffic,
}

impl Action {
    /// As the command line names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Traffic => "traffic",
        }
    }
}

/// An operator's request, as the annotation holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Request {
    /// Unique per request (16 hex digits): the answer names it.
    pub id: String,
    /// What is asked.
    pub action: Action,
    /// `promote --full`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
    /// `traffic`'s weight in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Who asked, as the CLI names its user (`alice@laptop`): attribution
    /// only, never authority (the cluster's RBAC decides who may write the
    /// annotation).
    pub by: String,
    /// When it was asked (milliseconds since the epoch, the CLI's clock).
    pub at_millis: u64,
}

/// The provisional answer written with the decision a request makes
/// (before the real answer): a controller stopped between the two is not
/// followed by one acting on the request again, and a CLI waiting for the
/// answer keeps waiting while it reads this.
pub const ACTED_UNANSWERED: &str = "acted on by a controller that stopped before it answered (a failover): status.decisions has what it decided";

/// The controller's answer, in `status.lastRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// The request's id.
    pub id: String,
    /// The request's action.
    pub action: String,
    /// Who asked.
    pub by: String,
    /// Whether it was done.
    pub accepted: bool,
    /// What was done, or why not.
    pub message: String,
    /// When it was answered (RFC 3339).
    pub at: String,
}

impl Request {
    /// A new request with a fresh id, asked `now`.
    pub fn new(action: Action, by: &str, now: Millis) -> Request {
        Request {
            id: format!("{:016x}", rand::random::<u64>()),
            action,
            full: false,
            weight: None,
            by: by.to_owned(),
            at_millis: now.0,
        }
    }

    /// Reads the annotation's value, or says what is wrong with it (naming
    /// the annotation and the Rollout).
    pub fn parse(value: &str, rollout: &str) -> Result<Request, Error> {
        let request: Request = serde_json::from_str(value).map_err(|e| {
            Error::invalid(format!(
                "{rollout}: annotation {REQUEST_ANNOTATION}: {e} \
                 (expected {{\"id\", \"action\", \"by\", \"atMillis\"}} as `serin ACTION NAME --kubernetes` writes it)"
            ))
        })?;
        let at = |what: &str| {
            Error::invalid(format!(
                "{rollout}: annotation {REQUEST_ANNOTATION}: {what}"
            ))
        };
        if request.id.is_empty()
            || request.id.len() > 64
            || !request.id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(at("id: expected 1 to 64 letters or digits"));
        }
        if request.by.len() > 253 || request.by.chars().any(char::is_control) {
            return Err(at(
                "by: expected a name of at most 253 printable characters",
            ));
        }
        match (request.action, request.weight) {
            (Action::Traffic, Some(w)) => {
                Weight::from_percent(w)
                    .map_err(|e| at(&format!("weight: {e} (expected 0 to 100)")))?;
            }
            (Action::Traffic, None) => return Err(at("weight: required by traffic")),
            (_, Some(_)) => return Err(at("weight: only traffic takes a weight")),
            (_, None) => {}
        }
        if request.full && request.action != Action::Promote {
            return Err(at("full: only promote takes full"));
        }
        Ok(request)
    }

    /// The request as the annotation's value.
    pub fn to_annotation(&self) -> String {
        // A struct of strings, numbers and booleans always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether it is too old to act on when first seen `now`.
    pub fn expired(&self, now: Millis) -> bool {
        now.0.saturating_sub(self.at_millis) > REQUEST_TTL.as_millis() as u64
    }

    /// The controller's answer to it.
    pub fn answer(&self, accepted: bool, message: impl Into<String>, at: String) -> Answer {
        Answer {
            id: self.id.clone(),
            action: self.action.as_str().to_owned(),
            by: self.by.clone(),
            accepted,
            message: message.into(),
            at,
        }
    }
}

/// The request the annotation holds that `last` (status.lastRequest) has
/// not answered, if any. A malformed annotation is an error to answer (with
/// the id it has, if any can be read) rather than a request to act on.
pub fn pending(
    annotation: Option<&str>,
    last: Option<&Answer>,
    rollout: &str,
) -> Option<Result<Request, (Option<String>, Error)>> {
    let value = annotation?;
    let answered = |id: &str| last.is_some_and(|a| a.id == id);
    match Request::parse(value, rollout) {
        Ok(request) if answered(&request.id) => None,
        Ok(request) => Some(Ok(request)),
        Err(e) => {
            let id = serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
            // One without a readable id is answered under an id made from
            // its text: once, and each different value again.
            let id = id.unwrap_or_else(|| unreadable_id(value));
            if answered(&id) {
                None
            } else {
                Some(Err((Some(id), e)))
            }
        }
    }
}

/// The id an unreadable request is answered under: `unreadable-` and a
/// hash (FNV-1a) of its text, so each distinct value is answered once.
fn unreadable_id(value: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("unreadable-{h:016x}")
}

/// Whether the CLI may write `new` now, given the annotation's current
/// value and status.lastRequest: yes when nothing is pending, or when `new`
/// is a rollback; else a conflict naming what is pending.
pub fn may_replace(
    current: Option<&str>,
    last: Option<&Answer>,
    new: &Request,
    rollout: &str,
) -> Result<(), Error> {
    if new.action == Action::Rollback {
        return Ok(());
    }
    match pending(current, last, rollout) {
        Some(Ok(waiting)) => Err(Error::new(
            Kind::Conflict,
            format!(
                "{rollout}: a {} request by {} (id {}) is not answered yet; \
                 wait for it (is `serin serve --kubernetes` running and leading?) \
                 or roll back, which replaces it",
                waiting.action.as_str(),
                waiting.by,
                waiting.id
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_distinct_unreadable_request_is_answered_once() {
        let first = pending(Some("garbage"), None, "Rollout shop/checkout");
        let Some(Err((Some(id), _))) = first else {
            panic!("{first:?}")
        };
        let answer = Answer {
            id: id.clone(),
            action: "unknown".into(),
            by: "unknown".into(),
            accepted: false,
            message: String::new(),
            at: String::new(),
        };
        assert!(pending(Some("garbage"), Some(&answer), "r").is_none());
        let second = pending(Some("more garbage"), Some(&answer), "r");
        assert!(
            matches!(&second, Some(Err((Some(other), _))) if *other != id),
            "a second garbage value is answered too: {second:?}"
        );
    }

    fn request(action: Action) -> Request {
        Request::new(action, "alice@laptop", Millis(1_000_000))
    }

    #[test]
    fn a_request_reads_back_as_written() {
        let mut r = request(Action::Traffic);
        r.weight = Some(12.5);
        let back = Request::parse(&r.to_annotation(), "shop/checkout").unwrap();
        assert_eq!(back, r);
        assert_eq!(r.id.len(), 16);
    }

    #[test]
    fn malformed_requests_name_the_annotation_and_the_field() {
        let cases = [
            ("not json", "annotation serin.dev/request"),
            (
                r#"{"id":"a","action":"explode","by":"x","atMillis":1}"#,
                "unknown variant",
            ),
            (
                r#"{"id":"a b","action":"pause","by":"x","atMillis":1}"#,
                "id: expected",
            ),
            (
                r#"{"id":"a","action":"traffic","by":"x","atMillis":1}"#,
                "weight: required",
            ),
            (
                r#"{"id":"a","action":"traffic","weight":140,"by":"x","atMillis":1}"#,
                "expected 0 to 100",
            ),
            (
                r#"{"id":"a","action":"pause","weight":5,"by":"x","atMillis":1}"#,
                "only traffic",
            ),
            (
                r#"{"id":"a","action":"rollback","full":true,"by":"x","atMillis":1}"#,
                "only promote",
            ),
            (
                r#"{"id":"a","action":"pause","by":"x","atMillis":1,"sudo":true}"#,
                "unknown field",
            ),
        ];
        for (value, expected) in cases {
            let e = Request::parse(value, "shop/checkout").unwrap_err();
            assert_eq!(e.kind(), Kind::Invalid, "{value}");
            let text = e.to_string();
            assert!(text.contains("shop/checkout"), "{text}");
            assert!(text.contains(expected), "{value}: {text}");
        }
    }

    #[test]
    fn a_request_is_pending_until_its_id_is_answered() {
        let r = request(Action::Pause);
        let value = r.to_annotation();
        assert_eq!(pending(None, None, "c"), None);
        assert_eq!(pending(Some(&value), None, "c"), Some(Ok(r.clone())));
        let answer = r.answer(true, "paused", "2026-12-06T15:00:00.000Z".into());
        assert_eq!(pending(Some(&value), Some(&answer), "c"), None);
        let other = request(Action::Resume).answer(true, "resumed", String::new());
        assert!(pending(Some(&value), Some(&other), "c").is_some());
    }

    #[test]
    fn a_malformed_request_is_answered_once_by_its_id() {
        let value = r#"{"id":"abc","action":"explode","by":"x","atMillis":1}"#;
        let Some(Err((id, _))) = pending(Some(value), None, "c") else {
            panic!("a malformed request is pending as an error");
        };
        assert_eq!(id.as_deref(), Some("abc"));
        let answered = Answer {
            id: "abc".into(),
            action: "explode".into(),
            by: "x".into(),
            accepted: false,
            message: "refused".into(),
            at: String::new(),
        };
        assert_eq!(pending(Some(value), Some(&answered), "c"), None);
    }

    #[test]
    fn only_a_rollback_replaces_an_unanswered_request() {
        let waiting = request(Action::Promote).to_annotation();
        let e = may_replace(Some(&waiting), None, &request(Action::Pause), "c").unwrap_err();
        assert_eq!(e.kind(), Kind::Conflict);
        assert!(
            e.to_string().contains("promote request by alice@laptop"),
            "{e}"
        );
        may_replace(Some(&waiting), None, &request(Action::Rollback), "c").unwrap();
        may_replace(None, None, &request(Action::Pause), "c").unwrap();
    }

    #[test]
    fn old_requests_expire() {
        let r = request(Action::Promote);
        assert!(!r.expired(Millis(r.at_millis + 1_000)));
        assert!(r.expired(Millis(r.at_millis + 301_000)));
        // A clock behind the CLI's is not "expired".
        assert!(!r.expired(Millis(r.at_millis - 5_000)));
    }
}
