//! Notifications: webhook POSTs on every phase change, every failed
//! verdict and every "would have rolled back" of an advisory rollout or
//! check (`notifications` in the rollout file), as JSON or in Slack's
//! message format. [`event_of`] says which decisions become messages.
//!
//! The controller never waits for a webhook: [`Notifier::send`] puts the
//! message on each target's own queue and returns. Each target has its own
//! background task, so a receiver that hangs or fails delays only its own
//! messages, never another target's. The task delivers its messages in
//! order, each attempt bounded by [`ATTEMPT_TIMEOUT`], retrying with
//! exponential backoff (1 s, 2 s, 4 s, ... up to [`ATTEMPTS`] tries). A
//! message that still fails is logged and dropped — notifications inform,
//! they never decide.

use std::time::Duration;

use serde::Serialize;

use crate::rollout::{Decision, DecisionKind, Outcome, RecordedVerdict};
use tokio::sync::mpsc;

/// The webhook event a decision sends, if any: `verdict-failed` for a
/// failing verdict (advisory or not), `would-roll-back` for a "would have
/// rolled back" (advisory mode or an advisory check: one per episode, as
/// the machine records it). Phase changes (`phase-changed`) are sent for
/// the machine's own notify action, not for a decision.
pub fn event_of(decision: &Decision) -> Option<&'static str> {
    match decision.kind {
        DecisionKind::WouldRollBack => Some("would-roll-back"),
        _ if decision.verdict == Some(RecordedVerdict::Fail) => Some("verdict-failed"),
        _ => None,
    }
}

/// Tries per message and target.
pub const ATTEMPTS: u32 = 5;
/// How long one attempt may take, connecting included: a receiver that
/// accepts and never answers costs its own queue this much per try.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages waiting for one target beyond this are dropped (with a warning)
/// rather than letting a dead webhook grow memory without bound.
const QUEUE: usize = 256;

/// The body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// serin's own JSON ([`Message`]).
    Json,
    /// Slack's incoming-webhook format (`{"text": ...}`).
    Slack,
}

/// Where to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The webhook URL (http or https).
    pub url: String,
    /// Its format.
    pub format: Format,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// `phase-changed`, `verdict-failed` or `would-roll-back`.
    pub event: String,
    /// The rollout.
    pub rollout: String,
    /// Its phase after the event.
    pub phase: String,
    /// The stable version.
    pub stable_version: String,
    /// The canary version.
    pub canary_version: Option<String>,
    /// The canary weight in percent.
    pub weight: f64,
    /// Why, with the numbers.
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
    /// The report, when the daemon's address is known.
    pub report: Option<String>,
    /// The run (1, 2, 3 ... per rollout name) the event belongs to.
    pub run: u32,
    /// How the run ended, once it has (`{"kind": "analysis", "check": …}`,
    /// `{"kind": "operator", "by": "cli"}`, …; see [`Outcome`]).
    pub outcome: Option<Outcome>,
}

impl Message {
    /// The body for `format`.
    pub fn body(&self, format: Format) -> serde_json::Value {
        match format {
            Format::Json => serde_json::to_value(self).unwrap_or_default(),
            Format::Slack => {
                let icon = match (self.event.as_str(), self.phase.as_str()) {
                    ("would-roll-back", _) => ":warning:",
                    (_, "RolledBack") | ("verdict-failed", _) => ":rotating_light:",
                    (_, "Succeeded") => ":white_check_mark:",
                    _ => ":arrows_counterclockwise:",
                };
                let canary = self.canary_version.as_deref().unwrap_or("none");
                let mut text = format!(
                    "{icon} *{}* {} (run {}) — stable {} · canary {} · weight {} %\n{}",
                    self.rollout,
                    self.phase,
                    self.run,
                    self.stable_version,
                    canary,
                    self.weight,
                    self.reason
                );
                if let Some(outcome) = &self.outcome {
                    text.push_str(&format!("\noutcome: {outcome}"));
                }
                if let Some(report) = &self.report {
                    text.push_str(&format!("\n<{report}|report>"));
                }
                serde_json::json!({ "text": text })
            }
        }
    }
}

/// Sends messages to the rollout's webhooks in the background.
#[derive(Clone)]
pub struct Notifier {
    /// One queue per target, with the target's URL for warnings.
    queues: Vec<(String, mpsc::Sender<Message>)>,
    delivered: Option<Delivered>,
}

/// Resolves when a notifier's queues have been delivered: every sender is
/// gone (the rollout's driver ended) and every target's task has worked
/// through what was queued for it, retries included.
#[derive(Clone)]
pub struct Delivered(tokio::sync::watch::Receiver<bool>);

impl Delivered {
    /// Waits until delivered, at most `limit` (a webhook that keeps failing
    /// must not hold a process's exit for long).
    pub async fn wait(mut self, limit: Duration) {
        // An error means the task is gone: nothing more will be delivered.
        let _ = tokio::time::timeout(limit, self.0.wait_for(|done| *done)).await;
    }
}

impl Notifier {
    /// No targets: every message is dropped at once.
    pub fn none() -> Notifier {
        Notifier {
            queues: Vec::new(),
            delivered: None,
        }
    }

    /// What to wait on before exiting so the last messages are not lost
    /// (`None` without targets).
    pub fn delivered(&self) -> Option<Delivered> {
        self.delivered.clone()
    }

    /// Starts one delivery task per target (nothing to start without any).
    pub fn start(targets: Vec<Target>) -> Notifier {
        if targets.is_empty() {
            return Notifier::none();
        }
        let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("webhooks disabled: cannot build an HTTP client: {e}");
                return Notifier::none();
            }
        };
        let (done, delivered) = tokio::sync::watch::channel(false);
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for target in targets {
            let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
            queues.push((target.url.clone(), tx));
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    deliver(&client, &target, &message).await;
                }
            }));
        }
        tokio::spawn(async move {
            // Set when every target's task has ended, or this task is dropped.
            let _done = DoneOnDrop(done);
            for task in tasks {
                let _ = task.await;
            }
        });
        Notifier {
            queues,
            delivered: Some(Delivered(delivered)),
        }
    }

    /// Queues a message for every target; never waits.
    pub fn send(&self, message: Message) {
        for (url, tx) in &self.queues {
            if let Err(e) = tx.try_send(message.clone()) {
                tracing::warn!(url = %url, "notification dropped (webhook queue full or closed): {e}");
            }
        }
    }
}

/// Marks the delivery done when the task waiting for every target's ends.
struct DoneOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

async fn deliver(client: &reqwest::Client, target: &Target, message: &Message) {
    let body = message.body(target.format);
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let outcome = client.post(&target.url).json(&body).send().await;
        let why = match outcome {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::warn!(url = %target.url, rollout = %message.rollout, "webhook failed {ATTEMPTS} times, giving up: {why}");
            return;
        }
        tracing::debug!(url = %target.url, attempt, "webhook failed, retrying in {backoff:?}: {why}");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Installs ring as rustls' crypto provider, once per process: reqwest is
/// built without one (so the build has no aws-lc C library), and panics
/// without a provider.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn message() -> Message {
        Message {
            event: "phase-changed".into(),
            rollout: "checkout".into(),
            phase: "RolledBack".into(),
            stable_version: "v1".into(),
            canary_version: Some("v2".into()),
            weight: 0.0,
            reason: "canary error rate 30 %".into(),
            at: "2026-11-25T00:00:00.000Z".into(),
            report: Some(
                "http://127.0.0.1:9900/api/v1/rollouts/checkout/report?format=html".into(),
            ),
            run: 2,
            outcome: Some(Outcome::Analysis {
                check: "canary error rate 30 %".into(),
            }),
        }
    }

    #[test]
    fn a_message_carries_its_run_and_typed_outcome() {
        let json = message().body(Format::Json);
        assert_eq!(json["run"], 2);
        assert_eq!(json["outcome"]["kind"], "analysis");
        assert_eq!(json["outcome"]["check"], "canary error rate 30 %");
        let slack = message().body(Format::Slack)["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            slack.contains("(run 2)") && slack.contains("rolled back by analysis"),
            "{slack}"
        );
    }

    /// A webhook receiver on 127.0.0.1 taking JSON at `/hook`: what it got,
    /// and its address. It answers the n-th delivery (from 1) `status(n)`.
    async fn receiver(
        status: fn(usize) -> axum::http::StatusCode,
    ) -> (Arc<Mutex<Vec<serde_json::Value>>>, std::net::SocketAddr) {
        let hits = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let seen = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    let mut s = seen.lock().unwrap();
                    s.push(v);
                    status(s.len())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (hits, addr)
    }

    #[test]
    fn a_would_roll_back_decision_is_its_own_event_and_a_failed_verdict_stays_one() {
        let decision = |kind, verdict| Decision {
            at: crate::time::Millis(0),
            kind,
            step: 1,
            weight: serin_proxy::Weight::from_hundredths(2000).unwrap(),
            phase: crate::rollout::Phase::Progressing,
            verdict,
            reason: "would have rolled back: canary error rate 30 %".into(),
        };
        assert_eq!(
            event_of(&decision(DecisionKind::WouldRollBack, None)),
            Some("would-roll-back")
        );
        assert_eq!(
            event_of(&decision(
                DecisionKind::Verdict,
                Some(RecordedVerdict::Fail)
            )),
            Some("verdict-failed")
        );
        assert_eq!(
            event_of(&decision(
                DecisionKind::Verdict,
                Some(RecordedVerdict::Pass)
            )),
            None
        );
        assert_eq!(event_of(&decision(DecisionKind::Step, None)), None);
        let mut m = message();
        m.event = "would-roll-back".into();
        m.phase = "Progressing".into();
        let text = m.body(Format::Slack)["text"].as_str().unwrap().to_string();
        assert!(
            text.starts_with(":warning: *checkout* Progressing"),
            "{text}"
        );
    }

    #[test]
    fn slack_format_carries_the_reason_and_a_link() {
        let body = message().body(Format::Slack);
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with(":rotating_light: *checkout* RolledBack"));
        assert!(text.contains("canary error rate 30 %"));
        assert!(text.contains("|report>"));
        let json = message().body(Format::Json);
        assert_eq!(json["canaryVersion"], "v2");
        assert_eq!(json["event"], "phase-changed");
    }

    #[tokio::test]
    async fn retries_until_the_receiver_answers_2xx() {
        install_crypto();
        // The first delivery fails: the notifier must retry.
        let (hits, addr) = receiver(|n| {
            if n == 1 {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            } else {
                axum::http::StatusCode::OK
            }
        })
        .await;
        let notifier = Notifier::start(vec![Target {
            url: format!("http://{addr}/hook"),
            format: Format::Json,
        }]);
        notifier.send(message());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while hits.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "retried within the backoff"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = hits.lock().unwrap();
        assert_eq!(got[1]["rollout"], "checkout");
        assert_eq!(got[1]["reason"], "canary error rate 30 %");
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_does_not_hold_up_another() {
        install_crypto();
        // Accepts connections and holds them open without a word.
        let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hung_addr = hung.local_addr().unwrap();
        let held = Arc::new(tokio::sync::Mutex::new(Vec::<tokio::net::TcpStream>::new()));
        let holder = held.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = hung.accept().await {
                holder.lock().await.push(stream);
            }
        });
        let (hits, addr) = receiver(|_| axum::http::StatusCode::OK).await;
        // The hung receiver first: delivered in turn, it would block the other.
        let notifier = Notifier::start(vec![
            Target {
                url: format!("http://{hung_addr}/hook"),
                format: Format::Json,
            },
            Target {
                url: format!("http://{addr}/hook"),
                format: Format::Slack,
            },
        ]);
        notifier.send(message());
        let mut second = message();
        second.phase = "Succeeded".into();
        notifier.send(second);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while hits.lock().unwrap().len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "both messages reach the good receiver"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Fails before this change: the good receiver got its messages only
        // once every attempt on the hung one had timed out and closed.
        let mut open = 0;
        for stream in held.lock().await.iter() {
            // Read what was sent (the unanswered request) until the stream
            // would block (still open) or ends (the client gave up).
            let mut buf = [0u8; 4096];
            loop {
                match stream.try_read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        open += 1;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        assert!(
            open >= 1,
            "the hung receiver's first attempt is still waiting"
        );
        let got = hits.lock().unwrap();
        assert!(
            got[1]["text"].as_str().unwrap().contains("Succeeded"),
            "{got:?}"
        );
    }
}
