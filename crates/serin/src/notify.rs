//! Notifications: webhook POSTs on every phase change and every failed
//! verdict (`notifications` in the rollout file), as JSON or in Slack's
//! message format.
//!
//! The controller never waits for a webhook: [`Notifier::send`] puts the
//! message on a queue and returns; a background task delivers each message to
//! each target, retrying with exponential backoff (1 s, 2 s, 4 s, ... up to
//! [`ATTEMPTS`] tries). A message that still fails is logged and dropped —
//! notifications inform, they never decide.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

/// Tries per message and target.
pub const ATTEMPTS: u32 = 5;
/// Messages waiting beyond this are dropped (with a warning) rather than
/// letting a dead webhook grow memory without bound.
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
    /// `phase-changed` or `verdict-failed`.
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
}

impl Message {
    /// The body for `format`.
    pub fn body(&self, format: Format) -> serde_json::Value {
        match format {
            Format::Json => serde_json::to_value(self).unwrap_or_default(),
            Format::Slack => {
                let icon = match (self.event.as_str(), self.phase.as_str()) {
                    (_, "RolledBack") | ("verdict-failed", _) => ":rotating_light:",
                    (_, "Succeeded") => ":white_check_mark:",
                    _ => ":arrows_counterclockwise:",
                };
                let canary = self.canary_version.as_deref().unwrap_or("none");
                let mut text = format!(
                    "{icon} *{}* {} — stable {} · canary {} · weight {} %\n{}",
                    self.rollout, self.phase, self.stable_version, canary, self.weight, self.reason
                );
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
    tx: Option<mpsc::Sender<Message>>,
    delivered: Option<Delivered>,
}

/// Resolves when a notifier's queue has been delivered: every sender is
/// gone (the rollout's driver ended) and the delivery task has worked
/// through what was queued, retries included.
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
            tx: None,
            delivered: None,
        }
    }

    /// What to wait on before exiting so the last messages are not lost
    /// (`None` without targets).
    pub fn delivered(&self) -> Option<Delivered> {
        self.delivered.clone()
    }

    /// Starts the delivery task for `targets` (nothing to start without any).
    pub fn start(targets: Vec<Target>) -> Notifier {
        if targets.is_empty() {
            return Notifier::none();
        }
        let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
        let (done, delivered) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            // Dropped (or set) when the task ends, however it ends.
            let _done = DoneOnDrop(done);
            let client = match reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("webhooks disabled: cannot build an HTTP client: {e}");
                    return;
                }
            };
            while let Some(message) = rx.recv().await {
                for target in &targets {
                    deliver(&client, target, &message).await;
                }
            }
        });
        Notifier {
            tx: Some(tx),
            delivered: Some(Delivered(delivered)),
        }
    }

    /// Queues a message; never waits.
    pub fn send(&self, message: Message) {
        if let Some(tx) = &self.tx
            && let Err(e) = tx.try_send(message)
        {
            tracing::warn!("notification dropped (webhook queue full or closed): {e}");
        }
    }
}

/// Marks the delivery task done when it ends.
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
        }
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
        let hits = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let seen = hits.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let seen = seen.clone();
                async move {
                    let mut s = seen.lock().unwrap();
                    s.push(v);
                    // The first delivery fails: the notifier must retry.
                    if s.len() == 1 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
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
}
