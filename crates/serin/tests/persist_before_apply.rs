//! Persist, then apply (ARCHITECTURE.md's first invariant), checked at the
//! moment of applying: a traffic router that, each time the driver asks it
//! to apply a weight or to promote, reads the store and records what it
//! holds. Every change the data plane is asked for must already be written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serin::controller::driver::Driver;
use serin::controller::seams::{Analysed, Analysis, BoxFuture, TrafficRouter};
use serin::error::Error;
use serin::rollout::{Phase, Plan, State, Step, Verdict};
use serin::store::{RolloutRecord, Store};
use serin::time::now as now_millis;
use serin_proxy::Weight;

/// What the store held when the router was asked for something.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    /// Apply `weight`; the store held `stored` at `generation`.
    Weight {
        weight: Weight,
        stored: Weight,
        generation: i64,
    },
    /// Promote; the store held this phase.
    Promote { stored: Phase },
}

/// A router that looks in the store before it says yes.
struct Witness {
    store: Store,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl Witness {
    fn stored(&self) -> RolloutRecord {
        self.store.get("checkout").expect("the rollout is stored")
    }
}

impl TrafficRouter for Witness {
    fn check_ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
    fn apply_weight(&self, weight: Weight) -> BoxFuture<'_, Result<(), Error>> {
        let stored = self.stored();
        self.asked.lock().unwrap().push(Asked::Weight {
            weight,
            stored: stored.state.weight,
            generation: stored.generation,
        });
        Box::pin(async { Ok(()) })
    }
    fn promote(&self) -> BoxFuture<'_, Result<(), Error>> {
        let stored = self.stored().state.phase;
        self.asked.lock().unwrap().push(Asked::Promote { stored });
        Box::pin(async { Ok(()) })
    }
}

/// Passes every interval, or fails from the `fail_at`-th one on.
struct Judge {
    calls: usize,
    fail_at: Option<usize>,
}

impl Analysis for Judge {
    fn begin_stage(&mut self, _weight: Weight) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn analyse(&mut self, _end_of_pause: bool) -> BoxFuture<'_, Analysed> {
        self.calls += 1;
        let verdict = if self.fail_at.is_some_and(|n| self.calls >= n) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        Box::pin(async move {
            Analysed {
                reason: format!("scripted {}", verdict.as_str()),
                verdict,
                sample: Some(serin::controller::seams::IntervalSample::default()),
                canary_requests: None,
                would_fail: None,
                within_limits: None,
                split: None,
            }
        })
    }
}

fn plan() -> Plan {
    let w = |p| Weight::from_percent(p).unwrap();
    Plan {
        steps: vec![
            Step::SetWeight(w(5.0)),
            Step::PauseFor {
                duration: Duration::from_millis(200),
                early: false,
            },
            Step::SetWeight(w(25.0)),
            Step::PauseFor {
                duration: Duration::from_millis(200),
                early: false,
            },
            Step::SetWeight(w(50.0)),
            Step::PauseFor {
                duration: Duration::from_millis(200),
                early: false,
            },
        ],
        interval: Duration::from_millis(50),
        no_data_limit: 3,
        judge_at_end_of_pause: false,
        progress_deadline: None,
        min_requests: 100,
        advisory: false,
    }
}

/// Runs a rollout to its end against the witness; what it saw, and the end.
async fn run(fail_at: Option<usize>) -> (Vec<Asked>, RolloutRecord) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
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
        run: 0,
    };
    let record = store.register(&record, now_millis()).unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let router = Arc::new(Witness {
        store: store.clone(),
        asked: asked.clone(),
    });
    let judge = Box::new(Judge { calls: 0, fail_at });
    let (driver, _handle) = Driver::new(plan(), store, record, router, judge);
    let done = tokio::time::timeout(Duration::from_secs(30), driver.run(std::future::pending()))
        .await
        .expect("the rollout ends within 30 s")
        .expect("the driver ends without an error");
    let asked = asked.lock().unwrap().clone();
    (asked, done)
}

#[tokio::test]
async fn every_weight_and_the_promotion_are_written_before_the_data_plane_is_asked() {
    let (asked, done) = run(None).await;
    assert_eq!(done.state.phase, Phase::Succeeded);
    let weights: Vec<Weight> = asked
        .iter()
        .filter_map(|a| match a {
            Asked::Weight { weight, .. } => Some(*weight),
            Asked::Promote { .. } => None,
        })
        .collect();
    for pct in [5.0, 25.0, 50.0] {
        assert!(
            weights.contains(&Weight::from_percent(pct).unwrap()),
            "{pct} % was applied: {asked:?}"
        );
    }
    let mut last_generation = 0;
    for a in &asked {
        match a {
            Asked::Weight {
                weight,
                stored,
                generation,
            } => {
                assert_eq!(
                    stored, weight,
                    "the store held {stored} when {weight} was applied: {asked:?}"
                );
                assert!(*generation >= last_generation, "{asked:?}");
                last_generation = *generation;
            }
            Asked::Promote { stored } => {
                assert_eq!(
                    *stored,
                    Phase::Succeeded,
                    "promoted before written: {asked:?}"
                )
            }
        }
    }
    assert!(
        asked.iter().any(|a| matches!(a, Asked::Promote { .. })),
        "the promotion reached the router: {asked:?}"
    );
}

#[tokio::test]
async fn a_rollback_is_written_before_the_weight_goes_to_zero() {
    // Pass the first interval (at 5 %), fail from the second on.
    let (asked, done) = run(Some(2)).await;
    assert_eq!(done.state.phase, Phase::RolledBack);
    let Some(Asked::Weight {
        weight, generation, ..
    }) = asked.last()
    else {
        panic!("the last thing asked was a weight: {asked:?}");
    };
    assert_eq!(*weight, Weight::ZERO, "{asked:?}");
    assert!(
        asked
            .iter()
            .any(|a| matches!(a, Asked::Weight { weight, .. } if *weight > Weight::ZERO)),
        "a weight above zero came first: {asked:?}"
    );
    for a in &asked {
        if let Asked::Weight { weight, stored, .. } = a {
            assert_eq!(stored, weight, "{asked:?}");
        }
    }
    assert!(*generation > 0);
    assert!(
        !asked.iter().any(|a| matches!(a, Asked::Promote { .. })),
        "{asked:?}"
    );
}
