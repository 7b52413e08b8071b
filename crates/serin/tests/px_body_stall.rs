//! Issue 17 F4 through the real binary: a canary that sends its response head
//! at once and then stalls the body of half its requests, under load whose
//! clients give up after 2 s (long before the proxy's 60 s upstream body
//! timeout), is rolled back on its error rate, not promoted on the healthy
//! half.

mod common;

mod stalling_canary;

use std::time::Duration;

use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin_run, wait_for_port, write};
use stalling_canary::{STEPS, assert_rolled_back, impatient_load, stalling_canary};

#[test]
fn a_canary_that_stalls_half_its_bodies_is_rolled_back_not_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let (_stable, stable) = demo_app("v1", &[]);
    let canary = stalling_canary();
    let port = free_port();
    // The error rate decides (the p95 ceiling is above the clients' 2 s).
    let yaml = Rollout::new("bstall", local(port), stable, canary)
        .steps(STEPS)
        .latency_p95("5s")
        .yaml();
    let file = write(dir.path(), "rollout.yaml", &yaml);
    let run = Proc::spawn(serin_run(&file, dir.path()), true);
    wait_for_port(local(port));
    let _load = impatient_load(port);
    let output = run.wait_output(Duration::from_secs(60));
    assert_rolled_back(&output, "error rate");
}
