//! Leader failover over the Lease `serin` with the real timings (lease 15 s,
//! renew deadline 10 s, retry 2 s), against kubesim: two replicas' electors
//! (`cluster::lease::Leadership`), the leader's task aborted without a
//! release (as `kill -9`), and the time until the other leads, from the
//! abort and from the leader's last renewal (`renewTime`, same clock); then
//! a clean release and the time until the other leads.
//!
//! `cargo run -p serin --example lease_failover -- [RUNS]` (the times are
//! the protocol's waits, not computation: a debug build measures the same)
//! (recorded in docs/benchmarks.md). Needs python3 and openssl (kubesim).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serin::cluster::lease::{Leadership, LeaseSettings};

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Instant::now()
}

fn summary(name: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: min {:.2} s, median {:.2} s, max {:.2} s ({} runs)",
        xs[0],
        at(0.5),
        xs[xs.len() - 1],
        xs.len()
    );
}

#[tokio::main]
async fn main() {
    serin::notify::install_crypto();
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubesim/kubesim.py");
    let mut sim = Command::new("python3")
        .arg(&script)
        .arg("--dir")
        .arg(dir.path())
        .arg("--exit-on-stdin-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs kubesim.py");
    let ready = dir.path().join("ready.json");
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kubesim not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let client = || async {
        let config = kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let settings = |id: &str| LeaseSettings::with_defaults("shop".into(), id.into());
    let api: Api<Lease> = Api::namespaced(client().await, "shop");
    let (mut from_kill, mut from_renewal, mut from_release) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let a = Leadership::start(client().await, settings(&format!("a-{run}"))).unwrap();
        until(Duration::from_secs(40), || a.is_leading()).await;
        // b's reads fall anywhere in a's 2 s renewal interval (so it sees a
        // renewal between 0 and 2 s after it was written), and so does the kill.
        let phase = |k: u64| Duration::from_millis((397 * run as u64 + k) % 2000);
        tokio::time::sleep(phase(0)).await;
        let b = Leadership::start(client().await, settings(&format!("b-{run}"))).unwrap();
        tokio::time::sleep(Duration::from_secs(4) + phase(1000)).await;
        drop(a);
        let killed = Instant::now();
        let renewed = api
            .get("serin")
            .await
            .unwrap()
            .spec
            .unwrap()
            .renew_time
            .unwrap();
        let took = until(Duration::from_secs(40), || b.is_leading()).await;
        let took_wall = wall_ms();
        from_kill.push((took - killed).as_secs_f64());
        from_renewal.push((took_wall - renewed.0.as_millisecond()) as f64 / 1000.0);

        let c = Leadership::start(client().await, settings(&format!("c-{run}"))).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let released = Instant::now();
        b.release().await.unwrap();
        let took = until(Duration::from_secs(40), || c.is_leading()).await;
        from_release.push((took - released).as_secs_f64());
        c.release().await.unwrap();
        println!(
            "run {run}: kill -> new leader {:.2} s (last renewal -> {:.2} s), release -> new leader {:.2} s",
            from_kill[run], from_renewal[run], from_release[run]
        );
    }
    summary("kill -> new leader", from_kill);
    summary("last renewal -> new leader", from_renewal);
    summary("release -> new leader", from_release);
    let _ = sim.kill();
    let _ = sim.wait();
}
