//! A version's upstream that is serin's own address (the rollout's proxy,
//! or the daemon's API) is refused, in the file and in `serin deploy
//! --upstream`: requests sent there come back through serin's split (the
//! "canary" judged on stable's answers), or give the service's clients the
//! API (an outside breaker promoted a rollout through its own proxy).

mod common;

use common::daemon::{cli, status};
use common::nginx::{free_port, local};
use common::rollout::Rollout;
use common::serin::{Proc, demo_app, serin, serin_serve, text, wait_for_port, write};

/// Fails before this change: each was accepted.
#[test]
fn an_upstream_that_is_serins_own_address_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_v1, stable) = demo_app("v1", &[]);
    let (_v2, canary) = demo_app("v2", &[]);
    let proxy = local(free_port());
    let api = local(free_port());

    // The file: a canary upstream where the rollout's proxy listens.
    let looped = Rollout::new("own", proxy, stable, proxy).yaml();
    let file = write(dir.path(), "looped.yaml", &looped);
    let mut run = serin();
    run.args([
        "run",
        &file.display().to_string(),
        "--state-dir",
        &dir.path().join("run").display().to_string(),
    ]);
    let o = Proc::spawn(run, true).wait_output(std::time::Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("traffic.listen: expected an address other than the canary's upstream"),
        "{}",
        text(&o)
    );

    let mut serve = serin_serve(api, &dir.path().join("state"));
    serve.env_remove("SERIN_TOKEN");
    let _daemon = Proc::spawn(serve, false);
    wait_for_port(api);
    // The file: a canary upstream that is the daemon's API.
    let at_api = Rollout::new("own", proxy, stable, api).yaml();
    let file = write(dir.path(), "api.yaml", &at_api);
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("canary.upstream: expected a version's server")
            && text(&o).contains("serin's own API"),
        "{}",
        text(&o)
    );
    assert!(
        !text(&cli(api, &["status", "own"], None)).contains("Initializing"),
        "nothing registered"
    );

    // A good file, then `deploy --upstream` at the API and at the proxy.
    let good = Rollout::new("own", proxy, stable, canary).yaml();
    let file = write(dir.path(), "own.yaml", &good);
    let o = cli(api, &["init", &file.display().to_string()], None);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let before = status(api, "own");
    for (target, says) in [
        (api, "serin's own API"),
        (proxy, "where serin's proxy listens"),
    ] {
        let o = cli(
            api,
            &[
                "deploy",
                "own",
                "v9",
                "--upstream",
                &format!("http://{target}"),
            ],
            None,
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains(says), "{}", text(&o));
    }
    let after = status(api, "own");
    assert_eq!(
        (&after["phase"], &after["canary"], &after["run"]),
        (&before["phase"], &before["canary"], &before["run"]),
        "nothing changed: {after:#}"
    );
}
