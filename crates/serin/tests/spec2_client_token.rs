//! `--token` / `SERIN_TOKEN` of the commands that talk to the daemon: a
//! value that is empty, blank or holds spaces or control characters is
//! refused with exit 2 naming the flag, before anything is sent (the
//! `--api` is a free port nothing listens on: a token that passes would
//! end in exit 1, unreachable). An empty `SERIN_TOKEN=` means no token.

mod common;

use common::nginx::free_port;
use common::serin::serin;

fn promote(token_flag: Option<&str>, env: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = serin();
    cmd.env_remove("SERIN_TOKEN").args([
        "promote",
        "shop",
        "--api",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    if let Some(t) = token_flag {
        cmd.args(["--token", t]);
    }
    if let Some(e) = env {
        cmd.env("SERIN_TOKEN", e);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails before this change: each was sent as a header (or refused by the
/// HTTP library) and ended as "cannot reach serin", exit 1.
#[test]
fn a_token_that_is_not_visible_characters_is_refused_with_exit_2() {
    for bad in ["", "   ", "a b", "tok\tx", "tok\u{7f}"] {
        let (code, err) = promote(Some(bad), None);
        assert_eq!(code, Some(2), "--token {bad:?}: {err}");
        assert!(
            err.contains("--token: expected a token of visible characters"),
            "{bad:?}: {err}"
        );
        assert!(!err.contains("cannot reach"), "{bad:?}: {err}");
    }
    for bad in [" ", "a b"] {
        let (code, err) = promote(None, Some(bad));
        assert_eq!(code, Some(2), "SERIN_TOKEN={bad:?}: {err}");
        assert!(err.contains("--token: expected"), "{bad:?}: {err}");
    }
}

#[test]
fn a_good_token_or_an_empty_serin_token_goes_on_to_the_daemon() {
    for (flag, env) in [
        (Some("s3cr3t-Token_1"), None),
        (None, Some("")),
        (None, None),
    ] {
        let (code, err) = promote(flag, env);
        assert_eq!(code, Some(1), "{flag:?} {env:?}: {err}");
        assert!(
            err.contains("cannot reach serin"),
            "{flag:?} {env:?}: {err}"
        );
    }
}
