//! Rollback latency: from the judge's failing verdict to weight 0 in force in
//! the built-in proxy, through the real driver, the real SQLite store
//! (decision persisted with `synchronous=FULL` before it is applied) and the
//! real proxy. Also the time until a client observes the change: the first
//! request after the verdict that no longer reaches the canary.
//!
//! `cargo run --release -p serin --example rollback_latency -- [RUNS]`
//! (recorded in docs/benchmarks.md).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serin::controller::driver::{Driver, Progress};
use serin::controller::seams::{Analysed, Analysis, BoxFuture};
use serin::demo::app::{DemoApp, Faults};
use serin::providers::traffic::builtin::BuiltinRouter;
use serin::rollout::{Plan, State, Step, Verdict};
use serin::store::{RolloutRecord, Store};
use serin_proxy::{Proxy, ProxyOptions, RoutingTable, Version, Weight};

/// Passes until told to fail; records when the failing verdict was returned.
struct Switch {
    fail_at: Arc<Mutex<Option<Instant>>>,
    passes: usize,
}

impl Analysis for Switch {
    fn begin_stage(&mut self, _weight: Weight) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn analyse(&mut self, _end_of_pause: bool) -> BoxFuture<'_, Analysed> {
        let verdict = if self.passes == 0 {
            if let Ok(mut at) = self.fail_at.lock() {
                *at = Some(Instant::now());
            }
            Verdict::Fail
        } else {
            self.passes -= 1;
            Verdict::Pass
        };
        Box::pin(async move {
            Analysed::without_judgement(verdict, format!("bench {}", verdict.as_str()))
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn app(version: &str) -> anyhow::Result<DemoApp> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(DemoApp::start(l, version.into(), Faults::default()).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serin::notify::install_crypto();
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(30);
    let stable = app("v1").await?;
    let canary = app("v2").await?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut applied = Vec::new();
    let mut observed = Vec::new();
    for run in 0..runs {
        let table = RoutingTable::new(
            &format!("http://{}", stable.addr()),
            &format!("http://{}", canary.addr()),
            Weight::ZERO,
        )?;
        let proxy = Proxy::new(table, ProxyOptions::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(serin_proxy::serve(listener, proxy.clone(), async move {
            let _ = stopped.await;
        }));
        let name = format!("bench-{run}");
        let record = store.register(
            &RolloutRecord {
                name: name.clone(),
                spec: String::new(),
                stable_version: "v1".into(),
                canary_version: Some("v2".into()),
                former_stable_version: None,
                stable_upstream: None,
                canary_upstream: None,
                state: State::new(serin::time::now()),
                last_verdict: None,
                generation: 0,
                run: 0,
            },
            serin::time::now(),
        )?;
        let fail_at = Arc::new(Mutex::new(None));
        let plan = Plan {
            steps: vec![
                Step::SetWeight(Weight::from_percent(100.0)?),
                Step::PauseFor {
                    duration: Duration::from_secs(60),
                    early: false,
                },
            ],
            interval: Duration::from_millis(50),
            no_data_limit: 3,
            judge_at_end_of_pause: false,
            progress_deadline: None,
            min_requests: 100,
            advisory: false,
        };
        let (driver, handle) = Driver::new(
            plan,
            store.clone(),
            record,
            Arc::new(BuiltinRouter::new(proxy.clone())),
            Box::new(Switch {
                fail_at: fail_at.clone(),
                passes: 3,
            }),
        );
        let mut progress = handle.subscribe();
        // A client asking the proxy in a loop: the first answer from stable
        // after the verdict is the change as users see it (weight 100 % makes
        // every earlier answer the canary's).
        let client = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut seen_canary = false;
            while Instant::now() < deadline {
                if let Ok(r) = client.get(format!("http://{addr}/")).send().await {
                    let v = r
                        .headers()
                        .get("x-serin-version")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    match v.as_deref() {
                        Some("v2") => seen_canary = true,
                        Some("v1") if seen_canary => return Some(Instant::now()),
                        _ => {}
                    }
                }
            }
            None
        });
        let done =
            tokio::time::timeout(Duration::from_secs(30), driver.run(std::future::pending()))
                .await??;
        assert_eq!(done.state.weight, Weight::ZERO, "rolled back");
        // The last weight-0 application is the rollback (the first is the
        // driver re-applying the stored weight as it starts).
        let mut rollback = None;
        while let Ok(p) = progress.try_recv() {
            if let Progress::WeightApplied {
                weight,
                since_decision,
            } = p
                && weight == Weight::ZERO
            {
                rollback = Some(since_decision);
            }
        }
        applied.extend(rollback);
        let failed = fail_at.lock().ok().and_then(|g| *g);
        if let (Some(seen), Some(failed)) = (client.await?, failed) {
            observed.push(seen.saturating_duration_since(failed));
        }
        assert_eq!(proxy.table().weight(), Weight::ZERO);
        let _ = proxy.table().upstream(Version::Stable);
        let _ = stop.send(());
        let _ = serving.await;
    }
    applied.sort();
    observed.sort();
    let show = |name: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("{name}: no data");
            return;
        }
        println!(
            "{name}: n={} median {:.3} ms, p90 {:.3} ms, max {:.3} ms",
            v.len(),
            percentile(v, 0.5).as_secs_f64() * 1e3,
            percentile(v, 0.9).as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
        );
    };
    show(
        "verdict -> weight 0 in the proxy (persist + apply)",
        &applied,
    );
    show("verdict -> first client answer from stable", &observed);
    Ok(())
}
