//! Leader election over the Lease `serin` (`cluster/lease.rs`) against
//! kubesim, with the timings shortened (lease 3 s, renew deadline 2 s,
//! retry 200 ms): one of two replicas leads; a leader killed without a
//! release is replaced after the lease duration and not before; a release
//! hands over at once; claims that race give one winner and a 409 for the
//! others; a leader whose API server stops answering stops leading before
//! anyone else could take the Lease; two processes with one identity
//! never lead at once, and a process restarted under its old name waits
//! out the Lease it held. Every test also checks, from the
//! recorded transitions, that no two replicas ever led at once.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kubesim::KubeSim;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use serde_json::Value;
use serin::cluster::lease::{Leadership, LeaseSettings};
use tokio::sync::watch;

const LEASE: Duration = Duration::from_secs(3);
const RENEW: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(200);

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..LeaseSettings::with_defaults("shop".into(), identity.into())
    }
}

/// Milliseconds since the epoch (the wall clock the Lease's times use).
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every change of one replica's `leading` watch: (wall ms, leading).
#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Vec<(i64, bool)>>>);

impl Timeline {
    fn follow(mut rx: watch::Receiver<bool>) -> Timeline {
        let t = Timeline::default();
        let events = t.0.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let now = *rx.borrow_and_update();
                events.lock().unwrap().push((wall_ms(), now));
            }
            // The sender is gone: whatever it said last stands.
            let last = *rx.borrow();
            events.lock().unwrap().push((wall_ms(), last));
        });
        t
    }

    /// The spans (start, end) in which it led; an open span ends at i64::MAX.
    fn spans(&self) -> Vec<(i64, i64)> {
        let mut spans = Vec::new();
        let mut start = None;
        for &(t, leading) in self.0.lock().unwrap().iter() {
            match (leading, start) {
                (true, None) => start = Some(t),
                (false, Some(s)) => {
                    spans.push((s, t));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            spans.push((s, i64::MAX));
        }
        spans
    }

    fn first_lead(&self) -> Option<i64> {
        self.0.lock().unwrap().iter().find(|e| e.1).map(|e| e.0)
    }

    fn last_step_down(&self) -> Option<i64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|e| !e.1)
            .map(|e| e.0)
    }
}

/// No two replicas ever led at the same time.
fn never_two(timelines: &[&Timeline]) {
    for (i, a) in timelines.iter().enumerate() {
        for b in &timelines[i + 1..] {
            for (s1, e1) in a.spans() {
                for (s2, e2) in b.spans() {
                    assert!(
                        e1 <= s2 || e2 <= s1,
                        "two leaders at once: [{s1}, {e1}) and [{s2}, {e2})"
                    );
                }
            }
        }
    }
}

/// Polls `f` every 20 ms until it holds; panics after `limit`.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn lease_of(sim: &KubeSim) -> LeaseSpec {
    serin::notify::install_crypto();
    let api: Api<Lease> = Api::namespaced(sim.client().await, "shop");
    api.get("serin").await.unwrap().spec.unwrap()
}

fn renew_ms(spec: &LeaseSpec) -> i64 {
    spec.renew_time.as_ref().unwrap().0.as_millisecond()
}

/// The sim's writes to leases: (method, code).
async fn lease_writes(sim: &KubeSim) -> Vec<(String, u64)> {
    let admin = sim.info["admin"].as_str().unwrap().trim_end_matches('/');
    let url = format!("{admin}/state");
    let state: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    state["writes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["path"].as_str().unwrap_or("").contains("/leases"))
        .map(|w| {
            (
                w["method"].as_str().unwrap_or("").to_string(),
                w["code"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// SIGSTOP / SIGCONT the sim: an API server that stops answering (its
/// sockets still accept) and comes back.
fn signal(sim: &KubeSim, sig: &str) {
    let pid = sim.info["pid"].as_u64().unwrap().to_string();
    let status = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

async fn start(sim: &KubeSim, identity: &str) -> (Leadership, Timeline) {
    serin::notify::install_crypto();
    let l = Leadership::start(sim.client().await, settings(identity)).unwrap();
    let t = Timeline::follow(l.leading());
    (l, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_exactly_one_leads_and_holds_the_lease() {
    let sim = KubeSim::start(&[]);
    let (a, ta) = start(&sim, "serin-a").await;
    let (b, tb) = start(&sim, "serin-b").await;
    until(Duration::from_secs(10), "one leader", || {
        a.is_leading() || b.is_leading()
    })
    .await;
    // Over two lease durations it stays exactly one, the one the Lease names.
    let watch_until = Instant::now() + 2 * LEASE;
    while Instant::now() < watch_until {
        assert!(a.is_leading() ^ b.is_leading(), "exactly one leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let leader = if a.is_leading() { "serin-a" } else { "serin-b" };
    let spec = lease_of(&sim).await;
    assert_eq!(spec.holder_identity.as_deref(), Some(leader));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    // The leader renews every retry period.
    assert!(
        wall_ms() - renew_ms(&spec) < 1000,
        "renewed {} ms ago",
        wall_ms() - renew_ms(&spec)
    );
    never_two(&[&ta, &tb]);
    a.release().await.unwrap();
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_without_release_is_replaced_after_the_lease_duration_and_not_before() {
    let sim = KubeSim::start(&[]);
    let (a, ta) = start(&sim, "serin-a").await;
    until(Duration::from_secs(10), "a leads", || a.is_leading()).await;
    let (b, tb) = start(&sim, "serin-b").await;
    // b has read the Lease (held by a) at least once.
    tokio::time::sleep(RETRY * 3).await;
    assert!(!b.is_leading());

    // kill -9: the task is aborted, nothing is released.
    let a_leading = a.leading();
    drop(a);
    let killed = wall_ms();
    until(Duration::from_secs(2), "a's watch turns false", || {
        !*a_leading.borrow()
    })
    .await;
    let last_renewal = renew_ms(&lease_of(&sim).await);

    until(LEASE + Duration::from_secs(5), "b takes over", || {
        b.is_leading()
    })
    .await;
    let took = tb.first_lead().unwrap();
    // Not before a's last renewal plus the lease duration (one clock: the
    // Lease's times and the test's are this machine's wall clock) ...
    assert!(
        took >= last_renewal + LEASE.as_millis() as i64,
        "b took over {} ms after a's last renewal (lease {LEASE:?})",
        took - last_renewal
    );
    // ... and soon after it: within a retry period and scheduling slack.
    assert!(
        took <= last_renewal + (LEASE + RETRY).as_millis() as i64 + 1500,
        "b took over {} ms after a's last renewal",
        took - last_renewal
    );
    assert!(took - killed >= (LEASE - RETRY).as_millis() as i64 - 200);
    let spec = lease_of(&sim).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("serin-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    never_two(&[&ta, &tb]);
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_over_at_once() {
    let sim = KubeSim::start(&[]);
    let (a, ta) = start(&sim, "serin-a").await;
    until(Duration::from_secs(10), "a leads", || a.is_leading()).await;
    let (b, tb) = start(&sim, "serin-b").await;
    tokio::time::sleep(RETRY * 3).await;
    assert!(!b.is_leading());

    let released = Instant::now();
    a.release().await.unwrap();
    // The watch turned false before the release was written.
    assert_eq!(ta.0.lock().unwrap().last().map(|e| e.1), Some(false));
    until(Duration::from_secs(2), "b takes over", || b.is_leading()).await;
    let took = released.elapsed();
    assert!(
        took < LEASE / 2,
        "b took {took:?} after a release (the lease is {LEASE:?})"
    );
    let spec = lease_of(&sim).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("serin-b"));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    never_two(&[&ta, &tb]);
    b.release().await.unwrap();
    let spec = lease_of(&sim).await;
    assert_eq!(spec.holder_identity, None, "released: no holder");
    assert_eq!(spec.lease_duration_seconds, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_that_race_give_one_winner_and_409_for_the_others() {
    let sim = KubeSim::start(&[]);
    // A holder that went away: its record expires (on each replica's own
    // clock) 1 s after they first read it.
    serin::notify::install_crypto();
    let api: Api<Lease> = Api::namespaced(sim.client().await, "shop");
    let now = k8s_openapi::jiff::Timestamp::now();
    api.create(
        &PostParams::default(),
        &Lease {
            metadata: ObjectMeta {
                name: Some("serin".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("gone".into()),
                lease_duration_seconds: Some(1),
                renew_time: Some(MicroTime(now)),
                acquire_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        },
    )
    .await
    .unwrap();
    let mut replicas = Vec::new();
    for id in ["serin-a", "serin-b", "serin-c"] {
        replicas.push(start(&sim, id).await);
    }
    // Each has read the record and keeps its connection open.
    tokio::time::sleep(RETRY * 2).await;
    assert!(replicas.iter().all(|(l, _)| !l.is_leading()));
    // The API server stops answering while the record expires: every
    // replica's next read waits, then all are answered together with the
    // same record, and all claim it with the same resourceVersion.
    signal(&sim, "-STOP");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    signal(&sim, "-CONT");
    until(Duration::from_secs(5), "one leader", || {
        replicas.iter().any(|(l, _)| l.is_leading())
    })
    .await;
    let hold_until = Instant::now() + LEASE;
    while Instant::now() < hold_until {
        let n = replicas.iter().filter(|(l, _)| l.is_leading()).count();
        assert_eq!(n, 1, "exactly one leads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes = lease_writes(&sim).await;
    let conflicts = writes.iter().filter(|w| w.1 == 409).count();
    assert!(
        conflicts >= 1,
        "the losing claims were answered 409: {writes:?}"
    );
    // Exactly one claim took the Lease from "gone"; every later successful
    // write is the winner's renewal.
    let spec = lease_of(&sim).await;
    assert_eq!(spec.lease_transitions, Some(1), "{spec:?}");
    let timelines: Vec<&Timeline> = replicas.iter().map(|(_, t)| t).collect();
    never_two(&timelines);
    for (l, _) in replicas {
        l.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_api_server_stops_answering_steps_down_before_the_lease_could_be_taken() {
    let sim = KubeSim::start(&[]);
    let (a, ta) = start(&sim, "serin-a").await;
    until(Duration::from_secs(10), "a leads", || a.is_leading()).await;
    let (b, tb) = start(&sim, "serin-b").await;
    tokio::time::sleep(RETRY * 3).await;

    signal(&sim, "-STOP");
    let stopped = wall_ms();
    until(RENEW + Duration::from_secs(2), "a steps down", || {
        !a.is_leading()
    })
    .await;
    let down = ta.last_step_down().unwrap();
    // Nothing a wrote was answered after `stopped`, so nobody could take
    // the Lease before stopped + LEASE: a stopped well before that, within
    // the renew deadline (and scheduling slack) of its last renewal.
    assert!(
        down - stopped <= (RENEW + Duration::from_millis(500)).as_millis() as i64,
        "stepped down {} ms after the API server stopped",
        down - stopped
    );
    assert!(down < stopped + LEASE.as_millis() as i64 - 500);
    assert!(!b.is_leading(), "b cannot claim from a stopped API server");

    signal(&sim, "-CONT");
    until(Duration::from_secs(10), "a leader again", || {
        a.is_leading() || b.is_leading()
    })
    .await;
    never_two(&[&ta, &tb]);
    a.release().await.unwrap();
    b.release().await.unwrap();
}

#[tokio::test]
async fn unsafe_timings_are_refused_at_start() {
    let sim = KubeSim::start(&[]);
    serin::notify::install_crypto();
    let mut s = settings("serin-a");
    s.renew_deadline = LEASE;
    let e = Leadership::start(sim.client().await, s).err().unwrap();
    assert_eq!(e.kind(), serin::error::Kind::Invalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_identity_never_lead_at_once() {
    // Two processes with the same POD_NAME (a misconfigured Deployment, a
    // container restarted while its old process still runs): the name on
    // the Lease does not make it either's.
    let sim = KubeSim::start(&[]);
    let (a, ta) = start(&sim, "serin-0").await;
    let (b, tb) = start(&sim, "serin-0").await;
    until(Duration::from_secs(10), "one leads", || {
        a.is_leading() || b.is_leading()
    })
    .await;
    // Over four lease durations: never both, and the first stays the one.
    let first_is_a = a.is_leading();
    let watch_until = Instant::now() + 4 * LEASE;
    while Instant::now() < watch_until {
        let (la, lb) = (a.is_leading(), b.is_leading());
        assert!(!(la && lb), "both processes named serin-0 lead");
        assert_eq!(la, first_is_a, "the lead changed hands");
        assert_eq!(lb, !first_is_a, "the lead changed hands");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    never_two(&[&ta, &tb]);
    // The one that leads renews; the other never overwrote it.
    let spec = lease_of(&sim).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("serin-0"));
    assert!(wall_ms() - renew_ms(&spec) < 1000);
    assert_eq!(spec.lease_transitions, Some(0), "taken once: {spec:?}");
    a.release().await.unwrap();
    b.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_restarted_under_the_same_name_waits_out_the_lease_it_held() {
    let sim = KubeSim::start(&[]);
    let (a, ta) = start(&sim, "serin-0").await;
    until(Duration::from_secs(10), "a leads", || a.is_leading()).await;
    // kill -9, and the container starts again under the same name.
    let a_leading = a.leading();
    drop(a);
    until(Duration::from_secs(2), "a's watch turns false", || {
        !*a_leading.borrow()
    })
    .await;
    let last_renewal = renew_ms(&lease_of(&sim).await);
    let (again, t_again) = start(&sim, "serin-0").await;
    until(
        LEASE + Duration::from_secs(5),
        "the restarted one leads",
        || again.is_leading(),
    )
    .await;
    let took = t_again.first_lead().unwrap();
    assert!(
        took >= last_renewal + LEASE.as_millis() as i64,
        "took over {} ms after the old process' last renewal (lease {LEASE:?})",
        took - last_renewal
    );
    never_two(&[&ta, &t_again]);
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_lease_with_a_huge_duration_is_taken_over_after_the_honoured_cap() {
    let sim = KubeSim::start(&[]);
    // Another program (or a hand edit) holds the Lease as "mallory" for
    // 68 years, renewed in 2099, and never renews it.
    serin::notify::install_crypto();
    let api: Api<Lease> = Api::namespaced(sim.client().await, "shop");
    let far = k8s_openapi::jiff::Timestamp::from_second(4_070_908_800).unwrap();
    api.create(
        &PostParams::default(),
        &Lease {
            metadata: ObjectMeta {
                name: Some("serin".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("mallory".into()),
                lease_duration_seconds: Some(i32::MAX),
                renew_time: Some(MicroTime(far)),
                acquire_time: Some(MicroTime(far)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        },
    )
    .await
    .unwrap();
    let started = wall_ms();
    let (a, ta) = start(&sim, "serin-a").await;
    let cap = settings("serin-a").honoured_lease();
    assert_eq!(cap, 4 * LEASE);
    // Not taken before the cap (counted from the first read, after the
    // start), then taken: a bounded wait, not 68 years.
    until(cap + Duration::from_secs(10), "serin-a leads", || {
        a.is_leading()
    })
    .await;
    let took = ta.first_lead().unwrap();
    assert!(
        took - started >= cap.as_millis() as i64,
        "taken {} ms after the start, before the {cap:?} cap",
        took - started
    );
    let spec = lease_of(&sim).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("serin-a"));
    assert_eq!(spec.lease_duration_seconds, Some(3));
    assert_eq!(spec.lease_transitions, Some(1));
    a.release().await.unwrap();
}
