//! The driver: the thin async shell around the pure [`machine`].
//!
//! # Expected flow
//! One task per rollout. It wakes on a short tick, on an operator command, or
//! on a gate's answer; turns that into a machine [`Input`]; persists the new
//! state and decisions; then executes the machine's actions in order (apply a
//! weight, start a stage, analyse, check a gate, promote, notify). An analysis
//! produces another input (its verdict), handled the same way before the
//! driver sleeps again.
//!
//! # Guarantees
//! - Persist, then apply: a decision is in SQLite before the data plane sees
//!   it. After a crash, [`Driver::run`] re-applies the persisted weight first.
//! - A failed weight change (nginx reload refused, API down) is retried on
//!   every tick until the data plane holds the persisted weight.
//! - Operator commands are answered after their decision is persisted and
//!   applied; a refused command changes nothing.
//!
//! # Seams
//! [`TrafficRouter`] (built-in proxy, nginx, Kubernetes) and [`Analysis`]
//! (a metric source and the judge together, so this module knows neither).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serin_proxy::Weight;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::machine::{self, Action, Decision, Input, Millis, Phase, Plan, Refused, Verdict};
use crate::notify::{Message, Notifier};
use crate::store::{RolloutRecord, Sample, Store, StoreError, VersionSample};

/// A boxed future, for object-safe async seams.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Makes a data plane send a share of traffic to the canary.
pub trait TrafficRouter: Send + Sync {
    /// Both versions can take traffic (health check / readiness), or why not.
    fn check_ready(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Send `weight` % of requests to the canary (route matches stay in force).
    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), String>>;
    /// The canary becomes the new stable: all traffic on it.
    fn promote(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// One interval's analysis: what the judge said and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysed {
    /// The verdict.
    pub verdict: Verdict,
    /// Why, with the numbers.
    pub reason: String,
    /// The interval's numbers per version, if the source answered.
    pub sample: Option<(VersionSample, VersionSample)>,
}

/// Takes metrics from a source and judges them.
pub trait Analysis: Send {
    /// A new weight stage begins (absolute limits and `fixed` tests restart
    /// from the numbers as they are now).
    fn begin_stage(&mut self, weight: Weight) -> BoxFuture<'_, ()>;
    /// Judge the interval that just ended.
    fn analyse(&mut self, end_of_pause: bool) -> BoxFuture<'_, Analysed>;
}

/// What the driver tells watchers (`serin run`'s progress, the daemon's log).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A decision was persisted.
    Decision(Decision),
    /// An analysis ran.
    Sample(Sample),
    /// The data plane took a new weight; `since_decision` is the time from the
    /// decision's input to the weight being in force.
    WeightApplied {
        /// The weight.
        weight: Weight,
        /// From input to applied.
        since_decision: Duration,
    },
    /// The data plane refused a change; it will be retried.
    RouterError(String),
}

/// An operator command with its answer channel.
pub struct Command {
    /// The input for the machine.
    pub input: Input,
    /// The rollout after the command, or why it was refused.
    pub reply: oneshot::Sender<Result<RolloutRecord, DriverError>>,
}

/// Why the driver could not do something.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The command does not fit the rollout's phase.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The state could not be persisted; nothing was applied.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The driver has stopped.
    #[error("the rollout's controller has stopped")]
    Stopped,
}

/// A handle to send commands to a running driver.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    progress: broadcast::Sender<Progress>,
}

impl Handle {
    /// Sends an operator command and waits for its answer.
    pub async fn command(&self, input: Input) -> Result<RolloutRecord, DriverError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command { input, reply })
            .await
            .map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// Watches the driver's progress.
    pub fn subscribe(&self) -> broadcast::Receiver<Progress> {
        self.progress.subscribe()
    }
}

/// How often the driver wakes without a command: pauses end within this.
const TICK: Duration = Duration::from_millis(100);
/// How often an ended rollout retries a promotion or rollback the data plane refused.
const RETRY_END: Duration = Duration::from_secs(1);

/// The shell around one rollout's state machine.
pub struct Driver {
    plan: Plan,
    store: Store,
    record: RolloutRecord,
    router: Arc<dyn TrafficRouter>,
    analysis: Box<dyn Analysis>,
    commands: mpsc::Receiver<Command>,
    progress: broadcast::Sender<Progress>,
    gate_tx: mpsc::Sender<Input>,
    gate_rx: mpsc::Receiver<Input>,
    /// The weight the data plane is known to hold (None: unknown, apply again).
    applied: Option<Weight>,
    /// Since when the data plane has refused the weight (None: it has not).
    refused_since: Option<Instant>,
    /// The canary was promoted but the data plane refused it; retried.
    promotion_pending: bool,
    notifier: Notifier,
    report_url: Option<String>,
    /// Must answer 2xx before the first step (Flagger's pre-rollout hook).
    pre_rollout: Option<String>,
    /// When the next health check may run while `Initializing`.
    next_check: Option<Instant>,
}

/// How often an `Initializing` rollout re-checks its versions.
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl Driver {
    /// A driver for a stored rollout, and the handle to command it.
    pub fn new(
        plan: Plan,
        store: Store,
        record: RolloutRecord,
        router: Arc<dyn TrafficRouter>,
        analysis: Box<dyn Analysis>,
    ) -> (Driver, Handle) {
        let (tx, commands) = mpsc::channel(16);
        let (progress, _) = broadcast::channel(1024);
        let (gate_tx, gate_rx) = mpsc::channel(4);
        let handle = Handle {
            tx,
            progress: progress.clone(),
        };
        let driver = Driver {
            plan,
            store,
            record,
            router,
            analysis,
            commands,
            progress,
            gate_tx,
            gate_rx,
            applied: None,
            refused_since: None,
            promotion_pending: false,
            notifier: Notifier::none(),
            report_url: None,
            pre_rollout: None,
            next_check: None,
        };
        (driver, handle)
    }

    /// Sends phase changes and failed verdicts to `notifier`; `report_url`
    /// is the link to put in them.
    pub fn with_notifier(mut self, notifier: Notifier, report_url: Option<String>) -> Driver {
        self.notifier = notifier;
        self.report_url = report_url;
        self
    }

    /// `url` must answer 2xx to a POST before the first step.
    pub fn with_pre_rollout(mut self, url: Option<String>) -> Driver {
        self.pre_rollout = url;
        self
    }

    fn notify(&self, event: &str, reason: &str) {
        self.notifier.send(Message {
            event: event.to_string(),
            rollout: self.record.name.clone(),
            phase: self.record.state.phase.as_str().to_string(),
            stable_version: self.record.stable_version.clone(),
            canary_version: self.record.canary_version.clone(),
            weight: self.record.state.weight.percent(),
            reason: reason.to_string(),
            at: crate::report::rfc3339(now_millis()),
            report: self.report_url.clone(),
        });
    }

    /// The rollout as last persisted.
    pub fn record(&self) -> &RolloutRecord {
        &self.record
    }

    /// Runs the rollout until it ends (`Succeeded` or `RolledBack`) or
    /// `shutdown` resolves; returns the last persisted record.
    ///
    /// A rollout still `Initializing` is health-checked first; one that was
    /// already running (a restart) gets its persisted weight re-applied.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RolloutRecord, DriverError> {
        tokio::pin!(shutdown);
        // Repair whatever a crash left between persist and apply.
        self.apply(self.record.state.weight, Instant::now()).await;
        if matches!(self.record.state.phase, Phase::Progressing | Phase::Paused) {
            self.analysis.begin_stage(self.record.state.weight).await;
        }
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.record.state.phase.is_finished() {
            tokio::select! {
                _ = ticker.tick() => {
                    if self.record.state.phase == Phase::Initializing {
                        self.initialize().await?;
                    } else {
                        if self.applied != Some(self.record.state.weight)
                            && let Some(refused) =
                                self.apply(self.record.state.weight, Instant::now()).await
                        {
                            let refused_ms = u64::try_from(refused.as_millis()).unwrap_or(u64::MAX);
                            self.feed(Input::WeightApplied { refused_ms }).await?;
                        }
                        // Time runs and verdicts are made only on the split
                        // that is really in force: while the data plane
                        // refuses the weight, the rollout holds.
                        if self.applied == Some(self.record.state.weight) {
                            self.feed(Input::Tick).await?;
                        }
                    }
                }
                Some(cmd) = self.commands.recv() => {
                    let result = self.feed(cmd.input).await.map(|()| self.record.clone());
                    if let Err(DriverError::Store(e)) = &result {
                        tracing::error!(rollout = %self.record.name, "cannot persist: {e}");
                    }
                    let _ = cmd.reply.send(result);
                }
                Some(input) = self.gate_rx.recv() => {
                    self.feed(input).await?;
                }
                () = &mut shutdown => return Ok(self.record),
            }
        }
        // The rollout has ended; its end is not done until the data plane
        // has it (all traffic on the new stable, or on stable after a
        // rollback). Retried once a second, as long as it takes.
        while self.promotion_pending || self.applied != Some(self.record.state.weight) {
            tokio::select! {
                () = tokio::time::sleep(RETRY_END) => {}
                () = &mut shutdown => break,
            }
            if self.promotion_pending {
                match self.router.promote().await {
                    Ok(()) => {
                        self.promotion_pending = false;
                        self.applied = Some(Weight::ZERO);
                        tracing::info!(rollout = %self.record.name, "promotion applied");
                    }
                    Err(e) => {
                        tracing::warn!(rollout = %self.record.name, "promotion still not applied (retrying): {e}");
                        let _ = self.progress.send(Progress::RouterError(e));
                    }
                }
            } else {
                self.apply(self.record.state.weight, Instant::now()).await;
            }
        }
        Ok(self.record)
    }

    /// Health-checks both versions; starts the first step when they answer.
    async fn initialize(&mut self) -> Result<(), DriverError> {
        if self.next_check.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        self.next_check = Some(Instant::now() + CHECK_EVERY);
        let ready = match self.router.check_ready().await {
            Err(why) => Err(format!("waiting for both versions to answer: {why}")),
            Ok(()) => match &self.pre_rollout {
                None => Ok(()),
                Some(url) => match super::probe::post_json(url, &self.hook_body()).await {
                    Ok(status) if status.is_success() => Ok(()),
                    Ok(status) => Err(format!(
                        "waiting for the pre-rollout check {url}: it answered {status}"
                    )),
                    Err(e) => Err(format!("waiting for the pre-rollout check {url}: {e}")),
                },
            },
        };
        match ready {
            Ok(()) => self.feed(Input::Start).await,
            Err(reason) => {
                if self.record.state.reason != reason {
                    tracing::warn!(rollout = %self.record.name, "{reason}");
                    self.record.state.reason = reason;
                }
                Ok(())
            }
        }
    }

    /// What gates and pre-rollout checks receive (as Flagger's webhooks do).
    fn hook_body(&self) -> serde_json::Value {
        serde_json::json!({
            "rollout": self.record.name,
            "phase": self.record.state.phase.as_str(),
            "step": self.record.state.step,
            "weight": self.record.state.weight.percent(),
            "stableVersion": self.record.stable_version,
            "canaryVersion": self.record.canary_version,
        })
    }

    /// Feeds one input, and every input its actions produce, through the
    /// machine: persist, then act.
    async fn feed(&mut self, first: Input) -> Result<(), DriverError> {
        let mut queue = VecDeque::from([first]);
        let mut first_input = true;
        while let Some(input) = queue.pop_front() {
            let started = Instant::now();
            let now = now_millis();
            let t = match machine::step(&self.plan, &self.record.state, now, input) {
                Ok(t) => t,
                // Only an operator's own command is refused to them; inputs
                // produced here (verdicts) always fit.
                Err(refused) if first_input => return Err(refused.into()),
                Err(refused) => {
                    tracing::warn!(rollout = %self.record.name, "{refused}");
                    continue;
                }
            };
            first_input = false;
            let mut next = self.record.clone();
            next.state = t.state;
            if t.actions.contains(&Action::PromoteCanary)
                && let Some(canary) = next.canary_version.take()
            {
                next.former_stable_version =
                    Some(std::mem::replace(&mut next.stable_version, canary));
                if next.canary_upstream.is_some() {
                    next.stable_upstream = next.canary_upstream.clone();
                }
            }
            if let Some(d) = t.decisions.iter().rev().find(|d| d.verdict.is_some()) {
                next.last_verdict =
                    Some((d.verdict.unwrap_or("").to_string(), d.reason.clone(), d.at));
            }
            if next != self.record || !t.decisions.is_empty() {
                next.generation = self.persist(&next, t.decisions.clone(), now).await?;
            }
            self.record = next;
            for d in t.decisions {
                if d.verdict == Some("fail") {
                    self.notify("verdict-failed", &d.reason);
                }
                let _ = self.progress.send(Progress::Decision(d));
            }
            for action in t.actions {
                match action {
                    Action::ApplyWeight(w) => {
                        self.apply(w, started).await;
                    }
                    Action::BeginStage(w) => self.analysis.begin_stage(w).await,
                    Action::Analyze { end_of_pause } => {
                        let a = self.analysis.analyse(end_of_pause).await;
                        if let Some((stable, canary)) = a.sample {
                            let sample = Sample {
                                at: now_millis(),
                                step: self.record.state.step,
                                weight: self.record.state.weight,
                                verdict: a.verdict.as_str().to_string(),
                                stable,
                                canary,
                            };
                            self.save_sample(&sample).await;
                            let _ = self.progress.send(Progress::Sample(sample));
                        }
                        queue.push_back(Input::Verdict {
                            verdict: a.verdict,
                            reason: a.reason,
                            end_of_pause,
                        });
                    }
                    Action::CheckGate(url) => self.check_gate(url),
                    Action::PromoteCanary => match self.router.promote().await {
                        Ok(()) => self.applied = Some(Weight::ZERO),
                        Err(e) => {
                            tracing::error!(rollout = %self.record.name, "promotion not applied (will retry): {e}");
                            let _ = self.progress.send(Progress::RouterError(e));
                            self.promotion_pending = true;
                        }
                    },
                    Action::Notify(phase) => {
                        tracing::info!(rollout = %self.record.name, phase = phase.as_str(), reason = %self.record.state.reason, "phase changed");
                        self.notify("phase-changed", &self.record.state.reason.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies `weight`; when it lands after refusals, returns how long
    /// they lasted.
    async fn apply(&mut self, weight: Weight, since: Instant) -> Option<Duration> {
        match self.router.apply_weight(weight).await {
            Ok(()) => {
                self.applied = Some(weight);
                let _ = self.progress.send(Progress::WeightApplied {
                    weight,
                    since_decision: since.elapsed(),
                });
                self.refused_since.take().map(|t| t.elapsed())
            }
            Err(e) => {
                self.applied = None;
                self.refused_since.get_or_insert_with(Instant::now);
                tracing::warn!(rollout = %self.record.name, "weight {weight} % not applied (will retry): {e}");
                let _ = self.progress.send(Progress::RouterError(e));
                None
            }
        }
    }

    fn persist(
        &self,
        record: &RolloutRecord,
        decisions: Vec<Decision>,
        now: Millis,
    ) -> impl Future<Output = Result<i64, DriverError>> + Send + 'static {
        let store = self.store.clone();
        let record = record.clone();
        async move {
            tokio::task::spawn_blocking(move || store.save(&record, &decisions, now))
                .await
                .map_err(|_| DriverError::Stopped)?
                .map_err(DriverError::from)
        }
    }

    fn save_sample(&self, sample: &Sample) -> impl Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let (name, sample) = (self.record.name.clone(), sample.clone());
        async move {
            let saved = tokio::task::spawn_blocking(move || store.add_sample(&name, &sample)).await;
            if let Ok(Err(e)) = saved {
                // Samples feed the report only; a lost one never changes a decision.
                tracing::warn!("sample not saved: {e}");
            }
        }
    }

    fn check_gate(&self, url: String) {
        let tx = self.gate_tx.clone();
        let body = self.hook_body();
        tokio::spawn(async move {
            let (open, detail) = match super::probe::post_json(&url, &body).await {
                Ok(status) => (status.is_success(), format!("{url} answered {status}")),
                Err(e) => (false, format!("{url}: {e}")),
            };
            let _ = tx.send(Input::Gate { open, detail }).await;
        });
    }
}

/// The wall clock, in the machine's unit.
pub fn now_millis() -> Millis {
    Millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::machine::{State, Step};
    use crate::providers::traffic::builtin::BuiltinRouter;
    use serin_proxy::{Proxy, ProxyOptions, RoutingTable};
    use std::sync::Mutex;

    /// A judge whose verdicts the test scripts (the real judge has its own tests).
    struct Scripted {
        verdicts: Arc<Mutex<VecDeque<Verdict>>>,
        stages: Arc<Mutex<Vec<Weight>>>,
    }

    impl Analysis for Scripted {
        fn begin_stage(&mut self, weight: Weight) -> BoxFuture<'_, ()> {
            self.stages.lock().unwrap().push(weight);
            Box::pin(async {})
        }
        fn analyse(&mut self, _end_of_pause: bool) -> BoxFuture<'_, Analysed> {
            let v = self
                .verdicts
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Verdict::Pass);
            Box::pin(async move {
                Analysed {
                    reason: format!("scripted {}", v.as_str()),
                    verdict: v,
                    sample: Some((VersionSample::default(), VersionSample::default())),
                }
            })
        }
    }

    async fn healthy_upstream() -> String {
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn plan() -> Plan {
        let w = |p| Weight::from_percent(p).unwrap();
        Plan {
            steps: vec![
                Step::SetWeight(w(10.0)),
                Step::PauseFor(Duration::from_millis(300)),
                Step::SetWeight(w(50.0)),
                Step::PauseFor(Duration::from_millis(300)),
            ],
            interval: Duration::from_millis(100),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
        }
    }

    struct Rig {
        store: Store,
        proxy: Arc<Proxy>,
        verdicts: Arc<Mutex<VecDeque<Verdict>>>,
        stages: Arc<Mutex<Vec<Weight>>>,
        _dir: tempfile::TempDir,
    }

    impl Rig {
        async fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let (stable, canary) = (healthy_upstream().await, healthy_upstream().await);
            let table = RoutingTable::new(&stable, &canary, Weight::ZERO).unwrap();
            Rig {
                store,
                proxy: Proxy::new(table, ProxyOptions::default()),
                verdicts: Arc::default(),
                stages: Arc::default(),
                _dir: dir,
            }
        }

        fn register(&self) -> RolloutRecord {
            let record = RolloutRecord {
                name: "checkout".into(),
                spec: String::new(),
                stable_version: "v1".into(),
                canary_version: Some("v2".into()),
                former_stable_version: None,
                stable_upstream: None,
                canary_upstream: None,
                state: State::new(now_millis()),
                last_verdict: None,
                generation: 0,
            };
            self.store.register(&record, now_millis()).unwrap()
        }

        fn driver(&self, record: RolloutRecord) -> (Driver, Handle) {
            let analysis = Scripted {
                verdicts: self.verdicts.clone(),
                stages: self.stages.clone(),
            };
            Driver::new(
                plan(),
                self.store.clone(),
                record,
                Arc::new(BuiltinRouter::new(self.proxy.clone())),
                Box::new(analysis),
            )
        }
    }

    async fn bounded<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("driver finished in time")
    }

    #[tokio::test]
    async fn healthy_rollout_is_promoted_and_the_canary_becomes_stable() {
        let rig = Rig::new().await;
        let canary_upstream = rig
            .proxy
            .table()
            .upstream(serin_proxy::Version::Canary)
            .to_string();
        let (driver, _handle) = rig.driver(rig.register());
        let done = bounded(driver.run(std::future::pending())).await.unwrap();
        assert_eq!(done.state.phase, Phase::Succeeded);
        assert_eq!(done.stable_version, "v2");
        assert_eq!(done.canary_version, None);
        let table = rig.proxy.table();
        assert_eq!(
            table.upstream(serin_proxy::Version::Stable).to_string(),
            canary_upstream
        );
        assert_eq!(table.weight(), Weight::ZERO);
        let stored = rig.store.get("checkout").unwrap();
        assert_eq!(stored.state.phase, Phase::Succeeded);
        assert_eq!(stored.stable_version, "v2");
        assert_eq!(stored.former_stable_version.as_deref(), Some("v1"));
        assert!(!rig.store.samples("checkout").unwrap().is_empty());
        let kinds: Vec<_> = rig
            .store
            .events("checkout")
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds.first().map(String::as_str), Some("started"));
        assert_eq!(kinds.last().map(String::as_str), Some("promoted"));
    }

    #[tokio::test]
    async fn a_failing_verdict_sets_weight_zero_and_is_persisted_first() {
        let rig = Rig::new().await;
        rig.verdicts
            .lock()
            .unwrap()
            .extend([Verdict::Pass, Verdict::Fail]);
        let (driver, handle) = rig.driver(rig.register());
        let mut progress = handle.subscribe();
        let done = bounded(driver.run(std::future::pending())).await.unwrap();
        assert_eq!(done.state.phase, Phase::RolledBack);
        assert_eq!(rig.proxy.weight(), Weight::ZERO);
        assert_eq!(
            rig.store.get("checkout").unwrap().state.phase,
            Phase::RolledBack
        );
        assert_eq!(
            done.last_verdict.as_ref().map(|v| v.0.as_str()),
            Some("fail"),
            "the failing verdict is the last one"
        );
        let mut rollback_applied = None;
        while let Ok(p) = progress.try_recv() {
            if let Progress::WeightApplied {
                weight,
                since_decision,
            } = p
                && weight == Weight::ZERO
            {
                rollback_applied = Some(since_decision);
            }
        }
        assert!(
            rollback_applied.is_some(),
            "the rollback's weight change was reported"
        );
    }

    #[tokio::test]
    async fn restart_reapplies_the_persisted_weight_and_carries_on() {
        let rig = Rig::new().await;
        let (driver, _) = rig.driver(rig.register());
        // Stop the first driver once the second stage (50 %) is persisted.
        let store = rig.store.clone();
        let stop = async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if store.get("checkout").unwrap().state.weight
                    == Weight::from_percent(50.0).unwrap()
                {
                    return;
                }
            }
        };
        let stopped = bounded(driver.run(stop)).await.unwrap();
        assert_eq!(stopped.state.phase, Phase::Progressing);
        // A "crash": the data plane lost its weight.
        rig.proxy.set_weight(Weight::ZERO);
        let record = rig.store.get("checkout").unwrap();
        assert_eq!(record.state.step, 3, "in the second pause");
        let (driver, handle) = rig.driver(record);
        let mut progress = handle.subscribe();
        let done = bounded(driver.run(std::future::pending())).await.unwrap();
        assert_eq!(done.state.phase, Phase::Succeeded);
        let first_applied = std::iter::from_fn(|| progress.try_recv().ok()).find_map(|p| match p {
            Progress::WeightApplied { weight, .. } => Some(weight),
            _ => None,
        });
        assert_eq!(
            first_applied,
            Some(Weight::from_percent(50.0).unwrap()),
            "re-applied before anything else"
        );
        let started = rig
            .store
            .events("checkout")
            .unwrap()
            .iter()
            .filter(|e| e.kind == "started")
            .count();
        assert_eq!(started, 1, "the restart did not start the rollout over");
    }

    /// The built-in router, refusing the first `refusals` weight changes.
    struct Refusing {
        inner: BuiltinRouter,
        refusals: Mutex<u32>,
    }

    impl TrafficRouter for Refusing {
        fn check_ready(&self) -> BoxFuture<'_, Result<(), String>> {
            self.inner.check_ready()
        }
        fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), String>> {
            let mut left = self.refusals.lock().unwrap();
            if *left > 0 && weight > Weight::ZERO {
                *left -= 1;
                return Box::pin(async { Err("refused by the test".to_string()) });
            }
            drop(left);
            self.inner.apply_weight(weight)
        }
        fn promote(&self) -> BoxFuture<'_, Result<(), String>> {
            self.inner.promote()
        }
    }

    #[tokio::test]
    async fn a_pause_runs_in_full_after_a_refused_weight_lands() {
        let rig = Rig::new().await;
        let router = Refusing {
            inner: BuiltinRouter::new(rig.proxy.clone()),
            refusals: Mutex::new(6),
        };
        let (driver, _handle) = Driver::new(
            plan(),
            rig.store.clone(),
            rig.register(),
            Arc::new(router),
            Box::new(Scripted {
                verdicts: rig.verdicts.clone(),
                stages: rig.stages.clone(),
            }),
        );
        let done = bounded(driver.run(std::future::pending())).await.unwrap();
        assert_eq!(done.state.phase, Phase::Succeeded);
        let events = rig.store.events("checkout").unwrap();
        let at = |what: &str| {
            events
                .iter()
                .find(|e| e.decision.reason.contains(what))
                .unwrap_or_else(|| panic!("a decision saying {what:?}: {events:#?}"))
                .decision
                .at
        };
        let set = at("canary weight set to 10 %");
        let landed = at("applied after the data plane refused it");
        let paused = at("pause complete");
        // Six refusals a tick apart, then the whole 300 ms pause on 10 %.
        assert!(landed.since(set) >= 500, "{events:#?}");
        assert!(paused.since(landed) >= 300, "{events:#?}");
    }

    #[tokio::test]
    async fn operator_commands_are_answered_and_refusals_change_nothing() {
        let rig = Rig::new().await;
        let (driver, handle) = rig.driver(rig.register());
        let task = tokio::spawn(driver.run(std::future::pending()));
        // Wait for the rollout to start.
        bounded(async {
            while rig.proxy.weight() == Weight::ZERO {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let paused = handle.command(Input::Pause).await.unwrap();
        assert_eq!(paused.state.phase, Phase::Paused);
        let refused = handle.command(Input::Pause).await.unwrap_err();
        assert!(matches!(refused, DriverError::Refused(_)), "{refused}");
        let set = handle
            .command(Input::SetWeight(Weight::from_percent(33.0).unwrap()))
            .await
            .unwrap();
        assert_eq!(set.state.weight, Weight::from_percent(33.0).unwrap());
        assert_eq!(
            rig.proxy.weight(),
            Weight::from_percent(33.0).unwrap(),
            "applied before the answer"
        );
        let rolled = handle.command(Input::Rollback).await.unwrap();
        assert_eq!(rolled.state.phase, Phase::RolledBack);
        assert_eq!(rolled.state.reason, "manual");
        assert_eq!(rig.proxy.weight(), Weight::ZERO);
        let done = bounded(task).await.unwrap().unwrap();
        assert_eq!(done.state.phase, Phase::RolledBack);
    }

    #[tokio::test]
    async fn a_gate_holds_until_it_answers_2xx_and_a_webhook_hears_everything() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let open = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let notified = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let (o, a, n) = (open.clone(), asked.clone(), notified.clone());
        let app = axum::Router::new()
            .route(
                "/gate",
                axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                    let (o, a) = (o.clone(), a.clone());
                    async move {
                        a.lock().unwrap().push(v);
                        if o.load(Ordering::SeqCst) {
                            axum::http::StatusCode::OK
                        } else {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        }
                    }
                }),
            )
            .route(
                "/hook",
                axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                    let n = n.clone();
                    async move {
                        n.lock().unwrap().push(v);
                        axum::http::StatusCode::NO_CONTENT
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        crate::notify::install_crypto();

        let rig = Rig::new().await;
        let w = |p| Weight::from_percent(p).unwrap();
        let plan = Plan {
            steps: vec![
                Step::SetWeight(w(10.0)),
                Step::PauseUntilGate(format!("http://{addr}/gate")),
                Step::SetWeight(w(100.0)),
            ],
            interval: Duration::from_millis(100),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
        };
        let analysis = Scripted {
            verdicts: rig.verdicts.clone(),
            stages: rig.stages.clone(),
        };
        let (driver, _handle) = Driver::new(
            plan,
            rig.store.clone(),
            rig.register(),
            Arc::new(BuiltinRouter::new(rig.proxy.clone())),
            Box::new(analysis),
        );
        let driver = driver.with_notifier(
            crate::notify::Notifier::start(vec![crate::notify::Target {
                url: format!("http://{addr}/hook"),
                format: crate::notify::Format::Json,
            }]),
            None,
        );
        let task = tokio::spawn(driver.run(std::future::pending()));
        bounded(async {
            while asked.lock().unwrap().len() < 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert_eq!(
            rig.proxy.weight(),
            w(10.0),
            "held at the gate while it answers 503"
        );
        assert_eq!(asked.lock().unwrap()[0]["rollout"], "checkout");
        open.store(true, Ordering::SeqCst);
        let done = bounded(task).await.unwrap().unwrap();
        assert_eq!(done.state.phase, Phase::Succeeded);
        bounded(async {
            while notified.lock().unwrap().len() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let phases: Vec<_> = notified
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["phase"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            phases,
            ["Progressing", "Succeeded"],
            "every phase change, in order"
        );
    }
}
